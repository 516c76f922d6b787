//! One controller per kind, wired to the watches that should wake it.

pub mod domain_binding;
pub mod managed;
pub mod provider;
pub mod service_scale;
pub mod workspace;

use crate::api::{
    ClusterProvider, DomainBinding, Provider, ProviderKind, ProviderObject, ServiceScale, Workspace,
};
use crate::core::backoff::WatchBackoff;
use crate::core::context::Context;
use crate::core::reconciler::{error_policy, run, Managed, Reconciler};
use futures::{Future, Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::PredicateConfig;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource, ResourceExt};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Which namespaces the operator watches.
#[derive(Clone, Debug)]
pub enum Scope {
    All,
    Namespace(String),
}

fn api<K>(client: &kube::Client, scope: &Scope) -> Api<K>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match scope {
        Scope::All => Api::all(client.clone()),
        Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
    }
}

/// What makes an object worth reconciling again: its spec (generation), its steering
/// annotations, its finalizers or its deletion. Status changes are left out on purpose: a
/// reconcile that writes status must not wake itself, or a changing error message would turn
/// into a retry storm. So is bosun's own create-pending marker: a create the platform refused
/// would otherwise be tried again as soon as the marker was written.
fn wakes_reconcile<K: Resource>(obj: &K) -> Option<u64> {
    let meta = obj.meta();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    meta.generation.hash(&mut hasher);
    if let Some(annotations) = &meta.annotations {
        annotations
            .iter()
            .filter(|(key, _)| key.as_str() != crate::core::annotations::CREATE_PENDING)
            .for_each(|entry| entry.hash(&mut hasher));
    }
    meta.finalizers.hash(&mut hasher);
    meta.deletion_timestamp.is_some().hash(&mut hasher);
    Some(hasher.finish())
}

/// What the cache keeps of an object: everything bosun reads. `managedFields` (often most of
/// an object's bytes) and kubectl's last-applied copy of the whole object are never read, and
/// dropping them keeps the operator's memory small with many thousands of objects.
fn slim<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// The annotation client-side `kubectl apply` keeps a copy of the whole object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What a kind needs to be watched, cached and reconciled by a kube-runtime controller.
trait Watched:
    Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<K> Watched for K where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// A controller for `api` that is woken by [`wakes_reconcile`] changes only.
fn controller_for<K>(api: Api<K>, wc: watcher::Config) -> Controller<K>
where
    K: Watched,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, wc)
        .backoff(WatchBackoff::default())
        .modify(slim)
        .reflect(writer)
        .applied_objects()
        .predicate_filter(wakes_reconcile::<K>, PredicateConfig::default());
    Controller::for_stream(stream, reader)
}

/// Counts controllers whose caches are filled, so `/readyz` is true only after the first sync.
#[derive(Default)]
pub struct Readiness {
    synced: AtomicUsize,
    /// Waiting for the Lease: a healthy standby. It counts as ready, or a rolling update of
    /// several replicas would wait forever for replicas that cannot lead until the old go.
    standby: std::sync::atomic::AtomicBool,
}

/// How many controllers `run_all` starts.
pub const CONTROLLERS: usize = 5;

impl Readiness {
    pub fn ready(&self) -> bool {
        self.standby() || self.synced.load(Ordering::SeqCst) >= CONTROLLERS
    }

    pub fn standby(&self) -> bool {
        self.standby.load(Ordering::SeqCst)
    }

    /// Marks this replica as waiting for leadership (true) or leading (false).
    pub fn set_standby(&self, standby: bool) {
        self.standby.store(standby, Ordering::SeqCst);
    }
}

async fn mark_when_synced<K: kube::Resource + Clone + 'static>(
    store: Store<K>,
    readiness: Arc<Readiness>,
) where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    if store.wait_until_ready().await.is_ok() {
        readiness.synced.fetch_add(1, Ordering::SeqCst);
    }
}

/// Drives one controller to completion, logging each reconcile's outcome.
async fn drive<K, R, F>(controller: Controller<K>, logic: Arc<R>, ctx: Arc<Context>, shutdown: F)
where
    K: Managed + kube::Resource<DynamicType = ()>,
    R: Reconciler<K>,
    F: Future<Output = ()> + Send + Sync + Clone + 'static,
{
    let concurrency = 16;
    let running = controller
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown.clone())
        .run(
            move |obj, ctx| run(obj, logic.clone(), ctx),
            error_policy::<K>,
            ctx,
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        });
    // The graceful shutdown drains reconciles in flight, but one that begins before the first
    // list completes waits for a store that will never be ready. Stop waiting after a bound:
    // dropping a reconcile mid-way is no worse than a crash, which every reconcile survives.
    let drain_limit = async move {
        shutdown.await;
        tokio::time::sleep(DRAIN_LIMIT).await;
    };
    tokio::select! {
        _ = running => {}
        _ = drain_limit => {
            tracing::warn!(kind = %K::kind(&()), "reconciles did not drain in time; stopping anyway");
        }
    }
}

/// What wakes a controller when another kind changes: that kind's metadata stream. Every
/// mapper needs names only, so a trigger never decodes or holds whole objects: no Secret
/// data (credentials) in memory for a wake-up, and a Workspace status update costs the
/// ServiceScale and DomainBinding watches its metadata instead of the whole object.
/// (kube asks an `Api<PartialObjectMeta<K>>` for metadata only.)
fn triggers<K>(
    api: Api<PartialObjectMeta<K>>,
    wc: &watcher::Config,
) -> impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static
where
    K: Watched,
{
    watcher(api, wc.clone())
        .backoff(WatchBackoff::default())
        .touched_objects()
}

/// How long a shutdown waits for reconciles in flight.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Runs every controller until `shutdown` resolves.
pub async fn run_all<F>(ctx: Arc<Context>, scope: Scope, readiness: Arc<Readiness>, shutdown: F)
where
    F: Future<Output = ()> + Send + Sync + Clone + 'static,
{
    let client = ctx.client.clone();
    // Consistent lists (not `any_semantic`): after an apiserver restart, a list served from a
    // fresh watch cache with "any" semantics can hand back a resourceVersion the cache no
    // longer serves watches from, and the watch then fails with 410 on every relist.
    let wc = watcher::Config::default();

    // Providers are woken by changes to the Secrets they read: credentials and CA.
    let providers = controller_for(api::<Provider>(&client, &scope), wc.clone());
    let provider_store = providers.store();
    let providers = providers.watches_stream(
        triggers(api::<PartialObjectMeta<Secret>>(&client, &scope), &wc),
        move |secret| reading_secret(&provider_store, &secret),
    );

    let cluster_providers = controller_for(Api::<ClusterProvider>::all(client.clone()), wc.clone());
    let cp_store = cluster_providers.store();
    let cluster_providers = cluster_providers.watches_stream(
        triggers(api::<PartialObjectMeta<Secret>>(&client, &scope), &wc),
        move |secret| reading_secret(&cp_store, &secret),
    );

    // Workspaces are woken by their provider becoming ready and by their env Secrets.
    let workspaces = controller_for(api::<Workspace>(&client, &scope), wc.clone());
    let ws_store = workspaces.store();
    let workspaces = woken_by_providers(workspaces, &client, &scope, &wc, |w| &w.spec.provider_ref)
        .watches_stream(
            triggers(api::<PartialObjectMeta<Secret>>(&client, &scope), &wc),
            move |secret| {
                referring_to(&ws_store, &secret, |w, name| {
                    w.spec.env.iter().any(|e| {
                        e.value_from
                            .as_ref()
                            .is_some_and(|f| f.secret_key_ref.name == name)
                    })
                })
            },
        );

    // ServiceScales and DomainBindings are woken by the Workspaces they name, DomainBindings
    // also by their provider becoming ready.
    let scales = controller_for(api::<ServiceScale>(&client, &scope), wc.clone());
    let scale_store = scales.store();
    let scales = scales.watches_stream(
        triggers(api::<PartialObjectMeta<Workspace>>(&client, &scope), &wc),
        move |w| {
            referring_to(&scale_store, &w, |s, name| {
                s.spec.workspace_ref.name == name
            })
        },
    );

    let bindings = controller_for(api::<DomainBinding>(&client, &scope), wc.clone());
    let binding_store = bindings.store();
    let bindings = bindings.watches_stream(
        triggers(api::<PartialObjectMeta<Workspace>>(&client, &scope), &wc),
        move |w| {
            referring_to(&binding_store, &w, |b, name| {
                b.spec
                    .routes
                    .iter()
                    .any(|r| r.workspaces.iter().any(|x| x.name == name))
            })
        },
    );
    let bindings = woken_by_providers(bindings, &client, &scope, &wc, |b| &b.spec.provider_ref);

    let all_synced = futures::future::join5(
        mark_when_synced(providers.store(), readiness.clone()),
        mark_when_synced(cluster_providers.store(), readiness.clone()),
        mark_when_synced(workspaces.store(), readiness.clone()),
        mark_when_synced(scales.store(), readiness.clone()),
        mark_when_synced(bindings.store(), readiness.clone()),
    );
    // A shutdown before the first sync stops the controllers, so their stores never become
    // ready: stop waiting for them then, or the process would never exit.
    let stop_waiting = shutdown.clone();
    let syncs = async move {
        tokio::select! {
            _ = all_synced => {}
            _ = stop_waiting => {}
        }
    };
    let provider_logic = Arc::new(provider::ProviderReconciler);
    futures::join!(
        syncs,
        drive(
            providers,
            provider_logic.clone(),
            ctx.clone(),
            shutdown.clone()
        ),
        drive(
            cluster_providers,
            provider_logic,
            ctx.clone(),
            shutdown.clone()
        ),
        drive(
            workspaces,
            Arc::new(workspace::WorkspaceReconciler),
            ctx.clone(),
            shutdown.clone()
        ),
        drive(
            scales,
            Arc::new(service_scale::ServiceScaleReconciler),
            ctx.clone(),
            shutdown.clone()
        ),
        drive(
            bindings,
            Arc::new(domain_binding::DomainBindingReconciler),
            ctx.clone(),
            shutdown
        ),
    );
}

/// The providers of `store` that read `secret` (their credentials or their CA).
fn reading_secret<K>(store: &Store<K>, secret: &PartialObjectMeta<Secret>) -> Vec<ObjectRef<K>>
where
    K: ProviderObject + kube::Resource<DynamicType = ()> + Clone,
{
    let (namespace, name) = (secret.namespace(), secret.name_any());
    store
        .state()
        .iter()
        .filter(|p| {
            p.settings()
                .reads_secret(p.namespace().as_deref(), namespace.as_deref(), &name)
        })
        .map(|p| ObjectRef::from_obj(&**p))
        .collect()
}

/// The objects of `store` in the namespace of `changed` that refer to it by name.
fn referring_to<K, O>(
    store: &Store<K>,
    changed: &PartialObjectMeta<O>,
    refers: impl Fn(&K, &str) -> bool,
) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone,
    O: Resource,
{
    let (namespace, name) = (changed.namespace(), changed.name_any());
    store
        .state()
        .iter()
        .filter(|o| o.namespace() == namespace && refers(o, &name))
        .map(|o| ObjectRef::from_obj(&**o))
        .collect()
}

/// Adds the wake-ups by the Provider or ClusterProvider that objects of `controller` name.
fn woken_by_providers<K>(
    controller: Controller<K>,
    client: &kube::Client,
    scope: &Scope,
    wc: &watcher::Config,
    reference: fn(&K) -> &crate::api::ProviderRef,
) -> Controller<K>
where
    K: Watched,
{
    let (namespaced, cluster) = (controller.store(), controller.store());
    controller
        .watches_stream(
            triggers(api::<PartialObjectMeta<Provider>>(client, scope), wc),
            move |p| {
                let namespace = p.namespace();
                by_provider(
                    &namespaced,
                    ProviderKind::Provider,
                    namespace,
                    p.name_any(),
                    reference,
                )
            },
        )
        .watches_stream(
            triggers(
                Api::<PartialObjectMeta<ClusterProvider>>::all(client.clone()),
                wc,
            ),
            move |p| {
                by_provider(
                    &cluster,
                    ProviderKind::ClusterProvider,
                    None,
                    p.name_any(),
                    reference,
                )
            },
        )
}

/// The objects in `store` whose provider reference names this provider.
fn by_provider<K>(
    store: &Store<K>,
    kind: ProviderKind,
    namespace: Option<String>,
    name: String,
    reference: impl Fn(&K) -> &crate::api::ProviderRef,
) -> Vec<ObjectRef<K>>
where
    K: kube::Resource<DynamicType = ()> + Clone,
{
    store
        .state()
        .iter()
        .filter(|o| {
            let r = reference(o);
            r.kind == kind
                && r.name == name
                && (kind == ProviderKind::ClusterProvider || o.namespace() == namespace)
        })
        .map(|o| ObjectRef::from_obj(&**o))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Workspace;

    fn with_annotations(pairs: &[(&str, &str)]) -> Workspace {
        let mut ws: Workspace = serde_json::from_value(serde_json::json!({
            "apiVersion": "bosun.dev/v1alpha1", "kind": "Workspace",
            "metadata": {"name": "w", "generation": 1},
            "spec": {"providerRef": {"name": "p"},
                     "source": {"repository": "https://example.com/r.git", "branch": "main"}}
        }))
        .expect("workspace");
        ws.metadata.annotations = Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        ws
    }

    #[test]
    fn the_cache_drops_managed_fields_and_the_last_applied_copy_only() {
        let mut ws = with_annotations(&[(LAST_APPLIED, "{...}"), ("keep", "me")]);
        ws.metadata.managed_fields = Some(vec![Default::default()]);
        let before = ws.clone();
        slim(&mut ws);
        assert_eq!(ws.metadata.managed_fields, None);
        let annotations = ws.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(annotations.len(), 1);
        assert_eq!(annotations["keep"], "me");
        assert_eq!(ws.spec, before.spec);
        assert_eq!(ws.metadata.generation, before.metadata.generation);
    }

    #[test]
    fn own_marker_does_not_wake_but_user_annotations_do() {
        let plain = wakes_reconcile(&with_annotations(&[]));
        let marked = wakes_reconcile(&with_annotations(&[(
            crate::core::annotations::CREATE_PENDING,
            "2026-11-23T00:00:00Z",
        )]));
        assert_eq!(plain, marked);
        let requested = wakes_reconcile(&with_annotations(&[(
            crate::core::annotations::RECONCILE_REQUESTED_AT,
            "now",
        )]));
        assert_ne!(plain, requested);
    }
}
