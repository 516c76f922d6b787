//! Workspace and ServiceScale on Spheron.
//!
//! A Workspace is one of two things, chosen by `spec.spheron.compute`:
//!
//! - **A site** (no `compute` block): a Spheron project and its deployments. Spheron has no
//!   "create project" call: the first deployment of a repository creates the project, and the
//!   project is keyed by organization and repository, so bosun finds a site's project by id or
//!   by its repository URL. `status.externalId` is the project id. Every deployment is tracked
//!   in `status.operation` (its id and Spheron's state) until `Deployed` (Ready, with the URL
//!   and commit in status); `Failed`, `TimedOut` and `Canceled` stall with Spheron's state and
//!   reason until the spec changes or `bosun.dev/reconcile-requested-at` asks again;
//!   `AuthorizationNeeded` waits for someone to authorize the deployment at Spheron. A change
//!   of ref, variables or build settings starts a new deployment (a redeploy would replay the
//!   earlier request's variables, so it cannot carry a change); a requested reconcile of an
//!   unchanged, deployed spec is a redeploy (the same commit with the project's latest
//!   variables). A deployment of an older spec still in flight is canceled first. A site has
//!   no replica count: `spec.replicas` above 1 is `UnsupportedByProvider`.
//! - **A compute instance** (`compute` set): one instance, named after the Workspace's external
//!   name, whose **main service** (its first service; bosun creates it as [`MAIN_SERVICE`])
//!   runs `compute.image` on `compute.machine` with `serviceCount = spec.replicas`. Changes
//!   are updates, which resend the full service list (other services unchanged). A replica
//!   count changed at Spheron behind bosun's back is set back with a `DriftCorrected` Event.
//!   `status.replicas` is the main service's running count, which `kubectl scale` drives.
//!
//! **ServiceScale rule**: the main service belongs to the Workspace (`spec.replicas`), so a
//! ServiceScale naming it is refused with a message that says so; every other service of the
//! instance (added at Spheron) is scaled by its ServiceScale, drift corrected with an Event.
//!
//! Non-idempotent calls are crash-safe: creates run between `guard.before_create()` and
//! `guard.created(id)`, and every deployment or update is announced in `status.operation` with
//! state `requesting` before it is sent. A site start carries a `uniqueTopicId` that Spheron
//! echoes as the deployment's `topic`, so a restart finds the deployment it may have started;
//! a redeploy or compute update records the newest deployment id before the call, so a newer
//! one after a restart is taken as its own instead of sending another.
//!
//! Calls are kept few: projects and instances are read from one listing per organization
//! shared by every reconcile for a few seconds; finished deployments never change and are
//! cached; and a Workspace whose deployment bosun already found matching its spec costs no
//! call of its own until the listing shows something new.

use super::client::{
    BuildConfiguration, ComputeDeployment, ComputeDeploymentStatus, ComputeInstance,
    ComputeService, CreateComputeInstance, DeployedService, Deployment, DeploymentStatus, EnvEntry,
    InstanceState, Port, Project, ProjectState, SpheronClient, StartDeployment,
    UpdateComputeInstance,
};
use crate::api::{
    GitRef, OperationStatus, RunState, ServiceScaleStatus, SpheronCompute, SpheronSite,
    WorkspaceSpec, WorkspaceStatus,
};
use crate::core::conditions::{Readiness, SyncState};
use crate::core::drivers::{
    locate, CreateGuard, Located, ScaleRequest, ServiceScaleDriver, WorkspaceDriver,
    WorkspaceRequest,
};
use crate::core::error::ReconcileError;
use crate::core::reason::Reason;
use crate::core::reconciler::{Cleanup, Note, Report};
use crate::core::seam::{ErrorKind, PlatformError};
use crate::platform::listing::{listing_ttl, SharedListings};
use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

/// How often a deployment in flight is looked at.
pub const DEPLOY_POLL: Duration = Duration::from_secs(3);
/// How often a deployment waiting for authorization is looked at (a person must act).
pub const AUTHORIZATION_POLL: Duration = Duration::from_secs(30);
/// How long bosun waits for one of its deployments before reporting it `Stalled`.
pub const DEPLOY_DEADLINE: SignedDuration = SignedDuration::from_secs(30 * 60);
/// `status.operation.kind` of a site deployment started from the spec's source.
pub const DEPLOY: &str = "deploy";
/// `status.operation.kind` of a site redeploy (the same commit, the latest variables).
pub const REDEPLOY: &str = "redeploy";
/// `status.operation.kind` of a compute instance's first deployment.
pub const CREATE: &str = "create";
/// `status.operation.kind` of a compute update (a new deployment with the full service list).
pub const UPDATE: &str = "update";
/// `status.operation.state` while a call may or may not have reached Spheron.
pub const REQUESTING: &str = "requesting";
/// The name bosun gives the main service of a compute instance it creates.
pub const MAIN_SERVICE: &str = "main";
/// The region of a compute instance when `compute.region` is not set.
pub const DEFAULT_REGION: &str = "any";
/// The container port the main service exposes when bosun creates it (the spec has no port
/// field; ports set at Spheron are kept on every update).
pub const MAIN_PORT: u16 = 80;
/// How many recent deployments are read to find one started before a restart.
const RECENT_DEPLOYMENTS: u32 = 20;
/// `status.operation.id` prefix: the `uniqueTopicId` of a start not yet answered.
const TOPIC_PREFIX: &str = "topic:";
/// `status.operation.id` prefix: the newest deployment id before a call not yet answered.
const AFTER_PREFIX: &str = "after:";
/// Entries the in-memory caches hold before they start over.
const CACHE_LIMIT: usize = 4096;

// ---------------------------------------------------------------------------------------------
// State shared by the mappings of one client.

/// Listings and caches shared by every reconcile that uses one Spheron credential.
pub struct Shared {
    projects: SharedListings<String, Project>,
    instances: SharedListings<String, ComputeInstance>,
    /// The token's only organization, once asked (used when nothing names one).
    organization: StdMutex<Option<String>>,
    pub(crate) cdn: StdMutex<Option<(Instant, super::client::CdnRecords)>>,
    /// Finished site deployments by id: they never change again.
    site_deployments: StdMutex<HashMap<String, Deployment>>,
    /// Finished compute deployments by id (their services never change).
    compute_deployments: StdMutex<HashMap<String, ComputeDeployment>>,
    /// Per project or instance: the deployment bosun found matching the spec, and the spec's
    /// fingerprint then. While both still hold, a reconcile needs no call of its own.
    confirmed: StdMutex<HashMap<String, (String, u64)>>,
}

fn locked<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn remember<V>(map: &StdMutex<HashMap<String, V>>, key: &str, value: V) {
    let mut map = locked(map);
    if map.len() >= CACHE_LIMIT {
        map.clear();
    }
    map.insert(key.to_string(), value);
}

impl Shared {
    /// Empty state for a credential with this request budget.
    pub fn new(requests_per_minute: u32) -> Self {
        let ttl = listing_ttl(requests_per_minute);
        Shared {
            projects: SharedListings::new(ttl),
            instances: SharedListings::new(ttl),
            organization: StdMutex::new(None),
            cdn: StdMutex::new(None),
            site_deployments: StdMutex::new(HashMap::new()),
            compute_deployments: StdMutex::new(HashMap::new()),
            confirmed: StdMutex::new(HashMap::new()),
        }
    }

    fn confirmed(&self, owner: &str) -> Option<(String, u64)> {
        locked(&self.confirmed).get(owner).cloned()
    }

    fn confirm(&self, owner: &str, deployment: &str, print: u64) {
        remember(&self.confirmed, owner, (deployment.to_string(), print));
    }

    fn unconfirm(&self, owner: &str) {
        locked(&self.confirmed).remove(owner);
    }
}

// ---------------------------------------------------------------------------------------------
// Pure planning: sites.

/// A repository URL as bosun compares them (pure): no surrounding space, no trailing `/` or
/// `.git`, lowercase (Git hosts treat owner and name case-insensitively).
pub fn repo_key(url: &str) -> String {
    url.trim()
        .trim_end_matches('/')
        .trim_end_matches(".git")
        .to_ascii_lowercase()
}

/// The Git provider Spheron needs for a repository URL (pure): `GITHUB`, `GITLAB` or
/// `BITBUCKET`, by host; `None` for any other host.
pub fn git_provider(url: &str) -> Option<&'static str> {
    let lower = url.trim().to_ascii_lowercase();
    let rest = match lower.split_once("://") {
        Some((_, rest)) => rest.to_string(),
        // `git@github.com:owner/name`
        None => lower
            .split_once('@')
            .map(|(_, r)| r.to_string())
            .unwrap_or(lower.clone()),
    };
    let host = rest
        .split(['/', ':'])
        .next()
        .unwrap_or_default()
        .rsplit('@')
        .next()
        .unwrap_or_default();
    match host {
        "github.com" | "www.github.com" => Some("GITHUB"),
        "gitlab.com" | "www.gitlab.com" => Some("GITLAB"),
        "bitbucket.org" | "www.bitbucket.org" => Some("BITBUCKET"),
        _ => None,
    }
}

/// The repository's name, its last path segment (pure).
pub fn repo_name(url: &str) -> String {
    let trimmed = url.trim().trim_end_matches('/').trim_end_matches(".git");
    trimmed
        .rsplit(['/', ':'])
        .next()
        .unwrap_or(trimmed)
        .to_string()
}

/// What Spheron builds for a ref (pure). Its start call takes a branch; a tag is passed as the
/// branch (Git resolves a tag by name the same way, an inference: the API documents only
/// branches). There is no way to ask for one commit.
pub fn site_branch(git_ref: GitRef<'_>) -> Result<String, String> {
    match git_ref {
        GitRef::Branch(b) | GitRef::Tag(b) => Ok(b.to_string()),
        GitRef::Commit(c) => Err(format!(
            "spec.source.commit: a Spheron site deploys the head of a branch or a tag, not commit {c}; set spec.source.branch or spec.source.tag"
        )),
    }
}

/// The build settings to deploy with (pure): the spec's, over the project's current ones
/// (a setting the spec leaves out is never changed), over Spheron's defaults for a new project.
pub fn build_configuration(
    site: Option<&SpheronSite>,
    project: Option<&BuildConfiguration>,
) -> BuildConfiguration {
    let mut c = project.cloned().unwrap_or_default();
    if c.framework.is_empty() {
        c.framework = "static".into();
    }
    if c.node_version.is_empty() {
        c.node_version = "V_16".into();
    }
    if let Some(s) = site {
        if let Some(f) = &s.framework {
            c.framework = f.clone();
        }
        if let Some(b) = &s.build_command {
            c.build_command = b.clone();
        }
        if let Some(p) = &s.publish_dir {
            c.publish_dir = p.clone();
        }
    }
    c
}

fn fingerprint<T: Hash>(value: &T) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// A site deployment as the spec wants it. Holds resolved variables: never logged.
#[derive(Clone, PartialEq)]
pub struct SiteDesired {
    pub organization: String,
    pub repository: String,
    /// [`repo_key`] of the repository: the project's name for [`locate`].
    pub repo_key: String,
    pub repo_name: String,
    pub provider: &'static str,
    /// `branch:<name>` or `tag:<name>`, as `status.sourceRef` records it.
    pub git_ref: String,
    pub branch: String,
    pub protocol: String,
    pub configuration: BuildConfiguration,
    pub env: BTreeMap<String, String>,
    /// A fingerprint of all of the above.
    pub print: u64,
}

impl SiteDesired {
    /// Reads the spec (pure); `project` is the project's current build settings, if any.
    pub fn new(
        spec: &WorkspaceSpec,
        env: &BTreeMap<String, String>,
        organization: &str,
        project: Option<&BuildConfiguration>,
    ) -> Result<Self, ReconcileError> {
        let repository = spec.source.repository.trim().to_string();
        let provider = git_provider(&repository).ok_or_else(|| {
            ReconcileError::user(
                Reason::UnsupportedByProvider,
                format!("spec.source.repository: Spheron deploys sites from GitHub, GitLab or Bitbucket, not {repository}"),
            )
        })?;
        let branch = site_branch(spec.source.git_ref())
            .map_err(|m| ReconcileError::user(Reason::UnsupportedByProvider, m))?;
        let site = spec.spheron.as_ref().and_then(|s| s.site.as_ref());
        let protocol = site
            .and_then(|s| s.protocol.clone())
            .unwrap_or_else(|| "ipfs".into());
        let configuration = build_configuration(site, project);
        let git_ref = spec.source.git_ref().to_string();
        let print = fingerprint(&(
            organization,
            repo_key(&repository),
            &branch,
            &protocol,
            serde_json::to_string(&configuration).unwrap_or_default(),
            env,
        ));
        Ok(SiteDesired {
            organization: organization.to_string(),
            repo_key: repo_key(&repository),
            repo_name: repo_name(&repository),
            repository,
            provider,
            git_ref,
            branch,
            protocol,
            configuration,
            env: env.clone(),
            print,
        })
    }

    /// The start request (pure). The webhook stays off: bosun, not a push, decides when to
    /// deploy, so every deployment is one bosun tracks.
    pub fn start_body(&self, topic: &str) -> StartDeployment {
        StartDeployment {
            organization_id: self.organization.clone(),
            git_url: self.repository.clone(),
            repo_name: self.repo_name.clone(),
            branch: self.branch.clone(),
            protocol: self.protocol.clone(),
            provider: self.provider.to_string(),
            create_default_webhook: false,
            configuration: self.configuration.clone(),
            env: Some(self.env.clone()),
            unique_topic_id: Some(topic.to_string()),
        }
    }
}

/// The spec fields a finished deployment differs in (pure). Variables the deployment ran
/// with that the spec does not name are fine when they are the project's own variables (set
/// at Spheron); any other extra one was removed from the spec.
pub fn site_differences(
    deployment: &Deployment,
    desired: &SiteDesired,
    project_variables: &[String],
) -> Vec<String> {
    let mut fields = Vec::new();
    if deployment.branch.as_deref() != Some(desired.branch.as_str()) {
        fields.push("spec.source".to_string());
    }
    if deployment
        .protocol
        .as_deref()
        .is_some_and(|p| p != desired.protocol)
    {
        fields.push("spec.spheron.site.protocol".to_string());
    }
    if let Some(c) = &deployment.configuration {
        let d = &desired.configuration;
        for (field, ran, wanted) in [
            ("spec.spheron.site.framework", &c.framework, &d.framework),
            (
                "spec.spheron.site.buildCommand",
                &c.build_command,
                &d.build_command,
            ),
            (
                "spec.spheron.site.publishDir",
                &c.publish_dir,
                &d.publish_dir,
            ),
        ] {
            if ran != wanted {
                fields.push(field.to_string());
            }
        }
    }
    for (key, value) in &desired.env {
        if deployment.env.get(key) != Some(value) {
            fields.push(format!("spec.env[{key}]"));
        }
    }
    for key in deployment.env.keys() {
        if !desired.env.contains_key(key) && !project_variables.contains(key) {
            fields.push(format!("spec.env[{key}]"));
        }
    }
    fields
}

/// What a site Workspace needs next, once the deployment bosun follows has been looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SiteStep {
    /// A deployment is in progress: look again soon.
    Wait,
    /// The deployment waits for someone to authorize it at Spheron.
    Authorize,
    /// A deployment of an older spec is still in flight: cancel it, then start.
    Supersede,
    /// Start a deployment of the spec's source.
    Start,
    /// Redeploy the last deployment: the same commit with the project's latest variables.
    Redeploy,
    /// The last deployment of this spec did not succeed: wait for a change.
    Failed,
    /// The spec's source is deployed.
    Done,
}

/// Plans a site (pure). `op` is the deployment bosun follows, with Spheron's state as last
/// read; `matches` says whether its last successful deployment matches the spec. A
/// deployment bosun did not start (`generation: None`, found on an adopted project) is never
/// canceled and its failure is not this spec's: a new deployment follows it.
pub fn plan_site(
    op: Option<&OperationStatus>,
    generation: i64,
    requested: bool,
    matches: bool,
) -> SiteStep {
    let Some(op) = op.filter(|o| is_site_op(o) && o.state != REQUESTING) else {
        return SiteStep::Start;
    };
    let state = DeploymentStatus::parse(&op.state);
    let ours_now = op.generation == Some(generation);
    if !state.is_terminal() {
        return if op.generation.is_some() && !ours_now {
            SiteStep::Supersede
        } else if state.needs_authorization() {
            SiteStep::Authorize
        } else {
            SiteStep::Wait
        };
    }
    if state.is_success() {
        return match (matches, requested) {
            (false, _) => SiteStep::Start,
            (true, true) => SiteStep::Redeploy,
            (true, false) => SiteStep::Done,
        };
    }
    if ours_now && !requested {
        SiteStep::Failed
    } else {
        SiteStep::Start
    }
}

/// The condition reason for a deployment that ended without success (pure).
pub fn failure_reason_code(state: &DeploymentStatus) -> Reason {
    match state {
        DeploymentStatus::TimedOut => Reason::DeployTimedOut,
        DeploymentStatus::Canceled => Reason::DeployCanceled,
        _ => Reason::DeployFailed,
    }
}

fn is_site_op(op: &OperationStatus) -> bool {
    op.kind == DEPLOY || op.kind == REDEPLOY
}

/// The deployment a call announced as `requesting` turned into, if it reached Spheron (pure):
/// the one carrying the start's topic, or, for a redeploy, the newest one when it is newer
/// than the newest one recorded before the call. `recent` is newest first.
pub fn adopt_requested<'a>(
    op: &OperationStatus,
    recent: &'a [Deployment],
) -> Option<&'a Deployment> {
    let marker = op.id.as_deref()?;
    if let Some(topic) = marker.strip_prefix(TOPIC_PREFIX) {
        return recent.iter().find(|d| d.topic.as_deref() == Some(topic));
    }
    let before = marker.strip_prefix(AFTER_PREFIX)?;
    recent.first().filter(|d| d.id != before)
}

/// The deployment a compute call announced as `requesting` turned into (pure): the
/// instance's newest deployment, when it is not the one recorded before the call.
pub fn adopt_requested_update<'a>(
    op: &OperationStatus,
    newest: Option<&'a str>,
) -> Option<&'a str> {
    let before = op.id.as_deref()?.strip_prefix(AFTER_PREFIX)?;
    newest.filter(|n| *n != before)
}

/// Whether bosun has waited for its deployment past the deadline (pure).
pub fn past_deadline(op: &OperationStatus, now: Timestamp) -> bool {
    op.deadline
        .as_deref()
        .and_then(|d| d.parse::<Timestamp>().ok())
        .is_some_and(|d| now > d)
}

/// A `uniqueTopicId`: a random UUID (version 4), as the SDK sends.
pub fn topic_id() -> String {
    let n: u128 = rand::random();
    let hex = format!("{:032x}", n);
    format!(
        "{}-{}-4{}-{}{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        // The variant bits: 8, 9, a or b.
        ["8", "9", "a", "b"][usize::from(hex.as_bytes()[16] % 4)],
        &hex[17..20],
        &hex[20..32]
    )
}

fn new_operation(kind: &str, id: String, generation: i64) -> OperationStatus {
    let now = Timestamp::now();
    OperationStatus {
        kind: kind.into(),
        id: Some(id),
        state: REQUESTING.into(),
        generation: Some(generation),
        started_at: Some(now.to_string()),
        deadline: now.checked_add(DEPLOY_DEADLINE).ok().map(|t| t.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// Pure planning: compute.

/// An image reference split into name and tag (pure): the tag follows the last `:` after the
/// last `/` (so a registry port is not a tag).
pub fn split_image(image: &str) -> (String, Option<String>) {
    let image = image.trim();
    let name_start = image.rfind('/').map(|i| i + 1).unwrap_or(0);
    match image[name_start..].rfind(':') {
        Some(i) => {
            let at = name_start + i;
            (image[..at].to_string(), Some(image[at + 1..].to_string()))
        }
        None => (image.to_string(), None),
    }
}

/// The image and tag the main service runs (pure): a tag in `compute.image` wins; else the
/// source's tag, or its commit (images are commonly tagged by both); else `latest` for a
/// branch.
pub fn image_and_tag(image: &str, git_ref: GitRef<'_>) -> (String, String) {
    let (name, tag) = split_image(image);
    let tag = tag
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| match git_ref {
            GitRef::Tag(t) | GitRef::Commit(t) => t.to_string(),
            GitRef::Branch(_) => "latest".to_string(),
        });
    (name, tag)
}

/// The main service as the spec wants it. Fields the spec leaves out (`None`) keep what runs,
/// so an adopted instance is only changed where the spec says. Holds resolved variables.
#[derive(Clone, PartialEq)]
pub struct MainService {
    pub image: Option<(String, String)>,
    pub machine: Option<String>,
    pub replicas: u32,
    pub env: BTreeMap<String, String>,
    /// Variables whose values come from Secrets (sent with `isSecret`, never shown in Events).
    pub secret_keys: Vec<String>,
    pub region: String,
    /// A fingerprint of all of the above.
    pub print: u64,
}

impl MainService {
    /// Reads the spec (pure).
    pub fn new(
        spec: &WorkspaceSpec,
        compute: &SpheronCompute,
        env: &BTreeMap<String, String>,
    ) -> Self {
        let image = compute
            .image
            .as_deref()
            .filter(|i| !i.trim().is_empty())
            .map(|i| image_and_tag(i, spec.source.git_ref()));
        let machine = compute
            .machine
            .clone()
            .or_else(|| spec.plan.clone())
            .filter(|m| !m.trim().is_empty());
        let region = compute
            .region
            .clone()
            .filter(|r| !r.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_REGION.into());
        let secret_keys: Vec<String> = spec
            .env
            .iter()
            .filter(|e| e.value_from.is_some())
            .map(|e| e.name.clone())
            .collect();
        let replicas = u32::try_from(spec.replicas.max(1)).unwrap_or(1);
        let print = fingerprint(&(&image, &machine, replicas, env, &secret_keys, &region));
        MainService {
            image,
            machine,
            replicas,
            env: env.clone(),
            secret_keys,
            region,
            print,
        }
    }

    fn env_entries(&self) -> Vec<EnvEntry> {
        self.env
            .iter()
            .map(|(k, v)| EnvEntry::new(k, v, self.secret_keys.contains(k)))
            .collect()
    }

    /// The main service's configuration (pure): over what runs (`current`), which keeps its
    /// name, ports, command and everything the spec does not name; or new, for a create.
    pub fn config(&self, current: Option<&DeployedService>) -> Result<ComputeService, String> {
        let mut c = match current {
            Some(s) => s.to_config(),
            None => ComputeService {
                name: MAIN_SERVICE.into(),
                image: String::new(),
                tag: String::new(),
                private_image_config: None,
                service_count: self.replicas,
                build_image: false,
                ports: vec![Port {
                    container_port: MAIN_PORT,
                    exposed_port: MAIN_PORT,
                    global: None,
                    expose_to: None,
                }],
                env: Vec::new(),
                command: Vec::new(),
                args: Vec::new(),
                akash_machine_image_name: String::new(),
                custom_service_specs: None,
                health_check: None,
                autoscaling_rules: None,
                template_id: None,
            },
        };
        match (&self.image, current) {
            (Some((image, tag)), _) => {
                c.image = image.clone();
                c.tag = tag.clone();
            }
            (None, None) => {
                return Err(
                    "spec.spheron.compute.image: a new compute instance needs a container image"
                        .into(),
                )
            }
            (None, Some(_)) => {}
        }
        match (&self.machine, current) {
            (Some(m), _) => c.akash_machine_image_name = m.clone(),
            (None, None) => {
                return Err("spec.spheron.compute.machine: a new compute instance needs a machine (plan) name, for example \"Ventus Nano 1\"".into())
            }
            (None, Some(_)) => {}
        }
        c.service_count = self.replicas;
        c.env = self.env_entries();
        Ok(c)
    }
}

/// One field of the main service that differs from the spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    pub field: String,
    pub observed: String,
    pub desired: String,
}

/// Where the running main service differs from the spec (pure). Values of Secret-backed
/// variables are never shown.
pub fn main_differences(running: &DeployedService, desired: &MainService) -> Vec<Difference> {
    let mut out = Vec::new();
    if let Some((image, tag)) = &desired.image {
        if running.image != *image || running.tag != *tag {
            out.push(Difference {
                field: "spec.spheron.compute.image".into(),
                observed: format!("{}:{}", running.image, running.tag),
                desired: format!("{image}:{tag}"),
            });
        }
    }
    if let Some(machine) = &desired.machine {
        let ran = running
            .agreed_machine_image
            .as_ref()
            .and_then(|m| m.machine_type.clone())
            .unwrap_or_default();
        if ran != *machine {
            out.push(Difference {
                field: "spec.spheron.compute.machine".into(),
                observed: format!("{ran:?}"),
                desired: format!("{machine:?}"),
            });
        }
    }
    if running.service_count != desired.replicas {
        out.push(Difference {
            field: "spec.replicas".into(),
            observed: running.service_count.to_string(),
            desired: desired.replicas.to_string(),
        });
    }
    let ran: BTreeMap<&str, (&str, bool)> = running
        .env
        .iter()
        .map(|e| {
            let (k, v) = e.key_value();
            (k, (v, e.is_secret))
        })
        .collect();
    let shown = |key: &str, value: &str, secret: bool| {
        if secret || desired.secret_keys.iter().any(|k| k == key) {
            "(a Secret value)".to_string()
        } else {
            format!("{value:?}")
        }
    };
    for (key, value) in &desired.env {
        let secret = desired.secret_keys.contains(key);
        match ran.get(key.as_str()) {
            None => out.push(Difference {
                field: format!("spec.env[{key}]"),
                observed: "(not set)".into(),
                desired: shown(key, value, secret),
            }),
            Some((v, was_secret)) if *v != value || *was_secret != secret => out.push(Difference {
                field: format!("spec.env[{key}]"),
                observed: shown(key, v, *was_secret),
                desired: shown(key, value, secret),
            }),
            Some(_) => {}
        }
    }
    for (key, (value, secret)) in &ran {
        if !desired.env.contains_key(*key) {
            out.push(Difference {
                field: format!("spec.env[{key}]"),
                observed: shown(key, value, *secret),
                desired: "(not set)".into(),
            });
        }
    }
    out
}

/// The Events for an update (pure): one drift correction per field when the spec did not
/// change (someone changed the instance at Spheron), else one update naming the fields.
pub fn update_notes(instance: &str, differences: &[Difference], drift: bool) -> Vec<Note> {
    if drift {
        return differences
            .iter()
            .map(|d| Note::drift(&d.field, &d.observed, &d.desired))
            .collect();
    }
    let changes: Vec<String> = differences
        .iter()
        .map(|d| format!("{} {} -> {}", d.field, d.observed, d.desired))
        .collect();
    vec![Note::normal(
        Reason::Updated,
        "Update",
        format!(
            "updating compute instance {instance}: {}",
            changes.join(", ")
        ),
    )]
}

/// What a compute Workspace needs next, given the instance's newest deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComputeStep {
    /// A deployment is in progress (bosun's own when `ours`): look again soon.
    Wait { ours: bool },
    /// bosun's deployment of this spec failed: wait for a change.
    Failed,
    /// Compare what runs with the spec, and update if they differ.
    Converge,
}

/// Plans a compute instance (pure).
pub fn compute_step(
    op: Option<&OperationStatus>,
    newest: Option<&ComputeDeployment>,
    generation: i64,
    requested: bool,
) -> ComputeStep {
    let Some(newest) = newest else {
        return ComputeStep::Converge;
    };
    let ours = op.is_some_and(|o| o.id.as_deref() == Some(newest.id.as_str()));
    if !newest.status.is_terminal() {
        return ComputeStep::Wait { ours };
    }
    let this_spec = op.is_some_and(|o| o.generation == Some(generation));
    if newest.status == ComputeDeploymentStatus::Failed && ours && this_spec && !requested {
        ComputeStep::Failed
    } else {
        ComputeStep::Converge
    }
}

/// What a ServiceScale finds in the running services.
#[derive(Clone, Debug, PartialEq)]
pub enum ScalePlan {
    /// The service runs the desired count.
    InSync(u32),
    /// The service runs `observed`; send `services` (the full list, this one's count changed).
    Scale {
        observed: u32,
        services: Vec<ComputeService>,
    },
}

/// Plans a ServiceScale (pure): the main service (the first) belongs to the Workspace's
/// `spec.replicas` and is refused; an unknown service is named with the ones that exist.
pub fn plan_service_scale(
    services: &[DeployedService],
    service: &str,
    replicas: i32,
) -> Result<ScalePlan, ReconcileError> {
    let wanted = u32::try_from(replicas.max(1)).unwrap_or(1);
    let Some(index) = services.iter().position(|s| s.name == service) else {
        let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        return Err(ReconcileError::user(
            Reason::ServiceNotFound,
            format!(
                "spec.service: the compute instance has no service {service:?}; it has {}",
                names.join(", ")
            ),
        ));
    };
    if index == 0 {
        return Err(ReconcileError::user(
            Reason::ScaledByWorkspace,
            format!(
                "spec.service: {service:?} is the main service of the Workspace's compute instance; its replicas are the Workspace's spec.replicas (kubectl scale workspace/<name>), so delete this ServiceScale"
            ),
        ));
    }
    let observed = services[index].service_count;
    if observed == wanted {
        return Ok(ScalePlan::InSync(observed));
    }
    let mut configs: Vec<ComputeService> =
        services.iter().map(DeployedService::to_config).collect();
    configs[index].service_count = wanted;
    Ok(ScalePlan::Scale {
        observed,
        services: configs,
    })
}

// ---------------------------------------------------------------------------------------------
// Reports.

/// Nothing to observe and bosun may not create it (Observe, or paused before the create).
fn not_found(
    status: WorkspaceStatus,
    notes: Vec<Note>,
    observe_only: bool,
    message: String,
) -> Report<WorkspaceStatus> {
    let msg = if observe_only {
        message
    } else {
        "paused before the platform object was created".to_string()
    };
    Report {
        status,
        readiness: Readiness::not_ready(Reason::NotFound, msg.clone()),
        sync: if observe_only {
            SyncState::Stalled {
                reason: Reason::ExternalObjectNotFound,
                message: msg,
            }
        } else {
            SyncState::Synced
        },
        requeue_after: None,
        notes,
        plan: Default::default(),
    }
}

fn unsupported(message: impl Into<String>) -> ReconcileError {
    ReconcileError::user(Reason::UnsupportedByProvider, message)
}

/// The label selector `status.selector` shows for the scale subresource: it matches nothing
/// in the cluster, because replicas run at Spheron.
fn selector(key: &str) -> String {
    format!("bosun.dev/workspace={}", key.replace('/', "."))
}

/// Whether a difference found now is drift (pure): the spec did not change since the last
/// status, and that status showed the platform in line with it. A first reconcile that failed
/// (and so stamped its generation) is no baseline to drift from.
pub fn is_drift(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    generation: i64,
    observed_generation: Option<i64>,
) -> bool {
    observed_generation == Some(generation)
        && conditions.iter().any(|c| {
            c.type_ == crate::api::condition_types::READY
                && c.status == "True"
                && c.observed_generation == Some(generation)
        })
}

fn known_id(request: &WorkspaceRequest<'_>) -> Option<String> {
    request
        .previous
        .external_id
        .clone()
        .or_else(|| request.spec.external_id.clone())
        .filter(|s| !s.trim().is_empty())
}

/// Spheron has no pipeline stages or stopped state for either kind of Workspace.
fn check_pipeline(spec: &WorkspaceSpec) -> Result<(), ReconcileError> {
    if let Some(p) = &spec.pipeline {
        if p.test {
            return Err(unsupported(
                "spec.pipeline.test: Spheron has no test stage; remove it",
            ));
        }
        if p.run == RunState::Stopped {
            return Err(unsupported(
                "spec.pipeline.run: Spheron cannot keep a Workspace stopped; remove it (delete the Workspace to close or archive it)",
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Observing, through the shared state.

impl SpheronClient {
    /// Every project of an organization with its repository URL normalized by [`repo_key`],
    /// from one listing shared by every reconcile within the listing's lifetime.
    pub async fn projects_of(
        &self,
        organization: &str,
    ) -> Result<Arc<Vec<Project>>, PlatformError> {
        self.shared
            .projects
            .get(&organization.to_string(), || async {
                let mut projects = self.list_projects(organization, None).await?;
                for p in &mut projects {
                    p.url = p.url.as_deref().map(repo_key);
                }
                Ok(projects)
            })
            .await
    }

    /// Drops an organization's project listing after bosun changed something in it.
    pub async fn forget_projects(&self, organization: &str) {
        self.shared.projects.forget(&organization.to_string()).await;
    }

    /// Every compute instance of an organization, from one shared listing.
    pub async fn instances_of(
        &self,
        organization: &str,
    ) -> Result<Arc<Vec<ComputeInstance>>, PlatformError> {
        self.shared
            .instances
            .get(&organization.to_string(), || {
                self.list_compute_instances(organization, None, None)
            })
            .await
    }

    /// Drops an organization's instance listing after bosun changed something in it.
    pub async fn forget_instances(&self, organization: &str) {
        self.shared
            .instances
            .forget(&organization.to_string())
            .await;
    }

    /// The organization to act on: the one named, else the Provider's default, else the
    /// token's only organization (asked once).
    pub async fn organization_for(&self, named: Option<&str>) -> Result<String, ReconcileError> {
        if let Some(o) = named.filter(|o| !o.trim().is_empty()) {
            return Ok(o.to_string());
        }
        if let Some(o) = self.default_organization() {
            return Ok(o.to_string());
        }
        if let Some(o) = locked(&self.shared.organization).clone() {
            return Ok(o);
        }
        let org = self.resolve_organization().await.map_err(|e| {
            if e.kind == ErrorKind::Invalid {
                ReconcileError::user(
                    Reason::OrganizationRequired,
                    format!("{e}; or set spec.spheron.organizationId"),
                )
            } else {
                e.into()
            }
        })?;
        *locked(&self.shared.organization) = Some(org.id.clone());
        Ok(org.id)
    }

    /// A site deployment: from the cache when it has finished, else read.
    async fn site_deployment(&self, id: &str) -> Result<Option<Deployment>, PlatformError> {
        if let Some(d) = locked(&self.shared.site_deployments).get(id) {
            return Ok(Some(d.clone()));
        }
        let found = self.get_deployment(id).await?;
        if let Some(d) = found.as_ref().filter(|d| d.status.is_terminal()) {
            remember(&self.shared.site_deployments, id, d.clone());
        }
        Ok(found)
    }

    /// A compute deployment: from the cache when it has finished, else read.
    pub(crate) async fn compute_deployment(
        &self,
        id: &str,
    ) -> Result<Option<ComputeDeployment>, PlatformError> {
        if let Some(d) = locked(&self.shared.compute_deployments).get(id) {
            return Ok(Some(d.clone()));
        }
        let found = self.get_compute_deployment(id).await?;
        if let Some(d) = found.as_ref().filter(|d| d.status.is_terminal()) {
            remember(&self.shared.compute_deployments, id, d.clone());
        }
        Ok(found)
    }

    /// Whether `id` is an object of the other kind (a project where an instance is expected,
    /// or the reverse): a Workspace cannot switch between site and compute.
    async fn owned_by_other_kind(
        &self,
        organization: &str,
        id: &str,
        compute: bool,
    ) -> Result<bool, PlatformError> {
        Ok(if compute {
            self.projects_of(organization)
                .await?
                .iter()
                .any(|p| p.id == id)
        } else {
            self.instances_of(organization)
                .await?
                .iter()
                .any(|i| i.id == id)
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Sites.

impl SpheronClient {
    async fn reconcile_site(
        &self,
        request: &WorkspaceRequest<'_>,
        guard: &dyn CreateGuard,
        organization: &str,
    ) -> Result<Report<WorkspaceStatus>, ReconcileError> {
        let spec = request.spec;
        if spec.replicas > 1 {
            return Err(unsupported(format!(
                "spec.replicas: a Spheron site is static content served by its storage protocol and has no replica count; set spec.replicas to 1 (not {}), or set spec.spheron.compute to run a compute instance with replicas",
                spec.replicas
            )));
        }
        if spec.plan.is_some() {
            return Err(unsupported(
                "spec.plan: a Spheron site has no machine size; remove spec.plan (a compute instance takes spec.spheron.compute.machine)",
            ));
        }
        // Validate the spec before anything is read or written.
        SiteDesired::new(spec, &request.env, organization, None)?;
        let observe_only = request.mode.observing();
        let act = request.mode.act();
        let mut status = request.previous.clone();
        let mut notes = Vec::new();
        status.selector = Some(selector(&request.key));

        let known = known_id(request);
        let wanted = repo_key(&spec.source.repository);
        let requesting = status
            .operation
            .as_ref()
            .is_some_and(|o| o.state == REQUESTING);
        // An earlier create may have gone through unseen: only a fresh listing can tell.
        if request.create_pending || requesting {
            self.forget_projects(organization).await;
        }
        let adopt = spec.adopt_by_name || observe_only;
        let projects = self.projects_of(organization).await?;
        let fresh;
        let mut located = locate(
            &projects,
            known.clone(),
            &wanted,
            request.create_pending,
            adopt,
        );
        if act && matches!(located, Located::Absent | Located::Gone(_)) {
            // About to create: look again in a fresh listing, never a shared one.
            self.forget_projects(organization).await;
            fresh = self.projects_of(organization).await?;
            located = locate(
                &fresh,
                known.clone(),
                &wanted,
                request.create_pending,
                adopt,
            );
        }
        let project = match located {
            Located::Found(p) => p.clone(),
            Located::NameTaken(p) => {
                return Err(ReconcileError::user(
                    Reason::NameTaken,
                    format!(
                        "organization {organization} already has Spheron project {} ({}) for repository {}, which bosun did not create: set spec.adoptByName: true or spec.externalId: \"{}\" to manage it",
                        p.id, p.name, spec.source.repository, p.id
                    ),
                ));
            }
            Located::Ambiguous(n) => {
                return Err(ReconcileError::user(
                    Reason::CreateOutcomeUnknown,
                    format!(
                        "organization {organization} has {n} Spheron projects for repository {}: set spec.externalId to the one to manage",
                        spec.source.repository
                    ),
                ));
            }
            Located::Gone(id) if self.owned_by_other_kind(organization, &id, false).await? => {
                return Err(unsupported(format!(
                    "spec.spheron.compute: this Workspace manages compute instance {id}, and a compute instance cannot become a site; create a new Workspace for the site"
                )));
            }
            Located::Gone(id) if spec.external_id.is_some() || !act => {
                return Err(ReconcileError::user(
                    Reason::ExternalObjectNotFound,
                    format!("organization {organization} has no Spheron project {id}"),
                ));
            }
            Located::Absent | Located::Gone(_) if !act => {
                let msg = format!(
                    "organization {organization} has no Spheron project for repository {}",
                    spec.source.repository
                );
                return Ok(not_found(status, notes, observe_only, msg));
            }
            gone_or_absent => {
                if let Located::Gone(id) = gone_or_absent {
                    notes.push(Note::warning(
                        Reason::DriftCorrected,
                        "Create",
                        format!("Spheron project {id} is gone at the platform; deploying again"),
                    ));
                    status.operation = None;
                }
                return self
                    .create_site(request, guard, organization, status, notes)
                    .await;
            }
        };
        let desired = SiteDesired::new(
            spec,
            &request.env,
            organization,
            project.configuration.as_ref(),
        )?;

        if status.external_id.as_deref() != Some(project.id.as_str()) {
            if act {
                guard.created(&project.id).await?;
            }
            notes.push(Note::normal(
                Reason::Adopted,
                "Adopt",
                format!("manages Spheron project {} ({})", project.id, project.name),
            ));
            status.external_id = Some(project.id.clone());
        }
        if project.state == ProjectState::Archived {
            if !act {
                let msg = format!("Spheron project {} is archived", project.id);
                return Ok(Report::settled(
                    status,
                    notes,
                    Readiness::not_ready(Reason::Archived, msg),
                    observe_only,
                ));
            }
            self.set_project_state(&project.id, &ProjectState::Maintained)
                .await?;
            self.forget_projects(organization).await;
            notes.push(Note::warning(
                Reason::DriftCorrected,
                "Correct",
                format!(
                    "Spheron project {} was archived at the platform: set back to MAINTAINED",
                    project.id
                ),
            ));
        }

        // The deployment bosun follows: one it may have started before a restart, else the
        // one in status, else (an adopted project) the project's newest.
        let mut seen: Option<Deployment> = None;
        if let Some(op) = status.operation.clone().filter(|o| o.state == REQUESTING) {
            let recent = self
                .list_project_deployments_page(&project.id, 0, RECENT_DEPLOYMENTS, None)
                .await?;
            status.operation = adopt_requested(&op, &recent).map(|d| {
                seen = Some(d.clone());
                OperationStatus {
                    id: Some(d.id.clone()),
                    state: d.status.to_string(),
                    ..op
                }
            });
        }
        if !status.operation.as_ref().is_some_and(is_site_op) {
            let newest = self
                .list_project_deployments_page(&project.id, 0, 1, None)
                .await?
                .into_iter()
                .next();
            status.operation = newest.as_ref().map(|d| OperationStatus {
                kind: DEPLOY.into(),
                id: Some(d.id.clone()),
                state: d.status.to_string(),
                generation: None,
                started_at: d.created_at.clone(),
                deadline: None,
            });
            seen = newest;
        }
        if let Some(op) = status
            .operation
            .clone()
            .filter(|o| !DeploymentStatus::parse(&o.state).is_terminal())
        {
            let id = op.id.clone().unwrap_or_default();
            // A deployment read by this reconcile is fresh; any other is read now.
            let current = match seen.take().filter(|d| d.id == id) {
                Some(d) => Some(d),
                None => self.site_deployment(&id).await?,
            };
            status.operation = current.as_ref().map(|d| OperationStatus {
                state: d.status.to_string(),
                ..op.clone()
            });
            seen = current;
        }

        // Whether the last successful deployment is the spec's: known without a call while
        // nothing changed since bosun last found so.
        let op = status.operation.clone();
        let mut matches = false;
        if let Some(op) = op
            .as_ref()
            .filter(|o| DeploymentStatus::parse(&o.state).is_success())
        {
            let id = op.id.clone().unwrap_or_default();
            if self.shared.confirmed(&project.id) == Some((id.clone(), desired.print)) {
                matches = true;
            } else {
                let dep = match seen.clone().filter(|d| d.id == id) {
                    Some(d) => Some(d),
                    None => self.site_deployment(&id).await?,
                };
                if let Some(dep) = dep {
                    let variables: Vec<String> = project
                        .environment_variables
                        .iter()
                        .map(|v| v.name.clone())
                        .collect();
                    matches = site_differences(&dep, &desired, &variables).is_empty();
                    if let Some(url) = dep.site_preview.clone().filter(|u| !u.is_empty()) {
                        status.url = Some(url);
                    }
                    if dep.commit_id.is_some() {
                        status.deployed_revision = dep.commit_id.clone();
                    }
                    status.replicas = Some(1);
                    if matches {
                        status.source_ref = Some(desired.git_ref.clone());
                        self.shared.confirm(&project.id, &id, desired.print);
                    }
                }
            }
        }

        let mut step = plan_site(
            op.as_ref(),
            request.generation,
            request.mode.requested,
            matches,
        );
        if step == SiteStep::Wait
            && op
                .as_ref()
                .is_some_and(|o| past_deadline(o, Timestamp::now()))
        {
            if !(request.mode.requested && act) {
                let id = op.as_ref().and_then(|o| o.id.clone()).unwrap_or_default();
                let msg = format!(
                    "deployment {id} did not finish within {} minutes; set bosun.dev/reconcile-requested-at to cancel it and deploy again",
                    DEPLOY_DEADLINE.as_secs() / 60
                );
                return Ok(Report::stalled(
                    status,
                    notes,
                    Reason::DeploymentDeadlineExceeded,
                    msg,
                ));
            }
            step = SiteStep::Supersede;
        }
        let dep_id = op.as_ref().and_then(|o| o.id.clone()).unwrap_or_default();
        let dep_state = op.as_ref().map(|o| o.state.clone()).unwrap_or_default();
        match step {
            SiteStep::Wait => Ok(Report::progressing(
                status,
                notes,
                Reason::Deploying,
                format!("deployment {dep_id} of {} is {dep_state}", desired.git_ref),
                DEPLOY_POLL,
            )),
            SiteStep::Authorize => {
                // One Event when the condition starts saying so (the start call itself may
                // already have answered AuthorizationNeeded).
                let announced = request.previous.conditions.iter().any(|c| {
                    c.type_ == crate::api::condition_types::READY
                        && c.reason == Reason::AuthorizationNeeded.as_str()
                });
                if !announced {
                    notes.push(Note::warning(
                        Reason::AuthorizationNeeded,
                        "Deploy",
                        format!("Spheron deployment {dep_id} waits for authorization: the repository's owner must authorize it in the Spheron dashboard"),
                    ));
                }
                Ok(Report::progressing(
                    status,
                    notes,
                    Reason::AuthorizationNeeded,
                    format!("deployment {dep_id} of {} waits for authorization at Spheron: authorize it in the Spheron dashboard (the repository's owner must approve it)", desired.git_ref),
                    AUTHORIZATION_POLL,
                ))
            }
            SiteStep::Failed => {
                let dep = match seen.filter(|d| d.id == dep_id) {
                    Some(d) => Some(d),
                    None => self.site_deployment(&dep_id).await?,
                };
                let state = DeploymentStatus::parse(&dep_state);
                let why = dep
                    .and_then(|d| d.failure_reason())
                    .unwrap_or_else(|| state.to_string());
                let msg = format!(
                    "deployment {dep_id} of {} ended {state} ({why}); change the spec or set bosun.dev/reconcile-requested-at to deploy again",
                    desired.git_ref
                );
                Ok(Report::stalled(
                    status,
                    notes,
                    failure_reason_code(&state),
                    msg,
                ))
            }
            SiteStep::Done => {
                let url = status.url.clone().unwrap_or_default();
                Ok(Report::settled(
                    status,
                    notes,
                    Readiness::ready(
                        Reason::Deployed,
                        format!(
                            "Spheron project {} serves {} at {url}",
                            project.id, desired.git_ref
                        ),
                    ),
                    observe_only,
                ))
            }
            SiteStep::Start | SiteStep::Redeploy | SiteStep::Supersede if !act => {
                let msg = format!(
                    "Spheron project {} does not serve {} as the spec says",
                    project.id, desired.git_ref
                );
                Ok(Report::settled(
                    status,
                    notes,
                    Readiness::not_ready(Reason::NotDeployed, msg),
                    observe_only,
                ))
            }
            SiteStep::Redeploy => {
                let mut op = new_operation(
                    REDEPLOY,
                    format!("{AFTER_PREFIX}{dep_id}"),
                    request.generation,
                );
                guard.save_operation(&op).await?;
                let started = self.redeploy(&dep_id).await?;
                op.id = Some(started.deployment_id.clone());
                op.state = started_state(started.deployment.as_ref());
                status.operation = Some(op);
                self.shared.unconfirm(&project.id);
                notes.push(Note::normal(
                    Reason::DeployStarted,
                    "Deploy",
                    format!(
                        "redeploying deployment {dep_id} as {} (the same commit, the project's latest variables)",
                        started.deployment_id
                    ),
                ));
                Ok(Report::progressing(
                    status,
                    notes,
                    Reason::Deploying,
                    format!("redeployment {} started", started.deployment_id),
                    DEPLOY_POLL,
                ))
            }
            SiteStep::Supersede | SiteStep::Start => {
                if step == SiteStep::Supersede {
                    self.cancel_quietly(&dep_id).await?;
                    notes.push(Note::normal(
                        Reason::DeployCanceled,
                        "Deploy",
                        format!("canceled deployment {dep_id}: it was for an older spec"),
                    ));
                }
                let topic = topic_id();
                let mut op =
                    new_operation(DEPLOY, format!("{TOPIC_PREFIX}{topic}"), request.generation);
                guard.save_operation(&op).await?;
                let started = self.start_deployment(&desired.start_body(&topic)).await?;
                op.id = Some(started.deployment_id.clone());
                op.state = started_state(started.deployment.as_ref());
                status.operation = Some(op);
                self.shared.unconfirm(&project.id);
                notes.push(Note::normal(
                    Reason::DeployStarted,
                    "Deploy",
                    format!(
                        "started deployment {} of {} to Spheron project {}",
                        started.deployment_id, desired.git_ref, project.id
                    ),
                ));
                Ok(Report::progressing(
                    status,
                    notes,
                    Reason::Deploying,
                    format!(
                        "deployment {} of {} started",
                        started.deployment_id, desired.git_ref
                    ),
                    DEPLOY_POLL,
                ))
            }
        }
    }

    /// The first deployment of a repository, which creates its project.
    async fn create_site(
        &self,
        request: &WorkspaceRequest<'_>,
        guard: &dyn CreateGuard,
        organization: &str,
        mut status: WorkspaceStatus,
        mut notes: Vec<Note>,
    ) -> Result<Report<WorkspaceStatus>, ReconcileError> {
        let desired = SiteDesired::new(request.spec, &request.env, organization, None)?;
        guard.before_create().await?;
        let topic = topic_id();
        let mut op = new_operation(DEPLOY, format!("{TOPIC_PREFIX}{topic}"), request.generation);
        guard.save_operation(&op).await?;
        let started = self.start_deployment(&desired.start_body(&topic)).await?;
        self.forget_projects(organization).await;
        let project_id = started
            .project_id
            .clone()
            .or_else(|| started.deployment.as_ref().and_then(|d| d.project.clone()))
            .ok_or_else(|| {
                PlatformError::new(
                    ErrorKind::Protocol,
                    "spheron startDeployment: the answer names no project",
                )
            })?;
        guard.created(&project_id).await?;
        op.id = Some(started.deployment_id.clone());
        op.state = started_state(started.deployment.as_ref());
        status.external_id = Some(project_id.clone());
        status.operation = Some(op);
        status.source_ref = None;
        status.url = None;
        status.deployed_revision = None;
        notes.push(Note::normal(
            Reason::Created,
            "Create",
            format!(
                "created Spheron project {project_id} for {} with deployment {} of {}",
                desired.repository, started.deployment_id, desired.git_ref
            ),
        ));
        Ok(Report::progressing(
            status,
            notes,
            Reason::Deploying,
            format!(
                "deployment {} of {} started",
                started.deployment_id, desired.git_ref
            ),
            DEPLOY_POLL,
        ))
    }

    /// Cancels a deployment; one that already ended (400) or is gone (404) needs nothing.
    async fn cancel_quietly(&self, id: &str) -> Result<(), ReconcileError> {
        match self.cancel_deployment(id).await {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.kind, ErrorKind::Invalid | ErrorKind::NotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete_site(&self, request: &WorkspaceRequest<'_>) -> Result<Cleanup, ReconcileError> {
        let mut ids: Vec<String> = known_id(request).into_iter().collect();
        if ids.is_empty() && request.create_pending {
            // An interrupted create left no id: find its project by repository.
            let org = self
                .organization_for(
                    request
                        .spec
                        .spheron
                        .as_ref()
                        .and_then(|s| s.organization_id.as_deref()),
                )
                .await?;
            self.forget_projects(&org).await;
            let wanted = repo_key(&request.spec.source.repository);
            ids.extend(
                self.projects_of(&org)
                    .await?
                    .iter()
                    .filter(|p| p.url.as_deref() == Some(wanted.as_str()))
                    .map(|p| p.id.clone()),
            );
        }
        let mut notes = Vec::new();
        for id in ids {
            // Deployments still in flight would go on building for a removed project.
            let recent = match self
                .list_project_deployments_page(&id, 0, RECENT_DEPLOYMENTS, None)
                .await
            {
                Ok(r) => r,
                Err(e) if e.kind == ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            for d in recent.iter().filter(|d| !d.status.is_terminal()) {
                self.cancel_quietly(&d.id).await?;
                notes.push(Note::normal(
                    Reason::DeployCanceled,
                    "Delete",
                    format!("canceled deployment {} ({})", d.id, d.status),
                ));
            }
            // Spheron cannot delete a project: archiving is how one is removed.
            let note = match self.archive_project(&id).await? {
                super::client::Deleted::Done => format!("archived Spheron project {id}"),
                super::client::Deleted::AlreadyGone => format!("Spheron project {id} is gone"),
            };
            self.shared.unconfirm(&id);
            notes.push(Note::normal(Reason::Deleted, "Delete", note));
        }
        Ok(Cleanup::Done(notes))
    }
}

fn started_state(deployment: Option<&Deployment>) -> String {
    deployment
        .map(|d| d.status.to_string())
        .unwrap_or_else(|| DeploymentStatus::PreQueue.to_string())
}

// ---------------------------------------------------------------------------------------------
// Compute instances.

impl SpheronClient {
    async fn reconcile_compute(
        &self,
        request: &WorkspaceRequest<'_>,
        guard: &dyn CreateGuard,
        organization: &str,
        compute: &SpheronCompute,
    ) -> Result<Report<WorkspaceStatus>, ReconcileError> {
        let spec = request.spec;
        let desired = MainService::new(spec, compute, &request.env);
        let observe_only = request.mode.observing();
        let act = request.mode.act();
        let mut status = request.previous.clone();
        let mut notes = Vec::new();
        status.selector = Some(selector(&request.key));

        let known = known_id(request);
        let requesting = status
            .operation
            .as_ref()
            .is_some_and(|o| o.state == REQUESTING);
        if request.create_pending || requesting {
            self.forget_instances(organization).await;
        }
        let adopt = spec.adopt_by_name || observe_only;
        // A closed instance no longer runs: it is what is left of a deleted one.
        let open = |list: &[ComputeInstance]| -> Vec<ComputeInstance> {
            list.iter()
                .filter(|i| i.state != InstanceState::Closed)
                .cloned()
                .collect()
        };
        let listed = open(&self.instances_of(organization).await?);
        let fresh;
        let mut located = locate(
            &listed,
            known.clone(),
            &request.external_name,
            request.create_pending,
            adopt,
        );
        if act && matches!(located, Located::Absent | Located::Gone(_)) {
            self.forget_instances(organization).await;
            fresh = open(&self.instances_of(organization).await?);
            located = locate(
                &fresh,
                known.clone(),
                &request.external_name,
                request.create_pending,
                adopt,
            );
        }
        let instance = match located {
            Located::Found(i) => i.clone(),
            Located::NameTaken(i) => {
                return Err(ReconcileError::user(
                    Reason::NameTaken,
                    format!(
                        "organization {organization} already has a compute instance named {:?} ({}) that bosun did not create: set spec.adoptByName: true or spec.externalId: \"{}\" to manage it, or spec.externalName to use another name",
                        i.name, i.id, i.id
                    ),
                ));
            }
            Located::Ambiguous(n) => {
                return Err(ReconcileError::user(
                    Reason::CreateOutcomeUnknown,
                    format!(
                        "organization {organization} has {n} open compute instances named {:?}: close the extra ones, or set spec.externalId to the one to keep",
                        request.external_name
                    ),
                ));
            }
            Located::Gone(id) if self.owned_by_other_kind(organization, &id, true).await? => {
                return Err(unsupported(format!(
                    "spec.spheron.compute: this Workspace manages site project {id}, and a site cannot become a compute instance; create a new Workspace for the instance"
                )));
            }
            Located::Gone(id) if spec.external_id.is_some() || !act => {
                return Err(ReconcileError::user(
                    Reason::ExternalObjectNotFound,
                    format!("organization {organization} has no open compute instance {id}"),
                ));
            }
            Located::Absent | Located::Gone(_) if !act => {
                let msg = format!(
                    "organization {organization} has no compute instance named {:?}",
                    request.external_name
                );
                return Ok(not_found(status, notes, observe_only, msg));
            }
            gone_or_absent => {
                if let Located::Gone(id) = gone_or_absent {
                    notes.push(Note::warning(
                        Reason::DriftCorrected,
                        "Create",
                        format!("compute instance {id} was closed or removed at the platform; creating it again"),
                    ));
                    status.operation = None;
                    status.replicas = None;
                }
                return self
                    .create_instance(request, guard, organization, &desired, status, notes)
                    .await;
            }
        };

        if status.external_id.as_deref() != Some(instance.id.as_str()) {
            if act {
                guard.created(&instance.id).await?;
            }
            notes.push(Note::normal(
                Reason::Adopted,
                "Adopt",
                format!(
                    "manages Spheron compute instance {} ({})",
                    instance.id, instance.name
                ),
            ));
            status.external_id = Some(instance.id.clone());
        }
        if desired.region != DEFAULT_REGION
            && instance
                .region
                .as_deref()
                .is_some_and(|r| !r.eq_ignore_ascii_case(&desired.region))
        {
            return Err(unsupported(format!(
                "spec.spheron.compute.region: compute instance {} runs in {}, and an instance cannot move; set it back, or create a new Workspace for {}",
                instance.id,
                instance.region.clone().unwrap_or_default(),
                desired.region
            )));
        }

        let newest_id = instance.deployments.last().cloned();
        if let Some(op) = status.operation.clone().filter(|o| o.state == REQUESTING) {
            status.operation =
                adopt_requested_update(&op, newest_id.as_deref()).map(|id| OperationStatus {
                    id: Some(id.to_string()),
                    state: ComputeDeploymentStatus::Queued.to_string(),
                    ..op
                });
        }
        // Nothing changed at Spheron since bosun found the instance matching this spec.
        if let Some(newest) = &newest_id {
            if instance.state == InstanceState::Active
                && !request.mode.requested
                && self.shared.confirmed(&instance.id) == Some((newest.clone(), desired.print))
            {
                let msg = format!(
                    "compute instance {} runs the spec ({} replicas)",
                    instance.id, desired.replicas
                );
                return Ok(Report::settled(
                    status,
                    notes,
                    Readiness::ready(Reason::Available, msg),
                    observe_only,
                ));
            }
        }

        let newest = match &newest_id {
            Some(id) => self.compute_deployment(id).await?,
            None => None,
        };
        if let (Some(op), Some(n)) = (status.operation.as_mut(), newest.as_ref()) {
            if op.id.as_deref() == Some(n.id.as_str()) {
                op.state = n.status.to_string();
            }
        }
        let op = status.operation.clone();
        match compute_step(
            op.as_ref(),
            newest.as_ref(),
            request.generation,
            request.mode.requested,
        ) {
            ComputeStep::Wait { ours } => {
                let n_id = newest.as_ref().map(|n| n.id.clone()).unwrap_or_default();
                let n_state = newest
                    .as_ref()
                    .map(|n| n.status.to_string())
                    .unwrap_or_default();
                if ours
                    && op
                        .as_ref()
                        .is_some_and(|o| past_deadline(o, Timestamp::now()))
                {
                    let msg = format!(
                        "deployment {n_id} of compute instance {} did not finish within {} minutes ({n_state})",
                        instance.id,
                        DEPLOY_DEADLINE.as_secs() / 60
                    );
                    return Ok(Report::stalled(
                        status,
                        notes,
                        Reason::DeploymentDeadlineExceeded,
                        msg,
                    ));
                }
                let msg = if ours {
                    format!(
                        "deployment {n_id} of compute instance {} is {n_state}",
                        instance.id
                    )
                } else {
                    format!("a deployment of compute instance {} started outside bosun ({n_id}) is {n_state}; waiting for it to end", instance.id)
                };
                return Ok(Report::progressing(
                    status,
                    notes,
                    Reason::Deploying,
                    msg,
                    DEPLOY_POLL,
                ));
            }
            ComputeStep::Failed => {
                let n = newest.as_ref();
                let why = n
                    .and_then(ComputeDeployment::failure_reason)
                    .unwrap_or_else(|| "Failed".into());
                let msg = format!(
                    "deployment {} of compute instance {} ended {why}; change the spec or set bosun.dev/reconcile-requested-at to deploy again",
                    n.map(|n| n.id.clone()).unwrap_or_default(),
                    instance.id
                );
                return Ok(Report::stalled(status, notes, Reason::DeployFailed, msg));
            }
            ComputeStep::Converge => {}
        }

        // What runs: the active deployment when it succeeded. Without one, the newest
        // deployment's service list is the template for the update that brings it up.
        let active_id = instance.active_deployment.clone().or(newest_id.clone());
        let running = match (&active_id, &newest) {
            (Some(a), Some(n)) if *a == n.id => Some(n.clone()),
            (Some(a), _) => self.compute_deployment(a).await?,
            (None, _) => None,
        }
        .filter(|d| d.status.is_success() || d.status == ComputeDeploymentStatus::Deprecated);
        let template = running.clone().or(newest.clone());
        let main = template.as_ref().and_then(|d| d.services.first());
        let differences = match main {
            Some(m) => main_differences(m, &desired),
            None => Vec::new(),
        };
        match running.as_ref().and_then(|r| r.services.first()) {
            Some(m) => {
                status.replicas = Some(i32::try_from(m.service_count).unwrap_or(i32::MAX));
                status.deployed_revision = Some(format!("{}:{}", m.image, m.tag));
                status.url = m
                    .url_preview
                    .clone()
                    .or_else(|| running.as_ref().and_then(|r| r.url_preview.clone()))
                    .filter(|u| !u.is_empty());
            }
            None => status.replicas = Some(0),
        }
        let runs_spec = running.is_some() && differences.is_empty();
        if runs_spec {
            if let (Some(op), Some(r)) = (status.operation.as_mut(), running.as_ref()) {
                if op.id.as_deref() == Some(r.id.as_str()) {
                    op.state = r.status.to_string();
                }
            }
            status.source_ref = Some(spec.source.git_ref().to_string());
            if running.as_ref().map(|r| &r.id) == newest_id.as_ref() {
                if let Some(n) = &newest_id {
                    self.shared.confirm(&instance.id, n, desired.print);
                }
            }
            let msg = format!(
                "compute instance {} runs {} replicas of {}",
                instance.id,
                desired.replicas,
                status.deployed_revision.clone().unwrap_or_default()
            );
            return Ok(Report::settled(
                status,
                notes,
                Readiness::ready(Reason::Available, msg),
                observe_only,
            ));
        }
        if !act {
            let fields: Vec<&str> = differences.iter().map(|d| d.field.as_str()).collect();
            let msg = if running.is_none() {
                format!("compute instance {} runs no deployment", instance.id)
            } else {
                format!(
                    "compute instance {} differs from the spec in {}",
                    instance.id,
                    fields.join(", ")
                )
            };
            return Ok(Report::settled(
                status,
                notes,
                Readiness::not_ready(Reason::Differs, msg),
                observe_only,
            ));
        }

        // Update: the full service list again, the main service as the spec says.
        let mut services: Vec<ComputeService> = template
            .as_ref()
            .map(ComputeDeployment::service_configs)
            .unwrap_or_default();
        let main_config = desired
            .config(main)
            .map_err(|m| ReconcileError::user(Reason::UnsupportedByProvider, m))?;
        match services.first_mut() {
            Some(first) => *first = main_config,
            None => services.push(main_config),
        }
        let mut op = new_operation(
            UPDATE,
            format!("{AFTER_PREFIX}{}", newest_id.clone().unwrap_or_default()),
            request.generation,
        );
        guard.save_operation(&op).await?;
        let updated = self
            .update_compute_instance(
                &instance.id,
                &UpdateComputeInstance {
                    services,
                    organization_id: organization.to_string(),
                    unique_topic_id: topic_id(),
                },
            )
            .await?;
        self.forget_instances(organization).await;
        self.shared.unconfirm(&instance.id);
        op.id = Some(updated.compute_deployment_id.clone());
        op.state = ComputeDeploymentStatus::Queued.to_string();
        status.operation = Some(op);
        if running.is_none() {
            notes.push(Note::normal(
                Reason::Updated,
                "Update",
                format!(
                    "deploying compute instance {} again: nothing runs",
                    instance.id
                ),
            ));
        } else {
            // Drift: the spec did not change since the last status, yet the instance differs.
            let drift = is_drift(
                &request.previous.conditions,
                request.generation,
                request.observed_generation,
            );
            notes.extend(update_notes(&instance.id, &differences, drift));
        }
        Ok(Report::progressing(
            status,
            notes,
            Reason::Deploying,
            format!(
                "update {} of compute instance {} started",
                updated.compute_deployment_id, instance.id
            ),
            DEPLOY_POLL,
        ))
    }

    async fn create_instance(
        &self,
        request: &WorkspaceRequest<'_>,
        guard: &dyn CreateGuard,
        organization: &str,
        desired: &MainService,
        mut status: WorkspaceStatus,
        mut notes: Vec<Note>,
    ) -> Result<Report<WorkspaceStatus>, ReconcileError> {
        let main = desired
            .config(None)
            .map_err(|m| ReconcileError::user(Reason::ComputeSettingsRequired, m))?;
        let body = CreateComputeInstance {
            organization_id: organization.to_string(),
            unique_topic_id: topic_id(),
            compute_provider: "DOCKERHUB".into(),
            compute_project_name: request.external_name.clone(),
            compute_project_description: Some(format!("managed by bosun for {}", request.key)),
            region: desired.region.clone(),
            // On demand: a spot lease may be taken away, which bosun would see as drift.
            scalable: true,
            services: vec![main],
        };
        guard.before_create().await?;
        let created = self.create_compute_instance(&body).await?;
        self.forget_instances(organization).await;
        guard.created(&created.compute_instance_id).await?;
        let mut op = new_operation(
            CREATE,
            created.compute_deployment_id.clone(),
            request.generation,
        );
        op.state = ComputeDeploymentStatus::Queued.to_string();
        status.external_id = Some(created.compute_instance_id.clone());
        status.operation = Some(op);
        status.source_ref = None;
        status.url = None;
        status.deployed_revision = None;
        notes.push(Note::normal(
            Reason::Created,
            "Create",
            format!(
                "created Spheron compute instance {} in organization {organization} ({} replicas)",
                created.compute_instance_id, desired.replicas
            ),
        ));
        Ok(Report::progressing(
            status,
            notes,
            Reason::Deploying,
            format!(
                "deployment {} of compute instance {} started",
                created.compute_deployment_id, created.compute_instance_id
            ),
            DEPLOY_POLL,
        ))
    }

    async fn delete_compute(
        &self,
        request: &WorkspaceRequest<'_>,
    ) -> Result<Cleanup, ReconcileError> {
        let mut ids: Vec<String> = known_id(request).into_iter().collect();
        if ids.is_empty() && request.create_pending {
            let org = self
                .organization_for(
                    request
                        .spec
                        .spheron
                        .as_ref()
                        .and_then(|s| s.organization_id.as_deref()),
                )
                .await?;
            self.forget_instances(&org).await;
            ids.extend(
                self.instances_of(&org)
                    .await?
                    .iter()
                    .filter(|i| i.name == request.external_name && i.state != InstanceState::Closed)
                    .map(|i| i.id.clone()),
            );
        }
        let mut notes = Vec::new();
        for id in ids {
            // Closing stops the lease (and its cost); the closed instance stays listed.
            let note = match self.close_compute_instance(&id).await? {
                super::client::Deleted::Done => format!("closed Spheron compute instance {id}"),
                super::client::Deleted::AlreadyGone => {
                    format!("Spheron compute instance {id} is gone")
                }
            };
            self.shared.unconfirm(&id);
            notes.push(Note::normal(Reason::Deleted, "Delete", note));
        }
        Ok(Cleanup::Done(notes))
    }
}

#[async_trait]
impl WorkspaceDriver for SpheronClient {
    async fn reconcile(
        &self,
        request: &WorkspaceRequest<'_>,
        guard: &dyn CreateGuard,
    ) -> Result<Report<WorkspaceStatus>, ReconcileError> {
        check_pipeline(request.spec)?;
        let spheron = request.spec.spheron.clone().unwrap_or_default();
        let organization = self
            .organization_for(spheron.organization_id.as_deref())
            .await?;
        match &spheron.compute {
            Some(compute) => {
                if spheron.site.is_some() {
                    return Err(unsupported(
                        "spec.spheron.site: a Workspace is a site or a compute instance, not both; remove spec.spheron.site or spec.spheron.compute",
                    ));
                }
                self.reconcile_compute(request, guard, &organization, compute)
                    .await
            }
            None => self.reconcile_site(request, guard, &organization).await,
        }
    }

    async fn delete(&self, request: &WorkspaceRequest<'_>) -> Result<Cleanup, ReconcileError> {
        let compute = request
            .spec
            .spheron
            .as_ref()
            .is_some_and(|s| s.compute.is_some());
        if compute {
            self.delete_compute(request).await
        } else {
            self.delete_site(request).await
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ServiceScale.

impl SpheronClient {
    /// The compute instance a Workspace's id names, with its organization: from the shared
    /// listing of the default organization when it is there, else read by id (a Workspace may
    /// name another organization). `None` when the id is no compute instance.
    async fn instance_by_id(
        &self,
        id: &str,
    ) -> Result<Option<(ComputeInstance, String)>, ReconcileError> {
        if let Ok(org) = self.organization_for(None).await {
            if let Some(i) = self.instances_of(&org).await?.iter().find(|i| i.id == id) {
                return Ok(Some((i.clone(), org)));
            }
        }
        let Some(instance) = self.get_compute_instance(id).await? else {
            return Ok(None);
        };
        let project = match instance.compute_project.as_deref() {
            Some(p) => self.get_compute_project(p).await?,
            None => None,
        };
        let org = project.and_then(|p| p.organization).ok_or_else(|| {
            PlatformError::new(
                ErrorKind::Protocol,
                format!("spheron: compute instance {id} names no organization"),
            )
        })?;
        Ok(Some((instance, org)))
    }
}

/// What a ServiceScale finds at the instance.
enum ScaleView {
    /// A deployment of the instance is in flight (the message says which).
    Deploying(String),
    /// The services of the running deployment.
    Running {
        instance: String,
        organization: String,
        services: Vec<DeployedService>,
    },
}

impl SpheronClient {
    /// Observes the services a Workspace's compute instance runs.
    async fn scale_view(&self, workspace_id: &str) -> Result<ScaleView, ReconcileError> {
        let (instance, organization) = self.instance_by_id(workspace_id).await?.ok_or_else(|| {
            ReconcileError::user(
                Reason::NotAComputeInstance,
                format!(
                    "the Workspace's Spheron object {workspace_id} is not a compute instance: a ServiceScale needs a Workspace with spec.spheron.compute"
                ),
            )
        })?;
        if instance.state == InstanceState::Closed {
            return Err(ReconcileError::waiting(
                Reason::WorkspaceNotRunning,
                format!("compute instance {} is closed", instance.id),
            ));
        }
        let newest = match instance.deployments.last() {
            Some(id) => self.compute_deployment(id).await?,
            None => None,
        };
        if let Some(n) = newest.as_ref().filter(|n| !n.status.is_terminal()) {
            return Ok(ScaleView::Deploying(format!(
                "deployment {} of compute instance {} is {}",
                n.id, instance.id, n.status
            )));
        }
        let running = match (instance.active_deployment.as_deref(), newest.as_ref()) {
            (Some(a), Some(n)) if a == n.id => Some(n.clone()),
            (Some(a), _) => self.compute_deployment(a).await?,
            (None, n) => n.cloned(),
        }
        .filter(|d| d.status.is_success() || d.status == ComputeDeploymentStatus::Deprecated)
        .ok_or_else(|| {
            ReconcileError::waiting(
                Reason::WorkspaceNotRunning,
                format!("compute instance {} runs no deployment yet", instance.id),
            )
        })?;
        Ok(ScaleView::Running {
            instance: instance.id,
            organization,
            services: running.services,
        })
    }
}

#[async_trait]
impl ServiceScaleDriver for SpheronClient {
    async fn reconcile(
        &self,
        request: &ScaleRequest<'_>,
    ) -> Result<Report<ServiceScaleStatus>, ReconcileError> {
        let mut status = request.previous.clone();
        status.selector = Some(format!("bosun.dev/service={}", request.service));
        let mut view = self.scale_view(request.workspace_id).await?;
        if matches!(&view, ScaleView::Running { services, .. } if !services.iter().any(|s| s.name == request.service))
        {
            // A service added moments ago may not be in the shared listing yet: look once
            // more in a fresh one before saying it is not there.
            if let Ok(org) = self.organization_for(None).await {
                self.forget_instances(&org).await;
            }
            view = self.scale_view(request.workspace_id).await?;
        }
        let (instance, org, services) = match view {
            ScaleView::Deploying(msg) => {
                return Ok(Report {
                    status,
                    readiness: Readiness::not_ready(Reason::Deploying, msg.clone()),
                    sync: SyncState::Progressing {
                        reason: Reason::Deploying,
                        message: msg,
                    },
                    requeue_after: Some(DEPLOY_POLL),
                    notes: Vec::new(),
                    plan: Default::default(),
                });
            }
            ScaleView::Running {
                instance,
                organization,
                services,
            } => (instance, organization, services),
        };
        match plan_service_scale(&services, request.service, request.replicas)? {
            ScalePlan::InSync(n) => {
                status.replicas = Some(i32::try_from(n).unwrap_or(i32::MAX));
                Ok(Report {
                    status,
                    readiness: Readiness::ready(
                        Reason::Available,
                        format!("{} runs {n} replicas", request.service),
                    ),
                    sync: SyncState::Synced,
                    requeue_after: None,
                    notes: Vec::new(),
                    plan: Default::default(),
                })
            }
            ScalePlan::Scale { observed, .. } if !request.mode.act() => {
                status.replicas = Some(i32::try_from(observed).unwrap_or(i32::MAX));
                Ok(Report {
                    status,
                    readiness: Readiness::not_ready(
                        Reason::ReplicasDiffer,
                        format!(
                            "{} runs {observed} replicas, the spec says {}",
                            request.service, request.replicas
                        ),
                    ),
                    sync: SyncState::Synced,
                    requeue_after: None,
                    notes: Vec::new(),
                    plan: Default::default(),
                })
            }
            ScalePlan::Scale { observed, services } => {
                status.replicas = Some(i32::try_from(observed).unwrap_or(i32::MAX));
                let updated = self
                    .update_compute_instance(
                        &instance,
                        &UpdateComputeInstance {
                            services,
                            organization_id: org.clone(),
                            unique_topic_id: topic_id(),
                        },
                    )
                    .await?;
                self.forget_instances(&org).await;
                self.shared.unconfirm(&instance);
                let drift = is_drift(
                    &request.previous.conditions,
                    request.generation,
                    request.observed_generation,
                );
                let note = if drift {
                    Note::drift("spec.replicas", observed, request.replicas)
                } else {
                    Note::normal(
                        Reason::Scaled,
                        "Scale",
                        format!(
                            "scaling {} of compute instance {instance} from {observed} to {} replicas",
                            request.service, request.replicas
                        ),
                    )
                };
                let msg = format!(
                    "update {} of compute instance {instance} started",
                    updated.compute_deployment_id
                );
                Ok(Report {
                    status,
                    readiness: Readiness::not_ready(Reason::Scaling, msg.clone()),
                    sync: SyncState::Progressing {
                        reason: Reason::Scaling,
                        message: msg,
                    },
                    requeue_after: Some(DEPLOY_POLL),
                    notes: vec![note],
                    plan: Default::default(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{EnvVar, EnvVarSource, PipelineSpec, SecretKeyRef, SpheronWorkspace};
    use serde_json::json;

    fn spec(source: serde_json::Value, spheron: serde_json::Value) -> WorkspaceSpec {
        serde_json::from_value(json!({
            "providerRef": {"name": "p"},
            "source": source,
            "spheron": spheron,
        }))
        .expect("spec")
    }

    fn site_spec(source: serde_json::Value) -> WorkspaceSpec {
        spec(source, json!({}))
    }

    fn main_repo() -> serde_json::Value {
        json!({"repository": "https://github.com/acme/shop.git", "branch": "main"})
    }

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn deployment(v: serde_json::Value) -> Deployment {
        let mut base = json!({"_id": "d1", "status": "Deployed", "branch": "main", "protocol": "ipfs",
            "configuration": {"framework": "static", "nodeVersion": "V_16", "buildCommand": "", "publishDir": ""},
            "env": {}});
        if let (Some(b), Some(extra)) = (base.as_object_mut(), v.as_object()) {
            b.extend(extra.clone());
        }
        serde_json::from_value(base).expect("deployment")
    }

    fn op(kind: &str, state: &str, generation: Option<i64>) -> OperationStatus {
        OperationStatus {
            kind: kind.into(),
            id: Some("d1".into()),
            state: state.into(),
            generation,
            started_at: None,
            deadline: None,
        }
    }

    fn service(v: serde_json::Value) -> DeployedService {
        let mut base = json!({"name": "main", "image": "nginx", "tag": "1.27", "serviceCount": 1,
            "ports": [{"containerPort": 80, "exposedPort": 80}], "env": [],
            "agreedMachineImage": {"machineType": "Ventus Nano 1"}});
        if let (Some(b), Some(extra)) = (base.as_object_mut(), v.as_object()) {
            b.extend(extra.clone());
        }
        serde_json::from_value(base).expect("service")
    }

    fn compute_deployment(id: &str, status: &str) -> ComputeDeployment {
        serde_json::from_value(json!({"_id": id, "status": status, "services": []}))
            .expect("compute deployment")
    }

    fn compute_spec(compute: serde_json::Value, replicas: i32) -> WorkspaceSpec {
        let mut s = spec(
            json!({"repository": "https://github.com/acme/shop.git", "tag": "v1"}),
            json!({"compute": compute}),
        );
        s.replicas = replicas;
        s
    }

    // ----- sites ---------------------------------------------------------------------------

    #[test]
    fn repositories_compare_without_case_slash_or_dot_git() {
        assert_eq!(
            repo_key(" https://GitHub.com/Acme/Shop.git/ "),
            "https://github.com/acme/shop"
        );
        assert_eq!(
            repo_key("https://github.com/acme/shop"),
            repo_key("https://github.com/acme/shop.git")
        );
        assert_eq!(repo_name("https://github.com/acme/shop.git"), "shop");
        assert_eq!(repo_name("git@gitlab.com:group/app.git"), "app");
    }

    #[test]
    fn git_providers_come_from_the_host() {
        assert_eq!(
            git_provider("https://github.com/acme/shop.git"),
            Some("GITHUB")
        );
        assert_eq!(git_provider("git@github.com:acme/shop.git"), Some("GITHUB"));
        assert_eq!(git_provider("https://gitlab.com/g/app"), Some("GITLAB"));
        assert_eq!(
            git_provider("https://user@bitbucket.org/t/app.git"),
            Some("BITBUCKET")
        );
        assert_eq!(git_provider("https://git.example.com/acme/shop.git"), None);
    }

    #[test]
    fn branches_and_tags_deploy_but_commits_cannot() {
        assert_eq!(site_branch(GitRef::Branch("main")), Ok("main".into()));
        assert_eq!(site_branch(GitRef::Tag("v1.2")), Ok("v1.2".into()));
        let err = site_branch(GitRef::Commit("abc1234")).expect_err("commit");
        assert!(err.starts_with("spec.source.commit"), "{err}");
    }

    #[test]
    fn build_settings_come_from_the_spec_over_the_project_over_defaults() {
        let fresh = build_configuration(None, None);
        assert_eq!(
            (fresh.framework.as_str(), fresh.node_version.as_str()),
            ("static", "V_16")
        );
        let project = BuildConfiguration {
            framework: "react".into(),
            build_command: "yarn build".into(),
            publish_dir: "build".into(),
            node_version: "V_14".into(),
            ..Default::default()
        };
        // What the spec leaves out is the project's.
        assert_eq!(build_configuration(None, Some(&project)), project);
        let site = SpheronSite {
            framework: Some("vue".into()),
            build_command: None,
            publish_dir: Some("dist".into()),
            protocol: None,
        };
        let c = build_configuration(Some(&site), Some(&project));
        assert_eq!(
            (
                c.framework.as_str(),
                c.build_command.as_str(),
                c.publish_dir.as_str(),
                c.node_version.as_str()
            ),
            ("vue", "yarn build", "dist", "V_14")
        );
    }

    #[test]
    fn a_site_spec_becomes_a_start_request() {
        let s = spec(
            main_repo(),
            json!({"site": {"protocol": "arweave", "framework": "react"}}),
        );
        let d = SiteDesired::new(&s, &env(&[("MODE", "prod")]), "org1", None).expect("desired");
        let body = d.start_body("topic-1");
        assert_eq!(body.organization_id, "org1");
        assert_eq!(body.git_url, "https://github.com/acme/shop.git");
        assert_eq!(body.repo_name, "shop");
        assert_eq!(body.branch, "main");
        assert_eq!(body.protocol, "arweave");
        assert_eq!(body.provider, "GITHUB");
        assert!(!body.create_default_webhook);
        assert_eq!(body.configuration.framework, "react");
        assert_eq!(body.env, Some(env(&[("MODE", "prod")])));
        assert_eq!(body.unique_topic_id.as_deref(), Some("topic-1"));
        assert_eq!(d.git_ref, "branch:main");
        assert_eq!(d.repo_key, "https://github.com/acme/shop");
        // The fingerprint moves with the variables and the ref.
        let other_env =
            SiteDesired::new(&s, &env(&[("MODE", "dev")]), "org1", None).expect("desired");
        assert_ne!(d.print, other_env.print);
        let tag = spec(
            json!({"repository": "https://github.com/acme/shop.git", "tag": "v1"}),
            json!({}),
        );
        let tagged = SiteDesired::new(&tag, &BTreeMap::new(), "org1", None).expect("desired");
        assert_eq!(
            (tagged.branch.as_str(), tagged.git_ref.as_str()),
            ("v1", "tag:v1")
        );
        assert_ne!(tagged.print, d.print);
    }

    #[test]
    fn site_specs_spheron_cannot_deploy_are_refused_naming_the_field() {
        let commit = site_spec(
            json!({"repository": "https://github.com/acme/shop.git", "commit": "abc1234"}),
        );
        let err = SiteDesired::new(&commit, &BTreeMap::new(), "o", None)
            .err()
            .expect("commit");
        assert_eq!(err.reason(), Reason::UnsupportedByProvider);
        assert!(err.to_string().starts_with("spec.source.commit"), "{err}");
        let host =
            site_spec(json!({"repository": "https://git.example.com/a/b.git", "branch": "main"}));
        let err = SiteDesired::new(&host, &BTreeMap::new(), "o", None)
            .err()
            .expect("host");
        assert_eq!(err.reason(), Reason::UnsupportedByProvider);
        assert!(
            err.to_string().starts_with("spec.source.repository"),
            "{err}"
        );
    }

    #[test]
    fn a_finished_deployment_is_compared_field_by_field() {
        let s = site_spec(main_repo());
        let desired = SiteDesired::new(&s, &env(&[("MODE", "prod")]), "o", None).expect("desired");
        let same = deployment(json!({"env": {"MODE": "prod"}}));
        assert_eq!(site_differences(&same, &desired, &[]), Vec::<String>::new());
        let cases = [
            (
                json!({"branch": "dev", "env": {"MODE": "prod"}}),
                vec!["spec.source"],
            ),
            (
                json!({"protocol": "arweave", "env": {"MODE": "prod"}}),
                vec!["spec.spheron.site.protocol"],
            ),
            (
                json!({"configuration": {"framework": "react", "buildCommand": "b", "publishDir": "out"}, "env": {"MODE": "prod"}}),
                vec![
                    "spec.spheron.site.framework",
                    "spec.spheron.site.buildCommand",
                    "spec.spheron.site.publishDir",
                ],
            ),
            (json!({"env": {"MODE": "debug"}}), vec!["spec.env[MODE]"]),
            (json!({"env": {}}), vec!["spec.env[MODE]"]),
            (
                json!({"env": {"MODE": "prod", "OLD": "x"}}),
                vec!["spec.env[OLD]"],
            ),
        ];
        for (patch, fields) in cases {
            let d = deployment(patch.clone());
            assert_eq!(site_differences(&d, &desired, &[]), fields, "{patch}");
        }
        // A variable of the project's own (set at Spheron) is not one the spec removed.
        let with_project_var = deployment(json!({"env": {"MODE": "prod", "CDN": "on"}}));
        assert!(site_differences(&with_project_var, &desired, &["CDN".to_string()]).is_empty());
        // Settings a deployment does not report are not claimed to differ.
        let bare =
            deployment(json!({"configuration": null, "protocol": null, "env": {"MODE": "prod"}}));
        assert!(site_differences(&bare, &desired, &[]).is_empty());
    }

    #[test]
    fn every_deployment_state_has_a_next_step() {
        use SiteStep::*;
        let g = 5;
        // Nothing followed yet, or a call that never arrived: deploy.
        assert_eq!(plan_site(None, g, false, false), Start);
        assert_eq!(
            plan_site(Some(&op(DEPLOY, REQUESTING, Some(g))), g, false, false),
            Start
        );
        // A compute operation is not a site deployment.
        assert_eq!(
            plan_site(Some(&op(UPDATE, "Deployed", Some(g))), g, false, true),
            Start
        );
        for state in ["PreQueue", "Queued", "Pending", "Killing", "SomethingNew"] {
            for kind in [DEPLOY, REDEPLOY] {
                assert_eq!(
                    plan_site(Some(&op(kind, state, Some(g))), g, false, false),
                    Wait,
                    "{state}"
                );
                assert_eq!(
                    plan_site(Some(&op(kind, state, Some(g - 1))), g, false, false),
                    Supersede,
                    "{state}"
                );
                // Not bosun's own (found on an adopted project): never canceled.
                assert_eq!(
                    plan_site(Some(&op(kind, state, None)), g, false, false),
                    Wait,
                    "{state}"
                );
            }
        }
        let auth = "AuthorizationNeeded";
        assert_eq!(
            plan_site(Some(&op(DEPLOY, auth, Some(g))), g, false, false),
            Authorize
        );
        assert_eq!(
            plan_site(Some(&op(DEPLOY, auth, None)), g, true, false),
            Authorize
        );
        assert_eq!(
            plan_site(Some(&op(DEPLOY, auth, Some(g - 1))), g, false, false),
            Supersede
        );
        for generation in [Some(g), Some(g - 1), None] {
            let deployed = op(DEPLOY, "Deployed", generation);
            assert_eq!(plan_site(Some(&deployed), g, false, true), Done);
            assert_eq!(plan_site(Some(&deployed), g, true, true), Redeploy);
            assert_eq!(plan_site(Some(&deployed), g, false, false), Start);
            assert_eq!(plan_site(Some(&deployed), g, true, false), Start);
        }
        for state in ["Failed", "TimedOut", "Canceled"] {
            let failed = |generation| op(DEPLOY, state, generation);
            // This spec's deployment failed: wait for a change or a request.
            assert_eq!(
                plan_site(Some(&failed(Some(g))), g, false, false),
                Failed,
                "{state}"
            );
            assert_eq!(
                plan_site(Some(&failed(Some(g))), g, true, false),
                Start,
                "{state}"
            );
            // An older spec's, or one bosun did not start: deploy this spec.
            assert_eq!(
                plan_site(Some(&failed(Some(g - 1))), g, false, false),
                Start,
                "{state}"
            );
            assert_eq!(
                plan_site(Some(&failed(None)), g, false, false),
                Start,
                "{state}"
            );
        }
    }

    #[test]
    fn failures_keep_spherons_state_in_the_reason() {
        assert_eq!(
            failure_reason_code(&DeploymentStatus::Failed),
            Reason::DeployFailed
        );
        assert_eq!(
            failure_reason_code(&DeploymentStatus::TimedOut),
            Reason::DeployTimedOut
        );
        assert_eq!(
            failure_reason_code(&DeploymentStatus::Canceled),
            Reason::DeployCanceled
        );
    }

    #[test]
    fn a_deploy_sent_before_a_crash_is_found_not_repeated() {
        let recent = vec![
            deployment(json!({"_id": "d3", "topic": "t-other"})),
            deployment(json!({"_id": "d2", "topic": "t-ours"})),
            deployment(json!({"_id": "d1", "topic": "t-old"})),
        ];
        let marker = |id: &str| OperationStatus {
            id: Some(id.into()),
            ..op(DEPLOY, REQUESTING, Some(1))
        };
        // A start is found by the topic it carried, wherever it is in the list.
        assert_eq!(
            adopt_requested(&marker("topic:t-ours"), &recent).map(|d| d.id.as_str()),
            Some("d2")
        );
        assert_eq!(adopt_requested(&marker("topic:t-lost"), &recent), None);
        // A redeploy: the newest, if newer than the newest before the call.
        assert_eq!(
            adopt_requested(&marker("after:d2"), &recent).map(|d| d.id.as_str()),
            Some("d3")
        );
        assert_eq!(adopt_requested(&marker("after:d3"), &recent), None);
        assert_eq!(
            adopt_requested(&marker("after:"), &recent).map(|d| d.id.as_str()),
            Some("d3")
        );
        assert_eq!(adopt_requested(&marker("after:"), &[]), None);
        assert_eq!(adopt_requested(&marker("d3"), &recent), None, "no marker");
        // Compute updates: the instance's newest deployment.
        assert_eq!(
            adopt_requested_update(&marker("after:c1"), Some("c2")),
            Some("c2")
        );
        assert_eq!(
            adopt_requested_update(&marker("after:c2"), Some("c2")),
            None
        );
        assert_eq!(adopt_requested_update(&marker("after:c2"), None), None);
    }

    #[test]
    fn deadlines_pass() {
        let now = Timestamp::now();
        let mut o = op(DEPLOY, "Pending", Some(1));
        assert!(!past_deadline(&o, now), "no deadline");
        o.deadline = Some((now - SignedDuration::from_secs(1)).to_string());
        assert!(past_deadline(&o, now));
        o.deadline = Some((now + SignedDuration::from_secs(60)).to_string());
        assert!(!past_deadline(&o, now));
        let fresh = new_operation(DEPLOY, "topic:x".into(), 3);
        assert_eq!(
            (fresh.state.as_str(), fresh.generation),
            (REQUESTING, Some(3))
        );
        assert!(!past_deadline(&fresh, now));
        assert!(past_deadline(
            &fresh,
            now + SignedDuration::from_secs(31 * 60)
        ));
    }

    #[test]
    fn topics_are_version_4_uuids() {
        let t = topic_id();
        let parts: Vec<&str> = t.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            vec![8, 4, 4, 4, 12],
            "{t}"
        );
        assert!(parts[2].starts_with('4'), "{t}");
        assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"), "{t}");
        assert!(t.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        assert_ne!(topic_id(), t);
    }

    #[test]
    fn pipeline_settings_spheron_cannot_honour_are_refused() {
        let mut s = site_spec(main_repo());
        assert!(check_pipeline(&s).is_ok());
        s.pipeline = Some(PipelineSpec::default());
        assert!(check_pipeline(&s).is_ok());
        s.pipeline = Some(PipelineSpec {
            test: true,
            ..Default::default()
        });
        assert!(check_pipeline(&s)
            .expect_err("test")
            .to_string()
            .starts_with("spec.pipeline.test"));
        s.pipeline = Some(PipelineSpec {
            run: RunState::Stopped,
            ..Default::default()
        });
        assert!(check_pipeline(&s)
            .expect_err("run")
            .to_string()
            .starts_with("spec.pipeline.run"));
    }

    #[test]
    fn projects_are_found_by_id_or_repository() {
        let projects: Vec<Project> = serde_json::from_value(json!([
            {"_id": "p1", "name": "shop", "url": "https://github.com/acme/shop"},
            {"_id": "p2", "name": "blog", "url": "https://github.com/acme/blog"},
        ]))
        .expect("projects");
        let shop = "https://github.com/acme/shop";
        assert_eq!(
            locate(&projects, Some("p2".to_string()), shop, false, false),
            Located::Found(&projects[1])
        );
        assert_eq!(
            locate(&projects, Some("p9".to_string()), shop, false, false),
            Located::Gone("p9".to_string())
        );
        assert_eq!(
            locate(&projects, None, shop, false, false),
            Located::NameTaken(&projects[0])
        );
        assert_eq!(
            locate(&projects, None, shop, true, false),
            Located::Found(&projects[0])
        );
        assert_eq!(
            locate(&projects, None, "https://github.com/acme/new", false, false),
            Located::Absent
        );
        let instances: Vec<ComputeInstance> = serde_json::from_value(json!([
            {"_id": "i1", "name": "ns-a", "state": "Active"},
            {"_id": "i2", "name": "ns-a", "state": "Active"},
        ]))
        .expect("instances");
        assert_eq!(
            locate(&instances, None, "ns-a", true, false),
            Located::Ambiguous(2)
        );
        assert_eq!(
            locate(&instances, Some("i1".to_string()), "x", false, false),
            Located::Found(&instances[0])
        );
    }

    // ----- compute --------------------------------------------------------------------------

    #[test]
    fn images_split_into_name_and_tag() {
        assert_eq!(split_image("nginx"), ("nginx".into(), None));
        assert_eq!(
            split_image("nginx:1.27"),
            ("nginx".into(), Some("1.27".into()))
        );
        assert_eq!(
            split_image("registry:5000/app"),
            ("registry:5000/app".into(), None)
        );
        assert_eq!(
            split_image("registry:5000/app:v2"),
            ("registry:5000/app".into(), Some("v2".into()))
        );
        // The tag follows the image, else the source's tag or commit, else latest.
        assert_eq!(
            image_and_tag("nginx:1.27", GitRef::Tag("v1")),
            ("nginx".into(), "1.27".into())
        );
        assert_eq!(
            image_and_tag("ghcr.io/acme/shop", GitRef::Tag("v1")),
            ("ghcr.io/acme/shop".into(), "v1".into())
        );
        assert_eq!(
            image_and_tag("shop", GitRef::Commit("abc1234")),
            ("shop".into(), "abc1234".into())
        );
        assert_eq!(
            image_and_tag("shop", GitRef::Branch("main")),
            ("shop".into(), "latest".into())
        );
        assert_eq!(
            image_and_tag("shop:", GitRef::Branch("main")),
            ("shop".into(), "latest".into())
        );
    }

    #[test]
    fn the_main_service_follows_the_spec_and_keeps_the_rest() {
        let mut s = compute_spec(
            json!({"image": "nginx:1.27", "machine": "Ventus Nano 1"}),
            3,
        );
        s.env = vec![
            EnvVar {
                name: "MODE".into(),
                value: Some("prod".into()),
                value_from: None,
            },
            EnvVar {
                name: "TOKEN".into(),
                value: None,
                value_from: Some(EnvVarSource {
                    secret_key_ref: SecretKeyRef {
                        name: "s".into(),
                        key: "k".into(),
                        namespace: None,
                    },
                }),
            },
        ];
        let compute = s.spheron.clone().and_then(|x| x.compute).expect("compute");
        let m = MainService::new(&s, &compute, &env(&[("MODE", "prod"), ("TOKEN", "t0k3n")]));
        assert_eq!(m.region, DEFAULT_REGION);
        let new = m.config(None).expect("create");
        assert_eq!(new.name, MAIN_SERVICE);
        assert_eq!((new.image.as_str(), new.tag.as_str()), ("nginx", "1.27"));
        assert_eq!(new.service_count, 3);
        assert_eq!(new.akash_machine_image_name, "Ventus Nano 1");
        assert_eq!(new.ports[0].container_port, MAIN_PORT);
        assert_eq!(
            new.env,
            vec![
                EnvEntry::new("MODE", "prod", false),
                EnvEntry::new("TOKEN", "t0k3n", true)
            ]
        );
        // Over what runs: the name, ports and command stay.
        let running = service(
            json!({"name": "web", "ports": [{"containerPort": 8080, "exposedPort": 80}],
            "command": ["serve"], "serviceCount": 1}),
        );
        let updated = m.config(Some(&running)).expect("update");
        assert_eq!(updated.name, "web");
        assert_eq!(updated.ports[0].container_port, 8080);
        assert_eq!(updated.command, vec!["serve".to_string()]);
        assert_eq!(updated.service_count, 3);
        // A create needs an image and a machine; an adopted instance keeps its own.
        let bare = compute_spec(json!({}), 1);
        let none = MainService::new(&bare, &SpheronCompute::default(), &BTreeMap::new());
        assert!(none
            .config(None)
            .expect_err("image")
            .starts_with("spec.spheron.compute.image"));
        let no_machine = MainService::new(
            &bare,
            &SpheronCompute {
                image: Some("x".into()),
                ..Default::default()
            },
            &BTreeMap::new(),
        );
        assert!(no_machine
            .config(None)
            .expect_err("machine")
            .starts_with("spec.spheron.compute.machine"));
        let kept = none.config(Some(&running)).expect("adopted");
        assert_eq!(
            (kept.image.as_str(), kept.akash_machine_image_name.as_str()),
            ("nginx", "Ventus Nano 1")
        );
        // spec.plan names the machine when compute.machine does not.
        let mut planned = compute_spec(json!({"image": "x"}), 1);
        planned.plan = Some("Ventus Small 1".into());
        let c = planned
            .spheron
            .clone()
            .and_then(|x| x.compute)
            .expect("compute");
        assert_eq!(
            MainService::new(&planned, &c, &BTreeMap::new())
                .machine
                .as_deref(),
            Some("Ventus Small 1")
        );
    }

    #[test]
    fn every_difference_of_the_main_service_is_named() {
        let s = compute_spec(
            json!({"image": "nginx:1.27", "machine": "Ventus Nano 1"}),
            2,
        );
        let compute = s.spheron.clone().and_then(|x| x.compute).expect("compute");
        let m = MainService::new(&s, &compute, &env(&[("MODE", "prod")]));
        let runs = |patch: serde_json::Value| {
            let mut base =
                json!({"serviceCount": 2, "env": [{"value": "MODE=prod", "isSecret": false}]});
            if let (Some(b), Some(p)) = (base.as_object_mut(), patch.as_object()) {
                b.extend(p.clone());
            }
            service(base)
        };
        assert_eq!(main_differences(&runs(json!({})), &m), Vec::new());
        let cases = [
            (json!({"serviceCount": 5}), "spec.replicas", "5", "2"),
            (
                json!({"image": "httpd"}),
                "spec.spheron.compute.image",
                "httpd:1.27",
                "nginx:1.27",
            ),
            (
                json!({"tag": "1.26"}),
                "spec.spheron.compute.image",
                "nginx:1.26",
                "nginx:1.27",
            ),
            (
                json!({"agreedMachineImage": {"machineType": "Ventus Small 1"}}),
                "spec.spheron.compute.machine",
                "\"Ventus Small 1\"",
                "\"Ventus Nano 1\"",
            ),
            (
                json!({"env": [{"value": "MODE=debug"}]}),
                "spec.env[MODE]",
                "\"debug\"",
                "\"prod\"",
            ),
            (
                json!({"env": []}),
                "spec.env[MODE]",
                "(not set)",
                "\"prod\"",
            ),
        ];
        for (patch, field, observed, desired) in cases {
            let d = main_differences(&runs(patch.clone()), &m);
            assert_eq!(
                d,
                vec![Difference {
                    field: field.into(),
                    observed: observed.into(),
                    desired: desired.into()
                }],
                "{patch}"
            );
        }
        let extra = main_differences(
            &runs(
                json!({"env": [{"value": "MODE=prod"}, {"value": "KEY=s3cret", "isSecret": true}]}),
            ),
            &m,
        );
        assert_eq!(
            extra,
            vec![Difference {
                field: "spec.env[KEY]".into(),
                observed: "(a Secret value)".into(),
                desired: "(not set)".into()
            }]
        );
        // Fields the spec leaves out are never compared.
        let open = MainService::new(
            &compute_spec(json!({}), 2),
            &SpheronCompute::default(),
            &env(&[("MODE", "prod")]),
        );
        assert!(main_differences(
            &runs(json!({"image": "anything", "agreedMachineImage": null})),
            &open
        )
        .is_empty());
    }

    #[test]
    fn secret_values_never_reach_an_event() {
        let mut s = compute_spec(json!({"image": "x:1", "machine": "m"}), 1);
        s.env = vec![EnvVar {
            name: "TOKEN".into(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: SecretKeyRef {
                    name: "s".into(),
                    key: "k".into(),
                    namespace: None,
                },
            }),
        }];
        let c = s.spheron.clone().and_then(|x| x.compute).expect("compute");
        let m = MainService::new(&s, &c, &env(&[("TOKEN", "new-s3cret")]));
        let running = service(
            json!({"image": "x", "tag": "1", "agreedMachineImage": {"machineType": "m"},
            "env": [{"value": "TOKEN=old-s3cret", "isSecret": true}]}),
        );
        let d = main_differences(&running, &m);
        assert_eq!(d.len(), 1);
        for note in update_notes("i1", &d, true)
            .iter()
            .chain(update_notes("i1", &d, false).iter())
        {
            assert!(!note.message.contains("s3cret"), "{}", note.message);
        }
    }

    #[test]
    fn updates_are_drift_corrections_only_when_the_spec_did_not_change() {
        let d = vec![
            Difference {
                field: "spec.replicas".into(),
                observed: "5".into(),
                desired: "3".into(),
            },
            Difference {
                field: "spec.env[A]".into(),
                observed: "\"x\"".into(),
                desired: "\"y\"".into(),
            },
        ];
        let drift = update_notes("i1", &d, true);
        assert_eq!(drift.len(), 2);
        assert_eq!(drift[0].reason, Reason::DriftCorrected);
        assert_eq!(drift[0].drift_field.as_deref(), Some("spec.replicas"));
        assert_eq!(
            drift[0].message,
            "spec.replicas was changed at the platform: set back from 5 to 3"
        );
        let update = update_notes("i1", &d, false);
        assert_eq!(update.len(), 1);
        assert_eq!(
            (update[0].reason.as_str(), update[0].drift_field.clone()),
            ("Updated", None)
        );
        assert_eq!(
            update[0].message,
            "updating compute instance i1: spec.replicas 5 -> 3, spec.env[A] \"x\" -> \"y\""
        );
    }

    #[test]
    fn every_compute_deployment_state_has_a_next_step() {
        use ComputeStep::*;
        let g = 4;
        let ours = |generation| OperationStatus {
            id: Some("c2".into()),
            ..op(UPDATE, "Queued", generation)
        };
        let theirs = OperationStatus {
            id: Some("c1".into()),
            ..op(UPDATE, "Deployed", Some(g))
        };
        assert_eq!(compute_step(Some(&ours(Some(g))), None, g, false), Converge);
        for state in ["Queued", "Pending", "SomethingNew"] {
            let n = compute_deployment("c2", state);
            assert_eq!(
                compute_step(Some(&ours(Some(g))), Some(&n), g, false),
                Wait { ours: true },
                "{state}"
            );
            assert_eq!(
                compute_step(Some(&theirs), Some(&n), g, false),
                Wait { ours: false },
                "{state}"
            );
            assert_eq!(
                compute_step(None, Some(&n), g, true),
                Wait { ours: false },
                "{state}"
            );
        }
        for state in ["Deployed", "Deprecated", "Deprecated-Provider"] {
            let n = compute_deployment("c2", state);
            assert_eq!(
                compute_step(Some(&ours(Some(g))), Some(&n), g, false),
                Converge,
                "{state}"
            );
            assert_eq!(compute_step(None, Some(&n), g, false), Converge, "{state}");
        }
        let failed = compute_deployment("c2", "Failed");
        assert_eq!(
            compute_step(Some(&ours(Some(g))), Some(&failed), g, false),
            Failed
        );
        // Retried on request or a new spec; someone else's failure is not this spec's.
        assert_eq!(
            compute_step(Some(&ours(Some(g))), Some(&failed), g, true),
            Converge
        );
        assert_eq!(
            compute_step(Some(&ours(Some(g - 1))), Some(&failed), g, false),
            Converge
        );
        assert_eq!(
            compute_step(Some(&theirs), Some(&failed), g, false),
            Converge
        );
        assert_eq!(compute_step(None, Some(&failed), g, false), Converge);
    }

    #[test]
    fn service_scales_leave_the_main_service_to_the_workspace() {
        let services = vec![
            service(json!({"name": "web", "serviceCount": 2})),
            service(json!({"name": "worker", "serviceCount": 1, "image": "w", "tag": "7"})),
        ];
        let err = plan_service_scale(&services, "web", 3).expect_err("main");
        assert_eq!(err.reason(), Reason::ScaledByWorkspace);
        assert!(err.to_string().contains("spec.replicas"), "{err}");
        let err = plan_service_scale(&services, "cron", 3).expect_err("unknown");
        assert_eq!(err.reason(), Reason::ServiceNotFound);
        assert!(err.to_string().contains("web, worker"), "{err}");
        assert_eq!(
            plan_service_scale(&services, "worker", 1).ok(),
            Some(ScalePlan::InSync(1))
        );
        match plan_service_scale(&services, "worker", 4) {
            Ok(ScalePlan::Scale {
                observed,
                services: sent,
            }) => {
                assert_eq!(observed, 1);
                // The full list again, only this service's count changed.
                assert_eq!(
                    sent.iter()
                        .map(|s| (s.name.as_str(), s.service_count))
                        .collect::<Vec<_>>(),
                    vec![("web", 2), ("worker", 4)]
                );
                assert_eq!((sent[1].image.as_str(), sent[1].tag.as_str()), ("w", "7"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn drift_needs_a_ready_status_of_the_same_spec() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
        let ready = |status: &str, generation: i64| Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: "R".into(),
            message: String::new(),
            observed_generation: Some(generation),
            last_transition_time: Time(Timestamp::now()),
        };
        assert!(is_drift(&[ready("True", 3)], 3, Some(3)));
        // The spec changed since: an update, not drift.
        assert!(!is_drift(&[ready("True", 2)], 3, Some(2)));
        // The last status of this spec was a failure or still progressing: no baseline.
        assert!(!is_drift(&[ready("False", 3)], 3, Some(3)));
        assert!(!is_drift(&[], 3, Some(3)));
        assert!(!is_drift(&[ready("True", 3)], 3, None));
    }

    #[test]
    fn a_workspace_block_is_site_or_compute() {
        let s = SpheronWorkspace::default();
        assert!(s.compute.is_none() && s.site.is_none());
        assert_eq!(selector("ns/shop"), "bosun.dev/workspace=ns.shop");
    }
}
