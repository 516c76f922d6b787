//! `Provider` and `ClusterProvider`: Ready only when an authenticated call to the platform
//! proved the credentials.

use crate::api::{
    ClusterProvider, DomainBinding, Provider, ProviderKind, ProviderRef, ProviderStatus, Workspace,
};
use crate::core::conditions::{Readiness, SyncState};
use crate::core::context::Context;
use crate::core::error::ReconcileError;
use crate::core::reason::Reason;
use crate::core::reconciler::{Cleanup, Mode, Note, Reconciler, Report};
use crate::core::references::{self, ProviderView};
use async_trait::async_trait;
use kube::api::{Api, ListParams};
use kube::ResourceExt;

/// Verifies a provider's credentials (both kinds share it).
pub struct ProviderReconciler;

impl ProviderReconciler {
    async fn verify(
        &self,
        view: &ProviderView,
        previous: Option<&ProviderStatus>,
        ctx: &Context,
    ) -> Result<Report<ProviderStatus>, ReconcileError> {
        let platform = references::connect(ctx, view).await?;
        let identity = platform.verify().await.map_err(|e| match e.kind {
            // Say which Secret holds the refused credential, never the credential.
            crate::core::seam::ErrorKind::Unauthorized
            | crate::core::seam::ErrorKind::Forbidden => {
                let r = &view.spec.credentials.secret_ref;
                ReconcileError::user(
                    e.reason(),
                    format!(
                        "{} refused the credential in Secret {}/{} key {:?}: {e}",
                        view.spec.type_,
                        view.secret_namespace(r).unwrap_or_default(),
                        r.name,
                        r.key
                    ),
                )
            }
            _ => ReconcileError::Platform(e),
        })?;
        let mut notes = Vec::new();
        let previous_identity = previous.and_then(|s| s.identity.clone());
        if previous_identity.as_deref() != Some(identity.as_str()) {
            notes.push(Note::normal(
                Reason::CredentialsVerified,
                "Verify",
                format!("{} accepted the credential: {identity}", view.spec.type_),
            ));
        }
        let status = ProviderStatus {
            identity: Some(identity.clone()),
            ..previous.cloned().unwrap_or_default()
        };
        Ok(Report {
            status,
            readiness: Readiness::ready(
                Reason::CredentialsVerified,
                format!("authenticated as {identity}"),
            ),
            sync: SyncState::Synced,
            requeue_after: None,
            notes,
            plan: Default::default(),
        })
    }
}

#[async_trait]
impl Reconciler<Provider> for ProviderReconciler {
    async fn reconcile(
        &self,
        obj: &Provider,
        ctx: &Context,
        _mode: Mode,
    ) -> Result<Report<ProviderStatus>, ReconcileError> {
        self.verify(&ProviderView::from_provider(obj), obj.status.as_ref(), ctx)
            .await
    }

    /// A Provider goes only after the objects that use it: they need it to remove what they
    /// made at the platform (`kubectl delete -f` of a whole directory deletes it first).
    async fn cleanup(&self, obj: &Provider, ctx: &Context) -> Result<Cleanup, ReconcileError> {
        let namespace = obj.namespace().unwrap_or_default();
        let name = obj.name_any();
        let uses = |r: &ProviderRef| r.kind == ProviderKind::Provider && r.name == name;
        let list = ListParams::default();
        let workspaces = Api::<Workspace>::namespaced(ctx.client.clone(), &namespace)
            .list(&list)
            .await
            .map_err(|e| ReconcileError::kube("list Workspaces", e))?;
        let bindings = Api::<DomainBinding>::namespaced(ctx.client.clone(), &namespace)
            .list(&list)
            .await
            .map_err(|e| ReconcileError::kube("list DomainBindings", e))?;
        let users: Vec<String> = workspaces
            .items
            .iter()
            .filter(|w| uses(&w.spec.provider_ref))
            .map(|w| format!("Workspace {}", w.name_any()))
            .chain(
                bindings
                    .items
                    .iter()
                    .filter(|b| uses(&b.spec.provider_ref))
                    .map(|b| format!("DomainBinding {}", b.name_any())),
            )
            .collect();
        if users.is_empty() {
            return Ok(Cleanup::Done(Vec::new()));
        }
        Err(ReconcileError::waiting(
            Reason::ProviderInUse,
            format!(
                "deleted once nothing uses it; still used by {}",
                users.join(", ")
            ),
        ))
    }
}

#[async_trait]
impl Reconciler<ClusterProvider> for ProviderReconciler {
    async fn reconcile(
        &self,
        obj: &ClusterProvider,
        ctx: &Context,
        _mode: Mode,
    ) -> Result<Report<ProviderStatus>, ReconcileError> {
        self.verify(
            &ProviderView::from_cluster_provider(obj),
            obj.status.as_ref(),
            ctx,
        )
        .await
    }

    async fn cleanup(
        &self,
        _obj: &ClusterProvider,
        _ctx: &Context,
    ) -> Result<Cleanup, ReconcileError> {
        Ok(Cleanup::Done(Vec::new()))
    }
}
