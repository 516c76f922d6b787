//! Per-object exponential backoff with jitter for transient errors.
//!
//! kube-runtime has no per-object backoff, so the failure count lives here, keyed by object
//! UID, and is reset by the first successful reconcile.

use rand::Rng;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Backoff bounds.
#[derive(Clone, Copy, Debug)]
pub struct BackoffPolicy {
    pub base: Duration,
    pub max: Duration,
    /// Fraction of the delay added or removed at random (0.2 = ±20 %), so objects that failed
    /// together do not retry together.
    pub jitter: f64,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            base: Duration::from_secs(2),
            max: Duration::from_secs(300),
            jitter: 0.2,
        }
    }
}

impl BackoffPolicy {
    /// The delay before retry number `failures` (1 for the first failure), before jitter.
    pub fn nominal(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(20);
        self.base.saturating_mul(1u32 << exp).min(self.max)
    }

    /// The delay with jitter applied from `unit` (a random number in [0, 1)), never shorter than
    /// what the platform asked for with `Retry-After`.
    pub fn delay(&self, failures: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
        let nominal = self.nominal(failures).as_secs_f64();
        let factor = 1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        let jittered = Duration::from_secs_f64((nominal * factor).max(0.0));
        match retry_after {
            Some(after) => jittered.max(after),
            None => jittered,
        }
    }
}

/// Failure counts per object.
#[derive(Debug, Default)]
pub struct Backoffs {
    policy: BackoffPolicy,
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoffs {
    pub fn new(policy: BackoffPolicy) -> Self {
        Backoffs {
            policy,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Records a failure of `key` and returns how long to wait before the next try.
    pub fn fail(&self, key: &str, retry_after: Option<Duration>) -> Duration {
        let failures = {
            let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            let n = map.entry(key.to_string()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        self.policy
            .delay(failures, retry_after, rand::rng().random::<f64>())
    }

    /// Forgets the failures of `key` after a success.
    pub fn succeed(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// How many failures in a row `key` has had.
    pub fn failures(&self, key: &str) -> u32 {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let p = BackoffPolicy {
            base: Duration::from_secs(1),
            max: Duration::from_secs(10),
            jitter: 0.0,
        };
        let got: Vec<u64> = (1..=6).map(|n| p.nominal(n).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(p.nominal(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let p = BackoffPolicy {
            base: Duration::from_secs(10),
            max: Duration::from_secs(100),
            jitter: 0.2,
        };
        assert_eq!(p.delay(1, None, 0.0), Duration::from_secs(8));
        assert_eq!(p.delay(1, None, 1.0), Duration::from_secs(12));
        assert_eq!(p.delay(1, None, 0.5), Duration::from_secs(10));
    }

    #[test]
    fn retry_after_is_a_floor() {
        let p = BackoffPolicy {
            base: Duration::from_secs(1),
            max: Duration::from_secs(100),
            jitter: 0.0,
        };
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(30)), 0.5),
            Duration::from_secs(30)
        );
        assert_eq!(
            p.delay(7, Some(Duration::from_secs(30)), 0.5),
            Duration::from_secs(64)
        );
    }

    #[test]
    fn success_resets_the_count() {
        let b = Backoffs::new(BackoffPolicy {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
            jitter: 0.0,
        });
        assert_eq!(b.fail("a", None), Duration::from_secs(1));
        assert_eq!(b.fail("a", None), Duration::from_secs(2));
        assert_eq!(b.fail("b", None), Duration::from_secs(1));
        assert_eq!(b.failures("a"), 2);
        b.succeed("a");
        assert_eq!(b.failures("a"), 0);
        assert_eq!(b.fail("a", None), Duration::from_secs(1));
    }
}

/// The backoff of the watches: doubling from 250 ms to at most 2 s (±20 % jitter), reset by the
/// first event after a failure. kube-runtime's default climbs to 30 s and resets only after
/// 120 s, so a restarted control plane went unnoticed for up to a minute or two; a watch is
/// one long request per kind, so retrying every 2 s costs the apiserver nothing that matters.
pub struct WatchBackoff {
    policy: BackoffPolicy,
    failures: u32,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff {
            policy: BackoffPolicy {
                base: Duration::from_millis(250),
                max: Duration::from_secs(2),
                jitter: 0.2,
            },
            failures: 0,
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.failures = self.failures.saturating_add(1);
        let unit = rand::rng().random::<f64>();
        Some(self.policy.delay(self.failures, None, unit))
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod watch_backoff_tests {
    use super::*;
    use kube::runtime::utils::Backoff;

    #[test]
    fn the_watch_backoff_stays_within_two_seconds_and_resets() {
        let mut b = WatchBackoff::default();
        let delays: Vec<Duration> = b.by_ref().take(12).collect();
        assert!(delays[0] <= Duration::from_millis(300), "{delays:?}");
        assert!(
            delays.iter().all(|d| *d <= Duration::from_millis(2400)),
            "{delays:?}"
        );
        assert!(delays[11] >= Duration::from_millis(1600), "{delays:?}");
        b.reset();
        assert!(b.next().unwrap() <= Duration::from_millis(300));
    }
}
