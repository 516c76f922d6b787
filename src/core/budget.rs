//! One request budget per platform credential, shared by every object that uses it.
//!
//! Platforms state their limits as requests per minute and count them in (sliding or fixed)
//! minutes. The budget schedules every request so that no 60-second window holds more than
//! the limit, and no 1-second window more than the burst: the whole minute's allowance is
//! usable (a token bucket would hold part of it back), yet requests are spread rather than
//! fired all at once. A 429 from the platform pauses the whole budget for its `Retry-After`,
//! because every caller with that credential would get the same answer.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

const MINUTE: Duration = Duration::from_secs(60);
const SECOND: Duration = Duration::from_secs(1);
/// Added to the minute window when booking against it: requests booked exactly a minute apart
/// can arrive within one minute at the platform after a few milliseconds of network spread.
/// The second window is bosun's own smoothing, not a platform limit, so it gets none (slack
/// there would cost a fifth of the throughput at 5 a second).
const SLACK: Duration = Duration::from_millis(250);

/// Send-time arithmetic, kept free of clocks and locks so it can be tested exactly.
#[derive(Clone, Debug)]
pub struct Schedule {
    per_minute: usize,
    per_second: usize,
    /// Send times already handed out, oldest first; only the last `per_minute` matter.
    sends: VecDeque<Instant>,
    paused_until: Option<Instant>,
}

impl Schedule {
    /// At most `requests_per_minute - 1` in any minute (the one request of headroom absorbs
    /// network jitter, which can move two requests sent 60 s apart into one minute at the
    /// platform) and at most `burst` in any second.
    pub fn new(requests_per_minute: u32, burst: u32) -> Self {
        let limit = requests_per_minute.max(1) as usize;
        let per_minute = if limit >= 10 { limit - 1 } else { limit };
        Schedule {
            per_minute,
            per_second: (burst.max(1) as usize).min(per_minute),
            sends: VecDeque::new(),
            paused_until: None,
        }
    }

    /// Books the earliest send time at or after `now` that keeps both windows within their
    /// limits; returns how long the caller must wait for it (zero = now). Callers are served
    /// in the order they ask.
    pub fn reserve(&mut self, now: Instant) -> Duration {
        let mut at = now;
        if let Some(until) = self.paused_until {
            at = at.max(until);
        }
        if let Some(last) = self.sends.back() {
            at = at.max(*last);
        }
        let n = self.sends.len();
        if n >= self.per_minute {
            at = at.max(self.sends[n - self.per_minute] + MINUTE + SLACK);
        }
        if n >= self.per_second {
            at = at.max(self.sends[n - self.per_second] + SECOND);
        }
        self.sends.push_back(at);
        while self.sends.len() > self.per_minute.max(self.per_second) {
            self.sends.pop_front();
        }
        at.saturating_duration_since(now)
    }

    /// Stops all sending until `now + after` (the platform said 429 with `Retry-After`).
    pub fn pause(&mut self, now: Instant, after: Duration) {
        let until = now + after;
        if self.paused_until.is_none_or(|p| p < until) {
            self.paused_until = Some(until);
        }
    }
}

/// A shared, async budget.
#[derive(Debug)]
pub struct RateBudget {
    schedule: Mutex<Schedule>,
    requests_per_minute: u32,
}

impl RateBudget {
    pub fn new(requests_per_minute: u32, burst: u32) -> Self {
        RateBudget {
            schedule: Mutex::new(Schedule::new(requests_per_minute, burst)),
            requests_per_minute,
        }
    }

    /// Waits until a request may be sent. Never holds a lock while waiting.
    pub async fn acquire(&self) -> Duration {
        let wait = self
            .schedule
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reserve(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        wait
    }

    pub fn pause(&self, after: Duration) {
        self.schedule
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

    fn offsets(waits: &[Duration]) -> Vec<f64> {
        waits.iter().map(|w| w.as_secs_f64()).collect()
    }

    fn most_in_any_window(sends: &[f64], span: f64) -> usize {
        sends
            .iter()
            .map(|start| {
                sends
                    .iter()
                    .filter(|s| **s >= *start && **s < *start + span)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn the_whole_minute_is_usable_spread_by_the_burst() {
        // 31 a minute (30 after headroom), at most 3 a second.
        let t0 = Instant::now();
        let mut s = Schedule::new(31, 3);
        let waits: Vec<Duration> = (0..90).map(|_| s.reserve(t0)).collect();
        let step = SECOND;
        assert_eq!(&waits[..3], &[Duration::ZERO; 3]);
        assert_eq!(waits[3], step, "the fourth waits for the next second");
        assert_eq!(waits[29], step * 9, "30 sent within 12 s");
        assert_eq!(
            waits[30],
            MINUTE + SLACK,
            "the 31st waits for the first to leave the minute"
        );
        assert_eq!(waits[60], (MINUTE + SLACK) * 2);
        let sends = offsets(&waits);
        // Even a window stretched by the slack (network spread) holds no more than the limit.
        assert_eq!(most_in_any_window(&sends, 60.0 + SLACK.as_secs_f64()), 30);
        assert_eq!(most_in_any_window(&sends, 1.0), 3);
        // The burst paces at full speed: 3 a second, not 3 every 1.25 s.
        assert_eq!(most_in_any_window(&sends[..30], 10.0), 30);
    }

    #[test]
    fn a_quiet_period_restores_the_allowance() {
        let t0 = Instant::now();
        let mut s = Schedule::new(20, 20);
        for _ in 0..19 {
            assert_eq!(s.reserve(t0), Duration::ZERO);
        }
        assert_eq!(s.reserve(t0), MINUTE + SLACK);
        let later = t0 + Duration::from_secs(200);
        assert_eq!(s.reserve(later), Duration::ZERO);
    }

    #[test]
    fn small_limits_have_no_headroom() {
        let t0 = Instant::now();
        let mut s = Schedule::new(2, 5);
        assert_eq!(s.reserve(t0), Duration::ZERO);
        assert_eq!(s.reserve(t0), Duration::ZERO);
        assert_eq!(s.reserve(t0), MINUTE + SLACK);
    }

    #[test]
    fn a_429_pauses_everyone() {
        let t0 = Instant::now();
        let mut s = Schedule::new(600, 10);
        s.pause(t0, Duration::from_secs(7));
        assert_eq!(s.reserve(t0), Duration::from_secs(7));
        assert_eq!(s.reserve(t0 + Duration::from_secs(7)), Duration::ZERO);
        // A shorter pause does not shorten a longer one.
        s.pause(t0, Duration::from_secs(2));
        assert_eq!(s.reserve(t0), Duration::from_secs(7));
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
