//! `Workspace`: references and capabilities are checked here, provider-neutrally; the
//! platform's mapping does the rest.

use crate::api::{
    DeletionPolicy, ManagementPolicy, PlatformType, RolloutStrategy, Workspace, WorkspaceSpec,
    WorkspaceStatus,
};
use crate::core::context::Context;
use crate::core::error::ReconcileError;
use crate::core::reconciler::{Cleanup, Mode, Note, Reconciler, Report};
use crate::core::references;
use crate::platform::Capabilities;
use async_trait::async_trait;
use kube::ResourceExt;

/// Reason for a spec that asks a platform for something it cannot do.
pub const UNSUPPORTED: &str = "UnsupportedByProvider";

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

/// Reconciles Workspaces.
pub struct WorkspaceReconciler;

#[async_trait]
impl Reconciler<Workspace> for WorkspaceReconciler {
    async fn reconcile(
        &self,
        obj: &Workspace,
        ctx: &Context,
        _mode: Mode,
    ) -> Result<Report<WorkspaceStatus>, ReconcileError> {
        let namespace = obj.namespace().unwrap_or_default();
        let (view, platform) =
            references::ready_platform(ctx, &namespace, &obj.spec.provider_ref).await?;
        if let Some(message) = unsupported(&obj.spec, view.spec.type_, platform.capabilities()) {
            return Err(ReconcileError::user(UNSUPPORTED, message));
        }
        // Every Secret-backed variable must resolve before anything is sent to the platform.
        for var in &obj.spec.env {
            if let Some(from) = &var.value_from {
                references::secret_value(ctx, &namespace, &from.secret_key_ref).await?;
            }
        }
        Err(ReconcileError::user(
            "NotImplemented",
            format!(
                "this version of bosun cannot manage workspaces on {} yet",
                view.spec.type_
            ),
        ))
    }

    async fn cleanup(&self, obj: &Workspace, _ctx: &Context) -> Result<Cleanup, ReconcileError> {
        let created = obj.status.as_ref().and_then(|s| s.external_id.as_ref());
        match (obj.spec.deletion_policy, obj.spec.management_policy, created) {
            (_, _, None) => Ok(Cleanup::Done(Vec::new())),
            (DeletionPolicy::Orphan, _, Some(id)) | (_, ManagementPolicy::Observe, Some(id)) => Ok(Cleanup::Done(vec![
                Note::normal("Orphaned", "Delete", format!("left platform object {id} in place (deletionPolicy/managementPolicy)")),
            ])),
            (DeletionPolicy::Delete, ManagementPolicy::Manage, Some(id)) => Err(ReconcileError::user(
                "NotImplemented",
                format!("this version of bosun cannot delete platform object {id}; set deletionPolicy: Orphan to let go"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CodesphereWorkspace, ProviderRef, Source};

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
        s.codesphere = Some(CodesphereWorkspace::default());
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
