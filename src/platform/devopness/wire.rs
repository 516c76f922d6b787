//! The Devopness wire types (`shared/specs/devopness-openapi.json`): the request and response
//! bodies the client sends and reads, the `Link` header bosun pages by, and their serde
//! helpers.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::fmt;

/// A project (`Project`; only the fields bosun reads).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Project {
    pub id: i64,
    pub name: String,
    #[serde(default)]
    pub user_id: Option<i64>,
}

/// An environment (`Environment`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Environment {
    pub id: i64,
    pub name: String,
    /// `development`, `production` or `staging`.
    #[serde(default, rename = "type")]
    pub environment_type: Option<String>,
    #[serde(default)]
    pub is_archived: bool,
}

/// The current user (`UserMe`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct User {
    pub id: i64,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub url_slug: Option<String>,
}

/// A short reference to an action (`ActionRelationShallow`, or the fields of `ActionRelation`
/// bosun reads).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ActionRef {
    pub id: i64,
    #[serde(default)]
    pub status: Option<ActionStatus>,
    #[serde(default)]
    pub status_reason_code: Option<String>,
    /// `ActionType`, for example `deploy` or `delete`.
    #[serde(default, rename = "type")]
    pub action_type: Option<String>,
}

/// `Application.last_deployments`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct LastDeployments {
    /// The most recent deployment, whatever its status.
    #[serde(default)]
    pub latest: Option<ActionRef>,
    /// The most recent successful deployment.
    #[serde(default)]
    pub live: Option<ActionRef>,
}

impl crate::core::locate::Identified for Application {
    fn platform_id(&self) -> i64 {
        self.id
    }
    fn platform_name(&self) -> &str {
        &self.name
    }
}

/// An application (`Application` or, in lists, `ApplicationRelation`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Application {
    pub id: i64,
    pub name: String,
    #[serde(default)]
    pub project_id: Option<i64>,
    #[serde(default)]
    pub environment_id: Option<i64>,
    #[serde(default)]
    pub repository: Option<String>,
    #[serde(default)]
    pub default_branch: Option<String>,
    #[serde(default)]
    pub programming_language: Option<String>,
    #[serde(default)]
    pub engine_version: Option<String>,
    #[serde(default)]
    pub framework: Option<String>,
    #[serde(default)]
    pub root_directory: Option<String>,
    #[serde(default)]
    pub build_command: Option<String>,
    #[serde(default)]
    pub install_dependencies_command: Option<String>,
    #[serde(default)]
    pub deployments_keep: Option<i64>,
    /// The credential's id, read from the nested `credential` object.
    #[serde(default, deserialize_with = "nested_id", rename = "credential")]
    pub credential_id: Option<i64>,
    #[serde(default, deserialize_with = "null_default")]
    pub last_deployments: LastDeployments,
    /// The servers the application is linked to. Only the full answer (`GET
    /// /applications/{id}`, `Application`) has them; lists (`ApplicationRelation`) do not.
    #[serde(default, deserialize_with = "null_default")]
    pub servers: Vec<ServerRef>,
}

/// A server an application is linked to (`ServerRelation`; the fields bosun reads).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ServerRef {
    pub id: i64,
    /// The public IPv4 address.
    #[serde(default)]
    pub ip_address: Option<String>,
}

/// A resource to link on create (`ResourceToBeLinked`).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LinkedResource {
    pub resource_type: String,
    pub resource_id: i64,
}

/// `POST /environments/{id}/applications` body (`ApplicationEnvironmentCreate`).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CreateApplication {
    pub name: String,
    pub programming_language: String,
    pub engine_version: String,
    pub framework: String,
    pub repository: String,
    pub credential_id: i64,
    pub default_branch: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_directory: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub install_dependencies_command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployments_keep: Option<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub linked_resources: Vec<LinkedResource>,
}

/// `PUT /applications/{id}` body (`ApplicationUpdate`): a full replace, `id` repeated.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct UpdateApplication {
    pub id: i64,
    pub name: String,
    pub programming_language: String,
    pub engine_version: String,
    pub framework: String,
    pub default_branch: String,
    /// When set, `credential_id` is required too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_directory: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub install_dependencies_command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployments_keep: Option<i64>,
}

/// `DeploymentType`.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DeploymentType {
    Deploy,
    Redeploy,
    Rollback,
}

/// `SourceType`.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SourceType {
    Branch,
    Commit,
    Tag,
}

/// `POST /applications/{id}/deployments` body (`DeploymentApplicationCreate`).
/// `source_type` and `source_ref` go together; without them the default branch is deployed.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DeployApplication {
    #[serde(rename = "type")]
    pub deployment_type: DeploymentType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_type: Option<SourceType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<String>,
    /// The pipeline to run; the default deploy pipeline when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline_id: Option<i64>,
    /// Target servers; the application's linked servers when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<i64>,
}

/// `ActionStatus`; a value the spec does not name is kept as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActionStatus {
    Pending,
    Waiting,
    Skipped,
    Queued,
    InProgress,
    Completed,
    Failed,
    Other(String),
}

impl ActionStatus {
    pub fn parse(s: &str) -> ActionStatus {
        match s {
            "pending" => ActionStatus::Pending,
            "waiting" => ActionStatus::Waiting,
            "skipped" => ActionStatus::Skipped,
            "queued" => ActionStatus::Queued,
            "in-progress" => ActionStatus::InProgress,
            "completed" => ActionStatus::Completed,
            "failed" => ActionStatus::Failed,
            other => ActionStatus::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            ActionStatus::Pending => "pending",
            ActionStatus::Waiting => "waiting",
            ActionStatus::Skipped => "skipped",
            ActionStatus::Queued => "queued",
            ActionStatus::InProgress => "in-progress",
            ActionStatus::Completed => "completed",
            ActionStatus::Failed => "failed",
            ActionStatus::Other(s) => s,
        }
    }

    /// `completed`, `failed` and `skipped` end an action; unknown values are not terminal.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            ActionStatus::Completed | ActionStatus::Failed | ActionStatus::Skipped
        )
    }
}

impl fmt::Display for ActionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ActionStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(ActionStatus::parse(&s))
    }
}

/// One target (server) of an action (`ActionTarget`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ActionTarget {
    #[serde(default)]
    pub id: Option<i64>,
    #[serde(default)]
    pub resource_type: Option<String>,
    #[serde(default)]
    pub resource_id: Option<i64>,
    pub status: ActionStatus,
    #[serde(default)]
    pub status_reason_code: Option<String>,
    #[serde(default)]
    pub status_reason_human_readable: Option<String>,
}

/// An action (`Action`; the fields bosun reads).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Action {
    pub id: i64,
    pub status: ActionStatus,
    /// `ActionStatusReasonCode`, for example `FAILED_INSUFFICIENT_CREDITS`.
    #[serde(default)]
    pub status_reason_code: Option<String>,
    #[serde(default)]
    pub status_reason_human_readable: Option<String>,
    /// `ActionType`, for example `deploy`.
    #[serde(default, rename = "type")]
    pub action_type: Option<String>,
    #[serde(default)]
    pub url_web_permalink: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub completed_at: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub targets: Vec<ActionTarget>,
}

impl Action {
    /// Why a failed action failed: the platform's reason, and which targets failed and why.
    /// `None` unless the action failed.
    pub fn failure_reason(&self) -> Option<String> {
        if self.status != ActionStatus::Failed {
            return None;
        }
        let mut reason = self
            .status_reason_human_readable
            .clone()
            .filter(|s| !s.trim().is_empty())
            .or_else(|| self.status_reason_code.clone())
            .unwrap_or_else(|| "failed".to_string());
        if let Some(code) = &self.status_reason_code {
            if !reason.contains(code.as_str()) {
                reason = format!("{reason} ({code})");
            }
        }
        let failed: Vec<String> = self
            .targets
            .iter()
            .filter(|t| t.status == ActionStatus::Failed)
            .map(|t| {
                let what = match (&t.resource_type, t.resource_id) {
                    (Some(ty), Some(id)) => format!("{ty} {id}"),
                    (None, Some(id)) => format!("target {id}"),
                    _ => "a target".to_string(),
                };
                match t
                    .status_reason_human_readable
                    .as_ref()
                    .or(t.status_reason_code.as_ref())
                {
                    Some(r) => format!("{what}: {r}"),
                    None => what,
                }
            })
            .collect();
        if !failed.is_empty() {
            reason = format!("{reason}; failed on {}", failed.join(", "));
        }
        Some(reason)
    }
}

/// A variable (`Variable`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Variable {
    pub id: i64,
    pub key: String,
    #[serde(default)]
    pub value: Option<String>,
    /// `file`, `symlink` or `variable`.
    #[serde(default, rename = "type")]
    pub variable_type: Option<String>,
    /// `VariableTarget`, for example `os-env-var`.
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub hidden: bool,
    #[serde(default)]
    pub description: Option<String>,
}

/// `POST /variables/{resource_type}/{resource_id}` body (`VariableCreate`).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CreateVariable {
    pub key: String,
    pub value: String,
    pub target: String,
    #[serde(rename = "type")]
    pub variable_type: String,
    pub hidden: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl CreateVariable {
    /// An environment variable of the application's processes (`type=variable`,
    /// `target=os-env-var`); `hidden` keeps it out of deployment logs.
    pub fn env(key: impl Into<String>, value: impl Into<String>, hidden: bool) -> Self {
        CreateVariable {
            key: key.into(),
            value: value.into(),
            target: "os-env-var".to_string(),
            variable_type: "variable".to_string(),
            hidden,
            description: None,
        }
    }
}

/// `PUT /variables/{id}` body (`VariableUpdate`): a full replace, `id` repeated.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct UpdateVariable {
    pub id: i64,
    pub key: String,
    pub value: String,
    pub target: String,
    #[serde(rename = "type")]
    pub variable_type: String,
    pub hidden: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A virtual host (`VirtualHost`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct VirtualHost {
    pub id: i64,
    pub name: String,
    /// `ip-based` or `name-based`.
    #[serde(default, rename = "type")]
    pub virtual_host_type: Option<String>,
    #[serde(default)]
    pub root_directory: Option<String>,
    #[serde(default)]
    pub application_listen_address: Option<String>,
    /// The linked application's id, read from the nested `application` object.
    #[serde(default, deserialize_with = "nested_id", rename = "application")]
    pub application_id: Option<i64>,
    #[serde(default)]
    pub last_action: Option<ActionRef>,
    /// The certificate issued for this virtual host (`SslCertificateRelation`), if any.
    #[serde(default)]
    pub ssl_certificate: Option<SslCertificateRef>,
}

/// `VirtualHost.ssl_certificate` (`SslCertificateRelation`; the fields bosun reads).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct SslCertificateRef {
    pub id: i64,
    /// Whether the certificate is in force on every linked server.
    #[serde(default, deserialize_with = "null_default")]
    pub active: bool,
    #[serde(default)]
    pub last_action: Option<ActionRef>,
}

/// `PUT /virtual-hosts/{id}` body (`VirtualHostUpdate`), `id` repeated. The type cannot
/// change; fields left `None` are not sent (and keep their value).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct UpdateVirtualHost {
    pub id: i64,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_directory: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_listen_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_id: Option<i64>,
}

/// `POST /virtual-hosts/{id}/deploy` and `POST /ssl-certificates/{id}/deploy` body
/// (`VirtualHostDeploy`, `SslCertificateDeploy`).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub(super) struct DeployToServers<'a> {
    /// Target servers; the platform's default targets when empty.
    #[serde(skip_serializing_if = "<[i64]>::is_empty")]
    pub(super) servers: &'a [i64],
}

/// An SSL certificate (`SslCertificate` or, in lists, `SslCertificateRelation`).
///
/// The spec links a certificate to its virtual host only on create (`virtual_host_id` in
/// `SslCertificateEnvironmentCreate`); neither schema of the certificate names the virtual
/// host. A certificate takes the virtual host's name, so certificates are found by `name` ==
/// the virtual host's domain name, or through `VirtualHost.ssl_certificate`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct SslCertificate {
    pub id: i64,
    /// The domain name (the virtual host's name).
    pub name: String,
    /// `SslCertificateIssuer`: `lets-encrypt` or `custom`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Whether the certificate is in force on every linked server; a Let's Encrypt certificate
    /// becomes active when its issuing action completes.
    #[serde(default, deserialize_with = "null_default")]
    pub active: bool,
    #[serde(default)]
    pub last_action: Option<ActionRef>,
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Not in the spec's answers (see above), so `None` from the API unless a server sends it.
    #[serde(default)]
    pub virtual_host_id: Option<i64>,
}

/// `POST /environments/{id}/ssl-certificates` body (`SslCertificateEnvironmentCreate`). Bosun
/// sends issuer `lets-encrypt` (a `custom` issuer needs the key and certificate, which this
/// type does not carry).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CreateSslCertificate {
    pub virtual_host_id: i64,
    /// `SslCertificateIssuer`: `lets-encrypt` or `custom`.
    pub issuer: String,
    /// `SslCertificateType`: `single-domain`, `multi-domain` or `wildcard`.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub certificate_type: Option<String>,
    /// `SslCertificateValidationLevel`: `DV`, `OV` or `EV`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_level: Option<String>,
}

/// `POST /environments/{id}/virtual-hosts` body (`VirtualHostEnvironmentCreate`).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CreateVirtualHost {
    /// `name-based` (a domain name) or `ip-based`.
    #[serde(rename = "type")]
    pub virtual_host_type: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_directory: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_listen_address: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub linked_resources: Vec<LinkedResource>,
}

/// The `Link` header's relations (RFC 8288), as given (usually absolute URLs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Links {
    pub first: Option<String>,
    pub last: Option<String>,
    pub next: Option<String>,
    /// `rel="prev"` or `rel="previous"` (the spec and the docs disagree).
    pub prev: Option<String>,
}

/// Parses a `Link` header: `<url>; rel="next", <url>; rel="last"`. Commas inside `<...>` are
/// part of the URL; `rel` may be quoted or not and may list several relations.
pub fn parse_link(header: &str) -> Links {
    let mut links = Links::default();
    let mut rest = header;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('>') else { break };
        let url = after[..close].trim().to_string();
        let tail = &after[close + 1..];
        // The parameters run up to the next link (a comma followed by `<`) or the end.
        let end = tail.find('<').unwrap_or(tail.len());
        let params = &tail[..end];
        rest = &tail[end..];
        for param in params.split(';') {
            let Some((name, value)) = param.split_once('=') else {
                continue;
            };
            if !name.trim().eq_ignore_ascii_case("rel") {
                continue;
            }
            let value = value.trim().trim_end_matches(',').trim().trim_matches('"');
            for rel in value.split_whitespace() {
                let slot = match rel.to_ascii_lowercase().as_str() {
                    "first" => &mut links.first,
                    "last" => &mut links.last,
                    "next" => &mut links.next,
                    "prev" | "previous" => &mut links.prev,
                    _ => continue,
                };
                if slot.is_none() {
                    *slot = Some(url.clone());
                }
            }
        }
    }
    links
}

/// `null` reads as the default (the spec marks many lists and objects nullable).
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The `id` of a nested object (`{"id": 3, ...}`), or `None` for `null` or no id.
fn nested_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = Option::<Value>::deserialize(d)?;
    Ok(v.and_then(|v| v.get("id").and_then(Value::as_i64)))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn link_header_from_the_docs() {
        let h = r#"<https://api.devopness.com/projects?page=1>; rel="first", <https://api.devopness.com/projects?page=6>; rel="last", <https://api.devopness.com/projects?page=3>; rel="prev", <https://api.devopness.com/projects?page=5>; rel="next""#;
        let l = parse_link(h);
        assert_eq!(
            l.first.as_deref(),
            Some("https://api.devopness.com/projects?page=1")
        );
        assert_eq!(
            l.last.as_deref(),
            Some("https://api.devopness.com/projects?page=6")
        );
        assert_eq!(
            l.prev.as_deref(),
            Some("https://api.devopness.com/projects?page=3")
        );
        assert_eq!(
            l.next.as_deref(),
            Some("https://api.devopness.com/projects?page=5")
        );
    }

    #[test]
    fn link_header_variants() {
        // `previous`, unquoted rel, extra params, commas in URLs, odd spacing, no next.
        let h = "<https://x/a?page=1&f=a,b>;rel=first ,<https://x/a?page=2>; title=\"p, q\"; rel=\"previous\",<https://x/a?page=9>; rel=\"last\"";
        let l = parse_link(h);
        assert_eq!(l.first.as_deref(), Some("https://x/a?page=1&f=a,b"));
        assert_eq!(l.prev.as_deref(), Some("https://x/a?page=2"));
        assert_eq!(l.last.as_deref(), Some("https://x/a?page=9"));
        assert_eq!(l.next, None, "no next: the end of the collection");
        // Several relations in one rel.
        let l = parse_link(r#"<https://x/?page=2>; rel="next last""#);
        assert_eq!(l.next.as_deref(), Some("https://x/?page=2"));
        assert_eq!(l.last.as_deref(), Some("https://x/?page=2"));
        assert_eq!(parse_link(""), Links::default());
        assert_eq!(parse_link("garbage, <unclosed"), Links::default());
    }

    #[test]
    fn action_statuses_cover_the_spec() {
        for (text, status, terminal) in [
            ("pending", ActionStatus::Pending, false),
            ("waiting", ActionStatus::Waiting, false),
            ("queued", ActionStatus::Queued, false),
            ("in-progress", ActionStatus::InProgress, false),
            ("skipped", ActionStatus::Skipped, true),
            ("completed", ActionStatus::Completed, true),
            ("failed", ActionStatus::Failed, true),
        ] {
            let parsed: ActionStatus =
                serde_json::from_value(Value::String(text.into())).expect("status");
            assert_eq!(parsed, status);
            assert_eq!(parsed.is_terminal(), terminal, "{text}");
            assert_eq!(parsed.as_str(), text);
        }
        let odd = ActionStatus::parse("in_progress");
        assert_eq!(odd, ActionStatus::Other("in_progress".into()));
        assert!(!odd.is_terminal());
        assert_eq!(odd.to_string(), "in_progress");
    }

    #[test]
    fn failed_actions_explain_why() {
        let a: Action = serde_json::from_str(
            r#"{"id":7,"status":"failed","status_reason_code":"FAILED_INSUFFICIENT_CREDITS",
                "status_reason_human_readable":"Failed: insufficient credits","type":"deploy",
                "targets":[{"id":1,"resource_type":"server","resource_id":3,"status":"failed",
                            "status_reason_code":"FAILED"},
                           {"id":2,"resource_type":"server","resource_id":4,"status":"completed"}]}"#,
        )
        .expect("action");
        let why = a.failure_reason().expect("reason");
        assert!(why.contains("insufficient credits"), "{why}");
        assert!(why.contains("FAILED_INSUFFICIENT_CREDITS"), "{why}");
        assert!(why.contains("server 3: FAILED"), "{why}");
        assert!(!why.contains("server 4"), "{why}");
        let ok: Action =
            serde_json::from_str(r#"{"id":8,"status":"completed","targets":null}"#).expect("ok");
        assert_eq!(ok.failure_reason(), None);
    }

    #[test]
    fn request_bodies_match_the_spec() {
        let d = DeployApplication {
            deployment_type: DeploymentType::Deploy,
            source_type: Some(SourceType::Commit),
            source_ref: Some("abc123".into()),
            pipeline_id: Some(5),
            servers: vec![1, 2],
        };
        assert_eq!(
            serde_json::to_value(&d).expect("json"),
            serde_json::json!({"type":"deploy","source_type":"commit","source_ref":"abc123","pipeline_id":5,"servers":[1,2]})
        );
        let d = DeployApplication {
            deployment_type: DeploymentType::Redeploy,
            source_type: None,
            source_ref: None,
            pipeline_id: None,
            servers: vec![],
        };
        assert_eq!(
            serde_json::to_value(&d).expect("json"),
            serde_json::json!({"type":"redeploy"})
        );
        assert_eq!(
            serde_json::to_value(CreateVariable::env("A", "b", true)).expect("json"),
            serde_json::json!({"key":"A","value":"b","target":"os-env-var","type":"variable","hidden":true})
        );
    }

    #[test]
    fn applications_read_nested_and_null_fields() {
        let a: Application = serde_json::from_str(
            r#"{"id":1,"name":"web","credential":{"id":9,"name":"gh"},
                "last_deployments":{"latest":{"id":40,"status":"in-progress"},"live":null},
                "root_directory":null}"#,
        )
        .expect("app");
        assert_eq!(a.credential_id, Some(9));
        assert_eq!(a.last_deployments.latest.as_ref().map(|l| l.id), Some(40));
        assert_eq!(a.last_deployments.live, None);
        let a: Application =
            serde_json::from_str(r#"{"id":2,"name":"x","last_deployments":null}"#).expect("app");
        assert_eq!(a.last_deployments, LastDeployments::default());
    }

    pub(crate) fn lets_encrypt(virtual_host_id: i64) -> CreateSslCertificate {
        CreateSslCertificate {
            virtual_host_id,
            issuer: "lets-encrypt".into(),
            certificate_type: None,
            validation_level: None,
        }
    }

    #[test]
    fn new_request_bodies_match_the_spec() {
        let u = UpdateVirtualHost {
            id: 4,
            name: "a.example.com".into(),
            root_directory: None,
            application_listen_address: Some("http://127.0.0.1:8080".into()),
            application_id: None,
        };
        assert_eq!(
            serde_json::to_value(&u).expect("json"),
            serde_json::json!({"id":4,"name":"a.example.com","application_listen_address":"http://127.0.0.1:8080"})
        );
        assert_eq!(
            serde_json::to_value(lets_encrypt(9)).expect("json"),
            serde_json::json!({"virtual_host_id":9,"issuer":"lets-encrypt"})
        );
        let full = CreateSslCertificate {
            certificate_type: Some("single-domain".into()),
            validation_level: Some("DV".into()),
            ..lets_encrypt(9)
        };
        assert_eq!(
            serde_json::to_value(full).expect("json"),
            serde_json::json!({"virtual_host_id":9,"issuer":"lets-encrypt","type":"single-domain","validation_level":"DV"})
        );
        assert_eq!(
            serde_json::to_value(DeployToServers { servers: &[] }).expect("json"),
            serde_json::json!({})
        );
        assert_eq!(
            serde_json::to_value(DeployToServers { servers: &[1, 2] }).expect("json"),
            serde_json::json!({"servers":[1,2]})
        );
    }

    #[test]
    fn nested_relations_are_read() {
        let v: VirtualHost = serde_json::from_str(
            r#"{"id":3,"name":"a.example.com","application":null,
                "ssl_certificate":{"id":8,"name":"a.example.com","active":true,
                    "last_action":{"id":70,"type":"deploy","status":"completed"}},
                "last_action":{"id":71,"type":"deploy","status":"pending"}}"#,
        )
        .expect("vhost");
        let cert = v.ssl_certificate.expect("certificate");
        assert_eq!((cert.id, cert.active), (8, true));
        let a = cert.last_action.expect("action");
        assert_eq!(a.action_type.as_deref(), Some("deploy"));
        assert_eq!(a.status, Some(ActionStatus::Completed));
        assert_eq!(v.last_action.map(|a| a.id), Some(71));
        let v: VirtualHost = serde_json::from_str(
            r#"{"id":3,"name":"a.example.com","ssl_certificate":{"id":8,"active":null}}"#,
        )
        .expect("vhost");
        assert_eq!(v.ssl_certificate.map(|c| c.active), Some(false));
        let v: VirtualHost =
            serde_json::from_str(r#"{"id":3,"name":"x","ssl_certificate":null}"#).expect("vhost");
        assert_eq!(v.ssl_certificate, None);
        let c: SslCertificate = serde_json::from_str(
            r#"{"id":8,"name":"a.example.com","type":"single-domain","issuer":"lets-encrypt",
                "validation_level":"DV","active":false,"last_action":null,"expires_at":null,
                "last_renewed_at":null}"#,
        )
        .expect("certificate");
        assert_eq!(c.issuer.as_deref(), Some("lets-encrypt"));
        assert_eq!(
            (c.active, c.expires_at, c.virtual_host_id),
            (false, None, None)
        );
        let a: Application = serde_json::from_str(
            r#"{"id":1,"name":"web","servers":[{"id":1,"name":"s","ip_address":"10.0.0.1"},{"id":2}]}"#,
        )
        .expect("app");
        assert_eq!(
            a.servers,
            vec![
                ServerRef {
                    id: 1,
                    ip_address: Some("10.0.0.1".into())
                },
                ServerRef {
                    id: 2,
                    ip_address: None
                }
            ]
        );
        let a: Application = serde_json::from_str(r#"{"id":1,"name":"web"}"#).expect("app");
        assert!(a.servers.is_empty());
    }
}
