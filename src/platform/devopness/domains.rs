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
use crate::core::drivers::{DomainDriver, DomainRequest};
use crate::core::error::ReconcileError;
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

fn report(
    status: DomainBindingStatus,
    notes: Vec<Note>,
    readiness: Readiness,
    sync: SyncState,
    requeue_after: Option<Duration>,
) -> Report<DomainBindingStatus> {
    Report {
        status,
        readiness,
        sync,
        requeue_after,
        notes,
        plan: Default::default(),
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
impl DomainDriver for Devopness {
    async fn reconcile(
        &self,
        request: &DomainRequest<'_>,
    ) -> Result<Report<DomainBindingStatus>, ReconcileError> {
        let act = request.mode.act();
        let mut status = request.previous.clone();
        let mut notes = Vec::new();
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

        let hosts = self.list_virtual_hosts(env_id).await?;
        let found = hosts.iter().find(|h| h.name == request.domain).cloned();
        let mut vhost = match found {
            Some(h) => h,
            None if act => {
                let h = self
                    .create_virtual_host(
                        env_id,
                        &CreateVirtualHost {
                            virtual_host_type: "name-based".into(),
                            name: request.domain.to_string(),
                            application_id: desired_app,
                            root_directory: None,
                            application_listen_address: None,
                            linked_resources: Vec::new(),
                        },
                    )
                    .await?;
                notes.push(Note::normal(
                    Reason::Created,
                    "Create",
                    format!(
                        "created virtual host {} ({}) in environment {env_id}",
                        h.id, request.domain
                    ),
                ));
                h
            }
            None => {
                let msg = format!(
                    "environment {env_id} has no virtual host {}",
                    request.domain
                );
                return Ok(report(
                    status,
                    notes,
                    Readiness::not_ready(Reason::NotFound, msg.clone()),
                    SyncState::Stalled {
                        reason: Reason::ExternalObjectNotFound,
                        message: msg,
                    },
                    None,
                ));
            }
        };
        status.external_id = Some(vhost.id.to_string());

        // The application it serves; a change (or an edit at the platform) is set and deployed.
        let mut changed = false;
        if vhost.application_id != desired_app && desired_app.is_some() && act {
            self.update_virtual_host(&UpdateVirtualHost {
                id: vhost.id,
                name: vhost.name.clone(),
                root_directory: None,
                application_listen_address: None,
                application_id: desired_app,
            })
            .await?;
            let from = vhost
                .application_id
                .map(|a| format!("application {a}"))
                .unwrap_or_else(|| "no application".into());
            let to = format!("application {}", desired_app.unwrap_or_default());
            let drift = request.observed_generation == Some(request.generation)
                && !request.previous.owned_paths.is_empty();
            notes.push(if drift {
                Note::drift("spec.routes", from, to)
            } else {
                Note::normal(
                    Reason::RoutesUpdated,
                    "Route",
                    format!("{} now serves {to} (was {from})", request.domain),
                )
            });
            vhost.application_id = desired_app;
            changed = true;
        }
        if act {
            status.owned_paths = request.routes.keys().cloned().collect();
        }

        let mut state = host_state(&vhost, request.tls);
        if changed && act {
            state = HostState::NeedsDeploy;
        }
        let records = dns_records(request.domain, &addresses);
        let verification = |state: &str, message: Option<String>| DomainVerification {
            state: state.into(),
            dns_records: records.clone(),
            message,
        };
        match state {
            HostState::Serving => {
                status.verification = Some(verification("Verified", None));
                let tls = if request.tls { " over HTTPS" } else { "" };
                Ok(report(
                    status,
                    notes,
                    Readiness::ready(
                        Reason::Available,
                        format!("virtual host {} serves {}{tls}", vhost.id, request.domain),
                    ),
                    if request.mode.observing() {
                        SyncState::Observing
                    } else {
                        SyncState::Synced
                    },
                    None,
                ))
            }
            HostState::NeedsDeploy
            | HostState::Deploying(_)
            | HostState::NeedsCertificate
            | HostState::Issuing(_)
                if !act =>
            {
                status.verification = Some(verification("Pending", None));
                let msg = format!("virtual host {} is not serving yet", vhost.id);
                Ok(report(
                    status,
                    notes,
                    Readiness::not_ready(Reason::NotServing, msg),
                    SyncState::Observing,
                    Some(DOMAIN_POLL),
                ))
            }
            HostState::NeedsDeploy => {
                let action = self.deploy_virtual_host(vhost.id, &[]).await?;
                notes.push(Note::normal(
                    Reason::HostDeployStarted,
                    "Deploy",
                    format!(
                        "deploying virtual host {} to the servers (action {action})",
                        vhost.id
                    ),
                ));
                status.verification = Some(verification("Pending", None));
                let msg = format!("virtual host deploy action {action} started");
                Ok(report(
                    status,
                    notes,
                    Readiness::not_ready(Reason::Deploying, msg.clone()),
                    SyncState::Progressing {
                        reason: Reason::Deploying,
                        message: msg,
                    },
                    Some(DOMAIN_POLL),
                ))
            }
            HostState::Deploying(action) => {
                status.verification = Some(verification("Pending", None));
                let msg = format!("virtual host deploy action {action} is running");
                Ok(report(
                    status,
                    notes,
                    Readiness::not_ready(Reason::Deploying, msg.clone()),
                    SyncState::Progressing {
                        reason: Reason::Deploying,
                        message: msg,
                    },
                    Some(DOMAIN_POLL),
                ))
            }
            HostState::DeployFailed(action) => {
                let why = self.action_failure(action).await?;
                let msg = format!("virtual host deploy action {action} failed: {why}");
                status.verification = Some(verification("Failed", Some(why)));
                if request.mode.requested && act {
                    // Asked to retry: deploy again.
                    let retry = self.deploy_virtual_host(vhost.id, &[]).await?;
                    notes.push(Note::normal(
                        Reason::HostDeployStarted,
                        "Deploy",
                        format!("deploying virtual host {} again (action {retry})", vhost.id),
                    ));
                }
                Ok(report(
                    status,
                    notes,
                    Readiness::not_ready(Reason::DeployFailed, msg.clone()),
                    SyncState::Stalled {
                        reason: Reason::DeployFailed,
                        message: msg,
                    },
                    None,
                ))
            }
            HostState::NeedsCertificate => {
                let cert = self
                    .create_ssl_certificate(
                        env_id,
                        &CreateSslCertificate {
                            virtual_host_id: vhost.id,
                            issuer: "lets-encrypt".into(),
                            certificate_type: Some("single-domain".into()),
                            validation_level: Some("DV".into()),
                        },
                    )
                    .await?;
                notes.push(Note::normal(
                    Reason::CertificateRequested,
                    "Certificate",
                    format!(
                        "requested a Let's Encrypt certificate {} for {}",
                        cert.id, request.domain
                    ),
                ));
                status.verification = Some(verification(
                    "Pending",
                    Some("certificate requested".into()),
                ));
                let msg = format!("certificate {} is being issued", cert.id);
                Ok(report(
                    status,
                    notes,
                    Readiness::not_ready(Reason::CertificatePending, msg.clone()),
                    SyncState::Progressing {
                        reason: Reason::CertificatePending,
                        message: msg,
                    },
                    Some(DOMAIN_POLL),
                ))
            }
            HostState::Issuing(_) => {
                let msg = format!(
                    "the certificate for {} is being issued: Let's Encrypt validates it once DNS points at the servers",
                    request.domain
                );
                status.verification = Some(verification(
                    "Pending",
                    Some("certificate being issued".into()),
                ));
                Ok(report(
                    status,
                    notes,
                    Readiness::not_ready(Reason::CertificatePending, msg.clone()),
                    SyncState::Progressing {
                        reason: Reason::CertificatePending,
                        message: msg,
                    },
                    Some(DOMAIN_POLL),
                ))
            }
            HostState::CertificateFailed(action) => {
                let why = self.action_failure(action).await?;
                let msg = format!(
                    "issuing the certificate for {} failed: {why}; check the DNS records and set bosun.dev/reconcile-requested-at to retry",
                    request.domain
                );
                if request.mode.requested && act {
                    if let Some(cert) = &vhost.ssl_certificate {
                        // A fresh request is the way to retry issuing.
                        self.delete_ssl_certificate(cert.id).await?;
                        notes.push(Note::normal(
                            Reason::CertificateRetry,
                            "Certificate",
                            format!("removed failed certificate {} to request it again", cert.id),
                        ));
                    }
                }
                status.verification = Some(verification("Failed", Some(why)));
                Ok(report(
                    status,
                    notes,
                    Readiness::not_ready(Reason::CertificateFailed, msg.clone()),
                    SyncState::Stalled {
                        reason: Reason::CertificateFailed,
                        message: msg,
                    },
                    if request.mode.requested {
                        Some(DOMAIN_POLL)
                    } else {
                        None
                    },
                ))
            }
        }
    }

    async fn delete(&self, request: &DomainRequest<'_>) -> Result<Cleanup, ReconcileError> {
        let Some(id) = request
            .previous
            .external_id
            .as_deref()
            .and_then(|s| s.parse::<i64>().ok())
        else {
            return Ok(Cleanup::Done(Vec::new()));
        };
        let Some(vhost) = self.get_virtual_host(id).await? else {
            return Ok(Cleanup::Done(Vec::new()));
        };
        if let Some(cert) = &vhost.ssl_certificate {
            self.delete_ssl_certificate(cert.id).await?;
        }
        let note = match self.delete_virtual_host(id).await? {
            Deleted::Done { .. } => format!("deleted virtual host {id} ({})", request.domain),
            Deleted::AlreadyGone => format!("virtual host {id} is gone"),
        };
        Ok(Cleanup::Done(vec![Note::normal(
            Reason::Deleted,
            "Delete",
            note,
        )]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
