//! Workspaces on Codesphere, on the plan seam.
//!
//! - **observe** reads the team listing, then only the per-workspace reads this poll needs
//!   (whether it runs, its variables, the stage in flight, the run stage, the deployed commit,
//!   the domains). Which ones is the plan's to say: observe asks [`decide`] what it is missing
//!   until it misses nothing, so the reads and the decisions are written once.
//! - **plan** ([`decide`], pure) gives the whole rollout: create, plan and replicas, variables,
//!   git pull, and a start and an await per pipeline stage; or a blue/green candidate's
//!   create, stages, switch and the retirement of the old workspace. Steps after the first
//!   `await` are sent by later reconciles, from `status.operation`.
//! - **execute** sends one step.

use super::client::{
    Codesphere, CreateWorkspace, EnvVar, Plan as Offer, Stage, StageElement, UpdateWorkspace,
    Workspace,
};
use super::mapping::{
    candidate_name, plan_env, plan_update, resolve_plan, rollout_stages, stage_progress,
    stage_timeout, StageProgress, BLUE_GREEN, STAGE_POLL,
};
use crate::api::{
    GitRef, OperationStatus, RolloutStrategy, RunState, StageStatus, WorkspaceStatus,
};
use crate::core::conditions::{Readiness, SyncState};
use crate::core::deletion;
use crate::core::drivers::{
    env_fingerprint, was_ready, CreateGuard, WorkspaceDriver, WorkspaceRequest,
};
use crate::core::error::ReconcileError;
use crate::core::locate::{place, Placement, Record, Words};
use crate::core::plan::{
    self, need, Change, Flow, ObjectId, Plan, PlanSeam, Planned, Step, StepAction, Target,
};
use crate::core::reason::Reason;
use crate::core::reconciler::{Cleanup, Note, Report};
use crate::core::seam::ErrorKind;
use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// A read the plan needs before it can decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// The team listing again, not a shared one that may predate a create.
    FreshListing,
    /// Whether the per-workspace reads are due ([`crate::core::drivers::DeepChecks`]).
    DeepCheck(i64),
    Running(i64),
    Env(i64),
    Stage(i64, Stage),
    Head(i64),
    /// Whether a domain still routes to the workspace.
    Routed(i64),
}

/// What Codesphere showed for one Workspace.
#[derive(Clone, Debug)]
pub struct Observed {
    pub team: i64,
    pub offers: Arc<Vec<Offer>>,
    pub workspaces: Arc<Vec<Workspace>>,
    /// `workspaces` was read for this reconcile, not shared from before.
    pub fresh: bool,
    /// Per workspace: (per-object reads due, variables the same as at the last check).
    pub deep: BTreeMap<i64, (bool, bool)>,
    pub running: BTreeMap<i64, bool>,
    pub env: BTreeMap<i64, Vec<EnvVar>>,
    /// `None`: the read was refused because the workspace does not run.
    pub stages: BTreeMap<(i64, Stage), Option<Vec<StageElement>>>,
    pub heads: BTreeMap<i64, Option<String>>,
    pub routed: BTreeMap<i64, bool>,
    pub at: Timestamp,
}

type Halt = plan::Halt<Read>;

impl Observed {
    /// The team's listing and the plans on offer, before any per-workspace read.
    pub fn new(team: i64, offers: Arc<Vec<Offer>>, workspaces: Arc<Vec<Workspace>>) -> Self {
        Observed {
            team,
            offers,
            workspaces,
            fresh: false,
            deep: BTreeMap::new(),
            running: BTreeMap::new(),
            env: BTreeMap::new(),
            stages: BTreeMap::new(),
            heads: BTreeMap::new(),
            routed: BTreeMap::new(),
            at: Timestamp::now(),
        }
    }
}

/// The call a step makes.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    Create(CreateWorkspace),
    /// A blue/green candidate, found again by its name after a crash.
    CreateCandidate(CreateWorkspace),
    Update {
        body: UpdateWorkspace,
        team: i64,
    },
    SetEnv(Vec<EnvVar>),
    DeleteEnv(Vec<String>),
    Pull {
        branch: String,
    },
    /// `best_effort`: before a start, so the new code is picked up; refused when not running.
    StopRun {
        best_effort: bool,
    },
    StartStage {
        stage: Stage,
        profile: Option<String>,
    },
    Delete {
        team: i64,
    },
    Await,
}

/// How the report changes once a step went through.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Then {
    pub notes: Vec<Note>,
    pub replicas: Option<i32>,
    /// `Some(op)`: `status.operation` becomes `op`.
    pub operation: Option<Option<OperationStatus>>,
    pub outcome: Option<Outcome>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Progress(Reason, String),
    Ready(Reason, String),
    Stall(Reason, String),
}

/// The request a Codesphere step carries.
#[derive(Clone, Debug, PartialEq)]
pub struct CsOp {
    pub call: Call,
    pub then: Then,
}

/// What Codesphere answers a step with.
#[derive(Clone, Debug)]
pub enum CsAnswer {
    Created(Box<Workspace>),
    Done,
}

/// Readiness, sync and requeue of a report.
type Verdict = (Readiness, SyncState, Option<Duration>);

fn progressing(reason: Reason, message: String) -> Verdict {
    (
        Readiness::not_ready(reason, message.clone()),
        SyncState::Progressing { reason, message },
        Some(STAGE_POLL),
    )
}

fn stalled(reason: Reason, message: String) -> Verdict {
    (
        Readiness::not_ready(reason, message.clone()),
        SyncState::Stalled { reason, message },
        None,
    )
}

/// A workspace that does not run yet (or any more): pipeline calls would be refused.
fn starting(id: i64) -> Verdict {
    (
        Readiness::not_ready(Reason::Starting, "the workspace is not running yet"),
        SyncState::Progressing {
            reason: Reason::Starting,
            message: format!("waiting for workspace {id} to run"),
        },
        Some(STAGE_POLL),
    )
}

pub(super) fn team_of(
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

pub(super) fn known_id(request: &WorkspaceRequest<'_>) -> Result<Option<i64>, ReconcileError> {
    request.known_id_as("a Codesphere workspace id (a number)")
}

fn url_of(ws: &Workspace) -> Option<String> {
    ws.dev_domain.as_ref().map(|d| format!("https://{d}"))
}

fn create_body(request: &WorkspaceRequest<'_>, team_id: i64, plan_id: i64) -> CreateWorkspace {
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

fn stage_named(name: &str) -> Option<Stage> {
    match name {
        "prepare" => Some(Stage::Prepare),
        "test" => Some(Stage::Test),
        "run" => Some(Stage::Run),
        _ => None,
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

fn workspace(id: ObjectId, name: &str) -> Target {
    Target {
        kind: "workspace",
        name: name.to_string(),
        id,
    }
}

fn known(ws: &Workspace) -> Target {
    workspace(ObjectId::Known(ws.id.to_string()), &ws.name)
}

fn step(
    action: StepAction,
    target: &Target,
    summary: String,
    call: Call,
    then: Then,
) -> Step<CsOp> {
    Step {
        action,
        target: target.clone(),
        changes: Vec::new(),
        drift: false,
        summary,
        deadline: None,
        record: None,
        op: CsOp { call, then },
    }
}

fn await_step(target: &Target, summary: String, deadline: Option<Duration>) -> Step<CsOp> {
    Step {
        deadline,
        ..step(
            StepAction::Await,
            target,
            summary,
            Call::Await,
            Then::default(),
        )
    }
}

/// What the stages of one rollout share.
struct Rollout<'a> {
    kind: &'a str,
    generation: i64,
    now: Timestamp,
    timeout: Duration,
    profile: Option<String>,
    /// Who the stages run on, for messages: `` or `candidate 70002: `.
    on: String,
    /// `status.operation.id`: the candidate's id in a blue/green rollout.
    id: Option<String>,
    /// Stop the run stage before starting it, so a running one restarts with the new code
    /// and variables (a candidate's has never run).
    restart_run: bool,
}

impl Rollout<'_> {
    fn operation(&self, stage: Stage) -> OperationStatus {
        OperationStatus {
            id: self.id.clone(),
            ..operation(self.kind, stage, self.generation, self.now, self.timeout)
        }
    }

    /// Pushes a stage's start (after stopping the run stage, so a run restarts with the new
    /// code and variables) and its await.
    fn push(&self, plan: &mut Plan<CsOp>, target: &Target, stage: Stage, note: Note) {
        if stage == Stage::Run && self.restart_run {
            plan.push(step(
                StepAction::Update,
                target,
                format!("{}stop the run stage before starting it again", self.on),
                Call::StopRun { best_effort: true },
                Then::default(),
            ));
        }
        let in_progress = format!(
            "{}the {} stage of the {} is in progress",
            self.on,
            stage.as_str(),
            self.kind
        );
        plan.push(Step {
            changes: vec![Change::new(
                "status.operation",
                None,
                Some(format!("{} {}", self.kind, stage.as_str())),
            )],
            ..step(
                StepAction::Start,
                target,
                format!("{}start the {} stage", self.on, stage.as_str()),
                Call::StartStage {
                    stage,
                    profile: self.profile.clone(),
                },
                Then {
                    notes: vec![note],
                    operation: Some(Some(self.operation(stage))),
                    outcome: Some(Outcome::Progress(Reason::StageRunning, in_progress)),
                    ..Then::default()
                },
            )
        });
        plan.push(await_step(
            target,
            format!(
                "{}follow the {} stage until it ends",
                self.on,
                stage.as_str()
            ),
            Some(self.timeout),
        ));
    }

    /// Pushes the stages that follow, as later reconciles will send them.
    fn push_rest(&self, plan: &mut Plan<CsOp>, target: &Target, stages: &[Stage]) {
        for stage in stages {
            let note = Note::normal(
                Reason::StageStarted,
                "Rollout",
                format!("{}started the {} stage", self.on, stage.as_str()),
            );
            self.push(plan, target, *stage, note);
        }
    }
}

/// The stages after `stage` in `stages`.
fn after(stages: &[Stage], stage: Stage) -> Vec<Stage> {
    stages
        .iter()
        .skip_while(|s| **s != stage)
        .skip(1)
        .copied()
        .collect()
}

/// What [`decide`] gives besides the plan: whether the per-object reads were made, for the
/// deep-check record.
pub struct Decided {
    pub planned: Planned<CsOp, WorkspaceStatus>,
    /// The workspace whose variables and pipeline were read, and whether only the stage in
    /// flight was looked at.
    pub deep_checked: Option<(i64, bool)>,
}

/// The plan for one Workspace (pure).
pub fn decide(request: &WorkspaceRequest<'_>, o: &Observed) -> Result<Decided, Halt> {
    let team = o.team;
    let offer = resolve_plan(
        request.spec.plan.as_deref(),
        request.spec.replicas,
        &o.offers,
    )?;
    let observe_only = request.mode.observing();
    let act = request.mode.act();
    let mut status = request.previous.clone();
    status.selector = Some(format!(
        "bosun.dev/workspace={}",
        request.key.replace('/', ".")
    ));
    let mut notes = Vec::new();
    let mut plan = Plan::default();
    let mut adopt = None;
    let done = |plan, status, notes, verdict: Verdict, adopt, deep_checked| {
        let (readiness, sync, requeue_after) = verdict;
        Ok(Decided {
            planned: Planned {
                plan,
                report: Report {
                    status,
                    readiness,
                    sync,
                    requeue_after,
                    notes,
                    plan: Default::default(),
                },
                adopt,
            },
            deep_checked,
        })
    };

    let (within, by) = (
        format!("team {team}"),
        format!("named {:?}", request.external_name),
    );
    let words = Words {
        kind: "Codesphere workspace",
        within: &within,
        by: &by,
        renamable: true,
        extra: "delete",
    };
    let ws = match place(
        &o.workspaces,
        request,
        known_id(request)?,
        &request.external_name,
        (!o.fresh).then_some(Read::FreshListing),
        &words,
        Record {
            external_id: &mut status.external_id,
            notes: &mut notes,
            adopt: &mut adopt,
        },
    )? {
        Placement::Found(ws) => ws,
        Placement::Missing(msg) => {
            let verdict = (
                Readiness::not_ready(Reason::NotFound, msg.clone()),
                SyncState::Stalled {
                    reason: Reason::ExternalObjectNotFound,
                    message: msg,
                },
                None,
            );
            return done(plan, status, notes, verdict, adopt, None);
        }
        Placement::Create { gone } => {
            if let Some(id) = gone {
                notes.push(Note::warning(
                    Reason::DriftCorrected,
                    "Create",
                    format!("workspace {id} was deleted at the platform; creating it again"),
                ));
                status.source_ref = None;
                status.operation = None;
            }
            let verdict = plan_create(request, o, offer, &mut plan);
            // Paused: the create waits, and the plan shows it.
            let verdict = if act {
                verdict
            } else {
                (
                    Readiness::not_ready(
                        Reason::NotFound,
                        "paused before the workspace was created",
                    ),
                    SyncState::Synced,
                    None,
                )
            };
            return done(plan, status, notes, verdict, adopt, None);
        }
    };
    status.url = url_of(ws);
    status.replicas = Some(ws.replicas);
    let target = known(ws);

    // Plan and replicas.
    let drift = request.is_drift();
    let (update, changes) = plan_update(ws, offer.id, request.spec.replicas);
    if !update.is_empty() {
        let body = serde_json::to_string(&update).unwrap_or_default();
        let notes = if drift {
            Vec::new()
        } else {
            vec![Note::normal(
                Reason::Updated,
                "Update",
                format!("updated workspace {}: {body}", ws.id),
            )]
        };
        plan.push(Step {
            changes,
            drift,
            ..step(
                StepAction::Update,
                &target,
                update_summary(&update),
                Call::Update {
                    body: update.clone(),
                    team,
                },
                Then {
                    notes,
                    replicas: Some(update.replicas.unwrap_or(ws.replicas)),
                    ..Then::default()
                },
            )
        });
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
        let verdict =
            plan_blue_green(request, o, offer.id, ws, &mut status, &mut notes, &mut plan)?;
        return done(plan, status, notes, verdict, adopt, None);
    }

    // Cheap drift checks (existence, plan, replicas) come from the team listing on every
    // poll; the run stage and variables cost calls per workspace, so they are read only when
    // something may have changed, or every deep-check interval (or the object's own poll
    // interval).
    let (due, same_env) = *need(o.deep.get(&ws.id), Read::DeepCheck(ws.id))?;
    if !due {
        let readiness = Readiness::ready(
            Reason::Available,
            format!("workspace {} matches the spec", ws.id),
        );
        let report = Report::settled(status, notes, readiness, observe_only);
        return done(
            plan,
            report.status,
            report.notes,
            (report.readiness, report.sync, report.requeue_after),
            adopt,
            None,
        );
    }

    // While a stage bosun started runs, with the same spec and the same variables as when it
    // started, the workspace runs and its variables are as bosun set them: only the stage
    // needs a look. (Drift in between is seen at the next deep check.)
    let tracking = status
        .operation
        .as_ref()
        .is_some_and(|o| stage_named(&o.state).is_some())
        && drift
        && !request.mode.requested
        && same_env;
    let mut env_changed = false;
    if !tracking {
        // Pipeline calls answer 400 until the workspace runs. A workspace that was Ready, with
        // the same spec and nothing in flight, ran at the last look: its pipeline is read
        // directly, and asked whether it runs only if that read is refused.
        let was_running = drift && status.operation.is_none() && was_ready(&status);
        if !was_running && !*need(o.running.get(&ws.id), Read::Running(ws.id))? {
            return done(
                plan,
                status,
                notes,
                starting(ws.id),
                adopt,
                Some((ws.id, tracking)),
            );
        }
        let observed_env = need(o.env.get(&ws.id), Read::Env(ws.id))?;
        env_changed = plan_variables(request, &target, observed_env, &mut plan) && act;
    }

    let verdict = plan_pipeline(
        request,
        o,
        ws,
        &target,
        &mut status,
        &mut notes,
        &mut plan,
        env_changed,
    )?;
    let verdict = if observe_only {
        (verdict.0, SyncState::Observing, verdict.2)
    } else {
        verdict
    };
    done(plan, status, notes, verdict, adopt, Some((ws.id, tracking)))
}

/// What a PATCH does, for people: `scale to 3 replicas`, `move to plan 20`.
fn update_summary(update: &UpdateWorkspace) -> String {
    let plan = update.plan_id.map(|p| format!("move to plan {p}"));
    let replicas = update.replicas.map(|r| match r {
        1 => "scale to 1 replica".to_string(),
        r => format!("scale to {r} replicas"),
    });
    [plan, replicas]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" and ")
}

/// A new workspace: create it, wait for it to run, then its rollout's stages.
fn plan_create(
    request: &WorkspaceRequest<'_>,
    o: &Observed,
    offer: &Offer,
    plan: &mut Plan<CsOp>,
) -> Verdict {
    let body = create_body(request, o.team, offer.id);
    let desired_ref = request.spec.source.git_ref().to_string();
    let create = plan.push(Step {
        changes: vec![
            Change::new(
                "spec.source",
                None,
                Some(format!("{} {desired_ref}", request.spec.source.repository)),
            ),
            Change::new("spec.plan", None, Some(offer.title.clone())),
            Change::new(
                "spec.replicas",
                None,
                Some(request.spec.replicas.to_string()),
            ),
        ],
        ..step(
            StepAction::Create,
            &workspace(ObjectId::New, &body.name),
            format!("create workspace {} in team {}", body.name, o.team),
            Call::Create(body.clone()),
            Then::default(),
        )
    });
    let new = workspace(ObjectId::FromStep(create), &body.name);
    plan.push(await_step(
        &new,
        "wait for the workspace to run".into(),
        None,
    ));
    let pipeline = request.spec.pipeline.clone().unwrap_or_default();
    let rollout = in_place("rollout", request, o.at);
    rollout.push_rest(
        plan,
        &new,
        &rollout_stages(pipeline.prepare, pipeline.test, pipeline.run),
    );
    progressing(
        Reason::Creating,
        format!("workspace {} will be created in team {}", body.name, o.team),
    )
}

fn in_place<'a>(kind: &'a str, request: &WorkspaceRequest<'_>, now: Timestamp) -> Rollout<'a> {
    let pipeline = request.spec.pipeline.clone().unwrap_or_default();
    Rollout {
        kind,
        generation: request.generation,
        now,
        timeout: stage_timeout(pipeline.stage_timeout.as_deref()),
        profile: request
            .spec
            .codesphere
            .as_ref()
            .and_then(|c| c.profile.clone()),
        on: String::new(),
        id: None,
        restart_run: kind != BLUE_GREEN,
    }
}

/// Variables: only changed names written, removed ones deleted. Returns whether any change.
fn plan_variables(
    request: &WorkspaceRequest<'_>,
    target: &Target,
    observed: &[EnvVar],
    plan: &mut Plan<CsOp>,
) -> bool {
    let (set, delete) = plan_env(observed, &request.env);
    if set.is_empty() && delete.is_empty() {
        return false;
    }
    let secret_backed = request.spec.secret_backed_env();
    let names: Vec<&str> = set
        .iter()
        .map(|e| e.name.as_str())
        .chain(delete.iter().map(String::as_str))
        .collect();
    // A rotated Secret and an edit in the platform's UI look the same from here, so this is
    // reported as an update naming the variables, not counted as drift.
    let note = Note::normal(
        Reason::EnvUpdated,
        "Update",
        format!(
            "set {} and removed {} environment variables: {}",
            set.len(),
            delete.len(),
            names.join(", ")
        ),
    );
    let (set_note, delete_note) = if delete.is_empty() {
        (vec![note], Vec::new())
    } else {
        (Vec::new(), vec![note])
    };
    if !set.is_empty() {
        let changes = set
            .iter()
            .map(|e| {
                let from = observed
                    .iter()
                    .find(|o| o.name == e.name)
                    .map(|o| plan::shown(&o.value, secret_backed.contains(&o.name)));
                let to = plan::shown(&e.value, secret_backed.contains(&e.name));
                Change::new(&format!("spec.env[{}]", e.name), from, Some(to))
            })
            .collect();
        plan.push(Step {
            changes,
            ..step(
                StepAction::Update,
                target,
                format!("set {} environment variables", set.len()),
                Call::SetEnv(set),
                Then {
                    notes: set_note,
                    ..Then::default()
                },
            )
        });
    }
    if !delete.is_empty() {
        let changes = delete
            .iter()
            .map(|name| {
                Change::new(
                    &format!("spec.env[{name}]"),
                    Some("(set)".into()),
                    Some("(not set)".into()),
                )
            })
            .collect();
        plan.push(Step {
            changes,
            ..step(
                StepAction::Delete,
                target,
                format!("remove {} environment variables", delete.len()),
                Call::DeleteEnv(delete),
                Then {
                    notes: delete_note,
                    ..Then::default()
                },
            )
        });
    }
    true
}

/// The pipeline towards the spec: start the next stage, follow the one in flight, or hold
/// the run stage as the spec wants it.
#[allow(clippy::too_many_arguments)]
fn plan_pipeline(
    request: &WorkspaceRequest<'_>,
    o: &Observed,
    ws: &Workspace,
    target: &Target,
    status: &mut WorkspaceStatus,
    notes: &mut Vec<Note>,
    plan: &mut Plan<CsOp>,
    env_changed: bool,
) -> Result<Verdict, Halt> {
    let pipeline = request.spec.pipeline.clone().unwrap_or_default();
    let desired_ref = request.spec.source.git_ref().to_string();
    let act = request.mode.act();
    let now = o.at;
    let stages = rollout_stages(pipeline.prepare, pipeline.test, pipeline.run);
    let rollout = in_place("rollout", request, now);

    // A rollout that failed stays failed until the spec changes or a reconcile is requested.
    if let Some(op) = &status.operation {
        if let Some(stage) = op.state.strip_prefix("failed:") {
            if op.generation == Some(request.generation) && !request.mode.requested {
                return Ok(stalled(Reason::StageFailed, format!("the {stage} stage failed; fix the code or spec, or set bosun.dev/reconcile-requested-at to retry")));
            }
            status.operation = None;
        }
    }

    let needs_rollout = status.source_ref.as_deref() != Some(desired_ref.as_str());
    if status.operation.is_none() && act && needs_rollout {
        if let Some(previous_ref) = &status.source_ref {
            match request.spec.source.git_ref() {
                GitRef::Branch(branch) => {
                    plan.push(Step {
                        changes: vec![Change::new(
                            "spec.source.branch",
                            Some(previous_ref.clone()),
                            Some(desired_ref.clone()),
                        )],
                        ..step(
                            StepAction::Update,
                            target,
                            format!("git pull {desired_ref}"),
                            Call::Pull {
                                branch: branch.to_string(),
                            },
                            Then {
                                notes: vec![Note::normal(
                                    Reason::SourcePulled,
                                    "Rollout",
                                    format!("pulled {desired_ref} (was {previous_ref})"),
                                )],
                                ..Then::default()
                            },
                        )
                    });
                }
                other => {
                    return Err(ReconcileError::user(
                        Reason::UnsupportedByProvider,
                        format!("spec.source: Codesphere pulls branches in place; moving to {other} needs strategy BlueGreen or a new Workspace"),
                    ).into())
                }
            }
        }
        match stages.first() {
            Some(first) => {
                let note = Note::normal(
                    Reason::StageStarted,
                    "Rollout",
                    format!("started the {} stage for {desired_ref}", first.as_str()),
                );
                rollout.push(plan, target, *first, note);
                rollout.push_rest(plan, target, &after(&stages, *first));
                return Ok(progressing(
                    Reason::StageRunning,
                    format!(
                        "rolling out {desired_ref}: the {} stage starts",
                        first.as_str()
                    ),
                ));
            }
            None => status.source_ref = Some(desired_ref.clone()),
        }
    } else if status.operation.is_none() && act && env_changed && pipeline.run == RunState::Running
    {
        let note = Note::normal(
            Reason::StageStarted,
            "Restart",
            "restarted the run stage to apply changed environment variables",
        );
        in_place("restart", request, now).push(plan, target, Stage::Run, note);
        return Ok(progressing(
            Reason::StageRunning,
            "restarting the run stage to apply changed environment variables".into(),
        ));
    }

    // The run stage as read for the stage in flight, so it is not read twice.
    let mut run_read = None;
    if let Some(op) = status.operation.clone() {
        let Some(stage) = stage_named(&op.state) else {
            status.operation = None;
            return Ok((
                Readiness::not_ready(Reason::Unknown, ""),
                SyncState::Synced,
                Some(STAGE_POLL),
            ));
        };
        let Some(elements) = need(o.stages.get(&(ws.id, stage)), Read::Stage(ws.id, stage))? else {
            return Ok(starting(ws.id));
        };
        status.stages = stage_statuses(stage, elements);
        if stage == Stage::Run {
            run_read = Some(elements);
        }
        let in_progress = format!("{} stage of the {} is in progress", op.state, op.kind);
        match stage_progress(stage, elements, parse_time(op.started_at.as_ref())) {
            StageProgress::Succeeded => {
                let next = if op.kind == "rollout" {
                    after(&stages, stage).first().copied()
                } else {
                    None
                };
                match next {
                    Some(next) => {
                        if act {
                            let note = Note::normal(
                                Reason::StageStarted,
                                "Rollout",
                                format!("started the {} stage", next.as_str()),
                            );
                            let rollout = in_place("rollout", request, now);
                            rollout.push(plan, target, next, note);
                            rollout.push_rest(plan, target, &after(&stages, next));
                            return Ok(progressing(
                                Reason::StageRunning,
                                format!(
                                    "the {} stage finished; the {} stage starts",
                                    stage.as_str(),
                                    next.as_str()
                                ),
                            ));
                        }
                        return Ok(progressing(Reason::StageRunning, in_progress));
                    }
                    None => {
                        status.operation = None;
                        if op.kind == "rollout" {
                            status.source_ref = Some(desired_ref.clone());
                            status.deployed_revision =
                                need(o.heads.get(&ws.id), Read::Head(ws.id))?.clone();
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
                return Ok(stalled(
                    Reason::StageFailed,
                    format!("{why}; traffic stays on what ran before"),
                ));
            }
            StageProgress::Pending | StageProgress::Running => {
                let deadline = parse_time(op.deadline.as_ref());
                if deadline.is_some_and(|d| now > d) {
                    status.operation = Some(OperationStatus {
                        state: format!("failed:{}", stage.as_str()),
                        ..op.clone()
                    });
                    let timeout = stage_timeout(pipeline.stage_timeout.as_deref());
                    return Ok(stalled(
                        Reason::StageTimeout,
                        format!(
                            "the {} stage did not finish within {}",
                            stage.as_str(),
                            humantime::format_duration(timeout)
                        ),
                    ));
                }
                let left = deadline.and_then(|d| Duration::try_from(d.duration_since(now)).ok());
                plan.push(await_step(
                    target,
                    format!("follow the {} stage until it ends", stage.as_str()),
                    left,
                ));
                if op.kind == "rollout" {
                    rollout.push_rest(plan, target, &after(&stages, stage));
                }
                return Ok(progressing(Reason::StageRunning, in_progress));
            }
        }
    }

    // Steady state: the run stage as the spec wants it.
    let run = match run_read {
        Some(run) => run,
        None => match need(
            o.stages.get(&(ws.id, Stage::Run)),
            Read::Stage(ws.id, Stage::Run),
        )? {
            Some(run) => run,
            // Refused: the workspace stopped since it was last seen running.
            None => return Ok(starting(ws.id)),
        },
    };
    status.stages = stage_statuses(Stage::Run, run);
    let running = stage_progress(Stage::Run, run, None) == StageProgress::Succeeded;
    Ok(match (pipeline.run, running) {
        (RunState::Running, true) | (RunState::Stopped, false) => (
            Readiness::ready(
                Reason::Available,
                format!("workspace {} matches the spec", ws.id),
            ),
            SyncState::Synced,
            None,
        ),
        (RunState::Running, false) if act => {
            let restart = in_place("restart", request, now);
            plan.push(Step {
                changes: vec![Change::new(
                    "spec.pipeline.run",
                    Some("not running".into()),
                    Some("Running".into()),
                )],
                drift: true,
                ..step(
                    StepAction::Start,
                    target,
                    "start the run stage".into(),
                    Call::StartStage {
                        stage: Stage::Run,
                        profile: restart.profile.clone(),
                    },
                    Then {
                        operation: Some(Some(restart.operation(Stage::Run))),
                        outcome: Some(Outcome::Progress(
                            Reason::StageRunning,
                            "starting the run stage".into(),
                        )),
                        ..Then::default()
                    },
                )
            });
            plan.push(await_step(
                target,
                "follow the run stage until every service runs".into(),
                Some(restart.timeout),
            ));
            progressing(Reason::StageRunning, "starting the run stage".into())
        }
        (RunState::Stopped, true) if act => {
            plan.push(Step {
                changes: vec![Change::new(
                    "spec.pipeline.run",
                    Some("running".into()),
                    Some("Stopped".into()),
                )],
                ..step(
                    StepAction::Update,
                    target,
                    "stop the run stage".into(),
                    Call::StopRun { best_effort: false },
                    Then {
                        notes: vec![Note::normal(
                            Reason::StageStopped,
                            "Stop",
                            "stopped the run stage (spec.pipeline.run: Stopped)",
                        )],
                        outcome: Some(Outcome::Progress(
                            Reason::Stopping,
                            "stopping the run stage".into(),
                        )),
                        ..Then::default()
                    },
                )
            });
            progressing(Reason::Stopping, "stopping the run stage".into())
        }
        (RunState::Running, _) => (
            Readiness::not_ready(Reason::NotRunning, "the run stage is not running"),
            SyncState::Synced,
            None,
        ),
        (RunState::Stopped, _) => (
            Readiness::not_ready(
                Reason::Running,
                "the run stage runs but the spec says Stopped",
            ),
            SyncState::Synced,
            None,
        ),
    })
}

/// The steps that end a blue/green rollout: wait for the domain routes to leave the old
/// workspace, then delete it.
fn push_retire(
    plan: &mut Plan<CsOp>,
    team: i64,
    old: &Workspace,
    current: &Target,
    desired_ref: &str,
) {
    let old_target = known(old);
    plan.push(await_step(
        &old_target,
        format!("wait for domain routes to move off workspace {}", old.id),
        None,
    ));
    push_retire_delete(plan, team, old.id, &old_target, current, desired_ref);
}

fn push_retire_delete(
    plan: &mut Plan<CsOp>,
    team: i64,
    old: i64,
    old_target: &Target,
    current: &Target,
    desired_ref: &str,
) {
    let current_id = match &current.id {
        ObjectId::Known(id) => format!("workspace {id}"),
        _ => "the candidate".to_string(),
    };
    plan.push(step(
        StepAction::Delete,
        old_target,
        format!("delete the old workspace {old}"),
        Call::Delete { team },
        Then {
            notes: vec![Note::normal(
                Reason::Retired,
                "BlueGreen",
                format!("deleted the old workspace {old}; {desired_ref} serves all traffic"),
            )],
            operation: Some(None),
            outcome: Some(Outcome::Ready(
                Reason::Available,
                format!("{current_id} runs {desired_ref}"),
            )),
            ..Then::default()
        },
    ));
}

/// One step of a blue/green rollout: create the candidate, run its stages, switch the
/// Workspace (and so every DomainBinding route) to it, then retire the old workspace once no
/// domain routes to it. On failure traffic stays where it was.
fn plan_blue_green(
    request: &WorkspaceRequest<'_>,
    o: &Observed,
    plan_id: i64,
    current: &Workspace,
    status: &mut WorkspaceStatus,
    notes: &mut Vec<Note>,
    plan: &mut Plan<CsOp>,
) -> Result<Verdict, Halt> {
    let pipeline = request.spec.pipeline.clone().unwrap_or_default();
    let desired_ref = request.spec.source.git_ref().to_string();
    let now = o.at;
    let op = status.operation.clone().filter(|o| o.kind == BLUE_GREEN);

    // Retire: the Workspace already points at the candidate; `op.id` is the old one.
    if let Some(op) = op.as_ref().filter(|o| o.state == "retire") {
        let old: i64 = op
            .id
            .as_deref()
            .and_then(|i| i.parse().ok())
            .unwrap_or_default();
        let old_target = workspace(ObjectId::Known(old.to_string()), "");
        let routed = *need(o.routed.get(&old), Read::Routed(old))?;
        if routed {
            plan.push(await_step(
                &old_target,
                format!("wait for domain routes to move off workspace {old}"),
                None,
            ));
        }
        push_retire_delete(
            plan,
            o.team,
            old,
            &old_target,
            &known(current),
            &desired_ref,
        );
        let message = if routed {
            format!("waiting for domain routes to move off workspace {old}")
        } else {
            format!("no domain routes to workspace {old} any more: it is deleted next")
        };
        return Ok(progressing(Reason::SwitchingTraffic, message));
    }

    // A failed candidate stays failed until the spec changes or a reconcile is requested.
    if let Some(op) = op.as_ref().filter(|o| o.state.starts_with("failed:")) {
        if op.generation == Some(request.generation) && !request.mode.requested {
            return Ok(stalled(
                Reason::StageFailed,
                format!(
                    "blue/green candidate: the {} stage failed; traffic stays on workspace {}",
                    op.state.trim_start_matches("failed:"),
                    current.id
                ),
            ));
        }
    }

    // Find or create this generation's candidate, in a fresh listing: one created by an
    // interrupted reconcile is found by its name.
    if !o.fresh {
        return Err(Halt::Need(Read::FreshListing));
    }
    let name = candidate_name(&request.external_name, request.generation);
    let stages = rollout_stages(pipeline.prepare, pipeline.test, RunState::Running);
    let mut rollout = in_place(BLUE_GREEN, request, now);
    let Some(candidate) = o.workspaces.iter().find(|w| w.name == name) else {
        let mut body = create_body(request, o.team, plan_id);
        body.name = name.clone();
        let create = plan.push(Step {
            changes: vec![Change::new(
                "spec.source",
                status.source_ref.clone(),
                Some(desired_ref.clone()),
            )],
            ..step(
                StepAction::Create,
                // Found again by its name, so no create guard: `Known` by name.
                &workspace(ObjectId::Known(name.clone()), &name),
                format!("create candidate workspace {name} for {desired_ref}"),
                Call::CreateCandidate(body),
                Then {
                    // Its id is filled in from the answer.
                    operation: Some(Some(OperationStatus {
                        state: "starting".into(),
                        ..rollout.operation(Stage::Prepare)
                    })),
                    ..Then::default()
                },
            )
        });
        let new = workspace(ObjectId::FromStep(create), &name);
        plan.push(await_step(
            &new,
            "wait for the candidate to run".into(),
            None,
        ));
        rollout.on = "candidate: ".into();
        rollout.push_rest(plan, &new, &stages);
        push_retire(plan, o.team, current, &new, &desired_ref);
        return Ok(progressing(
            Reason::CandidateStarting,
            format!("candidate workspace {name} will be created for {desired_ref}"),
        ));
    };
    let cand = known(candidate);
    rollout.on = format!("candidate {}: ", candidate.id);
    rollout.id = Some(candidate.id.to_string());
    let stage_in_flight = op
        .as_ref()
        .filter(|o| o.id.as_deref() == Some(candidate.id.to_string().as_str()))
        .and_then(|o| stage_named(&o.state).map(|s| (s, parse_time(o.started_at.as_ref()))));
    let waiting_to_run = || {
        progressing(
            Reason::CandidateStarting,
            format!("waiting for candidate workspace {} to run", candidate.id),
        )
    };
    if !*need(o.running.get(&candidate.id), Read::Running(candidate.id))? {
        if stage_in_flight.is_none() {
            status.operation = Some(OperationStatus {
                state: "starting".into(),
                ..rollout.operation(Stage::Prepare)
            });
        }
        plan.push(await_step(
            &cand,
            "wait for the candidate to run".into(),
            None,
        ));
        rollout.push_rest(plan, &cand, &stages);
        push_retire(plan, o.team, current, &cand, &desired_ref);
        return Ok(waiting_to_run());
    }
    let next = match stage_in_flight {
        None => stages.first().copied(),
        Some((stage, since)) => {
            let key = (candidate.id, stage);
            let Some(elements) = need(o.stages.get(&key), Read::Stage(candidate.id, stage))? else {
                return Ok(waiting_to_run());
            };
            status.stages = stage_statuses(stage, elements);
            match stage_progress(stage, elements, since) {
                StageProgress::Succeeded => {
                    match after(&stages, stage).first() {
                        Some(next) => Some(*next),
                        None => {
                            // The candidate runs: switch, then retire the old workspace.
                            notes.push(Note::normal(
                            Reason::Switched,
                            "BlueGreen",
                            format!("workspace {} now serves {desired_ref}; domain routes move from {}", candidate.id, current.id),
                        ));
                            status.external_id = Some(candidate.id.to_string());
                            status.url = url_of(candidate);
                            status.source_ref = Some(desired_ref.clone());
                            status.deployed_revision =
                                need(o.heads.get(&candidate.id), Read::Head(candidate.id))?.clone();
                            status.operation = Some(OperationStatus {
                                id: Some(current.id.to_string()),
                                state: "retire".into(),
                                ..rollout.operation(Stage::Run)
                            });
                            push_retire(plan, o.team, current, &cand, &desired_ref);
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
                    let msg = format!(
                        "blue/green candidate {}: {why}; traffic stays on workspace {}",
                        candidate.id, current.id
                    );
                    plan.push(step(
                        StepAction::Delete,
                        &cand,
                        format!("delete the failed candidate {}", candidate.id),
                        Call::Delete { team: o.team },
                        Then {
                            operation: Some(Some(OperationStatus {
                                state: format!("failed:{}", stage.as_str()),
                                ..rollout.operation(stage)
                            })),
                            outcome: Some(Outcome::Stall(Reason::StageFailed, msg.clone())),
                            ..Then::default()
                        },
                    ));
                    return Ok(stalled(Reason::StageFailed, msg));
                }
                StageProgress::Pending | StageProgress::Running => {
                    let op = status.operation.clone().unwrap_or_default();
                    let deadline = parse_time(op.deadline.as_ref());
                    if deadline.is_some_and(|d| now > d) {
                        status.operation = Some(OperationStatus {
                            state: format!("failed:{}", stage.as_str()),
                            ..op
                        });
                        return Ok(stalled(Reason::StageTimeout, format!("blue/green candidate {}: the {} stage did not finish in time; traffic stays on workspace {}", candidate.id, stage.as_str(), current.id)));
                    }
                    let left =
                        deadline.and_then(|d| Duration::try_from(d.duration_since(now)).ok());
                    plan.push(await_step(
                        &cand,
                        format!(
                            "{}follow the {} stage until it ends",
                            rollout.on,
                            stage.as_str()
                        ),
                        left,
                    ));
                    rollout.push_rest(plan, &cand, &after(&stages, stage));
                    push_retire(plan, o.team, current, &cand, &desired_ref);
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
    let note = Note::normal(
        Reason::StageStarted,
        "BlueGreen",
        format!(
            "candidate {}: started the {} stage",
            candidate.id,
            stage.as_str()
        ),
    );
    rollout.push(plan, &cand, stage, note);
    rollout.push_rest(plan, &cand, &after(&stages, stage));
    push_retire(plan, o.team, current, &cand, &desired_ref);
    Ok(progressing(
        Reason::StageRunning,
        format!(
            "candidate {}: the {} stage starts",
            candidate.id,
            stage.as_str()
        ),
    ))
}

/// How many reads one observation may make before it stops asking (a workspace needs at most
/// about six: listing, deep check, running, variables, a stage, the commit).
const MAX_READS: usize = 12;

impl Codesphere {
    /// Makes one read the plan asked for.
    async fn read(
        &self,
        request: &WorkspaceRequest<'_>,
        o: &mut Observed,
        read: Read,
    ) -> Result<(), ReconcileError> {
        match read {
            Read::FreshListing => {
                self.forget_list(o.team).await;
                o.workspaces = self.workspaces_of(o.team).await?;
                o.fresh = true;
            }
            Read::DeepCheck(id) => {
                let print = env_fingerprint(&request.env);
                let due = self.deep_checks.due(request, request.previous, id, print);
                let same = self
                    .deep_checks
                    .last(id)
                    .is_some_and(|(_, last)| last == print);
                o.deep.insert(id, (due, same));
            }
            Read::Running(id) => {
                o.running.insert(id, self.is_running(id).await?);
            }
            Read::Env(id) => {
                o.env.insert(id, self.list_env(id).await?);
            }
            Read::Stage(id, stage) => {
                let elements = match self.stage_status(id, stage).await {
                    Ok(elements) => Some(elements),
                    // Refused: the workspace may have stopped since it was last seen running.
                    Err(e) if e.kind == ErrorKind::Invalid => {
                        let running = self.is_running(id).await?;
                        o.running.insert(id, running);
                        if running {
                            return Err(e.into());
                        }
                        None
                    }
                    Err(e) => return Err(e.into()),
                };
                o.stages.insert((id, stage), elements);
            }
            Read::Head(id) => {
                o.heads.insert(id, self.git_head(id).await.ok());
            }
            Read::Routed(id) => {
                let domains = self.list_domains(o.team).await?;
                let routed = domains
                    .iter()
                    .any(|d| d.workspaces.values().any(|ids| ids.contains(&id)));
                o.routed.insert(id, routed);
            }
        }
        Ok(())
    }
}

/// The plan, once observe has read what it needs.
fn decided(request: &WorkspaceRequest<'_>, o: &Observed) -> Result<Decided, ReconcileError> {
    plan::decided(decide(request, o))
}

fn workspace_id(target: &Target, answers: &[CsAnswer]) -> Result<i64, ReconcileError> {
    plan::resolve_id("a workspace", &target.id, answers, |a| match a {
        CsAnswer::Created(ws) => Some(ws.id.to_string()),
        CsAnswer::Done => None,
    })
}

#[async_trait]
impl<'r> PlanSeam<WorkspaceRequest<'r>, WorkspaceStatus> for Codesphere {
    type Answer = CsAnswer;
    type Op = CsOp;
    type Observation = Observed;

    async fn observe(&self, request: &WorkspaceRequest<'r>) -> Result<Observed, ReconcileError> {
        let team = team_of(request, self.default_team())?;
        let mut o = Observed::new(team, self.plans().await?, self.workspaces_of(team).await?);
        // The plan says which per-workspace reads it needs, one at a time.
        for _ in 0..MAX_READS {
            match decide(request, &o) {
                Err(Halt::Need(read)) => self.read(request, &mut o, read).await?,
                _ => break,
            }
        }
        Ok(o)
    }

    fn plan(
        &self,
        request: &WorkspaceRequest<'r>,
        observed: &Observed,
    ) -> Result<Planned<CsOp, WorkspaceStatus>, ReconcileError> {
        decided(request, observed).map(|d| d.planned)
    }

    async fn execute(
        &self,
        step: &Step<CsOp>,
        answers: &[CsAnswer],
    ) -> Result<CsAnswer, ReconcileError> {
        let id = || workspace_id(&step.target, answers);
        match &step.op.call {
            Call::Create(body) => {
                // The shared listing is not forgotten: the next look finds the new id missing
                // from a stale one as `Gone`, which reads a fresh listing first.
                let ws = self.create_workspace(body).await?;
                return Ok(CsAnswer::Created(Box::new(ws)));
            }
            Call::CreateCandidate(body) => {
                let ws = self.create_workspace(body).await?;
                self.forget_list(body.team_id).await;
                return Ok(CsAnswer::Created(Box::new(ws)));
            }
            Call::Update { body, team } => {
                self.update_workspace(id()?, body).await?;
                self.forget_list(*team).await;
            }
            Call::SetEnv(vars) => self.set_env(id()?, vars).await?,
            Call::DeleteEnv(names) => self.delete_env(id()?, names).await?,
            Call::Pull { branch } => self.git_pull(id()?, Some(("origin", branch))).await?,
            Call::StopRun { best_effort } => {
                let stopped = self.stop_stage(id()?, Stage::Run).await;
                // Before a start, a run stage that does not run refuses the stop: no matter.
                if !best_effort {
                    stopped?;
                }
            }
            Call::StartStage { stage, profile } => {
                self.start_stage(id()?, *stage, profile.as_deref()).await?
            }
            Call::Delete { team } => {
                self.delete_workspace(id()?).await?;
                self.forget_list(*team).await;
            }
            Call::Await => {}
        }
        Ok(CsAnswer::Done)
    }

    fn answered_id(&self, answer: &CsAnswer) -> Option<String> {
        match answer {
            CsAnswer::Created(ws) => Some(ws.id.to_string()),
            CsAnswer::Done => None,
        }
    }

    fn answered(
        &self,
        report: &mut Report<WorkspaceStatus>,
        step: &Step<CsOp>,
        answer: &CsAnswer,
    ) -> Flow {
        let then = &step.op.then;
        report.notes.extend(then.notes.iter().cloned());
        if let Some(replicas) = then.replicas {
            report.status.replicas = Some(replicas);
        }
        if let Some(operation) = &then.operation {
            report.status.operation = operation.clone();
        }
        match &then.outcome {
            Some(Outcome::Progress(reason, message)) => {
                report.progress(*reason, message.clone(), STAGE_POLL)
            }
            Some(Outcome::Ready(reason, message)) => {
                report.settle(Readiness::ready(*reason, message.clone()), false)
            }
            Some(Outcome::Stall(reason, message)) => report.stall(*reason, message.clone()),
            None => {}
        }
        match (&step.op.call, answer) {
            (Call::Create(body), CsAnswer::Created(ws)) => {
                report.notes.push(Note::normal(
                    Reason::Created,
                    "Create",
                    format!(
                        "created Codesphere workspace {} in team {}",
                        ws.id, body.team_id
                    ),
                ));
                report.status.external_id = Some(ws.id.to_string());
                report.status.url = url_of(ws);
                report.status.replicas = Some(ws.replicas);
                report.progress(
                    Reason::Creating,
                    format!("workspace {} is starting", ws.id),
                    STAGE_POLL,
                );
            }
            (Call::CreateCandidate(_), CsAnswer::Created(candidate)) => {
                let (_, desired_ref) = step.first_change();
                report.notes.push(Note::normal(
                    Reason::CandidateCreated,
                    "BlueGreen",
                    format!(
                        "created candidate workspace {} for {desired_ref}",
                        candidate.id
                    ),
                ));
                if let Some(op) = report.status.operation.as_mut() {
                    op.id = Some(candidate.id.to_string());
                }
                report.progress(
                    Reason::CandidateStarting,
                    format!("waiting for candidate workspace {} to run", candidate.id),
                    STAGE_POLL,
                );
            }
            _ => {}
        }
        Flow::Continue
    }
}

#[async_trait]
impl WorkspaceDriver for Codesphere {
    async fn reconcile(
        &self,
        request: &WorkspaceRequest<'_>,
        guard: &dyn CreateGuard,
    ) -> Result<Report<WorkspaceStatus>, ReconcileError> {
        let observed = self.observe(request).await?;
        let Decided {
            planned,
            deep_checked,
        } = decided(request, &observed)?;
        let report = plan::funnel(self, planned, request.mode, guard).await?;
        // Ready, or a stage started with the variables just read: what is at the platform is
        // known as of now.
        if let Some((id, tracking)) = deep_checked {
            if report.readiness.ready || (!tracking && report.status.operation.is_some()) {
                self.deep_checks.done(id, env_fingerprint(&request.env));
            }
        }
        Ok(report)
    }

    async fn delete(&self, request: &WorkspaceRequest<'_>) -> Result<Cleanup, ReconcileError> {
        deletion::delete(self, request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::WorkspaceSpec;
    use crate::core::plan::table;
    use crate::core::plan::Hold;
    use crate::core::reconciler::Mode;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use StepAction::{Await, Create, Delete, Start, Update};

    const NOW: &str = "2026-12-05T12:00:00Z";

    fn sync_reason(sync: &SyncState) -> Option<Reason> {
        match sync {
            SyncState::Progressing { reason, .. }
            | SyncState::Retrying { reason, .. }
            | SyncState::Stalled { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    fn ws(id: i64, name: &str, replicas: i32) -> Workspace {
        Workspace {
            id,
            team_id: 1,
            name: name.into(),
            plan_id: 8,
            replicas,
            git_url: None,
            initial_branch: None,
            dev_domain: Some(format!("{id}.example.dev")),
            base_image: None,
            restricted: false,
        }
    }

    fn el(server: &str, state: &str) -> StageElement {
        StageElement {
            state: state.into(),
            started_at: Some("2026-12-05T11:59:00Z".into()),
            finished_at: None,
            replica: "0".into(),
            server: server.into(),
        }
    }

    fn spec(extra: serde_json::Value) -> WorkspaceSpec {
        let mut base = serde_json::json!({
            "providerRef": {"name": "codesphere"},
            "source": {"repository": "https://github.com/acme/shop.git", "branch": "main"},
            "plan": "Micro",
            "replicas": 1,
            "env": [
                {"name": "LOG_LEVEL", "value": "info"},
                {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
            ],
            "codesphere": {"teamId": 1}
        });
        if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(base).unwrap()
    }

    /// Ready at generation 1, running `main`, id 7.
    fn ready() -> WorkspaceStatus {
        WorkspaceStatus {
            external_id: Some("7".into()),
            source_ref: Some("branch:main".into()),
            observed_generation: Some(1),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: "Available".into(),
                message: String::new(),
                observed_generation: Some(1),
                last_transition_time: Time(Timestamp::now()),
            }],
            ..Default::default()
        }
    }

    fn in_flight(kind: &str, state: &str, id: Option<&str>) -> OperationStatus {
        OperationStatus {
            kind: kind.into(),
            id: id.map(String::from),
            state: state.into(),
            generation: Some(1),
            started_at: Some("2026-12-05T11:58:00Z".into()),
            deadline: Some("2026-12-05T12:10:00Z".into()),
        }
    }

    /// What the platform holds; observe's reads are answered from it.
    #[derive(Clone)]
    struct World {
        workspaces: Vec<Workspace>,
        deep_due: bool,
        running: BTreeMap<i64, bool>,
        env: BTreeMap<i64, Vec<EnvVar>>,
        stages: BTreeMap<(i64, Stage), Option<Vec<StageElement>>>,
        routed: BTreeMap<i64, bool>,
    }

    fn world(workspaces: Vec<Workspace>) -> World {
        let env = vec![
            EnvVar {
                name: "API_KEY".into(),
                value: "secret-1".into(),
            },
            EnvVar {
                name: "LOG_LEVEL".into(),
                value: "info".into(),
            },
        ];
        World {
            workspaces,
            deep_due: true,
            running: [(7, true), (9, true)].into(),
            env: [(7, env)].into(),
            stages: [((7, Stage::Run), Some(vec![el("web", "running")]))].into(),
            routed: BTreeMap::new(),
        }
    }

    struct Case {
        spec: serde_json::Value,
        previous: WorkspaceStatus,
        generation: i64,
        hold: Option<Hold>,
        world: World,
    }

    fn case(previous: WorkspaceStatus, world: World) -> Case {
        Case {
            spec: serde_json::json!({}),
            previous,
            generation: 1,
            hold: None,
            world,
        }
    }

    /// Runs observe's loop against the world: the reads made, and the plan.
    fn run(c: &Case) -> (Vec<Read>, Result<Decided, ReconcileError>) {
        let spec = spec(c.spec.clone());
        let request = WorkspaceRequest {
            key: "team/shop".into(),
            external_name: "team-shop".into(),
            spec: &spec,
            env: [("API_KEY", "secret-2"), ("LOG_LEVEL", "info")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            previous: &c.previous,
            generation: c.generation,
            observed_generation: c.previous.observed_generation,
            mode: Mode {
                hold: c.hold,
                requested: false,
            },
            create_pending: false,
            poll_interval: None,
        };
        let w = &c.world;
        let offers = Arc::new(vec![Offer {
            id: 8,
            title: "Micro".into(),
            deprecated: false,
            max_replicas: 3,
        }]);
        let mut o = Observed::new(1, offers, Arc::new(w.workspaces.clone()));
        o.at = NOW.parse().unwrap();
        let mut reads = Vec::new();
        while let Err(Halt::Need(read)) = decide(&request, &o) {
            assert!(reads.len() < MAX_READS, "reads without end: {reads:?}");
            reads.push(read);
            match read {
                Read::FreshListing => o.fresh = true,
                Read::DeepCheck(id) => {
                    o.deep.insert(id, (w.deep_due, true));
                }
                Read::Running(id) => {
                    o.running
                        .insert(id, w.running.get(&id).copied().unwrap_or(false));
                }
                Read::Env(id) => {
                    o.env
                        .insert(id, w.env.get(&id).cloned().unwrap_or_default());
                }
                Read::Stage(id, stage) => {
                    let got = w.stages.get(&(id, stage)).cloned().unwrap_or(Some(vec![]));
                    o.stages.insert((id, stage), got);
                }
                Read::Head(id) => {
                    o.heads.insert(id, Some(format!("head-of-{id}")));
                }
                Read::Routed(id) => {
                    o.routed
                        .insert(id, w.routed.get(&id).copied().unwrap_or(false));
                }
            }
        }
        (reads, decided(&request, &o))
    }

    fn planned(c: &Case) -> (Vec<Read>, Planned<CsOp, WorkspaceStatus>) {
        let (reads, d) = run(c);
        (reads, d.expect("a plan").planned)
    }

    #[test]
    fn a_new_workspace_is_one_plan_from_create_to_run() {
        let c = case(WorkspaceStatus::default(), world(vec![]));
        let (reads, p) = planned(&c);
        assert!(reads.is_empty(), "{reads:?}");
        table::assert_steps(
            &p.plan,
            &[
                (
                    Create,
                    "workspace",
                    "<new>",
                    false,
                    vec!["spec.source", "spec.plan", "spec.replicas"],
                ),
                (Await, "workspace", "<step 1>", false, vec![]),
                (
                    Start,
                    "workspace",
                    "<step 1>",
                    false,
                    vec!["status.operation"],
                ),
                (Await, "workspace", "<step 1>", false, vec![]),
                (Update, "workspace", "<step 1>", false, vec![]),
                (
                    Start,
                    "workspace",
                    "<step 1>",
                    false,
                    vec!["status.operation"],
                ),
                (Await, "workspace", "<step 1>", false, vec![]),
            ],
            "create",
        );
        let Call::Create(body) = &p.plan.steps[0].op.call else {
            panic!("not a create")
        };
        assert_eq!(body.name, "team-shop");
        assert_eq!(sync_reason(&p.report.sync), Some(Reason::Creating));
    }

    #[test]
    fn a_settled_workspace_between_deep_checks_costs_no_read_but_the_listing() {
        let mut w = world(vec![ws(7, "team-shop", 1)]);
        w.deep_due = false;
        let (reads, p) = planned(&case(ready(), w));
        assert_eq!(reads, vec![Read::DeepCheck(7)]);
        assert!(p.plan.is_empty());
        assert!(p.report.readiness.ready);
    }

    #[test]
    fn replicas_changed_at_the_platform_are_drift_and_set_back() {
        let mut w = world(vec![ws(7, "team-shop", 2)]);
        w.deep_due = false;
        let (_, p) = planned(&case(ready(), w));
        table::assert_steps(
            &p.plan,
            &[(Update, "workspace", "7", true, vec!["spec.replicas"])],
            "drift",
        );
        assert_eq!(p.plan.steps[0].first_change(), ("2".into(), "1".into()));
        // A spec change is not drift.
        let mut c = case(ready(), world(vec![ws(7, "team-shop", 2)]));
        c.generation = 2;
        c.world.deep_due = false;
        let (_, p) = planned(&c);
        assert!(!p.plan.steps[0].drift);
    }

    #[test]
    fn a_deep_check_reads_variables_and_the_run_stage_and_restarts_for_new_values() {
        let c = case(ready(), world(vec![ws(7, "team-shop", 1)]));
        let (reads, p) = planned(&c);
        // It was Ready with nothing in flight: no "is it running" read first.
        assert_eq!(reads, vec![Read::DeepCheck(7), Read::Env(7)]);
        table::assert_steps(
            &p.plan,
            &[
                (Update, "workspace", "7", false, vec!["spec.env[API_KEY]"]),
                (Update, "workspace", "7", false, vec![]),
                (Start, "workspace", "7", false, vec!["status.operation"]),
                (Await, "workspace", "7", false, vec![]),
            ],
            "restart",
        );
        let shown = format!("{:?}", p.plan.view());
        assert!(
            !shown.contains("secret-1") && !shown.contains("secret-2"),
            "{shown}"
        );
        assert!(shown.contains("(a Secret value)"), "{shown}");
        assert!(
            p.report.notes.is_empty(),
            "Events come with the answers, not the plan: {:?}",
            p.report.notes
        );

        // Same variables: the run stage is read, and it runs.
        let mut c = c;
        c.world.env.get_mut(&7).unwrap()[0].value = "secret-2".into();
        let (reads, p) = planned(&c);
        assert_eq!(
            reads,
            vec![Read::DeepCheck(7), Read::Env(7), Read::Stage(7, Stage::Run)]
        );
        assert!(p.plan.is_empty() && p.report.readiness.ready);

        // The run read is refused because the workspace stopped: it is starting.
        c.world.stages.insert((7, Stage::Run), None);
        let (_, p) = planned(&c);
        assert_eq!(p.report.readiness.reason, Reason::Starting);
    }

    #[test]
    fn a_new_branch_pulls_then_runs_each_stage() {
        let mut c = case(ready(), world(vec![ws(7, "team-shop", 1)]));
        c.world.env.get_mut(&7).unwrap()[0].value = "secret-2".into();
        c.spec = serde_json::json!({
            "source": {"repository": "https://github.com/acme/shop.git", "branch": "release"},
            "pipeline": {"prepare": true, "test": true}
        });
        c.generation = 2;
        let (_, p) = planned(&c);
        table::assert_steps(
            &p.plan,
            &[
                (Update, "workspace", "7", false, vec!["spec.source.branch"]),
                (Start, "workspace", "7", false, vec!["status.operation"]),
                (Await, "workspace", "7", false, vec![]),
                (Start, "workspace", "7", false, vec!["status.operation"]),
                (Await, "workspace", "7", false, vec![]),
                (Update, "workspace", "7", false, vec![]),
                (Start, "workspace", "7", false, vec!["status.operation"]),
                (Await, "workspace", "7", false, vec![]),
            ],
            "rollout",
        );
        let stages: Vec<Stage> = p
            .plan
            .steps
            .iter()
            .filter_map(|s| match s.op.call {
                Call::StartStage { stage, .. } => Some(stage),
                _ => None,
            })
            .collect();
        assert_eq!(stages, vec![Stage::Prepare, Stage::Test, Stage::Run]);
        // A tag cannot be pulled in place.
        c.spec = serde_json::json!({"source": {"repository": "r", "tag": "v2"}});
        let (_, d) = run(&c);
        assert_eq!(
            d.err().map(|e| e.reason()),
            Some(Reason::UnsupportedByProvider)
        );
    }

    #[test]
    fn a_stage_in_flight_is_followed_then_the_next_one_starts() {
        let mut previous = ready();
        previous.source_ref = Some("old".into());
        previous.operation = Some(in_flight("rollout", "prepare", None));
        let mut w = world(vec![ws(7, "team-shop", 1)]);
        w.env.get_mut(&7).unwrap()[0].value = "secret-2".into();
        w.stages.insert(
            (7, Stage::Prepare),
            Some(vec![el(super::super::mapping::IDE_SERVER, "running")]),
        );
        let mut c = case(previous, w);
        let (reads, p) = planned(&c);
        assert!(reads.contains(&Read::Stage(7, Stage::Prepare)), "{reads:?}");
        assert!(!reads.contains(&Read::Stage(7, Stage::Run)), "{reads:?}");
        table::assert_steps(
            &p.plan,
            &[
                (Await, "workspace", "7", false, vec![]),
                (Update, "workspace", "7", false, vec![]),
                (Start, "workspace", "7", false, vec!["status.operation"]),
                (Await, "workspace", "7", false, vec![]),
            ],
            "prepare running",
        );
        assert_eq!(p.plan.steps[0].deadline, Some(Duration::from_secs(600)));

        c.world.stages.insert(
            (7, Stage::Prepare),
            Some(vec![el(super::super::mapping::IDE_SERVER, "success")]),
        );
        let (_, p) = planned(&c);
        assert_eq!(p.plan.steps[0].action, Update, "stop run before start");
        assert_eq!(p.plan.steps[1].action, Start);

        c.world.stages.insert(
            (7, Stage::Prepare),
            Some(vec![el(super::super::mapping::IDE_SERVER, "failure")]),
        );
        let (_, p) = planned(&c);
        assert!(p.plan.is_empty());
        assert_eq!(sync_reason(&p.report.sync), Some(Reason::StageFailed));
        assert_eq!(
            p.report.status.operation.map(|o| o.state),
            Some("failed:prepare".into())
        );
    }

    #[test]
    fn blue_green_creates_a_candidate_by_name_and_plans_the_switch_and_retirement() {
        let mut c = case(ready(), world(vec![ws(7, "team-shop", 1)]));
        c.spec = serde_json::json!({
            "source": {"repository": "https://github.com/acme/shop.git", "branch": "release"},
            "strategy": "BlueGreen"
        });
        c.generation = 2;
        let (reads, p) = planned(&c);
        assert_eq!(reads, vec![Read::FreshListing]);
        table::assert_steps(
            &p.plan,
            &[
                (
                    Create,
                    "workspace",
                    "team-shop-g2",
                    false,
                    vec!["spec.source"],
                ),
                (Await, "workspace", "<step 1>", false, vec![]),
                (
                    Start,
                    "workspace",
                    "<step 1>",
                    false,
                    vec!["status.operation"],
                ),
                (Await, "workspace", "<step 1>", false, vec![]),
                (
                    Start,
                    "workspace",
                    "<step 1>",
                    false,
                    vec!["status.operation"],
                ),
                (Await, "workspace", "<step 1>", false, vec![]),
                (Await, "workspace", "7", false, vec![]),
                (Delete, "workspace", "7", false, vec![]),
            ],
            "candidate",
        );

        // The candidate runs its last stage: the Workspace switches to it, without a write.
        let mut previous = ready();
        previous.operation = Some(in_flight(BLUE_GREEN, "run", Some("9")));
        c.previous = previous;
        c.world.workspaces.push(ws(9, "team-shop-g2", 1));
        c.world
            .stages
            .insert((9, Stage::Run), Some(vec![el("web", "running")]));
        let (_, p) = planned(&c);
        assert_eq!(p.report.status.external_id.as_deref(), Some("9"));
        assert_eq!(
            p.report.status.operation.as_ref().map(|o| o.state.as_str()),
            Some("retire")
        );
        assert_eq!(p.plan.steps[0].action, Await);

        // Retiring: only once no domain routes to the old workspace.
        let mut previous = ready();
        previous.external_id = Some("9".into());
        previous.source_ref = Some("branch:release".into());
        previous.operation = Some(in_flight(BLUE_GREEN, "retire", Some("7")));
        c.previous = previous;
        c.world.routed.insert(7, true);
        let (reads, p) = planned(&c);
        assert_eq!(reads, vec![Read::Routed(7)]);
        assert_eq!(p.plan.steps[0].action, Await);
        c.world.routed.insert(7, false);
        let (_, p) = planned(&c);
        table::assert_steps(
            &p.plan,
            &[(Delete, "workspace", "7", false, vec![])],
            "retire",
        );
    }

    #[test]
    fn observed_workspaces_are_reported_never_planned_for_creation() {
        let mut c = case(WorkspaceStatus::default(), world(vec![]));
        c.hold = Some(Hold::Observe);
        let (_, p) = planned(&c);
        assert!(p.plan.is_empty());
        assert_eq!(
            sync_reason(&p.report.sync),
            Some(Reason::ExternalObjectNotFound)
        );
        // Paused: the create waits, and the plan shows it.
        c.hold = Some(Hold::Paused);
        let (_, p) = planned(&c);
        assert_eq!(p.plan.steps[0].action, Create);
        assert_eq!(p.report.readiness.reason, Reason::NotFound);
    }

    #[test]
    fn a_name_taken_by_another_is_refused_and_a_known_id_gone_is_looked_for_afresh() {
        let c = case(
            WorkspaceStatus::default(),
            world(vec![ws(5, "team-shop", 1)]),
        );
        let (_, d) = run(&c);
        assert_eq!(d.err().map(|e| e.reason()), Some(Reason::NameTaken));
        let c = case(ready(), world(vec![]));
        let (reads, p) = planned(&c);
        assert_eq!(reads, vec![Read::FreshListing]);
        assert_eq!(p.plan.steps[0].action, Create);
        assert!(p
            .report
            .notes
            .iter()
            .any(|n| n.reason == Reason::DriftCorrected));
    }

    #[test]
    fn a_workspace_of_the_name_is_adopted_when_asked_or_observed() {
        let mut c = case(
            WorkspaceStatus::default(),
            world(vec![ws(7, "team-shop", 1)]),
        );
        c.spec = serde_json::json!({"adoptByName": true});
        let (_, p) = planned(&c);
        assert_eq!(
            p.adopt.as_deref(),
            Some("7"),
            "its id is saved before any step"
        );
        assert_eq!(p.report.status.external_id.as_deref(), Some("7"));
        assert_eq!(
            p.report.messages(Reason::Adopted),
            vec!["manages Codesphere workspace 7 (team-shop)"]
        );
        // Observe takes it over by name too (to look at it, never to change it).
        c.spec = serde_json::json!({});
        c.hold = Some(Hold::Observe);
        let (_, p) = planned(&c);
        assert_eq!(p.adopt.as_deref(), Some("7"));
    }
}
