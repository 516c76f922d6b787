//! ServiceScale on Codesphere: the replica count of one landscape service, read from the run
//! stage and set with `PATCH /workspaces/{id}/landscape/scale`.

use super::client::{Codesphere, Stage};
use super::mapping::STAGE_POLL;
use crate::api::ServiceScaleStatus;
use crate::core::conditions::{Readiness, SyncState};
use crate::core::drivers::{ScaleRequest, ServiceScaleDriver};
use crate::core::error::ReconcileError;
use crate::core::plan::{
    self, Change, CreatesNothing, Flow, ObjectId, Plan, PlanSeam, Planned, Step, StepAction, Target,
};
use crate::core::reason::Reason;
use crate::core::reconciler::{Note, Report};
use crate::core::seam::ErrorKind;
use async_trait::async_trait;
use std::collections::BTreeMap;

/// What the run stage shows of the service: its workspace, and how many replicas run it.
pub struct Running {
    workspace: i64,
    replicas: i32,
}

/// The request a ServiceScale step carries.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaleOp {
    workspace: i64,
    counts: BTreeMap<String, i32>,
}

fn workspace_id(request: &ScaleRequest<'_>) -> Result<i64, ReconcileError> {
    request.workspace_id.parse().map_err(|_| {
        ReconcileError::user(
            Reason::ExternalIdInvalid,
            format!(
                "workspace id {:?} is not a Codesphere id",
                request.workspace_id
            ),
        )
    })
}

/// Plans a ServiceScale (pure): nothing when the service runs the count the spec asks, else
/// one absolute scale of the service.
fn plan_scale(
    request: &ScaleRequest<'_>,
    running: &Running,
) -> Planned<ScaleOp, ServiceScaleStatus> {
    let service = request.service;
    let observed = running.replicas;
    let mut status = request.previous.clone();
    status.selector = Some(format!("bosun.dev/service={service}"));
    status.replicas = Some(observed);
    if observed == request.replicas {
        let readiness = Readiness::ready(
            Reason::Available,
            format!("{service} runs {observed} replicas"),
        );
        return Planned::nothing(Report::settled(
            status,
            Vec::new(),
            readiness,
            request.mode.observing(),
        ));
    }
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
            id: ObjectId::Known(running.workspace.to_string()),
        },
        changes: vec![Change::new(
            "spec.replicas",
            Some(observed.to_string()),
            Some(request.replicas.to_string()),
        )],
        // A service that runs nowhere has not started yet; that is no drift.
        drift: request.is_drift() && observed > 0,
        summary: format!(
            "scale {service} of workspace {} from {observed} to {} replicas",
            running.workspace, request.replicas
        ),
        deadline: None,
        record: None,
        op: ScaleOp {
            workspace: running.workspace,
            counts: BTreeMap::from([(service.to_string(), request.replicas)]),
        },
    });
    Planned {
        plan,
        report: Report::settled(status, Vec::new(), readiness, request.mode.observing()),
        adopt: None,
    }
}

#[async_trait]
impl<'r> PlanSeam<ScaleRequest<'r>, ServiceScaleStatus> for Codesphere {
    type Answer = ();
    type Op = ScaleOp;
    type Observation = Running;

    async fn observe(&self, request: &ScaleRequest<'r>) -> Result<Running, ReconcileError> {
        let id = workspace_id(request)?;
        let elements = match self.stage_status(id, Stage::Run).await {
            Ok(e) => e,
            Err(e) if e.kind == ErrorKind::Invalid => {
                return Err(ReconcileError::waiting(
                    Reason::WorkspaceNotRunning,
                    format!("workspace {id} is not running yet: {e}"),
                ));
            }
            Err(e) => return Err(e.into()),
        };
        let replicas = elements
            .iter()
            .filter(|e| e.server == request.service)
            .count();
        Ok(Running {
            workspace: id,
            replicas: i32::try_from(replicas).unwrap_or(i32::MAX),
        })
    }

    fn plan(
        &self,
        request: &ScaleRequest<'r>,
        observed: &Running,
    ) -> Result<Planned<ScaleOp, ServiceScaleStatus>, ReconcileError> {
        Ok(plan_scale(request, observed))
    }

    async fn execute(&self, step: &Step<ScaleOp>, _: &[()]) -> Result<(), ReconcileError> {
        Ok(self
            .scale_landscape(step.op.workspace, &step.op.counts)
            .await?)
    }

    fn answered_id(&self, _: &()) -> Option<String> {
        None
    }

    fn answered(
        &self,
        report: &mut Report<ServiceScaleStatus>,
        step: &Step<ScaleOp>,
        _: &(),
    ) -> Flow {
        let (from, to) = step.first_change();
        let service = &step.target.name;
        if !step.drift {
            report.notes.push(Note::normal(
                Reason::Scaled,
                "Scale",
                format!("scaled {service} from {from} to {to} replicas"),
            ));
        }
        let msg = format!("scaling {service} to {to}");
        report.readiness = Readiness::not_ready(Reason::Scaling, msg.clone());
        report.sync = SyncState::Progressing {
            reason: Reason::Scaling,
            message: msg,
        };
        report.requeue_after = Some(STAGE_POLL);
        Flow::Continue
    }
}

#[async_trait]
impl ServiceScaleDriver for Codesphere {
    async fn reconcile(
        &self,
        request: &ScaleRequest<'_>,
    ) -> Result<Report<ServiceScaleStatus>, ReconcileError> {
        plan::reconcile(self, request, request.mode, &CreatesNothing).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::plan::table;
    use crate::core::reconciler::Mode;

    fn request(previous: &ServiceScaleStatus, generation: i64) -> ScaleRequest<'_> {
        ScaleRequest {
            key: "team/web".into(),
            service: "web",
            replicas: 3,
            workspace_id: "70001",
            previous,
            generation,
            observed_generation: Some(1),
            mode: Mode::SEND,
        }
    }

    #[test]
    fn plan_table() {
        use StepAction::Update;
        let previous = ServiceScaleStatus::default();
        let running = |replicas| Running {
            workspace: 70001,
            replicas,
        };
        let rows: Vec<(&str, i64, i32, Vec<table::Row<'_>>, Reason)> = vec![
            ("in sync", 1, 3, vec![], Reason::Available),
            (
                "spec change",
                2,
                1,
                vec![(Update, "service", "70001", false, vec!["spec.replicas"])],
                Reason::ReplicasDiffer,
            ),
            (
                "drift",
                1,
                1,
                vec![(Update, "service", "70001", true, vec!["spec.replicas"])],
                Reason::ReplicasDiffer,
            ),
            (
                "not started yet: a scale, not drift",
                1,
                0,
                vec![(Update, "service", "70001", false, vec!["spec.replicas"])],
                Reason::ReplicasDiffer,
            ),
        ];
        for (case, generation, replicas, steps, reason) in &rows {
            let planned = plan_scale(&request(&previous, *generation), &running(*replicas));
            table::assert_steps(&planned.plan, steps, case);
            assert_eq!(planned.report.readiness.reason, *reason, "{case}");
            assert_eq!(planned.report.status.replicas, Some(*replicas), "{case}");
        }
        // Under the Workspace's `managementPolicy: Observe` the count is reported, not set.
        let mut observed = request(&previous, 1);
        observed.mode = Mode::SEND.governed_by(crate::api::ManagementPolicy::Observe);
        for replicas in [3, 1] {
            let planned = plan_scale(&observed, &running(replicas));
            assert_eq!(planned.report.sync, SyncState::Observing, "{replicas}");
        }
        let planned = plan_scale(&request(&previous, 2), &running(1));
        assert_eq!(
            planned.plan.steps[0].op.counts,
            BTreeMap::from([("web".to_string(), 3)]),
            "an absolute count for this service only"
        );
    }
}
