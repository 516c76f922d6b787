//! `DomainBinding`: a domain on a provider and the workspaces its paths route to.

use super::common::{conditions_schema, DeletionPolicy, ManagementPolicy, ProviderRef};
use super::service_scale::WorkspaceRef;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A domain on a provider and its routes. Several workspaces on one path share the traffic.
#[derive(CustomResource, KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "bosun.dev",
    version = "v1alpha1",
    kind = "DomainBinding",
    namespaced,
    status = "DomainBindingStatus",
    shortname = "bdb",
    category = "bosun",
    doc = "A custom domain on a provider and the Workspaces its paths route to.",
    printcolumn(name = "Domain", type_ = "string", json_path = ".spec.domain"),
    printcolumn(
        name = "Verified",
        type_ = "string",
        json_path = ".status.verification.state"
    ),
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
pub struct DomainBindingSpec {
    /// The Provider (or ClusterProvider) that serves the domain. Cannot change.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.providerRef cannot change: create a new DomainBinding"))]
    pub provider_ref: ProviderRef,
    /// The fully qualified domain name, lowercase, for example `shop.example.com`. Cannot change.
    #[x_kube(validation = Rule::new("self.matches('^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\\\\.)+[a-z]([-a-z0-9]{0,61}[a-z0-9])?$')").message("spec.domain must be a lowercase fully qualified domain name such as shop.example.com (letters, digits and -, labels separated by dots, no scheme, port or path)"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.domain cannot change: create a new DomainBinding"))]
    #[schemars(length(min = 3, max = 253))]
    pub domain: String,
    /// Paths of the domain and the Workspaces each routes to.
    #[serde(default)]
    #[schemars(schema_with = "routes_schema")]
    pub routes: Vec<Route>,
    /// `Delete` (default) removes the domain at the platform with this object; `Orphan` leaves it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// `Manage` (default) creates and updates the domain; `Observe` only reports.
    #[serde(default)]
    pub management_policy: ManagementPolicy,
    /// Ask the platform for a TLS certificate for the domain, where it issues them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
}

/// One path of the domain.
#[derive(KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// The path prefix, starting with `/`.
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("route paths start with / (for example / or /api)"))]
    #[schemars(length(min = 1, max = 1024))]
    pub path: String,
    /// Workspaces (same namespace) that serve this path; they share its traffic.
    #[schemars(length(min = 1, max = 50))]
    pub workspaces: Vec<WorkspaceRef>,
}

fn routes_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = <Vec<Route>>::json_schema(generator);
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["path"]),
    );
    schema.insert("maxItems".into(), 100.into());
    schema
}

/// Verification state of a domain at the platform.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DomainVerification {
    /// `Pending`, `Verified` or `Failed`.
    pub state: String,
    /// DNS records the user must create for the domain to verify and route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_records: Vec<DnsRecord>,
    /// Extra detail from the platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A DNS record to create.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DnsRecord {
    /// Record type, for example `CNAME`, `A` or `TXT`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Record name.
    pub name: String,
    /// Record value.
    pub value: String,
}

/// What bosun last observed about a domain.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DomainBindingStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Synced`, `Reconciling` and `Stalled`.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Id of the domain at the platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Verification state and the DNS records to create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<DomainVerification>,
    /// Paths bosun wrote at the platform (so it never touches paths it does not own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owned_paths: Vec<String>,
    /// The last `bosun.dev/reconcile-requested-at` token handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}
