//! `DomainBinding`: a domain at the platform and its routes to Workspaces.

use super::service_scale::get_workspace;
use crate::api::{DeletionPolicy, DomainBinding, DomainBindingStatus, ManagementPolicy};
use crate::core::context::Context;
use crate::core::drivers::DomainRequest;
use crate::core::error::ReconcileError;
use crate::core::reason::Reason;
use crate::core::reconciler::{Cleanup, Mode, Note, Reconciler, Report};
use crate::core::references::{self, Objects, ProviderView};
use crate::core::seam::Platform;
use async_trait::async_trait;
use kube::ResourceExt;
use std::collections::BTreeMap;

/// Reconciles DomainBindings.
pub struct DomainBindingReconciler;

/// Resolves every route's Workspaces to their platform ids.
async fn resolve_routes(
    objects: &dyn Objects,
    namespace: &str,
    obj: &DomainBinding,
) -> Result<BTreeMap<String, Vec<String>>, ReconcileError> {
    let mut routes = BTreeMap::new();
    for route in &obj.spec.routes {
        let mut ids = Vec::new();
        for reference in &route.workspaces {
            let ws = get_workspace(objects, namespace, &reference.name).await?;
            if ws.spec.provider_ref != obj.spec.provider_ref {
                return Err(ReconcileError::user(
                    Reason::WorkspaceOnAnotherProvider,
                    format!(
                        "route {}: Workspace {namespace}/{} runs on provider {}, not {}",
                        route.path,
                        reference.name,
                        ws.spec.provider_ref.name,
                        obj.spec.provider_ref.name
                    ),
                ));
            }
            let id = ws
                .status
                .as_ref()
                .and_then(|s| s.external_id.clone())
                .ok_or_else(|| {
                    ReconcileError::waiting(
                        Reason::WorkspaceNotCreated,
                        format!(
                            "Workspace {namespace}/{} has no platform object yet",
                            reference.name
                        ),
                    )
                })?;
            ids.push(id);
        }
        routes.insert(route.path.clone(), ids);
    }
    Ok(routes)
}

fn request<'a>(
    obj: &'a DomainBinding,
    routes: BTreeMap<String, Vec<String>>,
    previous: &'a DomainBindingStatus,
    mode: Mode,
) -> DomainRequest<'a> {
    DomainRequest {
        key: format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any()),
        domain: &obj.spec.domain,
        routes,
        tls: obj.spec.tls,
        previous,
        generation: obj.metadata.generation.unwrap_or_default(),
        observed_generation: previous.observed_generation,
        // The one place the binding's policy becomes whether writes are held.
        mode: mode.governed_by(obj.spec.management_policy),
    }
}

fn not_implemented(platform: crate::api::PlatformType) -> ReconcileError {
    ReconcileError::user(
        Reason::NotImplemented,
        format!("this version of bosun cannot bind domains on {platform} yet"),
    )
}

/// The reconcile once the provider is connected, shared by the controller and `bosun plan`:
/// capabilities, the routes' Workspaces, then the platform's mapping.
pub async fn drive(
    objects: &dyn Objects,
    view: &ProviderView,
    platform: &dyn Platform,
    obj: &DomainBinding,
    mode: Mode,
) -> Result<Report<DomainBindingStatus>, ReconcileError> {
    if !platform.capabilities().domain_binding {
        return Err(ReconcileError::user(
            Reason::UnsupportedByProvider,
            format!(
                "spec.domain: {} does not serve custom domains; delete this DomainBinding",
                view.spec.type_
            ),
        ));
    }
    let routes = resolve_routes(objects, &obj.namespace().unwrap_or_default(), obj).await?;
    let driver = platform
        .domains()
        .ok_or_else(|| not_implemented(view.spec.type_))?;
    let previous = obj.status.clone().unwrap_or_default();
    driver
        .reconcile(&request(obj, routes, &previous, mode))
        .await
}

#[async_trait]
impl Reconciler<DomainBinding> for DomainBindingReconciler {
    async fn reconcile(
        &self,
        obj: &DomainBinding,
        ctx: &Context,
        mode: Mode,
    ) -> Result<Report<DomainBindingStatus>, ReconcileError> {
        let namespace = obj.namespace().unwrap_or_default();
        let (view, platform) =
            references::ready_platform(ctx, &namespace, &obj.spec.provider_ref).await?;
        drive(&ctx.client, &view, &*platform, obj, mode).await
    }

    async fn cleanup(&self, obj: &DomainBinding, ctx: &Context) -> Result<Cleanup, ReconcileError> {
        let previous = obj.status.clone().unwrap_or_default();
        if previous.external_id.is_none() {
            return Ok(Cleanup::Done(Vec::new()));
        }
        if obj.spec.deletion_policy == DeletionPolicy::Orphan
            || obj.spec.management_policy == ManagementPolicy::Observe
        {
            return Ok(Cleanup::Done(vec![Note::normal(
                Reason::Orphaned,
                "Delete",
                format!("left {} and its routes in place", obj.spec.domain),
            )]));
        }
        let namespace = obj.namespace().unwrap_or_default();
        let view =
            references::get_provider(&ctx.client, &namespace, &obj.spec.provider_ref).await?;
        let platform = references::connect_for_cleanup(ctx, &view, &namespace).await?;
        let driver = platform
            .domains()
            .ok_or_else(|| not_implemented(view.spec.type_))?;
        driver
            .delete(&request(obj, BTreeMap::new(), &previous, Mode::SEND))
            .await
    }
}
