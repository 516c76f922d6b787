//! The annotations users set on bosun objects, and their parsing (pure).

use std::collections::BTreeMap;
use std::time::Duration;

/// `"true"` stops acting (observing continues); `Synced` reason `ReconcilePaused`.
pub const PAUSED: &str = "bosun.dev/paused";
/// Any new token asks for a reconcile now; it is echoed in `status.lastHandledReconcileAt`.
pub const RECONCILE_REQUESTED_AT: &str = "bosun.dev/reconcile-requested-at";
/// Per-object drift-check period, a duration such as `30s` or `10m`.
pub const POLL_INTERVAL: &str = "bosun.dev/poll-interval";
/// Written before a non-idempotent create, so a crash can never create twice.
pub const CREATE_PENDING: &str = "bosun.dev/create-pending";

/// The shortest poll interval an object may ask for: a lower value would let one object eat
/// the credential's shared request budget.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// The annotations that steer a reconcile, parsed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Steering {
    pub paused: bool,
    pub reconcile_requested_at: Option<String>,
    /// `Some` when the object asks for its own poll interval.
    pub poll_interval: Option<Duration>,
    /// Set when `bosun.dev/poll-interval` is present but unreadable.
    pub poll_interval_error: Option<String>,
}

/// Reads the steering annotations of an object.
pub fn steering(annotations: &BTreeMap<String, String>) -> Steering {
    let paused = annotations
        .get(PAUSED)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let reconcile_requested_at = annotations
        .get(RECONCILE_REQUESTED_AT)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty());
    let (poll_interval, poll_interval_error) = match annotations.get(POLL_INTERVAL) {
        None => (None, None),
        Some(raw) => match humantime::parse_duration(raw.trim()) {
            Ok(d) => (Some(d.max(MIN_POLL_INTERVAL)), None),
            Err(e) => (
                None,
                Some(format!(
                    "annotation {POLL_INTERVAL}={raw:?} is not a duration such as 30s or 10m: {e}"
                )),
            ),
        },
    };
    Steering {
        paused,
        reconcile_requested_at,
        poll_interval,
        poll_interval_error,
    }
}

/// Whether a reconcile-now request is new (not yet echoed in status).
pub fn reconcile_requested(steering: &Steering, last_handled: Option<&str>) -> bool {
    match &steering.reconcile_requested_at {
        Some(token) => last_handled != Some(token.as_str()),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn nothing_set_means_defaults() {
        assert_eq!(steering(&ann(&[])), Steering::default());
    }

    #[test]
    fn paused_only_for_true() {
        assert!(steering(&ann(&[(PAUSED, "true")])).paused);
        assert!(steering(&ann(&[(PAUSED, " TRUE ")])).paused);
        assert!(!steering(&ann(&[(PAUSED, "false")])).paused);
        assert!(!steering(&ann(&[(PAUSED, "yes")])).paused);
    }

    #[test]
    fn poll_interval_parses_and_is_clamped() {
        assert_eq!(
            steering(&ann(&[(POLL_INTERVAL, "10m")])).poll_interval,
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            steering(&ann(&[(POLL_INTERVAL, "1s")])).poll_interval,
            Some(MIN_POLL_INTERVAL)
        );
        let bad = steering(&ann(&[(POLL_INTERVAL, "often")]));
        assert_eq!(bad.poll_interval, None);
        assert!(bad.poll_interval_error.unwrap().contains("often"));
    }

    #[test]
    fn reconcile_request_is_new_until_echoed() {
        let s = steering(&ann(&[(RECONCILE_REQUESTED_AT, "2026-11-23T10:00:00Z")]));
        assert!(reconcile_requested(&s, None));
        assert!(reconcile_requested(&s, Some("older")));
        assert!(!reconcile_requested(&s, Some("2026-11-23T10:00:00Z")));
        assert!(!reconcile_requested(&steering(&ann(&[])), None));
    }
}
