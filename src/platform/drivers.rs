//! What a platform implements to manage each kind. The controller core resolves references,
//! Secrets and capabilities, then hands the platform a neutral request; the platform's mapping
//! observes, plans (pure) and acts, and reports what status should show.

use crate::api::{DomainBindingStatus, ServiceScaleStatus, WorkspaceSpec, WorkspaceStatus};
use crate::core::error::ReconcileError;
use crate::core::reconciler::{Cleanup, Mode, Report};
use async_trait::async_trait;
use std::collections::BTreeMap;

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
}

impl WorkspaceRequest<'_> {
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
    pub observe_only: bool,
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

/// A platform object that bosun finds by id or by name.
pub trait Identified {
    fn platform_id(&self) -> i64;
    fn platform_name(&self) -> &str;
}

/// Where the platform object stands relative to what bosun knows.
#[derive(Clone, Debug, PartialEq)]
pub enum Located<'a, T> {
    /// Found by id, or by name where taking it over is right.
    Found(&'a T),
    /// bosun knew an id but the platform no longer has it.
    Gone(i64),
    /// Nothing to find: create it.
    Absent,
    /// An object of that name exists that bosun did not create.
    NameTaken(&'a T),
    /// Several objects carry the name after an interrupted create.
    Ambiguous(usize),
}

/// Finds the object in a listing (pure): by the id bosun knows, else by name, taking a named
/// one over only after an interrupted create of bosun's own or when the user asked to adopt.
pub fn locate<'a, T: Identified>(
    list: &'a [T],
    known_id: Option<i64>,
    name: &str,
    create_pending: bool,
    adopt_by_name: bool,
) -> Located<'a, T> {
    if let Some(id) = known_id {
        return match list.iter().find(|o| o.platform_id() == id) {
            Some(o) => Located::Found(o),
            None => Located::Gone(id),
        };
    }
    let named: Vec<&T> = list.iter().filter(|o| o.platform_name() == name).collect();
    match named.as_slice() {
        [] => Located::Absent,
        [one] if create_pending || adopt_by_name => Located::Found(one),
        [one] => Located::NameTaken(one),
        many => Located::Ambiguous(many.len()),
    }
}
