//! `ServiceScale`: one service's replica count at the platform.

use crate::api::{ServiceScale, ServiceScaleStatus, Workspace};
use crate::core::context::Context;
use crate::core::drivers::ScaleRequest;
use crate::core::error::ReconcileError;
use crate::core::reconciler::{Cleanup, Mode, Reconciler, Report};
use crate::core::references::{self, Objects, ProviderView};
use crate::core::seam::Platform;
use async_trait::async_trait;
use kube::ResourceExt;

use crate::core::reason::Reason;

/// Reconciles ServiceScales.
pub struct ServiceScaleReconciler;

/// Reads the Workspace a same-namespace reference names.
pub async fn get_workspace(
    objects: &dyn Objects,
    namespace: &str,
    name: &str,
) -> Result<Workspace, ReconcileError> {
    match objects.workspace(namespace, name).await {
        Ok(Some(ws)) => Ok(ws),
        Ok(None) => Err(ReconcileError::waiting(
            Reason::WorkspaceNotFound,
            format!("Workspace {namespace}/{name} not found: create it or fix the reference"),
        )),
        Err(e) => Err(ReconcileError::kube(
            format!("get Workspace {namespace}/{name}"),
            e,
        )),
    }
}

#[async_trait]
impl Reconciler<ServiceScale> for ServiceScaleReconciler {
    async fn reconcile(
        &self,
        obj: &ServiceScale,
        ctx: &Context,
        mode: Mode,
    ) -> Result<Report<ServiceScaleStatus>, ReconcileError> {
        let namespace = obj.namespace().unwrap_or_default();
        let workspace =
            get_workspace(&ctx.client, &namespace, &obj.spec.workspace_ref.name).await?;
        let (view, platform) =
            references::ready_platform(ctx, &namespace, &workspace.spec.provider_ref).await?;
        drive(&view, &*platform, obj, &workspace, mode).await
    }

    async fn cleanup(
        &self,
        _obj: &ServiceScale,
        _ctx: &Context,
    ) -> Result<Cleanup, ReconcileError> {
        // A service's scale is not an object of its own at the platform: nothing to delete.
        Ok(Cleanup::Done(Vec::new()))
    }
}

/// The reconcile once the Workspace is read and its provider connected, shared by the
/// controller and `bosun plan`.
pub async fn drive(
    view: &ProviderView,
    platform: &dyn Platform,
    obj: &ServiceScale,
    workspace: &Workspace,
    mode: Mode,
) -> Result<Report<ServiceScaleStatus>, ReconcileError> {
    let namespace = obj.namespace().unwrap_or_default();
    if !platform.capabilities().service_scale {
        return Err(ReconcileError::user(
            Reason::UnsupportedByProvider,
            format!(
                "spec.service: {} has no per-service replica count; delete this ServiceScale",
                view.spec.type_
            ),
        ));
    }
    let Some(workspace_id) = workspace
        .status
        .as_ref()
        .and_then(|s| s.external_id.clone())
    else {
        return Err(ReconcileError::waiting(
            Reason::WorkspaceNotCreated,
            format!(
                "Workspace {namespace}/{} has no platform object yet",
                workspace.name_any()
            ),
        ));
    };
    let driver = platform.service_scales().ok_or_else(|| {
        ReconcileError::user(
            Reason::NotImplemented,
            format!(
                "this version of bosun cannot scale services on {} yet",
                view.spec.type_
            ),
        )
    })?;
    let previous = obj.status.clone().unwrap_or_default();
    let request = ScaleRequest {
        key: format!("{namespace}/{}", obj.name_any()),
        service: &obj.spec.service,
        replicas: obj.spec.replicas,
        workspace_id: &workspace_id,
        previous: &previous,
        generation: obj.metadata.generation.unwrap_or_default(),
        observed_generation: previous.observed_generation,
        // A ServiceScale follows its Workspace's policy.
        mode: mode.governed_by(workspace.spec.management_policy),
    };
    driver.reconcile(&request).await
}
