//! Workspace and ServiceScale on Codesphere: observe (batched per team), plan (pure functions
//! below, unit-tested), act.
//!
//! A Workspace is a Codesphere workspace plus its pipeline: a new source ref is rolled out in
//! place as the vendor describes (git pull, prepare, test if asked, run restart), one stage per
//! reconcile, tracked in `status.operation` with a deadline, so no worker ever waits.

use super::client::{
    Codesphere, CreateWorkspace, EnvVar, Plan, Stage, StageElement, UpdateWorkspace, Workspace,
};
use crate::api::{
    GitRef, OperationStatus, RolloutStrategy, RunState, StageStatus, WorkspaceStatus,
};
use crate::core::conditions::{Readiness, SyncState};
use crate::core::drivers::{
    env_fingerprint, locate, was_ready, CreateGuard, Located, WorkspaceDriver, WorkspaceRequest,
};
use crate::core::error::ReconcileError;
use crate::core::reason::Reason;
use crate::core::reconciler::{Cleanup, Note, Report};
use crate::core::seam::PlatformError;
use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use std::collections::BTreeMap;
use std::time::Duration;

/// The server prepare and test run on; every other server is a run-stage service.
pub const IDE_SERVER: &str = "codesphere-ide";
/// How often a stage in flight is looked at (the vendor's own CLI polls every 5 s).
pub const STAGE_POLL: Duration = Duration::from_secs(5);
/// Default limit for one stage (`spec.pipeline.stageTimeout`).
pub const DEFAULT_STAGE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// The plan Codesphere's CLI uses when none is named.
pub const DEFAULT_PLAN_ID: i64 = 8;
/// Slack when comparing platform timestamps with ours (the clocks are not the same).
const CLOCK_SLACK: SignedDuration = SignedDuration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Pure planning.

/// Picks the plan the spec names (a title, case-insensitive, or an id) and checks the replica
/// count against it.
pub fn resolve_plan<'a>(
    wanted: Option<&str>,
    replicas: i32,
    plans: &'a [Plan],
) -> Result<&'a Plan, ReconcileError> {
    let unknown = |m: String| ReconcileError::user(Reason::UnknownPlan, m);
    let usable = || {
        plans
            .iter()
            .filter(|p| !p.deprecated)
            .map(|p| format!("{} ({})", p.title, p.id))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let plan = match wanted {
        None => plans
            .iter()
            .find(|p| p.id == DEFAULT_PLAN_ID && !p.deprecated)
            .or_else(|| plans.iter().find(|p| !p.deprecated))
            .ok_or_else(|| unknown("the platform offers no plan".to_string()))?,
        Some(w) => plans
            .iter()
            .find(|p| {
                p.title.eq_ignore_ascii_case(w.trim()) || w.trim().parse::<i64>().ok() == Some(p.id)
            })
            .ok_or_else(|| {
                unknown(format!(
                    "spec.plan: Codesphere has no plan {w:?}; use one of {}",
                    usable()
                ))
            })?,
    };
    if plan.deprecated {
        return Err(unknown(format!(
            "spec.plan: plan {} is deprecated; use one of {}",
            plan.title,
            usable()
        )));
    }
    if replicas > plan.max_replicas {
        return Err(ReconcileError::user(Reason::PlanLimitExceeded, format!(
            "spec.replicas: plan {} allows at most {} replicas, not {replicas}; lower spec.replicas or choose a larger plan",
            plan.title, plan.max_replicas
        )));
    }
    Ok(plan)
}

/// The PATCH that brings the workspace to the spec, with a drift Event per field when the
/// spec did not change (pure).
pub fn plan_update(
    ws: &Workspace,
    plan_id: i64,
    replicas: i32,
    drift: bool,
) -> (UpdateWorkspace, Vec<Note>) {
    let mut update = UpdateWorkspace::default();
    let mut notes = Vec::new();
    if ws.plan_id != plan_id {
        update.plan_id = Some(plan_id);
        if drift {
            notes.push(Note::drift(
                "spec.plan",
                format!("plan {}", ws.plan_id),
                format!("plan {plan_id}"),
            ));
        }
    }
    if ws.replicas != replicas {
        update.replicas = Some(replicas);
        if drift {
            notes.push(Note::drift("spec.replicas", ws.replicas, replicas));
        }
    }
    (update, notes)
}

/// Variables to set and names to delete so the platform holds exactly `desired` (pure).
pub fn plan_env(
    observed: &[EnvVar],
    desired: &BTreeMap<String, String>,
) -> (Vec<EnvVar>, Vec<String>) {
    let have: BTreeMap<&str, &str> = observed
        .iter()
        .map(|e| (e.name.as_str(), e.value.as_str()))
        .collect();
    let set = desired
        .iter()
        .filter(|(k, v)| have.get(k.as_str()) != Some(&v.as_str()))
        .map(|(k, v)| EnvVar {
            name: k.clone(),
            value: v.clone(),
        })
        .collect();
    let delete = observed
        .iter()
        .filter(|e| !desired.contains_key(&e.name))
        .map(|e| e.name.clone())
        .collect();
    (set, delete)
}

/// How far a stage got, from its status elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StageProgress {
    /// Not started since `since` (or no elements yet).
    Pending,
    Running,
    Succeeded,
    Failed(String),
}

/// Reads prepare/test (which run on the IDE server and finish) or run (which runs on every
/// other server and never finishes) from the status array (pure). Only elements started at or
/// after `since` count, so the previous run's result is never mistaken for this one's.
pub fn stage_progress(
    stage: Stage,
    elements: &[StageElement],
    since: Option<Timestamp>,
) -> StageProgress {
    let fresh = |e: &&StageElement| match (
        since,
        e.started_at
            .as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok()),
    ) {
        (None, _) => true,
        (Some(since), Some(started)) => started >= since - CLOCK_SLACK,
        (Some(_), None) => false,
    };
    let relevant: Vec<&StageElement> = elements
        .iter()
        .filter(|e| (stage == Stage::Run) != (e.server == IDE_SERVER))
        .filter(fresh)
        .collect();
    if relevant.is_empty() {
        return StageProgress::Pending;
    }
    if let Some(bad) = relevant
        .iter()
        .find(|e| e.state == "failure" || e.state == "aborted")
    {
        return StageProgress::Failed(format!(
            "the {} stage ended in {} on server {} replica {}",
            stage.as_str(),
            bad.state,
            bad.server,
            bad.replica
        ));
    }
    match stage {
        Stage::Run if relevant.iter().all(|e| e.state == "running") => StageProgress::Succeeded,
        Stage::Run => StageProgress::Running,
        _ if relevant.iter().all(|e| e.state == "success") => StageProgress::Succeeded,
        _ if relevant.iter().all(|e| e.state == "waiting") => StageProgress::Pending,
        _ => StageProgress::Running,
    }
}

/// The stages a rollout runs, in order.
pub fn rollout_stages(prepare: bool, test: bool, run: RunState) -> Vec<Stage> {
    let mut stages = Vec::new();
    if prepare {
        stages.push(Stage::Prepare);
    }
    if test {
        stages.push(Stage::Test);
    }
    if run == RunState::Running {
        stages.push(Stage::Run);
    }
    stages
}

fn stage_named(name: &str) -> Option<Stage> {
    match name {
        "prepare" => Some(Stage::Prepare),
        "test" => Some(Stage::Test),
        "run" => Some(Stage::Run),
        _ => None,
    }
}

/// The per-stage timeout of the spec.
pub fn stage_timeout(spec: Option<&str>) -> Duration {
    spec.and_then(|s| humantime::parse_duration(s).ok())
        .unwrap_or(DEFAULT_STAGE_TIMEOUT)
}

fn operation(
    kind: &str,
    stage: Stage,
    generation: i64,
    now: Timestamp,
    timeout: Duration,
) -> OperationStatus {
    let deadline = now
        .checked_add(SignedDuration::try_from(timeout).unwrap_or(SignedDuration::from_secs(900)))
        .unwrap_or(now);
    OperationStatus {
        kind: kind.into(),
        id: None,
        state: stage.as_str().into(),
        generation: Some(generation),
        started_at: Some(now.to_string()),
        deadline: Some(deadline.to_string()),
    }
}

fn parse_time(s: Option<&String>) -> Option<Timestamp> {
    s.and_then(|s| s.parse().ok())
}

// ---------------------------------------------------------------------------------------------
// Observe and act.

/// The team a workspace lives in.
fn team_of(
    request: &WorkspaceRequest<'_>,
    default_team: Option<i64>,
) -> Result<i64, ReconcileError> {
    request
        .spec
        .codesphere
        .as_ref()
        .and_then(|c| c.team_id)
        .or(default_team)
        .ok_or_else(|| {
            ReconcileError::user(
                Reason::TeamRequired,
                "set spec.codesphere.teamId or the Provider's spec.defaults.teamId",
            )
        })
}

fn known_id(request: &WorkspaceRequest<'_>) -> Result<Option<i64>, ReconcileError> {
    // Status first: a blue/green rollout moves the workspace to a new id.
    let raw = request
        .previous
        .external_id
        .as_deref()
        .or(request.spec.external_id.as_deref());
    match raw {
        None => Ok(None),
        Some(s) => s.parse::<i64>().map(Some).map_err(|_| {
            ReconcileError::user(
                Reason::ExternalIdInvalid,
                format!("spec.externalId {s:?} is not a Codesphere workspace id (a number)"),
            )
        }),
    }
}

fn url_of(ws: &Workspace) -> Option<String> {
    ws.dev_domain.as_ref().map(|d| format!("https://{d}"))
}

fn user_or_platform(e: PlatformError) -> ReconcileError {
    ReconcileError::Platform(e)
}

impl Codesphere {
    fn create_body(
        &self,
        request: &WorkspaceRequest<'_>,
        team_id: i64,
        plan_id: i64,
    ) -> CreateWorkspace {
        let cs = request.spec.codesphere.clone().unwrap_or_default();
        let (branch, git_ref) = match request.spec.source.git_ref() {
            GitRef::Branch(b) => (Some(b.to_string()), None),
            GitRef::Tag(t) => (None, Some(t.to_string())),
            GitRef::Commit(c) => (None, Some(c.to_string())),
        };
        CreateWorkspace {
            team_id,
            name: request.external_name.clone(),
            plan_id,
            is_private_repo: cs.private_repo,
            replicas: request.spec.replicas,
            git_url: Some(request.spec.source.repository.clone()),
            initial_branch: branch,
            git_ref,
            base_image: cs.base_image,
            restricted: cs.restricted,
            storage_mib: cs.storage_mib,
            vpn_config: cs.vpn_config,
            env: request
                .env
                .iter()
                .map(|(k, v)| EnvVar {
                    name: k.clone(),
                    value: v.clone(),
                })
                .collect(),
        }
    }

    /// Brings the pipeline towards the spec: one step per call, never waiting.
    async fn drive_pipeline(
        &self,
        request: &WorkspaceRequest<'_>,
        ws: &Workspace,
        status: &mut WorkspaceStatus,
        notes: &mut Vec<Note>,
        env_changed: bool,
    ) -> Result<(Readiness, SyncState, Option<Duration>), ReconcileError> {
        let pipeline = request.spec.pipeline.clone().unwrap_or_default();
        let desired_ref = request.spec.source.git_ref().to_string();
        let timeout = stage_timeout(pipeline.stage_timeout.as_deref());
        let profile = request
            .spec
            .codesphere
            .as_ref()
            .and_then(|c| c.profile.clone());
        let now = Timestamp::now();
        let act = request.mode.act();

        // A rollout that failed stays failed until the spec changes or a reconcile is requested.
        if let Some(op) = &status.operation {
            if let Some(stage) = op.state.strip_prefix("failed:") {
                let same_spec = op.generation == Some(request.generation);
                if same_spec && !request.mode.requested {
                    let msg = format!("the {stage} stage failed; fix the code or spec, or set bosun.dev/reconcile-requested-at to retry");
                    return Ok((
                        Readiness::not_ready(Reason::StageFailed, msg.clone()),
                        SyncState::Stalled {
                            reason: Reason::StageFailed,
                            message: msg,
                        },
                        None,
                    ));
                }
                status.operation = None;
            }
        }

        let needs_rollout = status.source_ref.as_deref() != Some(desired_ref.as_str());
        // A stage started by this reconcile cannot have finished yet: reading it now would
        // cost a call that tells nothing, so the next look is a poll away.
        let mut started_now = false;
        if status.operation.is_none() && act && needs_rollout {
            if let Some(previous_ref) = &status.source_ref {
                match request.spec.source.git_ref() {
                    GitRef::Branch(branch) => {
                        self.git_pull(ws.id, Some(("origin", branch))).await.map_err(user_or_platform)?;
                        notes.push(Note::normal(Reason::SourcePulled, "Rollout", format!("pulled {desired_ref} (was {previous_ref})")));
                    }
                    other => {
                        return Err(ReconcileError::user(
                            Reason::UnsupportedByProvider,
                            format!("spec.source: Codesphere pulls branches in place; moving to {other} needs strategy BlueGreen or a new Workspace"),
                        ))
                    }
                }
            }
            let stages = rollout_stages(pipeline.prepare, pipeline.test, pipeline.run);
            match stages.first() {
                Some(first) => {
                    if *first == Stage::Run {
                        // Restart so the new code and variables are picked up.
                        let _ = self.stop_stage(ws.id, Stage::Run).await;
                    }
                    self.start_stage(ws.id, *first, profile.as_deref())
                        .await
                        .map_err(user_or_platform)?;
                    started_now = true;
                    status.operation = Some(operation(
                        "rollout",
                        *first,
                        request.generation,
                        now,
                        timeout,
                    ));
                    notes.push(Note::normal(
                        Reason::StageStarted,
                        "Rollout",
                        format!("started the {} stage for {desired_ref}", first.as_str()),
                    ));
                }
                None => status.source_ref = Some(desired_ref.clone()),
            }
        } else if status.operation.is_none()
            && act
            && env_changed
            && pipeline.run == RunState::Running
        {
            let _ = self.stop_stage(ws.id, Stage::Run).await;
            self.start_stage(ws.id, Stage::Run, profile.as_deref())
                .await
                .map_err(user_or_platform)?;
            started_now = true;
            status.operation = Some(operation(
                "restart",
                Stage::Run,
                request.generation,
                now,
                timeout,
            ));
            notes.push(Note::normal(
                Reason::StageStarted,
                "Restart",
                "restarted the run stage to apply changed environment variables",
            ));
        }

        // The run stage as read by this reconcile, so it is not read twice.
        let mut run_read = None;
        // Track the stage in flight.
        if let Some(op) = status.operation.clone().filter(|_| !started_now) {
            let Some(stage) = stage_named(&op.state) else {
                status.operation = None;
                return Ok((
                    Readiness::not_ready(Reason::Unknown, ""),
                    SyncState::Synced,
                    Some(STAGE_POLL),
                ));
            };
            let elements = self
                .stage_status(ws.id, stage)
                .await
                .map_err(user_or_platform)?;
            status.stages = stage_statuses(stage, &elements);
            let since = parse_time(op.started_at.as_ref());
            if stage == Stage::Run {
                run_read = Some(elements.clone());
            }
            match stage_progress(stage, &elements, since) {
                StageProgress::Succeeded => {
                    let stages = rollout_stages(pipeline.prepare, pipeline.test, pipeline.run);
                    let next = if op.kind == "rollout" {
                        stages.iter().skip_while(|s| **s != stage).nth(1).copied()
                    } else {
                        None
                    };
                    match next {
                        Some(next) if act => {
                            if next == Stage::Run {
                                let _ = self.stop_stage(ws.id, Stage::Run).await;
                            }
                            self.start_stage(ws.id, next, profile.as_deref())
                                .await
                                .map_err(user_or_platform)?;
                            status.operation =
                                Some(operation(&op.kind, next, request.generation, now, timeout));
                            notes.push(Note::normal(
                                Reason::StageStarted,
                                "Rollout",
                                format!("started the {} stage", next.as_str()),
                            ));
                        }
                        Some(_) => {}
                        None => {
                            status.operation = None;
                            if op.kind == "rollout" {
                                status.source_ref = Some(desired_ref.clone());
                                status.deployed_revision = self.git_head(ws.id).await.ok();
                                notes.push(Note::normal(
                                    Reason::RolledOut,
                                    "Rollout",
                                    format!("{desired_ref} is running"),
                                ));
                            }
                        }
                    }
                }
                StageProgress::Failed(why) => {
                    status.operation = Some(OperationStatus {
                        state: format!("failed:{}", stage.as_str()),
                        ..op.clone()
                    });
                    let msg = format!("{why}; traffic stays on what ran before");
                    return Ok((
                        Readiness::not_ready(Reason::StageFailed, msg.clone()),
                        SyncState::Stalled {
                            reason: Reason::StageFailed,
                            message: msg,
                        },
                        None,
                    ));
                }
                StageProgress::Pending | StageProgress::Running => {
                    if parse_time(op.deadline.as_ref()).is_some_and(|d| now > d) {
                        status.operation = Some(OperationStatus {
                            state: format!("failed:{}", stage.as_str()),
                            ..op.clone()
                        });
                        let msg = format!(
                            "the {} stage did not finish within {}",
                            stage.as_str(),
                            humantime::format_duration(timeout)
                        );
                        return Ok((
                            Readiness::not_ready(Reason::StageTimeout, msg.clone()),
                            SyncState::Stalled {
                                reason: Reason::StageTimeout,
                                message: msg,
                            },
                            None,
                        ));
                    }
                }
            }
        }
        if let Some(op) = &status.operation {
            let msg = format!("{} stage of the {} is in progress", op.state, op.kind);
            return Ok((
                Readiness::not_ready(Reason::StageRunning, msg.clone()),
                SyncState::Progressing {
                    reason: Reason::StageRunning,
                    message: msg,
                },
                Some(STAGE_POLL),
            ));
        }

        // Steady state: the run stage as the spec wants it.
        let read = match run_read {
            Some(run) => Ok(run),
            None => self.stage_status(ws.id, Stage::Run).await,
        };
        let run = match read {
            Ok(run) => run,
            // Refused: the workspace may have stopped since it was last seen running.
            Err(e) if e.kind == crate::core::seam::ErrorKind::Invalid => {
                if !self.is_running(ws.id).await.map_err(user_or_platform)? {
                    return Ok(starting(ws.id));
                }
                return Err(user_or_platform(e));
            }
            Err(e) => return Err(user_or_platform(e)),
        };
        status.stages = stage_statuses(Stage::Run, &run);
        let running = stage_progress(Stage::Run, &run, None) == StageProgress::Succeeded;
        match (pipeline.run, running) {
            (RunState::Running, true) | (RunState::Stopped, false) => Ok((
                Readiness::ready(
                    Reason::Available,
                    format!("workspace {} matches the spec", ws.id),
                ),
                SyncState::Synced,
                None,
            )),
            (RunState::Running, false) if act => {
                self.start_stage(ws.id, Stage::Run, profile.as_deref())
                    .await
                    .map_err(user_or_platform)?;
                status.operation = Some(operation(
                    "restart",
                    Stage::Run,
                    request.generation,
                    now,
                    timeout,
                ));
                notes.push(Note::drift("spec.pipeline.run", "not running", "Running"));
                let msg = "starting the run stage".to_string();
                Ok((
                    Readiness::not_ready(Reason::StageRunning, msg.clone()),
                    SyncState::Progressing {
                        reason: Reason::StageRunning,
                        message: msg,
                    },
                    Some(STAGE_POLL),
                ))
            }
            (RunState::Stopped, true) if act => {
                self.stop_stage(ws.id, Stage::Run)
                    .await
                    .map_err(user_or_platform)?;
                notes.push(Note::normal(
                    Reason::StageStopped,
                    "Stop",
                    "stopped the run stage (spec.pipeline.run: Stopped)",
                ));
                Ok((
                    Readiness::not_ready(Reason::Stopping, "stopping the run stage"),
                    SyncState::Progressing {
                        reason: Reason::Stopping,
                        message: "stopping the run stage".into(),
                    },
                    Some(STAGE_POLL),
                ))
            }
            (RunState::Running, _) => Ok((
                Readiness::not_ready(Reason::NotRunning, "the run stage is not running"),
                SyncState::Synced,
                None,
            )),
            (RunState::Stopped, _) => Ok((
                Readiness::not_ready(
                    Reason::Running,
                    "the run stage runs but the spec says Stopped",
                ),
                SyncState::Synced,
                None,
            )),
        }
    }
}

/// `status.operation.kind` of a blue/green rollout.
pub const BLUE_GREEN: &str = "blueGreen";

/// The candidate's name for a generation: deterministic, so a lookup by name finds a
/// candidate an interrupted reconcile created, and no marker is needed.
pub fn candidate_name(base: &str, generation: i64) -> String {
    let suffix = format!("-g{generation}");
    let keep = 63usize.saturating_sub(suffix.len());
    format!("{}{suffix}", base.chars().take(keep).collect::<String>())
}

type Step = (Readiness, SyncState, Option<Duration>);

/// A workspace that does not run yet (or any more): pipeline calls would be refused.
fn starting(id: i64) -> Step {
    (
        Readiness::not_ready(Reason::Starting, "the workspace is not running yet"),
        SyncState::Progressing {
            reason: Reason::Starting,
            message: format!("waiting for workspace {id} to run"),
        },
        Some(STAGE_POLL),
    )
}

fn progressing(reason: Reason, message: String) -> Step {
    (
        Readiness::not_ready(reason, message.clone()),
        SyncState::Progressing { reason, message },
        Some(STAGE_POLL),
    )
}

impl Codesphere {
    /// One step of a blue/green rollout: create the candidate, run its stages, switch the
    /// Workspace (and so every DomainBinding route) to it, then retire the old workspace once
    /// no domain routes to it. On failure traffic stays where it was.
    async fn drive_blue_green(
        &self,
        request: &WorkspaceRequest<'_>,
        team_id: i64,
        plan_id: i64,
        current: &Workspace,
        status: &mut WorkspaceStatus,
        notes: &mut Vec<Note>,
    ) -> Result<Step, ReconcileError> {
        let pipeline = request.spec.pipeline.clone().unwrap_or_default();
        let timeout = stage_timeout(pipeline.stage_timeout.as_deref());
        let profile = request
            .spec
            .codesphere
            .as_ref()
            .and_then(|c| c.profile.clone());
        let desired_ref = request.spec.source.git_ref().to_string();
        let now = Timestamp::now();
        let op = status.operation.clone().filter(|o| o.kind == BLUE_GREEN);

        // Retire: the Workspace already points at the candidate; `op.id` is the old one.
        if let Some(op) = op.as_ref().filter(|o| o.state == "retire") {
            let old: i64 = op
                .id
                .as_deref()
                .and_then(|i| i.parse().ok())
                .unwrap_or_default();
            let routed = self
                .list_domains(team_id)
                .await?
                .iter()
                .any(|d| d.workspaces.values().any(|ids| ids.contains(&old)));
            if routed {
                return Ok(progressing(
                    Reason::SwitchingTraffic,
                    format!("waiting for domain routes to move off workspace {old}"),
                ));
            }
            self.delete_workspace(old).await?;
            self.forget_list(team_id).await;
            status.operation = None;
            notes.push(Note::normal(
                Reason::Retired,
                "BlueGreen",
                format!("deleted the old workspace {old}; {desired_ref} serves all traffic"),
            ));
            return Ok((
                Readiness::ready(
                    Reason::Available,
                    format!("workspace {} runs {desired_ref}", current.id),
                ),
                SyncState::Synced,
                None,
            ));
        }

        // A failed candidate stays failed until the spec changes or a reconcile is requested.
        if let Some(op) = op.as_ref().filter(|o| o.state.starts_with("failed:")) {
            if op.generation == Some(request.generation) && !request.mode.requested {
                let msg = format!(
                    "blue/green candidate: the {} stage failed; traffic stays on workspace {}",
                    op.state.trim_start_matches("failed:"),
                    current.id
                );
                return Ok((
                    Readiness::not_ready(Reason::StageFailed, msg.clone()),
                    SyncState::Stalled {
                        reason: Reason::StageFailed,
                        message: msg,
                    },
                    None,
                ));
            }
        }

        // Find or create this generation's candidate.
        let name = candidate_name(&request.external_name, request.generation);
        self.forget_list(team_id).await;
        let list = self.workspaces_of(team_id).await?;
        let candidate = match list.iter().find(|w| w.name == name) {
            Some(c) => c.clone(),
            None => {
                let mut body = self.create_body(request, team_id, plan_id);
                body.name = name.clone();
                let c = self.create_workspace(&body).await?;
                self.forget_list(team_id).await;
                notes.push(Note::normal(
                    Reason::CandidateCreated,
                    "BlueGreen",
                    format!("created candidate workspace {} for {desired_ref}", c.id),
                ));
                c
            }
        };
        let stage_in_flight = op
            .as_ref()
            .filter(|o| o.id.as_deref() == Some(candidate.id.to_string().as_str()))
            .and_then(|o| stage_named(&o.state).map(|s| (s, parse_time(o.started_at.as_ref()))));
        if !self.is_running(candidate.id).await? {
            if stage_in_flight.is_none() {
                status.operation = Some(OperationStatus {
                    id: Some(candidate.id.to_string()),
                    state: "starting".into(),
                    ..operation(BLUE_GREEN, Stage::Prepare, request.generation, now, timeout)
                });
            }
            return Ok(progressing(
                Reason::CandidateStarting,
                format!("waiting for candidate workspace {} to run", candidate.id),
            ));
        }
        let stages = rollout_stages(pipeline.prepare, pipeline.test, RunState::Running);
        let start = |stage: Stage| operation(BLUE_GREEN, stage, request.generation, now, timeout);
        let next = match stage_in_flight {
            None => stages.first().copied(),
            Some((stage, since)) => {
                let elements = self.stage_status(candidate.id, stage).await?;
                status.stages = stage_statuses(stage, &elements);
                match stage_progress(stage, &elements, since) {
                    StageProgress::Succeeded => {
                        match stages.iter().skip_while(|s| **s != stage).nth(1) {
                            Some(next) => Some(*next),
                            None => {
                                // The candidate runs: switch, then retire the old workspace.
                                notes.push(Note::normal(
                                Reason::Switched,
                                "BlueGreen",
                                format!("workspace {} now serves {desired_ref}; domain routes move from {}", candidate.id, current.id),
                            ));
                                status.external_id = Some(candidate.id.to_string());
                                status.url = url_of(&candidate);
                                status.source_ref = Some(desired_ref.clone());
                                status.deployed_revision = self.git_head(candidate.id).await.ok();
                                status.operation = Some(OperationStatus {
                                    id: Some(current.id.to_string()),
                                    state: "retire".into(),
                                    ..start(Stage::Run)
                                });
                                return Ok(progressing(
                                    Reason::SwitchingTraffic,
                                    format!(
                                        "moving domain routes from workspace {} to {}",
                                        current.id, candidate.id
                                    ),
                                ));
                            }
                        }
                    }
                    StageProgress::Failed(why) => {
                        // Traffic never moved; the failed candidate is removed so nothing leaks.
                        self.delete_workspace(candidate.id).await?;
                        self.forget_list(team_id).await;
                        status.operation = Some(OperationStatus {
                            id: Some(candidate.id.to_string()),
                            state: format!("failed:{}", stage.as_str()),
                            ..start(stage)
                        });
                        let msg = format!(
                            "blue/green candidate {}: {why}; traffic stays on workspace {}",
                            candidate.id, current.id
                        );
                        return Ok((
                            Readiness::not_ready(Reason::StageFailed, msg.clone()),
                            SyncState::Stalled {
                                reason: Reason::StageFailed,
                                message: msg,
                            },
                            None,
                        ));
                    }
                    StageProgress::Pending | StageProgress::Running => {
                        let op = status.operation.clone().unwrap_or_default();
                        if parse_time(op.deadline.as_ref()).is_some_and(|d| now > d) {
                            status.operation = Some(OperationStatus {
                                state: format!("failed:{}", stage.as_str()),
                                ..op
                            });
                            let msg = format!("blue/green candidate {}: the {} stage did not finish in time; traffic stays on workspace {}", candidate.id, stage.as_str(), current.id);
                            return Ok((
                                Readiness::not_ready(Reason::StageTimeout, msg.clone()),
                                SyncState::Stalled {
                                    reason: Reason::StageTimeout,
                                    message: msg,
                                },
                                None,
                            ));
                        }
                        return Ok(progressing(
                            Reason::StageRunning,
                            format!(
                                "candidate {}: the {} stage is in progress",
                                candidate.id,
                                stage.as_str()
                            ),
                        ));
                    }
                }
            }
        };
        let Some(stage) = next else {
            return Ok(progressing(Reason::StageRunning, "nothing to run".into()));
        };
        self.start_stage(candidate.id, stage, profile.as_deref())
            .await?;
        status.operation = Some(OperationStatus {
            id: Some(candidate.id.to_string()),
            ..start(stage)
        });
        notes.push(Note::normal(
            Reason::StageStarted,
            "BlueGreen",
            format!(
                "candidate {}: started the {} stage",
                candidate.id,
                stage.as_str()
            ),
        ));
        Ok(progressing(
            Reason::StageRunning,
            format!(
                "candidate {}: the {} stage is in progress",
                candidate.id,
                stage.as_str()
            ),
        ))
    }
}

fn stage_statuses(stage: Stage, elements: &[StageElement]) -> Vec<StageStatus> {
    elements
        .iter()
        .map(|e| StageStatus {
            name: stage.as_str().into(),
            state: e.state.clone(),
            message: Some(format!("server {} replica {}", e.server, e.replica)),
        })
        .collect()
}

#[async_trait]
impl WorkspaceDriver for Codesphere {
    async fn reconcile(
        &self,
        request: &WorkspaceRequest<'_>,
        guard: &dyn CreateGuard,
    ) -> Result<Report<WorkspaceStatus>, ReconcileError> {
        let team_id = team_of(request, self.default_team())?;
        let plans = self.plans().await.map_err(user_or_platform)?;
        let plan = resolve_plan(request.spec.plan.as_deref(), request.spec.replicas, &plans)?;
        let list = self
            .workspaces_of(team_id)
            .await
            .map_err(user_or_platform)?;
        let observe_only = request.mode.observing();
        let act = request.mode.act();
        let adopt = request.spec.adopt_by_name || observe_only;
        let mut status = request.previous.clone();
        let mut notes = Vec::new();
        status.selector = Some(format!(
            "bosun.dev/workspace={}",
            request.key.replace('/', ".")
        ));

        let mut located = locate(
            &list,
            known_id(request)?,
            &request.external_name,
            request.create_pending,
            adopt,
        );
        let fresh;
        let gone = matches!(located, Located::Gone(_));
        let interrupted = act && request.create_pending && matches!(located, Located::Absent);
        if gone || interrupted {
            // A shared listing may predate a create: before concluding that a known workspace
            // is gone, or creating after an interrupted create (which may have gone through),
            // look again in a fresh listing so nothing is doubled. Without the marker bosun
            // never sent a create for this object, and the shared listing is good enough.
            self.forget_list(team_id).await;
            fresh = self
                .workspaces_of(team_id)
                .await
                .map_err(user_or_platform)?;
            located = locate(
                &fresh,
                known_id(request)?,
                &request.external_name,
                request.create_pending,
                adopt,
            );
        }
        let ws = match located {
            Located::Found(ws) => {
                if status.external_id.as_deref() != Some(ws.id.to_string().as_str()) {
                    if act {
                        guard.created(&ws.id.to_string()).await?;
                    }
                    notes.push(Note::normal(
                        Reason::Adopted,
                        "Adopt",
                        format!("manages Codesphere workspace {} ({})", ws.id, ws.name),
                    ));
                    status.external_id = Some(ws.id.to_string());
                }
                ws.clone()
            }
            Located::Gone(id) if request.spec.external_id.is_some() || !act => {
                return Err(ReconcileError::user(
                    Reason::ExternalObjectNotFound,
                    format!("Codesphere workspace {id} does not exist in team {team_id}"),
                ));
            }
            Located::NameTaken(ws) => {
                return Err(ReconcileError::user(
                    Reason::NameTaken,
                    format!(
                        "team {team_id} already has a workspace named {:?} (id {}) that bosun did not create: set spec.adoptByName: true or spec.externalId: \"{}\" to manage it, or spec.externalName to use another name",
                        ws.name, ws.id, ws.id
                    ),
                ));
            }
            Located::Ambiguous(n) => {
                return Err(ReconcileError::user(
                    Reason::CreateOutcomeUnknown,
                    format!(
                        "an interrupted create left {n} workspaces named {:?} in team {team_id}: delete the extra ones, or set spec.externalId to the one to keep",
                        request.external_name
                    ),
                ));
            }
            Located::Absent if !act => {
                let msg = if observe_only {
                    format!(
                        "no workspace named {:?} in team {team_id} to observe",
                        request.external_name
                    )
                } else {
                    "paused before the workspace was created".to_string()
                };
                return Ok(Report {
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
                });
            }
            gone_or_absent @ (Located::Absent | Located::Gone(_)) => {
                if let Located::Gone(id) = gone_or_absent {
                    notes.push(Note::warning(
                        Reason::DriftCorrected,
                        "Create",
                        format!("workspace {id} was deleted at the platform; creating it again"),
                    ));
                    status.source_ref = None;
                    status.operation = None;
                }
                guard.before_create().await?;
                let created = self
                    .create_workspace(&self.create_body(request, team_id, plan.id))
                    .await
                    .map_err(user_or_platform)?;
                // The shared listing is not forgotten: the next look finds the new id missing
                // from a stale one as `Gone`, which reads a fresh listing first.
                guard.created(&created.id.to_string()).await?;
                notes.push(Note::normal(
                    Reason::Created,
                    "Create",
                    format!(
                        "created Codesphere workspace {} in team {team_id}",
                        created.id
                    ),
                ));
                status.external_id = Some(created.id.to_string());
                status.url = url_of(&created);
                status.replicas = Some(created.replicas);
                return Ok(Report {
                    status,
                    readiness: Readiness::not_ready(
                        Reason::Creating,
                        "waiting for the workspace to start",
                    ),
                    sync: SyncState::Progressing {
                        reason: Reason::Creating,
                        message: format!("workspace {} is starting", created.id),
                    },
                    requeue_after: Some(STAGE_POLL),
                    notes,
                    plan: Default::default(),
                });
            }
        };
        status.url = url_of(&ws);
        status.replicas = Some(ws.replicas);

        // Plan and replicas.
        let (update, drift) = plan_update(&ws, plan.id, request.spec.replicas, request.is_drift());
        if !update.is_empty() && act {
            self.update_workspace(ws.id, &update)
                .await
                .map_err(user_or_platform)?;
            self.forget_list(team_id).await;
            notes.extend(drift);
            if !request.is_drift() {
                notes.push(Note::normal(
                    Reason::Updated,
                    "Update",
                    format!(
                        "updated workspace {}: {}",
                        ws.id,
                        serde_json::to_string(&update).unwrap_or_default()
                    ),
                ));
            }
            status.replicas = Some(update.replicas.unwrap_or(ws.replicas));
        }

        // A new source with strategy BlueGreen: a candidate next to the current workspace.
        let desired_ref = request.spec.source.git_ref().to_string();
        let blue_green_due = request.spec.strategy == RolloutStrategy::BlueGreen
            && (status
                .operation
                .as_ref()
                .is_some_and(|o| o.kind == BLUE_GREEN)
                || status
                    .source_ref
                    .as_deref()
                    .is_some_and(|r| r != desired_ref));
        if blue_green_due && act {
            let (readiness, sync, requeue) = self
                .drive_blue_green(request, team_id, plan.id, &ws, &mut status, &mut notes)
                .await?;
            return Ok(Report {
                status,
                readiness,
                sync,
                requeue_after: requeue,
                notes,
                plan: Default::default(),
            });
        }

        // Cheap drift checks (existence, plan, replicas) come from the team listing on every
        // poll; the run stage and variables cost calls per workspace, so they are read only
        // when something may have changed, or every `DEEP_CHECK_INTERVAL` (or the object's own poll interval).
        let env_print = env_fingerprint(&request.env);
        if !self.deep_checks.due(request, &status, ws.id, env_print) {
            let readiness = Readiness::ready(
                Reason::Available,
                format!("workspace {} matches the spec", ws.id),
            );
            return Ok(Report::settled(status, notes, readiness, observe_only));
        }

        // While a stage bosun started runs, with the same spec and the same variables as when
        // it started, the workspace runs and its variables are as bosun set them: only the
        // stage needs a look. (Drift in between is seen at the next deep check.)
        let tracking = status
            .operation
            .as_ref()
            .is_some_and(|o| stage_named(&o.state).is_some())
            && request.is_drift()
            && !request.mode.requested
            && self
                .deep_checks
                .last(ws.id)
                .is_some_and(|(_, print)| print == env_print);
        let mut env_changed = false;
        if !tracking {
            // Pipeline calls answer 400 until the workspace runs. A workspace that was Ready, with
            // the same spec and nothing in flight, ran at the last look: its pipeline is read
            // directly, and asked whether it runs only if that read is refused.
            let was_running =
                request.is_drift() && status.operation.is_none() && was_ready(&status);
            if !was_running && !self.is_running(ws.id).await.map_err(user_or_platform)? {
                let (readiness, sync, requeue_after) = starting(ws.id);
                return Ok(Report {
                    status,
                    readiness,
                    sync,
                    requeue_after,
                    notes,
                    plan: Default::default(),
                });
            }

            // Environment variables: only changed names written, removed ones deleted.
            let observed_env = self.list_env(ws.id).await.map_err(user_or_platform)?;
            let (set, delete) = plan_env(&observed_env, &request.env);
            env_changed = act && (!set.is_empty() || !delete.is_empty());
            if env_changed {
                if !set.is_empty() {
                    self.set_env(ws.id, &set).await.map_err(user_or_platform)?;
                }
                if !delete.is_empty() {
                    self.delete_env(ws.id, &delete)
                        .await
                        .map_err(user_or_platform)?;
                }
                let names: Vec<&str> = set
                    .iter()
                    .map(|e| e.name.as_str())
                    .chain(delete.iter().map(String::as_str))
                    .collect();
                // A rotated Secret and an edit in the platform's UI look the same from here, so
                // this is reported as an update naming the variables, not counted as drift.
                notes.push(Note::normal(
                    Reason::EnvUpdated,
                    "Update",
                    format!(
                        "set {} and removed {} environment variables: {}",
                        set.len(),
                        delete.len(),
                        names.join(", ")
                    ),
                ));
            }
        }

        let (readiness, sync, requeue) = self
            .drive_pipeline(request, &ws, &mut status, &mut notes, env_changed)
            .await?;
        let sync = if observe_only {
            SyncState::Observing
        } else {
            sync
        };
        // Ready, or a stage started with the variables just read: what is at the platform is
        // known as of now.
        if readiness.ready || (!tracking && status.operation.is_some()) {
            self.deep_checks.done(ws.id, env_print);
        }
        Ok(Report {
            status,
            readiness,
            sync,
            requeue_after: requeue,
            notes,
            plan: Default::default(),
        })
    }

    async fn delete(&self, request: &WorkspaceRequest<'_>) -> Result<Cleanup, ReconcileError> {
        let mut ids: Vec<i64> = known_id(request)?.into_iter().collect();
        // A blue/green candidate (or the old workspace being retired) goes too.
        if let Some(op) = request
            .previous
            .operation
            .as_ref()
            .filter(|o| o.kind == BLUE_GREEN)
        {
            ids.extend(op.id.as_deref().and_then(|i| i.parse::<i64>().ok()));
        }
        // An interrupted create left no id: find it by name so it does not leak.
        if ids.is_empty() && request.create_pending {
            let team_id = team_of(request, self.default_team())?;
            self.forget_list(team_id).await;
            let list = self.workspaces_of(team_id).await?;
            ids.extend(
                list.iter()
                    .filter(|w| w.name == request.external_name)
                    .map(|w| w.id),
            );
        }
        let mut notes = Vec::new();
        let mut pending = Vec::new();
        for id in ids {
            let Some(ws) = self.get_workspace(id).await? else {
                continue;
            };
            self.delete_workspace(id).await?;
            self.forget_list(ws.team_id).await;
            // Deletion is not documented as synchronous: confirm before letting go.
            if self.get_workspace(id).await?.is_some() {
                pending.push(id.to_string());
            } else {
                notes.push(Note::normal(
                    Reason::Deleted,
                    "Delete",
                    format!("deleted Codesphere workspace {id}"),
                ));
            }
        }
        if pending.is_empty() {
            Ok(Cleanup::Done(notes))
        } else {
            Ok(Cleanup::InProgress(
                STAGE_POLL,
                format!(
                    "waiting for Codesphere to delete workspace {}",
                    pending.join(", ")
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(id: i64, title: &str, max: i32, deprecated: bool) -> Plan {
        Plan {
            id,
            title: title.into(),
            deprecated,
            max_replicas: max,
        }
    }

    fn plans() -> Vec<Plan> {
        vec![
            plan(1, "Free", 1, true),
            plan(8, "Micro", 3, false),
            plan(20, "Boost", 5, false),
        ]
    }

    fn ws(id: i64, name: &str) -> Workspace {
        Workspace {
            id,
            team_id: 1,
            name: name.into(),
            plan_id: 8,
            replicas: 1,
            git_url: None,
            initial_branch: None,
            dev_domain: None,
            base_image: None,
            restricted: false,
        }
    }

    fn el(server: &str, state: &str, started: Option<&str>) -> StageElement {
        StageElement {
            state: state.into(),
            started_at: started.map(String::from),
            finished_at: None,
            replica: "0".into(),
            server: server.into(),
        }
    }

    #[test]
    fn plans_resolve_by_title_or_id_with_limits() {
        let p = plans();
        assert_eq!(resolve_plan(None, 1, &p).unwrap().id, 8);
        assert_eq!(resolve_plan(Some("boost"), 5, &p).unwrap().id, 20);
        assert_eq!(resolve_plan(Some("20"), 1, &p).unwrap().id, 20);
        for (wanted, says) in [("Giant", "Micro (8)"), ("Free", "deprecated")] {
            let e = resolve_plan(Some(wanted), 1, &p).unwrap_err();
            assert_eq!(e.reason(), Reason::UnknownPlan);
            assert!(e.to_string().contains(says), "{e}");
        }
        let e = resolve_plan(Some("Micro"), 4, &p).unwrap_err();
        assert_eq!(e.reason(), Reason::PlanLimitExceeded);
        assert!(
            e.to_string().starts_with("spec.replicas") && e.to_string().contains("at most 3"),
            "{e}"
        );
    }

    #[test]
    fn locate_by_id_name_and_marker() {
        let list = vec![ws(1, "a"), ws(2, "b"), ws(3, "dup"), ws(4, "dup")];
        assert_eq!(
            locate(&list, Some(2), "x", false, false),
            Located::Found(&list[1])
        );
        assert_eq!(locate(&list, Some(9), "a", false, false), Located::Gone(9));
        assert_eq!(locate(&list, None, "new", false, false), Located::Absent);
        assert_eq!(
            locate(&list, None, "a", false, false),
            Located::NameTaken(&list[0])
        );
        assert_eq!(
            locate(&list, None, "a", true, false),
            Located::Found(&list[0])
        );
        assert_eq!(
            locate(&list, None, "a", false, true),
            Located::Found(&list[0])
        );
        assert_eq!(
            locate(&list, None, "dup", true, false),
            Located::Ambiguous(2)
        );
    }

    #[test]
    fn update_patches_only_what_differs_and_names_drift() {
        let w = ws(1, "a");
        let (u, notes) = plan_update(&w, 8, 1, true);
        assert!(u.is_empty() && notes.is_empty());
        let (u, notes) = plan_update(&w, 20, 3, true);
        assert_eq!(
            u,
            UpdateWorkspace {
                plan_id: Some(20),
                replicas: Some(3),
                name: None
            }
        );
        assert_eq!(notes.len(), 2);
        assert!(
            notes[1].message.contains("from 1 to 3"),
            "{}",
            notes[1].message
        );
        assert_eq!(notes[1].drift_field.as_deref(), Some("spec.replicas"));
        let (_, notes) = plan_update(&w, 20, 3, false);
        assert!(notes.is_empty(), "a spec change is not drift");
    }

    #[test]
    fn env_diff_writes_changes_and_deletes_removed() {
        let observed = vec![
            EnvVar {
                name: "A".into(),
                value: "1".into(),
            },
            EnvVar {
                name: "B".into(),
                value: "2".into(),
            },
            EnvVar {
                name: "OLD".into(),
                value: "x".into(),
            },
        ];
        let desired = BTreeMap::from([
            ("A".to_string(), "1".to_string()),
            ("B".to_string(), "3".to_string()),
            ("C".to_string(), "4".to_string()),
        ]);
        let (set, delete) = plan_env(&observed, &desired);
        assert_eq!(
            set,
            vec![
                EnvVar {
                    name: "B".into(),
                    value: "3".into()
                },
                EnvVar {
                    name: "C".into(),
                    value: "4".into()
                }
            ]
        );
        assert_eq!(delete, vec!["OLD".to_string()]);
        let (set, delete) = plan_env(
            &set,
            &BTreeMap::from([
                ("B".to_string(), "3".to_string()),
                ("C".to_string(), "4".to_string()),
            ]),
        );
        assert!(set.is_empty() && delete.is_empty());
    }

    #[test]
    fn prepare_finishes_on_the_ide_server_only() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let fresh = Some("2026-01-01T00:00:01Z");
        let stale = Some("2025-12-31T23:00:00Z");
        let e = vec![
            el(IDE_SERVER, "success", fresh),
            el("web", "running", fresh),
        ];
        assert_eq!(
            stage_progress(Stage::Prepare, &e, Some(t0)),
            StageProgress::Succeeded
        );
        let e = vec![el(IDE_SERVER, "running", fresh)];
        assert_eq!(
            stage_progress(Stage::Prepare, &e, Some(t0)),
            StageProgress::Running
        );
        // The previous run's success does not count.
        let e = vec![el(IDE_SERVER, "success", stale)];
        assert_eq!(
            stage_progress(Stage::Prepare, &e, Some(t0)),
            StageProgress::Pending
        );
        let e = vec![el(IDE_SERVER, "failure", fresh)];
        assert!(
            matches!(stage_progress(Stage::Prepare, &e, Some(t0)), StageProgress::Failed(m) if m.contains("prepare stage ended in failure"))
        );
        assert_eq!(
            stage_progress(Stage::Prepare, &[], Some(t0)),
            StageProgress::Pending
        );
    }

    #[test]
    fn run_needs_every_service_replica_running() {
        let e = vec![
            el(IDE_SERVER, "success", None),
            el("web", "running", None),
            el("api", "running", None),
        ];
        assert_eq!(
            stage_progress(Stage::Run, &e, None),
            StageProgress::Succeeded
        );
        let e = vec![el("web", "running", None), el("api", "waiting", None)];
        assert_eq!(stage_progress(Stage::Run, &e, None), StageProgress::Running);
        // Only the IDE server: nothing runs.
        assert_eq!(
            stage_progress(Stage::Run, &[el(IDE_SERVER, "running", None)], None),
            StageProgress::Pending
        );
        let e = vec![el("web", "aborted", None)];
        assert!(matches!(
            stage_progress(Stage::Run, &e, None),
            StageProgress::Failed(_)
        ));
    }

    #[test]
    fn rollout_order_follows_the_spec() {
        assert_eq!(
            rollout_stages(true, true, RunState::Running),
            vec![Stage::Prepare, Stage::Test, Stage::Run]
        );
        assert_eq!(
            rollout_stages(true, false, RunState::Stopped),
            vec![Stage::Prepare]
        );
        assert_eq!(
            rollout_stages(false, false, RunState::Running),
            vec![Stage::Run]
        );
        assert!(rollout_stages(false, false, RunState::Stopped).is_empty());
    }

    #[test]
    fn stage_timeout_reads_the_spec() {
        assert_eq!(stage_timeout(None), DEFAULT_STAGE_TIMEOUT);
        assert_eq!(stage_timeout(Some("90s")), Duration::from_secs(90));
        assert_eq!(stage_timeout(Some("1h30m")), Duration::from_secs(5400));
    }
}
