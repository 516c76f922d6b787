//! State shared by every reconcile: clients, metrics, backoff, budgets and platform clients.

use super::backoff::{BackoffPolicy, Backoffs};
use super::events::Publisher;
use super::metrics::Metrics;
use crate::platform::budget::Budgets;
use crate::platform::Platform;
use kube::Client;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Operator-wide settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How often objects are checked for drift when they do not say otherwise.
    pub poll_interval: Duration,
    /// Backoff for transient errors.
    pub backoff: BackoffPolicy,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            poll_interval: Duration::from_secs(60),
            backoff: BackoffPolicy::default(),
        }
    }
}

/// Everything a reconcile needs besides the object itself.
pub struct Context {
    pub client: Client,
    pub events: Publisher,
    pub metrics: Metrics,
    pub backoffs: Backoffs,
    pub budgets: Budgets,
    pub platforms: PlatformCache,
    pub settings: Settings,
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Metrics,
        settings: Settings,
        instance: Option<String>,
    ) -> Arc<Self> {
        Arc::new(Context {
            events: Publisher::new(client.clone(), instance),
            client,
            metrics,
            backoffs: Backoffs::new(settings.backoff),
            budgets: Budgets::default(),
            platforms: PlatformCache::default(),
            settings,
        })
    }
}

/// A platform client and the fingerprint of what it was built from.
type Built = (u64, Arc<dyn Platform>);

/// Platform clients per provider, rebuilt whenever what they were built from changes (the
/// provider's spec, its Secret's value or its CA), so a rotated credential is used at once.
#[derive(Default)]
pub struct PlatformCache {
    entries: Mutex<HashMap<String, Built>>,
}

impl PlatformCache {
    /// The cached client for `key` if it was built from `fingerprint`.
    pub fn get(&self, key: &str, fingerprint: u64) -> Option<Arc<dyn Platform>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|(f, _)| *f == fingerprint)
            .map(|(_, p)| p.clone())
    }

    /// The last client built for `key`, whatever it was built from.
    pub fn last(&self, key: &str) -> Option<Arc<dyn Platform>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(key).map(|(_, p)| p.clone())
    }

    pub fn put(&self, key: &str, fingerprint: u64, platform: Arc<dyn Platform>) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_string(), (fingerprint, platform));
    }
}
