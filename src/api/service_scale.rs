//! `ServiceScale`: the replica count of one service of a Workspace.

use super::common::conditions_schema;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The replica count of one service of a Workspace (a Codesphere landscape service or a Spheron
/// compute service). Has the `scale` subresource, so `kubectl scale`, HPA and KEDA work.
#[derive(CustomResource, KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "bosun.dev",
    version = "v1alpha1",
    kind = "ServiceScale",
    namespaced,
    status = "ServiceScaleStatus",
    shortname = "bss",
    category = "bosun",
    doc = "The replica count of one service of a Workspace, kept at the platform.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Workspace",
        type_ = "string",
        json_path = ".spec.workspaceRef.name"
    ),
    printcolumn(name = "Service", type_ = "string", json_path = ".spec.service"),
    printcolumn(name = "Desired", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.replicas"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceScaleSpec {
    /// The Workspace (same namespace) whose service this scales. Cannot change.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.workspaceRef cannot change: create a new ServiceScale"))]
    pub workspace_ref: WorkspaceRef,
    /// The service's name at the platform (a landscape service or compute service). Cannot change.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.service cannot change: create a new ServiceScale"))]
    #[schemars(length(min = 1, max = 253))]
    pub service: String,
    /// How many replicas of the service to run (at least 1).
    #[schemars(range(min = 1, max = 1000))]
    pub replicas: i32,
}

/// A reference to a Workspace in the same namespace.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceRef {
    /// Name of the Workspace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// What bosun last observed about a service's scale.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceScaleStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Synced`, `Reconciling` and `Stalled`.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Replicas of the service observed at the platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Label selector for the `scale` subresource (HPA, KEDA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The last `bosun.dev/reconcile-requested-at` token handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}
