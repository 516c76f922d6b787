//! One listing call shared by every reconcile that needs it within a short time.
//!
//! Observing objects one GET at a time costs a call per object per poll; a platform's list
//! endpoint answers for all of them at once. Reconciles of many objects within `ttl` of each
//! other share one listing, and a reconcile that changed something forgets it so that its next
//! look is fresh.

use crate::core::seam::PlatformError;
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};
use tokio::sync::Mutex as AsyncMutex;

type Slot<T> = Arc<AsyncMutex<Option<(Instant, Arc<Vec<T>>)>>>;

/// How long one listing serves every object of its scope: long enough that listings take at
/// most a fifth of the request budget, and never under 3 s.
pub fn listing_ttl(requests_per_minute: u32) -> Duration {
    let per_fifth = 300.0 / f64::from(requests_per_minute.max(1));
    Duration::from_secs_f64(per_fifth.max(3.0))
}

/// Listings keyed by their scope (a team, an environment), each shared for `ttl`.
pub struct SharedListings<K, T> {
    ttl: Duration,
    slots: StdMutex<HashMap<K, Slot<T>>>,
}

impl<K: Eq + Hash + Clone, T> SharedListings<K, T> {
    pub fn new(ttl: Duration) -> Self {
        SharedListings {
            ttl,
            slots: StdMutex::new(HashMap::new()),
        }
    }

    fn slot(&self, key: &K) -> Slot<T> {
        let mut map = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key.clone()).or_default().clone()
    }

    /// The listing of `key`, fetched only if the last one is older than `ttl`. Concurrent
    /// callers wait for one fetch instead of each sending their own.
    pub async fn get<F, Fut>(&self, key: &K, fetch: F) -> Result<Arc<Vec<T>>, PlatformError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<T>, PlatformError>>,
    {
        let slot = self.slot(key);
        let mut guard = slot.lock().await;
        if let Some((at, list)) = guard.as_ref() {
            if at.elapsed() < self.ttl {
                return Ok(list.clone());
            }
        }
        let list = Arc::new(fetch().await?);
        *guard = Some((Instant::now(), list.clone()));
        Ok(list)
    }

    /// Drops the listing of `key` after bosun changed something in it.
    pub async fn forget(&self, key: &K) {
        *self.slot(key).lock().await = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn listings_take_at_most_a_fifth_of_the_budget() {
        assert_eq!(listing_ttl(300), Duration::from_secs(3));
        assert_eq!(listing_ttl(30), Duration::from_secs(10));
        assert_eq!(listing_ttl(0), Duration::from_secs(300));
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch_until_forgotten() {
        let listings: SharedListings<i64, u8> = SharedListings::new(Duration::from_secs(60));
        let fetches = AtomicUsize::new(0);
        let fetch = || async {
            fetches.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(vec![1, 2])
        };
        let (a, b) = tokio::join!(listings.get(&1, fetch), listings.get(&1, fetch));
        assert_eq!(*a.expect("a"), vec![1, 2]);
        assert_eq!(*b.expect("b"), vec![1, 2]);
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // Another scope has its own listing.
        listings.get(&2, fetch).await.expect("other");
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        listings.forget(&1).await;
        listings.get(&1, fetch).await.expect("fresh");
        assert_eq!(fetches.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_failed_fetch_is_not_cached() {
        let listings: SharedListings<i64, u8> = SharedListings::new(Duration::from_secs(60));
        let failed = listings
            .get(&1, || async {
                Err(PlatformError::new(
                    crate::core::seam::ErrorKind::Unavailable,
                    "down",
                ))
            })
            .await;
        assert!(failed.is_err());
        let ok = listings.get(&1, || async { Ok(vec![7]) }).await;
        assert_eq!(*ok.expect("ok"), vec![7]);
    }
}
