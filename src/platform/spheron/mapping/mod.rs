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

mod compute;
mod deletion;
mod scale;
mod site;
#[cfg(test)]
mod tests;

pub use compute::*;
pub use site::*;

use super::client::{
    BuildConfiguration, ComputeDeployment, ComputeDeploymentStatus, ComputeInstance,
    ComputeService, CreateComputeInstance, DeployedService, Deployment, DeploymentStarted,
    DeploymentStatus, EnvEntry, InstanceDeployment, InstanceState, Port, Project, ProjectState,
    SpheronClient, StartDeployment, UpdateComputeInstance,
};
use crate::api::{
    GitRef, OperationStatus, RunState, ServiceScaleStatus, SpheronCompute, SpheronSite,
    WorkspaceSpec, WorkspaceStatus,
};
use crate::core::conditions::{Readiness, SyncState};
use crate::core::drivers::{
    CreateGuard, ScaleRequest, ServiceScaleDriver, WorkspaceDriver, WorkspaceRequest,
};
use crate::core::error::ReconcileError;
use crate::core::locate::{place, Placement, Record, Words};
use crate::core::plan::{
    self, need, Change, Flow, ObjectId, Plan, PlanSeam, Planned, Step, StepAction, Target,
};
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
// The plan seam, shared by sites and compute instances.

/// A Workspace's plan, and what bosun may remember once it is through: the project or
/// instance serves this spec (object id, deployment id, spec print).
pub struct Decided<Op> {
    pub planned: Planned<Op, WorkspaceStatus>,
    pub confirm: Option<(String, String, u64)>,
}

impl<Op> Decided<Op> {
    fn new(
        plan: Plan<Op>,
        report: Report<WorkspaceStatus>,
        adopt: Option<String>,
        confirm: Option<(String, String, u64)>,
    ) -> Self {
        Decided {
            planned: Planned {
                plan,
                report,
                adopt,
            },
            confirm,
        }
    }
}

/// A Spheron object of `kind` (`project`, `compute instance`, `deployment`).
fn spheron_target(kind: &'static str, id: ObjectId, name: &str) -> Target {
    Target {
        kind,
        name: name.to_string(),
        id,
    }
}

/// Following a deployment until it ends, within [`DEPLOY_DEADLINE`].
fn await_deployment<Op>(id: ObjectId, summary: String, op: Op) -> Step<Op> {
    Step {
        action: StepAction::Await,
        target: spheron_target("deployment", id, ""),
        changes: Vec::new(),
        drift: false,
        summary,
        deadline: Some(Duration::from_secs(
            DEPLOY_DEADLINE.as_secs().unsigned_abs(),
        )),
        record: None,
        op,
    }
}

/// A site's or an instance's seam: the plan with what bosun may remember.
trait Decides<'r>: PlanSeam<WorkspaceRequest<'r>, WorkspaceStatus> {
    fn decided(
        &self,
        request: &WorkspaceRequest<'r>,
        observed: &Self::Observation,
    ) -> Result<Decided<Self::Op>, ReconcileError>;
}

impl SpheronClient {
    /// Observe → plan → the funnel, then remember what serves the spec.
    async fn reconcile_on<'r, S: Decides<'r>>(
        &self,
        seam: &S,
        request: &WorkspaceRequest<'r>,
        guard: &dyn CreateGuard,
    ) -> Result<Report<WorkspaceStatus>, ReconcileError> {
        let observed = seam.observe(request).await?;
        let Decided { planned, confirm } = seam.decided(request, &observed)?;
        let report = plan::funnel(seam, planned, request.mode, guard).await?;
        if let Some((object, deployment, print)) = confirm {
            self.shared.confirm(&object, &deployment, print);
        }
        Ok(report)
    }
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
    request.known_id().map(str::to_string)
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
        crate::core::deletion::delete(self, request).await
    }
}
