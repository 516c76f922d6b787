//! The in-memory state: the control repository, deploys and their lazily simulated schedule,
//! file-sync storage and clients.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;
use tokio::time::Instant;

use super::tokens::TokenRecord;
use super::{CodeManagerSettings, DeployStatus};

/// Wall-clock rendering of simulator instants.
pub(super) struct Clock {
    pub(super) instant: Instant,
    wall: jiff::Timestamp,
}

impl Clock {
    pub(super) fn now() -> Self {
        Self {
            instant: Instant::now(),
            wall: jiff::Timestamp::now(),
        }
    }

    fn wall(&self, at: Instant) -> jiff::Timestamp {
        let since = at.saturating_duration_since(self.instant);
        self.wall.checked_add(since).unwrap_or(self.wall)
    }

    /// `2018-11-16T01:53:30.081Z`, as `queued-at` and `last_check_in_time` are rendered.
    pub(super) fn render(&self, at: Instant) -> String {
        format!("{:.3}", self.wall(at))
    }

    /// `2018-11-15T19:26:27.000Z`, as file-sync `date`s are rendered (whole seconds).
    pub(super) fn render_seconds(&self, at: Instant) -> String {
        let wall = self.wall(at);
        let whole = jiff::Timestamp::from_second(wall.as_second()).unwrap_or(wall);
        format!("{whole:.3}")
    }
}

/// What a deploy found when it started deploying.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    Deployed { signature: String },
    NotFound,
    Unreachable,
}

#[derive(Clone, Debug)]
pub(super) struct Deploy {
    pub(super) id: u64,
    /// The name as requested.
    pub(super) environment: String,
    /// The environment directory: the name after correction.
    pub(super) directory: String,
    pub(super) queued_at: Instant,
    /// `new` until here, then `queued`.
    queued_from: Instant,
    /// `deploying` from here.
    deploy_start: Instant,
    /// Committed to file-sync storage (or failed) here.
    deploy_end: Instant,
    /// On every file-sync client here.
    synced_at: Instant,
    /// Decided at `deploy_start`.
    pub(super) outcome: Option<Outcome>,
    pub(super) environment_commit: String,
    pub(super) code_commit: String,
    storage_applied: bool,
    clients_applied: bool,
}

impl Deploy {
    pub(super) fn status(&self, now: Instant) -> DeployStatus {
        if now < self.queued_from {
            DeployStatus::New
        } else if now < self.deploy_start {
            DeployStatus::Queued
        } else if now < self.deploy_end {
            DeployStatus::Deploying
        } else {
            match self.outcome {
                Some(Outcome::Deployed { .. }) if now < self.synced_at => DeployStatus::Syncing,
                Some(Outcome::Deployed { .. }) => DeployStatus::Synced,
                // `advance` resolves every outcome before anything reads the status.
                Some(Outcome::NotFound | Outcome::Unreachable) | None => DeployStatus::Failed,
            }
        }
    }

    fn finished_at(&self) -> Instant {
        match self.outcome {
            Some(Outcome::Deployed { .. }) => self.synced_at,
            _ => self.deploy_end,
        }
    }

    /// When the status changes next, or `None` once it is final.
    pub(super) fn next_change(&self, now: Instant) -> Option<Instant> {
        match self.status(now) {
            DeployStatus::New => Some(self.queued_from),
            DeployStatus::Queued => Some(self.deploy_start),
            DeployStatus::Deploying => Some(self.deploy_end),
            DeployStatus::Syncing => Some(self.synced_at),
            DeployStatus::Failed | DeployStatus::Synced => None,
        }
    }
}
/// One environment in file-sync storage or on a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Stored {
    pub(super) date: String,
    pub(super) signature: String,
}

pub(super) struct Data {
    pub(super) settings: CodeManagerSettings,
    pub(super) tokens: HashMap<String, TokenRecord>,
    pub(super) minted: usize,
    /// Current head of each branch.
    pub(super) branches: BTreeMap<String, String>,
    /// Every push (`Some(sha)`) and deletion (`None`), oldest first.
    pub(super) branch_events: Vec<(Instant, String, Option<String>)>,
    /// Every reachability change, oldest first (reachable before the first).
    pub(super) reachability_events: Vec<(Instant, bool)>,
    pub(super) next_id: u64,
    pub(super) deploys: BTreeMap<u64, Deploy>,
    /// Deploys a `wait` request still has to answer for (never garbage-collected).
    pub(super) pinned: BTreeSet<u64>,
    /// File-sync storage (the staging code dir), by environment.
    pub(super) storage: BTreeMap<String, Stored>,
    /// What every file-sync client has, by environment (all clients sync together).
    pub(super) clients: BTreeMap<String, Stored>,
    /// Bodies received by `POST /deploys`.
    pub(super) requests: Vec<Value>,
}

impl Data {
    pub(super) fn unreachable_at(&self, at: Instant) -> bool {
        self.reachability_events
            .iter()
            .take_while(|(t, _)| *t <= at)
            .last()
            .is_some_and(|(_, unreachable)| *unreachable)
    }

    /// The environments of the current branches, sorted and without duplicates.
    pub(super) fn current_environments(&self) -> Vec<String> {
        let set: BTreeSet<String> = self.branches.keys().map(|b| environment_name(b)).collect();
        set.into_iter().collect()
    }

    /// What a deploy of `directory` starting at `at` finds in the control repository.
    fn resolve(&self, directory: &str, at: Instant) -> Outcome {
        if self.unreachable_at(at) {
            return Outcome::Unreachable;
        }
        let mut heads: BTreeMap<&str, Option<&str>> = BTreeMap::new();
        for (t, branch, sha) in &self.branch_events {
            if *t > at {
                break;
            }
            heads.insert(branch, sha.as_deref());
        }
        heads
            .into_iter()
            .find_map(|(branch, sha)| {
                sha.filter(|_| environment_name(branch) == directory)
                    .map(str::to_owned)
            })
            .map_or(Outcome::NotFound, |signature| Outcome::Deployed {
                signature,
            })
    }

    pub(super) fn enqueue(&mut self, environment: &str, now: Instant) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let step = self.settings.step_duration;
        let directory = environment_name(environment);
        let previous_end = self
            .deploys
            .values()
            .filter(|d| d.directory == directory)
            .map(|d| d.deploy_end)
            .max();
        let queued_from = now + step;
        let deploy_start = (queued_from + step).max(previous_end.unwrap_or(now));
        let deploy_end = deploy_start + step;
        self.deploys.insert(
            id,
            Deploy {
                id,
                environment: environment.to_owned(),
                directory,
                queued_at: now,
                queued_from,
                deploy_start,
                deploy_end,
                synced_at: deploy_end + step,
                outcome: None,
                environment_commit: random_sha(),
                code_commit: random_sha(),
                storage_applied: false,
                clients_applied: false,
            },
        );
        id
    }

    /// Applies everything that has happened up to `now`, in the order it happened.
    pub(super) fn advance(&mut self, now: Instant, clock: &Clock) {
        let starting: Vec<(u64, String, Instant)> = self
            .deploys
            .values()
            .filter(|d| d.outcome.is_none() && d.deploy_start <= now)
            .map(|d| (d.id, d.directory.clone(), d.deploy_start))
            .collect();
        for (id, directory, at) in starting {
            let outcome = self.resolve(&directory, at);
            if let Some(deploy) = self.deploys.get_mut(&id) {
                deploy.outcome = Some(outcome);
            }
        }

        // (when, 0 = storage / 1 = clients, id): storage commits before clients sync.
        let mut events: Vec<(Instant, u8, u64)> = Vec::new();
        for d in self.deploys.values() {
            if !d.storage_applied && d.deploy_end <= now {
                events.push((d.deploy_end, 0, d.id));
            }
            if !d.clients_applied && d.synced_at <= now {
                events.push((d.synced_at, 1, d.id));
            }
        }
        events.sort();
        for (at, kind, id) in events {
            let Some(deploy) = self.deploys.get_mut(&id) else {
                continue;
            };
            if kind == 0 {
                deploy.storage_applied = true;
                match &deploy.outcome {
                    Some(Outcome::Deployed { signature }) => {
                        let stored = Stored {
                            date: clock.render_seconds(at),
                            signature: signature.clone(),
                        };
                        let directory = deploy.directory.clone();
                        self.storage.insert(directory, stored);
                    }
                    Some(Outcome::NotFound) => {
                        let directory = deploy.directory.clone();
                        self.storage.remove(&directory);
                    }
                    Some(Outcome::Unreachable) | None => {}
                }
            } else {
                deploy.clients_applied = true;
                self.clients = self.storage.clone();
            }
        }
    }

    /// Forgets deploys that finished more than `deploy_ttl` ago.
    pub(super) fn collect_garbage(&mut self, now: Instant) {
        let ttl = self.settings.deploy_ttl;
        let pinned = &self.pinned;
        self.deploys.retain(|id, d| {
            pinned.contains(id)
                || !d.clients_applied
                || d.finished_at().checked_add(ttl).is_none_or(|end| now < end)
        });
    }
}
/// r10k's environment name of a branch with `invalid_branches: correct`: every character
/// outside `[A-Za-z0-9_]` becomes `_`.
pub fn environment_name(branch: &str) -> String {
    branch
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub(super) fn random_sha() -> String {
    format!(
        "{:032x}{:08x}",
        rand::random::<u128>(),
        rand::random::<u32>()
    )
}
