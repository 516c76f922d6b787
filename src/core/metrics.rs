//! Prometheus metrics, served on `/metrics`. Labels never carry credentials or object data
//! beyond kind, platform, operation and field names.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    kind: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DriftLabels {
    kind: String,
    field: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    platform: String,
    operation: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlatformLabels {
    platform: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusWriteLabels {
    kind: String,
    outcome: String,
}

struct Inner {
    registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_duration: Family<KindLabels, Histogram>,
    drift: Family<DriftLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<PlatformLabels, Histogram>,
    status_writes: Family<StatusWriteLabels, Counter>,
}

/// The operator's metrics; cheap to clone.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("bosun");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by kind and result",
            reconciles.clone(),
        );
        let reconcile_duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            reconcile_duration.clone(),
        );
        let drift = Family::<DriftLabels, Counter>::default();
        registry.register(
            "drift_corrections",
            "Fields changed at the platform behind bosun's back and set back",
            drift.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "provider_requests",
            "Requests sent to platform APIs by operation and answer",
            requests.clone(),
        );
        let request_duration = Family::<PlatformLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        registry.register(
            "provider_request_duration_seconds",
            "Platform API latency",
            request_duration.clone(),
        );
        let status_writes = Family::<StatusWriteLabels, Counter>::default();
        registry.register(
            "status_writes",
            "Status patches sent, and those skipped because nothing changed",
            status_writes.clone(),
        );
        Metrics(Arc::new(Inner {
            registry,
            reconciles,
            reconcile_duration,
            drift,
            requests,
            request_duration,
            status_writes,
        }))
    }

    pub fn reconciled(&self, kind: &str, result: &str, took: Duration) {
        self.0
            .reconciles
            .get_or_create(&ReconcileLabels {
                kind: kind.into(),
                result: result.into(),
            })
            .inc();
        self.0
            .reconcile_duration
            .get_or_create(&KindLabels { kind: kind.into() })
            .observe(took.as_secs_f64());
    }

    pub fn drift_corrected(&self, kind: &str, field: &str) {
        self.0
            .drift
            .get_or_create(&DriftLabels {
                kind: kind.into(),
                field: field.into(),
            })
            .inc();
    }

    pub fn provider_request(&self, platform: &str, operation: &str, code: &str, took: Duration) {
        self.0
            .requests
            .get_or_create(&RequestLabels {
                platform: platform.into(),
                operation: operation.into(),
                code: code.into(),
            })
            .inc();
        self.0
            .request_duration
            .get_or_create(&PlatformLabels {
                platform: platform.into(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn status_write(&self, kind: &str, written: bool) {
        let outcome = if written { "written" } else { "unchanged" };
        self.0
            .status_writes
            .get_or_create(&StatusWriteLabels {
                kind: kind.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.0.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_was_counted() {
        let m = Metrics::new();
        m.reconciled("Workspace", "success", Duration::from_millis(3));
        m.drift_corrected("ServiceScale", "spec.replicas");
        m.provider_request("codesphere", "listTeams", "200", Duration::from_millis(1));
        m.status_write("Workspace", false);
        let text = m.render();
        assert!(
            text.contains("bosun_reconciles_total{kind=\"Workspace\",result=\"success\"} 1"),
            "{text}"
        );
        assert!(text.contains(
            "bosun_drift_corrections_total{kind=\"ServiceScale\",field=\"spec.replicas\"} 1"
        ));
        assert!(text.contains("bosun_provider_requests_total{platform=\"codesphere\",operation=\"listTeams\",code=\"200\"} 1"));
        assert!(
            text.contains("bosun_status_writes_total{kind=\"Workspace\",outcome=\"unchanged\"} 1")
        );
    }
}
