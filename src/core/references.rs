//! Resolving what an object refers to (Providers, Secrets, Workspaces), with conditions that
//! name exactly what is missing.

use super::budget::RateBudget;
use super::context::Context;
use super::error::ReconcileError;
use super::seam::{Connection, Connector, Credential, ErrorKind, Platform};
use crate::api::condition_types::READY;
use crate::api::AllowedNamespaces;
use crate::api::{
    find_condition, ClusterProvider, Provider, ProviderKind, ProviderObject, ProviderRef,
    ProviderSpec, ProviderStatus, SecretKeyRef, Workspace,
};
use crate::core::endpoint::EndpointPolicy;
use crate::core::reason::Reason;
use async_trait::async_trait;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Where the objects a reference names are read from: the cluster for the controller; the
/// manifests, then the cluster, for `bosun plan`.
#[async_trait]
pub trait Objects: Send + Sync {
    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, kube::Error>;
    async fn provider(&self, namespace: &str, name: &str) -> Result<Option<Provider>, kube::Error>;
    async fn cluster_provider(&self, name: &str) -> Result<Option<ClusterProvider>, kube::Error>;
    async fn workspace(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Workspace>, kube::Error>;
}

#[async_trait]
impl Objects for kube::Client {
    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, kube::Error> {
        Api::namespaced(self.clone(), namespace).get_opt(name).await
    }
    async fn provider(&self, namespace: &str, name: &str) -> Result<Option<Provider>, kube::Error> {
        Api::namespaced(self.clone(), namespace).get_opt(name).await
    }
    async fn cluster_provider(&self, name: &str) -> Result<Option<ClusterProvider>, kube::Error> {
        Api::all(self.clone()).get_opt(name).await
    }
    async fn workspace(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Workspace>, kube::Error> {
        Api::namespaced(self.clone(), namespace).get_opt(name).await
    }
}

/// A provider object, whichever kind it is.
#[derive(Clone, Debug)]
pub struct ProviderView {
    /// `Provider/<ns>/<name>` or `ClusterProvider/<name>`, for messages and cache keys.
    pub display: String,
    pub spec: ProviderSpec,
    pub status: Option<ProviderStatus>,
    pub generation: Option<i64>,
    /// The namespace of a Provider (`None` for a ClusterProvider).
    pub own_namespace: Option<String>,
    /// A ClusterProvider's `spec.allowedNamespaces`.
    pub allowed_namespaces: Option<AllowedNamespaces>,
}

impl ProviderView {
    pub fn from_provider(p: &Provider) -> Self {
        ProviderView {
            display: format!(
                "Provider {}/{}",
                p.namespace().unwrap_or_default(),
                p.name_any()
            ),
            spec: p.settings().clone(),
            status: p.status.clone(),
            generation: p.metadata.generation,
            own_namespace: p.namespace(),
            allowed_namespaces: None,
        }
    }

    pub fn from_cluster_provider(p: &ClusterProvider) -> Self {
        ProviderView {
            display: format!("ClusterProvider {}", p.name_any()),
            spec: p.settings().clone(),
            status: p.status.clone(),
            generation: p.metadata.generation,
            own_namespace: None,
            allowed_namespaces: p.spec.allowed_namespaces.clone().filter(|a| !a.is_open()),
        }
    }

    /// Where its Secret `r` lives (see [`ProviderSpec::secret_namespace`]).
    pub fn secret_namespace(&self, r: &SecretKeyRef) -> Option<String> {
        self.spec.secret_namespace(self.own_namespace.as_deref(), r)
    }

    /// Ready, and for the current generation.
    pub fn ready(&self) -> Result<(), String> {
        let status = self.status.as_ref();
        let ready = status.and_then(|s| find_condition(&s.conditions, READY));
        match ready {
            Some(c) if c.status == "True" && c.observed_generation == self.generation => Ok(()),
            Some(c) if c.status == "True" => Err("is being verified after a change".into()),
            Some(c) if !c.message.is_empty() => {
                Err(format!("is not Ready ({}: {})", c.reason, c.message))
            }
            Some(c) => Err(format!("is not Ready ({})", c.reason)),
            None => Err("has not been verified yet".into()),
        }
    }
}

/// Reads the provider a reference names.
pub async fn get_provider(
    objects: &dyn Objects,
    namespace: &str,
    reference: &ProviderRef,
) -> Result<ProviderView, ReconcileError> {
    match reference.kind {
        ProviderKind::Provider => match objects.provider(namespace, &reference.name).await {
            Ok(Some(p)) => Ok(ProviderView::from_provider(&p)),
            Ok(None) => Err(ReconcileError::waiting(
                Reason::ProviderNotFound,
                format!(
                    "Provider {namespace}/{} not found: create it or fix spec.providerRef",
                    reference.name
                ),
            )),
            Err(e) => Err(ReconcileError::kube(
                format!("get Provider {namespace}/{}", reference.name),
                e,
            )),
        },
        ProviderKind::ClusterProvider => match objects.cluster_provider(&reference.name).await {
            Ok(Some(p)) => Ok(ProviderView::from_cluster_provider(&p)),
            Ok(None) => Err(ReconcileError::waiting(
                Reason::ProviderNotFound,
                format!(
                    "ClusterProvider {} not found: create it or fix spec.providerRef",
                    reference.name
                ),
            )),
            Err(e) => Err(ReconcileError::kube(
                format!("get ClusterProvider {}", reference.name),
                e,
            )),
        },
    }
}

/// Reads the provider a reference names and insists that it is Ready, then connects to it.
pub async fn ready_platform(
    ctx: &Context,
    namespace: &str,
    reference: &ProviderRef,
) -> Result<(ProviderView, Arc<dyn Platform>), ReconcileError> {
    let view = get_provider(&ctx.client, namespace, reference).await?;
    admitted(ctx, &view, namespace).await?;
    if let Err(why) = view.ready() {
        return Err(ReconcileError::waiting(
            Reason::ProviderNotReady,
            format!("{} {why}", view.display),
        ));
    }
    let platform = connect(ctx, &view).await?;
    Ok((view, platform))
}

/// Refuses a ClusterProvider to a namespace its `spec.allowedNamespaces` leaves out, before
/// anything is sent with its credential. The namespace's labels are read only when a selector
/// needs them.
pub async fn admitted(
    ctx: &Context,
    view: &ProviderView,
    namespace: &str,
) -> Result<(), ReconcileError> {
    let Some(allowed) = &view.allowed_namespaces else {
        return Ok(());
    };
    let labels = if allowed.selector.is_some() && !allowed.names.iter().any(|n| n == namespace) {
        let api: kube::Api<k8s_openapi::api::core::v1::Namespace> =
            kube::Api::all(ctx.client.clone());
        match api.get_opt(namespace).await {
            Ok(ns) => ns.and_then(|n| n.metadata.labels).unwrap_or_default(),
            Err(e) => {
                return Err(ReconcileError::kube(
                    format!("get Namespace {namespace}"),
                    e,
                ))
            }
        }
    } else {
        Default::default()
    };
    if allowed.admits(namespace, &labels) {
        return Ok(());
    }
    let names = if allowed.names.is_empty() {
        "no names".to_string()
    } else {
        format!("names {}", allowed.names.join(", "))
    };
    let selector = if allowed.selector.is_some() {
        " and a label selector"
    } else {
        ""
    };
    Err(ReconcileError::user(
        Reason::ProviderNotAllowed,
        format!(
            "{} does not allow namespace {namespace} (spec.allowedNamespaces: {names}{selector}): nothing was sent. Ask its admin to allow the namespace, or use a Provider of this namespace",
            view.display
        ),
    ))
}

/// Reads one key of a Secret. The value is returned, never logged or put in an error.
pub async fn secret_value(
    objects: &dyn Objects,
    namespace: &str,
    reference: &SecretKeyRef,
) -> Result<String, ReconcileError> {
    let secret = match objects.secret(namespace, &reference.name).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Err(ReconcileError::waiting(
                Reason::SecretNotFound,
                format!("Secret {namespace}/{} not found", reference.name),
            ))
        }
        Err(e) => {
            return Err(ReconcileError::kube(
                format!("get Secret {namespace}/{}", reference.name),
                e,
            ))
        }
    };
    let from_data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&reference.key))
        .map(|b| b.0.clone());
    let from_string = secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(&reference.key))
        .map(|s| s.clone().into_bytes());
    let bytes = from_data.or(from_string).ok_or_else(|| {
        ReconcileError::waiting(
            Reason::SecretKeyNotFound,
            format!(
                "Secret {namespace}/{} has no key {:?}",
                reference.name, reference.key
            ),
        )
    })?;
    let value = String::from_utf8(bytes).map_err(|_| {
        ReconcileError::user(
            Reason::SecretValueInvalid,
            format!(
                "key {:?} of Secret {namespace}/{} is not UTF-8 text",
                reference.key, reference.name
            ),
        )
    })?;
    // Secrets written with `echo` often end in a newline that no platform accepts in a token.
    Ok(value.trim_end_matches(['\n', '\r']).to_string())
}

/// The platform client for removing an object: like [`connect`], but when the credential's
/// Secret is already gone (`kubectl delete -f` removes a directory's objects in name order,
/// Secrets first), the client this operator last built for the provider still serves.
pub async fn connect_for_cleanup(
    ctx: &Context,
    view: &ProviderView,
    namespace: &str,
) -> Result<Arc<dyn Platform>, ReconcileError> {
    // A namespace no longer allowed deletes nothing with the credential either
    // (`deletionPolicy: Orphan` lets the object go).
    admitted(ctx, view, namespace).await?;
    match connect(ctx, view).await {
        Err(e) if e.reason().is_missing_secret() => match ctx.platforms.last(&view.display) {
            Some(platform) => {
                tracing::info!(provider = %view.display, "credential Secret is gone; cleaning up with the last client built for it");
                Ok(platform)
            }
            None => Err(e),
        },
        other => other,
    }
}

/// What a platform client for a provider is built from: its Secrets read and defaults applied.
pub struct Access {
    pub endpoint: String,
    pub token: String,
    pub ca_pem: Option<String>,
    pub per_minute: u32,
    pub burst: u32,
}

impl Access {
    /// Reads the provider's credential and CA from `objects`.
    pub async fn read(
        objects: &dyn Objects,
        connector: &dyn Connector,
        view: &ProviderView,
        policy: &EndpointPolicy,
    ) -> Result<Access, ReconcileError> {
        let secret_ns = view
            .secret_namespace(&view.spec.credentials.secret_ref)
            .ok_or_else(|| {
                ReconcileError::user(
                    Reason::SecretNamespaceMissing,
                    format!("{} names no namespace for its Secret", view.display),
                )
            })?;
        let token = secret_value(objects, &secret_ns, &view.spec.credentials.secret_ref).await?;
        if token.is_empty() {
            return Err(ReconcileError::user(
                Reason::CredentialsEmpty,
                format!(
                    "key {:?} of Secret {secret_ns}/{} is empty",
                    view.spec.credentials.secret_ref.key, view.spec.credentials.secret_ref.name
                ),
            ));
        }
        let tls = view.spec.tls.clone().unwrap_or_default();
        let mut ca_pem = tls.ca_bundle.clone();
        if let Some(ca_ref) = &tls.ca_secret_ref {
            let ns = view
                .secret_namespace(ca_ref)
                .unwrap_or_else(|| secret_ns.clone());
            let pem = secret_value(objects, &ns, ca_ref).await?;
            ca_pem = Some(match ca_pem {
                Some(inline) => format!("{inline}\n{pem}"),
                None => pem,
            });
        }
        let endpoint = match view.spec.endpoint.clone().or_else(|| {
            connector
                .default_endpoint(view.spec.type_)
                .map(String::from)
        }) {
            Some(e) => e,
            None => {
                return Err(ReconcileError::user(
                    Reason::EndpointRequired,
                    format!(
                        "{} needs spec.endpoint: {} has no public URL",
                        view.display, view.spec.type_
                    ),
                ))
            }
        };
        // Checked before any client is built: a refused endpoint is never called.
        policy.check(&view.display, &endpoint)?;
        let limit = view.spec.rate_limit.clone().unwrap_or_default();
        let per_minute = limit
            .requests_per_minute
            .unwrap_or_else(|| connector.default_requests_per_minute(view.spec.type_));
        let burst = limit.burst.unwrap_or((per_minute / 10).max(1));
        Ok(Access {
            endpoint,
            token,
            ca_pem,
            per_minute,
            burst,
        })
    }

    /// Changes whenever a client built from this would differ.
    fn fingerprint(&self, view: &ProviderView) -> u64 {
        let mut hasher = DefaultHasher::new();
        (
            view.spec.type_.as_str(),
            &self.endpoint,
            &self.token,
            &self.ca_pem,
            self.per_minute,
            self.burst,
        )
            .hash(&mut hasher);
        format!("{:?}", view.spec.defaults).hash(&mut hasher);
        hasher.finish()
    }

    /// Builds the platform client.
    pub fn connect(
        self,
        connector: &dyn Connector,
        view: &ProviderView,
        budget: Arc<RateBudget>,
        metrics: crate::core::metrics::Metrics,
        read_only: bool,
    ) -> Result<Arc<dyn Platform>, ReconcileError> {
        let connection = Connection {
            platform: view.spec.type_,
            endpoint: self.endpoint,
            credential: Credential::new(self.token),
            ca_pem: self.ca_pem,
            defaults: view.spec.defaults.clone().unwrap_or_default(),
            budget,
            metrics,
            read_only,
        };
        connector.connect(connection).map_err(|e| {
            if e.kind == ErrorKind::Tls {
                ReconcileError::user(Reason::TlsConfigInvalid, format!("{}: {e}", view.display))
            } else {
                ReconcileError::user(
                    Reason::PlatformNotSupported,
                    format!("{}: {e}", view.display),
                )
            }
        })
    }
}

/// Builds (or reuses) the platform client for a provider, reading its Secret and CA.
pub async fn connect(
    ctx: &Context,
    view: &ProviderView,
) -> Result<Arc<dyn Platform>, ReconcileError> {
    let access = Access::read(&ctx.client, &*ctx.platforms, view, &ctx.settings.endpoints).await?;
    let fingerprint = access.fingerprint(view);
    if let Some(platform) = ctx.platforms.cached(&view.display, fingerprint) {
        return Ok(platform);
    }
    let budget = ctx.budgets.get(
        view.spec.type_.as_str(),
        &access.endpoint,
        &access.token,
        access.per_minute,
        access.burst,
    );
    let platform = access.connect(&*ctx.platforms, view, budget, ctx.metrics.clone(), false)?;
    ctx.platforms
        .remember(&view.display, fingerprint, platform.clone());
    Ok(platform)
}
