//! How each kind plugs into the shared reconcile loop.

use crate::api::{
    ClusterProvider, DomainBinding, DomainBindingStatus, Provider, ProviderStatus, ServiceScale,
    ServiceScaleStatus, Workspace, WorkspaceStatus,
};
use crate::core::reconciler::Managed;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{Api, Client, ResourceExt};

/// Implements `Managed` for a kind whose status has the standard fields.
macro_rules! managed {
    ($kind:ty, $status:ty, finalizes = $fin:expr, api = $api:expr) => {
        impl Managed for $kind {
            type Status = $status;
            const FINALIZES: bool = $fin;

            fn api(client: Client, obj: &Self) -> Api<Self> {
                $api(client, obj)
            }
            fn status(&self) -> Option<&Self::Status> {
                self.status.as_ref()
            }
            fn conditions(status: &Self::Status) -> &[Condition] {
                &status.conditions
            }
            fn last_handled(status: &Self::Status) -> Option<&str> {
                status.last_handled_reconcile_at.as_deref()
            }
            fn stamp(
                status: &mut Self::Status,
                generation: Option<i64>,
                conditions: Vec<Condition>,
                last: Option<String>,
            ) {
                status.observed_generation = generation;
                status.conditions = conditions;
                status.last_handled_reconcile_at = last;
            }
        }
    };
}

// A Provider owns nothing at the platform, but the objects that use it need it to clean up
// there: it is removed after them (`kubectl delete -f` of a directory deletes it first). If they
// are stuck, it says which ones (`ProviderInUse`).
managed!(Provider, ProviderStatus, finalizes = true, api = namespaced);
managed!(
    ClusterProvider,
    ProviderStatus,
    finalizes = false,
    api = cluster
);
managed!(
    Workspace,
    WorkspaceStatus,
    finalizes = true,
    api = namespaced
);
managed!(
    ServiceScale,
    ServiceScaleStatus,
    finalizes = true,
    api = namespaced
);
managed!(
    DomainBinding,
    DomainBindingStatus,
    finalizes = true,
    api = namespaced
);

fn namespaced<K>(client: Client, obj: &K) -> Api<K>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    Api::namespaced(client, &obj.namespace().unwrap_or_default())
}

fn cluster<K: kube::Resource<DynamicType = ()>>(client: Client, _obj: &K) -> Api<K> {
    Api::all(client)
}
