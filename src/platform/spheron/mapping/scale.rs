//! ServiceScale on Spheron: the replica count of a compute instance's service.

use super::*;

// ---------------------------------------------------------------------------------------------
// ServiceScale.

impl SpheronClient {
    /// The compute instance a Workspace's id names, with its organization: from the shared
    /// listing of the default organization when it is there, else read by id (a Workspace may
    /// name another organization). `None` when the id is no compute instance.
    async fn instance_by_id(
        &self,
        id: &str,
    ) -> Result<Option<(ComputeInstance, String)>, ReconcileError> {
        if let Ok(org) = self.organization_for(None).await {
            if let Some(i) = self.instances_of(&org).await?.iter().find(|i| i.id == id) {
                return Ok(Some((i.clone(), org)));
            }
        }
        let Some(instance) = self.get_compute_instance(id).await? else {
            return Ok(None);
        };
        let project = match instance.compute_project.as_deref() {
            Some(p) => self.get_compute_project(p).await?,
            None => None,
        };
        let org = project.and_then(|p| p.organization).ok_or_else(|| {
            PlatformError::new(
                ErrorKind::Protocol,
                format!("spheron: compute instance {id} names no organization"),
            )
        })?;
        Ok(Some((instance, org)))
    }
}

/// What a ServiceScale finds at the instance.
enum ScaleView {
    /// A deployment of the instance is in flight (the message says which).
    Deploying(String),
    /// The services of the running deployment.
    Running {
        instance: String,
        organization: String,
        services: Vec<DeployedService>,
    },
}

impl SpheronClient {
    /// Observes the services a Workspace's compute instance runs.
    async fn scale_view(&self, workspace_id: &str) -> Result<ScaleView, ReconcileError> {
        let (instance, organization) = self.instance_by_id(workspace_id).await?.ok_or_else(|| {
            ReconcileError::user(
                Reason::NotAComputeInstance,
                format!(
                    "the Workspace's Spheron object {workspace_id} is not a compute instance: a ServiceScale needs a Workspace with spec.spheron.compute"
                ),
            )
        })?;
        if instance.state == InstanceState::Closed {
            return Err(ReconcileError::waiting(
                Reason::WorkspaceNotRunning,
                format!("compute instance {} is closed", instance.id),
            ));
        }
        let newest = match instance.deployments.last() {
            Some(id) => self.compute_deployment(id).await?,
            None => None,
        };
        if let Some(n) = newest.as_ref().filter(|n| !n.status.is_terminal()) {
            return Ok(ScaleView::Deploying(format!(
                "deployment {} of compute instance {} is {}",
                n.id, instance.id, n.status
            )));
        }
        let running = match (instance.active_deployment.as_deref(), newest.as_ref()) {
            (Some(a), Some(n)) if a == n.id => Some(n.clone()),
            (Some(a), _) => self.compute_deployment(a).await?,
            (None, n) => n.cloned(),
        }
        .filter(|d| d.status.is_success() || d.status == ComputeDeploymentStatus::Deprecated)
        .ok_or_else(|| {
            ReconcileError::waiting(
                Reason::WorkspaceNotRunning,
                format!("compute instance {} runs no deployment yet", instance.id),
            )
        })?;
        Ok(ScaleView::Running {
            instance: instance.id,
            organization,
            services: running.services,
        })
    }
}

#[async_trait]
impl ServiceScaleDriver for SpheronClient {
    async fn reconcile(
        &self,
        request: &ScaleRequest<'_>,
    ) -> Result<Report<ServiceScaleStatus>, ReconcileError> {
        let mut status = request.previous.clone();
        status.selector = Some(format!("bosun.dev/service={}", request.service));
        let mut view = self.scale_view(request.workspace_id).await?;
        if matches!(&view, ScaleView::Running { services, .. } if !services.iter().any(|s| s.name == request.service))
        {
            // A service added moments ago may not be in the shared listing yet: look once
            // more in a fresh one before saying it is not there.
            if let Ok(org) = self.organization_for(None).await {
                self.forget_instances(&org).await;
            }
            view = self.scale_view(request.workspace_id).await?;
        }
        let (instance, org, services) = match view {
            ScaleView::Deploying(msg) => {
                return Ok(Report {
                    status,
                    readiness: Readiness::not_ready(Reason::Deploying, msg.clone()),
                    sync: SyncState::Progressing {
                        reason: Reason::Deploying,
                        message: msg,
                    },
                    requeue_after: Some(DEPLOY_POLL),
                    notes: Vec::new(),
                    plan: Default::default(),
                });
            }
            ScaleView::Running {
                instance,
                organization,
                services,
            } => (instance, organization, services),
        };
        match plan_service_scale(&services, request.service, request.replicas)? {
            ScalePlan::InSync(n) => {
                status.replicas = Some(i32::try_from(n).unwrap_or(i32::MAX));
                Ok(Report {
                    status,
                    readiness: Readiness::ready(
                        Reason::Available,
                        format!("{} runs {n} replicas", request.service),
                    ),
                    sync: SyncState::Synced,
                    requeue_after: None,
                    notes: Vec::new(),
                    plan: Default::default(),
                })
            }
            ScalePlan::Scale { observed, .. } if !request.mode.act() => {
                status.replicas = Some(i32::try_from(observed).unwrap_or(i32::MAX));
                Ok(Report {
                    status,
                    readiness: Readiness::not_ready(
                        Reason::ReplicasDiffer,
                        format!(
                            "{} runs {observed} replicas, the spec says {}",
                            request.service, request.replicas
                        ),
                    ),
                    sync: SyncState::Synced,
                    requeue_after: None,
                    notes: Vec::new(),
                    plan: Default::default(),
                })
            }
            ScalePlan::Scale { observed, services } => {
                status.replicas = Some(i32::try_from(observed).unwrap_or(i32::MAX));
                let updated = self
                    .update_compute_instance(
                        &instance,
                        &UpdateComputeInstance {
                            services,
                            organization_id: org.clone(),
                            unique_topic_id: topic_id(),
                        },
                    )
                    .await?;
                self.forget_instances(&org).await;
                self.shared.unconfirm(&instance);
                let drift = is_drift(
                    &request.previous.conditions,
                    request.generation,
                    request.observed_generation,
                );
                let note = if drift {
                    Note::drift("spec.replicas", observed, request.replicas)
                } else {
                    Note::normal(
                        Reason::Scaled,
                        "Scale",
                        format!(
                            "scaling {} of compute instance {instance} from {observed} to {} replicas",
                            request.service, request.replicas
                        ),
                    )
                };
                let msg = format!(
                    "update {} of compute instance {instance} started",
                    updated.compute_deployment_id
                );
                Ok(Report {
                    status,
                    readiness: Readiness::not_ready(Reason::Scaling, msg.clone()),
                    sync: SyncState::Progressing {
                        reason: Reason::Scaling,
                        message: msg,
                    },
                    requeue_after: Some(DEPLOY_POLL),
                    notes: vec![note],
                    plan: Default::default(),
                })
            }
        }
    }
}
