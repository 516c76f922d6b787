//! Pure computation of the four standard conditions from what a reconcile found.
//!
//! kstatus reads `Reconciling` and `Stalled` as abnormal-true; `Ready` and `Synced` follow the
//! Crossplane convention. `lastTransitionTime` only moves when a condition's status changes, so
//! a reconcile that changes nothing produces an identical status (and no write).

use super::reason::Reason;
use crate::api::condition_types::{READY, RECONCILING, STALLED, SYNCED};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// How the last reconcile went, from the point of view of acting on the spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncState {
    /// The spec is applied and nothing is pending.
    Synced,
    /// The spec was applied (or is being) and the platform is still working.
    Progressing { reason: Reason, message: String },
    /// A transient failure; bosun retries with backoff.
    Retrying { reason: Reason, message: String },
    /// bosun cannot go on until the user changes something.
    Stalled { reason: Reason, message: String },
    /// `bosun.dev/paused` is set: observing only.
    Paused,
    /// `managementPolicy: Observe`: reporting only, never writing.
    Observing,
}

/// Whether the platform object is ready, with a reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub reason: Reason,
    pub message: String,
}

impl Readiness {
    pub fn ready(reason: Reason, message: impl Into<String>) -> Self {
        Readiness {
            ready: true,
            reason,
            message: message.into(),
        }
    }
    pub fn not_ready(reason: Reason, message: impl Into<String>) -> Self {
        Readiness {
            ready: false,
            reason,
            message: message.into(),
        }
    }
}

/// Builds the four conditions, keeping `lastTransitionTime` of conditions whose status is unchanged.
pub fn compute(
    previous: &[Condition],
    generation: Option<i64>,
    readiness: &Readiness,
    sync: &SyncState,
    now: Timestamp,
) -> Vec<Condition> {
    let (synced, synced_reason, synced_message): (bool, Reason, &str) = match sync {
        SyncState::Synced => (
            true,
            Reason::ReconcileSuccess,
            "the platform matches the spec",
        ),
        SyncState::Progressing { message, .. } => (true, Reason::ReconcileSuccess, message),
        SyncState::Retrying { reason, message } => (false, *reason, message),
        SyncState::Stalled { reason, message } => (false, *reason, message),
        SyncState::Paused => (
            false,
            // Fixed by the design contract.
            Reason::ReconcilePaused,
            "bosun.dev/paused is \"true\": observing only, not acting",
        ),
        SyncState::Observing => (
            true,
            Reason::Observing,
            "managementPolicy is Observe: reporting only",
        ),
    };
    let (reconciling, rec_reason, rec_message): (bool, Reason, &str) = match sync {
        SyncState::Progressing { reason, message } => (true, *reason, message),
        SyncState::Retrying { reason, message } => (true, *reason, message),
        _ => (false, Reason::Idle, ""),
    };
    let (stalled, st_reason, st_message): (bool, Reason, &str) = match sync {
        SyncState::Stalled { reason, message } => (true, *reason, message),
        _ => (false, Reason::NotStalled, ""),
    };
    let ready_message = if readiness.ready || !readiness.message.is_empty() {
        readiness.message.as_str()
    } else {
        ""
    };
    vec![
        condition(
            previous,
            READY,
            readiness.ready,
            readiness.reason,
            ready_message,
            generation,
            now,
        ),
        condition(
            previous,
            SYNCED,
            synced,
            synced_reason,
            synced_message,
            generation,
            now,
        ),
        condition(
            previous,
            RECONCILING,
            reconciling,
            rec_reason,
            rec_message,
            generation,
            now,
        ),
        condition(
            previous, STALLED, stalled, st_reason, st_message, generation, now,
        ),
    ]
}

fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: Reason,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: truncate(message, 1024),
        observed_generation: generation,
        last_transition_time,
    }
}

/// Condition messages are capped so one long platform answer cannot bloat the object.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn get<'a>(c: &'a [Condition], type_: &str) -> &'a Condition {
        c.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn ready_and_synced_set_kstatus_conditions_false() {
        let c = compute(
            &[],
            Some(3),
            &Readiness::ready(Reason::Available, "running"),
            &SyncState::Synced,
            t(0),
        );
        assert_eq!(get(&c, READY).status, "True");
        assert_eq!(get(&c, SYNCED).status, "True");
        assert_eq!(get(&c, RECONCILING).status, "False");
        assert_eq!(get(&c, STALLED).status, "False");
        assert!(c.iter().all(|c| c.observed_generation == Some(3)));
    }

    #[test]
    fn stalled_is_abnormal_true_and_unsyncs() {
        let sync = SyncState::Stalled {
            reason: Reason::SecretNotFound,
            message: "Secret \"x\" not found".into(),
        };
        let c = compute(
            &[],
            Some(1),
            &Readiness::not_ready(Reason::SecretNotFound, "x"),
            &sync,
            t(0),
        );
        assert_eq!(get(&c, STALLED).status, "True");
        assert_eq!(get(&c, STALLED).reason, "SecretNotFound");
        assert_eq!(get(&c, SYNCED).status, "False");
        assert_eq!(get(&c, RECONCILING).status, "False");
        assert_eq!(get(&c, READY).status, "False");
    }

    #[test]
    fn retrying_and_progressing_mark_reconciling() {
        let retry = SyncState::Retrying {
            reason: Reason::PlatformUnavailable,
            message: "503".into(),
        };
        let c = compute(
            &[],
            None,
            &Readiness::not_ready(Reason::Creating, ""),
            &retry,
            t(0),
        );
        assert_eq!(get(&c, RECONCILING).status, "True");
        assert_eq!(get(&c, SYNCED).status, "False");
        let prog = SyncState::Progressing {
            reason: Reason::Creating,
            message: "creating".into(),
        };
        let c = compute(
            &[],
            None,
            &Readiness::not_ready(Reason::Creating, ""),
            &prog,
            t(0),
        );
        assert_eq!(get(&c, RECONCILING).status, "True");
        assert_eq!(get(&c, SYNCED).status, "True");
        assert_eq!(get(&c, STALLED).status, "False");
    }

    #[test]
    fn paused_uses_the_fixed_reason() {
        let c = compute(
            &[],
            None,
            &Readiness::ready(Reason::Available, ""),
            &SyncState::Paused,
            t(0),
        );
        assert_eq!(get(&c, SYNCED).reason, "ReconcilePaused");
        assert_eq!(get(&c, SYNCED).status, "False");
        assert_eq!(get(&c, READY).status, "True");
    }

    #[test]
    fn transition_time_is_stable_while_status_is_unchanged() {
        let first = compute(
            &[],
            Some(1),
            &Readiness::not_ready(Reason::Creating, ""),
            &SyncState::Synced,
            t(0),
        );
        let second = compute(
            &first,
            Some(2),
            &Readiness::not_ready(Reason::Creating, "still"),
            &SyncState::Synced,
            t(60),
        );
        assert_eq!(get(&second, READY).last_transition_time, Time(t(0)));
        let third = compute(
            &second,
            Some(2),
            &Readiness::ready(Reason::Available, ""),
            &SyncState::Synced,
            t(120),
        );
        assert_eq!(get(&third, READY).last_transition_time, Time(t(120)));
        assert_eq!(get(&third, SYNCED).last_transition_time, Time(t(0)));
    }

    #[test]
    fn identical_input_gives_identical_output() {
        let a = compute(
            &[],
            Some(1),
            &Readiness::ready(Reason::Available, "ok"),
            &SyncState::Synced,
            t(0),
        );
        let b = compute(
            &a,
            Some(1),
            &Readiness::ready(Reason::Available, "ok"),
            &SyncState::Synced,
            t(500),
        );
        assert_eq!(a, b);
    }

    #[test]
    fn long_messages_are_truncated_on_a_char_boundary() {
        let long = "é".repeat(2000);
        let c = compute(
            &[],
            None,
            &Readiness::not_ready(Reason::Creating, long),
            &SyncState::Synced,
            t(0),
        );
        assert!(get(&c, READY).message.len() <= 1024 + '…'.len_utf8());
    }
}
