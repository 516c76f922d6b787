//! What a platform implements to manage each kind. The controller core resolves references,
//! Secrets and capabilities, then hands the platform a neutral request; the platform's mapping
//! observes, plans (pure) and acts, and reports what status should show.

use crate::api::{
    DnsRecord, DomainBindingStatus, ServiceScaleStatus, WorkspaceSpec, WorkspaceStatus,
};
use crate::core::conditions::{Readiness, SyncState};
use crate::core::error::ReconcileError;
use crate::core::reason::Reason;
use crate::core::reconciler::{Cleanup, Mode, Report};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex as StdMutex;
use std::time::{Duration, Instant};

/// A Workspace as the platform sees it: the spec with Secrets resolved.
pub struct WorkspaceRequest<'a> {
    /// `namespace/name`, for messages.
    pub key: String,
    /// The object's name at the platform (`spec.externalName`, else `<namespace>-<name>`).
    pub external_name: String,
    pub spec: &'a WorkspaceSpec,
    /// Environment variables with Secret values resolved; never logged.
    pub env: BTreeMap<String, String>,
    pub previous: &'a WorkspaceStatus,
    pub generation: i64,
    /// The generation the last status described: a spec change when it differs.
    pub observed_generation: Option<i64>,
    pub mode: Mode,
    /// A `bosun.dev/create-pending` marker is present: an earlier create may have gone through.
    pub create_pending: bool,
    /// The object's own `bosun.dev/poll-interval`, when it sets one: the user asked for drift
    /// checks this often, so per-object reads that are otherwise rare happen this often too.
    pub poll_interval: Option<Duration>,
}

#[cfg(test)]
impl<'a> WorkspaceRequest<'a> {
    /// A request for unit tests: `team/shop` at the platform as `team-shop`, generation 2 of a
    /// spec whose last status described generation 1, sent (not held).
    pub fn for_test(spec: &'a WorkspaceSpec, previous: &'a WorkspaceStatus) -> Self {
        WorkspaceRequest {
            key: "team/shop".into(),
            external_name: "team-shop".into(),
            spec,
            env: BTreeMap::new(),
            previous,
            generation: 2,
            observed_generation: Some(1),
            mode: Mode::SEND,
            create_pending: false,
            poll_interval: None,
        }
    }
}

impl WorkspaceRequest<'_> {
    /// The platform id bosun knows for the object: the one status recorded (a blue/green
    /// rollout moves it), else `spec.externalId`. A blank one counts as none.
    pub fn known_id(&self) -> Option<&str> {
        self.previous
            .external_id
            .as_deref()
            .or(self.spec.external_id.as_deref())
            .filter(|s| !s.trim().is_empty())
    }

    /// [`Self::known_id`] as the platform's id type; one that does not parse is an error for
    /// the user naming what an id looks like there (`what`).
    pub fn known_id_as<Id: std::str::FromStr>(
        &self,
        what: &str,
    ) -> Result<Option<Id>, ReconcileError> {
        self.known_id()
            .map(|s| {
                s.parse().map_err(|_| {
                    ReconcileError::user(
                        Reason::ExternalIdInvalid,
                        format!("spec.externalId {s:?} is not {what}"),
                    )
                })
            })
            .transpose()
    }

    /// Whether a difference at the platform is drift (the spec did not change since the last
    /// status) rather than a new spec being rolled out.
    pub fn is_drift(&self) -> bool {
        self.observed_generation == Some(self.generation)
    }
}

/// Calls back into the controller core around non-idempotent creates.
#[async_trait]
pub trait CreateGuard: Send + Sync {
    /// Records `bosun.dev/create-pending` on the object (failing if the object changed since it
    /// was read), so a crash after the create can never lead to a second one.
    async fn before_create(&self) -> Result<(), ReconcileError>;
    /// Saves the new platform id in status and clears the marker.
    async fn created(&self, external_id: &str) -> Result<(), ReconcileError>;
    /// Saves `status.operation` before a non-idempotent call (a deploy), so that a restart
    /// between the call and the end of the reconcile knows the call may have been made.
    async fn save_operation(
        &self,
        operation: &crate::api::OperationStatus,
    ) -> Result<(), ReconcileError>;
}

/// Workspaces on a platform.
#[async_trait]
pub trait WorkspaceDriver: Send + Sync {
    async fn reconcile(
        &self,
        request: &WorkspaceRequest<'_>,
        guard: &dyn CreateGuard,
    ) -> Result<Report<WorkspaceStatus>, ReconcileError>;
    /// Deletes the platform object (the core has already honoured `Orphan` and `Observe`).
    async fn delete(&self, request: &WorkspaceRequest<'_>) -> Result<Cleanup, ReconcileError>;
}

/// A ServiceScale as the platform sees it.
pub struct ScaleRequest<'a> {
    pub key: String,
    pub service: &'a str,
    pub replicas: i32,
    /// The Workspace's platform id.
    pub workspace_id: &'a str,
    pub previous: &'a ServiceScaleStatus,
    pub generation: i64,
    pub observed_generation: Option<i64>,
    pub mode: Mode,
}

impl ScaleRequest<'_> {
    pub fn is_drift(&self) -> bool {
        self.observed_generation == Some(self.generation)
    }
}

/// Per-service replica counts on a platform.
#[async_trait]
pub trait ServiceScaleDriver: Send + Sync {
    async fn reconcile(
        &self,
        request: &ScaleRequest<'_>,
    ) -> Result<Report<ServiceScaleStatus>, ReconcileError>;
}

/// A DomainBinding as the platform sees it: routes with Workspaces resolved to platform ids.
pub struct DomainRequest<'a> {
    pub key: String,
    pub domain: &'a str,
    /// Path → platform ids of the Workspaces serving it.
    pub routes: BTreeMap<String, Vec<String>>,
    pub tls: bool,
    pub previous: &'a DomainBindingStatus,
    pub generation: i64,
    pub observed_generation: Option<i64>,
    pub mode: Mode,
}

#[cfg(test)]
impl<'a> DomainRequest<'a> {
    /// A request for unit tests: `team/shop` binding `domain` with TLS, generation 1 as last
    /// described by status, sent (not held).
    pub fn for_test(
        domain: &'a str,
        routes: &[(&str, &[&str])],
        previous: &'a DomainBindingStatus,
    ) -> Self {
        DomainRequest {
            key: "team/shop".into(),
            domain,
            routes: routes
                .iter()
                .map(|(p, ids)| (p.to_string(), ids.iter().map(|s| s.to_string()).collect()))
                .collect(),
            tls: true,
            previous,
            generation: 1,
            observed_generation: Some(1),
            mode: Mode::SEND,
        }
    }
}

impl DomainRequest<'_> {
    /// Whether a difference at the platform is drift (the spec did not change since the last
    /// status, and bosun already owned routes there).
    pub fn is_drift(&self) -> bool {
        self.observed_generation == Some(self.generation) && !self.previous.owned_paths.is_empty()
    }
}

/// The DNS records a user must create, for messages: `CNAME shop.example.com cdn.example.net;
/// …`.
pub fn dns_records_text(records: &[DnsRecord]) -> String {
    records
        .iter()
        .map(|r| format!("{} {} {}", r.type_, r.name, r.value))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A domain whose DNS records are not in place yet: not Ready, naming the records to create,
/// and looked at again after `poll`. `Progressing` unless `observing`.
pub fn awaiting_dns(
    report: &mut Report<DomainBindingStatus>,
    records: &[DnsRecord],
    poll: Duration,
    observing: bool,
) {
    let message = format!("waiting for DNS: create {}", dns_records_text(records));
    report.readiness = Readiness::not_ready(Reason::DomainNotVerified, message.clone());
    report.sync = if observing {
        SyncState::Observing
    } else {
        SyncState::Progressing {
            reason: Reason::WaitingForDns,
            message,
        }
    };
    report.requeue_after = Some(poll);
}

/// Custom domains on a platform.
#[async_trait]
pub trait DomainDriver: Send + Sync {
    async fn reconcile(
        &self,
        request: &DomainRequest<'_>,
    ) -> Result<Report<DomainBindingStatus>, ReconcileError>;
    /// Removes what the binding owns (its paths, and the domain when nothing else uses it).
    async fn delete(&self, request: &DomainRequest<'_>) -> Result<Cleanup, ReconcileError>;
}

/// How often a Ready object's per-object reads (run stage, variables) happen when nothing asks
/// for them sooner: observation is otherwise batched into shared listings.
pub const DEEP_CHECK_INTERVAL: Duration = Duration::from_secs(30 * 60);

/// A fingerprint of the desired variables, to notice a rotated Secret without a spec change.
/// Kept in memory only.
pub fn env_fingerprint(env: &BTreeMap<String, String>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    env.hash(&mut hasher);
    hasher.finish()
}

/// What may have changed since an object's per-object reads were last done.
#[derive(Clone, Copy, Debug)]
pub struct DeepCheckInputs {
    pub was_ready: bool,
    pub spec_changed: bool,
    pub requested: bool,
    pub in_flight: bool,
    pub env_print: u64,
    pub interval: Duration,
}

/// Whether the per-object reads are needed now (pure apart from the clock it is given).
pub fn deep_check_due(inputs: DeepCheckInputs, last: Option<(Instant, u64)>, now: Instant) -> bool {
    let i = inputs;
    match last {
        _ if !i.was_ready || i.spec_changed || i.requested || i.in_flight => true,
        None => true,
        Some((at, print)) => print != i.env_print || now.duration_since(at) >= i.interval,
    }
}

/// Whether the status bosun last wrote said Ready.
pub fn was_ready(status: &WorkspaceStatus) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == crate::api::condition_types::READY && c.status == "True")
}

/// When each platform object's per-object reads were last done, and the env fingerprint then.
#[derive(Debug, Default)]
pub struct DeepChecks {
    checks: StdMutex<HashMap<i64, (Instant, u64)>>,
}

impl DeepChecks {
    /// The last check of `id`.
    pub fn last(&self, id: i64) -> Option<(Instant, u64)> {
        self.checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .copied()
    }

    /// Whether `id` needs its per-object reads for this request.
    pub fn due(
        &self,
        request: &WorkspaceRequest<'_>,
        status: &WorkspaceStatus,
        id: i64,
        env_print: u64,
    ) -> bool {
        let inputs = DeepCheckInputs {
            was_ready: was_ready(status),
            spec_changed: !request.is_drift(),
            requested: request.mode.requested,
            // A finished operation stays in status to show what happened; it is not in flight.
            in_flight: status
                .operation
                .as_ref()
                .is_some_and(|o| !matches!(o.state.as_str(), "completed" | "failed" | "skipped")),
            env_print,
            interval: request.poll_interval.unwrap_or(DEEP_CHECK_INTERVAL),
        };
        deep_check_due(inputs, self.last(id), Instant::now())
    }

    /// Records that `id` was checked now with these variables.
    pub fn done(&self, id: i64, env_print: u64) {
        self.checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, (Instant::now(), env_print));
    }
}

#[cfg(test)]
mod deep_check_tests {
    use super::*;

    #[test]
    fn deep_checks_only_when_something_may_have_changed() {
        let t0 = Instant::now();
        let recent = Some((t0, 7));
        let quiet = DeepCheckInputs {
            was_ready: true,
            spec_changed: false,
            requested: false,
            in_flight: false,
            env_print: 7,
            interval: DEEP_CHECK_INTERVAL,
        };
        assert!(!deep_check_due(quiet, recent, t0 + Duration::from_secs(60)));
        let cases = [
            (
                "not Ready yet",
                DeepCheckInputs {
                    was_ready: false,
                    ..quiet
                },
                recent,
                t0,
            ),
            (
                "spec changed",
                DeepCheckInputs {
                    spec_changed: true,
                    ..quiet
                },
                recent,
                t0,
            ),
            (
                "reconcile requested",
                DeepCheckInputs {
                    requested: true,
                    ..quiet
                },
                recent,
                t0,
            ),
            (
                "operation in flight",
                DeepCheckInputs {
                    in_flight: true,
                    ..quiet
                },
                recent,
                t0,
            ),
            ("never checked (restart)", quiet, None, t0),
            (
                "a Secret value changed",
                DeepCheckInputs {
                    env_print: 8,
                    ..quiet
                },
                recent,
                t0,
            ),
            ("interval passed", quiet, recent, t0 + DEEP_CHECK_INTERVAL),
            (
                "the object's own poll interval passed",
                DeepCheckInputs {
                    interval: Duration::from_secs(5),
                    ..quiet
                },
                recent,
                t0 + Duration::from_secs(5),
            ),
        ];
        for (why, inputs, last, now) in cases {
            assert!(deep_check_due(inputs, last, now), "{why}");
        }
    }
}
