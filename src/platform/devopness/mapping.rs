//! Workspace on Devopness: an application in an environment, its variables, and deployments
//! tracked through their actions.
//!
//! A deploy is never triggered twice for one generation: before calling `deploy`, bosun saves
//! `status.operation` with the id of the application's latest deployment at that moment. If the
//! operator dies before it learns the new action id, the next reconcile sees a newer latest
//! deployment and takes it as its own instead of deploying again.

use super::client::{
    ActionStatus, Application, CreateApplication, CreateVariable, Deleted, DeployApplication,
    DeploymentType, Devopness, SourceType, UpdateVariable, Variable,
};
use crate::api::{GitRef, OperationStatus, WorkspaceStatus};
use crate::core::conditions::Readiness;
use crate::core::deletion::{self, Deletion, DeletionSeam};
use crate::core::drivers::{env_fingerprint, CreateGuard, WorkspaceDriver, WorkspaceRequest};
use crate::core::error::ReconcileError;
use crate::core::locate::{locate, place, Located, Placement, Record, Words};
use crate::core::plan::{
    self, Change, Flow, ObjectId, Plan, PlanSeam, Planned, Step, StepAction, StepRef, Target,
};
use crate::core::reason::Reason;
use crate::core::reconciler::{Cleanup, Note, Report};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::time::Duration;

/// How often an action in flight is looked at.
pub const ACTION_POLL: Duration = Duration::from_secs(3);
/// `status.operation.kind` of a deployment.
pub const DEPLOY: &str = "deploy";
/// `status.operation.state` while the deploy call may or may not have reached the platform.
pub const REQUESTING: &str = "requesting";

/// Variable changes to make so the application holds exactly the spec's variables (pure).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VariablePlan {
    pub create: Vec<CreateVariable>,
    pub update: Vec<UpdateVariable>,
    pub delete: Vec<i64>,
}

impl VariablePlan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// Plans variables. Secret-backed values are hidden at the platform, which then never shows
/// them again, so they are rewritten only when `secrets_changed` says their values moved.
pub fn plan_variables(
    observed: &[Variable],
    desired: &BTreeMap<String, String>,
    secret_backed: &[String],
    secrets_changed: bool,
) -> VariablePlan {
    let mut plan = VariablePlan::default();
    let env_vars: Vec<&Variable> = observed
        .iter()
        .filter(|v| v.target.as_deref().unwrap_or("os-env-var") == "os-env-var")
        .collect();
    for (key, value) in desired {
        let hidden = secret_backed.contains(key);
        match env_vars.iter().find(|v| &v.key == key) {
            None => plan
                .create
                .push(CreateVariable::env(key.clone(), value.clone(), hidden)),
            Some(v) => {
                let differs = match &v.value {
                    Some(current) => current != value,
                    None => secrets_changed,
                };
                if differs || v.hidden != hidden {
                    plan.update.push(UpdateVariable {
                        id: v.id,
                        key: key.clone(),
                        value: value.clone(),
                        target: "os-env-var".into(),
                        variable_type: v.variable_type.clone().unwrap_or_else(|| "variable".into()),
                        hidden,
                        description: v.description.clone(),
                    });
                }
            }
        }
    }
    plan.delete = env_vars
        .iter()
        .filter(|v| !desired.contains_key(&v.key))
        .map(|v| v.id)
        .collect();
    plan
}

/// Devopness names repositories `owner/name`; a spec may give a clone URL (pure).
pub fn repository_slug(repository: &str) -> String {
    let trimmed = repository
        .trim()
        .trim_end_matches('/')
        .trim_end_matches(".git");
    let path = match trimmed.split_once("://") {
        Some((_, rest)) => rest.split_once('/').map(|(_, p)| p).unwrap_or(rest),
        // `git@github.com:owner/name`
        None => trimmed.split_once(':').map(|(_, p)| p).unwrap_or(trimmed),
    };
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        [.., owner, name] => format!("{owner}/{name}"),
        _ => path.to_string(),
    }
}

/// The deploy source for a ref.
pub fn source_of(git_ref: GitRef<'_>) -> (SourceType, String) {
    match git_ref {
        GitRef::Branch(b) => (SourceType::Branch, b.to_string()),
        GitRef::Tag(t) => (SourceType::Tag, t.to_string()),
        GitRef::Commit(c) => (SourceType::Commit, c.to_string()),
    }
}

/// Whether the latest deployment the platform reports is one bosun asked for and never
/// learned the id of (pure): it is newer than the latest one recorded before the call.
pub fn adopt_requested(op: &OperationStatus, app: &Application) -> Option<i64> {
    let recorded: i64 = op
        .id
        .as_deref()
        .and_then(|s| s.strip_prefix("after:"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    app.last_deployments
        .latest
        .as_ref()
        .map(|a| a.id)
        .filter(|id| *id > recorded)
}

/// Which kind of deployment brings the application to `desired` (pure). The same ref again
/// (a variable change, a requested reconcile) is a redeploy. A tag or commit deployed before
/// is a rollback, which reuses the kept build; a branch is always built again, because it may
/// have moved since.
pub fn deployment_type(
    desired: GitRef<'_>,
    current: Option<&str>,
    history: &[String],
) -> DeploymentType {
    let wanted = desired.to_string();
    if current == Some(wanted.as_str()) {
        DeploymentType::Redeploy
    } else if !matches!(desired, GitRef::Branch(_)) && history.contains(&wanted) {
        DeploymentType::Rollback
    } else {
        DeploymentType::Deploy
    }
}

/// The deployed-ref history after `deployed` went live: newest first, no repeats, at most
/// `keep` entries (pure).
pub fn remember(history: &[String], deployed: &str, keep: usize) -> Vec<String> {
    std::iter::once(deployed.to_string())
        .chain(history.iter().filter(|r| *r != deployed).cloned())
        .take(keep.clamp(1, 10))
        .collect()
}

fn in_flight(op: &OperationStatus) -> bool {
    op.kind == DEPLOY && !matches!(op.state.as_str(), "completed" | "failed" | "skipped")
}

fn progressing(
    status: WorkspaceStatus,
    notes: Vec<Note>,
    reason: Reason,
    message: String,
) -> Report<WorkspaceStatus> {
    Report::progressing(status, notes, reason, message, ACTION_POLL)
}

/// How many builds Devopness keeps (and so can roll back to) unless the application says.
const DEFAULT_KEPT_DEPLOYMENTS: usize = 5;

/// The application a Workspace creates (pure).
fn create_body(request: &WorkspaceRequest<'_>) -> Result<CreateApplication, ReconcileError> {
    let d = request.spec.devopness.clone().unwrap_or_default();
    let branch = match request.spec.source.git_ref() {
        GitRef::Branch(b) => b.to_string(),
        _ => "main".to_string(),
    };
    Ok(CreateApplication {
            name: request.external_name.clone(),
            programming_language: d.programming_language.unwrap_or_else(|| "html".into()),
            engine_version: d.engine_version.unwrap_or_else(|| "none".into()),
            framework: d.framework.unwrap_or_else(|| "none".into()),
            repository: repository_slug(&request.spec.source.repository),
            credential_id: d.credential_id.ok_or_else(|| {
                ReconcileError::user(Reason::CredentialRequired, "set spec.devopness.credentialId: the source-provider credential that reads the repository")
            })?,
            default_branch: branch,
            root_directory: d.root_directory,
            build_command: None,
            install_dependencies_command: None,
            deployments_keep: None,
            linked_resources: Vec::new(),
        })
}

/// The deployment `status.operation` follows, if any (pure): a deploy call that may have
/// gone out before a crash becomes the newer deployment the listing shows, or `unsent`.
fn followed(operation: Option<&OperationStatus>, app: &Application) -> Option<OperationStatus> {
    let op = operation.filter(|o| in_flight(o))?.clone();
    if op.state != REQUESTING {
        return Some(op);
    }
    Some(match adopt_requested(&op, app) {
        Some(id) => OperationStatus {
            id: Some(id.to_string()),
            state: "pending".into(),
            ..op
        },
        None => OperationStatus {
            state: "unsent".into(),
            ..op
        },
    })
}

/// The Devopness environment a Workspace lives in.
fn environment_of(
    devopness: &Devopness,
    request: &WorkspaceRequest<'_>,
) -> Result<i64, ReconcileError> {
    request
        .spec
        .devopness
        .as_ref()
        .and_then(|d| d.environment_id)
        .or(devopness.default_environment())
        .ok_or_else(|| {
            ReconcileError::user(
                Reason::EnvironmentRequired,
                "set spec.devopness.environmentId or the Provider's spec.defaults.environmentId",
            )
        })
}

/// What Devopness showed for one Workspace.
#[derive(Clone, Debug)]
pub struct Observed {
    pub environment: i64,
    /// The environment's applications (the shared listing, fresh after an uncertain call).
    pub applications: std::sync::Arc<Vec<Application>>,
    /// The state of the deployment in flight, where the listing could not tell (`None`:
    /// the action is gone), with the failure reason of a failed one.
    pub action: Option<Option<(ActionStatus, Option<String>)>>,
    /// The application's variables, when its per-object reads were due.
    pub variables: Option<Vec<Variable>>,
    /// The variables' Secret values moved since they were last checked.
    pub secrets_changed: bool,
    pub at: jiff::Timestamp,
}

/// The request a Devopness step carries.
#[derive(Clone, Debug, PartialEq)]
pub enum DvOp {
    Create {
        environment: i64,
        body: CreateApplication,
    },
    CreateVariable(CreateVariable),
    UpdateVariable(UpdateVariable),
    DeleteVariable(i64),
    Deploy {
        environment: i64,
        body: DeployApplication,
        /// `status.operation` once the action id is known (its id filled in then).
        operation: OperationStatus,
        /// What the Event says: `deployment`, `redeployment` or `rollback` of a ref.
        verb: &'static str,
        desired_ref: String,
        /// The Event for the variable steps before it, which it always follows.
        variables: Option<String>,
    },
    Await,
}

/// What Devopness answers a step with.
#[derive(Clone, Debug)]
pub enum DvAnswer {
    Created(Box<Application>),
    Deployed(i64),
    Done,
}

fn application(id: ObjectId) -> Target {
    Target {
        kind: "application",
        name: String::new(),
        id,
    }
}

/// The plan for one Workspace (pure): create the application if it is absent, set its
/// variables, deploy, and follow the deployment; or follow the one in flight.
pub fn plan_workspace(
    request: &WorkspaceRequest<'_>,
    observed: &Observed,
) -> Result<Planned<DvOp, WorkspaceStatus>, ReconcileError> {
    let env_id = observed.environment;
    let mut status = request.previous.clone();
    let mut notes = Vec::new();
    let mut plan = Plan::default();
    let mut adopt = None;

    let known: Option<i64> = request.known_id_as("a Devopness application id")?;
    let (within, by) = (
        format!("environment {env_id}"),
        format!("named {:?}", request.external_name),
    );
    let words = Words {
        kind: "Devopness application",
        within: &within,
        by: &by,
        renamable: true,
        extra: "delete",
    };
    // Observe reads a fresh listing whenever the shared one could mislead (see there).
    let placed = place(
        &observed.applications,
        request,
        known,
        &request.external_name,
        None::<()>,
        &words,
        Record {
            external_id: &mut status.external_id,
            notes: &mut notes,
            adopt: &mut adopt,
        },
    );
    let found = match plan::decided(placed)? {
        Placement::Found(object) => Some(object),
        Placement::Missing(msg) => {
            return Err(ReconcileError::user(Reason::ExternalObjectNotFound, msg));
        }
        Placement::Create { gone } => {
            if let Some(id) = gone {
                notes.push(Note::warning(
                    Reason::DriftCorrected,
                    "Create",
                    format!("application {id} was deleted at the platform; creating it again"),
                ));
                status.operation = None;
            }
            None
        }
    };

    let desired_ref = request.spec.source.git_ref().to_string();
    let secret_backed = request.spec.secret_backed_env();
    let target = match found {
        Some(app) => {
            // A deployment in flight (or possibly sent before a crash) is followed to its
            // end before anything else changes.
            if let Some(op) = followed(status.operation.as_ref(), app) {
                if op.state == "unsent" {
                    status.operation = None;
                } else if let Some(report) = follow(
                    request,
                    app,
                    op,
                    observed,
                    &mut status,
                    &mut notes,
                    &mut plan,
                ) {
                    return Ok(Planned {
                        plan,
                        report,
                        adopt,
                    });
                }
            }
            let mut t = application(ObjectId::Known(app.id.to_string()));
            t.name = app.name.clone();
            t
        }
        None => {
            let body = create_body(request)?;
            let mut t = application(ObjectId::New);
            t.name = body.name.clone();
            plan.push(Step {
                action: StepAction::Create,
                target: t.clone(),
                changes: vec![
                    Change::new("repository", None, Some(body.repository.clone())),
                    Change::new("defaultBranch", None, Some(body.default_branch.clone())),
                ],
                drift: false,
                summary: format!("create application {} in environment {env_id}", body.name),
                deadline: None,
                record: None,
                op: DvOp::Create {
                    environment: env_id,
                    body,
                },
            });
            status.source_ref = None;
            status.deployed_refs = Vec::new();
            status.operation = None;
            let mut t = application(ObjectId::FromStep(StepRef(0)));
            t.name = request.external_name.clone();
            t
        }
    };
    let app = found;

    // Variables, by name; hidden (Secret-backed) values are rewritten on a spec change.
    let (observed_vars, checked) = match (&observed.variables, app) {
        (Some(vars), _) => (vars.as_slice(), true),
        // A new application has none.
        (None, None) => (&[][..], true),
        (None, Some(_)) => (&[][..], false),
    };
    let secrets_changed = !request.is_drift() || observed.secrets_changed;
    let variables = if checked {
        plan_variables(observed_vars, &request.env, &secret_backed, secrets_changed)
    } else {
        VariablePlan::default()
    };
    let drift = request.is_drift() && app.is_some();
    let current = |key: &str| {
        observed_vars
            .iter()
            .find(|v| v.key == key)
            .map(|v| match &v.value {
                Some(value) => format!("{value:?}"),
                None => "(hidden)".to_string(),
            })
    };
    for v in &variables.create {
        let field = format!("spec.env[{}]", v.key);
        plan.push(Step {
            action: StepAction::Create,
            target: target.clone(),
            changes: vec![Change::new(
                &field,
                drift.then(|| "(removed)".to_string()),
                Some(plan::shown(&v.value, secret_backed.contains(&v.key))),
            )],
            drift,
            summary: format!("set variable {}", v.key),
            deadline: None,
            record: None,
            op: DvOp::CreateVariable(v.clone()),
        });
    }
    for v in &variables.update {
        let field = format!("spec.env[{}]", v.key);
        let from = current(&v.key);
        // A hidden value cannot be read back: rewriting it is a Secret change, not drift.
        let visible = from.as_deref().is_some_and(|f| f != "(hidden)");
        plan.push(Step {
            action: StepAction::Update,
            target: target.clone(),
            changes: vec![Change::new(
                &field,
                from,
                Some(plan::shown(&v.value, secret_backed.contains(&v.key))),
            )],
            drift: drift && visible,
            summary: format!("set variable {}", v.key),
            deadline: None,
            record: None,
            op: DvOp::UpdateVariable(v.clone()),
        });
    }
    for id in &variables.delete {
        let key = observed_vars
            .iter()
            .find(|v| v.id == *id)
            .map(|v| v.key.clone())
            .unwrap_or_default();
        plan.push(Step {
            action: StepAction::Delete,
            target: target.clone(),
            changes: vec![Change::new(
                &format!("spec.env[{key}]"),
                Some(if drift {
                    "(added)".into()
                } else {
                    current(&key).unwrap_or_default()
                }),
                Some("(not set)".into()),
            )],
            drift,
            summary: format!("remove variable {key}"),
            deadline: None,
            record: None,
            op: DvOp::DeleteVariable(*id),
        });
    }
    let vars_changed = !variables.is_empty();

    let failed_here = status
        .operation
        .as_ref()
        .is_some_and(|o| o.state == "failed" && o.generation == Some(request.generation));
    let report = |status: WorkspaceStatus, notes: Vec<Note>| {
        if failed_here && !request.mode.requested {
            let msg = "the last deployment of this generation failed; change the spec or set bosun.dev/reconcile-requested-at to retry".to_string();
            return Report::stalled(status, notes, Reason::DeployFailed, msg);
        }
        settled(request, app, &desired_ref, status, notes)
    };
    if failed_here && !request.mode.requested && !vars_changed {
        return Ok(Planned {
            plan,
            report: report(status, notes),
            adopt,
        });
    }
    let wants_deploy = status.source_ref.as_deref() != Some(desired_ref.as_str())
        || request.mode.requested
        || vars_changed;
    if wants_deploy {
        let latest = app
            .and_then(|a| a.last_deployments.latest.as_ref())
            .map(|a| a.id)
            .unwrap_or(0);
        let operation = OperationStatus {
            kind: DEPLOY.into(),
            id: Some(format!("after:{latest}")),
            state: REQUESTING.into(),
            generation: Some(request.generation),
            started_at: Some(observed.at.to_string()),
            deadline: None,
        };
        let deployment_type = deployment_type(
            request.spec.source.git_ref(),
            status.source_ref.as_deref(),
            &status.deployed_refs,
        );
        let (source_type, source_ref) = source_of(request.spec.source.git_ref());
        let d = request.spec.devopness.clone().unwrap_or_default();
        let verb = match deployment_type {
            DeploymentType::Deploy => "deployment",
            DeploymentType::Redeploy => "redeployment",
            DeploymentType::Rollback => "rollback",
        };
        let names: Vec<&str> = variables
            .create
            .iter()
            .map(|v| v.key.as_str())
            .chain(variables.update.iter().map(|v| v.key.as_str()))
            .collect();
        let variables_note = vars_changed.then(|| {
            format!(
                "set {} and removed {} variables: {}",
                names.len(),
                variables.delete.len(),
                names.join(", ")
            )
        });
        let deploy = plan.push(Step {
            action: StepAction::Start,
            target: target.clone(),
            changes: vec![Change::new(
                "status.sourceRef",
                status.source_ref.clone(),
                Some(desired_ref.clone()),
            )],
            drift: false,
            summary: format!("start a {verb} of {desired_ref}"),
            deadline: None,
            record: Some(operation.clone()),
            op: DvOp::Deploy {
                environment: env_id,
                body: DeployApplication {
                    deployment_type,
                    source_type: Some(source_type),
                    source_ref: Some(source_ref),
                    pipeline_id: d.pipeline_id,
                    servers: d.servers,
                },
                operation,
                verb,
                desired_ref: desired_ref.clone(),
                variables: variables_note,
            },
        });
        plan.push(await_action(ObjectId::FromStep(deploy), &desired_ref));
    }
    Ok(Planned {
        plan,
        report: report(status, notes),
        adopt,
    })
}

fn await_action(id: ObjectId, desired_ref: &str) -> Step<DvOp> {
    Step {
        action: StepAction::Await,
        target: Target {
            kind: "action",
            name: String::new(),
            id,
        },
        changes: Vec::new(),
        drift: false,
        summary: format!("follow the deployment of {desired_ref} until it completes"),
        deadline: None,
        record: None,
        op: DvOp::Await,
    }
}

/// The status when nothing is sent (pure).
fn settled(
    request: &WorkspaceRequest<'_>,
    app: Option<&Application>,
    desired_ref: &str,
    status: WorkspaceStatus,
    notes: Vec<Note>,
) -> Report<WorkspaceStatus> {
    let which = app
        .map(|a| format!("application {}", a.id))
        .unwrap_or_else(|| "the new application".into());
    let ready = status.source_ref.as_deref() == Some(desired_ref);
    let readiness = if ready {
        Readiness::ready(Reason::Deployed, format!("{which} runs {desired_ref}"))
    } else {
        Readiness::not_ready(
            Reason::NotDeployed,
            format!("{which} does not run {desired_ref}"),
        )
    };
    Report::settled(status, notes, readiness, request.mode.observing())
}

/// Follows a deployment in flight (pure, from the listing and the action read in observe).
/// Returns a report while it is still running or when it failed.
fn follow(
    request: &WorkspaceRequest<'_>,
    app: &Application,
    op: OperationStatus,
    observed: &Observed,
    status: &mut WorkspaceStatus,
    notes: &mut Vec<Note>,
    plan: &mut Plan<DvOp>,
) -> Option<Report<WorkspaceStatus>> {
    let desired_ref = request.spec.source.git_ref().to_string();
    let id = op.id.as_deref().and_then(|s| s.parse::<i64>().ok())?;
    let listed = listed_state(app, id);
    let state = match (listed, &observed.action) {
        (Some(ActionStatus::Failed) | None, Some(read)) => read.clone(),
        (Some(other), _) => Some((other, None)),
        (None, None) => None,
    };
    let Some((state, reason)) = state else {
        status.operation = None;
        return None;
    };
    match state {
        ActionStatus::Completed => {
            let keep = app
                .deployments_keep
                .and_then(|k| usize::try_from(k).ok())
                .unwrap_or(DEFAULT_KEPT_DEPLOYMENTS);
            status.deployed_refs = remember(&status.deployed_refs, &desired_ref, keep);
            status.operation = Some(OperationStatus {
                state: "completed".into(),
                ..op
            });
            status.source_ref = Some(desired_ref.clone());
            status.deployed_revision = Some(source_of(request.spec.source.git_ref()).1);
            notes.push(Note::normal(
                Reason::Deployed,
                "Deploy",
                format!(
                    "action {id} deployed {desired_ref} to application {}",
                    app.id
                ),
            ));
            None
        }
        ActionStatus::Failed => {
            let why = reason.unwrap_or_else(|| "failed".into());
            status.operation = Some(OperationStatus {
                state: "failed".into(),
                ..op
            });
            let msg = format!("deployment action {id} failed: {why}");
            Some(Report::stalled(
                status.clone(),
                std::mem::take(notes),
                Reason::DeployFailed,
                msg,
            ))
        }
        other => {
            status.operation = Some(OperationStatus {
                state: other.as_str().to_string(),
                ..op
            });
            plan.push(await_action(ObjectId::Known(id.to_string()), &desired_ref));
            Some(progressing(
                status.clone(),
                std::mem::take(notes),
                Reason::Deploying,
                format!("deployment action {id} is {}", other.as_str()),
            ))
        }
    }
}

/// The state of action `id` as the application listing shows it, when it is the latest.
fn listed_state(app: &Application, id: i64) -> Option<ActionStatus> {
    app.last_deployments
        .latest
        .as_ref()
        .filter(|a| a.id == id)
        .and_then(|a| a.status.clone())
}

/// The application id a step acts on: known, or from the create step's answer.
fn application_id(target: &Target, answers: &[DvAnswer]) -> Result<i64, ReconcileError> {
    plan::resolve_id("an application", &target.id, answers, |a| match a {
        DvAnswer::Created(app) => Some(app.id.to_string()),
        _ => None,
    })
}

#[async_trait]
impl<'r> PlanSeam<WorkspaceRequest<'r>, WorkspaceStatus> for Devopness {
    type Answer = DvAnswer;
    type Op = DvOp;
    type Observation = Observed;

    async fn observe(&self, request: &WorkspaceRequest<'r>) -> Result<Observed, ReconcileError> {
        let environment = environment_of(self, request)?;
        let at = jiff::Timestamp::now();
        // Whether an earlier create or deploy may have gone through unseen: only a fresh
        // listing can tell, never one shared from before that call.
        let unsure = request.create_pending
            || request
                .previous
                .operation
                .as_ref()
                .is_some_and(|o| o.state == REQUESTING);
        if unsure {
            self.forget_applications(environment).await;
        }
        let mut applications = self.applications_of(environment).await?;
        let known = request.known_id().and_then(|s| s.parse::<i64>().ok());
        // A known application missing from a shared listing may only be newer than it: look
        // again in a fresh one before the plan concludes it is gone and creates it again.
        if !unsure && known.is_some_and(|id| !applications.iter().any(|a| a.id == id)) {
            self.forget_applications(environment).await;
            applications = self.applications_of(environment).await?;
        }
        let adopt = request.spec.adopt_by_name || request.mode.observing();
        let app = match locate(
            &applications,
            known,
            &request.external_name,
            request.create_pending,
            adopt,
        ) {
            Located::Found(app) => Some(app.clone()),
            _ => None,
        };
        let mut observed = Observed {
            environment,
            applications: Default::default(),
            action: None,
            variables: None,
            secrets_changed: false,
            at,
        };
        if let Some(app) = &app {
            // The action itself is read only when the listing cannot say (another deployment
            // came after it) or to learn why it failed.
            let mut skip_variables = false;
            if let Some(op) = followed(request.previous.operation.as_ref(), app) {
                if let Some(id) = op.id.as_deref().and_then(|s| s.parse::<i64>().ok()) {
                    let state = match listed_state(app, id) {
                        listed @ (Some(ActionStatus::Failed) | None) => {
                            let action = self.get_action(id).await?;
                            let state = action.as_ref().map(|a| a.status.clone()).or(listed);
                            observed.action =
                                Some(action.map(|a| (a.status.clone(), a.failure_reason())));
                            state
                        }
                        listed => listed,
                    };
                    skip_variables = match state {
                        // A deployment still running or failed ends this reconcile; one that
                        // completed for this generation carried its variables.
                        Some(ActionStatus::Completed) => op.generation == Some(request.generation),
                        Some(_) => true,
                        None => false,
                    };
                }
            }
            // Variables are read per application, so only when something may have changed
            // (the spec, a Secret, a request), or every deep-check interval.
            let env_print = env_fingerprint(&request.env);
            if !skip_variables
                && self
                    .deep_checks
                    .due(request, request.previous, app.id, env_print)
            {
                observed.variables = Some(self.list_application_variables(app.id).await?);
                observed.secrets_changed = self
                    .deep_checks
                    .last(app.id)
                    .is_some_and(|(_, print)| print != env_print);
            }
        }
        observed.applications = applications;
        Ok(observed)
    }

    fn plan(
        &self,
        request: &WorkspaceRequest<'r>,
        observed: &Observed,
    ) -> Result<Planned<DvOp, WorkspaceStatus>, ReconcileError> {
        plan_workspace(request, observed)
    }

    async fn execute(
        &self,
        step: &Step<DvOp>,
        answers: &[DvAnswer],
    ) -> Result<DvAnswer, ReconcileError> {
        Ok(match &step.op {
            DvOp::Create { environment, body } => {
                let app = self.create_application(*environment, body).await?;
                self.forget_applications(*environment).await;
                DvAnswer::Created(Box::new(app))
            }
            DvOp::CreateVariable(v) => {
                let app = application_id(&step.target, answers)?;
                self.create_application_variable(app, v).await?;
                DvAnswer::Done
            }
            DvOp::UpdateVariable(v) => {
                self.update_variable(v).await?;
                DvAnswer::Done
            }
            DvOp::DeleteVariable(id) => {
                self.delete_variable(*id).await?;
                DvAnswer::Done
            }
            DvOp::Deploy {
                environment, body, ..
            } => {
                let app = application_id(&step.target, answers)?;
                let action = self.deploy_application(app, body).await?;
                self.forget_applications(*environment).await;
                DvAnswer::Deployed(action)
            }
            DvOp::Await => DvAnswer::Done,
        })
    }

    fn answered_id(&self, answer: &DvAnswer) -> Option<String> {
        match answer {
            DvAnswer::Created(app) => Some(app.id.to_string()),
            DvAnswer::Deployed(action) => Some(action.to_string()),
            DvAnswer::Done => None,
        }
    }

    fn answered(
        &self,
        report: &mut Report<WorkspaceStatus>,
        step: &Step<DvOp>,
        answer: &DvAnswer,
    ) -> Flow {
        match (&step.op, answer) {
            (DvOp::Create { environment, .. }, DvAnswer::Created(app)) => {
                report.notes.push(Note::normal(
                    Reason::Created,
                    "Create",
                    format!(
                        "created Devopness application {} in environment {environment}",
                        app.id
                    ),
                ));
                report.status.external_id = Some(app.id.to_string());
                Flow::Continue
            }
            (
                DvOp::Deploy {
                    operation,
                    verb,
                    desired_ref,
                    variables,
                    ..
                },
                DvAnswer::Deployed(action),
            ) => {
                if let Some(message) = variables {
                    report.notes.push(Note::normal(
                        Reason::VariablesUpdated,
                        "Update",
                        message.clone(),
                    ));
                }
                report.status.operation = Some(OperationStatus {
                    id: Some(action.to_string()),
                    state: "pending".into(),
                    ..operation.clone()
                });
                report.notes.push(Note::normal(
                    Reason::DeployStarted,
                    "Deploy",
                    format!("started {verb} action {action} of {desired_ref}"),
                ));
                let progress = progressing(
                    report.status.clone(),
                    Vec::new(),
                    Reason::Deploying,
                    format!("{verb} action {action} started"),
                );
                report.readiness = progress.readiness;
                report.sync = progress.sync;
                report.requeue_after = progress.requeue_after;
                Flow::Stop
            }
            _ => Flow::Continue,
        }
    }
}

#[async_trait]
impl WorkspaceDriver for Devopness {
    async fn reconcile(
        &self,
        request: &WorkspaceRequest<'_>,
        guard: &dyn CreateGuard,
    ) -> Result<Report<WorkspaceStatus>, ReconcileError> {
        let observed = self.observe(request).await?;
        let planned = plan_workspace(request, &observed)?;
        let creates = planned
            .plan
            .steps
            .first()
            .is_some_and(|s| s.action == StepAction::Create);
        // A new application's variables are all set by the plan that creates it.
        let checked = observed.variables.is_some() || (creates && request.mode.hold.is_none());
        let report = plan::funnel(self, planned, request.mode, guard).await?;
        if checked {
            if let Some(id) = report
                .status
                .external_id
                .as_deref()
                .and_then(|s| s.parse().ok())
            {
                self.deep_checks.done(id, env_fingerprint(&request.env));
            }
        }
        Ok(report)
    }

    async fn delete(&self, request: &WorkspaceRequest<'_>) -> Result<Cleanup, ReconcileError> {
        deletion::delete(self, request).await
    }
}

/// Deleting a Workspace (pure): the application bosun knows goes; Devopness removes its
/// deployments with it. Nothing to read first: a delete of one already gone is a 404.
pub fn plan_app_deletion(request: &WorkspaceRequest<'_>) -> Deletion<i64> {
    let mut plan = Plan::default();
    let known = request.known_id().and_then(|s| s.parse::<i64>().ok());
    if let Some(id) = known {
        let target = Target {
            kind: "application",
            name: request.external_name.clone(),
            id: ObjectId::Known(id.to_string()),
        };
        let summary = format!("delete Devopness application {id}");
        plan.push(Step::plain(StepAction::Delete, target, summary, id));
    }
    Deletion {
        plan,
        left: Vec::new(),
    }
}

#[async_trait]
impl<'r> DeletionSeam<WorkspaceRequest<'r>> for Devopness {
    type Remains = ();
    type Op = i64;
    type Answer = Deleted;

    async fn observe_remains(&self, _: &WorkspaceRequest<'r>) -> Result<(), ReconcileError> {
        Ok(())
    }

    fn plan_deletion(
        &self,
        request: &WorkspaceRequest<'r>,
        _: &(),
    ) -> Result<Deletion<i64>, ReconcileError> {
        Ok(plan_app_deletion(request))
    }

    async fn execute_deletion(&self, step: &Step<i64>) -> Result<Deleted, ReconcileError> {
        Ok(self.delete_application(step.op).await?)
    }

    fn removed(&self, step: &Step<i64>, answer: &Deleted) -> Note {
        let id = step.op;
        let message = match answer {
            Deleted::Done { action_id } => format!(
                "deleted Devopness application {id} (action {})",
                action_id.map(|a| a.to_string()).unwrap_or_default()
            ),
            Deleted::AlreadyGone => format!("Devopness application {id} is gone"),
        };
        Note::normal(Reason::Deleted, "Delete", message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::WorkspaceSpec;
    use crate::core::conditions::SyncState;
    use crate::core::plan::table;
    use crate::core::reconciler::Mode;

    fn app(id: i64, name: &str, latest: Option<(i64, &str)>) -> Application {
        serde_json::from_value(serde_json::json!({
            "id": id, "name": name,
            "last_deployments": {"latest": latest.map(|(id, s)| serde_json::json!({"id": id, "status": s}))}
        }))
        .unwrap()
    }

    fn ws_spec(extra: serde_json::Value) -> WorkspaceSpec {
        let mut base = serde_json::json!({
            "providerRef": {"name": "devopness"},
            "source": {"repository": "https://github.com/acme/shop.git", "branch": "main"},
            "env": [{"name": "APP_ENV", "value": "production"}],
            "devopness": {"credentialId": 1}
        });
        if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(base).unwrap()
    }

    fn synced(source_ref: &str, generation: i64) -> WorkspaceStatus {
        WorkspaceStatus {
            external_id: Some("7".into()),
            source_ref: Some(source_ref.into()),
            observed_generation: Some(generation),
            operation: Some(OperationStatus {
                kind: DEPLOY.into(),
                id: Some("12".into()),
                state: "completed".into(),
                generation: Some(generation),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// One row of the plan table: what Devopness shows and what the spec asks, and the steps
    /// expected as (action, object kind, object id as shown, drift, changed fields).
    struct Row {
        case: &'static str,
        spec: serde_json::Value,
        env: &'static [(&'static str, &'static str)],
        previous: WorkspaceStatus,
        generation: i64,
        requested: bool,
        applications: Vec<Application>,
        action: Option<Option<(ActionStatus, Option<String>)>>,
        variables: Option<Vec<Variable>>,
        steps: Vec<table::Row<'static>>,
        reason: Reason,
    }

    fn plan_of(row: &Row) -> Result<Planned<DvOp, WorkspaceStatus>, ReconcileError> {
        let spec = ws_spec(row.spec.clone());
        let request = WorkspaceRequest {
            key: "team/shop".into(),
            external_name: "team-shop".into(),
            spec: &spec,
            env: row
                .env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            previous: &row.previous,
            generation: row.generation,
            observed_generation: row.previous.observed_generation,
            mode: Mode {
                hold: None,
                requested: row.requested,
            }
            .governed_by(spec.management_policy),
            create_pending: false,
            poll_interval: None,
        };
        let observed = Observed {
            environment: 1,
            applications: std::sync::Arc::new(row.applications.clone()),
            action: row.action.clone(),
            variables: row.variables.clone(),
            secrets_changed: false,
            at: "2026-12-05T12:00:00Z".parse().unwrap(),
        };
        plan_workspace(&request, &observed)
    }

    #[test]
    fn deletion_plan_table() {
        use StepAction::Delete;
        let spec = ws_spec(serde_json::json!({}));
        let adopted = ws_spec(serde_json::json!({"externalId": "9"}));
        let created = synced("main", 1);
        let none = WorkspaceStatus::default();
        let rows: Vec<(&str, &WorkspaceSpec, &WorkspaceStatus, Vec<table::Row<'_>>)> = vec![
            ("never created", &spec, &none, vec![]),
            (
                "the application bosun created",
                &spec,
                &created,
                vec![(Delete, "application", "7", false, vec![])],
            ),
            (
                "an adopted application",
                &adopted,
                &none,
                vec![(Delete, "application", "9", false, vec![])],
            ),
        ];
        for (case, spec, previous, want) in rows {
            let request = WorkspaceRequest::for_test(spec, previous);
            table::assert_steps(&plan_app_deletion(&request).plan, &want, case);
        }
    }

    #[test]
    fn plan_table() {
        use StepAction::{Await, Create, Start, Update};
        let env = &[("APP_ENV", "production")][..];
        let prod = || Some(vec![var(3, "APP_ENV", Some("production"), false)]);
        let deploy_and_await = |first: usize| {
            // Steps are numbered from 1 as people read them.
            let step = ["<step 1>", "<step 2>", "<step 3>"][first];
            vec![
                (Start, "application", "7", false, vec!["status.sourceRef"]),
                (Await, "action", step, false, vec![]),
            ]
        };
        let rows = vec![
            Row {
                case: "create: the application, its variables, a deployment and its tracking, as one plan",
                spec: serde_json::json!({}),
                env,
                previous: WorkspaceStatus::default(),
                generation: 1,
                requested: false,
                applications: vec![],
                action: None,
                variables: None,
                steps: vec![
                    (Create, "application", "<new>", false, vec!["repository", "defaultBranch"]),
                    (Create, "application", "<step 1>", false, vec!["spec.env[APP_ENV]"]),
                    (Start, "application", "<step 1>", false, vec!["status.sourceRef"]),
                    (Await, "action", "<step 3>", false, vec![]),
                ],
                reason: Reason::NotDeployed,
            },
            Row {
                case: "spec update: a new ref is deployed",
                spec: serde_json::json!({"source": {"repository": "https://github.com/acme/shop.git", "branch": "release"}}),
                env,
                previous: synced("branch:main", 1),
                generation: 2,
                requested: false,
                applications: vec![app(7, "team-shop", Some((12, "completed")))],
                action: None,
                variables: prod(),
                steps: deploy_and_await(0),
                reason: Reason::NotDeployed,
            },
            Row {
                case: "drift: a variable changed by hand is set back, then deployed",
                spec: serde_json::json!({}),
                env,
                previous: synced("branch:main", 1),
                generation: 1,
                requested: false,
                applications: vec![app(7, "team-shop", Some((12, "completed")))],
                action: None,
                variables: Some(vec![var(3, "APP_ENV", Some("debug"), false)]),
                steps: [
                    vec![(Update, "application", "7", true, vec!["spec.env[APP_ENV]"])],
                    deploy_and_await(1),
                ]
                .concat(),
                reason: Reason::Deployed,
            },
            Row {
                case: "adoption by name: the application is taken over and deployed to the spec",
                spec: serde_json::json!({"adoptByName": true}),
                env,
                previous: WorkspaceStatus::default(),
                generation: 1,
                requested: false,
                applications: vec![app(7, "team-shop", Some((12, "completed")))],
                action: None,
                variables: prod(),
                steps: deploy_and_await(0),
                reason: Reason::NotDeployed,
            },
            Row {
                case: "in sync: nothing to do",
                spec: serde_json::json!({}),
                env,
                previous: synced("branch:main", 1),
                generation: 1,
                requested: false,
                applications: vec![app(7, "team-shop", Some((12, "completed")))],
                action: None,
                variables: prod(),
                steps: vec![],
                reason: Reason::Deployed,
            },
            Row {
                case: "requested: a reconcile request deploys again",
                spec: serde_json::json!({}),
                env,
                previous: synced("branch:main", 1),
                generation: 1,
                requested: true,
                applications: vec![app(7, "team-shop", Some((12, "completed")))],
                action: None,
                variables: prod(),
                steps: deploy_and_await(0),
                reason: Reason::Deployed,
            },
            Row {
                case: "deployment in flight: only its tracking",
                spec: serde_json::json!({}),
                env,
                previous: WorkspaceStatus {
                    operation: Some(OperationStatus {
                        state: "in-progress".into(),
                        ..synced("branch:main", 1).operation.unwrap()
                    }),
                    source_ref: None,
                    ..synced("branch:main", 1)
                },
                generation: 1,
                requested: false,
                applications: vec![app(7, "team-shop", Some((12, "in-progress")))],
                action: None,
                variables: None,
                steps: vec![(Await, "action", "12", false, vec![])],
                reason: Reason::Deploying,
            },
            Row {
                case: "failed deployment: nothing more, Stalled",
                spec: serde_json::json!({}),
                env,
                previous: WorkspaceStatus {
                    operation: Some(OperationStatus {
                        state: "in-progress".into(),
                        ..synced("branch:main", 1).operation.unwrap()
                    }),
                    source_ref: None,
                    ..synced("branch:main", 1)
                },
                generation: 1,
                requested: false,
                applications: vec![app(7, "team-shop", Some((12, "failed")))],
                action: Some(Some((ActionStatus::Failed, Some("build broke".into())))),
                variables: None,
                steps: vec![],
                reason: Reason::DeployFailed,
            },
        ];
        for row in &rows {
            let planned = plan_of(row).unwrap_or_else(|e| panic!("{}: {e}", row.case));
            table::assert_steps(&planned.plan, &row.steps, row.case);
            assert_eq!(planned.report.readiness.reason, row.reason, "{}", row.case);
        }
        // Drift shows the value found and the one it goes back to.
        let drift = plan_of(&rows[2]).unwrap();
        assert_eq!(
            drift.plan.steps[0].changes,
            vec![Change::new(
                "spec.env[APP_ENV]",
                Some("\"debug\"".into()),
                Some("\"production\"".into())
            )]
        );
        // Adoption is recorded before any step, and said.
        let adopted = plan_of(&rows[3]).unwrap();
        assert_eq!(adopted.adopt.as_deref(), Some("7"));
        assert_eq!(adopted.report.notes[0].reason, Reason::Adopted);
        // The deploy step saves status.operation before it is sent: a crash cannot repeat it.
        let record = adopted.plan.steps[0].record.as_ref().unwrap();
        assert_eq!(
            (record.id.as_deref(), record.state.as_str()),
            (Some("after:12"), REQUESTING)
        );
        // The failure reason reaches the message.
        let failed = plan_of(&rows[7]).unwrap();
        assert!(failed.report.readiness.message.contains("build broke"));
    }

    #[test]
    fn locating_refuses_what_it_must_not_take_over() {
        let taken = Row {
            case: "name taken",
            spec: serde_json::json!({}),
            env: &[],
            previous: WorkspaceStatus::default(),
            generation: 1,
            requested: false,
            applications: vec![app(7, "team-shop", None)],
            action: None,
            variables: None,
            steps: vec![],
            reason: Reason::NameTaken,
        };
        let err = plan_of(&taken).err().unwrap();
        assert_eq!(err.reason(), Reason::NameTaken);
        let observed_absent = Row {
            spec: serde_json::json!({"managementPolicy": "Observe"}),
            applications: vec![],
            ..taken
        };
        let err = plan_of(&observed_absent).err().unwrap();
        assert_eq!(
            err.reason(),
            Reason::ExternalObjectNotFound,
            "Observe never creates"
        );
        let gone = Row {
            spec: serde_json::json!({"externalId": "9"}),
            ..observed_absent
        };
        assert_eq!(
            plan_of(&gone).err().unwrap().reason(),
            Reason::ExternalObjectNotFound
        );
    }

    #[test]
    fn secret_values_never_reach_the_plan() {
        let row = Row {
            case: "secret",
            spec: serde_json::json!({"env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}),
            env: &[("TOKEN", "s3cret-value")],
            previous: WorkspaceStatus::default(),
            generation: 1,
            requested: false,
            applications: vec![],
            action: None,
            variables: None,
            steps: vec![],
            reason: Reason::NotDeployed,
        };
        let planned = plan_of(&row).unwrap();
        let json = serde_json::to_string(&planned.plan.view()).unwrap();
        assert!(!json.contains("s3cret-value"), "{json}");
        assert!(json.contains("(a Secret value)"), "{json}");
    }

    #[test]
    fn observing_an_application_reports_it_as_it_is() {
        let row = Row {
            case: "observe",
            spec: serde_json::json!({"managementPolicy": "Observe"}),
            env: &[("APP_ENV", "production")],
            previous: WorkspaceStatus::default(),
            generation: 1,
            requested: false,
            applications: vec![app(7, "team-shop", Some((12, "completed")))],
            action: None,
            variables: Some(vec![var(3, "APP_ENV", Some("production"), false)]),
            steps: vec![],
            reason: Reason::NotDeployed,
        };
        let planned = plan_of(&row).unwrap();
        assert_eq!(planned.report.sync, SyncState::Observing);
        assert_eq!(planned.report.status.external_id.as_deref(), Some("7"));
    }

    fn var(id: i64, key: &str, value: Option<&str>, hidden: bool) -> Variable {
        serde_json::from_value(serde_json::json!({"id": id, "key": key, "value": value, "type": "variable", "target": "os-env-var", "hidden": hidden})).unwrap()
    }

    #[test]
    fn repositories_become_owner_slash_name() {
        assert_eq!(
            repository_slug("https://github.com/acme/shop.git"),
            "acme/shop"
        );
        assert_eq!(repository_slug("git@github.com:acme/shop.git"), "acme/shop");
        assert_eq!(repository_slug("acme/shop"), "acme/shop");
        assert_eq!(
            repository_slug("https://gitlab.com/group/sub/app/"),
            "sub/app"
        );
    }

    #[test]
    fn variables_sync_by_name() {
        let observed = vec![
            var(1, "A", Some("1"), false),
            var(2, "B", Some("old"), false),
            var(3, "GONE", Some("x"), false),
        ];
        let desired = BTreeMap::from([
            ("A".to_string(), "1".to_string()),
            ("B".to_string(), "new".to_string()),
            ("C".to_string(), "3".to_string()),
        ]);
        let plan = plan_variables(&observed, &desired, &[], false);
        assert_eq!(
            plan.create
                .iter()
                .map(|v| v.key.as_str())
                .collect::<Vec<_>>(),
            vec!["C"]
        );
        assert_eq!(
            plan.update
                .iter()
                .map(|v| (v.id, v.value.as_str()))
                .collect::<Vec<_>>(),
            vec![(2, "new")]
        );
        assert_eq!(plan.delete, vec![3]);
    }

    #[test]
    fn hidden_values_are_rewritten_only_on_a_change() {
        let observed = vec![var(1, "TOKEN", None, true)];
        let desired = BTreeMap::from([("TOKEN".to_string(), "s3cret".to_string())]);
        let secret = vec!["TOKEN".to_string()];
        assert!(plan_variables(&observed, &desired, &secret, false).is_empty());
        assert_eq!(
            plan_variables(&observed, &desired, &secret, true)
                .update
                .len(),
            1
        );
        // A literal that was hidden becomes visible.
        assert_eq!(
            plan_variables(&observed, &desired, &[], false).update.len(),
            1
        );
    }

    #[test]
    fn a_deploy_sent_before_a_crash_is_adopted_not_repeated() {
        let app: Application = serde_json::from_value(serde_json::json!({
            "id": 7, "name": "a", "last_deployments": {"latest": {"id": 12, "status": "in-progress"}}
        }))
        .unwrap();
        let op = |after: i64| OperationStatus {
            kind: DEPLOY.into(),
            id: Some(format!("after:{after}")),
            state: REQUESTING.into(),
            ..Default::default()
        };
        assert_eq!(
            adopt_requested(&op(11), &app),
            Some(12),
            "a newer deployment appeared: ours"
        );
        assert_eq!(
            adopt_requested(&op(12), &app),
            None,
            "nothing new: the call never arrived"
        );
    }

    #[test]
    fn edits_at_the_platform_are_named_without_secret_values() {
        // Ready at generation 1 with this spec: what differs at Devopness is drift.
        let row = Row {
            case: "variables edited at the platform",
            spec: serde_json::json!({"env": [
                {"name": "MODE", "value": "prod"},
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "t"}}},
                {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
            ]}),
            env: &[("MODE", "prod"), ("TOKEN", "s3cret"), ("KEY", "k-value")],
            previous: synced("branch:main", 1),
            generation: 1,
            requested: false,
            applications: vec![app(7, "team-shop", Some((12, "completed")))],
            action: None,
            variables: Some(vec![
                var(1, "MODE", Some("debug"), false),
                var(2, "TOKEN", None, true),
                var(3, "EXTRA", Some("x"), false),
            ]),
            steps: vec![],
            reason: Reason::NotDeployed,
        };
        let planned = plan_of(&row).unwrap();
        let drift: Vec<(String, Option<String>, Option<String>)> = planned
            .plan
            .steps
            .iter()
            .filter(|s| s.drift)
            .flat_map(|s| s.changes.iter())
            .map(|c| (c.field.clone(), c.from.clone(), c.to.clone()))
            .collect();
        let some = |s: &str| Some(s.to_string());
        assert_eq!(
            drift,
            vec![
                (
                    "spec.env[KEY]".into(),
                    some("(removed)"),
                    some("(a Secret value)")
                ),
                ("spec.env[MODE]".into(), some("\"debug\""), some("\"prod\"")),
                ("spec.env[EXTRA]".into(), some("(added)"), some("(not set)")),
            ]
        );
        let shown = serde_json::to_string(&planned.plan.view()).unwrap();
        assert!(
            !shown.contains("s3cret") && !shown.contains("k-value"),
            "{shown}"
        );
        // Hidden values cannot be compared: no drift claimed for TOKEN.
        assert!(!shown.contains("TOKEN"), "{shown}");
    }

    #[test]
    fn deployment_type_follows_the_ref_history() {
        let history = vec![
            "tag:v2".to_string(),
            "tag:v1".to_string(),
            "branch:main".to_string(),
        ];
        let cur = Some("tag:v2");
        assert_eq!(
            deployment_type(GitRef::Tag("v2"), cur, &history),
            DeploymentType::Redeploy
        );
        assert_eq!(
            deployment_type(GitRef::Tag("v1"), cur, &history),
            DeploymentType::Rollback
        );
        assert_eq!(
            deployment_type(GitRef::Tag("v3"), cur, &history),
            DeploymentType::Deploy
        );
        // A branch may have moved: built again, never rolled back to.
        assert_eq!(
            deployment_type(GitRef::Branch("main"), cur, &history),
            DeploymentType::Deploy
        );
        assert_eq!(
            deployment_type(GitRef::Tag("v1"), None, &[]),
            DeploymentType::Deploy
        );
    }

    #[test]
    fn history_is_newest_first_unique_and_bounded() {
        let h = remember(&[], "tag:v1", 3);
        let h = remember(&h, "tag:v2", 3);
        let h = remember(&h, "tag:v1", 3);
        assert_eq!(h, vec!["tag:v1", "tag:v2"]);
        let h = remember(&h, "tag:v3", 3);
        let h = remember(&h, "tag:v4", 3);
        assert_eq!(h, vec!["tag:v4", "tag:v3", "tag:v1"]);
        assert_eq!(remember(&h, "tag:v5", 0), vec!["tag:v5"]);
    }
}
