//! The Codesphere Public API client (`shared/specs/codesphere-openapi.json`): every endpoint the
//! mapping needs, typed, with errors carrying the platform's `{status, title, detail, traceId}`.
//! The bodies are in `wire.rs`, the error answers in `errors.rs`.

pub use super::wire::*;

use super::errors::check;
use crate::api::PlatformType;
use crate::core::drivers::DeepChecks;
use crate::core::seam::{Connection, Credential, ErrorKind, Platform, PlatformError};
use crate::platform::http::{not_found_is_none, to_value, ApiClient};
use crate::platform::listing::SharedListings;
use async_trait::async_trait;
use reqwest::{Method, Response};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex as AsyncMutex;

/// How many redirects are followed (Codesphere redirects between data centers).
const MAX_REDIRECTS: usize = 10;

/// How long one team listing serves every workspace of the team. Reconciles of many
/// workspaces within this window share one `GET /workspaces/team/{id}`.
const LIST_TTL: Duration = Duration::from_secs(3);
/// Plans change rarely; they are read again after this long.
const PLANS_TTL: Duration = Duration::from_secs(600);

/// A Codesphere account reached with a bearer token.
pub struct Codesphere {
    api: ApiClient,
    token: Credential,
    default_team: Option<i64>,
    /// Per team: the last listing, shared by concurrent reconciles.
    listings: SharedListings<i64, Workspace>,
    plans: AsyncMutex<Option<(Instant, Arc<Vec<Plan>>)>>,
    /// Per workspace: when its run stage and variables were last read, and a fingerprint of
    /// the variables it was given then (kept in memory only).
    pub(crate) deep_checks: DeepChecks,
}

impl Codesphere {
    pub fn new(connection: Connection) -> Result<Self, PlatformError> {
        let api = ApiClient::new(&connection, "codesphere")?;
        Ok(Codesphere {
            api,
            token: connection.credential,
            default_team: connection.defaults.team_id,
            listings: SharedListings::new(LIST_TTL),
            plans: AsyncMutex::new(None),
            deep_checks: DeepChecks::default(),
        })
    }

    /// The Provider's `defaults.teamId`.
    pub fn default_team(&self) -> Option<i64> {
        self.default_team
    }

    /// Every workspace of a team, from one list call shared by all reconciles within
    /// `LIST_TTL`: observation is batched per team, not one GET per workspace.
    pub async fn workspaces_of(&self, team_id: i64) -> Result<Arc<Vec<Workspace>>, PlatformError> {
        self.listings
            .get(&team_id, || self.list_workspaces(team_id))
            .await
    }

    /// Drops a team's listing after bosun changed something in it.
    pub async fn forget_list(&self, team_id: i64) {
        self.listings.forget(&team_id).await;
    }

    /// The plans, read at most every `PLANS_TTL`.
    pub async fn plans(&self) -> Result<Arc<Vec<Plan>>, PlatformError> {
        let mut guard = self.plans.lock().await;
        if let Some((at, plans)) = guard.as_ref() {
            if at.elapsed() < PLANS_TTL {
                return Ok(plans.clone());
            }
        }
        let plans = Arc::new(self.list_plans().await?);
        *guard = Some((Instant::now(), plans.clone()));
        Ok(plans)
    }

    /// Sends a request, following redirects with the bearer token (Codesphere moves requests
    /// between data centers; a default client would drop `Authorization` there). The token is
    /// only re-sent over HTTPS or to the same origin, never downgraded to another host.
    async fn send(
        &self,
        operation: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Response, PlatformError> {
        let mut url = format!("{}{}", self.api.base(), path);
        for _ in 0..=MAX_REDIRECTS {
            let mut request = self
                .api
                .raw(method.clone(), &url)
                .bearer_auth(self.token.expose());
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = self.api.send(operation, request).await?;
            if !response.status().is_redirection() {
                return check(operation, response).await;
            }
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| response.url().join(l).ok())
                .ok_or_else(|| {
                    PlatformError::new(
                        ErrorKind::Protocol,
                        format!("codesphere {operation}: redirect without a Location"),
                    )
                })?;
            let same_origin = location.origin() == response.url().origin();
            if !same_origin && location.scheme() != "https" {
                return Err(PlatformError::new(
                    ErrorKind::Protocol,
                    format!("codesphere {operation}: refusing to follow a redirect to {} with the token", location.origin().ascii_serialization()),
                ));
            }
            url = location.to_string();
        }
        Err(PlatformError::new(
            ErrorKind::Protocol,
            format!("codesphere {operation}: more than {MAX_REDIRECTS} redirects"),
        ))
    }

    async fn json<T: DeserializeOwned>(
        &self,
        operation: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, PlatformError> {
        let response = self.send(operation, method, path, body).await?;
        response.json::<T>().await.map_err(|e| {
            PlatformError::new(
                ErrorKind::Protocol,
                format!("codesphere {operation}: unreadable answer: {e}"),
            )
        })
    }

    async fn empty(
        &self,
        operation: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(), PlatformError> {
        self.send(operation, method, path, body).await.map(|_| ())
    }

    /// `GET /teams`.
    pub async fn list_teams(&self) -> Result<Vec<Team>, PlatformError> {
        self.json("listTeams", Method::GET, "/teams", None).await
    }

    /// `GET /metadata/workspace-plans`.
    pub async fn list_plans(&self) -> Result<Vec<Plan>, PlatformError> {
        self.json(
            "getWorkspacePlans",
            Method::GET,
            "/metadata/workspace-plans",
            None,
        )
        .await
    }

    /// `GET /workspaces/team/{teamId}`: every workspace of a team in one call.
    pub async fn list_workspaces(&self, team_id: i64) -> Result<Vec<Workspace>, PlatformError> {
        self.json(
            "listWorkspaces",
            Method::GET,
            &format!("/workspaces/team/{team_id}"),
            None,
        )
        .await
    }

    /// `GET /workspaces/{id}`; `None` when it does not exist.
    pub async fn get_workspace(&self, id: i64) -> Result<Option<Workspace>, PlatformError> {
        not_found_is_none(
            self.json(
                "getWorkspace",
                Method::GET,
                &format!("/workspaces/{id}"),
                None,
            )
            .await,
        )
    }

    /// `POST /workspaces`. Not idempotent: callers guard it with a pending marker.
    pub async fn create_workspace(
        &self,
        body: &CreateWorkspace,
    ) -> Result<Workspace, PlatformError> {
        let body = to_value(body)?;
        self.json("createWorkspace", Method::POST, "/workspaces", Some(&body))
            .await
    }

    /// `PATCH /workspaces/{id}`.
    pub async fn update_workspace(
        &self,
        id: i64,
        body: &UpdateWorkspace,
    ) -> Result<(), PlatformError> {
        let body = to_value(body)?;
        self.empty(
            "updateWorkspace",
            Method::PATCH,
            &format!("/workspaces/{id}"),
            Some(&body),
        )
        .await
    }

    /// `DELETE /workspaces/{id}`; a workspace that is already gone counts as deleted.
    pub async fn delete_workspace(&self, id: i64) -> Result<(), PlatformError> {
        match self
            .empty(
                "deleteWorkspace",
                Method::DELETE,
                &format!("/workspaces/{id}"),
                None,
            )
            .await
        {
            Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// `GET /workspaces/{id}/status`.
    pub async fn is_running(&self, id: i64) -> Result<bool, PlatformError> {
        let s: RunningStatus = self
            .json(
                "getWorkspaceStatus",
                Method::GET,
                &format!("/workspaces/{id}/status"),
                None,
            )
            .await?;
        Ok(s.is_running)
    }

    /// `GET /workspaces/{id}/env-vars`.
    pub async fn list_env(&self, id: i64) -> Result<Vec<EnvVar>, PlatformError> {
        self.json(
            "listEnvVars",
            Method::GET,
            &format!("/workspaces/{id}/env-vars"),
            None,
        )
        .await
    }

    /// `PUT /workspaces/{id}/env-vars`: sets the given variables.
    pub async fn set_env(&self, id: i64, vars: &[EnvVar]) -> Result<(), PlatformError> {
        let body = to_value(vars)?;
        self.empty(
            "setEnvVar",
            Method::PUT,
            &format!("/workspaces/{id}/env-vars"),
            Some(&body),
        )
        .await
    }

    /// `DELETE /workspaces/{id}/env-vars`: removes the named variables.
    pub async fn delete_env(&self, id: i64, names: &[String]) -> Result<(), PlatformError> {
        let body = to_value(names)?;
        self.empty(
            "deleteEnvVar",
            Method::DELETE,
            &format!("/workspaces/{id}/env-vars"),
            Some(&body),
        )
        .await
    }

    /// `POST /workspaces/{id}/pipeline/{stage}/start[/{profile}]`.
    pub async fn start_stage(
        &self,
        id: i64,
        stage: Stage,
        profile: Option<&str>,
    ) -> Result<(), PlatformError> {
        let path = match profile {
            Some(p) => format!(
                "/workspaces/{id}/pipeline/{}/start/{}",
                stage.as_str(),
                segment(p)
            ),
            None => format!("/workspaces/{id}/pipeline/{}/start", stage.as_str()),
        };
        self.empty("startPipelineStage", Method::POST, &path, None)
            .await
    }

    /// `POST /workspaces/{id}/pipeline/{stage}/stop`.
    pub async fn stop_stage(&self, id: i64, stage: Stage) -> Result<(), PlatformError> {
        self.empty(
            "stopPipelineStage",
            Method::POST,
            &format!("/workspaces/{id}/pipeline/{}/stop", stage.as_str()),
            None,
        )
        .await
    }

    /// `GET /workspaces/{id}/pipeline/{stage}`: one element per server and replica.
    pub async fn stage_status(
        &self,
        id: i64,
        stage: Stage,
    ) -> Result<Vec<StageElement>, PlatformError> {
        self.json(
            "pipelineStatus",
            Method::GET,
            &format!("/workspaces/{id}/pipeline/{}", stage.as_str()),
            None,
        )
        .await
    }

    /// `PATCH /workspaces/{id}/landscape/scale` with absolute replica counts per service.
    pub async fn scale_landscape(
        &self,
        id: i64,
        services: &BTreeMap<String, i32>,
    ) -> Result<(), PlatformError> {
        let body = to_value(services)?;
        self.empty(
            "scaleLandscapeServices",
            Method::PATCH,
            &format!("/workspaces/{id}/landscape/scale"),
            Some(&body),
        )
        .await
    }

    /// `POST /workspaces/{id}/git/pull[/{remote}/{branch}]`.
    pub async fn git_pull(
        &self,
        id: i64,
        remote_branch: Option<(&str, &str)>,
    ) -> Result<(), PlatformError> {
        let path = match remote_branch {
            Some((remote, branch)) => format!(
                "/workspaces/{id}/git/pull/{}/{}",
                segment(remote),
                segment(branch)
            ),
            None => format!("/workspaces/{id}/git/pull"),
        };
        self.empty("gitPull", Method::POST, &path, None).await
    }

    /// `GET /workspaces/{id}/git/head`: the checked-out commit.
    pub async fn git_head(&self, id: i64) -> Result<String, PlatformError> {
        let h: Head = self
            .json(
                "gitHead",
                Method::GET,
                &format!("/workspaces/{id}/git/head"),
                None,
            )
            .await?;
        Ok(h.head)
    }

    /// `GET /domains/team/{teamId}`.
    pub async fn list_domains(&self, team_id: i64) -> Result<Vec<Domain>, PlatformError> {
        self.json(
            "listDomains",
            Method::GET,
            &format!("/domains/team/{team_id}"),
            None,
        )
        .await
    }

    /// `GET /domains/team/{teamId}/domain/{name}`; `None` when it does not exist.
    pub async fn get_domain(
        &self,
        team_id: i64,
        name: &str,
    ) -> Result<Option<Domain>, PlatformError> {
        not_found_is_none(
            self.json(
                "getDomain",
                Method::GET,
                &format!("/domains/team/{team_id}/domain/{}", segment(name)),
                None,
            )
            .await,
        )
    }

    /// `POST /domains/team/{teamId}/domain/{name}`.
    pub async fn create_domain(&self, team_id: i64, name: &str) -> Result<Domain, PlatformError> {
        self.json(
            "createDomain",
            Method::POST,
            &format!("/domains/team/{team_id}/domain/{}", segment(name)),
            None,
        )
        .await
    }

    /// `DELETE /domains/team/{teamId}/domain/{name}`; already gone counts as deleted.
    pub async fn delete_domain(&self, team_id: i64, name: &str) -> Result<(), PlatformError> {
        match self
            .empty(
                "deleteDomain",
                Method::DELETE,
                &format!("/domains/team/{team_id}/domain/{}", segment(name)),
                None,
            )
            .await
        {
            Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// `POST /domains/team/{teamId}/domain/{name}/verify`.
    pub async fn verify_domain(
        &self,
        team_id: i64,
        name: &str,
    ) -> Result<Verification, PlatformError> {
        self.json(
            "verifyDomain",
            Method::POST,
            &format!("/domains/team/{team_id}/domain/{}/verify", segment(name)),
            None,
        )
        .await
    }

    /// `PUT .../workspace-connections`: replaces the whole path → workspaces map.
    pub async fn set_connections(
        &self,
        team_id: i64,
        name: &str,
        map: &BTreeMap<String, Vec<i64>>,
    ) -> Result<Domain, PlatformError> {
        let body = to_value(map)?;
        self.json(
            "updateWorkspaceConnections",
            Method::PUT,
            &format!(
                "/domains/team/{team_id}/domain/{}/workspace-connections",
                segment(name)
            ),
            Some(&body),
        )
        .await
    }
}

/// Percent-encodes one path segment (branch names may hold `/`).
fn segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[async_trait]
impl Platform for Codesphere {
    fn platform_type(&self) -> PlatformType {
        PlatformType::Codesphere
    }

    fn workspaces(&self) -> Option<&dyn crate::core::drivers::WorkspaceDriver> {
        Some(self)
    }

    fn service_scales(&self) -> Option<&dyn crate::core::drivers::ServiceScaleDriver> {
        Some(self)
    }

    fn domains(&self) -> Option<&dyn crate::core::drivers::DomainDriver> {
        Some(self)
    }

    async fn verify(&self) -> Result<String, PlatformError> {
        let teams = self.list_teams().await?;
        Ok(match teams.as_slice() {
            [] => "a user with no team".to_string(),
            [team] => format!("team {} ({})", team.id, team.name),
            many => format!(
                "{} teams: {}",
                many.len(),
                many.iter()
                    .map(|t| t.id.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(segment("feature/x y"), "feature%2Fx%20y");
        assert_eq!(segment("release-1.2_a~b"), "release-1.2_a~b");
    }
}
