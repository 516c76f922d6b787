//! ServiceScale on Spheron: the replica count of a compute instance's service.

use super::*;
use crate::core::plan::{
    self, Change, Flow, ObjectId, Plan, PlanSeam, Planned, Step, StepAction, Target,
};
use crate::platform::spheron::client::InstanceDeployment;

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
pub enum ScaleView {
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

/// The request a ServiceScale step carries: the instance's full service list, with this
/// service's count changed.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaleOp {
    instance: String,
    organization: String,
    services: Vec<ComputeService>,
}

/// Plans a ServiceScale (pure): nothing while the instance deploys or when the count is
/// right, else one update of the instance's services.
fn plan_scale(
    request: &ScaleRequest<'_>,
    view: &ScaleView,
) -> Result<Planned<ScaleOp, ServiceScaleStatus>, ReconcileError> {
    let mut status = request.previous.clone();
    status.selector = Some(format!("bosun.dev/service={}", request.service));
    let (instance, organization, services) = match view {
        ScaleView::Deploying(msg) => {
            let report = Report::progressing(
                status,
                Vec::new(),
                Reason::Deploying,
                msg.clone(),
                DEPLOY_POLL,
            );
            return Ok(Planned::nothing(report));
        }
        ScaleView::Running {
            instance,
            organization,
            services,
        } => (instance, organization, services),
    };
    let service = request.service;
    let (observed, services) = match plan_service_scale(services, service, request.replicas)? {
        ScalePlan::InSync(n) => {
            status.replicas = Some(i32::try_from(n).unwrap_or(i32::MAX));
            let readiness =
                Readiness::ready(Reason::Available, format!("{service} runs {n} replicas"));
            return Ok(Planned::nothing(Report::settled(
                status,
                Vec::new(),
                readiness,
                request.mode.observing(),
            )));
        }
        ScalePlan::Scale { observed, services } => (observed, services),
    };
    status.replicas = Some(i32::try_from(observed).unwrap_or(i32::MAX));
    let readiness = Readiness::not_ready(
        Reason::ReplicasDiffer,
        format!(
            "{service} runs {observed} replicas, the spec says {}",
            request.replicas
        ),
    );
    let mut plan = Plan::default();
    plan.push(Step {
        action: StepAction::Update,
        target: Target {
            kind: "service",
            name: service.to_string(),
            id: ObjectId::Known(instance.clone()),
        },
        changes: vec![Change::new(
            "spec.replicas",
            Some(observed.to_string()),
            Some(request.replicas.to_string()),
        )],
        drift: is_drift(
            &request.previous.conditions,
            request.generation,
            request.observed_generation,
        ),
        summary: format!(
            "scale {service} of compute instance {instance} from {observed} to {} replicas",
            request.replicas
        ),
        deadline: None,
        record: None,
        op: ScaleOp {
            instance: instance.clone(),
            organization: organization.clone(),
            services,
        },
    });
    Ok(Planned {
        plan,
        report: Report::settled(status, Vec::new(), readiness, request.mode.observing()),
        adopt: None,
    })
}

#[async_trait]
impl<'r> PlanSeam<ScaleRequest<'r>, ServiceScaleStatus> for SpheronClient {
    type Answer = InstanceDeployment;
    type Op = ScaleOp;
    type Observation = ScaleView;

    async fn observe(&self, request: &ScaleRequest<'r>) -> Result<ScaleView, ReconcileError> {
        let view = self.scale_view(request.workspace_id).await?;
        if matches!(&view, ScaleView::Running { services, .. } if !services.iter().any(|s| s.name == request.service))
        {
            // A service added moments ago may not be in the shared listing yet: look once
            // more in a fresh one before saying it is not there.
            if let Ok(org) = self.organization_for(None).await {
                self.forget_instances(&org).await;
            }
            return self.scale_view(request.workspace_id).await;
        }
        Ok(view)
    }

    fn plan(
        &self,
        request: &ScaleRequest<'r>,
        observed: &ScaleView,
    ) -> Result<Planned<ScaleOp, ServiceScaleStatus>, ReconcileError> {
        plan_scale(request, observed)
    }

    async fn execute(
        &self,
        step: &Step<ScaleOp>,
        _: &[InstanceDeployment],
    ) -> Result<InstanceDeployment, ReconcileError> {
        let ScaleOp {
            instance,
            organization,
            services,
        } = &step.op;
        let updated = self
            .update_compute_instance(
                instance,
                &UpdateComputeInstance {
                    services: services.clone(),
                    organization_id: organization.clone(),
                    unique_topic_id: topic_id(),
                },
            )
            .await?;
        self.forget_instances(organization).await;
        self.shared.unconfirm(instance);
        Ok(updated)
    }

    fn answered_id(&self, answer: &InstanceDeployment) -> Option<String> {
        Some(answer.compute_deployment_id.clone())
    }

    fn answered(
        &self,
        report: &mut Report<ServiceScaleStatus>,
        step: &Step<ScaleOp>,
        answer: &InstanceDeployment,
    ) -> Flow {
        if !step.drift {
            let (from, to) = step.first_change();
            let message = format!(
                "scaling {} of compute instance {} from {from} to {to} replicas",
                step.target.name, step.op.instance
            );
            report
                .notes
                .push(Note::normal(Reason::Scaled, "Scale", message));
        }
        let msg = format!(
            "update {} of compute instance {} started",
            answer.compute_deployment_id, step.op.instance
        );
        report.readiness = Readiness::not_ready(Reason::Scaling, msg.clone());
        report.sync = SyncState::Progressing {
            reason: Reason::Scaling,
            message: msg,
        };
        report.requeue_after = Some(DEPLOY_POLL);
        Flow::Continue
    }
}

#[async_trait]
impl ServiceScaleDriver for SpheronClient {
    async fn reconcile(
        &self,
        request: &ScaleRequest<'_>,
    ) -> Result<Report<ServiceScaleStatus>, ReconcileError> {
        plan::reconcile(self, request, request.mode, &plan::CreatesNothing).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::plan::table;
    use crate::core::reconciler::Mode;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
    use serde_json::json;

    fn running(counts: &[(&str, u32)]) -> ScaleView {
        let services = counts
            .iter()
            .map(|(name, n)| {
                serde_json::from_value(json!({"name": name, "image": "nginx", "tag": "1", "serviceCount": n,
                    "ports": [], "env": [], "agreedMachineImage": {"machineType": "Ventus Nano 1"}}))
                .unwrap()
            })
            .collect();
        ScaleView::Running {
            instance: "i-1".into(),
            organization: "org".into(),
            services,
        }
    }

    fn request<'a>(previous: &'a ServiceScaleStatus, generation: i64) -> ScaleRequest<'a> {
        ScaleRequest {
            key: "team/worker".into(),
            service: "worker",
            replicas: 4,
            workspace_id: "i-1",
            previous,
            generation,
            observed_generation: Some(1),
            mode: Mode::SEND,
        }
    }

    /// (case, previous status, generation, what the instance shows, steps, readiness reason).
    type Row<'a> = (
        &'a str,
        &'a ServiceScaleStatus,
        i64,
        ScaleView,
        Vec<table::Row<'a>>,
        Reason,
    );

    #[test]
    fn plan_table() {
        use StepAction::Update;
        let fresh = ServiceScaleStatus::default();
        let ready = ServiceScaleStatus {
            conditions: vec![Condition {
                type_: crate::api::condition_types::READY.into(),
                status: "True".into(),
                observed_generation: Some(1),
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    jiff::Timestamp::UNIX_EPOCH,
                ),
                message: String::new(),
                reason: "Available".into(),
            }],
            ..Default::default()
        };
        let deploying =
            ScaleView::Deploying("deployment d-2 of compute instance i-1 is pending".into());
        let rows: Vec<Row<'_>> = vec![
            (
                "in sync",
                &fresh,
                1,
                running(&[("main", 1), ("worker", 4)]),
                vec![],
                Reason::Available,
            ),
            (
                "spec change: one update of the instance's services",
                &fresh,
                2,
                running(&[("main", 1), ("worker", 1)]),
                vec![(Update, "service", "i-1", false, vec!["spec.replicas"])],
                Reason::ReplicasDiffer,
            ),
            (
                "drift: the count changed at the platform while Ready",
                &ready,
                1,
                running(&[("main", 1), ("worker", 2)]),
                vec![(Update, "service", "i-1", true, vec!["spec.replicas"])],
                Reason::ReplicasDiffer,
            ),
            (
                "a deployment in flight: wait for it",
                &fresh,
                1,
                deploying,
                vec![],
                Reason::Deploying,
            ),
        ];
        for (case, previous, generation, view, steps, reason) in &rows {
            let planned = plan_scale(&request(previous, *generation), view).unwrap();
            table::assert_steps(&planned.plan, steps, case);
            assert_eq!(planned.report.readiness.reason, *reason, "{case}");
        }
        let update = plan_scale(&request(&fresh, 2), &rows[1].3).unwrap();
        let step = &update.plan.steps[0];
        assert_eq!(
            step.changes,
            vec![Change::new(
                "spec.replicas",
                Some("1".into()),
                Some("4".into())
            )]
        );
        assert_eq!(
            step.op
                .services
                .iter()
                .map(|s| (s.name.as_str(), s.service_count))
                .collect::<Vec<_>>(),
            vec![("main", 1), ("worker", 4)],
            "the full list, only this service's count changed"
        );
    }
}
