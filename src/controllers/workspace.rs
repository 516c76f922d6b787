//! `Workspace`: references and capabilities are checked here, provider-neutrally; the
//! platform's mapping does the rest.

use crate::api::{
    DeletionPolicy, ManagementPolicy, OperationStatus, PlatformType, RolloutStrategy, Workspace,
    WorkspaceSpec, WorkspaceStatus,
};
use crate::core::annotations;
use crate::core::context::Context;
use crate::core::drivers::{CreateGuard, WorkspaceRequest};
use crate::core::error::ReconcileError;
use crate::core::reason::Reason;
use crate::core::reconciler::{Cleanup, Mode, Note, Reconciler, Report};
use crate::core::references::{self, Objects, ProviderView};
use crate::core::seam::{Capabilities, Platform};
use async_trait::async_trait;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use std::collections::BTreeMap;

/// The first thing in `spec` that `platform` cannot do, as a message naming the field (pure).
pub fn unsupported(
    spec: &WorkspaceSpec,
    platform: PlatformType,
    caps: Capabilities,
) -> Option<String> {
    if spec.replicas > 1 && !caps.workspace_replicas {
        return Some(format!(
            "spec.replicas: {platform} has no replica count; set spec.replicas to 1"
        ));
    }
    if spec.strategy == RolloutStrategy::BlueGreen && !caps.blue_green {
        return Some(format!(
            "spec.strategy: {platform} does not support BlueGreen; use InPlace"
        ));
    }
    let foreign = [
        (
            spec.codesphere.is_some(),
            PlatformType::Codesphere,
            "spec.codesphere",
        ),
        (
            spec.devopness.is_some(),
            PlatformType::Devopness,
            "spec.devopness",
        ),
        (
            spec.spheron.is_some(),
            PlatformType::Spheron,
            "spec.spheron",
        ),
        (
            spec.puppet_code_manager.is_some(),
            PlatformType::PuppetCodeManager,
            "spec.puppetCodeManager",
        ),
    ];
    foreign
        .iter()
        .find(|(set, owner, _)| *set && *owner != platform)
        .map(|(_, owner, field)| {
            format!("{field}: the provider is {platform}, not {owner}; remove {field}")
        })
}

/// The object's name at the platform.
pub fn external_name(obj: &Workspace) -> String {
    obj.spec
        .external_name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", obj.namespace().unwrap_or_default(), obj.name_any()))
}

/// Resolves every environment variable, reading Secret-backed ones.
async fn resolve_env(
    objects: &dyn Objects,
    namespace: &str,
    spec: &WorkspaceSpec,
) -> Result<BTreeMap<String, String>, ReconcileError> {
    let mut env = BTreeMap::new();
    for var in &spec.env {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => {
                references::secret_value(objects, namespace, &from.secret_key_ref).await?
            }
            (None, None) => String::new(),
        };
        env.insert(var.name.clone(), value);
    }
    Ok(env)
}

/// Writes the create-pending marker and the new id through the Kubernetes API.
struct KubeCreateGuard<'a> {
    ctx: &'a Context,
    obj: &'a Workspace,
}

#[async_trait]
impl CreateGuard for KubeCreateGuard<'_> {
    async fn before_create(&self) -> Result<(), ReconcileError> {
        let api: Api<Workspace> = Api::namespaced(
            self.ctx.client.clone(),
            &self.obj.namespace().unwrap_or_default(),
        );
        // The resourceVersion makes this fail if the object changed since it was read: a stale
        // cache can then never lead to a create that another reconcile already did.
        let patch = serde_json::json!({
            "metadata": {
                "resourceVersion": self.obj.resource_version(),
                "annotations": { annotations::CREATE_PENDING: jiff::Timestamp::now().to_string() }
            }
        });
        api.patch(
            &self.obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|e| ReconcileError::kube("mark create pending", e))?;
        crate::core::failpoint::hit(crate::core::failpoint::AFTER_CREATE_PENDING);
        Ok(())
    }

    async fn created(&self, external_id: &str) -> Result<(), ReconcileError> {
        crate::core::failpoint::hit(crate::core::failpoint::BEFORE_SAVE_ID);
        let api: Api<Workspace> = Api::namespaced(
            self.ctx.client.clone(),
            &self.obj.namespace().unwrap_or_default(),
        );
        let status = serde_json::json!({
            "apiVersion": "bosun.dev/v1alpha1",
            "kind": "Workspace",
            "status": { "externalId": external_id }
        });
        api.patch_status(
            &self.obj.name_any(),
            &PatchParams::apply("bosun-create").force(),
            &Patch::Apply(&status),
        )
        .await
        .map_err(|e| ReconcileError::kube("save the new workspace id", e))?;
        let clear = serde_json::json!({ "metadata": { "annotations": { annotations::CREATE_PENDING: null } } });
        api.patch(
            &self.obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&clear),
        )
        .await
        .map_err(|e| ReconcileError::kube("clear the create-pending marker", e))?;
        Ok(())
    }

    async fn save_operation(&self, operation: &OperationStatus) -> Result<(), ReconcileError> {
        let api: Api<Workspace> = Api::namespaced(
            self.ctx.client.clone(),
            &self.obj.namespace().unwrap_or_default(),
        );
        // The whole status, under the loop's own field manager, so that the end of the
        // reconcile (which applies the whole status again) owns and can clear every field.
        let mut status = self.obj.status.clone().unwrap_or_default();
        status.operation = Some(operation.clone());
        let body = serde_json::json!({ "apiVersion": "bosun.dev/v1alpha1", "kind": "Workspace", "status": status });
        api.patch_status(
            &self.obj.name_any(),
            &PatchParams::apply(crate::core::reconciler::FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|e| ReconcileError::kube("save the operation before calling the platform", e))?;
        Ok(())
    }
}

fn request<'a>(
    obj: &'a Workspace,
    env: BTreeMap<String, String>,
    previous: &'a WorkspaceStatus,
    mode: Mode,
) -> WorkspaceRequest<'a> {
    WorkspaceRequest {
        key: format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any()),
        external_name: external_name(obj),
        spec: &obj.spec,
        env,
        previous,
        generation: obj.metadata.generation.unwrap_or_default(),
        observed_generation: previous.observed_generation,
        // The one place the Workspace's policy becomes whether writes are held.
        mode: mode.governed_by(obj.spec.management_policy),
        create_pending: obj.annotations().contains_key(annotations::CREATE_PENDING),
        poll_interval: annotations::steering(obj.annotations()).poll_interval,
    }
}

fn not_implemented(platform: PlatformType) -> ReconcileError {
    ReconcileError::user(
        Reason::NotImplemented,
        format!("this version of bosun cannot manage workspaces on {platform} yet"),
    )
}

/// The reconcile once the provider is connected, shared by the controller and `bosun plan`:
/// capabilities, Secret-backed variables, then the platform's mapping.
pub async fn drive(
    objects: &dyn Objects,
    view: &ProviderView,
    platform: &dyn Platform,
    obj: &Workspace,
    mode: Mode,
    guard: &dyn CreateGuard,
) -> Result<Report<WorkspaceStatus>, ReconcileError> {
    if let Some(message) = unsupported(&obj.spec, view.spec.type_, platform.capabilities()) {
        return Err(ReconcileError::user(Reason::UnsupportedByProvider, message));
    }
    // Every Secret-backed variable must resolve before anything is sent to the platform.
    let env = resolve_env(objects, &obj.namespace().unwrap_or_default(), &obj.spec).await?;
    let driver = platform
        .workspaces()
        .ok_or_else(|| not_implemented(view.spec.type_))?;
    let previous = obj.status.clone().unwrap_or_default();
    driver
        .reconcile(&request(obj, env, &previous, mode), guard)
        .await
}

/// Reconciles Workspaces.
pub struct WorkspaceReconciler;

#[async_trait]
impl Reconciler<Workspace> for WorkspaceReconciler {
    async fn reconcile(
        &self,
        obj: &Workspace,
        ctx: &Context,
        mode: Mode,
    ) -> Result<Report<WorkspaceStatus>, ReconcileError> {
        let namespace = obj.namespace().unwrap_or_default();
        let (view, platform) =
            references::ready_platform(ctx, &namespace, &obj.spec.provider_ref).await?;
        let guard = KubeCreateGuard { ctx, obj };
        drive(&ctx.client, &view, &*platform, obj, mode, &guard).await
    }

    async fn cleanup(&self, obj: &Workspace, ctx: &Context) -> Result<Cleanup, ReconcileError> {
        let previous = obj.status.clone().unwrap_or_default();
        let created = previous.external_id.clone();
        match (
            obj.spec.deletion_policy,
            obj.spec.management_policy,
            created,
        ) {
            (_, _, None) if !obj.annotations().contains_key(annotations::CREATE_PENDING) => {
                Ok(Cleanup::Done(Vec::new()))
            }
            // Orphan and Observe never need the platform, so they finish even without credentials.
            (DeletionPolicy::Orphan, _, id) | (_, ManagementPolicy::Observe, id) => {
                Ok(Cleanup::Done(vec![Note::normal(
                    Reason::Orphaned,
                    "Delete",
                    format!(
                        "left platform object {} in place (deletionPolicy/managementPolicy)",
                        id.unwrap_or_default()
                    ),
                )]))
            }
            (DeletionPolicy::Delete, ManagementPolicy::Manage, _) => {
                let namespace = obj.namespace().unwrap_or_default();
                let view =
                    references::get_provider(&ctx.client, &namespace, &obj.spec.provider_ref)
                        .await?;
                let platform = references::connect_for_cleanup(ctx, &view, &namespace).await?;
                let driver = platform
                    .workspaces()
                    .ok_or_else(|| not_implemented(view.spec.type_))?;
                let mut req = request(obj, BTreeMap::new(), &previous, Mode::SEND);
                if req.previous.external_id.is_none() && req.spec.external_id.is_none() {
                    // An interrupted create: find it by name before letting go.
                    req.create_pending = true;
                }
                driver.delete(&req).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ProviderRef, Source};

    fn spec() -> WorkspaceSpec {
        serde_json::from_value(serde_json::json!({
            "providerRef": {"name": "p"},
            "source": {"repository": "https://example.com/r.git", "branch": "main"}
        }))
        .unwrap()
    }

    #[test]
    fn defaults_are_supported_everywhere() {
        for p in [
            PlatformType::Codesphere,
            PlatformType::Devopness,
            PlatformType::Spheron,
            PlatformType::PuppetCodeManager,
        ] {
            assert_eq!(unsupported(&spec(), p, Capabilities::of(p)), None, "{p}");
        }
    }

    #[test]
    fn replicas_on_a_platform_without_them_names_the_field() {
        let mut s = spec();
        s.replicas = 3;
        let p = PlatformType::Devopness;
        let msg = unsupported(&s, p, Capabilities::of(p)).unwrap();
        assert!(msg.starts_with("spec.replicas"), "{msg}");
        assert_eq!(
            unsupported(
                &s,
                PlatformType::Codesphere,
                Capabilities::of(PlatformType::Codesphere)
            ),
            None
        );
    }

    #[test]
    fn blue_green_only_where_supported() {
        let mut s = spec();
        s.strategy = RolloutStrategy::BlueGreen;
        let p = PlatformType::PuppetCodeManager;
        assert!(unsupported(&s, p, Capabilities::of(p))
            .unwrap()
            .starts_with("spec.strategy"));
        assert_eq!(
            unsupported(
                &s,
                PlatformType::Codesphere,
                Capabilities::of(PlatformType::Codesphere)
            ),
            None
        );
    }

    #[test]
    fn a_block_for_another_platform_is_named() {
        let mut s = spec();
        s.codesphere = Some(Box::default());
        let p = PlatformType::Spheron;
        let msg = unsupported(&s, p, Capabilities::of(p)).unwrap();
        assert!(msg.starts_with("spec.codesphere"), "{msg}");
        assert_eq!(
            unsupported(
                &s,
                PlatformType::Codesphere,
                Capabilities::of(PlatformType::Codesphere)
            ),
            None
        );
    }

    #[test]
    fn spec_round_trips_with_defaults() {
        let s = spec();
        assert_eq!(s.replicas, 1);
        assert_eq!(
            s.provider_ref,
            ProviderRef {
                kind: Default::default(),
                name: "p".into()
            }
        );
        assert_eq!(
            s.source,
            Source {
                repository: "https://example.com/r.git".into(),
                branch: Some("main".into()),
                ..Default::default()
            }
        );
    }
}
