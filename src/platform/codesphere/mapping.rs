//! Codesphere's pure planning pieces: plans and their limits, the PATCH and the variables a
//! workspace needs, and how far a pipeline stage got (unit-tested below). The Workspace's
//! observe → plan → execute is in `workspace.rs`.
//!
//! A new source ref is rolled out in place as the vendor describes (git pull, prepare, test if
//! asked, run restart), one stage per reconcile, tracked in `status.operation` with a deadline,
//! so no worker ever waits.

use super::client::{EnvVar, Plan, Stage, StageElement, UpdateWorkspace, Workspace};
use crate::api::RunState;
use crate::core::error::ReconcileError;
use crate::core::plan::Change;
use crate::core::reason::Reason;
use jiff::{SignedDuration, Timestamp};
use std::collections::BTreeMap;
use std::time::Duration;

/// The server prepare and test run on; every other server is a run-stage service.
pub const IDE_SERVER: &str = "codesphere-ide";
/// How often a stage in flight is looked at (the vendor's own CLI polls every 5 s).
pub const STAGE_POLL: Duration = Duration::from_secs(5);
/// Default limit for one stage (`spec.pipeline.stageTimeout`).
pub const DEFAULT_STAGE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// The plan Codesphere's CLI uses when none is named.
pub const DEFAULT_PLAN_ID: i64 = 8;
/// Slack when comparing platform timestamps with ours (the clocks are not the same).
const CLOCK_SLACK: SignedDuration = SignedDuration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Pure planning.

/// Picks the plan the spec names (a title, case-insensitive, or an id) and checks the replica
/// count against it.
pub fn resolve_plan<'a>(
    wanted: Option<&str>,
    replicas: i32,
    plans: &'a [Plan],
) -> Result<&'a Plan, ReconcileError> {
    let unknown = |m: String| ReconcileError::user(Reason::UnknownPlan, m);
    let usable = || {
        plans
            .iter()
            .filter(|p| !p.deprecated)
            .map(|p| format!("{} ({})", p.title, p.id))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let plan = match wanted {
        None => plans
            .iter()
            .find(|p| p.id == DEFAULT_PLAN_ID && !p.deprecated)
            .or_else(|| plans.iter().find(|p| !p.deprecated))
            .ok_or_else(|| unknown("the platform offers no plan".to_string()))?,
        Some(w) => plans
            .iter()
            .find(|p| {
                p.title.eq_ignore_ascii_case(w.trim()) || w.trim().parse::<i64>().ok() == Some(p.id)
            })
            .ok_or_else(|| {
                unknown(format!(
                    "spec.plan: Codesphere has no plan {w:?}; use one of {}",
                    usable()
                ))
            })?,
    };
    if plan.deprecated {
        return Err(unknown(format!(
            "spec.plan: plan {} is deprecated; use one of {}",
            plan.title,
            usable()
        )));
    }
    if replicas > plan.max_replicas {
        return Err(ReconcileError::user(Reason::PlanLimitExceeded, format!(
            "spec.replicas: plan {} allows at most {} replicas, not {replicas}; lower spec.replicas or choose a larger plan",
            plan.title, plan.max_replicas
        )));
    }
    Ok(plan)
}

/// The PATCH that brings the workspace to the spec, and the fields it changes (pure).
pub fn plan_update(ws: &Workspace, plan_id: i64, replicas: i32) -> (UpdateWorkspace, Vec<Change>) {
    let mut update = UpdateWorkspace::default();
    let mut changes = Vec::new();
    if ws.plan_id != plan_id {
        update.plan_id = Some(plan_id);
        changes.push(Change::new(
            "spec.plan",
            Some(format!("plan {}", ws.plan_id)),
            Some(format!("plan {plan_id}")),
        ));
    }
    if ws.replicas != replicas {
        update.replicas = Some(replicas);
        changes.push(Change::new(
            "spec.replicas",
            Some(ws.replicas.to_string()),
            Some(replicas.to_string()),
        ));
    }
    (update, changes)
}

/// Variables to set and names to delete so the platform holds exactly `desired` (pure).
pub fn plan_env(
    observed: &[EnvVar],
    desired: &BTreeMap<String, String>,
) -> (Vec<EnvVar>, Vec<String>) {
    let have: BTreeMap<&str, &str> = observed
        .iter()
        .map(|e| (e.name.as_str(), e.value.as_str()))
        .collect();
    let set = desired
        .iter()
        .filter(|(k, v)| have.get(k.as_str()) != Some(&v.as_str()))
        .map(|(k, v)| EnvVar {
            name: k.clone(),
            value: v.clone(),
        })
        .collect();
    let delete = observed
        .iter()
        .filter(|e| !desired.contains_key(&e.name))
        .map(|e| e.name.clone())
        .collect();
    (set, delete)
}

/// How far a stage got, from its status elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StageProgress {
    /// Not started since `since` (or no elements yet).
    Pending,
    Running,
    Succeeded,
    Failed(String),
}

/// Reads prepare/test (which run on the IDE server and finish) or run (which runs on every
/// other server and never finishes) from the status array (pure). Only elements started at or
/// after `since` count, so the previous run's result is never mistaken for this one's.
pub fn stage_progress(
    stage: Stage,
    elements: &[StageElement],
    since: Option<Timestamp>,
) -> StageProgress {
    let fresh = |e: &&StageElement| match (
        since,
        e.started_at
            .as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok()),
    ) {
        (None, _) => true,
        (Some(since), Some(started)) => started >= since - CLOCK_SLACK,
        (Some(_), None) => false,
    };
    let relevant: Vec<&StageElement> = elements
        .iter()
        .filter(|e| (stage == Stage::Run) != (e.server == IDE_SERVER))
        .filter(fresh)
        .collect();
    if relevant.is_empty() {
        return StageProgress::Pending;
    }
    if let Some(bad) = relevant
        .iter()
        .find(|e| e.state == "failure" || e.state == "aborted")
    {
        return StageProgress::Failed(format!(
            "the {} stage ended in {} on server {} replica {}",
            stage.as_str(),
            bad.state,
            bad.server,
            bad.replica
        ));
    }
    match stage {
        Stage::Run if relevant.iter().all(|e| e.state == "running") => StageProgress::Succeeded,
        Stage::Run => StageProgress::Running,
        _ if relevant.iter().all(|e| e.state == "success") => StageProgress::Succeeded,
        _ if relevant.iter().all(|e| e.state == "waiting") => StageProgress::Pending,
        _ => StageProgress::Running,
    }
}

/// The stages a rollout runs, in order.
pub fn rollout_stages(prepare: bool, test: bool, run: RunState) -> Vec<Stage> {
    let mut stages = Vec::new();
    if prepare {
        stages.push(Stage::Prepare);
    }
    if test {
        stages.push(Stage::Test);
    }
    if run == RunState::Running {
        stages.push(Stage::Run);
    }
    stages
}

/// The per-stage timeout of the spec.
pub fn stage_timeout(spec: Option<&str>) -> Duration {
    spec.and_then(|s| humantime::parse_duration(s).ok())
        .unwrap_or(DEFAULT_STAGE_TIMEOUT)
}

/// `status.operation.kind` of a blue/green rollout.
pub const BLUE_GREEN: &str = "blueGreen";

/// The candidate's name for a generation: deterministic, so a lookup by name finds a
/// candidate an interrupted reconcile created, and no marker is needed.
pub fn candidate_name(base: &str, generation: i64) -> String {
    let suffix = format!("-g{generation}");
    let keep = 63usize.saturating_sub(suffix.len());
    format!("{}{suffix}", base.chars().take(keep).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(id: i64, title: &str, max: i32, deprecated: bool) -> Plan {
        Plan {
            id,
            title: title.into(),
            deprecated,
            max_replicas: max,
        }
    }

    fn plans() -> Vec<Plan> {
        vec![
            plan(1, "Free", 1, true),
            plan(8, "Micro", 3, false),
            plan(20, "Boost", 5, false),
        ]
    }

    fn ws(id: i64, name: &str) -> Workspace {
        Workspace {
            id,
            team_id: 1,
            name: name.into(),
            plan_id: 8,
            replicas: 1,
            git_url: None,
            initial_branch: None,
            dev_domain: None,
            base_image: None,
            restricted: false,
        }
    }

    fn el(server: &str, state: &str, started: Option<&str>) -> StageElement {
        StageElement {
            state: state.into(),
            started_at: started.map(String::from),
            finished_at: None,
            replica: "0".into(),
            server: server.into(),
        }
    }

    #[test]
    fn plans_resolve_by_title_or_id_with_limits() {
        let p = plans();
        assert_eq!(resolve_plan(None, 1, &p).unwrap().id, 8);
        assert_eq!(resolve_plan(Some("boost"), 5, &p).unwrap().id, 20);
        assert_eq!(resolve_plan(Some("20"), 1, &p).unwrap().id, 20);
        for (wanted, says) in [("Giant", "Micro (8)"), ("Free", "deprecated")] {
            let e = resolve_plan(Some(wanted), 1, &p).unwrap_err();
            assert_eq!(e.reason(), Reason::UnknownPlan);
            assert!(e.to_string().contains(says), "{e}");
        }
        let e = resolve_plan(Some("Micro"), 4, &p).unwrap_err();
        assert_eq!(e.reason(), Reason::PlanLimitExceeded);
        assert!(
            e.to_string().starts_with("spec.replicas") && e.to_string().contains("at most 3"),
            "{e}"
        );
    }

    #[test]
    fn update_patches_only_what_differs_and_names_the_fields() {
        let w = ws(1, "a");
        let (u, changes) = plan_update(&w, 8, 1);
        assert!(u.is_empty() && changes.is_empty());
        let (u, changes) = plan_update(&w, 20, 3);
        assert_eq!(
            u,
            UpdateWorkspace {
                plan_id: Some(20),
                replicas: Some(3),
                name: None
            }
        );
        assert_eq!(
            changes,
            vec![
                Change::new("spec.plan", Some("plan 8".into()), Some("plan 20".into())),
                Change::new("spec.replicas", Some("1".into()), Some("3".into())),
            ]
        );
    }

    #[test]
    fn env_diff_writes_changes_and_deletes_removed() {
        let observed = vec![
            EnvVar {
                name: "A".into(),
                value: "1".into(),
            },
            EnvVar {
                name: "B".into(),
                value: "2".into(),
            },
            EnvVar {
                name: "OLD".into(),
                value: "x".into(),
            },
        ];
        let desired = BTreeMap::from([
            ("A".to_string(), "1".to_string()),
            ("B".to_string(), "3".to_string()),
            ("C".to_string(), "4".to_string()),
        ]);
        let (set, delete) = plan_env(&observed, &desired);
        assert_eq!(
            set,
            vec![
                EnvVar {
                    name: "B".into(),
                    value: "3".into()
                },
                EnvVar {
                    name: "C".into(),
                    value: "4".into()
                }
            ]
        );
        assert_eq!(delete, vec!["OLD".to_string()]);
        let (set, delete) = plan_env(
            &set,
            &BTreeMap::from([
                ("B".to_string(), "3".to_string()),
                ("C".to_string(), "4".to_string()),
            ]),
        );
        assert!(set.is_empty() && delete.is_empty());
    }

    #[test]
    fn prepare_finishes_on_the_ide_server_only() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let fresh = Some("2026-01-01T00:00:01Z");
        let stale = Some("2025-12-31T23:00:00Z");
        let e = vec![
            el(IDE_SERVER, "success", fresh),
            el("web", "running", fresh),
        ];
        assert_eq!(
            stage_progress(Stage::Prepare, &e, Some(t0)),
            StageProgress::Succeeded
        );
        let e = vec![el(IDE_SERVER, "running", fresh)];
        assert_eq!(
            stage_progress(Stage::Prepare, &e, Some(t0)),
            StageProgress::Running
        );
        // The previous run's success does not count.
        let e = vec![el(IDE_SERVER, "success", stale)];
        assert_eq!(
            stage_progress(Stage::Prepare, &e, Some(t0)),
            StageProgress::Pending
        );
        let e = vec![el(IDE_SERVER, "failure", fresh)];
        assert!(
            matches!(stage_progress(Stage::Prepare, &e, Some(t0)), StageProgress::Failed(m) if m.contains("prepare stage ended in failure"))
        );
        assert_eq!(
            stage_progress(Stage::Prepare, &[], Some(t0)),
            StageProgress::Pending
        );
    }

    #[test]
    fn run_needs_every_service_replica_running() {
        let e = vec![
            el(IDE_SERVER, "success", None),
            el("web", "running", None),
            el("api", "running", None),
        ];
        assert_eq!(
            stage_progress(Stage::Run, &e, None),
            StageProgress::Succeeded
        );
        let e = vec![el("web", "running", None), el("api", "waiting", None)];
        assert_eq!(stage_progress(Stage::Run, &e, None), StageProgress::Running);
        // Only the IDE server: nothing runs.
        assert_eq!(
            stage_progress(Stage::Run, &[el(IDE_SERVER, "running", None)], None),
            StageProgress::Pending
        );
        let e = vec![el("web", "aborted", None)];
        assert!(matches!(
            stage_progress(Stage::Run, &e, None),
            StageProgress::Failed(_)
        ));
    }

    #[test]
    fn rollout_order_follows_the_spec() {
        assert_eq!(
            rollout_stages(true, true, RunState::Running),
            vec![Stage::Prepare, Stage::Test, Stage::Run]
        );
        assert_eq!(
            rollout_stages(true, false, RunState::Stopped),
            vec![Stage::Prepare]
        );
        assert_eq!(
            rollout_stages(false, false, RunState::Running),
            vec![Stage::Run]
        );
        assert!(rollout_stages(false, false, RunState::Stopped).is_empty());
    }

    #[test]
    fn stage_timeout_reads_the_spec() {
        assert_eq!(stage_timeout(None), DEFAULT_STAGE_TIMEOUT);
        assert_eq!(stage_timeout(Some("90s")), Duration::from_secs(90));
        assert_eq!(stage_timeout(Some("1h30m")), Duration::from_secs(5400));
    }
}
