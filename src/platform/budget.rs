//! One request budget per platform credential, shared by every object that uses it.
//!
//! A token bucket refilled at the sustained rate; a 429 from the platform pauses the whole
//! bucket for its `Retry-After`, because every caller with that credential would get the same
//! answer.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Token-bucket arithmetic, kept free of clocks and locks so it can be tested exactly.
#[derive(Clone, Debug)]
pub struct Bucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    paused_until: Option<Instant>,
}

impl Bucket {
    /// Platforms count requests in sliding minutes, and a bucket can send its whole burst on
    /// top of a minute's refill. So the burst is capped at half the limit and the refill is
    /// `(limit - burst) / minute`: no 60-second window ever holds more than `limit` requests.
    pub fn new(requests_per_minute: u32, burst: u32, now: Instant) -> Self {
        let limit = f64::from(requests_per_minute.max(2));
        let burst = f64::from(burst.max(1)).min((limit / 2.0).floor());
        Bucket {
            per_second: (limit - burst) / 60.0,
            burst,
            tokens: burst,
            last: now,
            paused_until: None,
        }
    }

    /// Takes one token; returns how long the caller must wait before sending (zero = now).
    /// A waiting caller's token is already taken, so callers queue fairly.
    pub fn reserve(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.last = now;
        self.tokens -= 1.0;
        let refill_wait = if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.per_second)
        };
        let pause_wait = self
            .paused_until
            .map(|until| until.saturating_duration_since(now))
            .unwrap_or_default();
        refill_wait.max(pause_wait)
    }

    /// Stops all sending until `now + after` (the platform said 429 with `Retry-After`).
    pub fn pause(&mut self, now: Instant, after: Duration) {
        let until = now + after;
        if self.paused_until.is_none_or(|p| p < until) {
            self.paused_until = Some(until);
        }
        // Nothing accumulated while paused: the platform's window restarts too.
        self.tokens = self.tokens.min(0.0);
    }
}

/// A shared, async budget.
#[derive(Debug)]
pub struct RateBudget {
    bucket: Mutex<Bucket>,
    requests_per_minute: u32,
}

impl RateBudget {
    pub fn new(requests_per_minute: u32, burst: u32) -> Self {
        RateBudget {
            bucket: Mutex::new(Bucket::new(requests_per_minute, burst, Instant::now())),
            requests_per_minute,
        }
    }

    /// Waits until a request may be sent. Never holds a lock while waiting.
    pub async fn acquire(&self) -> Duration {
        let wait = self
            .bucket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reserve(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        wait
    }

    pub fn pause(&self, after: Duration) {
        self.bucket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pause(Instant::now(), after);
    }

    pub fn requests_per_minute(&self) -> u32 {
        self.requests_per_minute
    }
}

/// The budgets of all credentials, keyed by platform, endpoint and a hash of the credential
/// (kept in memory only; neither the credential nor its hash is written anywhere).
#[derive(Debug, Default)]
pub struct Budgets {
    budgets: Mutex<HashMap<(String, String, u64), Arc<RateBudget>>>,
}

impl Budgets {
    /// The budget for this credential, created on first use. A changed limit replaces it.
    pub fn get(
        &self,
        platform: &str,
        endpoint: &str,
        credential: &str,
        per_minute: u32,
        burst: u32,
    ) -> Arc<RateBudget> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        credential.hash(&mut hasher);
        let key = (platform.to_string(), endpoint.to_string(), hasher.finish());
        let mut map = self.budgets.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map
            .entry(key)
            .or_insert_with(|| Arc::new(RateBudget::new(per_minute, burst)));
        if entry.requests_per_minute() != per_minute {
            *entry = Arc::new(RateBudget::new(per_minute, burst));
        }
        entry.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_sustained_rate() {
        let t0 = Instant::now();
        // 63 a minute with a burst of 3: 60 a minute refill, one a second.
        let mut b = Bucket::new(63, 3, t0);
        assert_eq!(b.reserve(t0), Duration::ZERO);
        assert_eq!(b.reserve(t0), Duration::ZERO);
        assert_eq!(b.reserve(t0), Duration::ZERO);
        // The fourth waits one token at 1/s; the fifth two.
        assert_eq!(b.reserve(t0), Duration::from_secs(1));
        assert_eq!(b.reserve(t0), Duration::from_secs(2));
    }

    #[test]
    fn refills_over_time_up_to_burst() {
        let t0 = Instant::now();
        let mut b = Bucket::new(62, 2, t0);
        b.reserve(t0);
        b.reserve(t0);
        let later = t0 + Duration::from_secs(100);
        assert_eq!(b.reserve(later), Duration::ZERO);
        assert_eq!(b.reserve(later), Duration::ZERO);
        assert_eq!(b.reserve(later), Duration::from_secs(1));
    }

    #[test]
    fn never_exceeds_the_limit_in_any_minute() {
        // 120 requests at once against 30/min with burst 6: refill 24/min, one per 2.5 s.
        let t0 = Instant::now();
        let mut b = Bucket::new(30, 6, t0);
        let waits: Vec<Duration> = (0..120).map(|_| b.reserve(t0)).collect();
        assert_eq!(waits[5], Duration::ZERO);
        assert_eq!(waits[6], Duration::from_millis(2500));
        let sends: Vec<f64> = waits.iter().map(|w| w.as_secs_f64()).collect();
        for start in &sends {
            let in_window = sends
                .iter()
                .filter(|s| **s >= *start && **s < *start + 60.0)
                .count();
            assert!(in_window <= 30, "{in_window} sends in one minute");
        }
    }

    #[test]
    fn burst_is_capped_at_half_the_limit() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10, 100, t0);
        let free = (0..100).take_while(|_| b.reserve(t0).is_zero()).count();
        assert_eq!(free, 5);
    }

    #[test]
    fn a_429_pauses_everyone() {
        let t0 = Instant::now();
        let mut b = Bucket::new(610, 10, t0);
        b.pause(t0, Duration::from_secs(7));
        assert_eq!(b.reserve(t0), Duration::from_secs(7));
        // Nothing accumulated beyond what refilled: 10 a second after the pause.
        assert!(b.reserve(t0 + Duration::from_secs(7)) <= Duration::from_millis(100));
    }

    #[test]
    fn budgets_are_shared_per_credential() {
        let budgets = Budgets::default();
        let a = budgets.get("codesphere", "http://x", "token-a", 60, 5);
        let a2 = budgets.get("codesphere", "http://x", "token-a", 60, 5);
        let b = budgets.get("codesphere", "http://x", "token-b", 60, 5);
        assert!(Arc::ptr_eq(&a, &a2));
        assert!(!Arc::ptr_eq(&a, &b));
        let changed = budgets.get("codesphere", "http://x", "token-a", 120, 5);
        assert!(!Arc::ptr_eq(&a, &changed));
    }
}
