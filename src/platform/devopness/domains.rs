//! DomainBinding on Devopness: a name-based virtual host in the application's environment,
//! deployed to the application's servers, with a Let's Encrypt certificate when `spec.tls`.
//!
//! A virtual host serves a whole domain from one application, so a binding has one route,
//! `/`, to one Workspace. Devopness does not verify domain ownership itself: the domain works
//! (and Let's Encrypt can validate it over HTTP) once its DNS points at the servers, so the
//! records to create are A records for the application's servers' addresses.

use super::client::{
    ActionStatus, CreateSslCertificate, CreateVirtualHost, Deleted, Devopness, UpdateVirtualHost,
    VirtualHost,
};
use crate::api::{DnsRecord, DomainBindingStatus, DomainVerification};
use crate::core::conditions::{Readiness, SyncState};
use crate::core::deletion::{self, Deletion, DeletionSeam};
use crate::core::drivers::{DomainDriver, DomainRequest};
use crate::core::error::ReconcileError;
use crate::core::plan::{
    self, Change, Flow, NameIsTheKey, ObjectId, Plan, PlanSeam, Planned, Step, StepAction, StepRef,
    Target,
};
use crate::core::reason::Reason;
use crate::core::reconciler::{Cleanup, Note, Report};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::time::Duration;

/// How often a virtual host deploy or a certificate being issued is looked at.
pub const DOMAIN_POLL: Duration = Duration::from_secs(5);

/// The application a binding's routes send the domain to (pure): none for a binding without
/// routes, one for a single `/` route to one Workspace, and an error naming what Devopness
/// cannot do otherwise.
pub fn desired_application(
    routes: &BTreeMap<String, Vec<String>>,
) -> Result<Option<i64>, ReconcileError> {
    let unsupported = |what: &str| {
        ReconcileError::user(
            Reason::UnsupportedByProvider,
            format!("spec.routes: a Devopness virtual host sends the whole domain to one application, so use one route with path / and one workspace ({what})"),
        )
    };
    match routes.iter().collect::<Vec<_>>().as_slice() {
        [] => Ok(None),
        [(path, ids)] if path.as_str() == "/" => match ids.as_slice() {
            [id] => id.parse().map(Some).map_err(|_| {
                ReconcileError::user(
                    Reason::ExternalIdInvalid,
                    format!("workspace id {id:?} is not a Devopness application id"),
                )
            }),
            _ => Err(unsupported(&format!("/ has {} workspaces", ids.len()))),
        },
        [(path, _)] => Err(unsupported(&format!("the route is {path}"))),
        many => Err(unsupported(&format!("{} routes given", many.len()))),
    }
}

/// Where a virtual host stands on the way to serving the domain (pure).
#[derive(Clone, Debug, PartialEq)]
pub enum HostState {
    /// Never deployed to the servers (or changed since): deploy it.
    NeedsDeploy,
    /// Its deploy action is running.
    Deploying(i64),
    /// Its last deploy failed.
    DeployFailed(i64),
    /// TLS is asked for and there is no certificate yet: request one.
    NeedsCertificate,
    /// The certificate is being issued by this action (if known).
    Issuing(Option<i64>),
    /// Issuing the certificate failed in this action.
    CertificateFailed(i64),
    /// Deployed, and with an active certificate where TLS is asked for.
    Serving,
}

pub fn host_state(vhost: &VirtualHost, tls: bool) -> HostState {
    match &vhost.last_action {
        None => return HostState::NeedsDeploy,
        Some(a) => match a.status {
            Some(ActionStatus::Completed) => {}
            Some(ActionStatus::Failed) => return HostState::DeployFailed(a.id),
            _ => return HostState::Deploying(a.id),
        },
    }
    if !tls {
        return HostState::Serving;
    }
    match &vhost.ssl_certificate {
        None => HostState::NeedsCertificate,
        Some(c) if c.active => HostState::Serving,
        Some(c) => match &c.last_action {
            Some(a) if a.status == Some(ActionStatus::Failed) => HostState::CertificateFailed(a.id),
            a => HostState::Issuing(a.as_ref().map(|a| a.id)),
        },
    }
}

/// A records pointing the domain at each server address (pure).
pub fn dns_records(domain: &str, addresses: &[String]) -> Vec<DnsRecord> {
    let mut addresses: Vec<&String> = addresses.iter().collect();
    addresses.sort();
    addresses.dedup();
    addresses
        .into_iter()
        .map(|ip| DnsRecord {
            type_: "A".into(),
            name: domain.to_string(),
            value: ip.clone(),
        })
        .collect()
}

/// What `observe` found: where the host belongs, the addresses DNS must point at, and the
/// virtual host if it exists.
pub struct Observed {
    env_id: i64,
    desired_app: Option<i64>,
    addresses: Vec<String>,
    vhost: Option<VirtualHost>,
    /// Why the host's last deploy or certificate failed, in the platform's words.
    failure: Option<String>,
}

/// The request a DomainBinding step carries.
#[derive(Clone, Debug, PartialEq)]
pub enum DomainOp {
    CreateHost {
        env_id: i64,
        body: CreateVirtualHost,
    },
    /// Sends the domain to another application.
    SetApplication(UpdateVirtualHost),
    /// Deploys the host (the step's object) to the application's servers.
    Deploy { again: bool },
    /// Requests a Let's Encrypt certificate for the host.
    RequestCertificate { env_id: i64, host: ObjectId },
    /// Removes a failed certificate, so that it can be requested again.
    RemoveCertificate(i64),
    /// Followed by later reconciles; never sent.
    Follow,
}

/// What Devopness answers a step with.
pub enum DomainAnswer {
    /// The id of the virtual host created.
    Host(i64),
    /// The action a deploy started.
    Action(i64),
    /// The certificate requested.
    Certificate(i64),
    Done,
}

/// The virtual host a step acts on: known, or from the create step's answer.
fn host_id(id: &ObjectId, answers: &[DomainAnswer]) -> Result<i64, ReconcileError> {
    plan::resolve_id("a virtual host", id, answers, |a| match a {
        DomainAnswer::Host(id) => Some(id.to_string()),
        _ => None,
    })
}

fn application_text(app: Option<i64>) -> String {
    app.map(|a| format!("application {a}"))
        .unwrap_or_else(|| "no application".into())
}

/// Deploys the host, then follows the deploy.
fn deploy_steps(plan: &mut Plan<DomainOp>, host: &Target, again: bool) {
    let deploy = plan.push(Step {
        action: StepAction::Start,
        target: host.clone(),
        changes: Vec::new(),
        drift: false,
        summary: if again {
            "deploy the virtual host to the servers again".into()
        } else {
            "deploy the virtual host to the application's servers".into()
        },
        deadline: None,
        record: None,
        op: DomainOp::Deploy { again },
    });
    plan.push(follow(
        "action",
        ObjectId::FromStep(deploy),
        &host.name,
        "follow the virtual host deploy until it completes",
    ));
}

/// Requests a certificate for the host, then follows its issuing.
fn certificate_steps(plan: &mut Plan<DomainOp>, env_id: i64, host: &Target) {
    let request = plan.push(Step {
        action: StepAction::Create,
        target: Target {
            kind: "certificate",
            name: host.name.clone(),
            id: ObjectId::New,
        },
        changes: Vec::new(),
        drift: false,
        summary: format!("request a Let's Encrypt certificate for {}", host.name),
        deadline: None,
        record: None,
        op: DomainOp::RequestCertificate {
            env_id,
            host: host.id.clone(),
        },
    });
    plan.push(follow(
        "certificate",
        ObjectId::FromStep(request),
        &host.name,
        "follow the certificate until Let's Encrypt issues it",
    ));
}

fn follow(kind: &'static str, id: ObjectId, name: &str, summary: &str) -> Step<DomainOp> {
    Step {
        action: StepAction::Await,
        target: Target {
            kind,
            name: name.to_string(),
            id,
        },
        changes: Vec::new(),
        drift: false,
        summary: summary.into(),
        deadline: None,
        record: None,
        op: DomainOp::Follow,
    }
}

/// Sets the verification to `Pending` (keeping the DNS records) and the object under way.
fn pending(
    report: &mut Report<DomainBindingStatus>,
    reason: Reason,
    message: String,
    verification_message: Option<&str>,
) {
    let records = report
        .status
        .verification
        .as_ref()
        .map(|v| v.dns_records.clone())
        .unwrap_or_default();
    report.status.verification = Some(DomainVerification {
        state: "Pending".into(),
        dns_records: records,
        message: verification_message.map(str::to_string),
    });
    report.progress(reason, message, DOMAIN_POLL);
}

/// Plans a DomainBinding (pure): create the virtual host if the environment has none, send it
/// to the spec's application, deploy it, and with `spec.tls` request its certificate; a
/// failed deploy or certificate is retried only when `bosun.dev/reconcile-requested-at` asks.
fn plan_domain(
    request: &DomainRequest<'_>,
    observed: &Observed,
) -> Planned<DomainOp, DomainBindingStatus> {
    let domain = request.domain;
    let env_id = observed.env_id;
    let desired_app = observed.desired_app;
    let mut status = request.previous.clone();
    if request.mode.hold.is_none() {
        status.owned_paths = request.routes.keys().cloned().collect();
    }
    let records = dns_records(domain, &observed.addresses);
    let verification = |state: &str, message: Option<String>| DomainVerification {
        state: state.into(),
        dns_records: records.clone(),
        message,
    };
    status.verification = Some(verification("Pending", None));
    let mut plan = Plan::default();
    let host = |id: ObjectId| Target {
        kind: "virtual host",
        name: domain.to_string(),
        id,
    };
    let (host, state) = match &observed.vhost {
        None => {
            plan.push(Step {
                action: StepAction::Create,
                target: host(ObjectId::New),
                changes: vec![Change::new(
                    "spec.routes",
                    None,
                    Some(application_text(desired_app)),
                )],
                drift: false,
                summary: format!("create virtual host {domain} in environment {env_id}"),
                deadline: None,
                record: None,
                op: DomainOp::CreateHost {
                    env_id,
                    body: CreateVirtualHost {
                        virtual_host_type: "name-based".into(),
                        name: domain.to_string(),
                        application_id: desired_app,
                        root_directory: None,
                        application_listen_address: None,
                        linked_resources: Vec::new(),
                    },
                },
            });
            (host(ObjectId::FromStep(StepRef(0))), HostState::NeedsDeploy)
        }
        Some(vhost) => {
            status.external_id = Some(vhost.id.to_string());
            let mut state = host_state(vhost, request.tls);
            if desired_app.is_some() && vhost.application_id != desired_app {
                let (from, to) = (
                    application_text(vhost.application_id),
                    application_text(desired_app),
                );
                plan.push(Step {
                    action: StepAction::Update,
                    target: host(ObjectId::Known(vhost.id.to_string())),
                    changes: vec![Change::new("spec.routes", Some(from), Some(to.clone()))],
                    drift: request.is_drift(),
                    summary: format!("send {domain} to {to}"),
                    deadline: None,
                    record: None,
                    op: DomainOp::SetApplication(UpdateVirtualHost {
                        id: vhost.id,
                        name: vhost.name.clone(),
                        root_directory: None,
                        application_listen_address: None,
                        application_id: desired_app,
                    }),
                });
                // A changed host is deployed again.
                state = HostState::NeedsDeploy;
            }
            (host(ObjectId::Known(vhost.id.to_string())), state)
        }
    };
    let has_certificate = observed
        .vhost
        .as_ref()
        .is_some_and(|v| v.ssl_certificate.is_some());
    let wants_certificate = request.tls && !has_certificate;
    let why = observed.failure.clone().unwrap_or_else(|| "failed".into());
    let not_serving = |status: &DomainBindingStatus| {
        let host = match &status.external_id {
            Some(id) => format!("virtual host {id}"),
            None => format!("the virtual host for {domain}"),
        };
        Report::settled(
            status.clone(),
            Vec::new(),
            Readiness::not_ready(Reason::NotServing, format!("{host} is not serving yet")),
            request.mode.observing(),
        )
    };
    let mut report = match state {
        HostState::Serving => {
            status.verification = Some(verification("Verified", None));
            let tls = if request.tls { " over HTTPS" } else { "" };
            let id = status.external_id.clone().unwrap_or_default();
            Report::settled(
                status.clone(),
                Vec::new(),
                Readiness::ready(
                    Reason::Available,
                    format!("virtual host {id} serves {domain}{tls}"),
                ),
                request.mode.observing(),
            )
        }
        HostState::NeedsDeploy => {
            deploy_steps(&mut plan, &host, false);
            if wants_certificate {
                certificate_steps(&mut plan, env_id, &host);
            }
            not_serving(&status)
        }
        HostState::Deploying(action) => {
            plan.push(follow(
                "action",
                ObjectId::Known(action.to_string()),
                domain,
                "follow the virtual host deploy until it completes",
            ));
            if wants_certificate {
                certificate_steps(&mut plan, env_id, &host);
            }
            Report::progressing(
                status.clone(),
                Vec::new(),
                Reason::Deploying,
                format!("virtual host deploy action {action} is running"),
                DOMAIN_POLL,
            )
        }
        HostState::DeployFailed(action) => {
            status.verification = Some(verification("Failed", Some(why.clone())));
            if request.mode.requested {
                deploy_steps(&mut plan, &host, true);
                if wants_certificate {
                    certificate_steps(&mut plan, env_id, &host);
                }
            }
            Report::stalled(
                status.clone(),
                Vec::new(),
                Reason::DeployFailed,
                format!("virtual host deploy action {action} failed: {why}"),
            )
        }
        HostState::NeedsCertificate => {
            certificate_steps(&mut plan, env_id, &host);
            not_serving(&status)
        }
        HostState::Issuing(_) => {
            let certificate = observed
                .vhost
                .as_ref()
                .and_then(|v| v.ssl_certificate.as_ref())
                .map(|c| c.id.to_string());
            plan.push(follow(
                "certificate",
                certificate.map(ObjectId::Known).unwrap_or(ObjectId::New),
                domain,
                "follow the certificate until Let's Encrypt issues it",
            ));
            status.verification = Some(verification(
                "Pending",
                Some("certificate being issued".into()),
            ));
            Report::progressing(
                status.clone(),
                Vec::new(),
                Reason::CertificatePending,
                format!("the certificate for {domain} is being issued: Let's Encrypt validates it once DNS points at the servers"),
                DOMAIN_POLL,
            )
        }
        HostState::CertificateFailed(_) => {
            status.verification = Some(verification("Failed", Some(why.clone())));
            let certificate = observed
                .vhost
                .as_ref()
                .and_then(|v| v.ssl_certificate.as_ref());
            if let (true, Some(cert)) = (request.mode.requested, certificate) {
                // A fresh request is the way to retry issuing.
                plan.push(Step {
                    action: StepAction::Delete,
                    target: Target {
                        kind: "certificate",
                        name: domain.to_string(),
                        id: ObjectId::Known(cert.id.to_string()),
                    },
                    changes: Vec::new(),
                    drift: false,
                    summary: format!("remove failed certificate {} to request it again", cert.id),
                    deadline: None,
                    record: None,
                    op: DomainOp::RemoveCertificate(cert.id),
                });
                certificate_steps(&mut plan, env_id, &host);
            }
            Report::stalled(
                status.clone(),
                Vec::new(),
                Reason::CertificateFailed,
                format!("issuing the certificate for {domain} failed: {why}; check the DNS records and set bosun.dev/reconcile-requested-at to retry"),
            )
        }
    };
    if request.mode.observing() && matches!(report.sync, SyncState::Progressing { .. }) {
        // An observed host is reported as it is: bosun follows nothing it did not start.
        report = not_serving(&status);
        report.requeue_after = Some(DOMAIN_POLL);
    }
    Planned {
        plan,
        report,
        adopt: None,
    }
}

impl Devopness {
    /// Why an action failed, in the platform's words.
    async fn action_failure(&self, id: i64) -> Result<String, ReconcileError> {
        Ok(self
            .get_action(id)
            .await?
            .and_then(|a| a.failure_reason())
            .unwrap_or_else(|| "failed".into()))
    }
}

#[async_trait]
impl<'r> PlanSeam<DomainRequest<'r>, DomainBindingStatus> for Devopness {
    type Answer = DomainAnswer;
    type Op = DomainOp;
    type Observation = Observed;

    async fn observe(&self, request: &DomainRequest<'r>) -> Result<Observed, ReconcileError> {
        let desired_app = desired_application(&request.routes)?;
        // The application says which environment the host belongs in and which servers serve it.
        let (env_id, addresses) = match desired_app {
            Some(id) => {
                let app = self.get_application(id).await?.ok_or_else(|| {
                    ReconcileError::waiting(
                        Reason::WorkspaceNotCreated,
                        format!("Devopness application {id} does not exist (yet)"),
                    )
                })?;
                let env = app.environment_id.or(self.default_environment());
                let ips: Vec<String> = app
                    .servers
                    .iter()
                    .filter_map(|s| s.ip_address.clone())
                    .collect();
                (env, ips)
            }
            None => (self.default_environment(), Vec::new()),
        };
        let env_id = env_id.ok_or_else(|| {
            ReconcileError::user(
                Reason::EnvironmentRequired,
                "set the Provider's spec.defaults.environmentId: a binding without routes needs an environment",
            )
        })?;
        let vhost = self
            .list_virtual_hosts(env_id)
            .await?
            .into_iter()
            .find(|h| h.name == request.domain);
        let failure = match vhost.as_ref().map(|v| host_state(v, request.tls)) {
            Some(HostState::DeployFailed(action) | HostState::CertificateFailed(action)) => {
                Some(self.action_failure(action).await?)
            }
            _ => None,
        };
        Ok(Observed {
            env_id,
            desired_app,
            addresses,
            vhost,
            failure,
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
            DomainOp::CreateHost { env_id, body } => {
                DomainAnswer::Host(self.create_virtual_host(*env_id, body).await?.id)
            }
            DomainOp::SetApplication(body) => {
                self.update_virtual_host(body).await?;
                DomainAnswer::Done
            }
            DomainOp::Deploy { .. } => {
                let id = host_id(&step.target.id, answers)?;
                DomainAnswer::Action(self.deploy_virtual_host(id, &[]).await?)
            }
            DomainOp::RequestCertificate { env_id, host } => {
                let body = CreateSslCertificate {
                    virtual_host_id: host_id(host, answers)?,
                    issuer: "lets-encrypt".into(),
                    certificate_type: Some("single-domain".into()),
                    validation_level: Some("DV".into()),
                };
                DomainAnswer::Certificate(self.create_ssl_certificate(*env_id, &body).await?.id)
            }
            DomainOp::RemoveCertificate(id) => {
                self.delete_ssl_certificate(*id).await?;
                DomainAnswer::Done
            }
            // The funnel stops at the first await: later reconciles follow it.
            DomainOp::Follow => DomainAnswer::Done,
        })
    }

    fn answered_id(&self, answer: &DomainAnswer) -> Option<String> {
        match answer {
            DomainAnswer::Host(id) | DomainAnswer::Certificate(id) | DomainAnswer::Action(id) => {
                Some(id.to_string())
            }
            DomainAnswer::Done => None,
        }
    }

    fn answered(
        &self,
        report: &mut Report<DomainBindingStatus>,
        step: &Step<DomainOp>,
        answer: &DomainAnswer,
    ) -> Flow {
        let domain = &step.target.name;
        match (&step.op, answer) {
            (DomainOp::CreateHost { env_id, .. }, DomainAnswer::Host(id)) => {
                report.status.external_id = Some(id.to_string());
                report.notes.push(Note::normal(
                    Reason::Created,
                    "Create",
                    format!("created virtual host {id} ({domain}) in environment {env_id}"),
                ));
            }
            (DomainOp::SetApplication(_), _) if !step.drift => {
                let (from, to) = step.first_change();
                report.notes.push(Note::normal(
                    Reason::RoutesUpdated,
                    "Route",
                    format!("{domain} now serves {to} (was {from})"),
                ));
            }
            (DomainOp::Deploy { again }, DomainAnswer::Action(action)) => {
                let host = report.status.external_id.clone().unwrap_or_default();
                let what = if *again {
                    format!("deploying virtual host {host} again (action {action})")
                } else {
                    format!("deploying virtual host {host} to the servers (action {action})")
                };
                report
                    .notes
                    .push(Note::normal(Reason::HostDeployStarted, "Deploy", what));
                pending(
                    report,
                    Reason::Deploying,
                    format!("virtual host deploy action {action} started"),
                    None,
                );
            }
            (DomainOp::RequestCertificate { .. }, DomainAnswer::Certificate(id)) => {
                report.notes.push(Note::normal(
                    Reason::CertificateRequested,
                    "Certificate",
                    format!("requested a Let's Encrypt certificate {id} for {domain}"),
                ));
                pending(
                    report,
                    Reason::CertificatePending,
                    format!("certificate {id} is being issued"),
                    Some("certificate requested"),
                );
            }
            (DomainOp::RemoveCertificate(id), _) => {
                report.notes.push(Note::normal(
                    Reason::CertificateRetry,
                    "Certificate",
                    format!("removed failed certificate {id} to request it again"),
                ));
            }
            _ => {}
        }
        Flow::Continue
    }
}

#[async_trait]
impl DomainDriver for Devopness {
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

/// What deleting a DomainBinding sends: the host's certificate first, then the host.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum HostRemoval {
    Certificate(i64),
    Host(i64),
}

/// Deleting a DomainBinding (pure): the virtual host bosun made goes, with its certificate.
pub fn plan_host_deletion(vhost: Option<&VirtualHost>) -> Deletion<HostRemoval> {
    let Some(vhost) = vhost else {
        return Deletion::default();
    };
    let step = |kind, id: i64, summary: String, op| {
        let target = Target {
            kind,
            name: vhost.name.clone(),
            id: ObjectId::Known(id.to_string()),
        };
        Step::plain(StepAction::Delete, target, summary, op)
    };
    let mut plan = Plan::default();
    if let Some(cert) = &vhost.ssl_certificate {
        let summary = format!("delete the certificate of {}", vhost.name);
        plan.push(step(
            "certificate",
            cert.id,
            summary,
            HostRemoval::Certificate(cert.id),
        ));
    }
    let summary = format!("delete virtual host {} ({})", vhost.id, vhost.name);
    plan.push(step(
        "virtual host",
        vhost.id,
        summary,
        HostRemoval::Host(vhost.id),
    ));
    Deletion {
        plan,
        left: Vec::new(),
    }
}

#[async_trait]
impl<'r> DeletionSeam<DomainRequest<'r>> for Devopness {
    type Remains = Option<VirtualHost>;
    type Op = HostRemoval;
    type Answer = Deleted;

    async fn observe_remains(
        &self,
        request: &DomainRequest<'r>,
    ) -> Result<Option<VirtualHost>, ReconcileError> {
        let id = request
            .previous
            .external_id
            .as_deref()
            .and_then(|s| s.parse::<i64>().ok());
        Ok(match id {
            Some(id) => self.get_virtual_host(id).await?,
            None => None,
        })
    }

    fn plan_deletion(
        &self,
        _: &DomainRequest<'r>,
        vhost: &Option<VirtualHost>,
    ) -> Result<Deletion<HostRemoval>, ReconcileError> {
        Ok(plan_host_deletion(vhost.as_ref()))
    }

    async fn execute_deletion(&self, step: &Step<HostRemoval>) -> Result<Deleted, ReconcileError> {
        Ok(match step.op {
            HostRemoval::Certificate(id) => self.delete_ssl_certificate(id).await?,
            HostRemoval::Host(id) => self.delete_virtual_host(id).await?,
        })
    }

    fn removed(&self, step: &Step<HostRemoval>, answer: &Deleted) -> Note {
        let gone = *answer == Deleted::AlreadyGone;
        let message = match step.op {
            HostRemoval::Certificate(id) if gone => format!("certificate {id} is gone"),
            HostRemoval::Certificate(id) => {
                format!("deleted certificate {id} ({})", step.target.name)
            }
            HostRemoval::Host(id) if gone => format!("virtual host {id} is gone"),
            HostRemoval::Host(id) => format!("deleted virtual host {id} ({})", step.target.name),
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

    fn vhost(json: serde_json::Value) -> VirtualHost {
        let mut base = serde_json::json!({"id": 5, "name": "shop.example.com"});
        if let (Some(b), Some(extra)) = (base.as_object_mut(), json.as_object()) {
            b.extend(extra.clone());
        }
        serde_json::from_value(base).expect("virtual host")
    }

    fn observed(vhost: Option<VirtualHost>, failure: Option<&str>) -> Observed {
        Observed {
            env_id: 1,
            desired_app: Some(7),
            addresses: vec!["10.0.0.1".into()],
            vhost,
            failure: failure.map(str::to_string),
        }
    }

    fn request<'a>(
        previous: &'a DomainBindingStatus,
        generation: i64,
        mode: Mode,
    ) -> DomainRequest<'a> {
        DomainRequest {
            generation,
            mode,
            ..DomainRequest::for_test("shop.example.com", &[("/", &["7"])], previous)
        }
    }

    #[test]
    fn deletion_plan_table() {
        use StepAction::Delete;
        let with_cert = vhost(serde_json::json!({"ssl_certificate": {"id": 8, "active": true}}));
        let rows: Vec<(&str, Option<VirtualHost>, Vec<table::Row<'_>>)> = vec![
            ("the host is gone", None, vec![]),
            (
                "a host without a certificate",
                Some(vhost(serde_json::json!({}))),
                vec![(Delete, "virtual host", "5", false, vec![])],
            ),
            (
                "the certificate goes first",
                Some(with_cert),
                vec![
                    (Delete, "certificate", "8", false, vec![]),
                    (Delete, "virtual host", "5", false, vec![]),
                ],
            ),
        ];
        for (case, found, want) in rows {
            table::assert_steps(&plan_host_deletion(found.as_ref()).plan, &want, case);
        }
    }

    #[test]
    fn plan_table() {
        use StepAction::{Await, Create, Delete, Start, Update};
        let owning = DomainBindingStatus {
            owned_paths: vec!["/".into()],
            ..Default::default()
        };
        let deployed = serde_json::json!({"application": {"id": 7},
            "last_action": {"id": 9, "status": "completed"}});
        let with = |extra: serde_json::Value| {
            let mut v = deployed.clone();
            if let (Some(b), Some(e)) = (v.as_object_mut(), extra.as_object()) {
                b.extend(e.clone());
            }
            vhost(v)
        };
        let requested = Mode {
            requested: true,
            ..Mode::SEND
        };
        type Case<'a> = (&'a str, i64, Mode, Observed, Vec<table::Row<'a>>, Reason);
        let rows: Vec<Case<'_>> = vec![
            (
                "absent: the whole rollout",
                1,
                Mode::SEND,
                observed(None, None),
                vec![
                    (Create, "virtual host", "<new>", false, vec!["spec.routes"]),
                    (Start, "virtual host", "<step 1>", false, vec![]),
                    (Await, "action", "<step 2>", false, vec![]),
                    (Create, "certificate", "<new>", false, vec![]),
                    (Await, "certificate", "<step 4>", false, vec![]),
                ],
                Reason::NotServing,
            ),
            (
                "serving",
                1,
                Mode::SEND,
                observed(
                    Some(with(
                        serde_json::json!({"ssl_certificate": {"id": 3, "active": true}}),
                    )),
                    None,
                ),
                vec![],
                Reason::Available,
            ),
            (
                "sent elsewhere at the platform: drift, deployed again",
                1,
                Mode::SEND,
                observed(
                    Some(vhost(serde_json::json!({"application": {"id": 8},
                        "last_action": {"id": 9, "status": "completed"},
                        "ssl_certificate": {"id": 3, "active": true}}))),
                    None,
                ),
                vec![
                    (Update, "virtual host", "5", true, vec!["spec.routes"]),
                    (Start, "virtual host", "5", false, vec![]),
                    (Await, "action", "<step 2>", false, vec![]),
                ],
                Reason::NotServing,
            ),
            (
                "a deploy in flight, then the certificate",
                1,
                Mode::SEND,
                observed(
                    Some(vhost(serde_json::json!({"application": {"id": 7},
                        "last_action": {"id": 9, "status": "in-progress"}}))),
                    None,
                ),
                vec![
                    (Await, "action", "9", false, vec![]),
                    (Create, "certificate", "<new>", false, vec![]),
                    (Await, "certificate", "<step 2>", false, vec![]),
                ],
                Reason::Deploying,
            ),
            (
                "a failed deploy waits to be asked",
                1,
                Mode::SEND,
                observed(
                    Some(vhost(serde_json::json!({"application": {"id": 7},
                        "last_action": {"id": 9, "status": "failed"}}))),
                    Some("no servers"),
                ),
                vec![],
                Reason::DeployFailed,
            ),
            (
                "a failed certificate, asked to retry",
                1,
                requested,
                observed(
                    Some(with(
                        serde_json::json!({"ssl_certificate": {"id": 3, "active": false,
                        "last_action": {"id": 11, "status": "failed"}}}),
                    )),
                    Some("DNS does not point here"),
                ),
                vec![
                    (Delete, "certificate", "3", false, vec![]),
                    (Create, "certificate", "<new>", false, vec![]),
                    (Await, "certificate", "<step 2>", false, vec![]),
                ],
                Reason::CertificateFailed,
            ),
        ];
        for (case, generation, mode, observed, steps, reason) in rows {
            let planned = plan_domain(&request(&owning, generation, mode), &observed);
            table::assert_steps(&planned.plan, &steps, case);
            assert_eq!(planned.report.readiness.reason, reason, "{case}");
        }
    }

    #[test]
    fn a_failure_names_the_platform_reason_and_an_observed_host_is_not_followed() {
        let fresh = DomainBindingStatus::default();
        let failed = observed(
            Some(vhost(serde_json::json!({"application": {"id": 7},
                "last_action": {"id": 9, "status": "failed"}}))),
            Some("no servers"),
        );
        let planned = plan_domain(&request(&fresh, 1, Mode::SEND), &failed);
        assert!(planned.report.readiness.message.contains("no servers"));
        let deploying = observed(
            Some(vhost(serde_json::json!({"application": {"id": 7},
                "last_action": {"id": 9, "status": "in-progress"}}))),
            None,
        );
        let observe = Mode::SEND.governed_by(crate::api::ManagementPolicy::Observe);
        let planned = plan_domain(&request(&fresh, 1, observe), &deploying);
        assert_eq!(planned.report.sync, SyncState::Observing);
        assert_eq!(planned.report.readiness.reason, Reason::NotServing);
        assert!(planned.report.status.owned_paths.is_empty());
    }

    #[test]
    fn one_root_route_to_one_workspace_is_all_a_virtual_host_can_do() {
        assert_eq!(desired_application(&routes(&[])).ok(), Some(None));
        assert_eq!(
            desired_application(&routes(&[("/", &["7"])])).ok(),
            Some(Some(7))
        );
        for bad in [
            routes(&[("/api", &["7"])]),
            routes(&[("/", &["7", "8"])]),
            routes(&[("/", &["7"]), ("/blog", &["8"])]),
        ] {
            let err = desired_application(&bad).expect_err("unsupported");
            assert_eq!(err.reason(), Reason::UnsupportedByProvider);
            assert!(err.to_string().contains("spec.routes"), "{err}");
        }
        assert_eq!(
            desired_application(&routes(&[("/", &["x"])]))
                .expect_err("not an id")
                .reason(),
            Reason::ExternalIdInvalid
        );
    }

    #[test]
    fn a_host_is_deployed_then_certified() {
        assert_eq!(
            host_state(&vhost(serde_json::json!({})), false),
            HostState::NeedsDeploy
        );
        let running = vhost(serde_json::json!({"last_action": {"id": 9, "status": "in-progress"}}));
        assert_eq!(host_state(&running, true), HostState::Deploying(9));
        let failed = vhost(serde_json::json!({"last_action": {"id": 9, "status": "failed"}}));
        assert_eq!(host_state(&failed, false), HostState::DeployFailed(9));
        let done = vhost(serde_json::json!({"last_action": {"id": 9, "status": "completed"}}));
        assert_eq!(host_state(&done, false), HostState::Serving);
        assert_eq!(host_state(&done, true), HostState::NeedsCertificate);
        let issuing = vhost(
            serde_json::json!({"last_action": {"id": 9, "status": "completed"},
            "ssl_certificate": {"id": 3, "active": false, "last_action": {"id": 11, "status": "pending"}}}),
        );
        assert_eq!(host_state(&issuing, true), HostState::Issuing(Some(11)));
        let refused = vhost(
            serde_json::json!({"last_action": {"id": 9, "status": "completed"},
            "ssl_certificate": {"id": 3, "active": false, "last_action": {"id": 11, "status": "failed"}}}),
        );
        assert_eq!(host_state(&refused, true), HostState::CertificateFailed(11));
        let active = vhost(
            serde_json::json!({"last_action": {"id": 9, "status": "completed"},
            "ssl_certificate": {"id": 3, "active": true}}),
        );
        assert_eq!(host_state(&active, true), HostState::Serving);
    }

    #[test]
    fn dns_records_point_at_each_server_once() {
        let records = dns_records(
            "shop.example.com",
            &["10.0.0.2".into(), "10.0.0.1".into(), "10.0.0.2".into()],
        );
        let values: Vec<&str> = records.iter().map(|r| r.value.as_str()).collect();
        assert_eq!(values, vec!["10.0.0.1", "10.0.0.2"]);
        assert!(records
            .iter()
            .all(|r| r.type_ == "A" && r.name == "shop.example.com"));
    }
}
