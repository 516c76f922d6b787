//! Leader election on a `coordination.k8s.io/v1` Lease, so only one replica acts at a time.
//!
//! There is no fencing: a leader that stalls longer than the lease duration may overlap with
//! its successor for up to one renew period. Renewing at a third of the duration keeps that
//! window small; a leader that cannot renew in time exits so that it stops acting at once.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use std::time::Duration;

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub holder: String,
    pub duration: Duration,
}

impl LeaseConfig {
    /// How often the leader renews, and how often a standby tries to take over.
    pub fn renew_every(&self) -> Duration {
        self.duration / 3
    }
}

/// What the current Lease says, reduced to what the decision needs (pure).
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseView {
    pub holder: Option<String>,
    pub renewed_at: Option<Timestamp>,
    pub duration_s: Option<i32>,
}

/// Whether `me` may take or keep the lease now.
pub fn may_hold(view: &LeaseView, me: &str, now: Timestamp) -> bool {
    match (&view.holder, view.renewed_at, view.duration_s) {
        (None, _, _) => true,
        (Some(h), _, _) if h.is_empty() || h == me => true,
        (Some(_), Some(renewed), Some(d)) => renewed
            .checked_add(SignedDuration::from_secs(i64::from(d)))
            .is_ok_and(|expiry| now > expiry),
        // A holder that never renewed has no claim.
        (Some(_), _, _) => true,
    }
}

/// Tries once to acquire or renew the lease. `Ok(true)` means this replica leads.
pub async fn try_acquire(client: &Client, cfg: &LeaseConfig) -> Result<bool, kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let now = Timestamp::now();
    let duration_s = i32::try_from(cfg.duration.as_secs()).unwrap_or(i32::MAX);
    match api.get_opt(&cfg.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(cfg.holder.clone()),
                    lease_duration_seconds: Some(duration_s),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.clone().unwrap_or_default();
            let view = LeaseView {
                holder: spec.holder_identity.clone(),
                renewed_at: spec.renew_time.as_ref().map(|t| t.0),
                duration_s: spec.lease_duration_seconds,
            };
            if !may_hold(&view, &cfg.holder, now) {
                return Ok(false);
            }
            let taking_over = view.holder.as_deref() != Some(cfg.holder.as_str());
            let mut new_spec = spec.clone();
            new_spec.holder_identity = Some(cfg.holder.clone());
            new_spec.lease_duration_seconds = Some(duration_s);
            new_spec.renew_time = Some(MicroTime(now));
            if taking_over {
                new_spec.acquire_time = Some(MicroTime(now));
                new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            lease.spec = Some(new_spec);
            // `replace` carries the resourceVersion we read: a concurrent change makes it 409.
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Gives the lease up on shutdown so a standby takes over without waiting for expiry.
pub async fn release(client: &Client, cfg: &LeaseConfig) -> Result<(), kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    if let Some(mut lease) = api.get_opt(&cfg.name).await? {
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() == Some(cfg.holder.as_str()) {
            spec.holder_identity = None;
            spec.renew_time = None;
            api.replace(&cfg.name, &PostParams::default(), &lease)
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    #[test]
    fn free_or_own_lease_may_be_held() {
        assert!(may_hold(
            &LeaseView {
                holder: None,
                renewed_at: None,
                duration_s: None
            },
            "a",
            at(0)
        ));
        assert!(may_hold(
            &LeaseView {
                holder: Some(String::new()),
                renewed_at: Some(at(0)),
                duration_s: Some(15)
            },
            "a",
            at(1)
        ));
        assert!(may_hold(
            &LeaseView {
                holder: Some("a".into()),
                renewed_at: Some(at(0)),
                duration_s: Some(15)
            },
            "a",
            at(1)
        ));
    }

    #[test]
    fn another_holder_keeps_it_until_expiry() {
        let v = LeaseView {
            holder: Some("b".into()),
            renewed_at: Some(at(0)),
            duration_s: Some(15),
        };
        assert!(!may_hold(&v, "a", at(10)));
        assert!(!may_hold(&v, "a", at(15)));
        assert!(may_hold(&v, "a", at(16)));
    }
}
