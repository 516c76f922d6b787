//! Deleting a Workspace on Spheron, on the deletion seam. Spheron cannot delete a project:
//! a site's project is archived, after its deployments still in flight are canceled (they
//! would go on building for a removed project). A compute instance is closed, which stops its
//! lease and its cost; the closed instance stays listed.

use super::{known_id, repo_key, spheron_target, SpheronClient, RECENT_DEPLOYMENTS};
use crate::core::deletion::{Deletion, DeletionSeam};
use crate::core::drivers::WorkspaceRequest;
use crate::core::error::ReconcileError;
use crate::core::plan::{ObjectId, Plan, Step, StepAction};
use crate::core::reason::Reason;
use crate::core::reconciler::Note;
use crate::core::seam::ErrorKind;
use crate::platform::spheron::client::{Deleted, Deployment, InstanceState};
use async_trait::async_trait;

/// What is left of a Workspace at Spheron.
#[derive(Clone, Debug)]
pub enum Remains {
    /// Site projects with their recent deployments.
    Site(Vec<(String, Vec<Deployment>)>),
    /// Compute instances not closed yet.
    Compute(Vec<String>),
}

/// A Spheron deletion step.
#[derive(Clone, Debug, PartialEq)]
pub enum Removal {
    Cancel(String),
    Archive(String),
    Close(String),
}

fn is_compute(request: &WorkspaceRequest<'_>) -> bool {
    request
        .spec
        .spheron
        .as_ref()
        .is_some_and(|s| s.compute.is_some())
}

/// The plan (pure): per project, cancel what is in flight, then archive it; per instance,
/// close it.
pub fn plan_deletion(remains: &Remains) -> Deletion<Removal> {
    let step = |kind, id: &str, summary: String, op| {
        let target = spheron_target(kind, ObjectId::Known(id.to_string()), "");
        Step::plain(StepAction::Delete, target, summary, op)
    };
    let mut plan = Plan::default();
    match remains {
        Remains::Site(projects) => {
            for (project, deployments) in projects {
                for d in deployments.iter().filter(|d| !d.status.is_terminal()) {
                    let summary =
                        format!("cancel deployment {} ({}) of the project", d.id, d.status);
                    plan.push(step(
                        "deployment",
                        &d.id,
                        summary,
                        Removal::Cancel(d.id.clone()),
                    ));
                }
                let summary =
                    format!("archive Spheron project {project} (Spheron cannot delete one)");
                plan.push(step(
                    "project",
                    project,
                    summary,
                    Removal::Archive(project.clone()),
                ));
            }
        }
        Remains::Compute(instances) => {
            for id in instances {
                let summary = format!("close Spheron compute instance {id}");
                plan.push(step(
                    "compute instance",
                    id,
                    summary,
                    Removal::Close(id.clone()),
                ));
            }
        }
    }
    Deletion {
        plan,
        left: Vec::new(),
    }
}

impl SpheronClient {
    async fn deletion_organization(
        &self,
        request: &WorkspaceRequest<'_>,
    ) -> Result<String, ReconcileError> {
        let named = request
            .spec
            .spheron
            .as_ref()
            .and_then(|s| s.organization_id.as_deref());
        self.organization_for(named).await
    }
}

#[async_trait]
impl<'r> DeletionSeam<WorkspaceRequest<'r>> for SpheronClient {
    type Remains = Remains;
    type Op = Removal;
    type Answer = Deleted;

    async fn observe_remains(
        &self,
        request: &WorkspaceRequest<'r>,
    ) -> Result<Remains, ReconcileError> {
        let mut ids: Vec<String> = known_id(request).into_iter().collect();
        let pending = ids.is_empty() && request.create_pending;
        if is_compute(request) {
            // An interrupted create left no id: find its instance by name.
            if pending {
                let org = self.deletion_organization(request).await?;
                self.forget_instances(&org).await;
                ids.extend(
                    self.instances_of(&org)
                        .await?
                        .iter()
                        .filter(|i| {
                            i.name == request.external_name && i.state != InstanceState::Closed
                        })
                        .map(|i| i.id.clone()),
                );
            }
            return Ok(Remains::Compute(ids));
        }
        // An interrupted create left no id: find its project by repository.
        if pending {
            let org = self.deletion_organization(request).await?;
            self.forget_projects(&org).await;
            let wanted = repo_key(&request.spec.source.repository);
            ids.extend(
                self.projects_of(&org)
                    .await?
                    .iter()
                    .filter(|p| p.url.as_deref() == Some(wanted.as_str()))
                    .map(|p| p.id.clone()),
            );
        }
        let mut projects = Vec::new();
        for id in ids {
            match self
                .list_project_deployments_page(&id, 0, RECENT_DEPLOYMENTS, None)
                .await
            {
                Ok(recent) => projects.push((id, recent)),
                // The project is gone: nothing to archive.
                Err(e) if e.kind == ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Remains::Site(projects))
    }

    fn plan_deletion(
        &self,
        _: &WorkspaceRequest<'r>,
        remains: &Remains,
    ) -> Result<Deletion<Removal>, ReconcileError> {
        Ok(plan_deletion(remains))
    }

    async fn execute_deletion(&self, step: &Step<Removal>) -> Result<Deleted, ReconcileError> {
        Ok(match &step.op {
            Removal::Cancel(deployment) => {
                self.cancel_quietly(deployment).await?;
                Deleted::Done
            }
            Removal::Archive(project) => {
                let answer = self.archive_project(project).await?;
                self.shared.unconfirm(project);
                answer
            }
            Removal::Close(instance) => {
                let answer = self.close_compute_instance(instance).await?;
                self.shared.unconfirm(instance);
                answer
            }
        })
    }

    fn removed(&self, step: &Step<Removal>, answer: &Deleted) -> Note {
        let gone = *answer == Deleted::AlreadyGone;
        let (reason, message) = match &step.op {
            Removal::Cancel(id) => (Reason::DeployCanceled, format!("canceled deployment {id}")),
            Removal::Archive(id) if gone => {
                (Reason::Deleted, format!("Spheron project {id} is gone"))
            }
            Removal::Archive(id) => (Reason::Deleted, format!("archived Spheron project {id}")),
            Removal::Close(id) if gone => (
                Reason::Deleted,
                format!("Spheron compute instance {id} is gone"),
            ),
            Removal::Close(id) => (
                Reason::Deleted,
                format!("closed Spheron compute instance {id}"),
            ),
        };
        Note::normal(reason, "Delete", message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::plan::table;

    fn deployment(id: &str, status: &str) -> Deployment {
        serde_json::from_value(serde_json::json!({"_id": id, "status": status}))
            .expect("deployment")
    }

    #[test]
    fn deletion_plan_table() {
        use StepAction::Delete;
        let rows: Vec<(&str, Remains, Vec<table::Row<'_>>)> = vec![
            ("no project left", Remains::Site(vec![]), vec![]),
            (
                "a deployed site: archive only",
                Remains::Site(vec![("p1".into(), vec![deployment("d1", "Deployed")])]),
                vec![(Delete, "project", "p1", false, vec![])],
            ),
            (
                "a deployment in flight is canceled first",
                Remains::Site(vec![(
                    "p1".into(),
                    vec![deployment("d2", "Deploying"), deployment("d1", "Failed")],
                )]),
                vec![
                    (Delete, "deployment", "d2", false, vec![]),
                    (Delete, "project", "p1", false, vec![]),
                ],
            ),
            (
                "a compute instance is closed",
                Remains::Compute(vec!["i1".into()]),
                vec![(Delete, "compute instance", "i1", false, vec![])],
            ),
            ("no instance known", Remains::Compute(vec![]), vec![]),
        ];
        for (case, remains, want) in rows {
            table::assert_steps(&plan_deletion(&remains).plan, &want, case);
        }
    }
}
