//! Deleting a Workspace on Codesphere, on the deletion seam: the workspace bosun knows, a
//! blue/green candidate (or the old workspace being retired) with it, or the one an interrupted
//! create left without an id, found by name.

use super::client::{Codesphere, Workspace};
use super::mapping::BLUE_GREEN;
use super::workspace::{known_id, team_of};
use crate::core::deletion::{Deletion, DeletionSeam};
use crate::core::drivers::WorkspaceRequest;
use crate::core::error::ReconcileError;
use crate::core::plan::{ObjectId, Plan, Step, StepAction, Target};
use crate::core::reason::Reason;
use crate::core::reconciler::Note;
use async_trait::async_trait;

/// A Codesphere deletion step: the workspace's id and team (whose listing it leaves).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Removal {
    pub id: i64,
    pub team: i64,
}

/// The ids a deletion starts from: the workspace bosun knows, and a blue/green candidate's.
fn ids_known(request: &WorkspaceRequest<'_>) -> Result<Vec<i64>, ReconcileError> {
    let mut ids: Vec<i64> = known_id(request)?.into_iter().collect();
    if let Some(op) = request
        .previous
        .operation
        .as_ref()
        .filter(|o| o.kind == BLUE_GREEN)
    {
        ids.extend(op.id.as_deref().and_then(|i| i.parse::<i64>().ok()));
    }
    Ok(ids)
}

/// The plan (pure): delete each workspace still there, then wait until Codesphere has let go
/// of it (its deletion is not documented as synchronous).
pub fn plan_deletion(remains: &[Workspace]) -> Deletion<Removal> {
    let step = |action, ws: &Workspace, summary: String| {
        let target = Target {
            kind: "workspace",
            name: ws.name.clone(),
            id: ObjectId::Known(ws.id.to_string()),
        };
        let op = Removal {
            id: ws.id,
            team: ws.team_id,
        };
        Step::plain(action, target, summary, op)
    };
    let mut plan = Plan::default();
    for ws in remains {
        let summary = format!("delete Codesphere workspace {} ({})", ws.id, ws.name);
        plan.push(step(StepAction::Delete, ws, summary));
    }
    for ws in remains {
        let summary = format!("waiting for Codesphere to delete workspace {}", ws.id);
        plan.push(step(StepAction::Await, ws, summary));
    }
    Deletion {
        plan,
        left: Vec::new(),
    }
}

#[async_trait]
impl<'r> DeletionSeam<WorkspaceRequest<'r>> for Codesphere {
    type Remains = Vec<Workspace>;
    type Op = Removal;
    type Answer = ();

    async fn observe_remains(
        &self,
        request: &WorkspaceRequest<'r>,
    ) -> Result<Vec<Workspace>, ReconcileError> {
        let mut ids = ids_known(request)?;
        // An interrupted create left no id: find it by name so it does not leak.
        if ids.is_empty() && request.create_pending {
            let team = team_of(request, self.default_team())?;
            self.forget_list(team).await;
            ids.extend(
                self.workspaces_of(team)
                    .await?
                    .iter()
                    .filter(|w| w.name == request.external_name)
                    .map(|w| w.id),
            );
        }
        let mut remains = Vec::new();
        for id in ids {
            remains.extend(self.get_workspace(id).await?);
        }
        Ok(remains)
    }

    fn plan_deletion(
        &self,
        _: &WorkspaceRequest<'r>,
        remains: &Vec<Workspace>,
    ) -> Result<Deletion<Removal>, ReconcileError> {
        Ok(plan_deletion(remains))
    }

    async fn execute_deletion(&self, step: &Step<Removal>) -> Result<(), ReconcileError> {
        self.delete_workspace(step.op.id).await?;
        self.forget_list(step.op.team).await;
        Ok(())
    }

    fn removed(&self, step: &Step<Removal>, _: &()) -> Note {
        Note::normal(
            Reason::Deleted,
            "Delete",
            format!("deleted Codesphere workspace {}", step.op.id),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::plan::table;

    fn workspace(id: i64, name: &str) -> Workspace {
        serde_json::from_value(serde_json::json!({
            "id": id, "teamId": 3, "name": name, "planId": 8, "replicas": 1
        }))
        .expect("workspace")
    }

    #[test]
    fn deletion_plan_table() {
        use StepAction::{Await, Delete};
        let rows: Vec<(&str, Vec<Workspace>, Vec<table::Row<'_>>)> = vec![
            ("nothing left", vec![], vec![]),
            (
                "the workspace",
                vec![workspace(7, "team-shop")],
                vec![
                    (Delete, "workspace", "7", false, vec![]),
                    (Await, "workspace", "7", false, vec![]),
                ],
            ),
            (
                "with a blue/green candidate: both go, then both are awaited",
                vec![workspace(7, "team-shop"), workspace(9, "team-shop-g4")],
                vec![
                    (Delete, "workspace", "7", false, vec![]),
                    (Delete, "workspace", "9", false, vec![]),
                    (Await, "workspace", "7", false, vec![]),
                    (Await, "workspace", "9", false, vec![]),
                ],
            ),
        ];
        for (case, remains, want) in rows {
            let deletion = plan_deletion(&remains);
            table::assert_steps(&deletion.plan, &want, case);
            assert!(deletion.left.is_empty(), "{case}");
        }
    }

    #[test]
    fn a_candidate_of_a_rollout_in_flight_is_deleted_with_the_workspace() {
        let spec: crate::api::WorkspaceSpec = serde_json::from_value(serde_json::json!({
            "providerRef": {"name": "cs"},
            "source": {"repository": "https://github.com/acme/shop.git", "branch": "main"}
        }))
        .expect("spec");
        let previous = crate::api::WorkspaceStatus {
            external_id: Some("7".into()),
            operation: Some(crate::api::OperationStatus {
                kind: BLUE_GREEN.into(),
                id: Some("9".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let request = WorkspaceRequest::for_test(&spec, &previous);
        assert_eq!(ids_known(&request).unwrap(), vec![7, 9]);
    }
}
