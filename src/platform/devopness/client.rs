//! The Devopness API client (`shared/specs/devopness-openapi.json`): the endpoints the mapping
//! needs, typed, with errors carrying the platform's `{message, errors}` body. The bodies are
//! in `wire.rs`, the error answers in `errors.rs`.
//!
//! Conventions (see `shared/research/devopness.md`): bearer token, `Accept` and `Content-Type`
//! `application/json` on every call (else 415), lists are bare arrays paged by the `Link`
//! header, `PUT` and custom actions answer 204, and asynchronous work is reported by the
//! `X-Devopness-Action-Id` header of that 204.

pub use super::errors::error_from;
pub use super::wire::*;

use super::errors::check;
use crate::api::PlatformType;
use crate::core::drivers::DeepChecks;
use crate::core::seam::{Connection, Credential, ErrorKind, Platform, PlatformError};
use crate::platform::http::{not_found_is_none, read_json_answer, to_value, ApiClient};
use crate::platform::listing::{listing_ttl, SharedListings};
use async_trait::async_trait;
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE, LINK};
use reqwest::{Method, RequestBuilder, Response, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::Arc;

/// The header naming the action a mutation dispatched.
pub const ACTION_ID_HEADER: &str = "x-devopness-action-id";
/// The largest page the API serves.
pub const PER_PAGE: u32 = 100;
/// A guard against a server whose `next` never ends.
const MAX_PAGES: usize = 1000;

/// What a delete did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deleted {
    /// Removed; for asynchronous removals, the action doing it.
    Done { action_id: Option<i64> },
    /// It was not there (404).
    AlreadyGone,
}

/// Reads `X-Devopness-Action-Id`, if present.
pub fn action_id(headers: &HeaderMap) -> Result<Option<i64>, PlatformError> {
    match headers.get(ACTION_ID_HEADER) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .map(Some)
            .ok_or_else(|| {
                PlatformError::new(
                    ErrorKind::Protocol,
                    "devopness answered an X-Devopness-Action-Id that is not a number",
                )
            }),
    }
}

/// A Devopness account reached with a personal-access or project API token.
pub struct Devopness {
    api: ApiClient,
    token: Credential,
    default_project: Option<i64>,
    default_environment: Option<i64>,
    /// Per environment: the last application listing, shared by every Workspace in it. The
    /// listing carries each application's latest deployment and its status, so it also
    /// tracks deployments in flight without a call per action.
    applications: SharedListings<i64, Application>,
    /// Per application: when its variables were last read, and what they were set from.
    pub(crate) deep_checks: DeepChecks,
}

impl Devopness {
    pub fn new(connection: Connection) -> Result<Self, PlatformError> {
        let api = ApiClient::new(&connection, "devopness")?;
        let ttl = listing_ttl(connection.budget.requests_per_minute());
        Ok(Devopness {
            api,
            token: connection.credential,
            default_project: connection.defaults.project_id,
            default_environment: connection.defaults.environment_id,
            applications: SharedListings::new(ttl),
            deep_checks: DeepChecks::default(),
        })
    }

    /// The Provider's `defaults.projectId`.
    pub fn default_project(&self) -> Option<i64> {
        self.default_project
    }

    /// The Provider's `defaults.environmentId`.
    pub fn default_environment(&self) -> Option<i64> {
        self.default_environment
    }

    fn authorize(&self, request: RequestBuilder) -> RequestBuilder {
        request
            .bearer_auth(self.token.expose())
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/json")
    }

    /// Sends a request to a path (relative to the endpoint) and checks the status.
    async fn send(
        &self,
        operation: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Response, PlatformError> {
        let mut request = self.authorize(self.api.request(method, path));
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
        body: Option<&Value>,
    ) -> Result<T, PlatformError> {
        let response = self.send(operation, method, path, body).await?;
        read_json_answer("devopness", operation, response).await
    }

    /// Sends a request expecting 204; returns the dispatched action's id, if any.
    async fn no_content(
        &self,
        operation: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Option<i64>, PlatformError> {
        let response = self.send(operation, method, path, body).await?;
        action_id(response.headers())
    }

    /// A delete where 404 means it is already gone.
    async fn delete(&self, operation: &str, path: &str) -> Result<Deleted, PlatformError> {
        match self.no_content(operation, Method::DELETE, path, None).await {
            Ok(action_id) => Ok(Deleted::Done { action_id }),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(Deleted::AlreadyGone),
            Err(e) => Err(e),
        }
    }

    /// Every item of a paged list: asks for `per_page=100` and follows `rel="next"` until it
    /// is absent. `next` is only followed on the endpoint's own origin, so the token never
    /// goes elsewhere.
    async fn list_all<T: DeserializeOwned>(
        &self,
        operation: &str,
        path: &str,
    ) -> Result<Vec<T>, PlatformError> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let first = format!("{}{path}{sep}per_page={PER_PAGE}", self.api.base());
        let base = Url::parse(&first).map_err(|e| {
            PlatformError::new(
                ErrorKind::Invalid,
                format!("devopness endpoint is not a valid URL: {e}"),
            )
        })?;
        let mut url = base.clone();
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            seen.insert(url.to_string());
            let request = self.authorize(self.api.raw(Method::GET, url.as_str()));
            let response = self.api.send(operation, request).await?;
            let response = check(operation, response).await?;
            let links = response
                .headers()
                .get(LINK)
                .and_then(|v| v.to_str().ok())
                .map(parse_link)
                .unwrap_or_default();
            let page: Vec<T> = read_json_answer("devopness", operation, response).await?;
            let empty = page.is_empty();
            out.extend(page);
            let Some(next) = links.next else {
                return Ok(out);
            };
            let next = url.join(&next).map_err(|e| {
                PlatformError::new(
                    ErrorKind::Protocol,
                    format!("devopness {operation}: unreadable next-page link: {e}"),
                )
            })?;
            if next.origin() != base.origin() {
                return Err(PlatformError::new(
                    ErrorKind::Protocol,
                    format!(
                        "devopness {operation}: refusing to follow a next-page link to {} with the token",
                        next.origin().ascii_serialization()
                    ),
                ));
            }
            if empty || seen.contains(next.as_str()) {
                // A next link that goes nowhere new: stop rather than loop.
                return Ok(out);
            }
            url = next;
        }
        Err(PlatformError::new(
            ErrorKind::Protocol,
            format!("devopness {operation}: more than {MAX_PAGES} pages"),
        ))
    }

    // ----- identity ------------------------------------------------------------------------

    /// `GET /users/me` (personal access tokens only; project tokens get 403).
    pub async fn current_user(&self) -> Result<User, PlatformError> {
        self.json("getUserMe", Method::GET, "/users/me", None).await
    }

    /// `GET /projects`, every page.
    pub async fn list_projects(&self) -> Result<Vec<Project>, PlatformError> {
        self.list_all("listProjects", "/projects").await
    }

    /// `GET /projects/{id}`; `None` when it does not exist.
    pub async fn get_project(&self, id: i64) -> Result<Option<Project>, PlatformError> {
        not_found_is_none(
            self.json("getProject", Method::GET, &format!("/projects/{id}"), None)
                .await,
        )
    }

    /// `GET /environments/{id}`; `None` when it does not exist.
    pub async fn get_environment(&self, id: i64) -> Result<Option<Environment>, PlatformError> {
        not_found_is_none(
            self.json(
                "getEnvironment",
                Method::GET,
                &format!("/environments/{id}"),
                None,
            )
            .await,
        )
    }

    // ----- applications --------------------------------------------------------------------

    /// `GET /environments/{id}/applications`, every page.
    pub async fn list_applications(
        &self,
        environment_id: i64,
    ) -> Result<Vec<Application>, PlatformError> {
        self.list_all(
            "listEnvironmentApplications",
            &format!("/environments/{environment_id}/applications"),
        )
        .await
    }

    /// Every application of an environment, from one listing shared by all reconciles
    /// within the listing's time to live.
    pub async fn applications_of(
        &self,
        environment_id: i64,
    ) -> Result<Arc<Vec<Application>>, PlatformError> {
        self.applications
            .get(&environment_id, || self.list_applications(environment_id))
            .await
    }

    /// Drops an environment's listing after bosun changed something in it.
    pub async fn forget_applications(&self, environment_id: i64) {
        self.applications.forget(&environment_id).await;
    }

    /// `POST /environments/{id}/applications` → 201 with the application. Not idempotent:
    /// look the name up first.
    pub async fn create_application(
        &self,
        environment_id: i64,
        body: &CreateApplication,
    ) -> Result<Application, PlatformError> {
        let body = to_value(body)?;
        self.json(
            "addEnvironmentApplication",
            Method::POST,
            &format!("/environments/{environment_id}/applications"),
            Some(&body),
        )
        .await
    }

    /// `GET /applications/{id}`; `None` when it does not exist.
    pub async fn get_application(&self, id: i64) -> Result<Option<Application>, PlatformError> {
        not_found_is_none(
            self.json(
                "getApplication",
                Method::GET,
                &format!("/applications/{id}"),
                None,
            )
            .await,
        )
    }

    /// `PUT /applications/{id}` → 204 (re-read to see the result).
    pub async fn update_application(&self, body: &UpdateApplication) -> Result<(), PlatformError> {
        let value = to_value(body)?;
        self.no_content(
            "updateApplication",
            Method::PUT,
            &format!("/applications/{}", body.id),
            Some(&value),
        )
        .await
        .map(|_| ())
    }

    /// `DELETE /applications/{id}` → 204 with the removal action; 404 is already gone.
    pub async fn delete_application(&self, id: i64) -> Result<Deleted, PlatformError> {
        self.delete("deleteApplication", &format!("/applications/{id}"))
            .await
    }

    /// `POST /applications/{id}/deployments` → 204; returns the deploy action's id from
    /// `X-Devopness-Action-Id` (a 204 without it is a protocol error).
    pub async fn deploy_application(
        &self,
        id: i64,
        body: &DeployApplication,
    ) -> Result<i64, PlatformError> {
        let value = to_value(body)?;
        self.no_content(
            "addApplicationDeployment",
            Method::POST,
            &format!("/applications/{id}/deployments"),
            Some(&value),
        )
        .await?
        .ok_or_else(|| {
            PlatformError::new(
                ErrorKind::Protocol,
                "devopness addApplicationDeployment: the answer named no action (no X-Devopness-Action-Id)",
            )
        })
    }

    // ----- actions -------------------------------------------------------------------------

    /// `GET /actions/{id}`; `None` when it does not exist.
    pub async fn get_action(&self, id: i64) -> Result<Option<Action>, PlatformError> {
        not_found_is_none(
            self.json("getAction", Method::GET, &format!("/actions/{id}"), None)
                .await,
        )
    }

    // ----- variables -----------------------------------------------------------------------

    /// `GET /variables/application/{id}`, every page.
    pub async fn list_application_variables(
        &self,
        application_id: i64,
    ) -> Result<Vec<Variable>, PlatformError> {
        self.list_all(
            "listVariablesByResourceType",
            &format!("/variables/application/{application_id}"),
        )
        .await
    }

    /// `POST /variables/application/{id}` → 201 with the variable.
    pub async fn create_application_variable(
        &self,
        application_id: i64,
        body: &CreateVariable,
    ) -> Result<Variable, PlatformError> {
        let body = to_value(body)?;
        self.json(
            "addVariable",
            Method::POST,
            &format!("/variables/application/{application_id}"),
            Some(&body),
        )
        .await
    }

    /// `PUT /variables/{id}` → 204.
    pub async fn update_variable(&self, body: &UpdateVariable) -> Result<(), PlatformError> {
        let value = to_value(body)?;
        self.no_content(
            "updateVariable",
            Method::PUT,
            &format!("/variables/{}", body.id),
            Some(&value),
        )
        .await
        .map(|_| ())
    }

    /// `DELETE /variables/{id}` → 204; 404 is already gone.
    pub async fn delete_variable(&self, id: i64) -> Result<Deleted, PlatformError> {
        self.delete("deleteVariable", &format!("/variables/{id}"))
            .await
    }

    // ----- virtual hosts -------------------------------------------------------------------

    /// `GET /environments/{id}/virtual-hosts`, every page.
    pub async fn list_virtual_hosts(
        &self,
        environment_id: i64,
    ) -> Result<Vec<VirtualHost>, PlatformError> {
        self.list_all(
            "listEnvironmentVirtualHosts",
            &format!("/environments/{environment_id}/virtual-hosts"),
        )
        .await
    }

    /// `POST /environments/{id}/virtual-hosts` → 201 with the virtual host.
    pub async fn create_virtual_host(
        &self,
        environment_id: i64,
        body: &CreateVirtualHost,
    ) -> Result<VirtualHost, PlatformError> {
        let body = to_value(body)?;
        self.json(
            "addEnvironmentVirtualHost",
            Method::POST,
            &format!("/environments/{environment_id}/virtual-hosts"),
            Some(&body),
        )
        .await
    }

    /// `GET /virtual-hosts/{id}`; `None` when it does not exist.
    pub async fn get_virtual_host(&self, id: i64) -> Result<Option<VirtualHost>, PlatformError> {
        not_found_is_none(
            self.json(
                "getVirtualHost",
                Method::GET,
                &format!("/virtual-hosts/{id}"),
                None,
            )
            .await,
        )
    }

    /// `PUT /virtual-hosts/{id}` → 204 (re-read to see the result). Not applied to the servers
    /// until the virtual host is deployed again.
    pub async fn update_virtual_host(&self, body: &UpdateVirtualHost) -> Result<(), PlatformError> {
        let value = to_value(body)?;
        self.no_content(
            "updateVirtualHost",
            Method::PUT,
            &format!("/virtual-hosts/{}", body.id),
            Some(&value),
        )
        .await
        .map(|_| ())
    }

    /// `POST /virtual-hosts/{id}/deploy` → 204; returns the deploy action's id from
    /// `X-Devopness-Action-Id` (a 204 without it is a protocol error). `servers` empty: the
    /// platform's default targets.
    pub async fn deploy_virtual_host(
        &self,
        id: i64,
        servers: &[i64],
    ) -> Result<i64, PlatformError> {
        self.dispatch(
            "deployVirtualHost",
            &format!("/virtual-hosts/{id}/deploy"),
            servers,
        )
        .await
    }

    /// `DELETE /virtual-hosts/{id}` → 204 with the removal action; 404 is already gone.
    pub async fn delete_virtual_host(&self, id: i64) -> Result<Deleted, PlatformError> {
        self.delete("deleteVirtualHost", &format!("/virtual-hosts/{id}"))
            .await
    }

    /// A `POST` custom action with a `{servers}` body → 204 with the action id (required).
    async fn dispatch(
        &self,
        operation: &str,
        path: &str,
        servers: &[i64],
    ) -> Result<i64, PlatformError> {
        let value = to_value(&DeployToServers { servers })?;
        self.no_content(operation, Method::POST, path, Some(&value))
            .await?
            .ok_or_else(|| {
                PlatformError::new(
                    ErrorKind::Protocol,
                    format!(
                        "devopness {operation}: the answer named no action (no X-Devopness-Action-Id)"
                    ),
                )
            })
    }

    // ----- SSL certificates ----------------------------------------------------------------

    /// `GET /environments/{id}/ssl-certificates`, every page.
    pub async fn list_ssl_certificates(
        &self,
        environment_id: i64,
    ) -> Result<Vec<SslCertificate>, PlatformError> {
        self.list_all(
            "listEnvironmentSslCertificates",
            &format!("/environments/{environment_id}/ssl-certificates"),
        )
        .await
    }

    /// `POST /environments/{id}/ssl-certificates` → 201 with the certificate. A Let's Encrypt
    /// certificate is issued by an action (its `last_action`) and is `active` once that action
    /// completes. One certificate per virtual host: look it up first.
    pub async fn create_ssl_certificate(
        &self,
        environment_id: i64,
        body: &CreateSslCertificate,
    ) -> Result<SslCertificate, PlatformError> {
        let body = to_value(body)?;
        self.json(
            "addEnvironmentSslCertificate",
            Method::POST,
            &format!("/environments/{environment_id}/ssl-certificates"),
            Some(&body),
        )
        .await
    }

    /// `GET /ssl-certificates/{id}`; `None` when it does not exist.
    pub async fn get_ssl_certificate(
        &self,
        id: i64,
    ) -> Result<Option<SslCertificate>, PlatformError> {
        not_found_is_none(
            self.json(
                "getSslCertificate",
                Method::GET,
                &format!("/ssl-certificates/{id}"),
                None,
            )
            .await,
        )
    }

    /// `POST /ssl-certificates/{id}/deploy` → 204; returns the action's id (a 204 without
    /// `X-Devopness-Action-Id` is a protocol error). Installs the certificate on the servers
    /// again (and, in the simulator, retries a failed issue).
    pub async fn deploy_ssl_certificate(
        &self,
        id: i64,
        servers: &[i64],
    ) -> Result<i64, PlatformError> {
        self.dispatch(
            "deploySslCertificate",
            &format!("/ssl-certificates/{id}/deploy"),
            servers,
        )
        .await
    }

    /// `DELETE /ssl-certificates/{id}` → 204 with the removal action; 404 is already gone.
    pub async fn delete_ssl_certificate(&self, id: i64) -> Result<Deleted, PlatformError> {
        self.delete("deleteSslCertificate", &format!("/ssl-certificates/{id}"))
            .await
    }
}

#[async_trait]
impl Platform for Devopness {
    fn workspaces(&self) -> Option<&dyn crate::core::drivers::WorkspaceDriver> {
        Some(self)
    }

    fn domains(&self) -> Option<&dyn crate::core::drivers::DomainDriver> {
        Some(self)
    }

    fn platform_type(&self) -> PlatformType {
        PlatformType::Devopness
    }

    /// With a default project, reads it (works for project tokens and personal tokens);
    /// otherwise reads the current user (personal tokens only).
    async fn verify(&self) -> Result<String, PlatformError> {
        if let Some(id) = self.default_project {
            return match self.get_project(id).await? {
                Some(p) => Ok(format!("project {} ({})", p.id, p.name)),
                None => {
                    let mut e = PlatformError::new(
                        ErrorKind::NotFound,
                        format!(
                            "devopness: project {id} does not exist or the token cannot see it"
                        ),
                    );
                    e.status = Some(404);
                    e.field = Some("defaults.projectId".to_string());
                    Err(e)
                }
            };
        }
        let user = self.current_user().await?;
        let who = user
            .url_slug
            .or(user.name)
            .unwrap_or_else(|| "unnamed".to_string());
        Ok(format!("user {} ({who})", user.id))
    }
}

#[cfg(all(test, feature = "sim"))]
mod against_sim;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::budget::RateBudget;
    use axum::body::Bytes;
    use axum::http::{HeaderMap as AxHeaders, Uri};
    use axum::response::IntoResponse;
    use axum::Router;
    use std::sync::{Arc, Mutex};

    // ----- against a local server -----------------------------------------------------------
    #[derive(Clone, Debug)]
    struct Seen {
        method: String,
        path: String,
        query: Option<String>,
        auth: Option<String>,
        accept: Option<String>,
        content_type: Option<String>,
        body: String,
    }

    struct Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }

    type Reply = Arc<dyn Fn(&Seen, &str) -> Answer + Send + Sync>;
    type Log = Arc<Mutex<Vec<Seen>>>;

    /// Serves `reply(request, base_url)` on a free port; returns the base URL and the log.
    async fn serve(reply: Reply) -> (String, Log) {
        let log: Log = Arc::new(Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let seen_log = log.clone();
        let seen_base = base.clone();
        let handler =
            move |method: axum::http::Method, uri: Uri, headers: AxHeaders, body: Bytes| {
                let log = seen_log.clone();
                let reply = reply.clone();
                let base = seen_base.clone();
                async move {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned)
                    };
                    let seen = Seen {
                        method: method.to_string(),
                        path: uri.path().to_owned(),
                        query: uri.query().map(str::to_owned),
                        auth: header("authorization"),
                        accept: header("accept"),
                        content_type: header("content-type"),
                        body: String::from_utf8_lossy(&body).into_owned(),
                    };
                    let a = reply(&seen, &base);
                    log.lock().expect("log").push(seen);
                    let mut response = (
                        axum::http::StatusCode::from_u16(a.status).expect("status"),
                        a.body,
                    )
                        .into_response();
                    let h = response.headers_mut();
                    h.insert(
                        axum::http::header::CONTENT_TYPE,
                        axum::http::HeaderValue::from_static("application/json"),
                    );
                    for (k, v) in a.headers {
                        h.insert(
                            axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                            axum::http::HeaderValue::from_str(&v).expect("value"),
                        );
                    }
                    response
                }
            };
        let app = Router::new().fallback(handler);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (base, log)
    }

    pub(super) fn connection(endpoint: &str, project: Option<i64>) -> Connection {
        let defaults = crate::api::PlatformDefaults {
            project_id: project,
            ..Default::default()
        };
        Connection {
            platform: PlatformType::Devopness,
            endpoint: endpoint.to_owned(),
            credential: Credential::new("devopness_pat_s3cr3t"),
            ca_pem: None,
            defaults,
            budget: Arc::new(RateBudget::new(6000, 100)),
            metrics: crate::core::metrics::Metrics::new(),
            read_only: false,
        }
    }

    fn client(endpoint: &str) -> Devopness {
        Devopness::new(connection(endpoint, None)).expect("client")
    }

    pub(super) fn update_body(id: i64) -> UpdateApplication {
        UpdateApplication {
            id,
            name: "web".into(),
            programming_language: "nodejs".into(),
            engine_version: "22".into(),
            framework: "none".into(),
            default_branch: "main".into(),
            repository: None,
            credential_id: None,
            root_directory: None,
            build_command: None,
            install_dependencies_command: None,
            deployments_keep: None,
        }
    }

    fn query_param(query: &Option<String>, name: &str) -> Option<String> {
        query.as_deref().and_then(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[tokio::test]
    async fn lists_ask_for_pages_of_one_hundred() {
        let (base, log) = serve(Arc::new(|seen: &Seen, base: &str| {
            let per_page: usize = query_param(&seen.query, "per_page")
                .and_then(|v| v.parse().ok())
                .unwrap_or(20);
            let page: usize = query_param(&seen.query, "page")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            let total: usize = 150;
            let last = total.div_ceil(per_page);
            let items: Vec<Value> = ((page - 1) * per_page + 1..=(page * per_page).min(total))
                .map(|i| serde_json::json!({"id": i, "name": format!("app-{i}")}))
                .collect();
            let url = |p: usize| format!("<{base}{}?page={p}&per_page={per_page}>", seen.path);
            let mut link = format!(r#"{}; rel="first", {}; rel="last""#, url(1), url(last));
            if page > 1 {
                link.push_str(&format!(r#", {}; rel="prev""#, url(page - 1)));
            }
            if page < last {
                link.push_str(&format!(r#", {}; rel="next""#, url(page + 1)));
            }
            let mut a = answer(200, &Value::Array(items).to_string());
            a.headers.push(("link".into(), link));
            a
        }))
        .await;
        let apps = client(&base).list_applications(12).await.expect("list");
        assert_eq!(apps.len(), 150);
        assert_eq!(apps[0].name, "app-1");
        assert_eq!(apps[149].id, 150);
        let log = log.lock().expect("log");
        assert_eq!(log.len(), 2, "150 items at 100 a page is 2 pages");
        assert_eq!(log[0].query.as_deref(), Some("per_page=100"));
    }

    #[tokio::test]
    async fn lists_follow_next_across_three_pages_of_fifty() {
        // The server serves 50 a page whatever is asked (as some endpoints do).
        let (base, log) = serve(Arc::new(|seen: &Seen, base: &str| {
            let page: usize = query_param(&seen.query, "page")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            let items: Vec<Value> = ((page - 1) * 50 + 1..=page * 50)
                .map(|i| serde_json::json!({"id": i, "key": format!("K{i}"), "value": "v"}))
                .collect();
            let mut link = format!(
                r#"<{base}{p}?page=1>; rel="first", <{base}{p}?page=3>; rel="last""#,
                p = seen.path
            );
            if page > 1 {
                link.push_str(&format!(
                    r#", <{base}{}?page={}>; rel="previous""#,
                    seen.path,
                    page - 1
                ));
            }
            if page < 3 {
                // A relative link is resolved against the current page.
                link.push_str(&format!(
                    r#", <{}?page={}>; rel="next""#,
                    seen.path,
                    page + 1
                ));
            }
            let mut a = answer(200, &Value::Array(items).to_string());
            a.headers.push(("Link".into(), link));
            a
        }))
        .await;
        let vars = client(&base)
            .list_application_variables(5)
            .await
            .expect("list");
        assert_eq!(vars.len(), 150);
        assert_eq!(vars[149].key, "K150");
        let log = log.lock().expect("log");
        assert_eq!(log.len(), 3);
        assert_eq!(log[0].path, "/variables/application/5");
        assert_eq!(log[0].query.as_deref(), Some("per_page=100"));
        assert_eq!(log[2].query.as_deref(), Some("page=3"));
        for s in log.iter() {
            assert_eq!(s.auth.as_deref(), Some("Bearer devopness_pat_s3cr3t"));
            assert_eq!(s.accept.as_deref(), Some("application/json"));
            assert_eq!(s.content_type.as_deref(), Some("application/json"));
        }
    }

    #[tokio::test]
    async fn next_links_to_another_origin_are_refused() {
        let (base, log) = serve(Arc::new(|_: &Seen, _: &str| {
            let mut a = answer(200, r#"[{"id":1,"name":"p"}]"#);
            a.headers.push((
                "link".into(),
                r#"<https://evil.example/projects?page=2>; rel="next""#.into(),
            ));
            a
        }))
        .await;
        let e = client(&base).list_projects().await.expect_err("refused");
        assert_eq!(e.kind, ErrorKind::Protocol);
        assert!(!e.message.contains("s3cr3t"));
        assert_eq!(log.lock().expect("log").len(), 1);
    }

    #[tokio::test]
    async fn deploy_returns_the_action_id_header() {
        let (base, log) = serve(Arc::new(|seen: &Seen, _: &str| {
            match (seen.method.as_str(), seen.path.as_str()) {
                ("POST", "/applications/3/deployments") => {
                    let mut a = answer(204, "");
                    a.headers.push(("X-Devopness-Action-Id".into(), "991".into()));
                    a
                }
                ("POST", "/applications/4/deployments") => answer(204, ""),
                ("GET", "/actions/991") => answer(
                    200,
                    r#"{"id":991,"status":"in-progress","status_reason_code":"IN_PROGRESS","type":"deploy","targets":[]}"#,
                ),
                _ => answer(404, ""),
            }
        }))
        .await;
        let c = client(&base);
        let body = DeployApplication {
            deployment_type: DeploymentType::Deploy,
            source_type: Some(SourceType::Branch),
            source_ref: Some("main".into()),
            pipeline_id: Some(8),
            servers: vec![2],
        };
        let id = c.deploy_application(3, &body).await.expect("deploy");
        assert_eq!(id, 991);
        let sent: Value =
            serde_json::from_str(&log.lock().expect("log")[0].body).expect("body json");
        assert_eq!(sent["source_ref"], "main");
        assert_eq!(sent["pipeline_id"], 8);
        let e = c.deploy_application(4, &body).await.expect_err("no header");
        assert_eq!(e.kind, ErrorKind::Protocol);
        let action = c.get_action(991).await.expect("action").expect("exists");
        assert_eq!(action.status, ActionStatus::InProgress);
        assert!(c.get_action(5).await.expect("gone").is_none());
    }

    #[tokio::test]
    async fn crud_statuses_and_deletes() {
        let (base, _log) = serve(Arc::new(|seen: &Seen, _: &str| {
            match (seen.method.as_str(), seen.path.as_str()) {
                ("POST", "/environments/2/applications") => {
                    answer(201, r#"{"id":30,"name":"web","environment_id":2}"#)
                }
                ("PUT", "/applications/30") => answer(204, ""),
                ("DELETE", "/applications/30") => {
                    let mut a = answer(204, "");
                    a.headers
                        .push(("x-devopness-action-id".into(), "77".into()));
                    a
                }
                ("DELETE", "/applications/31") => answer(404, r#"{"message":"No query results"}"#),
                ("DELETE", "/variables/5") => answer(204, ""),
                ("PUT", "/variables/5") => answer(204, ""),
                ("POST", "/variables/application/30") => answer(
                    201,
                    r#"{"id":5,"key":"PORT","value":"3000","type":"variable","target":"os-env-var","hidden":false}"#,
                ),
                ("GET", "/environments/2") => {
                    answer(200, r#"{"id":2,"name":"staging","type":"staging"}"#)
                }
                _ => answer(404, ""),
            }
        }))
        .await;
        let c = client(&base);
        let app = c
            .create_application(
                2,
                &CreateApplication {
                    name: "web".into(),
                    programming_language: "nodejs".into(),
                    engine_version: "20".into(),
                    framework: "none".into(),
                    repository: "acme/web".into(),
                    credential_id: 4,
                    default_branch: "main".into(),
                    root_directory: None,
                    build_command: None,
                    install_dependencies_command: None,
                    deployments_keep: None,
                    linked_resources: vec![],
                },
            )
            .await
            .expect("create");
        assert_eq!(app.id, 30);
        c.update_application(&update_body(30))
            .await
            .expect("update");
        assert_eq!(
            c.delete_application(30).await.expect("delete"),
            Deleted::Done {
                action_id: Some(77)
            }
        );
        assert_eq!(
            c.delete_application(31).await.expect("gone"),
            Deleted::AlreadyGone
        );
        let v = c
            .create_application_variable(30, &CreateVariable::env("PORT", "3000", false))
            .await
            .expect("create variable");
        assert_eq!((v.id, v.key.as_str()), (5, "PORT"));
        c.update_variable(&UpdateVariable {
            id: 5,
            key: "PORT".into(),
            value: "3001".into(),
            target: "os-env-var".into(),
            variable_type: "variable".into(),
            hidden: false,
            description: None,
        })
        .await
        .expect("update variable");
        assert_eq!(
            c.delete_variable(5).await.expect("delete"),
            Deleted::Done { action_id: None }
        );
        assert_eq!(
            c.get_environment(2).await.expect("env").map(|e| e.name),
            Some("staging".to_string())
        );
        assert!(c.get_application(99).await.expect("none").is_none());
    }

    #[tokio::test]
    async fn errors_are_mapped_over_http() {
        let (base, _log) = serve(Arc::new(|seen: &Seen, _: &str| {
            match seen.path.as_str() {
                "/users/me" => answer(401, r#"{"message":"Unauthenticated."}"#),
                "/projects/1" => answer(403, r#"{"message":"This action is unauthorized."}"#),
                "/actions/2" => answer(402, r#"{"message":"Usage limit exceeded"}"#),
                "/applications/3" => answer(409, "not json"),
                "/environments/4/applications" => answer(
                    422,
                    r#"{"message":"The name has already been taken.","errors":{"name":["The name has already been taken."]}}"#,
                ),
                "/applications/6" => {
                    let mut a = answer(429, r#"{"message":"Too Many Attempts."}"#);
                    a.headers.push(("retry-after".into(), "1".into()));
                    a
                }
                _ => answer(500, ""),
            }
        }))
        .await;
        let c = client(&base);
        let e = c.verify().await.expect_err("401");
        assert_eq!(e.kind, ErrorKind::Unauthorized);
        assert!(e.message.contains("getUserMe"), "{}", e.message);
        assert!(!e.message.contains("s3cr3t"));
        assert!(!format!("{e:?}").contains("s3cr3t"));
        let e = c.get_project(1).await.expect_err("403");
        assert_eq!(e.kind, ErrorKind::Forbidden);
        let e = c.get_action(2).await.expect_err("402");
        assert_eq!(e.kind, ErrorKind::QuotaExceeded);
        assert!(e
            .message
            .contains("usage limit reached on the project's subscription: Usage limit exceeded"));
        let e = c
            .update_application(&update_body(3))
            .await
            .expect_err("409");
        assert_eq!(e.kind, ErrorKind::Conflict);
        assert!(e.is_transient());
        let e = c
            .create_application(
                4,
                &CreateApplication {
                    name: "dup".into(),
                    programming_language: "php".into(),
                    engine_version: "8.3".into(),
                    framework: "none".into(),
                    repository: "a/b".into(),
                    credential_id: 1,
                    default_branch: "main".into(),
                    root_directory: None,
                    build_command: None,
                    install_dependencies_command: None,
                    deployments_keep: None,
                    linked_resources: vec![],
                },
            )
            .await
            .expect_err("422");
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert_eq!(e.field.as_deref(), Some("name"));
        assert!(e.message.contains("`name`"), "{}", e.message);
        let e = c.get_application(6).await.expect_err("429");
        assert_eq!(e.kind, ErrorKind::RateLimited);
        assert_eq!(e.retry_after, Some(std::time::Duration::from_secs(1)));
        let e = c.get_application(8).await.expect_err("500");
        assert_eq!(e.kind, ErrorKind::Unavailable);
    }

    #[tokio::test]
    async fn verify_names_the_user_or_the_project() {
        let (base, _log) = serve(Arc::new(|seen: &Seen, _: &str| match seen.path.as_str() {
            "/users/me" => answer(
                200,
                r#"{"id":45,"name":"Some One","email":"a@b.c","url_slug":"someone"}"#,
            ),
            "/projects/9" => answer(200, r#"{"id":9,"name":"shop","user_id":45}"#),
            _ => answer(404, ""),
        }))
        .await;
        let who = client(&base).verify().await.expect("user");
        assert_eq!(who, "user 45 (someone)");
        assert!(!who.contains("a@b.c"));
        let c = Devopness::new(connection(&base, Some(9))).expect("client");
        assert_eq!(c.platform_type(), PlatformType::Devopness);
        assert_eq!(c.verify().await.expect("project"), "project 9 (shop)");
        let c = Devopness::new(connection(&base, Some(10))).expect("client");
        let e = c.verify().await.expect_err("missing project");
        assert_eq!(e.kind, ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn virtual_hosts_create_list_delete() {
        let (base, log) = serve(Arc::new(|seen: &Seen, _: &str| {
            match (seen.method.as_str(), seen.path.as_str()) {
                ("POST", "/environments/2/virtual-hosts") => answer(
                    201,
                    r#"{"id":6,"name":"shop.example.com","type":"name-based","application":{"id":30,"name":"web"},"last_action":null}"#,
                ),
                ("GET", "/environments/2/virtual-hosts") => answer(
                    200,
                    r#"[{"id":6,"name":"shop.example.com","type":"name-based","application":null}]"#,
                ),
                ("DELETE", "/virtual-hosts/6") => {
                    let mut a = answer(204, "");
                    a.headers.push(("X-Devopness-Action-Id".into(), "12".into()));
                    a
                }
                _ => answer(404, ""),
            }
        }))
        .await;
        let c = client(&base);
        let vh = c
            .create_virtual_host(
                2,
                &CreateVirtualHost {
                    virtual_host_type: "name-based".into(),
                    name: "shop.example.com".into(),
                    application_id: Some(30),
                    root_directory: None,
                    application_listen_address: Some("http://localhost:3000".into()),
                    linked_resources: vec![],
                },
            )
            .await
            .expect("create");
        assert_eq!(vh.application_id, Some(30));
        let sent: Value = serde_json::from_str(&log.lock().expect("log")[0].body).expect("json");
        assert_eq!(sent["type"], "name-based");
        assert_eq!(sent["application_id"], 30);
        let all = c.list_virtual_hosts(2).await.expect("list");
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].application_id, None);
        assert_eq!(
            c.delete_virtual_host(6).await.expect("delete"),
            Deleted::Done {
                action_id: Some(12)
            }
        );
        assert_eq!(
            c.delete_virtual_host(7).await.expect("gone"),
            Deleted::AlreadyGone
        );
    }
}
