//! DomainBinding on Codesphere: a team domain whose workspace-connections map (path →
//! workspace ids) bosun merges into, touching only the paths it owns.

use super::client::{Codesphere, Domain, Verification};
use crate::api::{DnsRecord, DomainBindingStatus, DomainVerification};
use crate::core::conditions::{Readiness, SyncState};
use crate::core::deletion::{self, Deletion, DeletionSeam};
use crate::core::drivers::{awaiting_dns, DomainDriver, DomainRequest};
use crate::core::error::ReconcileError;
use crate::core::plan::{
    self, Change, CreatesNothing, Flow, ObjectId, Plan, PlanSeam, Planned, Step, StepAction, Target,
};
use crate::core::reason::Reason;
use crate::core::reconciler::{Cleanup, Note, Report};
use async_trait::async_trait;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How often an unverified domain is checked again (DNS changes take minutes).
pub const VERIFY_POLL: Duration = Duration::from_secs(30);

/// The connections map after bosun's paths are set to `desired` and paths it owned before but
/// no longer wants are removed; paths owned by others stay as they are (pure).
pub fn merge_connections(
    observed: &BTreeMap<String, Vec<i64>>,
    owned_before: &BTreeSet<String>,
    desired: &BTreeMap<String, Vec<i64>>,
) -> BTreeMap<String, Vec<i64>> {
    let mut merged: BTreeMap<String, Vec<i64>> = observed
        .iter()
        .filter(|(path, _)| !owned_before.contains(*path) || desired.contains_key(*path))
        .map(|(p, ids)| (p.clone(), ids.clone()))
        .collect();
    for (path, ids) in desired {
        let mut ids = ids.clone();
        ids.sort_unstable();
        ids.dedup();
        merged.insert(path.clone(), ids);
    }
    merged
}

/// The DNS records the user must create, from the domain's `dnsEntries` (pure).
pub fn dns_records(domain: &Domain) -> Vec<DnsRecord> {
    let mut records = Vec::new();
    let entries = &domain.dns_entries;
    if !entries.cname.is_empty() {
        records.push(DnsRecord {
            type_: "CNAME".into(),
            name: domain.name.clone(),
            value: entries.cname.clone(),
        });
    }
    if !entries.a.is_empty() {
        records.push(DnsRecord {
            type_: "A".into(),
            name: domain.name.clone(),
            value: entries.a.clone(),
        });
    }
    if !entries.txt.is_empty() {
        records.push(DnsRecord {
            type_: "TXT".into(),
            name: domain.name.clone(),
            value: entries.txt.clone(),
        });
    }
    records
}

fn parse_ids(
    routes: &BTreeMap<String, Vec<String>>,
) -> Result<BTreeMap<String, Vec<i64>>, ReconcileError> {
    routes
        .iter()
        .map(|(path, ids)| {
            let ids = ids
                .iter()
                .map(|id| {
                    id.parse::<i64>().map_err(|_| {
                        ReconcileError::user(
                            Reason::ExternalIdInvalid,
                            format!("workspace id {id:?} is not a Codesphere id"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((path.clone(), ids))
        })
        .collect()
}

impl Codesphere {
    fn team_for_domains(&self) -> Result<i64, ReconcileError> {
        self.default_team().ok_or_else(|| {
            ReconcileError::user(
                Reason::TeamRequired,
                "set the Provider's spec.defaults.teamId: Codesphere domains belong to a team",
            )
        })
    }
}

/// What `observe` found: the team the domain belongs to, and the domain if it exists.
pub struct Observed {
    team: i64,
    domain: Option<Domain>,
}

/// The request a DomainBinding step carries. Every one names the team and the domain.
#[derive(Clone, Debug, PartialEq)]
pub enum DomainOp {
    Create {
        team: i64,
        name: String,
    },
    /// Sets the whole connections map: bosun's paths merged with the paths others own.
    Connect {
        team: i64,
        name: String,
        connections: BTreeMap<String, Vec<i64>>,
        /// The paths bosun owns once this is sent.
        owned: Vec<String>,
    },
    /// Asks Codesphere to check the DNS records now.
    Verify {
        team: i64,
        name: String,
    },
}

/// What Codesphere answers a step with.
pub enum DomainAnswer {
    Domain(Domain),
    /// The check's outcome, and the domain read again once it is verified (for its
    /// certificate).
    Verification(Verification, Option<Domain>),
}

/// The routes of `paths` in a connections map, for people (pure).
fn routes_text(map: &BTreeMap<String, Vec<i64>>, paths: &BTreeSet<String>) -> String {
    let shown: BTreeMap<&String, &Vec<i64>> =
        map.iter().filter(|(p, _)| paths.contains(*p)).collect();
    serde_json::to_string(&shown).unwrap_or_default()
}

/// Status, readiness and sync from what the domain's verification shows (pure).
fn describe(
    report: &mut Report<DomainBindingStatus>,
    name: &str,
    verification: &Verification,
    records: Vec<DnsRecord>,
    certificate_issued: bool,
    observing: bool,
) {
    let verified = verification.verified;
    if !verified {
        // Reported as waiting for DNS even when observed: the user's records are what it
        // waits for, whoever manages the domain.
        awaiting_dns(report, &records, VERIFY_POLL, false);
    } else {
        let certificate = if certificate_issued {
            "certificate issued"
        } else {
            "certificate pending"
        };
        report.settle(
            Readiness::ready(
                Reason::Available,
                format!("{name} is verified, {certificate}"),
            ),
            observing,
        );
    }
    report.status.verification = Some(DomainVerification {
        state: if verified { "Verified" } else { "Pending" }.into(),
        dns_records: records,
        message: verification.reason.clone(),
    });
}

fn describe_domain(report: &mut Report<DomainBindingStatus>, domain: &Domain, observing: bool) {
    report.status.external_id = Some(domain.name.clone());
    describe(
        report,
        &domain.name,
        &domain.domain_verification_status,
        dns_records(domain),
        domain.certificate_request_status.issued,
        observing,
    );
}

/// Plans a DomainBinding (pure): create the domain if the team has none, set bosun's paths
/// in its connections where they differ, and ask for verification until it is verified.
fn plan_domain(
    request: &DomainRequest<'_>,
    observed: &Observed,
) -> Result<Planned<DomainOp, DomainBindingStatus>, ReconcileError> {
    let team = observed.team;
    let name = request.domain.to_string();
    let desired = parse_ids(&request.routes)?;
    let owned_before: BTreeSet<String> = request.previous.owned_paths.iter().cloned().collect();
    let observing = request.mode.observing();
    let target = || Target {
        kind: "domain",
        // A Codesphere domain is known by its name, which is also the id status records: a
        // repeated create cannot make a second one, so it needs no crash-safe guard.
        name: name.clone(),
        id: ObjectId::Known(name.clone()),
    };
    let mut plan = Plan::default();
    let mut report = Report::settled(
        request.previous.clone(),
        Vec::new(),
        Readiness::not_ready(Reason::NotFound, String::new()),
        false,
    );
    let connected = match &observed.domain {
        Some(domain) => {
            describe_domain(&mut report, domain, observing);
            domain.workspaces.clone()
        }
        None => {
            let msg = format!("team {team} has no domain {name}");
            report.readiness = Readiness::not_ready(Reason::NotFound, msg.clone());
            if observing {
                report.sync = SyncState::Stalled {
                    reason: Reason::ExternalObjectNotFound,
                    message: msg,
                };
            }
            plan.push(Step {
                action: StepAction::Create,
                target: target(),
                changes: Vec::new(),
                drift: false,
                summary: format!("create domain {name} in team {team}"),
                deadline: None,
                record: None,
                op: DomainOp::Create {
                    team,
                    name: name.clone(),
                },
            });
            BTreeMap::new()
        }
    };

    let merged = merge_connections(&connected, &owned_before, &desired);
    let owned: Vec<String> = desired.keys().cloned().collect();
    if merged != connected {
        let paths: BTreeSet<String> = owned_before
            .union(&owned.iter().cloned().collect())
            .cloned()
            .collect();
        plan.push(Step {
            action: StepAction::Update,
            target: target(),
            changes: vec![Change::new(
                "spec.routes",
                Some(routes_text(&connected, &paths)),
                Some(routes_text(&merged, &paths)),
            )],
            drift: request.is_drift() && observed.domain.is_some(),
            summary: format!("route bosun's paths of {name} to their workspaces"),
            deadline: None,
            record: None,
            op: DomainOp::Connect {
                team,
                name: name.clone(),
                connections: merged,
                owned,
            },
        });
    } else if request.mode.hold.is_none() {
        // The platform already routes the spec's paths: bosun owns them from now on.
        report.status.owned_paths = owned;
    }

    let verified = observed
        .domain
        .as_ref()
        .is_some_and(|d| d.domain_verification_status.verified);
    if !verified {
        plan.push(Step {
            action: StepAction::Start,
            target: target(),
            changes: Vec::new(),
            drift: false,
            summary: format!("ask Codesphere to check the DNS records of {name}"),
            deadline: None,
            record: None,
            op: DomainOp::Verify { team, name },
        });
    }
    Ok(Planned {
        plan,
        report,
        adopt: None,
    })
}

#[async_trait]
impl<'r> PlanSeam<DomainRequest<'r>, DomainBindingStatus> for Codesphere {
    type Answer = DomainAnswer;
    type Op = DomainOp;
    type Observation = Observed;

    async fn observe(&self, request: &DomainRequest<'r>) -> Result<Observed, ReconcileError> {
        let team = self.team_for_domains()?;
        let domain = self.get_domain(team, request.domain).await?;
        Ok(Observed { team, domain })
    }

    fn plan(
        &self,
        request: &DomainRequest<'r>,
        observed: &Observed,
    ) -> Result<Planned<DomainOp, DomainBindingStatus>, ReconcileError> {
        plan_domain(request, observed)
    }

    async fn execute(
        &self,
        step: &Step<DomainOp>,
        _: &[DomainAnswer],
    ) -> Result<DomainAnswer, ReconcileError> {
        Ok(match &step.op {
            DomainOp::Create { team, name } => {
                DomainAnswer::Domain(self.create_domain(*team, name).await?)
            }
            DomainOp::Connect {
                team,
                name,
                connections,
                ..
            } => DomainAnswer::Domain(self.set_connections(*team, name, connections).await?),
            DomainOp::Verify { team, name } => {
                let verification = self.verify_domain(*team, name).await?;
                // Once verified, the domain is read again for its certificate.
                let domain = if verification.verified {
                    self.get_domain(*team, name).await?
                } else {
                    None
                };
                DomainAnswer::Verification(verification, domain)
            }
        })
    }

    fn answered_id(&self, answer: &DomainAnswer) -> Option<String> {
        match answer {
            DomainAnswer::Domain(d) => Some(d.name.clone()),
            DomainAnswer::Verification(..) => None,
        }
    }

    fn answered(
        &self,
        report: &mut Report<DomainBindingStatus>,
        step: &Step<DomainOp>,
        answer: &DomainAnswer,
    ) -> Flow {
        // Answers come only from steps that were sent, so the object is managed here.
        match (&step.op, answer) {
            (DomainOp::Create { team, name }, DomainAnswer::Domain(domain)) => {
                report.notes.push(Note::normal(
                    Reason::Created,
                    "Create",
                    format!("created domain {name} in team {team}"),
                ));
                describe_domain(report, domain, false);
            }
            (DomainOp::Connect { name, owned, .. }, DomainAnswer::Domain(domain)) => {
                report.status.owned_paths = owned.clone();
                if !step.drift {
                    let (_, to) = step.first_change();
                    report.notes.push(Note::normal(
                        Reason::RoutesUpdated,
                        "Route",
                        format!("routes of {name} set to {to}"),
                    ));
                }
                describe_domain(report, domain, false);
            }
            (DomainOp::Verify { name, .. }, DomainAnswer::Verification(verification, domain)) => {
                match domain {
                    Some(domain) => describe_domain(report, domain, false),
                    None => {
                        let records = report
                            .status
                            .verification
                            .as_ref()
                            .map(|v| v.dns_records.clone())
                            .unwrap_or_default();
                        describe(report, name, verification, records, false, false);
                    }
                }
                if verification.verified {
                    report.notes.push(Note::normal(
                        Reason::Verified,
                        "Verify",
                        format!("{name} is verified"),
                    ));
                }
            }
            // An answer of another shape than its step's cannot come from `execute`.
            _ => {}
        }
        Flow::Continue
    }
}

#[async_trait]
impl DomainDriver for Codesphere {
    async fn reconcile(
        &self,
        request: &DomainRequest<'_>,
    ) -> Result<Report<DomainBindingStatus>, ReconcileError> {
        // No step creates an object located from nothing (see `plan_domain`), so no guard.
        plan::reconcile(self, request, request.mode, &CreatesNothing).await
    }

    async fn delete(&self, request: &DomainRequest<'_>) -> Result<Cleanup, ReconcileError> {
        deletion::delete(self, request).await
    }
}

/// What deleting a DomainBinding sends.
#[derive(Clone, Debug, PartialEq)]
pub enum DomainRemoval {
    /// Nobody else routes through the domain: it goes.
    Delete { team: i64, name: String },
    /// Other paths stay: the connections without bosun's.
    Keep {
        team: i64,
        name: String,
        connections: BTreeMap<String, Vec<i64>>,
    },
}

/// Deleting a DomainBinding (pure): bosun's paths leave the domain, and the domain goes with
/// them when no other path uses it.
pub fn plan_domain_deletion(
    request: &DomainRequest<'_>,
    observed: &Observed,
) -> Deletion<DomainRemoval> {
    let mut plan = Plan::default();
    let Some(domain) = &observed.domain else {
        return Deletion::default();
    };
    let owned: BTreeSet<String> = request.previous.owned_paths.iter().cloned().collect();
    let remaining = merge_connections(&domain.workspaces, &owned, &BTreeMap::new());
    let (team, name) = (observed.team, request.domain.to_string());
    let (action, summary, op) = if remaining.is_empty() {
        let summary = format!("delete domain {name}: no other path uses it");
        (
            StepAction::Delete,
            summary,
            DomainRemoval::Delete {
                team,
                name: name.clone(),
            },
        )
    } else if remaining != domain.workspaces {
        let kept: Vec<&str> = remaining.keys().map(String::as_str).collect();
        let summary = format!(
            "remove bosun's paths from {name}; keep it for {}",
            kept.join(", ")
        );
        let op = DomainRemoval::Keep {
            team,
            name: name.clone(),
            connections: remaining.clone(),
        };
        (StepAction::Update, summary, op)
    } else {
        return Deletion::default();
    };
    // Bosun's routes, as the domain's own plan shows them: what they are, then none.
    let change = Change::new(
        "spec.routes",
        Some(routes_text(&domain.workspaces, &owned)),
        Some(routes_text(&remaining, &owned)),
    );
    let target = Target {
        kind: "domain",
        name: name.clone(),
        id: ObjectId::Known(name),
    };
    let mut step = Step::plain(action, target, summary, op);
    step.changes.push(change);
    plan.push(step);
    Deletion {
        plan,
        left: Vec::new(),
    }
}

#[async_trait]
impl<'r> DeletionSeam<DomainRequest<'r>> for Codesphere {
    type Remains = Observed;
    type Op = DomainRemoval;
    type Answer = ();

    async fn observe_remains(
        &self,
        request: &DomainRequest<'r>,
    ) -> Result<Observed, ReconcileError> {
        PlanSeam::observe(self, request).await
    }

    fn plan_deletion(
        &self,
        request: &DomainRequest<'r>,
        observed: &Observed,
    ) -> Result<Deletion<DomainRemoval>, ReconcileError> {
        Ok(plan_domain_deletion(request, observed))
    }

    async fn execute_deletion(&self, step: &Step<DomainRemoval>) -> Result<(), ReconcileError> {
        match &step.op {
            DomainRemoval::Delete { team, name } => self.delete_domain(*team, name).await?,
            DomainRemoval::Keep {
                team,
                name,
                connections,
            } => {
                self.set_connections(*team, name, connections).await?;
            }
        }
        Ok(())
    }

    fn removed(&self, step: &Step<DomainRemoval>, _: &()) -> Note {
        match &step.op {
            DomainRemoval::Delete { name, .. } => {
                Note::normal(Reason::Deleted, "Delete", format!("deleted domain {name}"))
            }
            DomainRemoval::Keep { name, .. } => Note::normal(
                Reason::RoutesRemoved,
                "Delete",
                format!("removed bosun's paths from {name}; kept it for the paths others use"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::plan::table;
    use crate::core::reconciler::Mode;

    fn map(pairs: &[(&str, &[i64])]) -> BTreeMap<String, Vec<i64>> {
        pairs
            .iter()
            .map(|(p, ids)| (p.to_string(), ids.to_vec()))
            .collect()
    }

    fn domain(connections: &[(&str, &[i64])], verified: bool) -> Domain {
        serde_json::from_value(serde_json::json!({
            "name": "shop.example.com",
            "teamId": 1,
            "workspaces": map(connections),
            "dnsEntries": {"a": "", "cname": "ws.codesphere.com", "txt": ""},
            "domainVerificationStatus": {"verified": verified},
            "certificateRequestStatus": {"issued": verified},
        }))
        .expect("domain")
    }

    fn request<'a>(
        previous: &'a DomainBindingStatus,
        routes: &[(&str, &[&str])],
        generation: i64,
        mode: Mode,
    ) -> DomainRequest<'a> {
        DomainRequest {
            generation,
            mode,
            ..DomainRequest::for_test("shop.example.com", routes, previous)
        }
    }

    #[test]
    fn deletion_plan_table() {
        use StepAction::{Delete, Update};
        let owning = DomainBindingStatus {
            owned_paths: vec!["/".into()],
            ..Default::default()
        };
        let rows: Vec<(&str, Option<Domain>, Vec<table::Row<'_>>)> = vec![
            ("the domain is gone", None, vec![]),
            (
                "only bosun's path: the domain goes",
                Some(domain(&[("/", &[7])], true)),
                vec![(
                    Delete,
                    "domain",
                    "shop.example.com",
                    false,
                    vec!["spec.routes"],
                )],
            ),
            (
                "another path stays: only bosun's is removed",
                Some(domain(&[("/", &[7]), ("/blog", &[9])], true)),
                vec![(
                    Update,
                    "domain",
                    "shop.example.com",
                    false,
                    vec!["spec.routes"],
                )],
            ),
        ];
        for (case, found, want) in rows {
            let observed = Observed {
                team: 1,
                domain: found,
            };
            let req = request(&owning, &[("/", &["7"])], 1, Mode::SEND);
            let plan = plan_domain_deletion(&req, &observed).plan;
            table::assert_steps(&plan, &want, case);
            // Only bosun's path is shown leaving, whatever else stays.
            if let Some(step) = plan.steps.first() {
                let change = (
                    step.changes[0].from.as_deref(),
                    step.changes[0].to.as_deref(),
                );
                assert_eq!(change, (Some(r#"{"/":[7]}"#), Some("{}")), "{case}");
            }
        }
    }

    #[test]
    fn plan_table() {
        use StepAction::{Create, Start, Update};
        let fresh = DomainBindingStatus::default();
        let owning = DomainBindingStatus {
            owned_paths: vec!["/".into()],
            ..Default::default()
        };
        let name = "shop.example.com";
        type Case<'a> = (
            &'a str,
            &'a DomainBindingStatus,
            i64,
            Option<Domain>,
            Vec<table::Row<'a>>,
            Reason,
        );
        let rows: Vec<Case<'_>> = vec![
            (
                "absent: the whole rollout",
                &fresh,
                1,
                None,
                vec![
                    (Create, "domain", name, false, vec![]),
                    (Update, "domain", name, false, vec!["spec.routes"]),
                    (Start, "domain", name, false, vec![]),
                ],
                Reason::NotFound,
            ),
            (
                "in sync and verified",
                &owning,
                1,
                Some(domain(&[("/", &[7]), ("/blog", &[9])], true)),
                vec![],
                Reason::Available,
            ),
            (
                "a path changed at the platform",
                &owning,
                1,
                Some(domain(&[("/", &[8]), ("/blog", &[9])], true)),
                vec![(Update, "domain", name, true, vec!["spec.routes"])],
                Reason::Available,
            ),
            (
                "a new spec routes differently: no drift",
                &owning,
                2,
                Some(domain(&[("/", &[8])], true)),
                vec![(Update, "domain", name, false, vec!["spec.routes"])],
                Reason::Available,
            ),
            (
                "not verified yet",
                &owning,
                1,
                Some(domain(&[("/", &[7])], false)),
                vec![(Start, "domain", name, false, vec![])],
                Reason::DomainNotVerified,
            ),
        ];
        for (case, previous, generation, observed, steps, reason) in rows {
            let request = request(previous, &[("/", &["7"])], generation, Mode::SEND);
            let observed = Observed {
                team: 1,
                domain: observed,
            };
            let planned = plan_domain(&request, &observed).expect(case);
            table::assert_steps(&planned.plan, &steps, case);
            assert_eq!(planned.report.readiness.reason, reason, "{case}");
        }
    }

    #[test]
    fn a_route_change_keeps_the_paths_of_others_and_says_what_moves() {
        let owning = DomainBindingStatus {
            owned_paths: vec!["/".into()],
            ..Default::default()
        };
        let request = request(&owning, &[("/", &["7"])], 1, Mode::SEND);
        let observed = Observed {
            team: 1,
            domain: Some(domain(&[("/", &[8]), ("/blog", &[9])], true)),
        };
        let planned = plan_domain(&request, &observed).expect("plan");
        let step = &planned.plan.steps[0];
        assert_eq!(
            step.op,
            DomainOp::Connect {
                team: 1,
                name: "shop.example.com".into(),
                connections: map(&[("/", &[7]), ("/blog", &[9])]),
                owned: vec!["/".into()],
            }
        );
        assert_eq!(step.changes[0].from.as_deref(), Some(r#"{"/":[8]}"#));
        assert_eq!(step.changes[0].to.as_deref(), Some(r#"{"/":[7]}"#));
    }

    #[test]
    fn ownership_of_paths_already_routed_is_taken_only_when_managed() {
        let fresh = DomainBindingStatus::default();
        let observed = Observed {
            team: 1,
            domain: Some(domain(&[("/", &[7])], true)),
        };
        let managed = plan_domain(&request(&fresh, &[("/", &["7"])], 1, Mode::SEND), &observed)
            .expect("plan");
        assert!(managed.plan.is_empty());
        assert_eq!(managed.report.status.owned_paths, vec!["/".to_string()]);
        let observe = Mode::SEND.governed_by(crate::api::ManagementPolicy::Observe);
        let observed_only =
            plan_domain(&request(&fresh, &[("/", &["7"])], 1, observe), &observed).expect("plan");
        assert!(observed_only.report.status.owned_paths.is_empty());
        assert_eq!(observed_only.report.sync, SyncState::Observing);
    }

    #[test]
    fn an_observed_domain_that_does_not_exist_is_stalled() {
        let fresh = DomainBindingStatus::default();
        let observe = Mode::SEND.governed_by(crate::api::ManagementPolicy::Observe);
        let planned = plan_domain(
            &request(&fresh, &[("/", &["7"])], 1, observe),
            &Observed {
                team: 1,
                domain: None,
            },
        )
        .expect("plan");
        assert!(matches!(
            planned.report.sync,
            SyncState::Stalled {
                reason: Reason::ExternalObjectNotFound,
                ..
            }
        ));
    }

    #[test]
    fn merge_keeps_paths_bosun_does_not_own() {
        let observed = map(&[("/", &[1]), ("/blog", &[9])]);
        let owned = BTreeSet::from(["/".to_string()]);
        let merged = merge_connections(&observed, &owned, &map(&[("/", &[2, 3])]));
        assert_eq!(merged, map(&[("/", &[2, 3]), ("/blog", &[9])]));
    }

    #[test]
    fn merge_removes_paths_bosun_no_longer_wants() {
        let observed = map(&[("/", &[1]), ("/api", &[4]), ("/blog", &[9])]);
        let owned = BTreeSet::from(["/".to_string(), "/api".to_string()]);
        let merged = merge_connections(&observed, &owned, &map(&[("/", &[1])]));
        assert_eq!(merged, map(&[("/", &[1]), ("/blog", &[9])]));
        // Deleting the binding removes all of its paths and nothing else.
        assert_eq!(
            merge_connections(&observed, &owned, &BTreeMap::new()),
            map(&[("/blog", &[9])])
        );
    }

    #[test]
    fn merge_is_stable_when_nothing_changes() {
        let observed = map(&[("/", &[2, 3])]);
        let owned = BTreeSet::from(["/".to_string()]);
        assert_eq!(
            merge_connections(&observed, &owned, &map(&[("/", &[3, 2, 3])])),
            observed
        );
    }
}
