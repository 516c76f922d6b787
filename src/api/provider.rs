//! `Provider` (namespaced) and `ClusterProvider` (cluster-scoped): which platform, where, and with
//! which credentials, trust and request budget.

use super::common::{conditions_schema, SecretKeyRef};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The deployment platform a provider talks to.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum PlatformType {
    /// Codesphere (`https://cloud.codesphere.com/api`).
    Codesphere,
    /// Devopness (`https://api.devopness.com`).
    Devopness,
    /// Spheron (`https://api-v2.spheron.network`).
    Spheron,
    /// Puppet Enterprise Code Manager (`https://<primary>:8170/code-manager`).
    PuppetCodeManager,
}

impl PlatformType {
    /// The name used in manifests (`spec.type`).
    pub fn as_str(self) -> &'static str {
        match self {
            PlatformType::Codesphere => "codesphere",
            PlatformType::Devopness => "devopness",
            PlatformType::Spheron => "spheron",
            PlatformType::PuppetCodeManager => "puppetCodeManager",
        }
    }
}

impl std::fmt::Display for PlatformType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the platform credentials come from.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    /// The Secret key that holds the API token (or, for Code Manager, a token or an RBAC login).
    /// bosun reads it on every change of the Secret and never writes it anywhere.
    pub secret_ref: SecretKeyRef,
}

/// TLS trust for the platform endpoint. Certificates are always verified; this only adds trust.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TlsConfig {
    /// PEM-encoded CA certificates to trust in addition to the public roots (for example the
    /// Puppet Enterprise CA that signs Code Manager's certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// A Secret key holding PEM-encoded CA certificates, as an alternative to `caBundle`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
}

/// The request budget shared by every object that uses this provider's credentials.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Sustained requests per minute bosun may send with these credentials (default: the
    /// platform's documented limit, or 300 where none is documented).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub requests_per_minute: Option<u32>,
    /// Requests that may be sent at once after a quiet period (default: a tenth of the
    /// per-minute budget, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub burst: Option<u32>,
}

/// Platform ids used when a Workspace or DomainBinding does not name its own.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlatformDefaults {
    /// Codesphere team id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub team_id: Option<i64>,
    /// Devopness project id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub project_id: Option<i64>,
    /// Devopness environment id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub environment_id: Option<i64>,
    /// Spheron organization id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
}

/// How to reach a deployment platform, with which credentials, trust and request budget.
#[derive(CustomResource, KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "bosun.dev",
    version = "v1alpha1",
    kind = "Provider",
    namespaced,
    status = "ProviderStatus",
    shortname = "bprov",
    category = "bosun",
    doc = "A deployment platform (Codesphere, Devopness, Spheron or Puppet Code Manager) that Workspaces and DomainBindings in this namespace use.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Identity", type_ = "string", json_path = ".status.identity"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("!has(self.spec.credentials.secretRef.__namespace__)").message("a Provider reads its Secret from its own namespace: remove spec.credentials.secretRef.namespace (use a ClusterProvider to read from another namespace)"),
    validation = Rule::new("!has(self.spec.tls) || !has(self.spec.tls.caSecretRef) || !has(self.spec.tls.caSecretRef.__namespace__)").message("a Provider reads its CA Secret from its own namespace: remove spec.tls.caSecretRef.namespace (use a ClusterProvider to read from another namespace)")
)]
#[serde(rename_all = "camelCase")]
pub struct ProviderSpec {
    /// The platform: `codesphere`, `devopness`, `spheron` or `puppetCodeManager`. Cannot change.
    #[serde(rename = "type")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.type cannot change: create a new provider for another platform"))]
    pub type_: PlatformType,
    /// Base URL of the platform API. Defaults to the platform's public URL; required for Code
    /// Manager (`https://<primary>:8170/code-manager`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("spec.endpoint must be an http:// or https:// URL"))]
    pub endpoint: Option<String>,
    /// Where the API credentials come from.
    pub credentials: Credentials,
    /// Extra CA certificates to trust for the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// The request budget shared by all objects using these credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Platform ids used when an object does not name its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<PlatformDefaults>,
}

impl ProviderSpec {
    /// The namespace a Secret reference of this provider reads from. A Provider
    /// (`own_namespace` set) reads only from its own namespace: the schema refuses a namespace
    /// on its references, and ignoring one here keeps it so. A ClusterProvider reads from the
    /// namespace the reference names, else from its credentials' namespace.
    pub fn secret_namespace(
        &self,
        own_namespace: Option<&str>,
        r: &SecretKeyRef,
    ) -> Option<String> {
        own_namespace
            .map(String::from)
            .or_else(|| r.namespace.clone())
            .or_else(|| self.credentials.secret_ref.namespace.clone())
    }

    /// Whether this provider reads the Secret `namespace`/`name`: its credentials or its CA.
    pub fn reads_secret(
        &self,
        own_namespace: Option<&str>,
        namespace: Option<&str>,
        name: &str,
    ) -> bool {
        let ca = self.tls.as_ref().and_then(|t| t.ca_secret_ref.as_ref());
        std::iter::once(&self.credentials.secret_ref)
            .chain(ca)
            .any(|r| {
                r.name == name && self.secret_namespace(own_namespace, r).as_deref() == namespace
            })
    }
}

/// What bosun last observed about a provider.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProviderStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Synced`, `Reconciling` and `Stalled`.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Who the credentials belong to, as the platform answered (for example `team 1 (Acme)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The last `bosun.dev/reconcile-requested-at` token handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}

/// A deployment platform usable from every namespace. Its Secret reference must name a namespace.
#[derive(CustomResource, KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "bosun.dev",
    version = "v1alpha1",
    kind = "ClusterProvider",
    status = "ProviderStatus",
    shortname = "bcprov",
    category = "bosun",
    doc = "A deployment platform usable by Workspaces and DomainBindings in every namespace.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Identity", type_ = "string", json_path = ".status.identity"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("has(self.spec.credentials.secretRef.__namespace__)").message("a ClusterProvider must say where its Secret is: set spec.credentials.secretRef.namespace")
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterProviderSpec {
    /// The same settings as a `Provider`'s spec.
    #[serde(flatten)]
    pub provider: ProviderSpec,
    /// The namespaces whose Workspaces, ServiceScales and DomainBindings may use this
    /// credential. Absent (or empty): every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_namespaces: Option<AllowedNamespaces>,
}

/// Namespaces by name, by label, or both: a namespace is allowed when either admits it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AllowedNamespaces {
    /// Namespaces allowed by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Namespaces allowed by their labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

impl AllowedNamespaces {
    /// Whether nothing limits the namespaces.
    pub fn is_open(&self) -> bool {
        self.names.is_empty() && self.selector.is_none()
    }

    /// Whether `namespace`, with `labels` (read only when a selector needs them), is allowed.
    pub fn admits(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        self.is_open()
            || self.names.iter().any(|n| n == namespace)
            || self.selector.as_ref().is_some_and(|s| selects(s, labels))
    }
}

/// Kubernetes label selector semantics: every `matchLabels` pair and every expression holds
/// (`In`, `NotIn`, `Exists`, `DoesNotExist`; an unknown operator matches nothing).
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let pairs = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    pairs && expressions
}

/// Gives the settings both provider kinds share, so the controller core treats them alike.
pub trait ProviderObject {
    fn settings(&self) -> &ProviderSpec;
}

impl ProviderObject for Provider {
    fn settings(&self) -> &ProviderSpec {
        &self.spec
    }
}

impl ProviderObject for ClusterProvider {
    fn settings(&self) -> &ProviderSpec {
        &self.spec.provider
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_namespaces_by_name_label_or_both() {
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let allowed: AllowedNamespaces = serde_json::from_value(serde_json::json!({
            "names": ["shop"],
            "selector": {
                "matchLabels": {"tenant": "acme"},
                "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["prod", "staging"]},
                    {"key": "frozen", "operator": "DoesNotExist"}
                ]
            }
        }))
        .unwrap();
        let acme_prod = labels(&[("tenant", "acme"), ("tier", "prod")]);
        assert!(allowed.admits("shop", &BTreeMap::new()), "by name");
        assert!(allowed.admits("web", &acme_prod), "by labels");
        assert!(
            !allowed.admits("web", &labels(&[("tenant", "acme")])),
            "tier missing"
        );
        assert!(!allowed.admits("web", &labels(&[("tenant", "acme"), ("tier", "dev")])));
        let frozen = labels(&[("tenant", "acme"), ("tier", "prod"), ("frozen", "yes")]);
        assert!(!allowed.admits("web", &frozen));
        assert!(!allowed.admits("other", &BTreeMap::new()));
        let open = AllowedNamespaces::default();
        assert!(open.is_open() && open.admits("any", &BTreeMap::new()));
        let unknown: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]
        }))
        .unwrap();
        assert!(
            !selects(&unknown, &labels(&[("a", "2")])),
            "an unknown operator matches nothing"
        );
        let not_in: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["x"]}, {"key": "b", "operator": "Exists"}]
        }))
        .unwrap();
        assert!(selects(&not_in, &labels(&[("b", "")])));
        assert!(!selects(&not_in, &labels(&[("a", "x"), ("b", "")])));
    }

    fn spec(credentials_ns: Option<&str>, ca: Option<(&str, Option<&str>)>) -> ProviderSpec {
        let r = |name: &str, ns: Option<&str>| SecretKeyRef {
            name: name.into(),
            key: "k".into(),
            namespace: ns.map(String::from),
        };
        ProviderSpec {
            type_: PlatformType::Codesphere,
            endpoint: None,
            credentials: Credentials {
                secret_ref: r("creds", credentials_ns),
            },
            tls: ca.map(|(name, ns)| TlsConfig {
                ca_bundle: None,
                ca_secret_ref: Some(r(name, ns)),
            }),
            rate_limit: None,
            defaults: None,
        }
    }

    #[test]
    fn a_provider_reads_its_credentials_and_its_ca_from_its_own_namespace_only() {
        let p = spec(None, Some(("ca", None)));
        assert!(p.reads_secret(Some("team"), Some("team"), "creds"));
        assert!(p.reads_secret(Some("team"), Some("team"), "ca"));
        assert!(!p.reads_secret(Some("team"), Some("other"), "ca"));
        assert!(!p.reads_secret(Some("team"), Some("team"), "unrelated"));
        // A namespace on its CA reference (refused by the schema) changes nothing.
        let p = spec(None, Some(("ca", Some("other"))));
        assert!(p.reads_secret(Some("team"), Some("team"), "ca"));
        assert!(!p.reads_secret(Some("team"), Some("other"), "ca"));
        assert_eq!(
            p.secret_namespace(Some("team"), &p.tls.clone().unwrap().ca_secret_ref.unwrap()),
            Some("team".into())
        );
    }

    #[test]
    fn a_cluster_provider_reads_from_the_named_namespaces_its_ca_by_default_next_to_its_credentials(
    ) {
        let p = spec(Some("secrets"), Some(("ca", None)));
        assert!(p.reads_secret(None, Some("secrets"), "creds"));
        assert!(p.reads_secret(None, Some("secrets"), "ca"));
        assert!(!p.reads_secret(None, None, "creds"));
        let p = spec(Some("secrets"), Some(("ca", Some("pki"))));
        assert!(p.reads_secret(None, Some("pki"), "ca"));
        assert!(!p.reads_secret(None, Some("secrets"), "ca"));
        assert!(!spec(Some("secrets"), None).reads_secret(None, Some("secrets"), "ca"));
    }
}
