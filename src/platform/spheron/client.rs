//! The Spheron API client (`https://api-v2.spheron.network`): the endpoints a mapping needs,
//! typed, with errors carrying the platform's `{message}` body. The bodies are in `wire.rs`,
//! the error answers in `errors.rs`.
//!
//! There is no published OpenAPI file; everything here follows `shared/research/spheron.md`,
//! which rebuilt the API from Spheron's official TypeScript SDK and Terraform provider.
//! Conventions from there:
//!
//! - bearer token; each token is scoped to one or more organizations (`GET /v1/api-keys/scope`);
//! - singular resource paths (`/v1/deployment`, `/v1/project`, `/v1/organization`), the way
//!   every real client calls them (the docs' plural example is not what clients use);
//! - the response wrapping differs per endpoint (`{deployment}`, `{domain}`, `{domains}`,
//!   `{instance}`, `{result}`, bare objects and even a bare array), so each endpoint reads its
//!   own wrapper type (in `wire.rs`);
//! - lists are paged with `skip`/`limit` and say nothing about totals: a short page ends a list;
//! - errors are JSON with a top-level `message` (a string, or a list of strings in the NestJS
//!   validation style); `error` is read as a fallback;
//! - IDs are 24-hex Mongo ObjectIds.

pub use super::errors::error_from;
pub use super::wire::*;

use super::errors::check;
use crate::api::PlatformType;
use crate::core::seam::{Connection, Credential, ErrorKind, Platform, PlatformError};
use crate::platform::http::{not_found_is_none, read_json_answer, to_value, ApiClient};
use async_trait::async_trait;
use reqwest::header::ACCEPT;
use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt;

/// The page size bosun asks for. The API documents no maximum; the simulator allows 100.
pub const PAGE_LIMIT: u32 = 50;
/// A guard against a server that never returns a short page.
const MAX_PAGES: u32 = 1000;

/// What a delete did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deleted {
    Done,
    /// It was not there (404).
    AlreadyGone,
}

/// A path segment from an id: ids are ObjectIds or domain names, but a stray `/` or `?` must
/// never change which endpoint is called.
fn seg(id: &str) -> String {
    id.chars()
        .map(|c| match c {
            '/' => "%2F".to_string(),
            '?' => "%3F".to_string(),
            '#' => "%23".to_string(),
            '%' => "%25".to_string(),
            ' ' => "%20".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// A Spheron account reached with an API token.
pub struct SpheronClient {
    api: ApiClient,
    token: Credential,
    default_organization: Option<String>,
    /// Listings and caches the Workspace, ServiceScale and DomainBinding mappings share.
    pub(crate) shared: super::mapping::Shared,
}

// Hand-written: the token must never show up in a log line.
impl fmt::Debug for SpheronClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpheronClient")
            .field("endpoint", &self.api.base())
            .field("token", &"<redacted>")
            .field("default_organization", &self.default_organization)
            .finish()
    }
}

impl SpheronClient {
    /// A client for the connection's endpoint and token; `defaults.organizationId` becomes
    /// the default organization.
    pub fn new(connection: Connection) -> Result<Self, PlatformError> {
        let api = ApiClient::new(&connection, "spheron")?;
        let shared = super::mapping::Shared::new(connection.budget.requests_per_minute());
        Ok(SpheronClient {
            api,
            shared,
            token: connection.credential,
            default_organization: connection
                .defaults
                .organization_id
                .filter(|o| !o.trim().is_empty()),
        })
    }

    /// The Provider's `defaults.organizationId`.
    pub fn default_organization(&self) -> Option<&str> {
        self.default_organization.as_deref()
    }

    fn authorize(&self, request: RequestBuilder) -> RequestBuilder {
        request
            .bearer_auth(self.token.expose())
            .header(ACCEPT, "application/json")
    }

    /// Sends a request to a path (relative to the endpoint) and checks the status.
    async fn send(
        &self,
        operation: &str,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Response, PlatformError> {
        let mut request = self.authorize(self.api.request(method, path));
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = self.api.send(operation, request).await?;
        check(operation, response).await
    }

    async fn json<T: DeserializeOwned>(
        &self,
        operation: &str,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<T, PlatformError> {
        let response = self.send(operation, method, path, query, body).await?;
        read_json_answer("spheron", operation, response).await
    }

    /// A delete-like call whose answer bosun does not need; 404 means it is already gone.
    async fn gone(
        &self,
        operation: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Deleted, PlatformError> {
        match self.send(operation, method, path, &[], body).await {
            Ok(_) => Ok(Deleted::Done),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(Deleted::AlreadyGone),
            Err(e) => Err(e),
        }
    }

    /// Every item of a `skip`/`limit` list: pages of [`PAGE_LIMIT`] until a short page.
    async fn list_all<T, F, Fut>(&self, mut page: F) -> Result<Vec<T>, PlatformError>
    where
        F: FnMut(u32, u32) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<T>, PlatformError>>,
    {
        let mut out = Vec::new();
        let mut skip = 0u32;
        for _ in 0..MAX_PAGES {
            let items = page(skip, PAGE_LIMIT).await?;
            let n = u32::try_from(items.len()).unwrap_or(u32::MAX);
            out.extend(items);
            if n < PAGE_LIMIT {
                return Ok(out);
            }
            skip = skip.saturating_add(n);
        }
        Err(PlatformError::new(
            ErrorKind::Protocol,
            format!("spheron: a list went on for more than {MAX_PAGES} pages"),
        ))
    }

    // ----- identity --------------------------------------------------------------------------

    /// `GET /v1/api-keys/scope`: the token's user and organizations.
    pub async fn token_scope(&self) -> Result<TokenScope, PlatformError> {
        self.json(
            "getTokenScope",
            Method::GET,
            "/v1/api-keys/scope",
            &[],
            None,
        )
        .await
    }

    /// The ids of the organizations the token is scoped to.
    pub async fn token_organizations(&self) -> Result<Vec<String>, PlatformError> {
        Ok(self
            .token_scope()
            .await?
            .organizations
            .into_iter()
            .map(|o| o.id)
            .collect())
    }

    /// The organization to act on: `defaults.organizationId` if set (it must be in the
    /// token's scope), else the token's only organization. A token scoped to several
    /// organizations needs the default set, like the Terraform provider's "Please use a single
    /// scope token."
    pub async fn resolve_organization(&self) -> Result<ScopeOrganization, PlatformError> {
        let scope = self.token_scope().await?;
        if let Some(wanted) = &self.default_organization {
            return scope
                .organizations
                .into_iter()
                .find(|o| &o.id == wanted)
                .ok_or_else(|| {
                    let mut e = PlatformError::new(
                        ErrorKind::Forbidden,
                        format!(
                            "spheron: the API token is scoped to another organization, not {wanted}; \
                             create a token for that organization or change defaults.organizationId"
                        ),
                    );
                    e.field = Some("defaults.organizationId".to_string());
                    e
                });
        }
        let mut orgs = scope.organizations;
        match orgs.len() {
            1 => Ok(orgs.remove(0)),
            0 => Err(PlatformError::new(
                ErrorKind::Forbidden,
                "spheron: the API token is scoped to no organization",
            )),
            n => {
                let mut e = PlatformError::new(
                    ErrorKind::Invalid,
                    format!(
                        "spheron: the API token is scoped to {n} organizations; set \
                         defaults.organizationId or use a token scoped to one organization"
                    ),
                );
                e.field = Some("defaults.organizationId".to_string());
                Err(e)
            }
        }
    }

    // ----- organizations ----------------------------------------------------------------------

    /// `GET /v1/organization/{id}` (bare `Organization`); `None` when it does not exist.
    pub async fn get_organization(&self, id: &str) -> Result<Option<Organization>, PlatformError> {
        not_found_is_none(
            self.json(
                "getOrganization",
                Method::GET,
                &format!("/v1/organization/{}", seg(id)),
                &[],
                None,
            )
            .await,
        )
    }

    // ----- projects ---------------------------------------------------------------------------

    /// `GET /v1/organization/{id}/projects?skip&limit[&state]` → `{projects}`: one page.
    pub async fn list_projects_page(
        &self,
        organization_id: &str,
        skip: u32,
        limit: u32,
        state: Option<&ProjectState>,
    ) -> Result<Vec<Project>, PlatformError> {
        let mut query = vec![("skip", skip.to_string()), ("limit", limit.to_string())];
        if let Some(s) = state {
            query.push(("state", s.as_str().to_string()));
        }
        let page: ProjectsPage = self
            .json(
                "getOrganizationProjects",
                Method::GET,
                &format!("/v1/organization/{}/projects", seg(organization_id)),
                &query,
                None,
            )
            .await?;
        Ok(page.projects)
    }

    /// Every project of an organization (optionally only those in `state`).
    pub async fn list_projects(
        &self,
        organization_id: &str,
        state: Option<&ProjectState>,
    ) -> Result<Vec<Project>, PlatformError> {
        self.list_all(|skip, limit| self.list_projects_page(organization_id, skip, limit, state))
            .await
    }

    /// `GET /v1/project/{id}` (bare `Project`); `None` when it does not exist.
    pub async fn get_project(&self, id: &str) -> Result<Option<Project>, PlatformError> {
        not_found_is_none(
            self.json(
                "getProject",
                Method::GET,
                &format!("/v1/project/{}", seg(id)),
                &[],
                None,
            )
            .await,
        )
    }

    /// `PATCH /v1/project/{id}/state` `{state}` → `{message}`. Projects cannot be deleted:
    /// archiving is the removal, unarchiving brings a project back.
    pub async fn set_project_state(
        &self,
        id: &str,
        state: &ProjectState,
    ) -> Result<(), PlatformError> {
        let body = serde_json::json!({ "state": state.as_str() });
        self.send(
            "updateProjectState",
            Method::PATCH,
            &format!("/v1/project/{}/state", seg(id)),
            &[],
            Some(&body),
        )
        .await
        .map(|_| ())
    }

    /// Removes a project the only way the API allows: archiving it; 404 is already gone.
    pub async fn archive_project(&self, id: &str) -> Result<Deleted, PlatformError> {
        let body = serde_json::json!({ "state": ProjectState::Archived.as_str() });
        self.gone(
            "updateProjectState",
            Method::PATCH,
            &format!("/v1/project/{}/state", seg(id)),
            Some(&body),
        )
        .await
    }

    /// `GET /v1/project/{id}/deployment-environments` → `{result}`.
    pub async fn list_deployment_environments(
        &self,
        project_id: &str,
    ) -> Result<Vec<DeploymentEnvironment>, PlatformError> {
        let w: EnvironmentsWrapper = self
            .json(
                "getDeploymentEnvironments",
                Method::GET,
                &format!("/v1/project/{}/deployment-environments", seg(project_id)),
                &[],
                None,
            )
            .await?;
        Ok(w.result)
    }

    // ----- deployments ------------------------------------------------------------------------

    /// `POST /v1/deployment`: starts a deployment (creating the project on a repository's
    /// first deployment). Returns at once; poll [`SpheronClient::get_deployment`].
    pub async fn start_deployment(
        &self,
        body: &StartDeployment,
    ) -> Result<DeploymentStarted, PlatformError> {
        let body = to_value(body)?;
        self.json(
            "startDeployment",
            Method::POST,
            "/v1/deployment",
            &[],
            Some(&body),
        )
        .await
    }

    /// `GET /v1/deployment/{id}` → `{deployment}`; `None` when it does not exist.
    pub async fn get_deployment(&self, id: &str) -> Result<Option<Deployment>, PlatformError> {
        let w: Option<DeploymentWrapper> = not_found_is_none(
            self.json(
                "getDeployment",
                Method::GET,
                &format!("/v1/deployment/{}", seg(id)),
                &[],
                None,
            )
            .await,
        )?;
        Ok(w.map(|w| w.deployment))
    }

    /// `GET /v1/project/{id}/deployments?skip&limit[&status]` → a bare array: one page,
    /// newest first.
    pub async fn list_project_deployments_page(
        &self,
        project_id: &str,
        skip: u32,
        limit: u32,
        status: Option<&DeploymentStatus>,
    ) -> Result<Vec<Deployment>, PlatformError> {
        let mut query = vec![("skip", skip.to_string()), ("limit", limit.to_string())];
        if let Some(s) = status {
            query.push(("status", s.as_str().to_string()));
        }
        let page: DeploymentsPage = self
            .json(
                "getProjectDeployments",
                Method::GET,
                &format!("/v1/project/{}/deployments", seg(project_id)),
                &query,
                None,
            )
            .await?;
        Ok(page.into_vec())
    }

    /// Every deployment of a project (optionally only those with `status`), newest first.
    pub async fn list_project_deployments(
        &self,
        project_id: &str,
        status: Option<&DeploymentStatus>,
    ) -> Result<Vec<Deployment>, PlatformError> {
        self.list_all(|skip, limit| {
            self.list_project_deployments_page(project_id, skip, limit, status)
        })
        .await
    }

    /// `POST /v1/deployment/{id}/redeploy`: the same commit with the latest variables. Only
    /// `Deployed` or `Failed` deployments can be redeployed.
    pub async fn redeploy(&self, id: &str) -> Result<DeploymentStarted, PlatformError> {
        self.json(
            "redeployDeployment",
            Method::POST,
            &format!("/v1/deployment/{}/redeploy", seg(id)),
            &[],
            None,
        )
        .await
    }

    /// `POST /v1/deployment/{id}/authorize`: lets an `AuthorizationNeeded` deployment go on.
    pub async fn authorize_deployment(&self, id: &str) -> Result<DeploymentStarted, PlatformError> {
        self.json(
            "authorizeDeployment",
            Method::POST,
            &format!("/v1/deployment/{}/authorize", seg(id)),
            &[],
            None,
        )
        .await
    }

    /// `POST /v1/deployment/{id}/cancel` → `{message, canceled, killing}`; the deployment goes
    /// `Killing`, then `Canceled`.
    pub async fn cancel_deployment(&self, id: &str) -> Result<CancelResult, PlatformError> {
        self.json(
            "cancelDeployment",
            Method::POST,
            &format!("/v1/deployment/{}/cancel", seg(id)),
            &[],
            None,
        )
        .await
    }

    // ----- environment variables ---------------------------------------------------------------

    /// A project's variables. There is no list endpoint: they are read from the project.
    /// `None` when the project does not exist.
    pub async fn list_environment_variables(
        &self,
        project_id: &str,
    ) -> Result<Option<Vec<EnvironmentVariable>>, PlatformError> {
        Ok(self
            .get_project(project_id)
            .await?
            .map(|p| p.environment_variables))
    }

    /// `POST /v1/project/{id}/environment-variables` `{environmentVariables}` →
    /// `{environmentVariables}` (the variables added).
    pub async fn add_environment_variables(
        &self,
        project_id: &str,
        variables: &[NewEnvironmentVariable],
    ) -> Result<Vec<EnvironmentVariable>, PlatformError> {
        let body = serde_json::json!({ "environmentVariables": to_value(variables)? });
        let w: EnvironmentVariablesWrapper = self
            .json(
                "addProjectEnvironmentVariables",
                Method::POST,
                &format!("/v1/project/{}/environment-variables", seg(project_id)),
                &[],
                Some(&body),
            )
            .await?;
        Ok(w.environment_variables)
    }

    /// `PUT /v1/project/{id}/environment-variables/{varId}` → `{updated}`.
    pub async fn update_environment_variable(
        &self,
        project_id: &str,
        variable_id: &str,
        variable: &NewEnvironmentVariable,
    ) -> Result<EnvironmentVariable, PlatformError> {
        let body = to_value(variable)?;
        let w: UpdatedWrapper = self
            .json(
                "updateProjectEnvironmentVariable",
                Method::PUT,
                &format!(
                    "/v1/project/{}/environment-variables/{}",
                    seg(project_id),
                    seg(variable_id)
                ),
                &[],
                Some(&body),
            )
            .await?;
        Ok(w.updated)
    }

    /// `DELETE /v1/project/{id}/environment-variables/{varId}` → `{success}`; 404 is gone.
    pub async fn delete_environment_variable(
        &self,
        project_id: &str,
        variable_id: &str,
    ) -> Result<Deleted, PlatformError> {
        self.gone(
            "deleteProjectEnvironmentVariable",
            Method::DELETE,
            &format!(
                "/v1/project/{}/environment-variables/{}",
                seg(project_id),
                seg(variable_id)
            ),
            None,
        )
        .await
    }

    // ----- project domains ----------------------------------------------------------------------

    /// `GET /v1/project/{id}/domains` → `{domains}`.
    pub async fn list_project_domains(
        &self,
        project_id: &str,
    ) -> Result<Vec<Domain>, PlatformError> {
        let w: DomainsWrapper = self
            .json(
                "getProjectDomains",
                Method::GET,
                &format!("/v1/project/{}/domains", seg(project_id)),
                &[],
                None,
            )
            .await?;
        Ok(w.domains)
    }

    /// `GET /v1/project/{id}/domains/{domain}` → `{domain}`; `domain` is an id or a name.
    pub async fn get_project_domain(
        &self,
        project_id: &str,
        domain: &str,
    ) -> Result<Option<Domain>, PlatformError> {
        let w: Option<DomainWrapper> = not_found_is_none(
            self.json(
                "getProjectDomain",
                Method::GET,
                &format!("/v1/project/{}/domains/{}", seg(project_id), seg(domain)),
                &[],
                None,
            )
            .await,
        )?;
        Ok(w.map(|w| w.domain))
    }

    /// `POST /v1/project/{id}/domains` → `{domain}` (unverified).
    pub async fn create_project_domain(
        &self,
        project_id: &str,
        body: &NewDomain,
    ) -> Result<Domain, PlatformError> {
        let body = to_value(body)?;
        let w: DomainWrapper = self
            .json(
                "addProjectDomain",
                Method::POST,
                &format!("/v1/project/{}/domains", seg(project_id)),
                &[],
                Some(&body),
            )
            .await?;
        Ok(w.domain)
    }

    /// `PATCH /v1/project/{id}/domains/{domain}` → `{domain}`.
    pub async fn update_project_domain(
        &self,
        project_id: &str,
        domain: &str,
        body: &DomainUpdate,
    ) -> Result<Domain, PlatformError> {
        let body = to_value(body)?;
        let w: DomainWrapper = self
            .json(
                "patchProjectDomain",
                Method::PATCH,
                &format!("/v1/project/{}/domains/{}", seg(project_id), seg(domain)),
                &[],
                Some(&body),
            )
            .await?;
        Ok(w.domain)
    }

    /// `PATCH /v1/project/{id}/domains/{domain}/verify` `{}` → `{success, domain}`. Checks DNS
    /// now; call again later (minutes) while `success` is false.
    pub async fn verify_project_domain(
        &self,
        project_id: &str,
        domain: &str,
    ) -> Result<DomainVerification, PlatformError> {
        self.json(
            "verifyProjectDomain",
            Method::PATCH,
            &format!(
                "/v1/project/{}/domains/{}/verify",
                seg(project_id),
                seg(domain)
            ),
            &[],
            Some(&serde_json::json!({})),
        )
        .await
    }

    /// `DELETE /v1/project/{id}/domains/{domain}`; 404 is already gone.
    pub async fn delete_project_domain(
        &self,
        project_id: &str,
        domain: &str,
    ) -> Result<Deleted, PlatformError> {
        self.gone(
            "deleteProjectDomain",
            Method::DELETE,
            &format!("/v1/project/{}/domains/{}", seg(project_id), seg(domain)),
            None,
        )
        .await
    }

    /// `GET /v1/project/1/domains/cdn-records` → `{records}`: where domains must point. The
    /// project id "is always 1 because it is required, but it is not used" (SDK comment).
    pub async fn cdn_records(&self) -> Result<CdnRecords, PlatformError> {
        let w: CdnRecordsWrapper = self
            .json(
                "getCdnRecords",
                Method::GET,
                "/v1/project/1/domains/cdn-records",
                &[],
                None,
            )
            .await?;
        Ok(w.records)
    }

    // ----- compute-instance domains --------------------------------------------------------------

    /// `GET /v1/compute-instance/{id}/domains` → `{domains}`.
    pub async fn list_instance_domains(
        &self,
        instance_id: &str,
    ) -> Result<Vec<Domain>, PlatformError> {
        let w: DomainsWrapper = self
            .json(
                "getComputeInstanceDomains",
                Method::GET,
                &format!("/v1/compute-instance/{}/domains", seg(instance_id)),
                &[],
                None,
            )
            .await?;
        Ok(w.domains)
    }

    /// One domain of an instance, by id or name. The API has no single-domain read for
    /// instances, so this filters the list.
    pub async fn get_instance_domain(
        &self,
        instance_id: &str,
        domain: &str,
    ) -> Result<Option<Domain>, PlatformError> {
        let wanted = domain.to_ascii_lowercase();
        Ok(self
            .list_instance_domains(instance_id)
            .await?
            .into_iter()
            .find(|d| d.id == domain || d.name.to_ascii_lowercase() == wanted))
    }

    /// `POST /v1/compute-instance/{id}/domains` `{link, type, name}` → `{domain}`.
    pub async fn create_instance_domain(
        &self,
        instance_id: &str,
        body: &NewInstanceDomain,
    ) -> Result<Domain, PlatformError> {
        let body = to_value(body)?;
        let w: DomainWrapper = self
            .json(
                "addComputeInstanceDomain",
                Method::POST,
                &format!("/v1/compute-instance/{}/domains", seg(instance_id)),
                &[],
                Some(&body),
            )
            .await?;
        Ok(w.domain)
    }

    /// `PATCH /v1/compute-instance/{id}/domains/{domainId}` → `{domain}`.
    pub async fn update_instance_domain(
        &self,
        instance_id: &str,
        domain_id: &str,
        body: &NewInstanceDomain,
    ) -> Result<Domain, PlatformError> {
        let body = to_value(body)?;
        let w: DomainWrapper = self
            .json(
                "updateComputeInstanceDomain",
                Method::PATCH,
                &format!(
                    "/v1/compute-instance/{}/domains/{}",
                    seg(instance_id),
                    seg(domain_id)
                ),
                &[],
                Some(&body),
            )
            .await?;
        Ok(w.domain)
    }

    /// `PATCH /v1/compute-instance/{id}/domains/{domainId}/verify`. The SDK ignores the
    /// answer; it is read as `{success, domain}` when it has that shape, else the domain is
    /// read back from the list.
    pub async fn verify_instance_domain(
        &self,
        instance_id: &str,
        domain_id: &str,
    ) -> Result<DomainVerification, PlatformError> {
        let operation = "verifyComputeInstanceDomain";
        let response = self
            .send(
                operation,
                Method::PATCH,
                &format!(
                    "/v1/compute-instance/{}/domains/{}/verify",
                    seg(instance_id),
                    seg(domain_id)
                ),
                &[],
                Some(&serde_json::json!({})),
            )
            .await?;
        let bytes = response.bytes().await.unwrap_or_default();
        if let Ok(v) = serde_json::from_slice::<DomainVerification>(&bytes) {
            if v.domain.is_some() {
                return Ok(v);
            }
        }
        let domain = self.get_instance_domain(instance_id, domain_id).await?;
        Ok(DomainVerification {
            success: domain.as_ref().is_some_and(|d| d.verified),
            domain,
        })
    }

    /// `DELETE /v1/compute-instance/{id}/domains/{domainId}`; 404 is already gone.
    pub async fn delete_instance_domain(
        &self,
        instance_id: &str,
        domain_id: &str,
    ) -> Result<Deleted, PlatformError> {
        self.gone(
            "deleteComputeInstanceDomain",
            Method::DELETE,
            &format!(
                "/v1/compute-instance/{}/domains/{}",
                seg(instance_id),
                seg(domain_id)
            ),
            None,
        )
        .await
    }

    // ----- compute instances ----------------------------------------------------------------------

    /// `POST /v1/compute-instance/create` → `{computeProjectId, computeInstanceId,
    /// computeDeploymentId, topic}`. Poll the deployment until it is terminal.
    pub async fn create_compute_instance(
        &self,
        body: &CreateComputeInstance,
    ) -> Result<InstanceDeployment, PlatformError> {
        let body = to_value(body)?;
        self.json(
            "createComputeInstance",
            Method::POST,
            "/v1/compute-instance/create",
            &[],
            Some(&body),
        )
        .await
    }

    /// `GET /v1/compute-instance/{id}` → `{success, instance, topupReport}`; `None` when it
    /// does not exist.
    pub async fn get_compute_instance(
        &self,
        id: &str,
    ) -> Result<Option<ComputeInstance>, PlatformError> {
        let w: Option<InstanceWrapper> = not_found_is_none(
            self.json(
                "getComputeInstance",
                Method::GET,
                &format!("/v1/compute-instance/{}", seg(id)),
                &[],
                None,
            )
            .await,
        )?;
        Ok(w.map(|w| w.instance))
    }

    /// `GET /v1/compute-instance?organizationId&skip&limit[&state&computeProjectId]` →
    /// `{instances}`: one page.
    pub async fn list_compute_instances_page(
        &self,
        organization_id: &str,
        compute_project_id: Option<&str>,
        state: Option<&InstanceState>,
        skip: u32,
        limit: u32,
    ) -> Result<Vec<ComputeInstance>, PlatformError> {
        let mut query = vec![
            ("organizationId", organization_id.to_string()),
            ("skip", skip.to_string()),
            ("limit", limit.to_string()),
        ];
        if let Some(s) = state {
            query.push(("state", s.as_str().to_string()));
        }
        if let Some(p) = compute_project_id {
            query.push(("computeProjectId", p.to_string()));
        }
        let w: InstancesWrapper = self
            .json(
                "getComputeInstances",
                Method::GET,
                "/v1/compute-instance",
                &query,
                None,
            )
            .await?;
        Ok(w.instances)
    }

    /// Every compute instance of an organization, optionally of one compute project or state.
    pub async fn list_compute_instances(
        &self,
        organization_id: &str,
        compute_project_id: Option<&str>,
        state: Option<&InstanceState>,
    ) -> Result<Vec<ComputeInstance>, PlatformError> {
        self.list_all(|skip, limit| {
            self.list_compute_instances_page(
                organization_id,
                compute_project_id,
                state,
                skip,
                limit,
            )
        })
        .await
    }

    /// `PATCH /v1/compute-instance/{id}/update` with the full service list → a new deployment
    /// of type `UPDATE` to poll. This is how replicas (`serviceCount`) change.
    pub async fn update_compute_instance(
        &self,
        id: &str,
        body: &UpdateComputeInstance,
    ) -> Result<InstanceDeployment, PlatformError> {
        let body = to_value(body)?;
        self.json(
            "updateComputeInstance",
            Method::PATCH,
            &format!("/v1/compute-instance/{}/update", seg(id)),
            &[],
            Some(&body),
        )
        .await
    }

    /// `POST /v1/compute-instance/{id}/close` → `{message, success}`: stops the lease (state
    /// `Closed`); 404 is already gone.
    pub async fn close_compute_instance(&self, id: &str) -> Result<Deleted, PlatformError> {
        self.gone(
            "closeComputeInstance",
            Method::POST,
            &format!("/v1/compute-instance/{}/close", seg(id)),
            None,
        )
        .await
    }

    /// `DELETE /v1/compute-instance/{id}`; 404 is already gone.
    pub async fn delete_compute_instance(&self, id: &str) -> Result<Deleted, PlatformError> {
        self.gone(
            "deleteComputeInstance",
            Method::DELETE,
            &format!("/v1/compute-instance/{}", seg(id)),
            None,
        )
        .await
    }

    /// `GET /v1/compute-instance/deployment/{id}` → `{deployment, liveLogs}`; `None` when it
    /// does not exist.
    pub async fn get_compute_deployment(
        &self,
        id: &str,
    ) -> Result<Option<ComputeDeployment>, PlatformError> {
        let w: Option<ComputeDeploymentWrapper> = not_found_is_none(
            self.json(
                "getComputeDeployment",
                Method::GET,
                &format!("/v1/compute-instance/deployment/{}", seg(id)),
                &[],
                None,
            )
            .await,
        )?;
        Ok(w.map(|w| w.deployment))
    }

    /// The deployment an instance runs now (its `activeDeployment`, else its latest one), with
    /// the services and their replicas; `None` when the instance does not exist.
    pub async fn current_deployment(
        &self,
        instance_id: &str,
    ) -> Result<Option<ComputeDeployment>, PlatformError> {
        let Some(instance) = self.get_compute_instance(instance_id).await? else {
            return Ok(None);
        };
        let Some(id) = instance
            .active_deployment
            .or_else(|| instance.deployments.last().cloned())
        else {
            return Ok(None);
        };
        self.get_compute_deployment(&id).await
    }

    // ----- compute projects -----------------------------------------------------------------------

    /// `GET /v1/organization/{id}/compute-projects?skip&limit` → `{computeProjects}`: one page.
    pub async fn list_compute_projects_page(
        &self,
        organization_id: &str,
        skip: u32,
        limit: u32,
    ) -> Result<Vec<ComputeProject>, PlatformError> {
        let query = [("skip", skip.to_string()), ("limit", limit.to_string())];
        let w: ComputeProjectsWrapper = self
            .json(
                "getOrganizationComputeProjects",
                Method::GET,
                &format!("/v1/organization/{}/compute-projects", seg(organization_id)),
                &query,
                None,
            )
            .await?;
        Ok(w.compute_projects)
    }

    /// Every compute project of an organization.
    pub async fn list_compute_projects(
        &self,
        organization_id: &str,
    ) -> Result<Vec<ComputeProject>, PlatformError> {
        self.list_all(|skip, limit| self.list_compute_projects_page(organization_id, skip, limit))
            .await
    }

    /// `GET /v1/compute-project/{id}` (bare); `None` when it does not exist.
    pub async fn get_compute_project(
        &self,
        id: &str,
    ) -> Result<Option<ComputeProject>, PlatformError> {
        not_found_is_none(
            self.json(
                "getComputeProject",
                Method::GET,
                &format!("/v1/compute-project/{}", seg(id)),
                &[],
                None,
            )
            .await,
        )
    }

    /// `DELETE /v1/compute-project/{id}`; 404 is already gone.
    pub async fn delete_compute_project(&self, id: &str) -> Result<Deleted, PlatformError> {
        self.gone(
            "deleteComputeProject",
            Method::DELETE,
            &format!("/v1/compute-project/{}", seg(id)),
            None,
        )
        .await
    }
}

#[async_trait]
impl Platform for SpheronClient {
    fn platform_type(&self) -> PlatformType {
        PlatformType::Spheron
    }

    /// Reads the token's scope and names the organization bosun will act on.
    async fn verify(&self) -> Result<String, PlatformError> {
        let org = self.resolve_organization().await?;
        let name = org
            .name
            .or(org.username)
            .unwrap_or_else(|| "unnamed".to_string());
        Ok(format!("organization {} ({name})", org.id))
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_cannot_escape() {
        assert_eq!(seg("65f0"), "65f0");
        assert_eq!(seg("a/../b?x#y"), "a%2F..%2Fb%3Fx%23y");
    }
}
