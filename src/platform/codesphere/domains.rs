//! DomainBinding on Codesphere: a team domain whose workspace-connections map (path →
//! workspace ids) bosun merges into, touching only the paths it owns.

use super::client::{Codesphere, Domain};
use crate::api::{DnsRecord, DomainBindingStatus, DomainVerification};
use crate::core::conditions::{Readiness, SyncState};
use crate::core::drivers::{DomainDriver, DomainRequest};
use crate::core::error::ReconcileError;
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

#[async_trait]
impl DomainDriver for Codesphere {
    async fn reconcile(
        &self,
        request: &DomainRequest<'_>,
    ) -> Result<Report<DomainBindingStatus>, ReconcileError> {
        let team = self.team_for_domains()?;
        let act = request.mode.act();
        let mut status = request.previous.clone();
        let mut notes = Vec::new();
        let desired = parse_ids(&request.routes)?;

        let mut domain = match self.get_domain(team, request.domain).await? {
            Some(d) => d,
            None if act => {
                let d = self.create_domain(team, request.domain).await?;
                notes.push(Note::normal(
                    Reason::Created,
                    "Create",
                    format!("created domain {} in team {team}", request.domain),
                ));
                d
            }
            None => {
                let msg = format!("team {team} has no domain {}", request.domain);
                return Ok(Report {
                    status,
                    readiness: Readiness::not_ready(Reason::NotFound, msg.clone()),
                    sync: if request.mode.observing() {
                        SyncState::Stalled {
                            reason: Reason::ExternalObjectNotFound,
                            message: msg,
                        }
                    } else {
                        SyncState::Synced
                    },
                    requeue_after: None,
                    notes,
                    plan: Default::default(),
                });
            }
        };
        status.external_id = Some(domain.name.clone());

        // Routes: read, merge only our paths, write; a 409 is retried with backoff.
        let owned_before: BTreeSet<String> = request.previous.owned_paths.iter().cloned().collect();
        let merged = merge_connections(&domain.workspaces, &owned_before, &desired);
        if merged != domain.workspaces && act {
            let drift =
                request.observed_generation == Some(request.generation) && !owned_before.is_empty();
            domain = self.set_connections(team, request.domain, &merged).await?;
            let message = format!(
                "routes of {} set to {}",
                request.domain,
                serde_json::to_string(&desired).unwrap_or_default()
            );
            notes.push(if drift {
                let mut n = Note::drift(
                    "spec.routes",
                    "different workspace connections",
                    "the spec's routes",
                );
                n.message = format!("spec.routes was changed at the platform: {message}");
                n
            } else {
                Note::normal(Reason::RoutesUpdated, "Route", message)
            });
        }
        if act {
            status.owned_paths = desired.keys().cloned().collect();
        }

        // Verification: the user creates the DNS records; bosun asks the platform to check.
        let mut verified = domain.domain_verification_status.verified;
        let mut reason = domain.domain_verification_status.reason.clone();
        if !verified && act {
            let v = self.verify_domain(team, request.domain).await?;
            verified = v.verified;
            reason = v.reason.or(reason);
            if verified {
                notes.push(Note::normal(
                    Reason::Verified,
                    "Verify",
                    format!("{} is verified", request.domain),
                ));
                if let Some(d) = self.get_domain(team, request.domain).await? {
                    domain = d;
                }
            }
        }
        status.verification = Some(DomainVerification {
            state: if verified {
                "Verified".into()
            } else {
                "Pending".into()
            },
            dns_records: dns_records(&domain),
            message: reason,
        });
        if !verified {
            let records = dns_records(&domain)
                .iter()
                .map(|r| format!("{} {} {}", r.type_, r.name, r.value))
                .collect::<Vec<_>>()
                .join("; ");
            let msg = format!("waiting for DNS: create {records}");
            return Ok(Report {
                status,
                readiness: Readiness::not_ready(Reason::DomainNotVerified, msg.clone()),
                sync: SyncState::Progressing {
                    reason: Reason::WaitingForDns,
                    message: msg,
                },
                requeue_after: Some(VERIFY_POLL),
                notes,
                plan: Default::default(),
            });
        }
        let certificate = if domain.certificate_request_status.issued {
            "certificate issued"
        } else {
            "certificate pending"
        };
        let readiness = Readiness::ready(
            Reason::Available,
            format!("{} is verified, {certificate}", request.domain),
        );
        Ok(Report::settled(
            status,
            notes,
            readiness,
            request.mode.observing(),
        ))
    }

    async fn delete(&self, request: &DomainRequest<'_>) -> Result<Cleanup, ReconcileError> {
        let team = self.team_for_domains()?;
        let Some(domain) = self.get_domain(team, request.domain).await? else {
            return Ok(Cleanup::Done(Vec::new()));
        };
        let owned: BTreeSet<String> = request.previous.owned_paths.iter().cloned().collect();
        let remaining = merge_connections(&domain.workspaces, &owned, &BTreeMap::new());
        if remaining.is_empty() {
            self.delete_domain(team, request.domain).await?;
            return Ok(Cleanup::Done(vec![Note::normal(
                Reason::Deleted,
                "Delete",
                format!("deleted domain {}", request.domain),
            )]));
        }
        if remaining != domain.workspaces {
            self.set_connections(team, request.domain, &remaining)
                .await?;
        }
        Ok(Cleanup::Done(vec![Note::normal(
            Reason::RoutesRemoved,
            "Delete",
            format!(
                "removed bosun's paths from {}; kept it for the paths others use",
                request.domain
            ),
        )]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &[i64])]) -> BTreeMap<String, Vec<i64>> {
        pairs
            .iter()
            .map(|(p, ids)| (p.to_string(), ids.to_vec()))
            .collect()
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
