//! Types shared by several kinds: references, policies, conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which kind of provider object a reference names.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// A namespaced `Provider` in the same namespace as the referring object.
    #[default]
    Provider,
    /// A cluster-scoped `ClusterProvider`.
    ClusterProvider,
}

/// A reference to the `Provider` or `ClusterProvider` that holds the platform endpoint and credentials.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct ProviderRef {
    /// `Provider` (same namespace, the default) or `ClusterProvider`.
    #[serde(default)]
    pub kind: ProviderKind,
    /// Name of the provider object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A key in a Secret.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
    /// Namespace of the Secret. Only a `ClusterProvider` may (and must) set it; everything else
    /// reads Secrets from its own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// What happens at the platform when the Kubernetes object is deleted.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Delete the platform object (a platform answer of "not found" counts as deleted).
    #[default]
    Delete,
    /// Leave the platform object as it is; only the Kubernetes object goes away.
    Orphan,
}

/// How much bosun may do at the platform.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum ManagementPolicy {
    /// Create, update, heal drift and delete.
    #[default]
    Manage,
    /// Only read the platform object and report it in status; never write.
    Observe,
}

/// The four standard condition types (kstatus: `Reconciling` and `Stalled` are abnormal-true).
pub mod condition_types {
    /// The platform object exists and matches the spec.
    pub const READY: &str = "Ready";
    /// The last reconcile reached the platform and applied the spec.
    pub const SYNCED: &str = "Synced";
    /// bosun is working towards the spec (abnormal-true).
    pub const RECONCILING: &str = "Reconciling";
    /// bosun cannot make progress without a change from the user (abnormal-true).
    pub const STALLED: &str = "Stalled";
}

/// Schema for `status.conditions`: a list keyed by `type`, so server-side apply merges per condition.
pub fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = <Vec<Condition>>::json_schema(generator);
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["type"]),
    );
    schema
}

/// Reads a condition by type.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}
