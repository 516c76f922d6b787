//! The custom resources bosun serves (`bosun.dev/v1alpha1`), as typed Rust.
//!
//! Every field carries a doc comment: it becomes the schema description that
//! `kubectl explain` prints. Validation that the apiserver can do itself (schema
//! bounds and CEL rules) lives here, next to the field it protects, so a bad
//! manifest is rejected at `kubectl apply` time with a message that says what to fix.

// kube-derive takes several `printcolumn(...)` groups; clippy mistakes their repeated keys for
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

pub mod common;
pub mod domain_binding;
pub mod provider;
pub mod reference;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `crds/` must be what `bosun crds` prints; regenerate with
    /// `cargo run -- crds > crds/bosun.dev.yaml` after changing the types.
    #[test]
    fn committed_crds_are_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/bosun.dev.yaml");
        let committed = std::fs::read_to_string(path).expect("read crds/bosun.dev.yaml");
        let generated = crds_yaml(&all_crds()).expect("render CRDs");
        assert!(
            committed == generated,
            "crds/bosun.dev.yaml is stale: run `cargo run -- crds > crds/bosun.dev.yaml` and commit it"
        );
    }

    #[test]
    fn every_kind_is_in_the_bosun_category_with_status() {
        for crd in all_crds() {
            let name = crd.metadata.name.clone().unwrap_or_default();
            assert_eq!(crd.spec.group, GROUP, "{name}");
            assert_eq!(
                crd.spec.names.categories.as_deref(),
                Some(&[CATEGORY.to_string()][..]),
                "{name}"
            );
            let version = &crd.spec.versions[0];
            assert_eq!(version.name, VERSION);
            let sub = version.subresources.as_ref().expect("subresources");
            assert!(sub.status.is_some(), "{name} has no status subresource");
            let wants_scale = name.starts_with("workspaces.") || name.starts_with("servicescales.");
            assert_eq!(sub.scale.is_some(), wants_scale, "{name} scale subresource");
            let columns = version
                .additional_printer_columns
                .as_ref()
                .expect("printer columns");
            assert!(
                columns.iter().any(|c| c.name == "Ready"),
                "{name} has no Ready column"
            );
            assert!(
                columns.iter().any(|c| c.name == "Age"),
                "{name} has no Age column"
            );
        }
    }

    #[test]
    fn every_schema_property_is_documented() {
        fn walk(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
            if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
                for (name, prop) in props {
                    let here = format!("{path}.{name}");
                    let top_level = path.is_empty()
                        && ["apiVersion", "kind", "metadata"].contains(&name.as_str());
                    if !top_level
                        && prop
                            .get("description")
                            .and_then(|d| d.as_str())
                            .is_none_or(str::is_empty)
                    {
                        missing.push(here.clone());
                    }
                    walk(&here, prop, missing);
                }
            }
            if let Some(items) = schema.get("items") {
                walk(&format!("{path}[]"), items, missing);
            }
        }
        let mut missing = Vec::new();
        for crd in all_crds() {
            let schema = serde_json::to_value(&crd.spec.versions[0].schema).expect("schema");
            let root = &schema["openAPIV3Schema"];
            // Conditions come from k8s-openapi with their upstream docs.
            walk(&crd.spec.names.kind, root, &mut missing);
        }
        assert!(
            missing.is_empty(),
            "fields without a doc comment: {missing:#?}"
        );
    }
}
