//! The plan is a value: what bosun is about to do at a platform, as an ordered list of typed
//! steps, computed by a pure function of the request and what was observed.
//!
//! A platform on this seam implements [`PlanSeam`]: `observe` reads only, `plan` is pure, and
//! `execute` sends one step. Everything else is here, once: [`reconcile`] observes, plans, and
//! hands the plan to the write funnel ([`funnel`]), the only place where a step is sent or held
//! back (paused, `managementPolicy: Observe`, `bosun plan`), where creates are guarded against
//! crashes, and where drift Events come from the steps marked as drift.

use crate::api::OperationStatus;
use crate::core::drivers::CreateGuard;
use crate::core::error::ReconcileError;
use crate::core::reason::Reason;
use crate::core::reconciler::{Mode, Note, Report};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What a step does at the platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StepAction {
    /// Creates the object; its answer carries the new id later steps refer to.
    Create,
    /// Changes fields of an existing object.
    Update,
    /// Removes the object.
    Delete,
    /// Starts a long operation (a deploy, a pipeline stage); its answer carries the
    /// operation's id.
    Start,
    /// Follows a long operation until it ends or its deadline passes. Reads only; later
    /// reconciles do it, tracked in `status.operation`.
    Await,
}

impl StepAction {
    /// Whether sending the step changes something at the platform.
    pub fn writes(self) -> bool {
        !matches!(self, StepAction::Await)
    }
}

impl std::fmt::Display for StepAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StepAction::Create => "create",
            StepAction::Update => "update",
            StepAction::Delete => "delete",
            StepAction::Start => "start",
            StepAction::Await => "await",
        })
    }
}

/// How a value is shown in a plan or an Event: a Secret's never is.
pub fn shown(value: &str, secret: bool) -> String {
    if secret {
        "(a Secret value)".to_string()
    } else {
        format!("{value:?}")
    }
}

/// A reference to an earlier step of the same plan (0-based inside, 1-based when shown).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StepRef(pub usize);

/// Which platform object a step touches.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ObjectId {
    /// The object this step creates: its id is in this step's answer.
    New,
    /// An object bosun knows the id of.
    Known(String),
    /// The object an earlier step creates or starts: its id is in that step's answer.
    FromStep(StepRef),
}

/// The platform object of a step.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// The platform's word for it (`environment`, `workspace`, `application`, `deploy`).
    pub kind: &'static str,
    /// Its name at the platform, for people.
    pub name: String,
    pub id: ObjectId,
}

/// One field a step changes, old → new (`None` where there is no value).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Change {
    pub field: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

impl Change {
    pub fn new(field: &str, from: Option<String>, to: Option<String>) -> Self {
        Change {
            field: field.into(),
            from,
            to,
        }
    }
}

/// One typed step. `op` is the platform's own request; the rest is what people and the core
/// see.
#[derive(Clone, Debug, PartialEq)]
pub struct Step<Op> {
    pub action: StepAction,
    pub target: Target,
    pub changes: Vec<Change>,
    /// The step sets back a difference found at the platform while the spec did not change.
    pub drift: bool,
    /// One line for people.
    pub summary: String,
    /// How long a long operation may take before the object is reported Stalled.
    pub deadline: Option<Duration>,
    /// `status.operation` to save before the step is sent: a non-idempotent call (a deploy)
    /// that a crash interrupts is then recognised, never sent twice.
    pub record: Option<OperationStatus>,
    pub op: Op,
}

impl<Op> Step<Op> {
    /// A step that lists no changed field and corrects no drift, with no deadline or record
    /// (a deletion's steps).
    pub fn plain(action: StepAction, target: Target, summary: String, op: Op) -> Self {
        Step {
            action,
            target,
            changes: Vec::new(),
            drift: false,
            summary,
            deadline: None,
            record: None,
            op,
        }
    }

    /// The old and new value of the step's first change (empty where there is none): what an
    /// answer's Event names.
    pub fn first_change(&self) -> (String, String) {
        self.changes
            .first()
            .map(|c| {
                (
                    c.from.clone().unwrap_or_default(),
                    c.to.clone().unwrap_or_default(),
                )
            })
            .unwrap_or_default()
    }
}

/// The platform id of a step's object (a `kind`, for the message): known, or in the answer
/// of the earlier step it refers to (`id_of` reads an answer's id, as
/// [`PlanSeam::answered_id`] does), as the platform's id type.
pub fn resolve_id<A, Id: std::str::FromStr>(
    kind: &str,
    id: &ObjectId,
    answers: &[A],
    id_of: impl Fn(&A) -> Option<String>,
) -> Result<Id, ReconcileError> {
    let text = match id {
        ObjectId::Known(id) => Some(id.clone()),
        ObjectId::FromStep(StepRef(n)) => answers.get(*n).and_then(id_of),
        ObjectId::New => None,
    };
    text.and_then(|t| t.parse().ok()).ok_or_else(|| {
        ReconcileError::user(
            Reason::CreateOutcomeUnknown,
            format!("a step refers to {kind} id that no earlier step returned"),
        )
    })
}

/// What bosun is about to do, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan<Op> {
    pub steps: Vec<Step<Op>>,
}

impl<Op> Default for Plan<Op> {
    fn default() -> Self {
        Plan { steps: Vec::new() }
    }
}

impl<Op> Plan<Op> {
    /// Appends a step and returns a reference later steps can use for its answer.
    pub fn push(&mut self, step: Step<Op>) -> StepRef {
        self.steps.push(step);
        StepRef(self.steps.len() - 1)
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Whether any step changes something at the platform.
    pub fn writes(&self) -> bool {
        self.steps.iter().any(|s| s.action.writes())
    }

    /// The plan as people and `bosun plan -o json` see it, without the platform requests.
    pub fn view(&self) -> PlanView {
        PlanView {
            steps: self
                .steps
                .iter()
                .enumerate()
                .map(|(i, s)| StepView {
                    number: i + 1,
                    action: s.action,
                    object: ObjectView {
                        kind: s.target.kind.to_string(),
                        name: s.target.name.clone(),
                        id: match &s.target.id {
                            ObjectId::Known(id) => Some(id.clone()),
                            ObjectId::New | ObjectId::FromStep(_) => None,
                        },
                        id_from_step: match s.target.id {
                            ObjectId::FromStep(StepRef(n)) => Some(n + 1),
                            ObjectId::New | ObjectId::Known(_) => None,
                        },
                    },
                    changes: s.changes.clone(),
                    drift: s.drift,
                    summary: s.summary.clone(),
                    deadline: s
                        .deadline
                        .map(|d| humantime::format_duration(d).to_string()),
                })
                .collect(),
        }
    }
}

/// A plan without the platform requests: what status, Events and `bosun plan` show. Its JSON
/// form is documented in `docs/plan.md`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanView {
    pub steps: Vec<StepView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepView {
    /// 1-based position in the plan.
    pub number: usize,
    pub action: StepAction,
    pub object: ObjectView,
    pub changes: Vec<Change>,
    pub drift: bool,
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectView {
    pub kind: String,
    pub name: String,
    /// The platform id, when the object exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The step whose answer carries the id (an object this plan creates or starts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_from_step: Option<usize>,
}

impl PlanView {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Numbered lines for people, each indented by `indent`.
    pub fn lines(&self, indent: &str) -> Vec<String> {
        step_lines(&self.steps, indent)
    }
}

/// Steps as numbered lines for people, each indented by `indent`: the action and summary,
/// then each changed field old -> new.
pub fn step_lines(steps: &[StepView], indent: &str) -> Vec<String> {
    let mut out = Vec::new();
    for s in steps {
        let drift = if s.drift { " [drift]" } else { "" };
        let deadline = s
            .deadline
            .as_deref()
            .map(|d| format!(" (deadline {d})"))
            .unwrap_or_default();
        // Which object, by id, or by the earlier step whose answer names it.
        let object = match (&s.object.id, s.object.id_from_step) {
            (Some(id), _) => format!("{} {id}", s.object.kind),
            (None, Some(n)) => format!("{} from step {n}", s.object.kind),
            (None, None) => format!("new {}", s.object.kind),
        };
        out.push(format!(
            "{indent}{}. {} {object}: {}{drift}{deadline}",
            s.number, s.action, s.summary
        ));
        for c in &s.changes {
            out.push(format!(
                "{indent}     {}: {} -> {}",
                c.field,
                c.from.as_deref().unwrap_or("(none)"),
                c.to.as_deref().unwrap_or("(none)")
            ));
        }
    }
    out
}

/// Why the funnel sends nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// `bosun.dev/paused`.
    Paused,
    /// `managementPolicy: Observe`.
    Observe,
    /// `bosun plan`: show the plan, send nothing.
    DryRun,
}

/// Where a plan that names its own reads stops: a read the observation lacks, or an error for
/// the user. Observe runs such a plan until it lacks nothing, so the reads a poll costs and the
/// decisions they serve are written once, in the plan.
#[derive(Debug)]
pub enum Halt<R> {
    Need(R),
    Error(ReconcileError),
}

impl<R> From<ReconcileError> for Halt<R> {
    fn from(e: ReconcileError) -> Self {
        Halt::Error(e)
    }
}

/// A value the observation holds, or the read that gets it.
pub fn need<T, R>(value: Option<&T>, read: R) -> Result<&T, Halt<R>> {
    value.ok_or(Halt::Need(read))
}

/// A plan's result once observe has read all it could: a read still lacking (observe gave up
/// after its limit) is an error, never a guess.
pub fn decided<T, R: std::fmt::Debug>(result: Result<T, Halt<R>>) -> Result<T, ReconcileError> {
    match result {
        Ok(t) => Ok(t),
        Err(Halt::Error(e)) => Err(e),
        Err(Halt::Need(read)) => Err(ReconcileError::user(
            Reason::Unknown,
            format!("the plan needs a read ({read:?}) that observe did not make"),
        )),
    }
}

/// What the platform computed for one reconcile: the plan, and the report that holds if
/// nothing of it is sent (the observed status; for a plan that writes, the progress it
/// starts).
pub struct Planned<Op, S> {
    pub plan: Plan<Op>,
    pub report: Report<S>,
    /// A platform object found by name to take over (after an interrupted create, or with
    /// `adoptByName`): unless writes are held, its id is saved and the create-pending marker
    /// cleared before any step is sent.
    pub adopt: Option<String>,
}

impl<Op, S> Planned<Op, S> {
    /// Nothing to send: the report says why.
    pub fn nothing(report: Report<S>) -> Self {
        Planned {
            plan: Plan::default(),
            report,
            adopt: None,
        }
    }
}

/// After a step was sent: go on with the next, or stop here (the answer says the rest
/// cannot follow, or a long operation started that later reconciles follow).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// A platform's part of a kind, on the plan seam.
#[async_trait]
pub trait PlanSeam<Request: Sync + ?Sized, S: Send>: Send + Sync {
    /// What the platform answers a step with.
    type Answer: Send;
    /// The platform's own request a step carries.
    type Op: Send + Sync;
    /// What `observe` found.
    type Observation: Send + Sync;

    /// Reads only.
    async fn observe(&self, request: &Request) -> Result<Self::Observation, ReconcileError>;

    /// Pure: what to do, given the request and the observation.
    fn plan(
        &self,
        request: &Request,
        observed: &Self::Observation,
    ) -> Result<Planned<Self::Op, S>, ReconcileError>;

    /// Sends one step. `answers` holds the answers of the steps sent before it, for steps
    /// that refer to them.
    async fn execute(
        &self,
        step: &Step<Self::Op>,
        answers: &[Self::Answer],
    ) -> Result<Self::Answer, ReconcileError>;

    /// The id an answer carries (of a created object or a started operation).
    fn answered_id(&self, answer: &Self::Answer) -> Option<String>;

    /// Folds a step's answer into the report.
    fn answered(
        &self,
        report: &mut Report<S>,
        step: &Step<Self::Op>,
        answer: &Self::Answer,
    ) -> Flow;
}

/// The guard for kinds whose plans never create an object or record an operation (a
/// ServiceScale changes a count on an object that exists). Unreachable for such plans; should
/// one ever try, it is refused with an error instead of sent without the crash-safe record.
pub struct CreatesNothing;

#[async_trait]
impl CreateGuard for CreatesNothing {
    async fn before_create(&self) -> Result<(), ReconcileError> {
        Err(Self::refused())
    }
    async fn created(&self, _: &str) -> Result<(), ReconcileError> {
        Err(Self::refused())
    }
    async fn save_operation(&self, _: &OperationStatus) -> Result<(), ReconcileError> {
        Err(Self::refused())
    }
}

impl CreatesNothing {
    fn refused() -> ReconcileError {
        ReconcileError::user(
            Reason::CreateOutcomeUnknown,
            "this kind's plan tried to create or record an operation, which it never should: nothing was sent",
        )
    }
}

/// The guard for kinds whose platform objects are found by a name the platform keeps unique
/// (a domain's virtual host and its certificate): a create that a crash interrupts is found by
/// that name on the next reconcile and never made twice, so nothing is recorded before it.
/// Such plans record no operations; one that tried is refused.
pub struct NameIsTheKey;

#[async_trait]
impl CreateGuard for NameIsTheKey {
    async fn before_create(&self) -> Result<(), ReconcileError> {
        Ok(())
    }
    async fn created(&self, _: &str) -> Result<(), ReconcileError> {
        Ok(())
    }
    async fn save_operation(&self, _: &OperationStatus) -> Result<(), ReconcileError> {
        Err(CreatesNothing::refused())
    }
}

/// Observe → plan → funnel, for any platform on the seam.
pub async fn reconcile<Request, S, P>(
    seam: &P,
    request: &Request,
    mode: Mode,
    guard: &dyn CreateGuard,
) -> Result<Report<S>, ReconcileError>
where
    Request: Sync + ?Sized,
    S: Send,
    P: PlanSeam<Request, S>,
{
    let observed = seam.observe(request).await?;
    let planned = seam.plan(request, &observed)?;
    funnel(seam, planned, mode, guard).await
}

/// The one write funnel: sends the plan's steps in order, or holds all of them back. The
/// report carries the plan that was computed, sent or not.
pub async fn funnel<Request, S, P>(
    seam: &P,
    planned: Planned<P::Op, S>,
    mode: Mode,
    guard: &dyn CreateGuard,
) -> Result<Report<S>, ReconcileError>
where
    Request: Sync + ?Sized,
    S: Send,
    P: PlanSeam<Request, S>,
{
    let Planned {
        plan,
        mut report,
        adopt,
    } = planned;
    report.plan = plan.view();
    match mode.hold {
        None => {}
        // An observed object is never changed: bosun is about to do nothing to it.
        Some(Hold::Observe) => {
            report.plan = PlanView::default();
            return Ok(report);
        }
        Some(Hold::Paused | Hold::DryRun) => return Ok(report),
    }
    if let Some(id) = adopt {
        guard.created(&id).await?;
    }
    let mut answers = Vec::new();
    for step in &plan.steps {
        if !step.action.writes() {
            // A long operation is followed by later reconciles, from status.
            break;
        }
        // The crash-safe guard is for the object the resource locates, created from nothing;
        // creating a part of a known object (a variable) needs none.
        let creates = step.action == StepAction::Create && step.target.id == ObjectId::New;
        if creates {
            guard.before_create().await?;
        }
        if let Some(operation) = &step.record {
            guard.save_operation(operation).await?;
        }
        let answer = seam.execute(step, &answers).await?;
        if creates {
            if let Some(id) = seam.answered_id(&answer) {
                guard.created(&id).await?;
            }
        }
        if step.drift {
            report.notes.extend(step.changes.iter().map(|c| {
                Note::drift(
                    &c.field,
                    c.from.as_deref().unwrap_or("(none)"),
                    c.to.as_deref().unwrap_or("(none)"),
                )
            }));
        }
        let flow = seam.answered(&mut report, step, &answer);
        answers.push(answer);
        if flow == Flow::Stop {
            break;
        }
    }
    Ok(report)
}

/// Plan tables for the platforms' unit tests: one row per step.
#[cfg(test)]
pub(crate) mod table {
    use super::{Plan, StepAction};

    /// (action, object kind, object id — or `<step N>` for an id an earlier step answers, or
    /// `<new>` — drift, changed fields).
    pub(crate) type Row<'a> = (StepAction, &'a str, &'a str, bool, Vec<&'a str>);

    pub(crate) fn assert_steps<Op>(plan: &Plan<Op>, want: &[Row<'_>], case: &str) {
        let got: Vec<(StepAction, String, String, bool, Vec<String>)> = plan
            .view()
            .steps
            .into_iter()
            .map(|v| {
                let id = match (v.object.id, v.object.id_from_step) {
                    (Some(id), _) => id,
                    (None, Some(n)) => format!("<step {n}>"),
                    (None, None) => "<new>".into(),
                };
                let fields = v.changes.into_iter().map(|c| c.field).collect();
                (v.action, v.object.kind, id, v.drift, fields)
            })
            .collect();
        let want: Vec<(StepAction, String, String, bool, Vec<String>)> = want
            .iter()
            .map(|(a, k, id, d, f)| {
                let fields = f.iter().map(|s| s.to_string()).collect();
                (*a, k.to_string(), id.to_string(), *d, fields)
            })
            .collect();
        assert_eq!(got, want, "{case}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::conditions::{Readiness, SyncState};
    use crate::core::reason::Reason;
    use std::sync::Mutex;

    fn step(action: StepAction, id: ObjectId, drift: bool) -> Step<&'static str> {
        Step {
            action,
            target: Target {
                kind: "thing",
                name: "t".into(),
                id,
            },
            changes: vec![Change::new("spec.size", Some("1".into()), Some("2".into()))],
            drift,
            summary: format!("{action} thing t"),
            deadline: (action == StepAction::Await).then_some(Duration::from_secs(60)),
            record: None,
            op: "op",
        }
    }

    #[derive(Default)]
    struct Recorder {
        sent: Mutex<Vec<String>>,
        guard: Mutex<Vec<String>>,
        stop_after: Option<usize>,
    }

    #[async_trait]
    impl CreateGuard for Recorder {
        async fn before_create(&self) -> Result<(), ReconcileError> {
            self.guard.lock().unwrap().push("pending".into());
            Ok(())
        }
        async fn created(&self, id: &str) -> Result<(), ReconcileError> {
            self.guard.lock().unwrap().push(format!("created {id}"));
            Ok(())
        }
        async fn save_operation(
            &self,
            _op: &crate::api::OperationStatus,
        ) -> Result<(), ReconcileError> {
            Ok(())
        }
    }

    struct Seam<'a>(&'a Recorder);

    #[async_trait]
    impl PlanSeam<(), ()> for Seam<'_> {
        type Answer = String;
        type Op = &'static str;
        type Observation = ();
        async fn observe(&self, _: &()) -> Result<(), ReconcileError> {
            Ok(())
        }
        fn plan(&self, _: &(), _: &()) -> Result<Planned<&'static str, ()>, ReconcileError> {
            unreachable!("the funnel is tested with plans given to it")
        }
        async fn execute(
            &self,
            step: &Step<&'static str>,
            answers: &[String],
        ) -> Result<String, ReconcileError> {
            let id = match &step.target.id {
                ObjectId::Known(id) => id.clone(),
                ObjectId::New => String::new(),
                ObjectId::FromStep(StepRef(n)) => answers[*n].clone(),
            };
            self.0
                .sent
                .lock()
                .unwrap()
                .push(format!("{} {id}", step.action));
            Ok(format!("id{}", answers.len() + 1))
        }
        fn answered_id(&self, answer: &String) -> Option<String> {
            Some(answer.clone())
        }
        fn answered(&self, _: &mut Report<()>, _: &Step<&'static str>, _: &String) -> Flow {
            match self.0.stop_after {
                Some(n) if self.0.sent.lock().unwrap().len() >= n => Flow::Stop,
                _ => Flow::Continue,
            }
        }
    }

    fn planned(steps: Vec<Step<&'static str>>) -> Planned<&'static str, ()> {
        Planned {
            plan: Plan { steps },
            report: Report {
                status: (),
                readiness: Readiness::not_ready(Reason::Deploying, "x"),
                sync: SyncState::Synced,
                requeue_after: None,
                notes: Vec::new(),
                plan: Default::default(),
            },
            adopt: None,
        }
    }

    fn rollout() -> Vec<Step<&'static str>> {
        vec![
            step(StepAction::Create, ObjectId::New, false),
            step(StepAction::Update, ObjectId::FromStep(StepRef(0)), false),
            step(StepAction::Start, ObjectId::FromStep(StepRef(0)), false),
            step(StepAction::Await, ObjectId::FromStep(StepRef(2)), false),
        ]
    }

    const SEND: Mode = Mode {
        hold: None,
        requested: false,
    };

    #[tokio::test]
    async fn steps_go_out_in_order_with_earlier_answers_bound() {
        let rec = Recorder::default();
        let view = funnel(&Seam(&rec), planned(rollout()), SEND, &rec)
            .await
            .unwrap()
            .plan;
        assert_eq!(
            *rec.sent.lock().unwrap(),
            vec!["create ", "update id1", "start id1"],
            "the await step is never sent"
        );
        assert_eq!(*rec.guard.lock().unwrap(), vec!["pending", "created id1"]);
        assert_eq!(view.steps.len(), 4);
        assert_eq!(view.steps[3].object.id_from_step, Some(3));
        assert_eq!(view.steps[3].deadline.as_deref(), Some("1m"));
    }

    #[tokio::test]
    async fn a_held_plan_sends_nothing_and_is_shown_whole_unless_observed() {
        for hold in [Hold::Paused, Hold::Observe, Hold::DryRun] {
            let rec = Recorder::default();
            let mode = Mode {
                hold: Some(hold),
                ..SEND
            };
            let report = funnel(&Seam(&rec), planned(rollout()), mode, &rec)
                .await
                .unwrap();
            assert!(rec.sent.lock().unwrap().is_empty(), "{hold:?}");
            assert!(rec.guard.lock().unwrap().is_empty(), "{hold:?}");
            assert!(report.notes.is_empty(), "{hold:?}");
            let shown = if hold == Hold::Observe { 0 } else { 4 };
            assert_eq!(report.plan.steps.len(), shown, "{hold:?}");
        }
    }

    #[tokio::test]
    async fn a_stop_answer_ends_the_plan_there() {
        let rec = Recorder {
            stop_after: Some(1),
            ..Default::default()
        };
        funnel(&Seam(&rec), planned(rollout()), SEND, &rec)
            .await
            .unwrap();
        assert_eq!(*rec.sent.lock().unwrap(), vec!["create "]);
    }

    #[tokio::test]
    async fn drift_events_come_from_drift_steps_that_were_sent() {
        let rec = Recorder::default();
        let steps = vec![
            step(StepAction::Update, ObjectId::Known("7".into()), true),
            step(StepAction::Update, ObjectId::Known("7".into()), false),
        ];
        let report = funnel(&Seam(&rec), planned(steps), SEND, &rec)
            .await
            .unwrap();
        assert_eq!(report.notes.len(), 1);
        assert_eq!(report.notes[0].reason, Reason::DriftCorrected);
        assert_eq!(report.notes[0].drift_field.as_deref(), Some("spec.size"));
        assert!(report.notes[0].message.contains("from 1 to 2"));
    }

    #[test]
    fn ids_resolve_from_status_or_from_an_earlier_answer() {
        let answers = vec!["41".to_string(), "42".to_string()];
        let id_of = |a: &String| Some(a.clone());
        let known = ObjectId::Known("7".into());
        assert_eq!(
            resolve_id::<_, i64>("a thing", &known, &answers, id_of).unwrap(),
            7
        );
        let from = ObjectId::FromStep(StepRef(1));
        assert_eq!(
            resolve_id::<_, i64>("a thing", &from, &answers, id_of).unwrap(),
            42
        );
        let not_a_number = ObjectId::Known("x".into());
        for bad in [ObjectId::FromStep(StepRef(2)), ObjectId::New, not_a_number] {
            let err = resolve_id::<_, i64>("a thing", &bad, &answers, id_of).expect_err("no id");
            assert_eq!(err.reason(), Reason::CreateOutcomeUnknown);
            assert!(err.to_string().contains("refers to a thing id"), "{err}");
        }
    }

    #[test]
    fn the_view_reads_as_numbered_steps() {
        let plan = Plan { steps: rollout() };
        let lines = plan.view().lines("  ");
        assert_eq!(lines[0], "  1. create new thing: create thing t");
        assert_eq!(lines[1], "       spec.size: 1 -> 2");
        assert_eq!(lines[2], "  2. update thing from step 1: update thing t");
        assert!(lines[6].starts_with("  4. await thing from step 3: await thing t (deadline 1m)"));
    }
}
