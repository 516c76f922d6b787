//! State shared by every reconcile: clients, metrics, backoff, budgets and the connector that
//! builds platform clients.

use super::backoff::{BackoffPolicy, Backoffs};
use super::budget::Budgets;
use super::events::Publisher;
use super::metrics::Metrics;
use super::seam::Connector;
use kube::Client;
use std::sync::Arc;
use std::time::Duration;

/// Operator-wide settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How often objects are checked for drift when they do not say otherwise.
    pub poll_interval: Duration,
    /// Backoff for transient errors.
    pub backoff: BackoffPolicy,
    /// Where Provider endpoints may point.
    pub endpoints: crate::core::endpoint::EndpointPolicy,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            poll_interval: Duration::from_secs(60),
            backoff: BackoffPolicy::default(),
            endpoints: Default::default(),
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
    /// Builds (and keeps) platform clients; the platforms supply it.
    pub platforms: Arc<dyn Connector>,
    pub settings: Settings,
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Metrics,
        settings: Settings,
        instance: Option<String>,
        platforms: Arc<dyn Connector>,
    ) -> Arc<Self> {
        Arc::new(Context {
            events: Publisher::new(client.clone(), instance),
            client,
            metrics,
            backoffs: Backoffs::new(settings.backoff),
            budgets: Budgets::default(),
            platforms,
            settings,
        })
    }
}
