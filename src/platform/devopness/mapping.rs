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
use crate::core::conditions::{Readiness, SyncState};
use crate::core::drivers::{
    env_fingerprint, locate, CreateGuard, Located, WorkspaceDriver, WorkspaceRequest,
};
use crate::core::error::ReconcileError;
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

/// Differences between the variables at the platform and the spec that someone made there
/// (pure). Only visible values are compared: hidden ones cannot be read back. Values are
/// named in the Event only when they are not Secret-backed.
pub fn variable_drift(
    observed: &[Variable],
    desired: &BTreeMap<String, String>,
    secret_backed: &[String],
) -> Vec<Note> {
    let env_vars: Vec<&Variable> = observed
        .iter()
        .filter(|v| v.target.as_deref().unwrap_or("os-env-var") == "os-env-var")
        .collect();
    let shown = |key: &str, value: &str| {
        if secret_backed.iter().any(|k| k == key) {
            "(a Secret value)".to_string()
        } else {
            format!("{value:?}")
        }
    };
    let mut notes = Vec::new();
    for (key, value) in desired {
        let field = format!("spec.env[{key}]");
        match env_vars.iter().find(|v| &v.key == key) {
            None => notes.push(Note::drift(&field, "(removed)", shown(key, value))),
            Some(v) => {
                if let Some(current) = v.value.as_deref().filter(|c| *c != value) {
                    notes.push(Note::drift(
                        &field,
                        format!("{current:?}"),
                        shown(key, value),
                    ));
                }
            }
        }
    }
    for v in env_vars.iter().filter(|v| !desired.contains_key(&v.key)) {
        notes.push(Note::drift(
            &format!("spec.env[{}]", v.key),
            "(added)",
            "(not set)",
        ));
    }
    notes
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

impl Devopness {
    fn create_body(
        &self,
        request: &WorkspaceRequest<'_>,
    ) -> Result<CreateApplication, ReconcileError> {
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

    /// Follows a deployment in flight. Its state comes from the shared application listing
    /// (the latest deployment and its status); the action itself is read only when the
    /// listing cannot say (another deployment came after it) or to learn why it failed.
    /// Returns a report while it is still running or when it failed.
    async fn track(
        &self,
        request: &WorkspaceRequest<'_>,
        app: &Application,
        op: OperationStatus,
        status: &mut WorkspaceStatus,
        notes: &mut Vec<Note>,
    ) -> Result<Option<Report<WorkspaceStatus>>, ReconcileError> {
        let desired_ref = request.spec.source.git_ref().to_string();
        let Some(id) = op.id.as_deref().and_then(|s| s.parse::<i64>().ok()) else {
            return Ok(None);
        };
        let listed = app
            .last_deployments
            .latest
            .as_ref()
            .filter(|a| a.id == id)
            .and_then(|a| a.status.clone());
        let state = match listed {
            Some(ActionStatus::Failed) | None => match self.get_action(id).await? {
                Some(action) => Some((action.status.clone(), action.failure_reason())),
                None => None,
            },
            Some(other) => Some((other, None)),
        };
        let Some((state, reason)) = state else {
            status.operation = None;
            return Ok(None);
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
                Ok(None)
            }
            ActionStatus::Failed => {
                let why = reason.unwrap_or_else(|| "failed".into());
                status.operation = Some(OperationStatus {
                    state: "failed".into(),
                    ..op
                });
                let msg = format!("deployment action {id} failed: {why}");
                Ok(Some(Report::stalled(
                    status.clone(),
                    std::mem::take(notes),
                    Reason::DeployFailed,
                    msg,
                )))
            }
            other => {
                status.operation = Some(OperationStatus {
                    state: other.as_str().to_string(),
                    ..op
                });
                Ok(Some(progressing(
                    status.clone(),
                    std::mem::take(notes),
                    Reason::Deploying,
                    format!("deployment action {id} is {}", other.as_str()),
                )))
            }
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
        let env_id = request.spec.devopness.as_ref().and_then(|d| d.environment_id).or(self.default_environment()).ok_or_else(|| {
            ReconcileError::user(Reason::EnvironmentRequired, "set spec.devopness.environmentId or the Provider's spec.defaults.environmentId")
        })?;
        let observe_only = request.mode.observing();
        let act = request.mode.act();
        let mut status = request.previous.clone();
        let mut notes = Vec::new();

        let known: Option<i64> = match request
            .previous
            .external_id
            .as_deref()
            .or(request.spec.external_id.as_deref())
        {
            None => None,
            Some(s) => Some(s.parse().map_err(|_| {
                ReconcileError::user(
                    Reason::ExternalIdInvalid,
                    format!("{s:?} is not a Devopness application id"),
                )
            })?),
        };
        // Whether an earlier create or deploy may have gone through unseen: only a fresh
        // listing can tell, never one shared from before that call.
        let unsure = request.create_pending
            || status
                .operation
                .as_ref()
                .is_some_and(|o| o.state == REQUESTING);
        if unsure {
            self.forget_applications(env_id).await;
        }
        let apps = self.applications_of(env_id).await?;
        let adopt = request.spec.adopt_by_name || observe_only;
        let mut just_created = false;
        let app = match locate(
            &apps,
            known,
            &request.external_name,
            request.create_pending,
            adopt,
        ) {
            Located::NameTaken(app) => {
                return Err(ReconcileError::user(
                    Reason::NameTaken,
                    format!("environment {env_id} already has an application named {:?} (id {}): set spec.adoptByName: true or spec.externalId to manage it", app.name, app.id),
                ));
            }
            // Devopness keeps names unique in an environment; several means someone else's doing.
            Located::Ambiguous(n) => {
                return Err(ReconcileError::user(
                    Reason::CreateOutcomeUnknown,
                    format!("environment {env_id} has {n} applications named {:?}: set spec.externalId to the one to manage", request.external_name),
                ));
            }
            Located::Found(app) => app.clone(),
            Located::Gone(id) if request.spec.external_id.is_some() || !act => {
                return Err(ReconcileError::user(
                    Reason::ExternalObjectNotFound,
                    format!("environment {env_id} has no application {id}"),
                ));
            }
            Located::Absent | Located::Gone(_) if !act => {
                return Err(ReconcileError::user(
                    Reason::ExternalObjectNotFound,
                    format!(
                        "environment {env_id} has no application named {:?}",
                        request.external_name
                    ),
                ));
            }
            Located::Absent | Located::Gone(_) => {
                let body = self.create_body(request)?;
                guard.before_create().await?;
                let app = self.create_application(env_id, &body).await?;
                self.forget_applications(env_id).await;
                guard.created(&app.id.to_string()).await?;
                notes.push(Note::normal(
                    Reason::Created,
                    "Create",
                    format!(
                        "created Devopness application {} in environment {env_id}",
                        app.id
                    ),
                ));
                status.external_id = Some(app.id.to_string());
                status.source_ref = None;
                status.deployed_refs = Vec::new();
                status.operation = None;
                just_created = true;
                app
            }
        };
        if status.external_id.as_deref() != Some(app.id.to_string().as_str()) {
            if act {
                guard.created(&app.id.to_string()).await?;
            }
            status.external_id = Some(app.id.to_string());
            notes.push(Note::normal(
                Reason::Adopted,
                "Adopt",
                format!("manages Devopness application {} ({})", app.id, app.name),
            ));
        }

        // A deployment in flight (or possibly sent before a crash) is followed to its end
        // before anything else changes, and costs no call of its own while it runs.
        let mut deployed_now = false;
        if let Some(op) = status.operation.clone().filter(in_flight) {
            let op = if op.state == REQUESTING {
                match adopt_requested(&op, &app) {
                    Some(id) => OperationStatus {
                        id: Some(id.to_string()),
                        state: "pending".into(),
                        ..op
                    },
                    None => OperationStatus {
                        state: "unsent".into(),
                        ..op
                    },
                }
            } else {
                op
            };
            if op.state != "unsent" {
                let generation = op.generation;
                if let Some(report) = self
                    .track(request, &app, op, &mut status, &mut notes)
                    .await?
                {
                    return Ok(report);
                }
                // This generation's variables were set just before the deploy that has now
                // completed: there is nothing new to read until the next poll.
                deployed_now = generation == Some(request.generation)
                    && status
                        .operation
                        .as_ref()
                        .is_some_and(|o| o.state == "completed");
            } else {
                status.operation = None;
            }
        }

        // Variables, by name; hidden (Secret-backed) values are rewritten on a spec change.
        let secret_backed: Vec<String> = request
            .spec
            .env
            .iter()
            .filter(|e| e.value_from.is_some())
            .map(|e| e.name.clone())
            .collect();
        // Variables are read per application, so only when something may have changed (the
        // spec, a Secret, a request), or every deep-check interval; a new application has none
        // to read, and a deploy that just completed carried this generation's.
        let env_print = env_fingerprint(&request.env);
        let check_vars = just_created
            || (!deployed_now && self.deep_checks.due(request, &status, app.id, env_print));
        let secrets_changed = !request.is_drift()
            || self
                .deep_checks
                .last(app.id)
                .is_some_and(|(_, print)| print != env_print);
        let observed_vars = if check_vars && !just_created {
            self.list_application_variables(app.id).await?
        } else {
            Vec::new()
        };
        let plan = if check_vars {
            plan_variables(
                &observed_vars,
                &request.env,
                &secret_backed,
                secrets_changed,
            )
        } else {
            VariablePlan::default()
        };
        let vars_changed = act && !plan.is_empty();
        if vars_changed {
            if request.is_drift() {
                notes.extend(variable_drift(&observed_vars, &request.env, &secret_backed));
            }
            for v in &plan.create {
                self.create_application_variable(app.id, v).await?;
            }
            for v in &plan.update {
                self.update_variable(v).await?;
            }
            for id in &plan.delete {
                self.delete_variable(*id).await?;
            }
            let names: Vec<&str> = plan
                .create
                .iter()
                .map(|v| v.key.as_str())
                .chain(plan.update.iter().map(|v| v.key.as_str()))
                .collect();
            notes.push(Note::normal(
                Reason::VariablesUpdated,
                "Update",
                format!(
                    "set {} and removed {} variables: {}",
                    names.len(),
                    plan.delete.len(),
                    names.join(", ")
                ),
            ));
        }

        if check_vars && (act || !vars_changed) {
            self.deep_checks.done(app.id, env_print);
        }

        let desired_ref = request.spec.source.git_ref().to_string();
        let failed_here = status
            .operation
            .as_ref()
            .is_some_and(|o| o.state == "failed" && o.generation == Some(request.generation));
        let wants_deploy = status.source_ref.as_deref() != Some(desired_ref.as_str())
            || request.mode.requested
            || vars_changed;
        if failed_here && !request.mode.requested && !vars_changed {
            let msg = "the last deployment of this generation failed; change the spec or set bosun.dev/reconcile-requested-at to retry".to_string();
            return Ok(Report::stalled(status, notes, Reason::DeployFailed, msg));
        }
        if wants_deploy && act {
            let latest = app
                .last_deployments
                .latest
                .as_ref()
                .map(|a| a.id)
                .unwrap_or(0);
            let mut op = OperationStatus {
                kind: DEPLOY.into(),
                id: Some(format!("after:{latest}")),
                state: REQUESTING.into(),
                generation: Some(request.generation),
                started_at: Some(jiff::Timestamp::now().to_string()),
                deadline: None,
            };
            guard.save_operation(&op).await?;
            let deployment_type = deployment_type(
                request.spec.source.git_ref(),
                status.source_ref.as_deref(),
                &status.deployed_refs,
            );
            let (source_type, source_ref) = source_of(request.spec.source.git_ref());
            let d = request.spec.devopness.clone().unwrap_or_default();
            let action = self
                .deploy_application(
                    app.id,
                    &DeployApplication {
                        deployment_type,
                        source_type: Some(source_type),
                        source_ref: Some(source_ref),
                        pipeline_id: d.pipeline_id,
                        servers: d.servers,
                    },
                )
                .await?;
            self.forget_applications(env_id).await;
            op.id = Some(action.to_string());
            op.state = "pending".into();
            status.operation = Some(op);
            let verb = match deployment_type {
                DeploymentType::Deploy => "deployment",
                DeploymentType::Redeploy => "redeployment",
                DeploymentType::Rollback => "rollback",
            };
            notes.push(Note::normal(
                Reason::DeployStarted,
                "Deploy",
                format!("started {verb} action {action} of {desired_ref}"),
            ));
            return Ok(progressing(
                status,
                notes,
                Reason::Deploying,
                format!("{verb} action {action} started"),
            ));
        }
        let ready = status.source_ref.as_deref() == Some(desired_ref.as_str());
        Ok(Report {
            status,
            readiness: if ready {
                Readiness::ready(
                    Reason::Deployed,
                    format!("application {} runs {desired_ref}", app.id),
                )
            } else {
                Readiness::not_ready(
                    Reason::NotDeployed,
                    format!("application {} does not run {desired_ref}", app.id),
                )
            },
            sync: if observe_only {
                SyncState::Observing
            } else {
                SyncState::Synced
            },
            requeue_after: None,
            notes,
            plan: Default::default(),
        })
    }

    async fn delete(&self, request: &WorkspaceRequest<'_>) -> Result<Cleanup, ReconcileError> {
        let Some(id) = request
            .previous
            .external_id
            .as_deref()
            .or(request.spec.external_id.as_deref())
            .and_then(|s| s.parse::<i64>().ok())
        else {
            return Ok(Cleanup::Done(Vec::new()));
        };
        let note = match self.delete_application(id).await? {
            Deleted::Done { action_id } => format!(
                "deleted Devopness application {id} (action {})",
                action_id.map(|a| a.to_string()).unwrap_or_default()
            ),
            Deleted::AlreadyGone => format!("Devopness application {id} is gone"),
        };
        Ok(Cleanup::Done(vec![Note::normal(
            Reason::Deleted,
            "Delete",
            note,
        )]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let observed = vec![
            var(1, "MODE", Some("debug"), false),
            var(2, "TOKEN", None, true),
            var(3, "EXTRA", Some("x"), false),
        ];
        let desired = BTreeMap::from([
            ("MODE".to_string(), "prod".to_string()),
            ("TOKEN".to_string(), "s3cret".to_string()),
            ("KEY".to_string(), "k-value".to_string()),
        ]);
        let secret = vec!["TOKEN".to_string(), "KEY".to_string()];
        let notes = variable_drift(&observed, &desired, &secret);
        let messages: Vec<&str> = notes.iter().map(|n| n.message.as_str()).collect();
        assert_eq!(
            messages,
            vec![
                "spec.env[KEY] was changed at the platform: set back from (removed) to (a Secret value)",
                "spec.env[MODE] was changed at the platform: set back from \"debug\" to \"prod\"",
                "spec.env[EXTRA] was changed at the platform: set back from (added) to (not set)",
            ]
        );
        assert!(notes.iter().all(|n| n.warning));
        assert!(!messages
            .iter()
            .any(|m| m.contains("s3cret") || m.contains("k-value")));
        // Hidden values cannot be compared: no drift claimed for TOKEN.
        assert!(!messages.iter().any(|m| m.contains("TOKEN")));
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
