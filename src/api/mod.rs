//! The custom resources bosun serves (`bosun.dev/v1alpha1`), as typed Rust.
//!
//! Every field carries a doc comment: it becomes the schema description that
//! `kubectl explain` prints. Validation that the apiserver can do itself (schema
//! bounds and CEL rules) lives here, next to the field it protects, so a bad
//! manifest is rejected at `kubectl apply` time with a message that says what to fix.

pub mod common;
pub mod domain_binding;
pub mod provider;
pub mod service_scale;
pub mod workspace;

pub use common::*;
pub use domain_binding::*;
pub use provider::*;
pub use service_scale::*;
pub use workspace::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every bosun kind.
pub const GROUP: &str = "bosun.dev";
/// The served (and stored) version.
pub const VERSION: &str = "v1alpha1";
/// The category that makes `kubectl get bosun` list every kind.
pub const CATEGORY: &str = "bosun";
/// The finalizer bosun puts on every object it manages.
pub const FINALIZER: &str = "bosun.dev/cleanup";

/// Every CRD bosun serves, in a stable order (the order of `bosun crds` and `crds/`).
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    vec![
        Provider::crd(),
        ClusterProvider::crd(),
        Workspace::crd(),
        ServiceScale::crd(),
        DomainBinding::crd(),
    ]
}

/// Renders CRDs as one multi-document YAML stream.
pub fn crds_yaml(crds: &[CustomResourceDefinition]) -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(crd)?);
    }
    Ok(out)
}
