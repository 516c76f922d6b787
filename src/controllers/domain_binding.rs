//! `DomainBinding`: a domain at the platform and its routes to Workspaces.

use super::service_scale::get_workspace;
use super::workspace::UNSUPPORTED;
use crate::api::{DomainBinding, DomainBindingStatus};
use crate::core::context::Context;
use crate::core::error::ReconcileError;
use crate::core::reconciler::{Cleanup, Mode, Reconciler, Report};
use crate::core::references;
use async_trait::async_trait;
use kube::ResourceExt;

/// Reconciles DomainBindings.
pub struct DomainBindingReconciler;

#[async_trait]
impl Reconciler<DomainBinding> for DomainBindingReconciler {
    async fn reconcile(
        &self,
        obj: &DomainBinding,
        ctx: &Context,
        _mode: Mode,
    ) -> Result<Report<DomainBindingStatus>, ReconcileError> {
        let namespace = obj.namespace().unwrap_or_default();
        let (view, platform) =
            references::ready_platform(ctx, &namespace, &obj.spec.provider_ref).await?;
        if !platform.capabilities().domain_binding {
            return Err(ReconcileError::user(
                UNSUPPORTED,
                format!(
                    "spec.domain: {} does not serve custom domains; delete this DomainBinding",
                    view.spec.type_
                ),
            ));
        }
        for route in &obj.spec.routes {
            for ws in &route.workspaces {
                get_workspace(ctx, &namespace, &ws.name).await?;
            }
        }
        Err(ReconcileError::user(
            "NotImplemented",
            format!(
                "this version of bosun cannot bind domains on {} yet",
                view.spec.type_
            ),
        ))
    }

    async fn cleanup(
        &self,
        _obj: &DomainBinding,
        _ctx: &Context,
    ) -> Result<Cleanup, ReconcileError> {
        // Nothing is created at the platform by this version.
        Ok(Cleanup::Done(Vec::new()))
    }
}
