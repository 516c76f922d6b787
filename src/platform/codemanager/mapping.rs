//! Workspace on Puppet Enterprise Code Manager: a Workspace is one environment (a branch of
//! the control repository). bosun deploys it when the spec changes, when a reconcile is
//! requested, or when the environment is missing from what is deployed; tracks the deploy by
//! id without waiting; and reports the deployed commit (`deploy-signature`).

use super::client::{
    environment_name, CmError, CodeManager, DeployRequest, DeployState, DeploysStatus,
};
use crate::api::{GitRef, OperationStatus, StageStatus, WorkspaceStatus};
use crate::core::conditions::{Readiness, SyncState};
use crate::core::drivers::{CreateGuard, WorkspaceDriver, WorkspaceRequest};
use crate::core::error::ReconcileError;
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

fn stalled(reason: Reason, message: String) -> (Readiness, SyncState, Option<Duration>) {
    (
        Readiness::not_ready(reason, message.clone()),
        SyncState::Stalled { reason, message },
        None,
    )
}

#[async_trait]
impl WorkspaceDriver for CodeManager {
    async fn reconcile(
        &self,
        request: &WorkspaceRequest<'_>,
        _guard: &dyn CreateGuard,
    ) -> Result<Report<WorkspaceStatus>, ReconcileError> {
        let (env, corrected) = environment_for(request)?;
        let act = request.mode.act();
        let deploy_modules = request
            .spec
            .puppet_code_manager
            .as_ref()
            .map(|c| c.deploy_modules)
            .unwrap_or(true);
        let mut status = request.previous.clone();
        let mut notes = Vec::new();
        status.external_id = Some(env.clone());
        let now = Timestamp::now();

        let observed = self.status().await?;
        let signature = observed.deployed(&env).map(|d| d.deploy_signature.clone());
        status.stages = file_sync_stages(&observed, &env);
        let previous_op = status.operation.clone();

        // Follow a deploy in flight by its id.
        if let Some(op) = previous_op
            .as_ref()
            .filter(|o| o.kind == DEPLOY && !is_finished(&o.state))
        {
            let id = op.id.as_deref().and_then(|i| i.parse::<i64>().ok());
            let state = match id {
                Some(id) => self.status_of(id).await?.map(|s| s.status),
                None => None,
            };
            let state = match state {
                Some(s) => s,
                // The id expired (deploys are kept for `deploy_ttl`): judge by the deployed set.
                None if signature.is_some() => DeployState::Synced,
                None => DeployState::Failed,
            };
            let deadline_passed = op
                .deadline
                .as_deref()
                .and_then(|d| d.parse::<Timestamp>().ok())
                .is_some_and(|d| now > d);
            match state {
                s if s.is_success() => {
                    status.operation = Some(OperationStatus {
                        state: "synced".into(),
                        ..op.clone()
                    });
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
                    let msg = failure_message(&env, failed_entry(&observed, &env, id));
                    status.operation = Some(OperationStatus {
                        state: "failed".into(),
                        ..op.clone()
                    });
                    let (readiness, sync, _) = stalled(Reason::DeployFailed, msg);
                    return Ok(Report {
                        status,
                        readiness,
                        sync,
                        requeue_after: None,
                        notes,
                    });
                }
                _ if deadline_passed => {
                    status.operation = Some(OperationStatus {
                        state: "failed:timeout".into(),
                        ..op.clone()
                    });
                    let (readiness, sync, _) = stalled(
                        Reason::DeployTimeout,
                        format!(
                            "the deploy of {env} did not finish within {}",
                            humantime::format_duration(DEPLOY_TIMEOUT)
                        ),
                    );
                    return Ok(Report {
                        status,
                        readiness,
                        sync,
                        requeue_after: None,
                        notes,
                    });
                }
                s => {
                    let msg = format!(
                        "deploy {} of environment {env} is {}",
                        op.id.clone().unwrap_or_default(),
                        s.as_str()
                    );
                    status.operation = Some(OperationStatus {
                        state: s.as_str().to_string(),
                        ..op.clone()
                    });
                    return Ok(Report {
                        status,
                        readiness: Readiness::not_ready(Reason::Deploying, msg.clone()),
                        sync: SyncState::Progressing {
                            reason: Reason::Deploying,
                            message: msg,
                        },
                        requeue_after: Some(DEPLOY_POLL),
                        notes,
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
            Next::Deploy if act => {
                let results = self
                    .deploy(&DeployRequest {
                        environments: vec![env.clone()],
                        deploy_modules: Some(deploy_modules),
                        ..Default::default()
                    })
                    .await?;
                let result = results.into_iter().find(|r| r.environment == env);
                let id = result.as_ref().and_then(|r| r.id);
                if let Some(error) = result.as_ref().and_then(|r| r.error.clone()) {
                    status.operation = Some(operation(id, "failed", request.generation, now));
                    let (readiness, sync, _) =
                        stalled(Reason::DeployFailed, failure_message(&env, Some(&error)));
                    return Ok(Report {
                        status,
                        readiness,
                        sync,
                        requeue_after: None,
                        notes,
                    });
                }
                let state = result
                    .map(|r| r.status.as_str().to_string())
                    .unwrap_or_else(|| "new".into());
                status.operation = Some(operation(id, &state, request.generation, now));
                let renamed = if corrected {
                    format!(" (branch name corrected to {env})")
                } else {
                    String::new()
                };
                notes.push(Note::normal(
                    Reason::DeployQueued,
                    "Deploy",
                    format!(
                        "queued deploy {} of environment {env}{renamed}",
                        id.map(|i| i.to_string()).unwrap_or_default()
                    ),
                ));
                let msg = format!("deploy of environment {env} queued");
                return Ok(Report {
                    status,
                    readiness: Readiness::not_ready(Reason::Deploying, msg.clone()),
                    sync: SyncState::Progressing {
                        reason: Reason::Deploying,
                        message: msg,
                    },
                    requeue_after: Some(DEPLOY_POLL),
                    notes,
                });
            }
            Next::Wait => {
                return Ok(Report {
                    status,
                    readiness: Readiness::not_ready(
                        Reason::Deploying,
                        format!("deploying environment {env}"),
                    ),
                    sync: SyncState::Progressing {
                        reason: Reason::Deploying,
                        message: format!("deploying environment {env}"),
                    },
                    requeue_after: Some(DEPLOY_POLL),
                    notes,
                });
            }
            _ => {}
        }

        if op_now
            .as_ref()
            .is_some_and(|o| o.state.starts_with("failed"))
        {
            let msg = failure_message(&env, failed_entry(&observed, &env, None));
            let (readiness, sync, _) = stalled(Reason::DeployFailed, msg);
            return Ok(Report {
                status,
                readiness,
                sync,
                requeue_after: None,
                notes,
            });
        }
        status.deployed_revision = signature.clone();
        let Some(signature) = signature else {
            let msg = format!("environment {env} is not deployed");
            return Ok(Report {
                status,
                readiness: Readiness::not_ready(Reason::NotDeployed, msg),
                sync: SyncState::Synced,
                requeue_after: None,
                notes,
            });
        };
        if let Some(commit) = request.spec.source.commit.as_deref() {
            if !commit_matches(commit, &signature) {
                let (readiness, sync, _) = stalled(
                    Reason::RevisionMismatch,
                    format!("environment {env} is deployed at {signature}, but spec.source.commit is {commit}: push that commit to the branch or fix the spec"),
                );
                return Ok(Report {
                    status,
                    readiness,
                    sync,
                    requeue_after: None,
                    notes,
                });
            }
        }
        let sync = if request.mode.observing() {
            SyncState::Observing
        } else {
            SyncState::Synced
        };
        Ok(Report {
            status,
            readiness: Readiness::ready(
                Reason::Deployed,
                format!("environment {env} is deployed at {signature}"),
            ),
            sync,
            requeue_after: None,
            notes,
        })
    }

    async fn delete(&self, request: &WorkspaceRequest<'_>) -> Result<Cleanup, ReconcileError> {
        let (env, _) = environment_for(request)?;
        // Code Manager has no call that removes an environment: it follows the control
        // repository's branches. Say so instead of pretending.
        Ok(Cleanup::Done(vec![Note::warning(
            Reason::NotDeletedAtPlatform,
            "Delete",
            format!("Code Manager keeps environment {env} until its branch is deleted from the control repository"),
        )]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
