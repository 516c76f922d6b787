//! The reconcile loop every kind shares: steering annotations, finalizer, conditions, status
//! written by server-side apply only when it changed, Events, and when to look again.
//!
//! A kind supplies only its own observe → plan → act through [`Reconciler`].

use super::annotations;
use super::conditions::{self, Readiness, SyncState};
use super::context::Context;
use super::error::ReconcileError;
use crate::api::condition_types::SYNCED;
use crate::api::{find_condition, FINALIZER};
use crate::core::plan::Hold;
use crate::core::reason::Reason;
use async_trait::async_trait;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{finalizer, Event as FinalizerEvent};
use kube::{Api, Resource, ResourceExt};
use rand::Rng;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn, Instrument};

/// How many poll intervals pass before a request the platform refused (quota, permission)
/// is tried again without a change.
const REFUSED_POLL_FACTOR: u32 = 10;

/// The field manager of every status write.
pub const FIELD_MANAGER: &str = "bosun";

/// A bosun kind, as the shared loop sees it.
pub trait Managed:
    Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static
{
    type Status: Clone + Debug + Default + PartialEq + Serialize + Send + Sync;
    /// Whether deleting the object must first clean up at the platform.
    const FINALIZES: bool;

    fn api(client: kube::Client, obj: &Self) -> Api<Self>;
    fn status(&self) -> Option<&Self::Status>;
    fn conditions(status: &Self::Status) -> &[Condition];
    fn last_handled(status: &Self::Status) -> Option<&str>;
    /// Writes the fields the loop owns into a status.
    fn stamp(
        status: &mut Self::Status,
        generation: Option<i64>,
        conditions: Vec<Condition>,
        last_handled: Option<String>,
    );
}

/// Whether this reconcile may change things at the platform, decided once: the loop sets
/// `Paused`, the kind's controller `Observe` (from the policy that governs the object), and
/// `bosun plan` `DryRun`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode {
    /// Why nothing may be sent, if so.
    pub hold: Option<Hold>,
    /// A `reconcile-requested-at` token is new: redo work even if nothing seems to differ.
    pub requested: bool,
}

impl Mode {
    /// A reconcile that may send writes.
    pub const SEND: Mode = Mode {
        hold: None,
        requested: false,
    };

    /// Holds writes back under `managementPolicy: Observe` (keeping an earlier hold).
    pub fn governed_by(self, policy: crate::api::ManagementPolicy) -> Mode {
        // Observe outranks a dry run: `bosun plan` of an observed object shows no writes.
        match (self.hold, policy) {
            (None | Some(Hold::DryRun), crate::api::ManagementPolicy::Observe) => Mode {
                hold: Some(Hold::Observe),
                ..self
            },
            _ => self,
        }
    }

    /// Whether the object is only observed (`managementPolicy: Observe`).
    pub fn observing(self) -> bool {
        self.hold == Some(Hold::Observe)
    }

    /// Whether the plan's writes would go out (now, or under `bosun plan`, where the funnel
    /// holds them to be shown): plans report what will happen. Paused and observed objects
    /// report what is, and a plan for them only shows what waits.
    pub fn act(self) -> bool {
        matches!(self.hold, None | Some(Hold::DryRun))
    }
}

/// An Event to publish about the object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: Reason,
    pub action: String,
    pub message: String,
    /// The spec field a drift correction set back (counted in `bosun_drift_corrections_total`).
    pub drift_field: Option<String>,
}

impl Note {
    pub fn normal(reason: Reason, action: &str, message: impl Into<String>) -> Self {
        Note {
            warning: false,
            reason,
            action: action.into(),
            message: message.into(),
            drift_field: None,
        }
    }
    pub fn warning(reason: Reason, action: &str, message: impl Into<String>) -> Self {
        Note {
            warning: true,
            reason,
            action: action.into(),
            message: message.into(),
            drift_field: None,
        }
    }
    /// A field changed at the platform behind bosun's back and set back to the spec.
    pub fn drift(
        field: &str,
        observed: impl std::fmt::Display,
        desired: impl std::fmt::Display,
    ) -> Self {
        Note {
            warning: true,
            reason: Reason::DriftCorrected,
            action: "Correct".into(),
            message: format!(
                "{field} was changed at the platform: set back from {observed} to {desired}"
            ),
            drift_field: Some(field.into()),
        }
    }
}

/// What one reconcile of a kind found and did.
#[derive(Clone, Debug)]
pub struct Report<S> {
    /// The kind's observed fields (the loop fills in conditions and generation).
    pub status: S,
    pub readiness: Readiness,
    pub sync: SyncState,
    /// Look again sooner than the poll interval (a long operation is being tracked).
    pub requeue_after: Option<Duration>,
    pub notes: Vec<Note>,
    /// What bosun is about to do (or held back), for platforms on the plan seam.
    pub plan: crate::core::plan::PlanView,
}

#[cfg(test)]
impl<S> Report<S> {
    /// The messages of the Events with `reason`, for tests.
    pub fn messages(&self, reason: Reason) -> Vec<&str> {
        self.notes
            .iter()
            .filter(|n| n.reason == reason)
            .map(|n| n.message.as_str())
            .collect()
    }
}

impl<S> Report<S> {
    /// Stuck until something changes (the spec, the platform, a reconcile request).
    pub fn stalled(status: S, notes: Vec<Note>, reason: Reason, message: String) -> Self {
        Report {
            status,
            readiness: Readiness::not_ready(reason, message.clone()),
            sync: SyncState::Stalled { reason, message },
            requeue_after: None,
            notes,
            plan: Default::default(),
        }
    }

    /// Nothing (more) to send: the object is as the spec asks, or as Observe sees it.
    pub fn settled(status: S, notes: Vec<Note>, readiness: Readiness, observing: bool) -> Self {
        Report {
            status,
            readiness,
            sync: if observing {
                SyncState::Observing
            } else {
                SyncState::Synced
            },
            requeue_after: None,
            notes,
            plan: Default::default(),
        }
    }

    /// Under way: look again after `after`.
    pub fn progressing(
        status: S,
        notes: Vec<Note>,
        reason: Reason,
        message: String,
        after: Duration,
    ) -> Self {
        Report {
            status,
            readiness: Readiness::not_ready(reason, message.clone()),
            sync: SyncState::Progressing { reason, message },
            requeue_after: Some(after),
            notes,
            plan: Default::default(),
        }
    }

    /// In place, for a step's answer (keeping status, notes and the plan): as
    /// [`Report::settled`].
    pub fn settle(&mut self, readiness: Readiness, observing: bool) {
        self.readiness = readiness;
        self.sync = if observing {
            SyncState::Observing
        } else {
            SyncState::Synced
        };
        self.requeue_after = None;
    }

    /// In place: as [`Report::stalled`].
    pub fn stall(&mut self, reason: Reason, message: String) {
        self.readiness = Readiness::not_ready(reason, message.clone());
        self.sync = SyncState::Stalled { reason, message };
        self.requeue_after = None;
    }

    /// In place: as [`Report::progressing`].
    pub fn progress(&mut self, reason: Reason, message: String, after: Duration) {
        self.readiness = Readiness::not_ready(reason, message.clone());
        self.sync = SyncState::Progressing { reason, message };
        self.requeue_after = Some(after);
    }
}

/// How cleanup ended.
pub enum Cleanup {
    /// Nothing is left at the platform (or the policy leaves it): the finalizer may go.
    Done(Vec<Note>),
    /// Deletion is under way; look again after this long.
    InProgress(Duration, String),
}

/// The kind-specific part of a reconcile.
#[async_trait]
pub trait Reconciler<K: Managed>: Send + Sync + 'static {
    /// Observe the platform, plan (pure), act when `mode.act()`, and report.
    async fn reconcile(
        &self,
        obj: &K,
        ctx: &Context,
        mode: Mode,
    ) -> Result<Report<K::Status>, ReconcileError>;

    /// Remove what the object owns at the platform, honouring its deletion policy.
    async fn cleanup(&self, obj: &K, ctx: &Context) -> Result<Cleanup, ReconcileError>;
}

/// Error of the shared loop itself (only the finalizer patch can fail here).
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<ReconcileError>>),
}

/// Runs one reconcile of `obj` with `logic`.
pub async fn run<K, R>(obj: Arc<K>, logic: Arc<R>, ctx: Arc<Context>) -> Result<Action, LoopError>
where
    K: Managed,
    R: Reconciler<K>,
{
    let kind = K::kind(&()).to_string();
    let span = tracing::info_span!("reconcile", kind = %kind, namespace = %obj.namespace().unwrap_or_default(), name = %obj.name_any());
    async move {
        let started = Instant::now();
        let api = K::api(ctx.client.clone(), &obj);
        let result = if K::FINALIZES {
            finalizer(&api, FINALIZER, obj.clone(), |event| async {
                match event {
                    FinalizerEvent::Apply(o) => Ok(apply(&*o, &*logic, &ctx).await),
                    FinalizerEvent::Cleanup(o) => cleanup(&*o, &*logic, &ctx).await,
                }
            })
            .await
            .map_err(|e| LoopError::Finalizer(Box::new(e)))
        } else {
            Ok(apply(&*obj, &*logic, &ctx).await)
        };
        let outcome = match &result {
            Ok(_) => "success",
            Err(_) => "error",
        };
        // Failures here (finalizer patches, cleanup) are counted for backoff in `error_policy`.
        ctx.metrics.reconciled(&kind, outcome, started.elapsed());
        result
    }
    .instrument(span)
    .await
}

/// How soon a reconcile that read a stale cached object looks again.
const STALE_RETRY: Duration = Duration::from_millis(500);

/// Requeue policy for errors of the loop itself (finalizer patches, cleanup failures).
pub fn error_policy<K: Managed>(obj: Arc<K>, error: &LoopError, ctx: Arc<Context>) -> Action {
    use kube::runtime::finalizer::Error as FinalizerError;
    let key = obj.uid().unwrap_or_else(|| obj.name_any());
    let LoopError::Finalizer(e) = error;
    let retry_after = match e.as_ref() {
        FinalizerError::CleanupFailed(inner) => inner.retry_after(),
        // The finalizer patch carries a JSON-patch test of the finalizers it read; a cache one
        // event behind (the object was requeued by a watch before its own update arrived)
        // fails that test with 422 or 409. Nothing is wrong: look again with the fresh object.
        FinalizerError::AddFinalizer(kube::Error::Api(status))
        | FinalizerError::RemoveFinalizer(kube::Error::Api(status))
            if matches!(status.code, 409 | 422) =>
        {
            tracing::debug!(error = %error, "finalizer patch raced a newer version; retrying");
            return Action::requeue(STALE_RETRY);
        }
        _ => None,
    };
    let delay = ctx.backoffs.fail(&key, retry_after);
    warn!(error = %error, delay_s = delay.as_secs_f64(), "reconcile failed; retrying");
    Action::requeue(delay)
}

async fn apply<K: Managed, R: Reconciler<K>>(obj: &K, logic: &R, ctx: &Context) -> Action {
    let key = obj.uid().unwrap_or_else(|| obj.name_any());
    let steering = annotations::steering(obj.annotations());
    let previous = obj.status().cloned().unwrap_or_default();
    let requested = annotations::reconcile_requested(&steering, K::last_handled(&previous));
    let mode = Mode {
        hold: steering.paused.then_some(Hold::Paused),
        requested,
    };

    let (report, failed) = match logic.reconcile(obj, ctx, mode).await {
        Ok(mut report) => {
            if steering.paused {
                report.sync = SyncState::Paused;
            }
            (report, None)
        }
        Err(error) => (failure_report::<K>(&previous, &error), Some(error)),
    };
    let mut report = report;
    if let Some(msg) = &steering.poll_interval_error {
        report.notes.push(Note::warning(
            Reason::InvalidAnnotation,
            "Reconcile",
            msg.clone(),
        ));
    }

    let last_handled = steering
        .reconcile_requested_at
        .clone()
        .or_else(|| K::last_handled(&previous).map(String::from));
    let saved = write_status(
        obj,
        ctx,
        &previous,
        report.status.clone(),
        &report.readiness,
        &report.sync,
        last_handled,
    )
    .await;
    let trace_id = match &failed {
        Some(ReconcileError::Platform(e)) => e.trace_id.clone(),
        _ => None,
    };
    publish_notes(obj, ctx, &previous, &report, trace_id.as_deref()).await;

    let poll = steering.poll_interval.unwrap_or(ctx.settings.poll_interval);
    if !saved {
        // Status carries the state of long operations; acting again before it is saved could
        // repeat a non-idempotent call, so back off like any transient error.
        return Action::requeue(ctx.backoffs.fail(&key, None));
    }
    match failed {
        Some(error) if error.is_transient() => {
            let delay = ctx.backoffs.fail(&key, error.retry_after());
            info!(
                reason = %error.reason(),
                delay_s = delay.as_secs_f64(),
                "transient error; backing off"
            );
            Action::requeue(delay)
        }
        Some(ReconcileError::Platform(error)) => {
            // The platform refused what the spec asks: the same request gets the same answer,
            // so wait for a change (spec, Secret, Provider, reconcile-requested-at), which the
            // watches bring. A plan, quota or permission can also be fixed at the platform
            // itself, so look again, but rarely.
            ctx.backoffs.succeed(&key);
            info!(
                reason = %error.reason(),
                "refused by the platform; waiting for a change"
            );
            if error.kind == super::seam::ErrorKind::Invalid {
                Action::await_change()
            } else {
                Action::requeue(jittered(poll * REFUSED_POLL_FACTOR))
            }
        }
        Some(error) => {
            // Waiting on a dependency or on the user: watches bring the change; the poll is a
            // safety net, never a retry storm.
            ctx.backoffs.succeed(&key);
            info!(reason = %error.reason(), "waiting for a change");
            Action::requeue(jittered(poll))
        }
        None => {
            ctx.backoffs.succeed(&key);
            Action::requeue(
                report
                    .requeue_after
                    .map(|d| d.min(poll))
                    .unwrap_or_else(|| jittered(poll)),
            )
        }
    }
}

async fn cleanup<K: Managed, R: Reconciler<K>>(
    obj: &K,
    logic: &R,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let steering = annotations::steering(obj.annotations());
    let previous = obj.status().cloned().unwrap_or_default();
    let last_handled = K::last_handled(&previous).map(String::from);
    if steering.paused {
        let sync = SyncState::Paused;
        let readiness = Readiness::not_ready(
            Reason::Deleting,
            "deletion waits until bosun.dev/paused is removed",
        );
        write_status(
            obj,
            ctx,
            &previous,
            previous.clone(),
            &readiness,
            &sync,
            last_handled,
        )
        .await;
        return Ok(Action::requeue(jittered(ctx.settings.poll_interval)));
    }
    match logic.cleanup(obj, ctx).await {
        Ok(Cleanup::Done(notes)) => {
            for note in notes {
                publish(obj, ctx, &note).await;
            }
            Ok(Action::await_change())
        }
        Ok(Cleanup::InProgress(after, message)) => {
            let readiness = Readiness::not_ready(Reason::Deleting, message.clone());
            let sync = SyncState::Progressing {
                reason: Reason::Deleting,
                message,
            };
            write_status(
                obj,
                ctx,
                &previous,
                previous.clone(),
                &readiness,
                &sync,
                last_handled,
            )
            .await;
            Ok(Action::requeue(after))
        }
        Err(error) => {
            let report = failure_report::<K>(&previous, &error);
            write_status(
                obj,
                ctx,
                &previous,
                report.status.clone(),
                &report.readiness,
                &report.sync,
                last_handled,
            )
            .await;
            publish(
                obj,
                ctx,
                &Note::warning(
                    error.reason(),
                    "Delete",
                    format!("cannot delete yet: {error}"),
                ),
            )
            .await;
            Err(error)
        }
    }
}

/// The report for a reconcile that failed: observed fields stay as they were.
fn failure_report<K: Managed>(previous: &K::Status, error: &ReconcileError) -> Report<K::Status> {
    let reason = error.reason();
    let message = error.to_string();
    let sync = match error {
        ReconcileError::Waiting { .. } => SyncState::Progressing {
            reason,
            message: message.clone(),
        },
        e if e.is_transient() => SyncState::Retrying {
            reason,
            message: message.clone(),
        },
        _ => SyncState::Stalled {
            reason,
            message: message.clone(),
        },
    };
    Report {
        status: previous.clone(),
        readiness: Readiness::not_ready(reason, message),
        sync,
        requeue_after: None,
        notes: Vec::new(),
        plan: Default::default(),
    }
}

/// Applies the status when it differs from what is stored; a no-op reconcile writes nothing.
async fn write_status<K: Managed>(
    obj: &K,
    ctx: &Context,
    previous: &K::Status,
    mut status: K::Status,
    readiness: &Readiness,
    sync: &SyncState,
    last_handled: Option<String>,
) -> bool {
    let kind = K::kind(&()).to_string();
    let conditions = conditions::compute(
        K::conditions(previous),
        obj.meta().generation,
        readiness,
        sync,
        Timestamp::now(),
    );
    K::stamp(&mut status, obj.meta().generation, conditions, last_handled);
    if obj.status() == Some(&status) {
        ctx.metrics.status_write(&kind, false);
        return true;
    }
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": kind,
        "status": status,
    });
    let api = K::api(ctx.client.clone(), obj);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api
        .patch_status(&obj.name_any(), &params, &Patch::Apply(&body))
        .await
    {
        Ok(_) => {
            ctx.metrics.status_write(&kind, true);
            true
        }
        Err(e) => {
            warn!(error = %e, "cannot write status");
            false
        }
    }
}

/// Publishes the report's Events, plus one for an error whose message is new.
async fn publish_notes<K: Managed>(
    obj: &K,
    ctx: &Context,
    previous: &K::Status,
    report: &Report<K::Status>,
    trace_id: Option<&str>,
) {
    for note in &report.notes {
        if let Some(field) = &note.drift_field {
            ctx.metrics.drift_corrected(&K::kind(&()), field);
        }
        publish(obj, ctx, note).await;
    }
    let prior = find_condition(K::conditions(previous), SYNCED)
        .map(|c| (c.reason.as_str(), c.message.as_str()));
    let (reason, message) = match &report.sync {
        SyncState::Retrying { reason, message } | SyncState::Stalled { reason, message } => {
            (reason, message)
        }
        SyncState::Progressing { reason, message } if reason.is_missing_dependency() => {
            (reason, message)
        }
        _ => return,
    };
    // The same error again is already visible in the condition; only a new one is an Event.
    // The platform's trace id changes with every call, so it goes in the Event, never in the
    // condition (which would otherwise change, and be rewritten, on every try).
    if prior != Some((reason.as_str(), message.as_str())) {
        let note = match trace_id {
            Some(id) => format!("{message} (platform trace id {id})"),
            None => message.clone(),
        };
        publish(obj, ctx, &Note::warning(*reason, "Reconcile", note)).await;
    }
}

async fn publish<K: Managed>(obj: &K, ctx: &Context, note: &Note) {
    if note.warning {
        warn!(reason = %note.reason, message = %note.message, "event");
    } else {
        info!(reason = %note.reason, message = %note.message, "event");
    }
    let regarding = obj.object_ref(&());
    if let Err(e) = ctx
        .events
        .publish(
            &regarding,
            note.warning,
            note.reason.as_str(),
            &note.action,
            &note.message,
        )
        .await
    {
        warn!(error = %e, reason = %note.reason, "cannot publish Event");
    }
}

/// The poll interval with ±10 % jitter, so objects created together do not poll together.
fn jittered(d: Duration) -> Duration {
    let factor = 0.9 + 0.2 * rand::rng().random::<f64>();
    Duration::from_secs_f64(d.as_secs_f64() * factor)
}
