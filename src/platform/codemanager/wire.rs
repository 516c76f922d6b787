//! The Code Manager wire types (`shared/research/puppet-code-manager.md`): the deploy request,
//! the per-environment results, the deploys status and its by-id form, and the readers that
//! turn an answer's JSON into them.

use crate::core::seam::{ErrorKind, PlatformError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// `POST /v1/deploys` body. Unset keys are omitted, so the server's defaults apply
/// (`deploy-modules` true, `wait` false).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeployRequest {
    /// Environment names, after prefixing and name correction ([`environment_name`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub environments: Vec<String>,
    /// Every environment currently in the sources.
    #[serde(rename = "deploy-all", skip_serializing_if = "is_false")]
    pub deploy_all: bool,
    /// `false` skips the Puppetfile modules (they are always deployed the first time).
    #[serde(rename = "deploy-modules", skip_serializing_if = "Option::is_none")]
    pub deploy_modules: Option<bool>,
    /// Only these modules (sent as a JSON array, as Puppet's own client does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modules: Option<Vec<String>>,
    /// Answer only after every deploy finished and was synced to every compiler.
    #[serde(skip_serializing_if = "is_false")]
    pub wait: bool,
    /// Only test the connection to each source and list the environments.
    #[serde(
        rename = "dry-run",
        alias = "dry_run",
        skip_serializing_if = "is_false"
    )]
    pub dry_run: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The state of one deploy: `new`/`queued` right after `POST /deploys`, `complete`/`failed`
/// after a `wait`, `new`..`synced` from `GET /deploys/status?id=`. Unknown words (such as
/// PE 2016's `pending`) are kept as [`DeployState::Other`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DeployState {
    New,
    Queued,
    Deploying,
    Failed,
    /// Committed to file-sync storage; the sync to the servers is still running.
    Syncing,
    /// Deployed and synced to every server.
    Synced,
    /// Deployed and synced (the answer of a `wait` deploy).
    Complete,
    Other(String),
}

impl DeployState {
    pub fn parse(text: &str) -> DeployState {
        match text {
            "new" => DeployState::New,
            "queued" => DeployState::Queued,
            "deploying" => DeployState::Deploying,
            "failed" => DeployState::Failed,
            "syncing" => DeployState::Syncing,
            "synced" => DeployState::Synced,
            "complete" => DeployState::Complete,
            other => DeployState::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            DeployState::New => "new",
            DeployState::Queued => "queued",
            DeployState::Deploying => "deploying",
            DeployState::Failed => "failed",
            DeployState::Syncing => "syncing",
            DeployState::Synced => "synced",
            DeployState::Complete => "complete",
            DeployState::Other(s) => s,
        }
    }

    /// Nothing more will happen to this deploy.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            DeployState::Failed | DeployState::Synced | DeployState::Complete
        )
    }

    /// The code is deployed and synced to every server.
    pub fn is_success(&self) -> bool {
        matches!(self, DeployState::Synced | DeployState::Complete)
    }
}

impl fmt::Display for DeployState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for DeployState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for DeployState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(DeployState::parse(&text))
    }
}

/// A Code Manager or RBAC error object `{kind, msg, details?}`. `details` is an object
/// (`{"corrected-env-name": ..}`) in per-environment errors and a string in top-level ones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CmError {
    pub kind: String,
    #[serde(default)]
    pub msg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl CmError {
    /// The environment name Code Manager actually used. The key changed over PE versions:
    /// `corrected-name` (2019.8.10+), `corrected-env-name` (2016-2019), `env-name` (2016.1).
    pub fn corrected_name(&self) -> Option<String> {
        let details = self.details.as_ref()?.as_object()?;
        ["corrected-name", "corrected-env-name", "env-name"]
            .iter()
            .find_map(|key| details.get(*key).and_then(Value::as_str))
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
    }

    /// The kind without its namespace: `token-expired` for `puppetlabs.rbac/token-expired`.
    pub fn short_kind(&self) -> &str {
        self.kind.rsplit('/').next().unwrap_or(&self.kind)
    }

    /// The token has expired (or timed out for inactivity): a fresh one may help.
    pub fn is_expiry(&self) -> bool {
        matches!(self.short_kind(), "token-expired" | "token-timed-out")
    }

    /// `details` when it is text (top-level errors such as `collect-failed`).
    pub fn details_text(&self) -> Option<&str> {
        self.details.as_ref().and_then(Value::as_str)
    }
}

impl fmt::Display for CmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.msg.trim_end())
    }
}

/// File sync's internal commits of a deployed environment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSync {
    #[serde(rename = "environment-commit")]
    pub environment_commit: String,
    #[serde(rename = "code-commit")]
    pub code_commit: String,
}

/// One element of a `POST /v1/deploys` answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeployResult {
    #[serde(alias = "project")]
    pub environment: String,
    /// The deploy's place in the queue (kept in memory by Code Manager for `deploy_ttl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    pub status: DeployState,
    /// The control-repository commit that was deployed (`complete` entries).
    #[serde(
        rename = "deploy-signature",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub deploy_signature: Option<String>,
    #[serde(rename = "file-sync", default, skip_serializing_if = "Option::is_none")]
    pub file_sync: Option<FileSync>,
    /// Why it failed (`failed` entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CmError>,
}

/// A `new`, `queued`, `deploying` or `failed` entry of `GET /v1/deploys/status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusEntry {
    /// Present from PE 2019.8.3 on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    #[serde(alias = "project")]
    pub environment: String,
    #[serde(rename = "queued-at", default, skip_serializing_if = "Option::is_none")]
    pub queued_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CmError>,
}

/// An environment in file-sync storage or on one file-sync client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployed {
    pub environment: String,
    pub date: String,
    /// The control-repository commit.
    #[serde(rename = "deploy-signature")]
    pub deploy_signature: String,
}

/// One file-sync client (a compiler or the primary).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FileSyncClient {
    #[serde(default)]
    pub last_check_in_time: Option<String>,
    #[serde(
        rename = "synced-with-file-sync-storage",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub synced: Option<bool>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub deployed: Vec<Deployed>,
}

/// `GET /v1/deploys/status`, flattened. Deploys that succeeded are not in the four queues:
/// they show up only in `deployed` (file-sync storage, which lists every environment).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "WireStatus", into = "WireStatus")]
pub struct DeploysStatus {
    pub new: Vec<StatusEntry>,
    pub queued: Vec<StatusEntry>,
    pub deploying: Vec<StatusEntry>,
    /// Failures stay listed until garbage collection, even after a later success.
    pub failed: Vec<StatusEntry>,
    /// `file-sync-storage-status.deployed`.
    pub deployed: Vec<Deployed>,
    /// `file-sync-client-status.all-synced`.
    pub all_synced: Option<bool>,
    /// `file-sync-client-status.file-sync-clients`, by server certname.
    pub clients: BTreeMap<String, FileSyncClient>,
}

impl DeploysStatus {
    /// The environment as file-sync storage has it.
    pub fn deployed(&self, environment: &str) -> Option<&Deployed> {
        self.deployed.iter().find(|d| d.environment == environment)
    }

    /// A deploy of the environment is new, queued or deploying.
    pub fn in_progress(&self, environment: &str) -> bool {
        self.new
            .iter()
            .chain(&self.queued)
            .chain(&self.deploying)
            .any(|e| e.environment == environment)
    }

    /// The most recently queued failure of the environment still listed.
    pub fn last_failure(&self, environment: &str) -> Option<&StatusEntry> {
        self.failed
            .iter()
            .filter(|e| e.environment == environment)
            .max_by(|a, b| a.queued_at.cmp(&b.queued_at))
    }

    /// The deploy with this id, and the queue it is in (PE 2019.8.3+).
    pub fn find_id(&self, id: i64) -> Option<(DeployState, &StatusEntry)> {
        [
            (DeployState::New, &self.new),
            (DeployState::Queued, &self.queued),
            (DeployState::Deploying, &self.deploying),
            (DeployState::Failed, &self.failed),
        ]
        .into_iter()
        .find_map(|(state, list)| {
            list.iter()
                .find(|e| e.id == Some(id))
                .map(|e| (state.clone(), e))
        })
    }
}

#[derive(Clone, Default, Serialize, Deserialize)]
struct WireStatus {
    #[serde(rename = "deploys-status")]
    queues: WireQueues,
    #[serde(rename = "file-sync-storage-status", default)]
    storage: WireStorage,
    #[serde(rename = "file-sync-client-status", default)]
    clients: WireClients,
}

#[derive(Clone, Default, Serialize, Deserialize)]
struct WireQueues {
    #[serde(default, deserialize_with = "null_as_empty")]
    new: Vec<StatusEntry>,
    #[serde(default, deserialize_with = "null_as_empty")]
    queued: Vec<StatusEntry>,
    #[serde(default, deserialize_with = "null_as_empty")]
    deploying: Vec<StatusEntry>,
    #[serde(default, deserialize_with = "null_as_empty")]
    failed: Vec<StatusEntry>,
}

#[derive(Clone, Default, Serialize, Deserialize)]
struct WireStorage {
    #[serde(default, deserialize_with = "null_as_empty")]
    deployed: Vec<Deployed>,
}

#[derive(Clone, Default, Serialize, Deserialize)]
struct WireClients {
    #[serde(
        rename = "all-synced",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    all_synced: Option<bool>,
    #[serde(rename = "file-sync-clients", default)]
    clients: Option<BTreeMap<String, FileSyncClient>>,
}

impl From<WireStatus> for DeploysStatus {
    fn from(w: WireStatus) -> Self {
        DeploysStatus {
            new: w.queues.new,
            queued: w.queues.queued,
            deploying: w.queues.deploying,
            failed: w.queues.failed,
            deployed: w.storage.deployed,
            all_synced: w.clients.all_synced,
            clients: w.clients.clients.unwrap_or_default(),
        }
    }
}

impl From<DeploysStatus> for WireStatus {
    fn from(s: DeploysStatus) -> Self {
        WireStatus {
            queues: WireQueues {
                new: s.new,
                queued: s.queued,
                deploying: s.deploying,
                failed: s.failed,
            },
            storage: WireStorage {
                deployed: s.deployed,
            },
            clients: WireClients {
                all_synced: s.all_synced,
                clients: Some(s.clients),
            },
        }
    }
}

fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

/// `GET /v1/deploys/status?id=N` (PE 2019.8.3+).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeployStatusById {
    /// `project` for CD4PE project deploys.
    #[serde(alias = "project")]
    pub environment: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// `new`, `queued`, `deploying`, `failed`, `syncing` or `synced`.
    pub status: DeployState,
    #[serde(rename = "queued-at", default, skip_serializing_if = "Option::is_none")]
    pub queued_at: Option<String>,
    /// Undocumented here; kept when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CmError>,
}

#[derive(Deserialize)]
struct DryRunEntry {
    #[serde(alias = "project")]
    environment: String,
}

fn decode<T: DeserializeOwned>(what: &str, body: Value) -> Result<T, PlatformError> {
    serde_json::from_value(body).map_err(|e| {
        PlatformError::new(
            ErrorKind::Protocol,
            format!("code manager {what}: unexpected answer: {e}"),
        )
    })
}

/// A `POST /v1/deploys` answer: one result per environment.
pub fn deploy_results(body: Value) -> Result<Vec<DeployResult>, PlatformError> {
    decode("deploy", body)
}

/// A `GET /v1/deploys/status` answer.
pub fn deploys_status(body: Value) -> Result<DeploysStatus, PlatformError> {
    decode("deploys status", body)
}

/// A `GET /v1/deploys/status?id=N` answer. A Code Manager older than PE 2019.8.3 ignores `id`
/// and answers the full status: that is reported as such.
pub fn deploy_status_by_id(body: Value) -> Result<DeployStatusById, PlatformError> {
    if body.get("deploys-status").is_some() {
        return Err(PlatformError::new(
            ErrorKind::Invalid,
            "this Code Manager cannot report a deploy by id (it needs PE 2019.8.3 or later): \
             deploy with wait, or follow the full status",
        ));
    }
    decode("deploy status by id", body)
}

/// A dry-run answer: the environment names the control repository has.
pub fn dry_run_environments(body: Value) -> Result<Vec<String>, PlatformError> {
    let entries: Vec<DryRunEntry> = decode("dry run", body)?;
    Ok(entries.into_iter().map(|e| e.environment).collect())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::platform::codemanager::errors::classify;
    use reqwest::StatusCode;
    use std::path::{Path, PathBuf};

    // -- fixtures ------------------------------------------------------------------------------

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/specs/puppet-code-manager")
    }

    pub(crate) fn fixture(name: &str) -> String {
        std::fs::read_to_string(fixtures().join(name)).expect(name)
    }

    /// The body as the client reads it: through `classify` with the given status.
    pub(crate) fn answer(name: &str, status: u16) -> Result<Value, PlatformError> {
        classify(
            StatusCode::from_u16(status).expect("status"),
            &fixture(name),
        )
    }

    pub(crate) fn results(name: &str) -> Vec<DeployResult> {
        deploy_results(answer(name, 200).expect(name)).expect(name)
    }

    fn full_status(name: &str) -> DeploysStatus {
        deploys_status(answer(name, 200).expect(name)).expect(name)
    }

    fn all_fixture_files() -> Vec<String> {
        let mut out = Vec::new();
        for dir in ["deploys", "deploys-status", "errors"] {
            for entry in std::fs::read_dir(fixtures().join(dir)).expect(dir) {
                let entry = entry.expect("entry");
                out.push(format!("{dir}/{}", entry.file_name().to_string_lossy()));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn every_fixture_file_is_checked() {
        let checked = [
            "deploys-status/cmdash-large-02-deploy-status-multiple.json",
            "deploys-status/cmdash-large-05-deploy-status-deleted.json",
            "deploys-status/cmdash-large-07-deploy-status-updating.json",
            "deploys-status/cmdash-small-01-multiple-in-progress.json",
            "deploys-status/cmdash-small-02-done.json",
            "deploys/jenkins-pe2016.4-code_deploy.json",
            "deploys/jenkins-pe2016.4-code_deploy_failed_no_such_env.json",
            "deploys/pejava-deploy_mixed.json",
            "deploys/pejava-puppet_deploy_error.json",
            "errors/jenkins-pe2016.4-deploys-expired_token.json",
            "errors/pejava-puppet_general_fail.json",
        ];
        assert_eq!(all_fixture_files(), checked, "a fixture has no test");
        // And every one of them goes through the client's own path without a protocol error.
        for name in all_fixture_files() {
            let status = if name.contains("expired_token") {
                401
            } else {
                200
            };
            match answer(&name, status) {
                Ok(body) if name.starts_with("deploys-status/") => {
                    deploys_status(body).expect(&name);
                }
                Ok(body) => {
                    deploy_results(body).expect(&name);
                }
                Err(e) => {
                    assert!(name.starts_with("errors/"), "{name}: {e}");
                    assert_ne!(e.kind, ErrorKind::Protocol, "{name}");
                }
            }
        }
    }

    #[test]
    fn mixed_deploy_all_has_ids_38_to_43_and_one_failure() {
        let r = results("deploys/pejava-deploy_mixed.json");
        assert_eq!(
            r.iter().map(|e| e.id).collect::<Vec<_>>(),
            (38..=43).map(Some).collect::<Vec<_>>()
        );
        let failed: Vec<_> = r
            .iter()
            .filter(|e| e.status == DeployState::Failed)
            .collect();
        assert_eq!(failed.len(), 1);
        let f = failed[0];
        assert_eq!(
            (f.environment.as_str(), f.id),
            ("fail_code_quality", Some(39))
        );
        assert!(f.deploy_signature.is_none() && f.file_sync.is_none());
        let err = f.error.as_ref().expect("error");
        assert_eq!(err.kind, "puppetlabs.code-manager/deploy-failure");
        assert_eq!(err.corrected_name().as_deref(), Some("fail_code_quality"));
        assert!(
            err.msg.contains("Puppetfile:19: syntax error"),
            "{}",
            err.msg
        );
        assert!(!err.is_expiry());
        let ok: Vec<_> = r.iter().filter(|e| e.status.is_success()).collect();
        assert_eq!(ok.len(), 5);
        assert!(ok
            .iter()
            .all(|e| e.status == DeployState::Complete && e.error.is_none()));
        let production = r.iter().find(|e| e.environment == "production").expect("p");
        assert_eq!(production.id, Some(43));
        assert_eq!(
            production.deploy_signature.as_deref(),
            Some("9e5475a0dbfb705bf474af80cbdf56f0477e7dc3")
        );
        let development = &r[0];
        assert_eq!(development.environment, "development");
        assert_eq!(
            development.file_sync,
            Some(FileSync {
                environment_commit: "943b1140bff1f510a0e4fd7dd7b769f04c14d510".into(),
                code_commit: "9a4c7c8174d48c35fd808313553bade148fc4cb8".into(),
            })
        );
        // Two environments deployed from the same control-repo commit.
        assert_eq!(
            r.iter()
                .filter(|e| e.deploy_signature.as_deref()
                    == Some("22811999e6cbeaf4b6be744a4d0b454b831f8999"))
                .map(|e| e.environment.as_str())
                .collect::<Vec<_>>(),
            ["development", "hmm"]
        );
    }

    #[test]
    fn jenkins_wait_deploys_parse() {
        let ok = results("deploys/jenkins-pe2016.4-code_deploy.json");
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].environment, "production");
        assert_eq!(ok[0].id, Some(6));
        assert_eq!(ok[0].status, DeployState::Complete);
        assert_eq!(
            ok[0].deploy_signature.as_deref(),
            Some("45ddf48253c2ee7537aae05c7e674879fd8bb616")
        );
        let fs = ok[0].file_sync.as_ref().expect("file-sync");
        assert_eq!(
            fs.environment_commit,
            "0d1bf46d5613a819ebb76ded56ebdedd0a326be3"
        );
        assert_eq!(fs.code_commit, "4bbf215913a801f1c090f5a58382c3009e4e5905");

        let failed = results("deploys/jenkins-pe2016.4-code_deploy_failed_no_such_env.json");
        assert_eq!(failed.len(), 1);
        assert_eq!(
            (failed[0].environment.as_str(), failed[0].id),
            ("nosuchenv", Some(10))
        );
        assert_eq!(failed[0].status, DeployState::Failed);
        assert!(failed[0].status.is_terminal() && !failed[0].status.is_success());
        let err = failed[0].error.as_ref().expect("error");
        assert_eq!(err.corrected_name().as_deref(), Some("nosuchenv"));
        assert!(err.msg.contains("cannot be found in any source"));
    }

    #[test]
    fn pejava_failed_deploy_parses() {
        let r = results("deploys/pejava-puppet_deploy_error.json");
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].environment.as_str(), r[0].id), ("nothere", Some(268)));
        assert_eq!(r[0].status, DeployState::Failed);
        let err = r[0].error.as_ref().expect("error");
        assert_eq!(err.short_kind(), "deploy-failure");
        assert_eq!(err.corrected_name().as_deref(), Some("nothere"));
        assert!(err.msg.contains("'nothere' cannot be found in any source"));
    }

    #[test]
    fn status_with_queued_and_deploying_of_one_environment() {
        let s = full_status("deploys-status/cmdash-large-02-deploy-status-multiple.json");
        assert!(s.new.is_empty());
        assert_eq!(s.queued.len(), 1);
        assert_eq!(s.deploying.len(), 1);
        assert_eq!(s.queued[0].environment, "combined_minor_changes");
        assert_eq!(
            s.queued[0].queued_at.as_deref(),
            Some("2018-11-16T01:53:30.081Z")
        );
        assert_eq!(s.deploying[0].environment, "combined_minor_changes");
        assert_eq!(
            s.deploying[0].queued_at.as_deref(),
            Some("2018-11-16T01:52:44.645Z")
        );
        assert!(s.queued[0].id.is_none(), "PE 2018 has no ids");
        assert!(s.in_progress("combined_minor_changes"));
        assert!(!s.in_progress("production"));
        let f = s.last_failure("win_profile_metadata").expect("failure");
        let err = f.error.as_ref().expect("error");
        assert_eq!(
            err.corrected_name().as_deref(),
            Some("win_profile_metadata")
        );
        assert!(err.msg.contains("Object not found - no match for id"));
        assert_eq!(s.deployed.len(), 39);
        assert_eq!(
            s.deployed("production")
                .map(|d| d.deploy_signature.as_str()),
            Some("998201c251a9b6432780ab51bbe1d83cb38314d1")
        );
        // Storage is ahead of the compilers while syncing.
        assert_eq!(
            s.deployed("combined_minor_changes")
                .map(|d| d.deploy_signature.as_str()),
            Some("deb98deb2f6753d5fe18c2702cb34b7394756ea8")
        );
        assert_eq!(s.all_synced, Some(false));
        assert_eq!(s.clients.len(), 7);
        let mom = &s.clients["pe-mom1-prod.ops.puppetlabs.net"];
        assert_eq!(
            mom.last_check_in_time.as_deref(),
            Some("2018-11-16T01:53:33.231Z")
        );
        assert_eq!(mom.synced, Some(false));
        assert_eq!(mom.deployed.len(), 39);
        let on_mom = mom
            .deployed
            .iter()
            .find(|d| d.environment == "combined_minor_changes")
            .expect("env");
        assert_eq!(
            on_mom.deploy_signature,
            "3f809d0eaad1458bc1f0cf681cb225985cd6dc64"
        );
        assert!(s.clients.values().all(|c| c.synced == Some(false)));
    }

    #[test]
    fn status_after_deleted_branches() {
        let s = full_status("deploys-status/cmdash-large-05-deploy-status-deleted.json");
        assert!(s.new.is_empty() && s.queued.is_empty() && s.deploying.is_empty());
        assert_eq!(
            s.failed
                .iter()
                .map(|e| e.environment.as_str())
                .collect::<Vec<_>>(),
            ["combined_minor_changes", "p9openstack_designate"]
        );
        for f in &s.failed {
            let err = f.error.as_ref().expect("error");
            assert_eq!(
                err.corrected_name().as_deref(),
                Some(f.environment.as_str())
            );
            assert!(err.msg.contains("cannot be found in any source"));
        }
        assert_eq!(s.all_synced, Some(true));
        assert!(s.clients.values().all(|c| c.synced == Some(true)));
        assert_eq!(s.deployed.len(), 39);
    }

    #[test]
    fn status_while_updating() {
        let s = full_status("deploys-status/cmdash-large-07-deploy-status-updating.json");
        assert_eq!(s.deploying.len(), 1);
        assert_eq!(s.deploying[0].environment, "allusers_win_hyperv");
        assert!(s.in_progress("allusers_win_hyperv"));
        assert_eq!(s.failed.len(), 3);
        assert_eq!(
            s.last_failure("allusers_gene_account_update")
                .and_then(|f| f.queued_at.as_deref()),
            Some("2018-11-17T09:25:37.815Z")
        );
        assert_eq!(s.all_synced, Some(true));
        assert_eq!(s.clients.len(), 7);
    }

    #[test]
    fn small_status_bodies() {
        let s = full_status("deploys-status/cmdash-small-01-multiple-in-progress.json");
        assert_eq!(s.queued.len(), 1);
        assert_eq!(s.deploying.len(), 1);
        assert!(s.failed.is_empty());
        assert_eq!(s.deployed.len(), 1);
        assert_eq!(
            s.deployed[0].deploy_signature,
            "deb98deb2f6753d5fe18c2702cb34b7394756ea8"
        );
        assert_eq!(s.all_synced, Some(false));

        let done = full_status("deploys-status/cmdash-small-02-done.json");
        assert!(done.new.is_empty() && done.queued.is_empty());
        assert!(done.deploying.is_empty() && done.failed.is_empty());
        assert!(!done.in_progress("combined_minor_changes"));
        assert_eq!(
            done.deployed("combined_minor_changes"),
            Some(&Deployed {
                environment: "combined_minor_changes".into(),
                date: "2018-11-16T01:55:00.000Z".into(),
                deploy_signature: "09f2520f56cbfa415d0310908a37009eecfa202a".into(),
            })
        );
        assert_eq!(done.all_synced, Some(true));
        assert!(done.clients.values().all(|c| c.synced == Some(true)));
    }

    #[test]
    fn status_serializes_back_to_the_wire_shape() {
        let s = full_status("deploys-status/cmdash-large-02-deploy-status-multiple.json");
        let wire = serde_json::to_value(&s).expect("encode");
        assert!(wire["deploys-status"]["queued"].is_array());
        assert_eq!(wire["file-sync-client-status"]["all-synced"], false);
        assert_eq!(deploys_status(wire).expect("decode"), s);
    }

    #[test]
    fn deploy_states_parse_and_judge() {
        for (text, state) in [
            ("new", DeployState::New),
            ("queued", DeployState::Queued),
            ("deploying", DeployState::Deploying),
            ("failed", DeployState::Failed),
            ("syncing", DeployState::Syncing),
            ("synced", DeployState::Synced),
            ("complete", DeployState::Complete),
            ("pending", DeployState::Other("pending".into())),
        ] {
            let parsed: DeployState =
                serde_json::from_value(Value::String(text.into())).expect(text);
            assert_eq!(parsed, state);
            assert_eq!(serde_json::to_value(&state).expect("encode"), text);
            assert_eq!(state.to_string(), text);
        }
        let terminal = [
            DeployState::Failed,
            DeployState::Synced,
            DeployState::Complete,
        ];
        for s in &terminal {
            assert!(s.is_terminal(), "{s}");
        }
        for s in [
            DeployState::New,
            DeployState::Queued,
            DeployState::Deploying,
            DeployState::Syncing,
            DeployState::Other("pending".into()),
        ] {
            assert!(!s.is_terminal() && !s.is_success(), "{s}");
        }
        assert!(DeployState::Synced.is_success() && DeployState::Complete.is_success());
        assert!(!DeployState::Failed.is_success());
    }

    #[test]
    fn corrected_names_from_every_details_key() {
        for key in ["corrected-name", "corrected-env-name", "env-name"] {
            let e = CmError {
                kind: "puppetlabs.code-manager/deploy-failure".into(),
                msg: "x".into(),
                details: Some(serde_json::json!({ key: "feature_x" })),
            };
            assert_eq!(e.corrected_name().as_deref(), Some("feature_x"), "{key}");
        }
        let text = CmError {
            kind: "k".into(),
            msg: String::new(),
            details: Some(Value::String("ERROR".into())),
        };
        assert_eq!(text.corrected_name(), None);
    }

    #[test]
    fn deploy_requests_use_hyphenated_keys_and_omit_unset_ones() {
        let full = DeployRequest {
            environments: vec!["production".into(), "feature_x".into()],
            deploy_all: false,
            deploy_modules: Some(false),
            modules: Some(vec!["apache".into(), "nginx".into()]),
            wait: true,
            dry_run: false,
        };
        assert_eq!(
            serde_json::to_value(&full).expect("encode"),
            serde_json::json!({
                "environments": ["production", "feature_x"],
                "deploy-modules": false,
                "modules": ["apache", "nginx"],
                "wait": true,
            })
        );
        let dry = DeployRequest {
            deploy_all: true,
            wait: true,
            dry_run: true,
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&dry).expect("encode"),
            serde_json::json!({"deploy-all": true, "wait": true, "dry-run": true})
        );
        assert_eq!(
            serde_json::to_value(DeployRequest::default()).expect("encode"),
            serde_json::json!({})
        );
        // Read back (for simulators), including PE 2017's `dry_run`.
        let back: DeployRequest =
            serde_json::from_value(serde_json::json!({"deploy-all": true, "dry_run": true}))
                .expect("decode");
        assert!(back.deploy_all && back.dry_run && !back.wait);
        assert_eq!(
            serde_json::from_value::<DeployRequest>(serde_json::to_value(&full).expect("e"))
                .expect("d"),
            full
        );
    }

    #[test]
    fn status_by_id_accepts_project_and_refuses_old_servers() {
        let s = deploy_status_by_id(serde_json::json!({
            "project": "cd4pe_proj", "id": 7, "status": "syncing", "queued-at": "2021-01-01T00:00:00Z"
        }))
        .expect("decode");
        assert_eq!(s.environment, "cd4pe_proj");
        assert_eq!(s.id, Some(7));
        assert_eq!(s.status, DeployState::Syncing);
        assert_eq!(s.queued_at.as_deref(), Some("2021-01-01T00:00:00Z"));
        let old = answer("deploys-status/cmdash-small-02-done.json", 200).expect("body");
        let e = deploy_status_by_id(old).expect_err("old PE");
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert!(e.message.contains("2019.8.3"));
    }

    #[test]
    fn dry_run_lists_environment_names() {
        let body = classify(
            StatusCode::OK,
            r#"[{"environment":"development"},{"environment":"production"}]"#,
        )
        .expect("ok");
        assert_eq!(
            dry_run_environments(body).expect("names"),
            ["development", "production"]
        );
    }
}
