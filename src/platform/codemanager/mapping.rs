//! Workspace on Puppet Enterprise Code Manager: a Workspace is one environment (a branch of
//! the control repository). bosun deploys it when the spec changes, when a reconcile is
//! requested, or when the environment is missing from what is deployed; tracks the deploy by
//! id without waiting; and reports the deployed commit (`deploy-signature`).

use super::client::{
    environment_name, CmError, CodeManager, DeployRequest, DeployResult, DeployState, DeploysStatus,
};
use crate::api::{GitRef, OperationStatus, StageStatus, WorkspaceStatus};
use crate::core::conditions::{Readiness, SyncState};
use crate::core::deletion::{Deletion, DeletionSeam};
use crate::core::drivers::{CreateGuard, WorkspaceDriver, WorkspaceRequest};
use crate::core::error::ReconcileError;
use crate::core::plan::{
    self, Change, Flow, ObjectId, Plan, PlanSeam, Planned, Step, StepAction, Target,
};
use crate::core::reason::Reason;
use crate::core::reconciler::{Cleanup, Note, Report};
use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use std::time::Duration;

/// How often a deploy in flight is looked at.
pub const DEPLOY_POLL: Duration = Duration::from_secs(3);
/// How long a deploy may take before it is reported Stalled (Code Manager's own
/// `timeouts_deploy` + `timeouts_sync` defaults).
pub const DEPLOY_TIMEOUT: Duration = Duration::from_secs(900);
/// `status.operation.kind` of a deploy.
pub const DEPLOY: &str = "deploy";

/// The environment a Workspace maps to, and whether Code Manager's naming rules changed the
/// branch name (pure).
pub fn environment_for(request: &WorkspaceRequest<'_>) -> Result<(String, bool), ReconcileError> {
    if let Some(env) = request
        .spec
        .puppet_code_manager
        .as_ref()
        .and_then(|c| c.environment.clone())
    {
        return Ok((env, false));
    }
    match request.spec.source.git_ref() {
        GitRef::Branch(branch) => Ok(environment_name(branch, None)),
        other => Err(ReconcileError::user(
            Reason::EnvironmentRequired,
            format!("spec.source is {other}: Code Manager deploys branches; set spec.source.branch or spec.puppetCodeManager.environment"),
        )),
    }
}

/// What to do next for one environment (pure).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Send a deploy.
    Deploy,
    /// Look at the deploy in flight again later.
    Wait,
    /// The environment is deployed for this generation.
    Done,
}

/// Decides whether a deploy is due: never twice for one generation, unless a reconcile is
/// requested or the environment vanished from the deployed set.
pub fn next_step(
    previous: Option<&OperationStatus>,
    generation: i64,
    requested: bool,
    deployed: bool,
) -> Next {
    match previous {
        Some(op) if op.kind == DEPLOY && !is_finished(&op.state) => Next::Wait,
        Some(op)
            if op.kind == DEPLOY && op.generation == Some(generation) && !requested && deployed =>
        {
            Next::Done
        }
        Some(op)
            if op.kind == DEPLOY
                && op.generation == Some(generation)
                && op.state.starts_with("failed")
                && !requested =>
        {
            Next::Done
        }
        _ => Next::Deploy,
    }
}

fn is_finished(state: &str) -> bool {
    state == "synced" || state == "complete" || state.starts_with("failed")
}

/// Whether the deployed signature is the commit the spec names (a prefix of it is enough).
pub fn commit_matches(spec_commit: &str, signature: &str) -> bool {
    !spec_commit.is_empty()
        && signature
            .to_ascii_lowercase()
            .starts_with(&spec_commit.to_ascii_lowercase())
}

fn failure_message(env: &str, error: Option<&CmError>) -> String {
    match error {
        Some(e) => {
            let corrected = e
                .corrected_name()
                .filter(|n| n != env)
                .map(|n| format!(" (Code Manager used the name {n})"))
                .unwrap_or_default();
            format!(
                "deploying environment {env} failed{corrected}: {}: {}",
                e.kind, e.msg
            )
        }
        None => format!("deploying environment {env} failed"),
    }
}

/// File sync as status shows it: storage on the primary, then every compiler (pure).
pub fn file_sync_stages(status: &DeploysStatus, env: &str) -> Vec<StageStatus> {
    let storage = status.deployed(env).map(|d| d.deploy_signature.clone());
    let mut stages = vec![StageStatus {
        name: "file-sync-storage".into(),
        state: if storage.is_some() {
            "deployed".into()
        } else {
            "absent".into()
        },
        message: storage.clone(),
    }];
    for (server, client) in &status.clients {
        let theirs = client
            .deployed
            .iter()
            .find(|d| d.environment == env)
            .map(|d| d.deploy_signature.clone());
        let state = match (&storage, &theirs) {
            (Some(a), Some(b)) if a == b => "synced",
            (Some(_), _) => "syncing",
            (None, _) => "absent",
        };
        stages.push(StageStatus {
            name: format!("file-sync {server}"),
            state: state.into(),
            message: theirs,
        });
    }
    stages
}

/// The error of a failed deploy: by id where the status still lists it, else the latest
/// failure of the environment.
fn failed_entry<'a>(status: &'a DeploysStatus, env: &str, id: Option<i64>) -> Option<&'a CmError> {
    id.and_then(|id| status.find_id(id))
        .map(|(_, entry)| entry)
        .or_else(|| status.last_failure(env))
        .and_then(|f| f.error.as_ref())
}

fn operation(id: Option<i64>, state: &str, generation: i64, now: Timestamp) -> OperationStatus {
    let deadline = now
        .checked_add(SignedDuration::from_secs(DEPLOY_TIMEOUT.as_secs() as i64))
        .unwrap_or(now);
    OperationStatus {
        kind: DEPLOY.into(),
        id: id.map(|i| i.to_string()),
        state: state.into(),
        generation: Some(generation),
        started_at: Some(now.to_string()),
        deadline: Some(deadline.to_string()),
    }
}

fn deploying(
    status: WorkspaceStatus,
    message: String,
    notes: Vec<Note>,
) -> Report<WorkspaceStatus> {
    Report::progressing(status, notes, Reason::Deploying, message, DEPLOY_POLL)
}

/// What Code Manager showed for one Workspace's environment.
#[derive(Clone, Debug)]
pub struct Observed {
    /// Every environment's deployed commit, recent deploys and file sync.
    pub deploys: DeploysStatus,
    /// The state of the deploy `status.operation` follows, by its id, while Code Manager
    /// still keeps it (`deploy_ttl`).
    pub in_flight: Option<DeployState>,
    /// When the observation was made: deadlines are judged against it.
    pub at: Timestamp,
}

/// The request a Code Manager step carries.
#[derive(Clone, Debug, PartialEq)]
pub enum CmOp {
    /// `POST /deploys` for one environment.
    Deploy {
        environment: String,
        deploy_modules: bool,
        generation: i64,
        /// Code Manager's naming rules changed the branch name.
        renamed: bool,
        at: Timestamp,
    },
    /// Follows a deploy until it ends: later reconciles read its status by id.
    Await,
}

fn in_flight(operation: Option<&OperationStatus>) -> Option<&OperationStatus> {
    operation.filter(|o| o.kind == DEPLOY && !is_finished(&o.state))
}

fn deploy_id(op: &OperationStatus) -> Option<i64> {
    op.id.as_deref().and_then(|i| i.parse::<i64>().ok())
}

fn await_step(env: &str, id: ObjectId, deadline: Duration) -> Step<CmOp> {
    Step {
        action: StepAction::Await,
        target: Target {
            kind: "deploy",
            name: env.to_string(),
            id,
        },
        changes: Vec::new(),
        drift: false,
        summary: format!("follow the deploy of environment {env} until file sync has it"),
        deadline: Some(deadline),
        record: None,
        op: CmOp::Await,
    }
}

/// The plan for one Workspace (pure): follow the deploy in flight, or deploy the environment
/// when `next_step` says so, and the status either way.
pub fn plan_workspace(
    request: &WorkspaceRequest<'_>,
    observed: &Observed,
) -> Result<Planned<CmOp, WorkspaceStatus>, ReconcileError> {
    let (env, corrected) = environment_for(request)?;
    let deploy_modules = request
        .spec
        .puppet_code_manager
        .as_ref()
        .map(|c| c.deploy_modules)
        .unwrap_or(true);
    let deploys = &observed.deploys;
    let mut status = request.previous.clone();
    let mut notes = Vec::new();
    let mut plan = Plan::default();
    status.external_id = Some(env.clone());
    let signature = deploys.deployed(&env).map(|d| d.deploy_signature.clone());
    status.stages = file_sync_stages(deploys, &env);

    if let Some(op) = in_flight(status.operation.as_ref()).cloned() {
        let state = match (&observed.in_flight, &signature) {
            (Some(state), _) => state.clone(),
            // The id expired (deploys are kept for `deploy_ttl`): judge by the deployed set.
            (None, Some(_)) => DeployState::Synced,
            (None, None) => DeployState::Failed,
        };
        let deadline = op
            .deadline
            .as_deref()
            .and_then(|d| d.parse::<Timestamp>().ok());
        let with_state = |state: &str| OperationStatus {
            state: state.into(),
            ..op.clone()
        };
        match state {
            s if s.is_success() => {
                status.operation = Some(with_state("synced"));
                notes.push(Note::normal(
                    Reason::Deployed,
                    "Deploy",
                    format!(
                        "environment {env} deployed at {}",
                        signature.clone().unwrap_or_default()
                    ),
                ));
            }
            DeployState::Failed => {
                let message = failure_message(&env, failed_entry(deploys, &env, deploy_id(&op)));
                status.operation = Some(with_state("failed"));
                let report = Report::stalled(status, notes, Reason::DeployFailed, message);
                return Ok(Planned {
                    plan,
                    report,
                    adopt: None,
                });
            }
            _ if deadline.is_some_and(|d| observed.at > d) => {
                status.operation = Some(with_state("failed:timeout"));
                let message = format!(
                    "the deploy of {env} did not finish within {}",
                    humantime::format_duration(DEPLOY_TIMEOUT)
                );
                let report = Report::stalled(status, notes, Reason::DeployTimeout, message);
                return Ok(Planned {
                    plan,
                    report,
                    adopt: None,
                });
            }
            s => {
                let message = format!(
                    "deploy {} of environment {env} is {}",
                    op.id.clone().unwrap_or_default(),
                    s.as_str()
                );
                status.operation = Some(with_state(s.as_str()));
                let left = deadline
                    .and_then(|d| d.duration_since(observed.at).try_into().ok())
                    .unwrap_or(DEPLOY_TIMEOUT);
                plan.push(await_step(
                    &env,
                    ObjectId::Known(op.id.clone().unwrap_or_default()),
                    left,
                ));
                let report = deploying(status, message, notes);
                return Ok(Planned {
                    plan,
                    report,
                    adopt: None,
                });
            }
        }
    }

    let op_now = status.operation.clone();
    match next_step(
        op_now.as_ref(),
        request.generation,
        request.mode.requested,
        signature.is_some(),
    ) {
        Next::Deploy => {
            // Deploying again for a generation already deployed, unasked: the environment
            // went missing at the platform.
            let drift = request.is_drift()
                && !request.mode.requested
                && op_now
                    .as_ref()
                    .is_some_and(|o| o.generation == Some(request.generation));
            let renamed = if corrected {
                format!(" (branch name corrected to {env})")
            } else {
                String::new()
            };
            let wanted = request
                .spec
                .source
                .commit
                .clone()
                .unwrap_or_else(|| format!("head of {env}"));
            let deploy = plan.push(Step {
                action: StepAction::Start,
                target: Target {
                    kind: "environment",
                    name: env.clone(),
                    id: ObjectId::Known(env.clone()),
                },
                changes: vec![Change::new(
                    "status.deployedRevision",
                    signature.clone(),
                    Some(wanted),
                )],
                drift,
                summary: format!("deploy environment {env}{renamed}"),
                deadline: None,
                record: None,
                op: CmOp::Deploy {
                    environment: env.clone(),
                    deploy_modules,
                    generation: request.generation,
                    renamed: corrected,
                    at: observed.at,
                },
            });
            plan.push(await_step(&env, ObjectId::FromStep(deploy), DEPLOY_TIMEOUT));
        }
        Next::Wait => {
            let report = deploying(status, format!("deploying environment {env}"), notes);
            return Ok(Planned {
                plan,
                report,
                adopt: None,
            });
        }
        Next::Done => {}
    }
    let report = settled(request, &env, status, signature, deploys, notes);
    Ok(Planned {
        plan,
        report,
        adopt: None,
    })
}

/// The status when nothing is sent (pure): the deployed commit against the spec.
fn settled(
    request: &WorkspaceRequest<'_>,
    env: &str,
    mut status: WorkspaceStatus,
    signature: Option<String>,
    deploys: &DeploysStatus,
    notes: Vec<Note>,
) -> Report<WorkspaceStatus> {
    if status
        .operation
        .as_ref()
        .is_some_and(|o| o.state.starts_with("failed"))
    {
        let message = failure_message(env, failed_entry(deploys, env, None));
        return Report::stalled(status, notes, Reason::DeployFailed, message);
    }
    status.deployed_revision = signature.clone();
    let Some(signature) = signature else {
        return Report {
            status,
            readiness: Readiness::not_ready(
                Reason::NotDeployed,
                format!("environment {env} is not deployed"),
            ),
            sync: SyncState::Synced,
            requeue_after: None,
            notes,
            plan: Default::default(),
        };
    };
    if let Some(commit) = request.spec.source.commit.as_deref() {
        if !commit_matches(commit, &signature) {
            let message = format!("environment {env} is deployed at {signature}, but spec.source.commit is {commit}: push that commit to the branch or fix the spec");
            return Report::stalled(status, notes, Reason::RevisionMismatch, message);
        }
    }
    let readiness = Readiness::ready(
        Reason::Deployed,
        format!("environment {env} is deployed at {signature}"),
    );
    Report::settled(status, notes, readiness, request.mode.observing())
}

/// What deleting a Workspace does (pure): Code Manager has no call that removes an
/// environment, which follows the control repository's branches, so the plan is empty and an
/// Event says so instead of pretending.
pub fn deletion(request: &WorkspaceRequest<'_>) -> Result<Deletion<()>, ReconcileError> {
    let (env, _) = environment_for(request)?;
    Ok(Deletion {
        plan: Plan::default(),
        left: vec![Note::warning(
            Reason::NotDeletedAtPlatform,
            "Delete",
            format!("Code Manager keeps environment {env} until its branch is deleted from the control repository"),
        )],
    })
}

/// Code Manager has no call that removes an environment: its deletion plan is always empty,
/// and says so in an Event.
#[async_trait]
impl<'r> DeletionSeam<WorkspaceRequest<'r>> for CodeManager {
    type Remains = ();
    type Op = ();
    type Answer = ();

    async fn observe_remains(&self, _: &WorkspaceRequest<'r>) -> Result<(), ReconcileError> {
        Ok(())
    }

    fn plan_deletion(
        &self,
        request: &WorkspaceRequest<'r>,
        _: &(),
    ) -> Result<Deletion<()>, ReconcileError> {
        deletion(request)
    }

    async fn execute_deletion(&self, _: &Step<()>) -> Result<(), ReconcileError> {
        // The plan above has no steps, so nothing is ever sent here.
        Ok(())
    }

    fn removed(&self, _: &Step<()>, _: &()) -> Note {
        // Never asked either, for the same reason.
        Note::normal(Reason::Deleted, "Delete", "nothing was removed")
    }
}

#[async_trait]
impl<'r> PlanSeam<WorkspaceRequest<'r>, WorkspaceStatus> for CodeManager {
    type Answer = Option<DeployResult>;
    type Op = CmOp;
    type Observation = Observed;

    async fn observe(&self, request: &WorkspaceRequest<'r>) -> Result<Observed, ReconcileError> {
        // A spec that names no environment is refused before anything is read.
        environment_for(request)?;
        let at = Timestamp::now();
        let deploys = self.status().await?;
        let in_flight = match in_flight(request.previous.operation.as_ref()).and_then(deploy_id) {
            Some(id) => self.status_of(id).await?.map(|s| s.status),
            None => None,
        };
        Ok(Observed {
            deploys,
            in_flight,
            at,
        })
    }

    fn plan(
        &self,
        request: &WorkspaceRequest<'r>,
        observed: &Observed,
    ) -> Result<Planned<CmOp, WorkspaceStatus>, ReconcileError> {
        plan_workspace(request, observed)
    }

    async fn execute(
        &self,
        step: &Step<CmOp>,
        _answers: &[Option<DeployResult>],
    ) -> Result<Option<DeployResult>, ReconcileError> {
        match &step.op {
            CmOp::Deploy {
                environment,
                deploy_modules,
                ..
            } => {
                let results = self
                    .deploy(&DeployRequest {
                        environments: vec![environment.clone()],
                        deploy_modules: Some(*deploy_modules),
                        ..Default::default()
                    })
                    .await?;
                Ok(results.into_iter().find(|r| &r.environment == environment))
            }
            CmOp::Await => Ok(None),
        }
    }

    fn answered_id(&self, answer: &Option<DeployResult>) -> Option<String> {
        answer.as_ref().and_then(|r| r.id).map(|i| i.to_string())
    }

    fn answered(
        &self,
        report: &mut Report<WorkspaceStatus>,
        step: &Step<CmOp>,
        answer: &Option<DeployResult>,
    ) -> Flow {
        let CmOp::Deploy {
            environment: env,
            generation,
            renamed,
            at,
            ..
        } = &step.op
        else {
            return Flow::Stop;
        };
        let id = answer.as_ref().and_then(|r| r.id);
        if let Some(error) = answer.as_ref().and_then(|r| r.error.as_ref()) {
            report.status.operation = Some(operation(id, "failed", *generation, *at));
            let message = failure_message(env, Some(error));
            report.readiness = Readiness::not_ready(Reason::DeployFailed, message.clone());
            report.sync = SyncState::Stalled {
                reason: Reason::DeployFailed,
                message,
            };
            report.requeue_after = None;
            return Flow::Stop;
        }
        let state = answer
            .as_ref()
            .map(|r| r.status.as_str().to_string())
            .unwrap_or_else(|| "new".into());
        report.status.operation = Some(operation(id, &state, *generation, *at));
        let renamed = if *renamed {
            format!(" (branch name corrected to {env})")
        } else {
            String::new()
        };
        report.notes.push(Note::normal(
            Reason::DeployQueued,
            "Deploy",
            format!(
                "queued deploy {} of environment {env}{renamed}",
                id.map(|i| i.to_string()).unwrap_or_default()
            ),
        ));
        let progress = deploying(
            report.status.clone(),
            format!("deploy of environment {env} queued"),
            Vec::new(),
        );
        report.readiness = progress.readiness;
        report.sync = progress.sync;
        report.requeue_after = progress.requeue_after;
        // What follows is the await step, which later reconciles do.
        Flow::Stop
    }
}

#[async_trait]
impl WorkspaceDriver for CodeManager {
    async fn reconcile(
        &self,
        request: &WorkspaceRequest<'_>,
        guard: &dyn CreateGuard,
    ) -> Result<Report<WorkspaceStatus>, ReconcileError> {
        plan::reconcile(self, request, request.mode, guard).await
    }

    async fn delete(&self, request: &WorkspaceRequest<'_>) -> Result<Cleanup, ReconcileError> {
        crate::core::deletion::delete(self, request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::WorkspaceSpec;
    use crate::core::plan::{table, Hold};
    use crate::core::reconciler::Mode;
    use crate::platform::codemanager::wire::Deployed;

    /// One row of a plan table: the observation and request, and the steps expected as
    /// (action, object kind, object id as shown, drift, changed fields).
    struct Row {
        case: &'static str,
        spec: serde_json::Value,
        previous: WorkspaceStatus,
        generation: i64,
        requested: bool,
        deployed: Option<&'static str>,
        in_flight: Option<DeployState>,
        steps: Vec<table::Row<'static>>,
        reason: Reason,
    }

    fn spec(extra: serde_json::Value) -> WorkspaceSpec {
        let mut base = serde_json::json!({
            "providerRef": {"name": "pe"},
            "source": {"repository": "git@example.com:control.git", "branch": "production"}
        });
        if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                if k == "source" {
                    for (sk, sv) in v.as_object().unwrap() {
                        b["source"][sk] = sv.clone();
                    }
                } else {
                    b.insert(k.clone(), v.clone());
                }
            }
        }
        serde_json::from_value(base).unwrap()
    }

    fn deploys(deployed: Option<&str>) -> DeploysStatus {
        DeploysStatus {
            deployed: deployed
                .map(|sig| Deployed {
                    environment: "production".into(),
                    date: "2026-12-01T00:00:00Z".into(),
                    deploy_signature: sig.into(),
                })
                .into_iter()
                .collect(),
            ..Default::default()
        }
    }

    fn status(op: Option<OperationStatus>, observed_generation: Option<i64>) -> WorkspaceStatus {
        WorkspaceStatus {
            operation: op,
            observed_generation,
            ..Default::default()
        }
    }

    fn in_flight_op(id: &str, deadline: Timestamp) -> OperationStatus {
        OperationStatus {
            id: Some(id.into()),
            deadline: Some(deadline.to_string()),
            ..op("queued", 1)
        }
    }

    fn request<'a>(
        spec: &'a WorkspaceSpec,
        previous: &'a WorkspaceStatus,
        generation: i64,
        mode: Mode,
    ) -> WorkspaceRequest<'a> {
        WorkspaceRequest {
            key: "team/shop".into(),
            external_name: "team-shop".into(),
            spec,
            env: Default::default(),
            previous,
            generation,
            observed_generation: previous.observed_generation,
            mode: mode.governed_by(spec.management_policy),
            create_pending: false,
            poll_interval: None,
        }
    }

    fn plan_of(row: &Row, at: Timestamp, hold: Option<Hold>) -> Planned<CmOp, WorkspaceStatus> {
        let spec = spec(row.spec.clone());
        let mode = Mode {
            hold,
            requested: row.requested,
        };
        let request = request(&spec, &row.previous, row.generation, mode);
        let observed = Observed {
            deploys: deploys(row.deployed),
            in_flight: row.in_flight.clone(),
            at,
        };
        plan_workspace(&request, &observed).unwrap()
    }

    #[test]
    fn plan_table() {
        use StepAction::{Await, Start};
        let at: Timestamp = "2026-12-05T12:00:00Z".parse().unwrap();
        let later = at + SignedDuration::from_mins(5);
        let earlier = at - SignedDuration::from_mins(1);
        let rev = "status.deployedRevision";
        let deploy_and_await = || {
            vec![
                (Start, "environment", "production", false, vec![rev]),
                (Await, "deploy", "<step 1>", false, vec![]),
            ]
        };
        let rows = vec![
            Row {
                case: "create: a new Workspace deploys its environment, then follows the deploy",
                spec: serde_json::json!({}),
                previous: WorkspaceStatus::default(),
                generation: 1,
                requested: false,
                deployed: None,
                in_flight: None,
                steps: deploy_and_await(),
                reason: Reason::NotDeployed,
            },
            Row {
                case: "spec update: a new generation deploys again",
                spec: serde_json::json!({"source": {"commit": "bbb"}}),
                previous: status(Some(op("synced", 1)), Some(1)),
                generation: 2,
                requested: false,
                deployed: Some("aaa"),
                in_flight: None,
                steps: deploy_and_await(),
                reason: Reason::RevisionMismatch,
            },
            Row {
                case: "drift: the environment vanished while the spec stayed",
                spec: serde_json::json!({}),
                previous: status(Some(op("synced", 1)), Some(1)),
                generation: 1,
                requested: false,
                deployed: None,
                in_flight: None,
                steps: vec![
                    (Start, "environment", "production", true, vec![rev]),
                    (Await, "deploy", "<step 1>", false, vec![]),
                ],
                reason: Reason::NotDeployed,
            },
            Row {
                case: "adoption: an environment deployed by hand is deployed once to the spec",
                spec: serde_json::json!({}),
                previous: WorkspaceStatus::default(),
                generation: 1,
                requested: false,
                deployed: Some("aaa"),
                in_flight: None,
                steps: deploy_and_await(),
                reason: Reason::Deployed,
            },
            Row {
                case: "in sync: nothing to do",
                spec: serde_json::json!({}),
                previous: status(Some(op("synced", 1)), Some(1)),
                generation: 1,
                requested: false,
                deployed: Some("aaa"),
                in_flight: None,
                steps: vec![],
                reason: Reason::Deployed,
            },
            Row {
                case: "requested: a reconcile request deploys again",
                spec: serde_json::json!({}),
                previous: status(Some(op("synced", 1)), Some(1)),
                generation: 1,
                requested: true,
                deployed: Some("aaa"),
                in_flight: None,
                steps: deploy_and_await(),
                reason: Reason::Deployed,
            },
            Row {
                case: "long operation in flight: only the await step, with the time left",
                spec: serde_json::json!({}),
                previous: status(Some(in_flight_op("42", later)), Some(1)),
                generation: 1,
                requested: false,
                deployed: None,
                in_flight: Some(DeployState::Deploying),
                steps: vec![(Await, "deploy", "42", false, vec![])],
                reason: Reason::Deploying,
            },
            Row {
                case: "failed long operation: no step, Stalled",
                spec: serde_json::json!({}),
                previous: status(Some(in_flight_op("42", later)), Some(1)),
                generation: 1,
                requested: false,
                deployed: None,
                in_flight: Some(DeployState::Failed),
                steps: vec![],
                reason: Reason::DeployFailed,
            },
            Row {
                case: "long operation past its deadline: no step, Stalled",
                spec: serde_json::json!({}),
                previous: status(Some(in_flight_op("42", earlier)), Some(1)),
                generation: 1,
                requested: false,
                deployed: None,
                in_flight: Some(DeployState::Deploying),
                steps: vec![],
                reason: Reason::DeployTimeout,
            },
            Row {
                case: "a failed deploy of this generation is not retried unasked",
                spec: serde_json::json!({}),
                previous: status(Some(op("failed", 1)), Some(1)),
                generation: 1,
                requested: false,
                deployed: None,
                in_flight: None,
                steps: vec![],
                reason: Reason::DeployFailed,
            },
        ];
        for row in &rows {
            let planned = plan_of(row, at, None);
            table::assert_steps(&planned.plan, &row.steps, row.case);
            assert_eq!(planned.report.readiness.reason, row.reason, "{}", row.case);
        }
        // The time left on a deploy in flight is its deadline.
        let in_flight = plan_of(&rows[6], at, None);
        assert_eq!(
            in_flight.plan.steps[0].deadline,
            Some(Duration::from_secs(300))
        );
        // A spec update shows the deployed commit going to the one the spec names.
        let update = plan_of(&rows[1], at, None);
        assert_eq!(
            update.plan.steps[0].changes,
            vec![Change::new(rev, Some("aaa".into()), Some("bbb".into()))]
        );
    }

    /// Observe: the funnel shows and sends nothing; status reports the environment as it is.
    #[tokio::test]
    async fn an_observed_environment_gets_an_empty_plan_and_is_reported() {
        struct NoGuard;
        #[async_trait]
        impl CreateGuard for NoGuard {
            async fn before_create(&self) -> Result<(), ReconcileError> {
                panic!("no create on Code Manager")
            }
            async fn created(&self, _: &str) -> Result<(), ReconcileError> {
                panic!("no create on Code Manager")
            }
            async fn save_operation(&self, _: &OperationStatus) -> Result<(), ReconcileError> {
                Ok(())
            }
        }
        let row = Row {
            case: "observe",
            spec: serde_json::json!({"managementPolicy": "Observe"}),
            previous: WorkspaceStatus::default(),
            generation: 1,
            requested: false,
            deployed: Some("aaa"),
            in_flight: None,
            steps: vec![],
            reason: Reason::Deployed,
        };
        let at = Timestamp::now();
        let planned = plan_of(&row, at, None);
        // Never called: a held plan sends nothing.
        let client =
            super::super::client::tests::client("https://pe.invalid:8170/code-manager", "token");
        let mode = Mode {
            hold: Some(Hold::Observe),
            requested: false,
        };
        let report = plan::funnel::<WorkspaceRequest<'_>, _, _>(&client, planned, mode, &NoGuard)
            .await
            .unwrap();
        assert!(report.plan.is_empty());
        assert_eq!(report.sync, SyncState::Observing);
        assert_eq!(report.status.deployed_revision.as_deref(), Some("aaa"));
    }

    #[test]
    fn deleting_plans_nothing_and_says_why() {
        let spec = spec(serde_json::json!({}));
        let previous = WorkspaceStatus::default();
        let Deletion { plan, left } = deletion(&request(&spec, &previous, 1, Mode::SEND)).unwrap();
        table::assert_steps(&plan, &[], "Code Manager cannot remove an environment");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].reason, Reason::NotDeletedAtPlatform);
        assert!(left[0].message.contains("production"));
    }

    fn op(state: &str, generation: i64) -> OperationStatus {
        OperationStatus {
            kind: DEPLOY.into(),
            state: state.into(),
            generation: Some(generation),
            ..Default::default()
        }
    }

    #[test]
    fn a_generation_is_deployed_once() {
        assert_eq!(next_step(None, 1, false, false), Next::Deploy);
        assert_eq!(
            next_step(None, 1, false, true),
            Next::Deploy,
            "first sight of a Workspace deploys"
        );
        assert_eq!(
            next_step(Some(&op("queued", 1)), 1, false, false),
            Next::Wait
        );
        assert_eq!(
            next_step(Some(&op("deploying", 1)), 2, true, false),
            Next::Wait,
            "never two at once"
        );
        assert_eq!(
            next_step(Some(&op("synced", 1)), 1, false, true),
            Next::Done
        );
        assert_eq!(
            next_step(Some(&op("synced", 1)), 2, false, true),
            Next::Deploy,
            "spec changed"
        );
        assert_eq!(
            next_step(Some(&op("synced", 1)), 1, true, true),
            Next::Deploy,
            "reconcile requested"
        );
        assert_eq!(
            next_step(Some(&op("synced", 1)), 1, false, false),
            Next::Deploy,
            "missing from the deployed set"
        );
        assert_eq!(
            next_step(Some(&op("failed", 1)), 1, false, false),
            Next::Done,
            "a failure waits for a change"
        );
        assert_eq!(
            next_step(Some(&op("failed", 1)), 1, true, false),
            Next::Deploy
        );
    }

    #[test]
    fn file_sync_shows_storage_and_each_compiler() {
        use super::super::client::{Deployed, FileSyncClient};
        let d = |sig: &str| Deployed {
            environment: "production".into(),
            date: "2026-01-01".into(),
            deploy_signature: sig.into(),
        };
        let mut status = DeploysStatus {
            deployed: vec![d("new")],
            ..Default::default()
        };
        status.clients.insert(
            "a.example".into(),
            FileSyncClient {
                deployed: vec![d("new")],
                ..Default::default()
            },
        );
        status.clients.insert(
            "b.example".into(),
            FileSyncClient {
                deployed: vec![d("old")],
                ..Default::default()
            },
        );
        let stages = file_sync_stages(&status, "production");
        let states: Vec<(&str, &str)> = stages
            .iter()
            .map(|s| (s.name.as_str(), s.state.as_str()))
            .collect();
        assert_eq!(
            states,
            vec![
                ("file-sync-storage", "deployed"),
                ("file-sync a.example", "synced"),
                ("file-sync b.example", "syncing")
            ]
        );
        assert_eq!(file_sync_stages(&status, "staging")[0].state, "absent");
    }

    #[test]
    fn commits_match_by_prefix() {
        assert!(commit_matches("abc1234", "ABC1234def"));
        assert!(!commit_matches("abc1235", "abc1234def"));
        assert!(!commit_matches("", "abc"));
    }
}
