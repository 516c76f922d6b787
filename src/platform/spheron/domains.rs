//! DomainBinding on Spheron: a custom domain of the site project or compute instance that one
//! Workspace runs on, verified by Spheron once the user's DNS points at it.
//!
//! A Spheron domain belongs to one project (a site) or one compute instance and serves all of
//! it, so a binding has exactly one route, `/`, to one Workspace; anything else is
//! `UnsupportedByProvider` naming `spec.routes`. A route moved to another Workspace moves the
//! domain (removed from the old owner, added to the new one).
//!
//! Verification: bosun adds the domain, shows the DNS records to create in
//! `status.verification.dnsRecords` (Spheron's CDN targets: an `A` record for an apex domain, a
//! `CNAME` for a subdomain), and asks Spheron to verify on every poll until it is `Verified`.
//! The binding is Ready only then. A verify call Spheron refuses is `Failed`, with its words.
//!
//! `status.externalId` names the owner and the domain the way the API's paths do:
//! `projects/<id>/domains/<id>` or `compute-instances/<id>/domains/<id>`, so deletion needs no
//! lookup (a deleted binding has no routes left to resolve).

use super::client::{
    CdnRecords, ComputeDeploymentStatus, Deleted, Domain, DomainType, NewDomain, NewInstanceDomain,
    SpheronClient,
};
use crate::api::{DnsRecord, DomainBindingStatus, DomainVerification};
use crate::core::conditions::{Readiness, SyncState};
use crate::core::deletion::{self, Deletion, DeletionSeam};
use crate::core::drivers::{awaiting_dns, dns_records_text, DomainDriver, DomainRequest};
use crate::core::error::ReconcileError;
use crate::core::plan::{
    self, Change, Flow, NameIsTheKey, ObjectId, Plan, PlanSeam, Planned, Step, StepAction,
};
use crate::core::reason::Reason;
use crate::core::reconciler::{Cleanup, Note, Report};
use crate::core::seam::{ErrorKind, PlatformError};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

/// How often an unverified domain is checked again (DNS changes take minutes).
pub const VERIFY_POLL: Duration = Duration::from_secs(30);
/// How long the CDN records are reused: they are the same for every domain.
const CDN_TTL: Duration = Duration::from_secs(600);

/// What a domain belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// A site project.
    Project(String),
    /// A compute instance.
    Instance(String),
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Project(id) => write!(f, "Spheron project {id}"),
            Owner::Instance(id) => write!(f, "Spheron compute instance {id}"),
        }
    }
}

/// A domain at Spheron, as `status.externalId` records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainRef {
    pub owner: Owner,
    pub domain_id: String,
}

impl DomainRef {
    /// Reads `projects/<id>/domains/<id>` or `compute-instances/<id>/domains/<id>` (pure).
    pub fn parse(s: &str) -> Option<DomainRef> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [kind, owner, "domains", domain] if !owner.is_empty() && !domain.is_empty() => {
                let owner = match *kind {
                    "projects" => Owner::Project(owner.to_string()),
                    "compute-instances" => Owner::Instance(owner.to_string()),
                    _ => return None,
                };
                Some(DomainRef {
                    owner,
                    domain_id: domain.to_string(),
                })
            }
            _ => None,
        }
    }
}

impl fmt::Display for DomainRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.owner {
            Owner::Project(id) => write!(f, "projects/{id}/domains/{}", self.domain_id),
            Owner::Instance(id) => write!(f, "compute-instances/{id}/domains/{}", self.domain_id),
        }
    }
}

/// The Workspace id a binding's routes send the domain to (pure): one `/` route to one
/// Workspace is all a Spheron domain can express.
pub fn desired_workspace(routes: &BTreeMap<String, Vec<String>>) -> Result<&str, ReconcileError> {
    let unsupported = |what: String| {
        ReconcileError::user(
            Reason::UnsupportedByProvider,
            format!("spec.routes: a Spheron domain belongs to one site or compute instance and serves all of it, so use one route with path / and one workspace ({what})"),
        )
    };
    match routes.iter().collect::<Vec<_>>().as_slice() {
        [] => Err(unsupported("no route given".into())),
        [(path, ids)] if path.as_str() == "/" => match ids.as_slice() {
            [id] => Ok(id.as_str()),
            _ => Err(unsupported(format!("/ has {} workspaces", ids.len()))),
        },
        [(path, _)] => Err(unsupported(format!("the route is {path}"))),
        many => Err(unsupported(format!("{} routes given", many.len()))),
    }
}

/// Whether a name is an apex domain (an `A` record) or a subdomain (a `CNAME`) (pure). Two
/// labels make an apex; a public suffix of two labels (`example.co.uk`) is taken for a
/// subdomain, whose CNAME Spheron also accepts.
pub fn domain_type(name: &str) -> DomainType {
    if name.trim_end_matches('.').split('.').count() <= 2 {
        DomainType::Domain
    } else {
        DomainType::Subdomain
    }
}

/// The DNS records the user must create, in status form (pure).
pub fn records(domain: &Domain, cdn: &CdnRecords) -> Vec<DnsRecord> {
    super::client::dns_records(domain, cdn)
        .into_iter()
        .map(|r| DnsRecord {
            type_: r.record_type.to_string(),
            name: r.name,
            value: r.value,
        })
        .collect()
}

/// `status.verification` (pure): `Verified`, `Failed` with Spheron's words, or `Pending`.
pub fn verification(
    verified: bool,
    refused: Option<String>,
    dns_records: Vec<DnsRecord>,
) -> DomainVerification {
    let (state, message) = match (verified, refused) {
        (true, _) => ("Verified", None),
        (false, Some(why)) => ("Failed", Some(why)),
        (false, None) => (
            "Pending",
            Some("waiting for the DNS records to be in place".to_string()),
        ),
    };
    DomainVerification {
        state: state.into(),
        dns_records,
        message,
    }
}

#[derive(Clone, Debug)]
pub struct Target {
    owner: Owner,
    /// The instance's URL (an instance domain needs a link).
    link: Option<String>,
    /// The deployment environment of a project to attach the domain to.
    environment: Option<String>,
}

impl SpheronClient {
    /// The CDN records, read at most every [`CDN_TTL`].
    async fn cdn_records_cached(&self) -> Result<CdnRecords, PlatformError> {
        if let Some((at, records)) = self
            .shared
            .cdn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            if at.elapsed() < CDN_TTL {
                return Ok(records);
            }
        }
        let records = self.cdn_records().await?;
        *self.shared.cdn.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), records.clone()));
        Ok(records)
    }

    /// What a Workspace id is at Spheron: from the shared listings of the default
    /// organization, else read by id.
    async fn target_of(&self, id: &str) -> Result<Target, ReconcileError> {
        let org = self.organization_for(None).await.ok();
        let mut instance = None;
        let mut project = None;
        if let Some(org) = &org {
            instance = self
                .instances_of(org)
                .await?
                .iter()
                .find(|i| i.id == id)
                .cloned();
            if instance.is_none() {
                project = self
                    .projects_of(org)
                    .await?
                    .iter()
                    .find(|p| p.id == id)
                    .cloned();
            }
        }
        if instance.is_none() && project.is_none() {
            instance = self.get_compute_instance(id).await?;
            if instance.is_none() {
                project = self.get_project(id).await?;
            }
        }
        if let Some(i) = instance {
            let running = match i.active_deployment.as_deref() {
                Some(d) => self.compute_deployment(d).await?,
                None => None,
            };
            let link = running
                .filter(|d| d.status == ComputeDeploymentStatus::Deployed)
                .and_then(|d| {
                    d.services
                        .first()
                        .and_then(|s| s.url_preview.clone())
                        .or(d.url_preview)
                });
            return Ok(Target {
                owner: Owner::Instance(i.id),
                link,
                environment: None,
            });
        }
        if let Some(p) = project {
            // The production environment serves the project's tracked branch; attaching the
            // domain to it keeps the records valid across redeploys.
            let environment = p
                .deployment_environments
                .iter()
                .find(|e| e.name.eq_ignore_ascii_case("Production"))
                .or(p.deployment_environments.first())
                .map(|e| {
                    if e.id.is_empty() {
                        e.name.clone()
                    } else {
                        e.id.clone()
                    }
                });
            return Ok(Target {
                owner: Owner::Project(p.id),
                link: None,
                environment,
            });
        }
        Err(ReconcileError::waiting(
            Reason::WorkspaceNotCreated,
            format!("Spheron has no project or compute instance {id} (yet)"),
        ))
    }

    async fn owner_domains(&self, owner: &Owner) -> Result<Vec<Domain>, PlatformError> {
        match owner {
            Owner::Project(id) => self.list_project_domains(id).await,
            Owner::Instance(id) => self.list_instance_domains(id).await,
        }
    }

    async fn add_domain(&self, target: &Target, name: &str) -> Result<Domain, PlatformError> {
        match &target.owner {
            Owner::Project(id) => {
                self.create_project_domain(
                    id,
                    &NewDomain {
                        name: name.to_string(),
                        domain_type: domain_type(name),
                        link: None,
                        deployment_environments: target.environment.clone().map(|e| vec![e]),
                    },
                )
                .await
            }
            Owner::Instance(id) => {
                self.create_instance_domain(
                    id,
                    &NewInstanceDomain {
                        link: target.link.clone().unwrap_or_default(),
                        domain_type: domain_type(name),
                        name: name.to_string(),
                    },
                )
                .await
            }
        }
    }

    async fn verify_domain(
        &self,
        owner: &Owner,
        domain_id: &str,
    ) -> Result<super::client::DomainVerification, PlatformError> {
        match owner {
            Owner::Project(id) => self.verify_project_domain(id, domain_id).await,
            Owner::Instance(id) => self.verify_instance_domain(id, domain_id).await,
        }
    }

    async fn remove_domain(
        &self,
        owner: &Owner,
        domain_id: &str,
    ) -> Result<Deleted, PlatformError> {
        match owner {
            Owner::Project(id) => self.delete_project_domain(id, domain_id).await,
            Owner::Instance(id) => self.delete_instance_domain(id, domain_id).await,
        }
    }
}

/// What `observe` found: the site or instance the spec routes the domain to, where status
/// last saw it, the domain on the target if it is there, and where DNS must point.
pub struct Observed {
    target: Target,
    previous: Option<DomainRef>,
    found: Option<Domain>,
    cdn: CdnRecords,
}

/// The request a DomainBinding step carries.
#[derive(Clone, Debug)]
pub enum DomainOp {
    /// Takes the domain off the site or instance it was on (Spheron keeps names unique).
    Remove(DomainRef),
    Add {
        target: Target,
        cdn: CdnRecords,
    },
    /// Asks Spheron to check the DNS records of the step's domain now.
    Verify(Owner),
}

/// What Spheron answers a step with.
pub enum DomainAnswer {
    Removed,
    Added(Box<Domain>, Vec<DnsRecord>),
    Verified(bool),
    /// Spheron refused to verify, in its words.
    Refused(String),
}

/// The DNS records status shows for the domain.
fn records_shown(report: &Report<DomainBindingStatus>) -> Vec<DnsRecord> {
    report
        .status
        .verification
        .as_ref()
        .map(|v| v.dns_records.clone())
        .unwrap_or_default()
}

/// The report of a domain that waits for its DNS records (pure).
fn waiting_for_dns(report: &mut Report<DomainBindingStatus>, observing: bool) {
    let records = records_shown(report);
    awaiting_dns(report, &records, VERIFY_POLL, observing);
    report.status.verification = Some(verification(false, None, records));
}

fn verified(report: &mut Report<DomainBindingStatus>, name: &str, owner: &Owner, observing: bool) {
    report.status.verification = Some(verification(true, None, records_shown(report)));
    report.settle(
        Readiness::ready(Reason::Available, format!("{name} is verified on {owner}")),
        observing,
    );
}

/// The report of a domain Spheron refused to verify (pure): Stalled until the user fixes
/// the records and asks again.
fn refused(report: &mut Report<DomainBindingStatus>, name: &str, why: &str) {
    let records = records_shown(report);
    let wanted = dns_records_text(&records);
    report.status.verification = Some(verification(false, Some(why.to_string()), records));
    report.stall(
        Reason::VerificationFailed,
        format!(
            "Spheron refused to verify {name}: {why}; check the DNS records ({wanted}) and set bosun.dev/reconcile-requested-at to try again"
        ),
    );
}

/// Plans a DomainBinding (pure): move the domain off the site or instance it was on when the
/// route changed, add it to the spec's, and ask for verification until it is verified.
fn plan_domain(
    request: &DomainRequest<'_>,
    observed: &Observed,
) -> Planned<DomainOp, DomainBindingStatus> {
    let name = request.domain.to_string();
    let owner = &observed.target.owner;
    let observing = request.mode.observing();
    let mut status = request.previous.clone();
    if request.mode.hold.is_none() {
        status.owned_paths = request.routes.keys().cloned().collect();
    }
    let domain = |id: ObjectId| plan::Target {
        kind: "domain",
        name: name.clone(),
        id,
    };
    let mut plan = Plan::default();
    let moved = observed.previous.clone().filter(|p| &p.owner != owner);
    if let Some(prev) = &moved {
        plan.push(Step {
            action: StepAction::Delete,
            target: domain(ObjectId::Known(prev.domain_id.clone())),
            changes: vec![Change::new(
                "spec.routes",
                Some(prev.owner.to_string()),
                Some(owner.to_string()),
            )],
            drift: false,
            summary: format!("take {name} off {}", prev.owner),
            deadline: None,
            record: None,
            op: DomainOp::Remove(prev.clone()),
        });
    }
    let mut report = Report::settled(
        status,
        Vec::new(),
        Readiness::not_ready(Reason::NotFound, String::new()),
        false,
    );
    let verify_target = match &observed.found {
        Some(d) => {
            report.status.external_id = Some(
                DomainRef {
                    owner: owner.clone(),
                    domain_id: d.id.clone(),
                }
                .to_string(),
            );
            report.status.verification =
                Some(verification(d.verified, None, records(d, &observed.cdn)));
            if d.verified {
                verified(&mut report, &name, owner, observing);
                None
            } else {
                waiting_for_dns(&mut report, observing);
                Some(ObjectId::Known(d.id.clone()))
            }
        }
        None => {
            let msg = format!("{owner} has no domain {name}");
            report.readiness = Readiness::not_ready(Reason::NotFound, msg.clone());
            if observing {
                report.sync = SyncState::Stalled {
                    reason: Reason::ExternalObjectNotFound,
                    message: msg,
                };
            }
            let add = plan.push(Step {
                action: StepAction::Create,
                target: domain(ObjectId::New),
                changes: Vec::new(),
                drift: false,
                summary: format!("add domain {name} to {owner}"),
                deadline: None,
                record: None,
                op: DomainOp::Add {
                    target: observed.target.clone(),
                    cdn: observed.cdn.clone(),
                },
            });
            Some(ObjectId::FromStep(add))
        }
    };
    if let Some(id) = verify_target {
        plan.push(Step {
            action: StepAction::Start,
            target: domain(id),
            changes: Vec::new(),
            drift: false,
            summary: format!("ask Spheron to check the DNS records of {name}"),
            deadline: None,
            record: None,
            op: DomainOp::Verify(owner.clone()),
        });
    }
    if let (Some(prev), true) = (&moved, observing) {
        // An observed domain is reported where it is.
        report.readiness = Readiness::not_ready(
            Reason::RoutesDiffer,
            format!("{name} is on {}, the spec routes it to {owner}", prev.owner),
        );
        report.sync = SyncState::Observing;
        report.requeue_after = None;
    }
    Planned {
        plan,
        report,
        adopt: None,
    }
}

#[async_trait]
impl<'r> PlanSeam<DomainRequest<'r>, DomainBindingStatus> for SpheronClient {
    type Answer = DomainAnswer;
    type Op = DomainOp;
    type Observation = Observed;

    async fn observe(&self, request: &DomainRequest<'r>) -> Result<Observed, ReconcileError> {
        let workspace = desired_workspace(&request.routes)?;
        let target = self.target_of(workspace).await?;
        let found = self
            .owner_domains(&target.owner)
            .await?
            .into_iter()
            .find(|d| d.name.eq_ignore_ascii_case(request.domain));
        Ok(Observed {
            target,
            previous: request
                .previous
                .external_id
                .as_deref()
                .and_then(DomainRef::parse),
            found,
            cdn: self.cdn_records_cached().await?,
        })
    }

    fn plan(
        &self,
        request: &DomainRequest<'r>,
        observed: &Observed,
    ) -> Result<Planned<DomainOp, DomainBindingStatus>, ReconcileError> {
        Ok(plan_domain(request, observed))
    }

    async fn execute(
        &self,
        step: &Step<DomainOp>,
        answers: &[DomainAnswer],
    ) -> Result<DomainAnswer, ReconcileError> {
        Ok(match &step.op {
            DomainOp::Remove(prev) => {
                self.remove_domain(&prev.owner, &prev.domain_id).await?;
                DomainAnswer::Removed
            }
            DomainOp::Add { target, cdn } => {
                let d = self.add_domain(target, &step.target.name).await?;
                let dns = records(&d, cdn);
                DomainAnswer::Added(Box::new(d), dns)
            }
            DomainOp::Verify(owner) => {
                let id: String =
                    plan::resolve_id("a domain", &step.target.id, answers, |a| match a {
                        DomainAnswer::Added(d, _) => Some(d.id.clone()),
                        _ => None,
                    })?;
                match self.verify_domain(owner, &id).await {
                    Ok(v) => DomainAnswer::Verified(v.verified()),
                    Err(e) if e.kind == ErrorKind::Invalid => DomainAnswer::Refused(e.message),
                    Err(e) => return Err(e.into()),
                }
            }
        })
    }

    fn answered_id(&self, answer: &DomainAnswer) -> Option<String> {
        match answer {
            DomainAnswer::Added(d, _) => Some(d.id.clone()),
            _ => None,
        }
    }

    fn answered(
        &self,
        report: &mut Report<DomainBindingStatus>,
        step: &Step<DomainOp>,
        answer: &DomainAnswer,
    ) -> Flow {
        let name = &step.target.name;
        match (&step.op, answer) {
            (DomainOp::Remove(prev), _) => {
                let (_, to) = step.first_change();
                report.notes.push(Note::normal(
                    Reason::RoutesUpdated,
                    "Route",
                    format!("moved {name} from {} to {to}", prev.owner),
                ));
                report.status.external_id = None;
            }
            (DomainOp::Add { target, .. }, DomainAnswer::Added(d, dns)) => {
                report.notes.push(Note::normal(
                    Reason::Created,
                    "Create",
                    format!("added domain {name} to {}", target.owner),
                ));
                report.status.external_id = Some(
                    DomainRef {
                        owner: target.owner.clone(),
                        domain_id: d.id.clone(),
                    }
                    .to_string(),
                );
                report.status.verification = Some(verification(false, None, dns.clone()));
                waiting_for_dns(report, false);
            }
            (DomainOp::Verify(owner), DomainAnswer::Verified(true)) => {
                report.notes.push(Note::normal(
                    Reason::Verified,
                    "Verify",
                    format!("Spheron verified {name}"),
                ));
                verified(report, name, owner, false);
            }
            (DomainOp::Verify(_), DomainAnswer::Refused(why)) => refused(report, name, why),
            _ => {}
        }
        Flow::Continue
    }
}

#[async_trait]
impl DomainDriver for SpheronClient {
    async fn reconcile(
        &self,
        request: &DomainRequest<'_>,
    ) -> Result<Report<DomainBindingStatus>, ReconcileError> {
        plan::reconcile(self, request, request.mode, &NameIsTheKey).await
    }

    async fn delete(&self, request: &DomainRequest<'_>) -> Result<Cleanup, ReconcileError> {
        deletion::delete(self, request).await
    }
}

/// Deleting a DomainBinding (pure): the domain goes from the site or instance status last saw
/// it on. Nothing to read first: a 404 (the domain, its project or instance gone) counts as
/// removed.
pub fn plan_domain_deletion(request: &DomainRequest<'_>) -> Deletion<DomainRef> {
    let Some(at) = request
        .previous
        .external_id
        .as_deref()
        .and_then(DomainRef::parse)
    else {
        return Deletion::default();
    };
    let mut plan = Plan::default();
    let target = plan::Target {
        kind: "domain",
        name: request.domain.to_string(),
        id: ObjectId::Known(at.domain_id.clone()),
    };
    let summary = format!("remove domain {} from {}", request.domain, at.owner);
    plan.push(Step::plain(StepAction::Delete, target, summary, at));
    Deletion {
        plan,
        left: Vec::new(),
    }
}

#[async_trait]
impl<'r> DeletionSeam<DomainRequest<'r>> for SpheronClient {
    type Remains = ();
    type Op = DomainRef;
    type Answer = Deleted;

    async fn observe_remains(&self, _: &DomainRequest<'r>) -> Result<(), ReconcileError> {
        Ok(())
    }

    fn plan_deletion(
        &self,
        request: &DomainRequest<'r>,
        _: &(),
    ) -> Result<Deletion<DomainRef>, ReconcileError> {
        Ok(plan_domain_deletion(request))
    }

    async fn execute_deletion(&self, step: &Step<DomainRef>) -> Result<Deleted, ReconcileError> {
        Ok(self
            .remove_domain(&step.op.owner, &step.op.domain_id)
            .await?)
    }

    fn removed(&self, step: &Step<DomainRef>, answer: &Deleted) -> Note {
        let (domain, owner) = (&step.target.name, &step.op.owner);
        let message = match answer {
            Deleted::Done => format!("removed domain {domain} from {owner}"),
            Deleted::AlreadyGone => format!("domain {domain} is gone from {owner}"),
        };
        Note::normal(Reason::Deleted, "Delete", message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::plan::table;
    use crate::core::reconciler::Mode;

    fn routes(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(p, ids)| (p.to_string(), ids.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    fn domain(name: &str, kind: &str) -> Domain {
        serde_json::from_value(serde_json::json!({
            "_id": "65f000000000000000001111", "name": name, "type": kind, "verified": false
        }))
        .expect("domain")
    }

    fn observed(previous: Option<&str>, found: Option<Domain>) -> Observed {
        Observed {
            target: Target {
                owner: Owner::Project("p2".into()),
                link: None,
                environment: Some("production".into()),
            },
            previous: previous.and_then(DomainRef::parse),
            found,
            cdn: CdnRecords {
                ipv4: Some("203.0.113.7".into()),
                cname: Some("cdn.spheron.app".into()),
            },
        }
    }

    fn verified_domain() -> Domain {
        let mut d = domain("docs.example.com", "subdomain");
        d.verified = true;
        d
    }

    #[test]
    fn deletion_plan_table() {
        use StepAction::Delete;
        let at = |id: Option<&str>| DomainBindingStatus {
            external_id: id.map(str::to_string),
            owned_paths: vec!["/".into()],
            ..Default::default()
        };
        let (site, instance, none) = (
            at(Some("projects/p2/domains/d1")),
            at(Some("compute-instances/i1/domains/d2")),
            at(None),
        );
        let rows: Vec<(&str, &DomainBindingStatus, Vec<table::Row<'_>>)> = vec![
            ("never added", &none, vec![]),
            (
                "on a site",
                &site,
                vec![(Delete, "domain", "d1", false, vec![])],
            ),
            (
                "on an instance",
                &instance,
                vec![(Delete, "domain", "d2", false, vec![])],
            ),
        ];
        for (case, previous, want) in rows {
            let request = DomainRequest::for_test("docs.example.com", &[("/", &["p2"])], previous);
            table::assert_steps(&plan_domain_deletion(&request).plan, &want, case);
        }
    }

    #[test]
    fn plan_table() {
        use StepAction::{Create, Delete, Start};
        let previous = DomainBindingStatus {
            owned_paths: vec!["/".into()],
            ..Default::default()
        };
        let id = "65f000000000000000001111";
        let rows: Vec<(&str, Observed, Vec<table::Row<'_>>, Reason)> = vec![
            (
                "absent: add, then verify",
                observed(None, None),
                vec![
                    (Create, "domain", "<new>", false, vec![]),
                    (Start, "domain", "<step 1>", false, vec![]),
                ],
                Reason::NotFound,
            ),
            (
                "verified",
                observed(Some("projects/p2/domains/x"), Some(verified_domain())),
                vec![],
                Reason::Available,
            ),
            (
                "waiting for DNS",
                observed(None, Some(domain("docs.example.com", "subdomain"))),
                vec![(Start, "domain", id, false, vec![])],
                Reason::DomainNotVerified,
            ),
            (
                "the route moved to another site",
                observed(Some("projects/p1/domains/d1"), None),
                vec![
                    (Delete, "domain", "d1", false, vec!["spec.routes"]),
                    (Create, "domain", "<new>", false, vec![]),
                    (Start, "domain", "<step 2>", false, vec![]),
                ],
                Reason::NotFound,
            ),
        ];
        for (case, observed, steps, reason) in rows {
            let request = DomainRequest::for_test("docs.example.com", &[("/", &["p2"])], &previous);
            let planned = plan_domain(&request, &observed);
            table::assert_steps(&planned.plan, &steps, case);
            assert_eq!(planned.report.readiness.reason, reason, "{case}");
        }
    }

    #[test]
    fn a_refused_verification_stalls_naming_the_records_to_fix() {
        let previous = DomainBindingStatus::default();
        let request = DomainRequest::for_test("docs.example.com", &[("/", &["p2"])], &previous);
        let observed = observed(None, Some(domain("docs.example.com", "subdomain")));
        let mut report = plan_domain(&request, &observed).report;
        refused(&mut report, "docs.example.com", "no CNAME found");
        assert!(matches!(
            report.sync,
            SyncState::Stalled {
                reason: Reason::VerificationFailed,
                ..
            }
        ));
        assert!(report.readiness.message.contains("no CNAME found"));
        assert!(
            report
                .readiness
                .message
                .contains("CNAME docs.example.com cdn.spheron.app"),
            "{}",
            report.readiness.message
        );
        let v = report.status.verification.expect("verification");
        assert_eq!(v.state, "Failed");
        assert_eq!(v.message.as_deref(), Some("no CNAME found"));
        assert_eq!(report.requeue_after, None);
    }

    #[test]
    fn an_observed_domain_on_another_site_is_reported_where_it_is() {
        let previous = DomainBindingStatus::default();
        let request = DomainRequest {
            key: "team/docs".into(),
            domain: "docs.example.com",
            routes: routes(&[("/", &["p2"])]),
            tls: true,
            previous: &previous,
            generation: 1,
            observed_generation: Some(1),
            mode: Mode::SEND.governed_by(crate::api::ManagementPolicy::Observe),
        };
        let planned = plan_domain(&request, &observed(Some("projects/p1/domains/d1"), None));
        assert_eq!(planned.report.readiness.reason, Reason::RoutesDiffer);
        assert_eq!(planned.report.sync, SyncState::Observing);
        assert!(planned.report.status.owned_paths.is_empty());
    }

    #[test]
    fn one_root_route_to_one_workspace_is_all_a_domain_can_do() {
        assert_eq!(
            desired_workspace(&routes(&[("/", &["abc"])])).ok(),
            Some("abc")
        );
        for bad in [
            routes(&[]),
            routes(&[("/api", &["abc"])]),
            routes(&[("/", &["abc", "def"])]),
            routes(&[("/", &["abc"]), ("/blog", &["def"])]),
        ] {
            let err = desired_workspace(&bad).expect_err("unsupported");
            assert_eq!(err.reason(), Reason::UnsupportedByProvider);
            assert!(err.to_string().contains("spec.routes"), "{err}");
        }
    }

    #[test]
    fn external_ids_name_owner_and_domain_and_read_back() {
        for r in [
            DomainRef {
                owner: Owner::Project("p1".into()),
                domain_id: "d1".into(),
            },
            DomainRef {
                owner: Owner::Instance("i1".into()),
                domain_id: "d2".into(),
            },
        ] {
            assert_eq!(DomainRef::parse(&r.to_string()), Some(r.clone()));
        }
        assert_eq!(
            DomainRef {
                owner: Owner::Project("p1".into()),
                domain_id: "d1".into()
            }
            .to_string(),
            "projects/p1/domains/d1"
        );
        for bad in [
            "",
            "d1",
            "projects/p1",
            "teams/p1/domains/d1",
            "projects//domains/d1",
        ] {
            assert_eq!(DomainRef::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn apex_domains_get_a_records_and_subdomains_cnames() {
        assert_eq!(domain_type("example.com"), DomainType::Domain);
        assert_eq!(domain_type("shop.example.com"), DomainType::Subdomain);
        assert_eq!(domain_type("a.b.example.com"), DomainType::Subdomain);
        let cdn = CdnRecords {
            ipv4: Some("192.0.2.10".into()),
            cname: Some("cname.example.net".into()),
        };
        let apex = records(&domain("example.com", "domain"), &cdn);
        assert_eq!(
            apex,
            vec![DnsRecord {
                type_: "A".into(),
                name: "example.com".into(),
                value: "192.0.2.10".into()
            }]
        );
        let sub = records(&domain("shop.example.com", "subdomain"), &cdn);
        assert_eq!(sub[0].type_, "CNAME");
        assert_eq!(sub[0].value, "cname.example.net");
    }

    #[test]
    fn verification_states() {
        let v = verification(true, None, Vec::new());
        assert_eq!((v.state.as_str(), v.message), ("Verified", None));
        let v = verification(false, None, Vec::new());
        assert_eq!(v.state, "Pending");
        let v = verification(false, Some("no such record".into()), Vec::new());
        assert_eq!(
            (v.state.as_str(), v.message.as_deref()),
            ("Failed", Some("no such record"))
        );
        // A verified domain is Verified even if a later call was refused.
        assert_eq!(
            verification(true, Some("x".into()), Vec::new()).state,
            "Verified"
        );
    }

    #[test]
    fn owners_print_what_they_are() {
        assert_eq!(Owner::Project("p".into()).to_string(), "Spheron project p");
        assert_eq!(
            Owner::Instance("i".into()).to_string(),
            "Spheron compute instance i"
        );
    }
}
