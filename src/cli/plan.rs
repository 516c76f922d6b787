//! `bosun plan -f <manifests>`: what bosun would change at the platforms for these manifests.
//!
//! The plan runs the controller's own reconcile (the same observation, the same pure planning
//! functions, the same mapping) in dry-run: the write funnel (`core::plan::funnel`) holds every
//! step and the plan shows them, and the HTTP layer refuses any write that would still reach it
//! (`Connection::read_only`). Nothing is written to a platform or to the cluster. Objects are read
//! from the files first, then from the cluster when one is configured, so a Workspace already
//! applied is planned from its live status (its platform id, its operation in flight).

use crate::api::{ClusterProvider, DomainBinding, Provider, ServiceScale, Workspace};
use crate::controllers;
use crate::core::annotations;
use crate::core::budget::RateBudget;
use crate::core::drivers::CreateGuard;
use crate::core::error::ReconcileError;
use crate::core::metrics::Metrics;
use crate::core::plan::{step_lines, Hold, StepView};
use crate::core::reason::Reason;
use crate::core::reconciler::{Managed, Mode, Note, Report};
use crate::core::references::{self, Access, Objects, ProviderView};
use crate::core::seam::Platform;
use async_trait::async_trait;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    /// Manifest files or directories (their `.yaml`, `.yml` and `.json` files); `-` reads stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Namespace for objects that name none (default: the kubeconfig's, else `default`).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "text")]
    pub output: PlanFormat,
    /// Plan from the files alone, without reading anything from a cluster.
    #[arg(long)]
    pub no_cluster: bool,
    /// Exit with 2 when there are changes (0 when none, 1 on errors), like `terraform plan
    /// -detailed-exitcode`.
    #[arg(long)]
    pub exit_code: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanFormat {
    Text,
    Json,
}

/// What the plan found for one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// bosun would write to the platform.
    Change,
    /// Nothing to write.
    Unchanged,
    /// The object waits for something else first (a Provider, a Workspace to be created).
    Waiting,
    /// The object cannot be planned (bad credentials, a refused spec, an unreadable manifest).
    Failed,
}

/// An Event the reconcile would record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedEvent {
    #[serde(rename = "type")]
    pub type_: &'static str,
    pub reason: String,
    pub message: String,
}

/// The plan for one object.
#[derive(Clone, Debug, Serialize)]
pub struct ObjectPlan {
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub outcome: Outcome,
    /// The plan's steps, for platforms on the plan seam (`core::plan`): the whole rollout,
    /// including what follows a create.
    pub steps: Vec<StepView>,
    pub events: Vec<PlannedEvent>,
    /// The condition reason that would be shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub message: String,
}

/// The whole plan.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Plan {
    pub objects: Vec<ObjectPlan>,
}

impl Plan {
    pub fn count(&self, outcome: Outcome) -> usize {
        self.objects.iter().filter(|o| o.outcome == outcome).count()
    }
}

// ---------------------------------------------------------------------------------------------
// Reading manifests.

/// The bosun objects (and Secrets) found in the files.
#[derive(Default)]
pub struct Manifests {
    pub secrets: Vec<Secret>,
    pub providers: Vec<Provider>,
    pub cluster_providers: Vec<ClusterProvider>,
    pub workspaces: Vec<Workspace>,
    pub service_scales: Vec<ServiceScale>,
    pub domain_bindings: Vec<DomainBinding>,
    /// Documents that could not be read as what they say they are.
    pub unreadable: Vec<ObjectPlan>,
}

fn read_paths(paths: &[PathBuf]) -> Result<Vec<(String, String)>, String> {
    let mut texts = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map_err(|e| format!("cannot read stdin: {e}"))?;
            texts.push(("<stdin>".to_string(), text));
        } else if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| is_manifest(p))
                .collect();
            files.sort();
            for file in files {
                texts.push(read_file(&file)?);
            }
        } else {
            texts.push(read_file(path)?);
        }
    }
    Ok(texts)
}

fn is_manifest(path: &Path) -> bool {
    path.is_file()
        && matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        )
}

fn read_file(path: &Path) -> Result<(String, String), String> {
    std::fs::read_to_string(path)
        .map(|text| (path.display().to_string(), text))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Splits YAML (or JSON) text into documents, unwrapping `kind: List`.
pub fn documents(text: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value: Value = serde::Deserialize::deserialize(document)
            .map_err(|e| format!("not a YAML or JSON document: {e}"))?;
        match value {
            Value::Null => {}
            Value::Object(ref map) if map.get("kind") == Some(&Value::from("List")) => {
                if let Some(Value::Array(items)) = map.get("items") {
                    out.extend(items.iter().cloned());
                }
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

impl Manifests {
    /// Sorts documents by kind, giving namespaced objects without one `namespace`.
    pub fn from_documents(sources: Vec<(String, Vec<Value>)>, namespace: &str) -> Manifests {
        let mut m = Manifests::default();
        for (source, docs) in sources {
            for mut doc in docs {
                let api_version = doc["apiVersion"].as_str().unwrap_or_default().to_string();
                let kind = doc["kind"].as_str().unwrap_or_default().to_string();
                let name = doc["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let namespaced = kind != "ClusterProvider";
                if namespaced && doc["metadata"]["namespace"].as_str().is_none() {
                    if let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut) {
                        meta.insert("namespace".into(), Value::from(namespace));
                    }
                }
                let bosun = api_version.starts_with("bosun.dev/");
                let result = match (bosun, api_version.as_str(), kind.as_str()) {
                    (false, "v1", "Secret") => parse(doc, &mut m.secrets),
                    (true, _, "Provider") => parse(doc, &mut m.providers),
                    (true, _, "ClusterProvider") => parse(doc, &mut m.cluster_providers),
                    (true, _, "Workspace") => parse(doc, &mut m.workspaces),
                    (true, _, "ServiceScale") => parse(doc, &mut m.service_scales),
                    (true, _, "DomainBinding") => parse(doc, &mut m.domain_bindings),
                    // Other objects (Namespaces, ConfigMaps, ...) change nothing at a platform.
                    _ => Ok(()),
                };
                if let Err(e) = result {
                    m.unreadable.push(ObjectPlan {
                        kind,
                        namespace: namespaced.then(|| namespace.to_string()),
                        name,
                        outcome: Outcome::Failed,
                        steps: Vec::new(),
                        events: Vec::new(),
                        reason: Some("InvalidManifest".into()),
                        message: format!("{source}: {e}"),
                    });
                }
            }
        }
        m
    }
}

fn parse<K: serde::de::DeserializeOwned>(doc: Value, into: &mut Vec<K>) -> Result<(), String> {
    into.push(serde_json::from_value(doc).map_err(|e| e.to_string())?);
    Ok(())
}

/// The object as the controller would see it once applied (pure): the files' metadata and
/// spec, with the live object's status, platform markers and generation. A spec that differs
/// from the live one counts as a new generation, so differences at the platform are a rollout,
/// not drift.
pub fn as_applied(manifest: Value, live: Option<Value>) -> Value {
    let mut merged = manifest;
    let Some(live) = live else {
        merged["metadata"]["generation"] = Value::from(1);
        return merged;
    };
    let live_generation = live["metadata"]["generation"].as_i64().unwrap_or(1);
    let generation = if merged.get("spec") == live.get("spec") {
        live_generation
    } else {
        live_generation + 1
    };
    merged["metadata"]["generation"] = Value::from(generation);
    for field in ["uid", "resourceVersion"] {
        if let Some(v) = live["metadata"].get(field) {
            merged["metadata"][field] = v.clone();
        }
    }
    if let Some(pending) = live["metadata"]["annotations"].get(annotations::CREATE_PENDING) {
        if !merged["metadata"]["annotations"].is_object() {
            merged["metadata"]["annotations"] = Value::Object(Default::default());
        }
        merged["metadata"]["annotations"][annotations::CREATE_PENDING] = pending.clone();
    }
    if let Some(status) = live.get("status") {
        merged["status"] = status.clone();
    }
    merged
}

/// Reads the live copy of `obj` and returns it as the controller would see it after apply.
async fn applied<K: Managed>(cluster: Option<&kube::Client>, obj: &K) -> Result<K, String> {
    let manifest = serde_json::to_value(obj).map_err(|e| e.to_string())?;
    let live = match cluster {
        None => None,
        Some(client) => K::api(client.clone(), obj)
            .get_opt(&obj.name_any())
            .await
            .map_err(|e| format!("cannot read the live object: {e}"))?
            .map(|live| serde_json::to_value(live).map_err(|e| e.to_string()))
            .transpose()?,
    };
    serde_json::from_value(as_applied(manifest, live)).map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------------
// Looking objects up: the files first, then the cluster.

struct PlanObjects {
    secrets: Vec<Secret>,
    providers: Vec<Provider>,
    cluster_providers: Vec<ClusterProvider>,
    /// As applied (with live status).
    workspaces: Vec<Workspace>,
    cluster: Option<kube::Client>,
}

fn find<'a, K: ResourceExt>(
    objects: &'a [K],
    namespace: Option<&str>,
    name: &str,
) -> Option<&'a K> {
    objects
        .iter()
        .find(|o| o.name_any() == name && o.namespace().as_deref() == namespace)
}

#[async_trait]
impl Objects for PlanObjects {
    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, kube::Error> {
        match (find(&self.secrets, Some(namespace), name), &self.cluster) {
            (Some(s), _) => Ok(Some(s.clone())),
            (None, Some(c)) => c.secret(namespace, name).await,
            (None, None) => Ok(None),
        }
    }
    async fn provider(&self, namespace: &str, name: &str) -> Result<Option<Provider>, kube::Error> {
        match (find(&self.providers, Some(namespace), name), &self.cluster) {
            (Some(p), _) => Ok(Some(p.clone())),
            (None, Some(c)) => c.provider(namespace, name).await,
            (None, None) => Ok(None),
        }
    }
    async fn cluster_provider(&self, name: &str) -> Result<Option<ClusterProvider>, kube::Error> {
        match (find(&self.cluster_providers, None, name), &self.cluster) {
            (Some(p), _) => Ok(Some(p.clone())),
            (None, Some(c)) => c.cluster_provider(name).await,
            (None, None) => Ok(None),
        }
    }
    async fn workspace(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Workspace>, kube::Error> {
        match (find(&self.workspaces, Some(namespace), name), &self.cluster) {
            (Some(w), _) => Ok(Some(w.clone())),
            (None, Some(c)) => c.workspace(namespace, name).await,
            (None, None) => Ok(None),
        }
    }
}

/// Creates nothing: the create call itself is held back and shown.
struct PlanGuard;

#[async_trait]
impl CreateGuard for PlanGuard {
    async fn before_create(&self) -> Result<(), ReconcileError> {
        Ok(())
    }
    async fn created(&self, _external_id: &str) -> Result<(), ReconcileError> {
        Ok(())
    }
    async fn save_operation(
        &self,
        _operation: &crate::api::OperationStatus,
    ) -> Result<(), ReconcileError> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Planning.

/// Platform clients per provider, all read-only.
struct Platforms {
    metrics: Metrics,
    connector: crate::platform::Connectors,
    built: HashMap<String, Arc<dyn Platform>>,
}

impl Platforms {
    async fn connect(
        &mut self,
        objects: &dyn Objects,
        view: &ProviderView,
    ) -> Result<Arc<dyn Platform>, ReconcileError> {
        if let Some(p) = self.built.get(&view.display) {
            return Ok(p.clone());
        }
        // The operator's default rules: plain http only to loopback.
        let policy = crate::core::endpoint::EndpointPolicy::default();
        let access = Access::read(objects, &self.connector, view, &policy).await?;
        let budget = Arc::new(RateBudget::new(access.per_minute, access.burst));
        let platform = access.connect(&self.connector, view, budget, self.metrics.clone(), true)?;
        self.built.insert(view.display.clone(), platform.clone());
        Ok(platform)
    }
}

fn mode_of<K: Managed>(obj: &K) -> Mode {
    let steering = annotations::steering(obj.annotations());
    let last_handled = obj.status().and_then(K::last_handled);
    Mode {
        hold: Some(if steering.paused {
            Hold::Paused
        } else {
            Hold::DryRun
        }),
        requested: annotations::reconcile_requested(&steering, last_handled),
    }
}

/// Turns one reconcile's result and held-back writes into the object's plan (pure).
pub fn judge<S>(
    kind: &str,
    namespace: Option<String>,
    name: String,
    result: Result<Report<S>, ReconcileError>,
) -> ObjectPlan {
    let events = |notes: &[Note]| {
        notes
            .iter()
            .map(|n| PlannedEvent {
                type_: if n.warning { "Warning" } else { "Normal" },
                reason: n.reason.to_string(),
                message: n.message.clone(),
            })
            .collect::<Vec<_>>()
    };
    let mut steps = Vec::new();
    let (outcome, reason, message, events) = match result {
        Ok(report) => {
            let changed = report.plan.steps.iter().any(|s| s.action.writes());
            steps = report.plan.steps;
            use crate::core::conditions::SyncState;
            let (reason, message) = match &report.sync {
                SyncState::Progressing { reason, message }
                | SyncState::Retrying { reason, message }
                | SyncState::Stalled { reason, message } => (reason.to_string(), message.clone()),
                SyncState::Synced | SyncState::Paused | SyncState::Observing => (
                    report.readiness.reason.to_string(),
                    report.readiness.message.clone(),
                ),
            };
            let outcome = match (&report.sync, changed) {
                (_, true) => Outcome::Change,
                (SyncState::Stalled { .. }, false) => Outcome::Failed,
                _ => Outcome::Unchanged,
            };
            (outcome, reason, message, events(&report.notes))
        }
        Err(e @ ReconcileError::Waiting { .. }) => (
            Outcome::Waiting,
            e.reason().to_string(),
            e.to_string(),
            Vec::new(),
        ),
        Err(e) => (
            Outcome::Failed,
            e.reason().to_string(),
            e.to_string(),
            Vec::new(),
        ),
    };
    ObjectPlan {
        kind: kind.to_string(),
        namespace,
        name,
        outcome,
        steps,
        events,
        reason: (!reason.is_empty()).then_some(reason),
        message,
    }
}

/// Plans every object in `manifests`.
pub async fn plan(manifests: Manifests, cluster: Option<kube::Client>) -> Plan {
    let mut plan = Plan {
        objects: manifests.unreadable,
    };
    let mut workspaces = Vec::new();
    let mut waiting_on_live = Vec::new();
    for ws in &manifests.workspaces {
        match applied(cluster.as_ref(), ws).await {
            Ok(w) => workspaces.push(w),
            Err(e) => waiting_on_live.push(judge::<()>(
                "Workspace",
                ws.namespace(),
                ws.name_any(),
                Err(ReconcileError::user(Reason::ClusterUnreadable, e)),
            )),
        }
    }
    plan.objects.extend(waiting_on_live);
    let objects = PlanObjects {
        secrets: manifests.secrets,
        providers: manifests.providers.clone(),
        cluster_providers: manifests.cluster_providers.clone(),
        workspaces: workspaces.clone(),
        cluster,
    };
    let mut platforms = Platforms {
        metrics: Metrics::new(),
        connector: crate::platform::Connectors::default(),
        built: HashMap::new(),
    };

    let providers = manifests
        .providers
        .iter()
        .map(|p| {
            (
                "Provider",
                p.namespace(),
                p.name_any(),
                ProviderView::from_provider(p),
            )
        })
        .chain(manifests.cluster_providers.iter().map(|p| {
            (
                "ClusterProvider",
                None,
                p.name_any(),
                ProviderView::from_cluster_provider(p),
            )
        }));
    for (kind, namespace, name, view) in providers {
        let result = match platforms.connect(&objects, &view).await {
            Ok(platform) => platform.verify().await.map_err(ReconcileError::from),
            Err(e) => Err(e),
        };
        plan.objects.push(match result {
            Ok(who) => ObjectPlan {
                kind: kind.into(),
                namespace,
                name,
                outcome: Outcome::Unchanged,
                steps: Vec::new(),
                events: Vec::new(),
                reason: Some("CredentialsValid".into()),
                message: format!("{} accepts the credential ({who})", view.spec.type_),
            },
            Err(e) => judge::<()>(kind, namespace, name, Err(e)),
        });
    }

    for ws in &workspaces {
        let result = async {
            let ns = ws.namespace().unwrap_or_default();
            let view = references::get_provider(&objects, &ns, &ws.spec.provider_ref).await?;
            let platform = platforms.connect(&objects, &view).await?;
            controllers::workspace::drive(&objects, &view, &*platform, ws, mode_of(ws), &PlanGuard)
                .await
        }
        .await;
        plan.objects
            .push(judge("Workspace", ws.namespace(), ws.name_any(), result));
    }

    for scale in &manifests.service_scales {
        let result = async {
            let scale = applied(objects.cluster.as_ref(), scale)
                .await
                .map_err(|e| ReconcileError::user(Reason::ClusterUnreadable, e))?;
            let ns = scale.namespace().unwrap_or_default();
            let workspace = controllers::service_scale::get_workspace(
                &objects,
                &ns,
                &scale.spec.workspace_ref.name,
            )
            .await?;
            let view =
                references::get_provider(&objects, &ns, &workspace.spec.provider_ref).await?;
            let platform = platforms.connect(&objects, &view).await?;
            controllers::service_scale::drive(
                &view,
                &*platform,
                &scale,
                &workspace,
                mode_of(&scale),
            )
            .await
        }
        .await;
        plan.objects.push(judge(
            "ServiceScale",
            scale.namespace(),
            scale.name_any(),
            result,
        ));
    }

    for binding in &manifests.domain_bindings {
        let result = async {
            let binding = applied(objects.cluster.as_ref(), binding)
                .await
                .map_err(|e| ReconcileError::user(Reason::ClusterUnreadable, e))?;
            let ns = binding.namespace().unwrap_or_default();
            let view = references::get_provider(&objects, &ns, &binding.spec.provider_ref).await?;
            let platform = platforms.connect(&objects, &view).await?;
            controllers::domain_binding::drive(
                &objects,
                &view,
                &*platform,
                &binding,
                mode_of(&binding),
            )
            .await
        }
        .await;
        plan.objects.push(judge(
            "DomainBinding",
            binding.namespace(),
            binding.name_any(),
            result,
        ));
    }
    plan
}

// ---------------------------------------------------------------------------------------------
// Output.

/// The plan for people (pure).
pub fn render_text(plan: &Plan) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for o in &plan.objects {
        let who = match &o.namespace {
            Some(ns) => format!("{} {ns}/{}", o.kind, o.name),
            None => format!("{} {}", o.kind, o.name),
        };
        let reason = o.reason.as_deref().unwrap_or_default();
        let writes = o.steps.iter().filter(|s| s.action.writes()).count();
        let headline = match o.outcome {
            Outcome::Change => format!("{} to send", plural(writes, "change")),
            Outcome::Unchanged => "no changes".to_string(),
            Outcome::Waiting => "waiting".to_string(),
            Outcome::Failed => "cannot be planned".to_string(),
        };
        let _ = writeln!(out, "{who}: {headline}");
        for line in step_lines(&o.steps, "  ") {
            let _ = writeln!(out, "{line}");
        }
        if o.outcome != Outcome::Change && (!o.message.is_empty() || !reason.is_empty()) {
            // After writes, the state the reconcile reports is the one it expects, not news.
            let _ = writeln!(out, "  {reason}: {}", o.message);
        }
        for e in &o.events {
            let _ = writeln!(out, "  event {} {}: {}", e.type_, e.reason, e.message);
        }
    }
    let _ = writeln!(
        out,
        "\nPlan: {} to change, {} unchanged, {} waiting, {} cannot be planned.",
        plan.count(Outcome::Change),
        plan.count(Outcome::Unchanged),
        plan.count(Outcome::Waiting),
        plan.count(Outcome::Failed)
    );
    out
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// `bosun plan`.
pub async fn run(args: PlanArgs) -> Result<u8, String> {
    let texts = read_paths(&args.files)?;
    let (cluster, default_namespace) = if args.no_cluster {
        (None, None)
    } else {
        match kube::Config::infer().await {
            Ok(config) => {
                let ns = config.default_namespace.clone();
                let client = kube::Client::try_from(config)
                    .map_err(|e| format!("cannot build a Kubernetes client: {e}"))?;
                (Some(client), Some(ns))
            }
            Err(e) => {
                eprintln!("bosun plan: no cluster configured ({e}); planning from the files alone");
                (None, None)
            }
        }
    };
    let namespace = args
        .namespace
        .or(default_namespace)
        .unwrap_or_else(|| "default".to_string());
    let mut sources = Vec::new();
    for (source, text) in texts {
        let docs = documents(&text).map_err(|e| format!("{source}: {e}"))?;
        sources.push((source, docs));
    }
    let plan = plan(Manifests::from_documents(sources, &namespace), cluster).await;
    match args.output {
        PlanFormat::Text => print!("{}", render_text(&plan)),
        PlanFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&plan).map_err(|e| e.to_string())?
        ),
    }
    Ok(if plan.count(Outcome::Failed) > 0 {
        1
    } else if args.exit_code && plan.count(Outcome::Change) > 0 {
        2
    } else {
        0
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::conditions::{Readiness, SyncState};
    use serde_json::json;

    /// A report whose plan updates one object.
    fn changing(notes: Vec<Note>) -> Report<()> {
        use crate::core::plan::{self as seam, Change, ObjectId, Step, StepAction, Target};
        let mut steps = seam::Plan::default();
        steps.push(Step {
            action: StepAction::Update,
            target: Target {
                kind: "workspace",
                name: "w".into(),
                id: ObjectId::Known("1".into()),
            },
            changes: vec![Change::new(
                "spec.replicas",
                Some("4".into()),
                Some("1".into()),
            )],
            drift: true,
            summary: "scale to 1 replica".into(),
            deadline: None,
            record: None,
            op: (),
        });
        let mut r = report(SyncState::Synced, notes);
        r.plan = steps.view();
        r
    }

    fn report(sync: SyncState, notes: Vec<Note>) -> Report<()> {
        Report {
            status: (),
            readiness: Readiness {
                ready: true,
                reason: Reason::Available,
                message: "running".into(),
            },
            sync,
            requeue_after: None,
            notes,
            plan: Default::default(),
        }
    }

    #[test]
    fn documents_split_yaml_and_unwrap_lists() {
        let text = "a: 1\n---\n---\nkind: List\nitems:\n- {b: 2}\n- {c: 3}\n";
        let docs = documents(text).unwrap();
        assert_eq!(
            docs,
            vec![json!({"a": 1}), json!({"b": 2}), json!({"c": 3})]
        );
        assert!(documents("a: [").is_err());
    }

    #[test]
    fn manifests_are_sorted_by_kind_and_get_the_default_namespace() {
        let docs = vec![
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}}),
            json!({"apiVersion": "bosun.dev/v1alpha1", "kind": "Workspace", "metadata": {"name": "w", "namespace": "other"},
                   "spec": {"providerRef": {"name": "p"}, "source": {"repository": "https://x/r.git", "branch": "main"}}}),
            json!({"apiVersion": "bosun.dev/v1alpha1", "kind": "ClusterProvider", "metadata": {"name": "cp"},
                   "spec": {"type": "codesphere", "credentials": {"secretRef": {"name": "s", "key": "k", "namespace": "ns"}}}}),
            json!({"apiVersion": "bosun.dev/v1alpha1", "kind": "Workspace", "metadata": {"name": "broken"}, "spec": {"replicas": "many"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ignored"}}),
        ];
        let m = Manifests::from_documents(vec![("f.yaml".into(), docs)], "dflt");
        assert_eq!(m.secrets[0].metadata.namespace.as_deref(), Some("dflt"));
        assert_eq!(m.workspaces[0].metadata.namespace.as_deref(), Some("other"));
        assert_eq!(m.cluster_providers[0].metadata.namespace, None);
        assert_eq!(m.unreadable.len(), 1);
        let bad = &m.unreadable[0];
        assert_eq!(
            (bad.kind.as_str(), bad.name.as_str()),
            ("Workspace", "broken")
        );
        assert_eq!(bad.outcome, Outcome::Failed);
        assert!(bad.message.starts_with("f.yaml: "), "{}", bad.message);
    }

    #[test]
    fn a_new_object_is_generation_one_without_status() {
        let applied = as_applied(
            json!({"metadata": {"name": "w"}, "spec": {"replicas": 2}}),
            None,
        );
        assert_eq!(applied["metadata"]["generation"], 1);
        assert!(applied.get("status").is_none());
    }

    #[test]
    fn an_applied_object_keeps_live_status_and_marker_and_a_new_spec_is_a_new_generation() {
        let live = json!({
            "metadata": {"name": "w", "generation": 4, "uid": "u", "resourceVersion": "9",
                         "annotations": {"bosun.dev/create-pending": "t", "other": "x"}},
            "spec": {"replicas": 2},
            "status": {"externalId": "7", "observedGeneration": 4}
        });
        let same = as_applied(
            json!({"metadata": {"name": "w"}, "spec": {"replicas": 2}}),
            Some(live.clone()),
        );
        assert_eq!(
            same["metadata"]["generation"], 4,
            "same spec: drift is drift"
        );
        assert_eq!(same["status"]["externalId"], "7");
        assert_eq!(same["metadata"]["uid"], "u");
        assert_eq!(
            same["metadata"]["annotations"]["bosun.dev/create-pending"],
            "t"
        );
        assert!(
            same["metadata"]["annotations"].get("other").is_none(),
            "the files' annotations rule"
        );
        let edited = as_applied(
            json!({"metadata": {"name": "w", "annotations": {"a": "b"}}, "spec": {"replicas": 3}}),
            Some(live),
        );
        assert_eq!(
            edited["metadata"]["generation"], 5,
            "a new spec is a new generation"
        );
        assert_eq!(edited["metadata"]["annotations"]["a"], "b");
    }

    /// Every field path of a JSON value, arrays as `[]`.
    fn paths(value: &Value, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    if !v.is_array() && !v.is_object() {
                        out.insert(path.clone());
                    }
                    paths(v, &path, out);
                }
            }
            Value::Array(items) => {
                let path = format!("{prefix}[]");
                if !items.is_empty() && items.iter().all(|i| !i.is_object()) {
                    out.insert(path.clone());
                }
                for item in items {
                    paths(item, &path, out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn the_json_form_is_the_documented_one() {
        use crate::core::plan::{self as seam, Change, ObjectId, Step, StepAction, Target};
        // A plan with every optional field present, from the same code `bosun plan` runs.
        let mut steps = seam::Plan::default();
        let start = steps.push(Step {
            action: StepAction::Start,
            target: Target {
                kind: "environment",
                name: "production".into(),
                id: ObjectId::Known("production".into()),
            },
            changes: vec![Change::new("f", Some("a".into()), Some("b".into()))],
            drift: true,
            summary: "deploy".into(),
            deadline: None,
            record: None,
            op: (),
        });
        steps.push(Step {
            action: StepAction::Await,
            target: Target {
                kind: "deploy",
                name: "production".into(),
                id: ObjectId::FromStep(start),
            },
            changes: Vec::new(),
            drift: false,
            summary: "follow".into(),
            deadline: Some(std::time::Duration::from_secs(900)),
            record: None,
            op: (),
        });
        let mut with_steps = report(SyncState::Synced, vec![Note::drift("f", "a", "b")]);
        with_steps.plan = steps.view();
        let plan = Plan {
            objects: vec![judge(
                "Workspace",
                Some("ns".into()),
                "w".into(),
                Ok(with_steps),
            )],
        };
        let json = serde_json::to_value(&plan).unwrap();
        let mut produced = std::collections::BTreeSet::new();
        paths(&json, "", &mut produced);
        // Containers are documented by their own row too.
        produced.extend(["objects[]", "objects[].steps[]"].map(String::from));

        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/plan.md")).unwrap();
        let table = doc
            .split("<!-- plan-json-schema -->")
            .nth(1)
            .and_then(|t| t.split("<!-- /plan-json-schema -->").next())
            .expect("docs/plan.md has the schema table");
        let documented: std::collections::BTreeSet<String> = table
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .map(String::from)
            .collect();
        assert_eq!(
            produced, documented,
            "docs/plan.md's JSON table and `bosun plan -o json` differ"
        );
    }

    #[test]
    fn outcomes_follow_writes_then_errors_then_state() {
        let o = judge::<()>(
            "Workspace",
            None,
            "w".into(),
            Ok(report(SyncState::Synced, vec![])),
        );
        assert_eq!(
            (o.outcome, o.reason.as_deref()),
            (Outcome::Unchanged, Some("Available"))
        );

        let drift = Note::drift("spec.replicas", 4, 1);
        let o = judge::<()>("Workspace", None, "w".into(), Ok(changing(vec![drift])));
        assert_eq!(o.outcome, Outcome::Change);
        assert_eq!(o.events[0].type_, "Warning");
        assert_eq!(o.events[0].reason, "DriftCorrected");

        let o = judge::<()>(
            "ServiceScale",
            None,
            "s".into(),
            Err(ReconcileError::waiting(
                Reason::WorkspaceNotCreated,
                "later",
            )),
        );
        assert_eq!(o.outcome, Outcome::Waiting);

        let o = judge::<()>(
            "Workspace",
            None,
            "w".into(),
            Err(ReconcileError::user(
                Reason::UnsupportedByProvider,
                "spec.replicas",
            )),
        );
        assert_eq!(
            (o.outcome, o.reason.as_deref()),
            (Outcome::Failed, Some("UnsupportedByProvider"))
        );

        let stalled = SyncState::Stalled {
            reason: Reason::QuotaExceeded,
            message: "plan full".into(),
        };
        let o = judge::<()>("Workspace", None, "w".into(), Ok(report(stalled, vec![])));
        assert_eq!(
            (o.outcome, o.message.as_str()),
            (Outcome::Failed, "plan full")
        );
    }

    #[test]
    fn text_shows_each_step_its_changes_and_a_summary() {
        let mut plan = Plan::default();
        plan.objects.push(judge::<()>(
            "Workspace",
            Some("ns".into()),
            "w".into(),
            Ok(changing(vec![])),
        ));
        plan.objects.push(judge::<()>(
            "ServiceScale",
            Some("ns".into()),
            "s".into(),
            Err(ReconcileError::waiting(
                Reason::WorkspaceNotCreated,
                "later",
            )),
        ));
        let text = render_text(&plan);
        assert!(text.contains("Workspace ns/w: 1 change to send"), "{text}");
        assert!(
            text.contains(
                "  1. update workspace 1: scale to 1 replica [drift]\n       spec.replicas: 4 -> 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("ServiceScale ns/s: waiting\n  WorkspaceNotCreated: later"),
            "{text}"
        );
        assert!(
            text.ends_with("Plan: 1 to change, 0 unchanged, 1 waiting, 0 cannot be planned.\n"),
            "{text}"
        );
    }
}
