//! In-memory simulator of the Devopness API (`bosun sim`, default `http://127.0.0.1:18082`).
//!
//! Follows `shared/specs/devopness-openapi.json` and the research notes
//! (`shared/research/devopness.md`): snake_case JSON, `200` for reads, `201` with the object for
//! creates, `204` with an empty body for `PUT`, `DELETE` and custom actions (the asynchronous ones
//! carry `X-Devopness-Action-Id`), lists as bare arrays paged by `page`/`per_page` (default 20,
//! at most 100) with an RFC 8288 `Link` header, and errors as `{message, errors?}` where
//! `errors` maps each field to a list of messages (422).
//!
//! Implemented: projects and environments (read), applications (list, create, get, update,
//! delete), deployments (`POST /applications/{id}/deployments`) and actions (`GET
//! /actions/{id}`), variables of applications (`/variables/application/{id}`,
//! `/variables/{id}`), virtual hosts (create, list, get, update, delete, `POST
//! /virtual-hosts/{id}/deploy`) and SSL certificates (`GET`/`POST
//! /environments/{id}/ssl-certificates`, `GET`/`DELETE /ssl-certificates/{id}`, `POST
//! /ssl-certificates/{id}/deploy`). The simulator starts with project 1 ("Acme"), its
//! environment 1 ("production"), server 1 in it and source-provider credential 1 (GitHub).
//!
//! Time is simulated lazily: an action is `pending` for one step time (default 300 ms), then
//! `in-progress` for another, then `completed` (or `failed`, see
//! [`DevopnessSim::fail_next_deploy`] and [`DevopnessSim::fail_next_certificate`]). Every
//! action has `type` `deploy` or `delete` and a resource (`application`, `virtual-host` or
//! `ssl-certificate`); a virtual host's and a certificate's `last_action` is the most recent
//! action on it (`ActionRelation` in the full object, `ActionRelationShallow` in relations).
//!
//! Where the spec is silent the simulator makes these choices:
//! - authentication is checked before the media types; then `Accept` must name
//!   `application/json` on every call and `Content-Type` must be `application/json` on `POST` and
//!   `PUT` (both `415` otherwise); a body that is not JSON is `400`;
//! - unknown ids (and ids that are not integers ≥ 1) are `404` with `{message}`, except `GET
//!   /actions/{id}`, `/virtual-hosts/{id}` (all methods), `POST /virtual-hosts/{id}/deploy`
//!   and `POST /ssl-certificates/{id}/deploy`, whose `404` the spec declares without a body, so
//!   it has none (`GET`/`DELETE /ssl-certificates/{id}` declare no `404`: `{message}`);
//! - `Link` URLs are absolute, built from the `Host` header, and keep `per_page` when the
//!   client gave it; a page beyond the last is an empty array; `prev`/`next` are left out on
//!   the first/last page;
//! - the usage-limit knob ([`DevopnessSim::set_usage_limit_reached`]) makes every create
//!   (applications, variables, virtual hosts, SSL certificates) answer `402`;
//! - an application's name is unique within its environment; `credential_id` must be 1 (the only
//!   credential); `linked_resources` may only name servers of the environment;
//! - a deployment targets `servers` if given, else the application's linked servers, else every
//!   server of the environment; `pipeline_id` defaults to the application's own deploy pipeline
//!   (`1000 + application id`) and any positive id is accepted; `source_type`/`source_ref`
//!   default to `branch`/the default branch; the targets become linked servers of the
//!   application (the research notes name `servers` on a deploy as one way to link them), so
//!   `GET /applications/{id}` lists them in `servers` afterwards;
//! - each deployment's `type` is recorded ([`DevopnessSim::deploy_types`]); a `rollback` needs a
//!   `source_ref` that an earlier deployment of the application completed with, else `422` on
//!   `source_ref` (inferred: the spec only names the type);
//! - deleting an application, a virtual host or a certificate removes it at once and dispatches
//!   a `delete` action (which completes like any other); variables of a deleted application go
//!   with it, and so does a deleted virtual host's certificate (without an action of its own);
//! - `PUT /virtual-hosts/{id}` validates like create (`name` per the existing `type`, unique in
//!   the environment) and needs `id` equal to the path's; an absent optional field keeps its
//!   value and `null` clears `application_listen_address`/`application_id`; no action (it
//!   reaches the servers on the next deploy). `POST /virtual-hosts/{id}/deploy` dispatches a
//!   `deploy` action on the virtual host, to `servers` if given, else the linked application's
//!   servers, else every server of the environment;
//! - SSL certificates: the spec links a certificate to its virtual host only through
//!   `virtual_host_id` on create, so the certificate takes the virtual host's name (find it by
//!   name, or through the virtual host's `ssl_certificate`). Create validates `virtual_host_id`
//!   (a virtual host of the environment without a certificate; Let's Encrypt needs a
//!   name-based one, inferred since it does not issue for IP addresses), `issuer`, `type`/`validation_level` (default `single-domain`/`DV`) and,
//!   for `custom`, `custom_private_key` and `custom_certificate` (100 to 4096 characters). A
//!   `lets-encrypt` create dispatches a `deploy` action on the certificate (the issue) and
//!   answers `201` with it as `last_action` (no action header: the spec declares none); the
//!   certificate is `active: false` until an action deploying it completes, then `active: true`
//!   with `expires_at` 90 days after that completion (`last_renewed_at` set from the second
//!   one on). A failed issue leaves it inactive; `POST /ssl-certificates/{id}/deploy` issues it
//!   again. [`DevopnessSim::fail_next_certificate`] fails the next issue (create or deploy). A
//!   `custom` certificate is active at once with `expires_at: null` (its PEM is not parsed);
//! - hidden variables are listed and read with `value: null`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use crate::sim::{bearer_token, with_sim, SimConfig, SimControl};

/// Where `bosun sim` serves the Devopness simulator unless told otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:18082";
/// How long each phase of an action (`pending`, `in-progress`) lasts unless changed.
pub const DEFAULT_STEP_TIME: Duration = Duration::from_millis(300);
/// The project every simulator starts with.
pub const DEFAULT_PROJECT_ID: u64 = 1;
/// The environment (of project 1) every simulator starts with.
pub const DEFAULT_ENVIRONMENT_ID: u64 = 1;
/// The server (in environment 1) every simulator starts with.
pub const DEFAULT_SERVER_ID: u64 = 1;
/// The only source-provider credential (GitHub).
pub const DEFAULT_CREDENTIAL_ID: u64 = 1;
/// The response header naming a dispatched action.
pub const ACTION_ID_HEADER: &str = "x-devopness-action-id";

const DEFAULT_PER_PAGE: u64 = 20;
const MAX_PER_PAGE: u64 = 100;
const USER_ID: u64 = 1;
const PIPELINE_BASE: u64 = 1000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// Errors

/// An error answer in the spec's `ApiError` shape.
#[derive(Debug)]
enum ApiError {
    Unauthenticated,
    MediaType,
    BadRequest(&'static str),
    NotFound(&'static str),
    /// A 404 the spec declares without a body.
    NotFoundEmpty,
    PaymentRequired,
    Invalid(BTreeMap<String, Vec<String>>),
}

type ApiResult<T> = Result<T, ApiError>;

fn error_body(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "message": message }))).into_response()
}

/// Error renderer for the shared middleware (outages, injected errors, 429).
pub fn render_error(status: StatusCode, message: &str) -> Response {
    error_body(status, message)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Unauthenticated => error_body(StatusCode::UNAUTHORIZED, "Unauthenticated."),
            Self::MediaType => error_body(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported Media Type: send and accept application/json.",
            ),
            Self::BadRequest(m) => error_body(StatusCode::BAD_REQUEST, m),
            Self::NotFound(m) => error_body(StatusCode::NOT_FOUND, m),
            Self::NotFoundEmpty => StatusCode::NOT_FOUND.into_response(),
            Self::PaymentRequired => error_body(
                StatusCode::PAYMENT_REQUIRED,
                "Usage limit reached on project's subscription.",
            ),
            Self::Invalid(errors) => {
                let mut all = errors.values().flatten();
                let first = all.next().cloned().unwrap_or_default();
                let more = all.count();
                let message = match more {
                    0 => first,
                    1 => format!("{first} (and 1 more error)"),
                    n => format!("{first} (and {n} more errors)"),
                };
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Json(json!({ "message": message, "errors": errors })),
                )
                    .into_response()
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// State

#[derive(Clone, Debug)]
struct App {
    id: u64,
    environment_id: u64,
    name: String,
    programming_language: String,
    engine_version: String,
    framework: String,
    repository: String,
    credential_id: u64,
    default_branch: String,
    root_directory: String,
    build_command: Option<String>,
    install_dependencies_command: Option<String>,
    deployments_keep: u64,
    servers: Vec<u64>,
    created_at: String,
    updated_at: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ActionKind {
    Deploy,
    Delete,
}

#[derive(Clone, Debug)]
struct ActionRecord {
    id: u64,
    kind: ActionKind,
    /// `application`, `virtual-host` or `ssl-certificate`.
    resource_type: &'static str,
    resource_id: u64,
    environment_id: u64,
    pipeline_id: Option<u64>,
    deployment_type: String,
    source_type: String,
    source_ref: String,
    repository: String,
    servers: Vec<u64>,
    fail_reason: Option<String>,
    started: Instant,
    created_at: jiff::Timestamp,
    step: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Pending,
    InProgress,
    Completed,
    Failed,
}

impl Phase {
    fn status(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::InProgress => "in-progress",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }
    fn reason_code(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::InProgress => "IN_PROGRESS",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
        }
    }
    fn human(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::InProgress => "In progress",
            Self::Completed => "Completed",
            Self::Failed => "Failed",
        }
    }
}

impl ActionRecord {
    fn phase(&self, now: Instant) -> Phase {
        let elapsed = now.saturating_duration_since(self.started);
        if elapsed < self.step {
            Phase::Pending
        } else if elapsed < self.step * 2 {
            Phase::InProgress
        } else if self.fail_reason.is_some() {
            Phase::Failed
        } else {
            Phase::Completed
        }
    }
    fn ts(&self, steps: u32) -> jiff::Timestamp {
        let offset = jiff::SignedDuration::try_from(self.step * steps).unwrap_or_default();
        self.created_at
            .checked_add(offset)
            .unwrap_or(self.created_at)
    }
    fn at(&self, steps: u32) -> String {
        fmt_ts(self.ts(steps))
    }
    /// A deployment of `application_id` (not of another resource).
    fn deploys_app(&self, application_id: u64) -> bool {
        self.kind == ActionKind::Deploy
            && self.resource_type == "application"
            && self.resource_id == application_id
    }
}

#[derive(Clone, Debug)]
struct Variable {
    id: u64,
    resource_id: u64,
    key: String,
    value: String,
    description: Option<String>,
    target: String,
    kind: String,
    hidden: bool,
    created_at: String,
    updated_at: String,
}

#[derive(Clone, Debug)]
struct VirtualHost {
    id: u64,
    environment_id: u64,
    kind: String,
    name: String,
    application_id: Option<u64>,
    root_directory: Option<String>,
    application_listen_address: Option<String>,
    created_at: String,
    updated_at: String,
}

#[derive(Clone, Debug)]
struct Certificate {
    id: u64,
    environment_id: u64,
    virtual_host_id: u64,
    /// The virtual host's name.
    name: String,
    /// `lets-encrypt` or `custom`.
    issuer: String,
    kind: String,
    validation_level: String,
    created_at: String,
}

/// How long a certificate issued by Let's Encrypt is valid.
const CERTIFICATE_LIFETIME: jiff::SignedDuration = jiff::SignedDuration::from_hours(90 * 24);

struct Data {
    apps: BTreeMap<u64, App>,
    actions: BTreeMap<u64, ActionRecord>,
    variables: BTreeMap<u64, Variable>,
    vhosts: BTreeMap<u64, VirtualHost>,
    certs: BTreeMap<u64, Certificate>,
    next_id: u64,
    step: Duration,
    fail_next: BTreeMap<u64, Vec<String>>,
    fail_next_cert: Vec<String>,
    deploys: BTreeMap<u64, u32>,
    usage_limit_reached: bool,
    created_at: String,
}

impl Data {
    fn next(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
    fn app(&self, id: u64) -> ApiResult<&App> {
        self.apps
            .get(&id)
            .ok_or(ApiError::NotFound("Application not found."))
    }
    /// The most recent action on a resource.
    fn last_action(&self, resource_type: &str, id: u64) -> Option<&ActionRecord> {
        self.actions
            .values()
            .rev()
            .find(|a| a.resource_type == resource_type && a.resource_id == id)
    }
    /// Where an action on a virtual host (or its certificate) runs: the linked application's
    /// servers, else every server of the environment.
    fn vhost_targets(&self, vhost_id: u64) -> Vec<u64> {
        self.vhosts
            .get(&vhost_id)
            .and_then(|v| v.application_id)
            .and_then(|a| self.apps.get(&a))
            .map(|a| a.servers.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| vec![DEFAULT_SERVER_ID])
    }
}

struct Inner {
    token: String,
    data: Mutex<Data>,
}

/// The Devopness simulator's state. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct DevopnessSim {
    inner: Arc<Inner>,
    control: SimControl,
}

impl DevopnessSim {
    /// A simulator with project 1, environment 1, server 1 and credential 1, and no
    /// applications.
    pub fn new(config: &SimConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                token: config.token.clone(),
                data: Mutex::new(Data {
                    apps: BTreeMap::new(),
                    actions: BTreeMap::new(),
                    variables: BTreeMap::new(),
                    vhosts: BTreeMap::new(),
                    certs: BTreeMap::new(),
                    // Ids are shared by all resources and start high, so an application id is
                    // never mistaken for the project, environment or server id 1.
                    next_id: 100,
                    step: DEFAULT_STEP_TIME,
                    fail_next: BTreeMap::new(),
                    fail_next_cert: Vec::new(),
                    deploys: BTreeMap::new(),
                    usage_limit_reached: false,
                    created_at: fmt_ts(jiff::Timestamp::now()),
                }),
            }),
            control: SimControl::new(config),
        }
    }

    /// Faults and counters of this simulator.
    pub fn control(&self) -> &SimControl {
        &self.control
    }

    fn data(&self) -> MutexGuard<'_, Data> {
        lock(&self.inner.data)
    }

    /// How long each phase of actions dispatched from now on lasts.
    pub fn set_step_time(&self, step: Duration) {
        self.data().step = step;
    }

    /// Makes the next deployment of `application_id` fail with `reason` (its
    /// `status_reason_human_readable`). Calls add up: two calls fail the next two deployments.
    pub fn fail_next_deploy(&self, application_id: u64, reason: &str) {
        self.data()
            .fail_next
            .entry(application_id)
            .or_default()
            .push(reason.to_owned());
    }

    /// The source ref of the application's most recent deployment that has completed.
    pub fn deployed_ref(&self, application_id: u64) -> Option<String> {
        let now = Instant::now();
        self.data()
            .actions
            .values()
            .rev()
            .find(|a| a.deploys_app(application_id) && a.phase(now) == Phase::Completed)
            .map(|a| a.source_ref.clone())
    }

    /// The `type` of every accepted deployment of the application (`deploy`, `redeploy`,
    /// `rollback`), oldest first.
    pub fn deploy_types(&self, application_id: u64) -> Vec<String> {
        self.data()
            .actions
            .values()
            .filter(|a| a.deploys_app(application_id))
            .map(|a| a.deployment_type.clone())
            .collect()
    }

    /// Makes the next certificate-issuing action (a `lets-encrypt` create or `POST
    /// /ssl-certificates/{id}/deploy`) fail with `reason`. Calls add up.
    pub fn fail_next_certificate(&self, reason: &str) {
        self.data().fail_next_cert.push(reason.to_owned());
    }

    /// Adds `n` applications named `{prefix}0` … `{prefix}{n-1}` to the environment directly
    /// (no validation, no usage limit); their ids, ascending. For tests that need many.
    pub fn create_applications(&self, environment_id: u64, n: usize, prefix: &str) -> Vec<u64> {
        let mut d = self.data();
        let now_s = fmt_ts(jiff::Timestamp::now());
        (0..n)
            .map(|i| {
                let app = App {
                    id: d.next(),
                    environment_id,
                    name: format!("{prefix}{i}"),
                    programming_language: "nodejs".to_owned(),
                    engine_version: "20".to_owned(),
                    framework: "none".to_owned(),
                    repository: "acme/web".to_owned(),
                    credential_id: DEFAULT_CREDENTIAL_ID,
                    default_branch: "main".to_owned(),
                    root_directory: "/".to_owned(),
                    build_command: None,
                    install_dependencies_command: None,
                    deployments_keep: 5,
                    servers: Vec::new(),
                    created_at: now_s.clone(),
                    updated_at: now_s.clone(),
                };
                let id = app.id;
                d.apps.insert(id, app);
                id
            })
            .collect()
    }

    /// How many deployments of the application were accepted.
    pub fn deploy_count(&self, application_id: u64) -> u32 {
        self.data()
            .deploys
            .get(&application_id)
            .copied()
            .unwrap_or(0)
    }

    /// When true, every create answers `402` (usage limit reached on the subscription).
    pub fn set_usage_limit_reached(&self, reached: bool) {
        self.data().usage_limit_reached = reached;
    }

    /// Ids of the applications that exist, ascending.
    pub fn application_ids(&self) -> Vec<u64> {
        self.data().apps.keys().copied().collect()
    }

    /// Every variable value stored, hidden ones included (the API never shows those).
    pub fn variable_values(&self) -> Vec<String> {
        self.data()
            .variables
            .values()
            .map(|v| v.value.clone())
            .collect()
    }

    /// The `status` an action has now (`pending`, `in-progress`, `completed`, `failed`).
    pub fn action_status(&self, action_id: u64) -> Option<&'static str> {
        let now = Instant::now();
        self.data()
            .actions
            .get(&action_id)
            .map(|a| a.phase(now).status())
    }

    /// Checks the credential and the media types; the lock on success.
    fn begin(&self, method: &Method, headers: &HeaderMap) -> ApiResult<MutexGuard<'_, Data>> {
        if bearer_token(headers) != Some(self.inner.token.as_str()) {
            return Err(ApiError::Unauthenticated);
        }
        let names_json = |name: header::HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.to_ascii_lowercase().contains("application/json"))
        };
        if !names_json(header::ACCEPT) {
            return Err(ApiError::MediaType);
        }
        if (method == Method::POST || method == Method::PUT) && !names_json(header::CONTENT_TYPE) {
            return Err(ApiError::MediaType);
        }
        Ok(self.data())
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering

fn fmt_ts(ts: jiff::Timestamp) -> String {
    let dt = ts.to_zoned(jiff::tz::TimeZone::UTC).datetime();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.subsec_nanosecond() / 1000
    )
}

fn user() -> Value {
    json!({ "id": USER_ID, "name": "Sim User", "email": "sim@example.com", "url_slug": "sim-user" })
}

fn organization(d: &Data) -> Value {
    json!({ "id": 1, "name": "Acme", "url_slug": "acme",
        "created_at": d.created_at, "updated_at": d.created_at })
}

fn project_relation(d: &Data) -> Value {
    json!({ "id": DEFAULT_PROJECT_ID, "user_id": USER_ID, "name": "Acme", "logo_url": null,
        "os_users": [{ "name": "devopness" }], "organization": organization(d),
        "created_by_user": user(), "created_at": d.created_at, "updated_at": d.created_at })
}

fn project(d: &Data) -> Value {
    let mut p = project_relation(d);
    p["current_user_permissions"] = json!({});
    p
}

fn environment_relation(d: &Data) -> Value {
    json!({ "id": DEFAULT_ENVIRONMENT_ID, "type": "production",
        "type_human_readable": "Production", "name": "production", "description": null,
        "created_at": d.created_at, "updated_at": d.created_at, "archived_at": null,
        "project": project_relation(d) })
}

fn environment(d: &Data) -> Value {
    json!({ "id": DEFAULT_ENVIRONMENT_ID, "type": "production",
        "type_human_readable": "Production", "name": "production", "description": null,
        "is_archived": false, "teams": [], "current_user_permissions": {},
        "created_by_user": user(), "created_at": d.created_at, "updated_at": d.created_at })
}

fn server_relation(d: &Data, id: u64) -> Value {
    json!({ "id": id, "created_by": USER_ID, "name": format!("server-{id}"),
        "hostname": format!("server-{id}"), "provider_name": "self-hosted",
        "provider_name_human_readable": "Self-hosted", "region": null,
        "region_human_readable": null, "ip_address": "10.0.0.1", "ssh_port": 22,
        "active": true, "status": "running", "created_at": d.created_at,
        "updated_at": d.created_at })
}

fn provider() -> Value {
    json!({ "active": true, "code": "github", "code_human_readable": "GitHub",
        "type": "source_provider" })
}

fn credential_relation(id: u64) -> Value {
    json!({ "id": id, "name": "github", "provider": provider(),
        "provider_type": "source_provider", "provider_type_human_readable": "Source provider",
        "provider_auth_type": "oauth", "provider_auth_type_human_readable": "OAuth",
        "active": true, "created_by_user": user() })
}

fn action_shallow(a: &ActionRecord, now: Instant) -> Value {
    let phase = a.phase(now);
    let (type_, type_h) = match a.kind {
        ActionKind::Deploy => ("deploy", "Deploy"),
        ActionKind::Delete => ("delete", "Delete"),
    };
    let started = (phase != Phase::Pending).then(|| a.at(1));
    let completed = matches!(phase, Phase::Completed | Phase::Failed).then(|| a.at(2));
    let updated = completed.clone().or(started.clone()).unwrap_or(a.at(0));
    let reason_h = match (&a.fail_reason, phase) {
        (Some(reason), Phase::Failed) => reason.clone(),
        _ => phase.human().to_owned(),
    };
    json!({ "id": a.id, "type": type_, "type_human_readable": type_h,
        "status": phase.status(), "status_human_readable": phase.human(),
        "status_reason_code": phase.reason_code(), "status_reason_human_readable": reason_h,
        "url_web_permalink": format!("https://app.devopness.com/actions/{}", a.id),
        "started_at": started, "completed_at": completed, "created_at": a.at(0),
        "updated_at": updated })
}

fn last_deployments(d: &Data, app_id: u64, now: Instant) -> Value {
    let deploys = || {
        d.actions
            .values()
            .rev()
            .filter(move |a| a.deploys_app(app_id))
    };
    let latest = deploys().next().map(|a| action_shallow(a, now));
    let live = deploys()
        .find(|a| a.phase(now) == Phase::Completed)
        .map(|a| action_shallow(a, now));
    json!({ "latest": latest, "live": live })
}

fn split_repository(repository: &str) -> (&str, &str) {
    repository.split_once('/').unwrap_or(("", repository))
}

fn app_relation(d: &Data, app: &App, now: Instant) -> Value {
    let (owner, name) = split_repository(&app.repository);
    json!({ "id": app.id, "project_id": DEFAULT_PROJECT_ID,
        "environment_id": app.environment_id, "created_by": USER_ID, "name": app.name,
        "repository": app.repository, "repository_name": name, "repository_owner": owner,
        "default_branch": app.default_branch, "programming_language": app.programming_language,
        "programming_language_human_readable": app.programming_language,
        "engine_version": app.engine_version, "framework": app.framework,
        "framework_human_readable": app.framework, "root_directory": app.root_directory,
        "deployments_keep": app.deployments_keep,
        "install_dependencies_command": app.install_dependencies_command,
        "build_command": app.build_command,
        "last_deployments": last_deployments(d, app.id, now),
        "created_at": app.created_at, "updated_at": app.updated_at })
}

fn vhost_relation(d: &Data, v: &VirtualHost, now: Instant) -> Value {
    let application = v
        .application_id
        .and_then(|id| d.apps.get(&id))
        .map(|a| app_relation(d, a, now));
    let certificate = d
        .certs
        .values()
        .find(|c| c.virtual_host_id == v.id)
        .map(|c| cert_relation(d, c, now));
    let last_action = d
        .last_action("virtual-host", v.id)
        .map(|a| action_shallow(a, now));
    json!({ "id": v.id, "type": v.kind, "type_human_readable": vhost_type_human(&v.kind),
        "name": v.name, "application": application, "root_directory": v.root_directory,
        "application_listen_address": v.application_listen_address,
        "ssl_certificate": certificate, "last_action": last_action,
        "created_at": v.created_at, "updated_at": v.updated_at })
}

fn vhost_full(d: &Data, v: &VirtualHost, now: Instant) -> Value {
    let mut value = vhost_relation(d, v, now);
    value["last_action"] = d
        .last_action("virtual-host", v.id)
        .map_or(Value::Null, |a| action_relation(d, a, now));
    value["created_by_user"] = user();
    value
}

/// Whether a certificate is in force, and since when: a custom certificate at once; one
/// issued by Let's Encrypt once an action deploying it has completed, valid for 90 days from
/// the most recent such completion (`last_renewed_at` when it is not the first).
fn cert_state(d: &Data, c: &Certificate, now: Instant) -> (bool, Value, Value) {
    if c.issuer == "custom" {
        return (true, Value::Null, Value::Null);
    }
    let issued: Vec<jiff::Timestamp> = d
        .actions
        .values()
        .filter(|a| {
            a.resource_type == "ssl-certificate"
                && a.resource_id == c.id
                && a.kind == ActionKind::Deploy
                && a.phase(now) == Phase::Completed
        })
        .map(|a| a.ts(2))
        .collect();
    match issued.last() {
        None => (false, Value::Null, Value::Null),
        Some(last) => {
            let expires = last.checked_add(CERTIFICATE_LIFETIME).unwrap_or(*last);
            let renewed = (issued.len() > 1).then(|| fmt_ts(*last));
            (true, json!(fmt_ts(expires)), json!(renewed))
        }
    }
}

fn cert_relation(d: &Data, c: &Certificate, now: Instant) -> Value {
    let (active, expires_at, last_renewed_at) = cert_state(d, c, now);
    let last_action = d
        .last_action("ssl-certificate", c.id)
        .map(|a| action_shallow(a, now));
    let updated_at = d
        .last_action("ssl-certificate", c.id)
        .map_or_else(|| c.created_at.clone(), |a| a.at(0));
    json!({ "id": c.id, "name": c.name, "type": c.kind, "issuer": c.issuer,
        "validation_level": c.validation_level, "active": active, "last_action": last_action,
        "expires_at": expires_at, "last_renewed_at": last_renewed_at,
        "created_at": c.created_at, "updated_at": updated_at })
}

fn cert_full(d: &Data, c: &Certificate, now: Instant) -> Value {
    let mut value = cert_relation(d, c, now);
    value["last_action"] = d
        .last_action("ssl-certificate", c.id)
        .map_or(Value::Null, |a| action_relation(d, a, now));
    value["created_by_user"] = user();
    value
}

fn vhost_type_human(kind: &str) -> &'static str {
    if kind == "ip-based" {
        "IP address (IP-based virtual host)"
    } else {
        "Domain name (name-based virtual host)"
    }
}

fn app_full(d: &Data, app: &App, now: Instant) -> Value {
    let mut value = app_relation(d, app, now);
    let servers: Vec<Value> = app.servers.iter().map(|s| server_relation(d, *s)).collect();
    let vhosts: Vec<Value> = d
        .vhosts
        .values()
        .filter(|v| v.application_id == Some(app.id))
        .map(|v| vhost_relation(d, v, now))
        .collect();
    let extra = json!({ "created_by_user": user(), "environment": environment_relation(d),
        "servers": servers, "credential": credential_relation(app.credential_id),
        "services": [], "cronjobs": [], "virtual_hosts": vhosts, "daemons": [] });
    if let (Some(o), Value::Object(extra)) = (value.as_object_mut(), extra) {
        o.extend(extra);
    }
    value
}

fn action_full(d: &Data, a: &ActionRecord, now: Instant) -> Value {
    let mut value = action_shallow(a, now);
    let phase = a.phase(now);
    let action_data =
        (a.kind == ActionKind::Deploy && a.resource_type == "application").then(|| {
            let hash = fake_commit(&a.repository, &a.source_ref);
            json!({ "release_name": format!("release-{}", a.id),
            "commit": { "repository": a.repository, "author_name": "Sim User",
                "author_email": "sim@example.com", "committed_at": a.at(0), "hash": hash,
                "message": format!("Commit {}", &hash[..7]),
                "url": format!("https://github.com/{}/commit/{hash}", a.repository),
                "clone_url": format!("https://github.com/{}.git", a.repository),
                "download_url": format!("https://github.com/{}/archive/{hash}.zip", a.repository) },
            "deployment": { "type": a.deployment_type, "source_type": a.source_type,
                "source_ref": a.source_ref, "repository": a.repository,
                "provider_name": "github", "pipeline_id": a.pipeline_id.unwrap_or_default() } })
        });
    let resource_data = match a.resource_type {
        "application" => d
            .apps
            .get(&a.resource_id)
            .map(|app| app_relation(d, app, now)),
        "virtual-host" => d
            .vhosts
            .get(&a.resource_id)
            .map(|v| vhost_relation(d, v, now)),
        _ => d
            .certs
            .get(&a.resource_id)
            .map(|c| cert_relation(d, c, now)),
    };
    let resource_human = match a.resource_type {
        "application" => "Application",
        "virtual-host" => "Virtual Host",
        _ => "SSL Certificate",
    };
    let count = |p: Phase| u64::from(phase == p) * a.servers.len() as u64;
    let targets: Vec<Value> = a
        .servers
        .iter()
        .enumerate()
        .map(|(i, server)| {
            let mut t = action_shallow(a, now);
            json!({ "id": a.id * 100 + i as u64, "resource_type": "server",
                "resource_id": server, "status": t["status"].take(),
                "status_reason_code": t["status_reason_code"].take(),
                "status_reason_human_readable": t["status_reason_human_readable"].take(),
                "total_steps": 2, "current_step": null, "resource_data": null,
                "started_at": t["started_at"].take(), "completed_at": t["completed_at"].take(),
                "created_at": t["created_at"].take(), "updated_at": t["updated_at"].take() })
        })
        .collect();
    let extra = json!({
        "pipeline_id": a.pipeline_id, "retry_of": null, "trigger_comment": null,
        "action_data": action_data,
        "triggered_from": { "origin": null, "trigger_type": "manual", "name": "Sim User",
            "email": "sim@example.com", "ip_address": "127.0.0.1", "user_id": USER_ID,
            "hook_id": null, "hook_request_id": null },
        "parent": null, "children": [],
        "resource": { "id": a.resource_id, "type": a.resource_type,
            "type_human_readable": resource_human, "data": resource_data },
        "summary": { "targets": { "count": a.servers.len(), "pending": count(Phase::Pending),
            "in_progress": count(Phase::InProgress), "completed": count(Phase::Completed),
            "failed": count(Phase::Failed) } },
        "environment": environment_relation(d), "project": project_relation(d),
        "organization": organization(d), "targets": targets,
    });
    debug_assert_eq!(a.environment_id, DEFAULT_ENVIRONMENT_ID);
    if let (Some(o), Value::Object(extra)) = (value.as_object_mut(), extra) {
        o.extend(extra);
    }
    value
}

/// `ActionRelation`: the action without its pipeline and family (`pipeline_id`, `retry_of`,
/// `parent`, `children`), as a resource's `last_action`.
fn action_relation(d: &Data, a: &ActionRecord, now: Instant) -> Value {
    let mut value = action_full(d, a, now);
    if let Some(o) = value.as_object_mut() {
        for key in ["pipeline_id", "retry_of", "parent", "children"] {
            o.remove(key);
        }
    }
    value
}

/// A stable 40-hex "commit" for a ref (a SHA given as ref stays itself).
fn fake_commit(repository: &str, source_ref: &str) -> String {
    if source_ref.len() == 40 && source_ref.chars().all(|c| c.is_ascii_hexdigit()) {
        return source_ref.to_ascii_lowercase();
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut out = String::new();
    for round in 0..3u8 {
        for b in repository
            .bytes()
            .chain([0, round])
            .chain(source_ref.bytes())
        {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        out.push_str(&format!("{h:016x}"));
    }
    out.truncate(40);
    out
}

fn variable_json(v: &Variable) -> Value {
    json!({ "id": v.id, "key": v.key, "type": v.kind, "description": v.description,
        "value": if v.hidden { None } else { Some(&v.value) }, "target": v.target,
        "target_human_readable": target_human(&v.target), "resource_id": v.resource_id,
        "resource_type": "application", "hidden": v.hidden, "created_by_user": user(),
        "created_at": v.created_at, "updated_at": v.updated_at })
}

fn target_human(target: &str) -> String {
    match target {
        "os-env-var" => "Operating System Environment Variable".to_owned(),
        "resource-config-file" => "Resource Configuration File".to_owned(),
        "resource-symlink" => "Resource Symbolic Link".to_owned(),
        other => other.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Requests: ids, paging, bodies

fn parse_id(raw: &str, what: &'static str) -> ApiResult<u64> {
    raw.parse::<u64>()
        .ok()
        .filter(|id| *id >= 1)
        .ok_or(ApiError::NotFound(what))
}

fn one_error(field: &str, message: String) -> ApiError {
    ApiError::Invalid(BTreeMap::from([(field.to_owned(), vec![message])]))
}

struct Paging {
    page: u64,
    per_page: u64,
    per_page_given: bool,
}

fn paging(query: Option<&str>) -> ApiResult<Paging> {
    let mut paging = Paging {
        page: 1,
        per_page: DEFAULT_PER_PAGE,
        per_page_given: false,
    };
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "page" => {
                paging.page = value.parse().ok().filter(|p| *p >= 1).ok_or_else(|| {
                    one_error("page", "The page field must be at least 1.".into())
                })?;
            }
            "per_page" => {
                paging.per_page = value
                    .parse()
                    .ok()
                    .filter(|p| (1..=MAX_PER_PAGE).contains(p))
                    .ok_or_else(|| {
                        one_error(
                            "per_page",
                            format!("The per page field must be between 1 and {MAX_PER_PAGE}."),
                        )
                    })?;
                paging.per_page_given = true;
            }
            _ => {}
        }
    }
    Ok(paging)
}

/// One page of `items` as a bare array with the `Link` header.
fn paged(headers: &HeaderMap, path: &str, p: &Paging, items: Vec<Value>) -> Response {
    let last = (items.len() as u64).div_ceil(p.per_page).max(1);
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let url = |page: u64| {
        if p.per_page_given {
            format!("http://{host}{path}?per_page={}&page={page}", p.per_page)
        } else {
            format!("http://{host}{path}?page={page}")
        }
    };
    let mut links = vec![
        format!("<{}>; rel=\"first\"", url(1)),
        format!("<{}>; rel=\"last\"", url(last)),
    ];
    if p.page > 1 {
        links.push(format!("<{}>; rel=\"prev\"", url((p.page - 1).min(last))));
    }
    if p.page < last {
        links.push(format!("<{}>; rel=\"next\"", url(p.page + 1)));
    }
    let skip = usize::try_from((p.page - 1).saturating_mul(p.per_page)).unwrap_or(usize::MAX);
    let take = usize::try_from(p.per_page).unwrap_or(usize::MAX);
    let page: Vec<Value> = items.into_iter().skip(skip).take(take).collect();
    let mut response = Json(Value::Array(page)).into_response();
    if let Ok(v) = HeaderValue::from_str(&links.join(", ")) {
        response.headers_mut().insert(header::LINK, v);
    }
    response
}

fn no_content_with_action(action_id: u64) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(ACTION_ID_HEADER, HeaderValue::from(action_id));
    response
}

/// Validates a JSON object body field by field, collecting Laravel-style messages.
struct Fields {
    body: Map<String, Value>,
    errors: BTreeMap<String, Vec<String>>,
}

fn human(field: &str) -> String {
    field.replace('_', " ")
}

impl Fields {
    fn parse(body: &[u8]) -> ApiResult<Self> {
        let value: Value = if body.is_empty() {
            Value::Object(Map::new())
        } else {
            serde_json::from_slice(body)
                .map_err(|_| ApiError::BadRequest("Malformed JSON body."))?
        };
        match value {
            Value::Object(body) => Ok(Self {
                body,
                errors: BTreeMap::new(),
            }),
            _ => Err(ApiError::BadRequest("The body must be a JSON object.")),
        }
    }

    fn fail(&mut self, field: &str, message: String) {
        self.errors
            .entry(field.to_owned())
            .or_default()
            .push(message);
    }

    fn present(&mut self, field: &str, required: bool) -> Option<Value> {
        match self.body.get(field) {
            None | Some(Value::Null) => {
                if required {
                    self.fail(field, format!("The {} field is required.", human(field)));
                }
                None
            }
            Some(v) => Some(v.clone()),
        }
    }

    fn string(&mut self, field: &str, required: bool, max: usize) -> Option<String> {
        let value = self.present(field, required)?;
        let Some(s) = value.as_str() else {
            self.fail(
                field,
                format!("The {} field must be a string.", human(field)),
            );
            return None;
        };
        if s.is_empty() && required {
            self.fail(field, format!("The {} field is required.", human(field)));
            return None;
        }
        if s.chars().count() > max {
            self.fail(
                field,
                format!(
                    "The {} field must not be greater than {max} characters.",
                    human(field)
                ),
            );
            return None;
        }
        Some(s.to_owned())
    }

    fn one_of(&mut self, field: &str, required: bool, allowed: &[&str]) -> Option<String> {
        let s = self.string(field, required, 255)?;
        if allowed.contains(&s.as_str()) {
            Some(s)
        } else {
            self.fail(field, format!("The selected {} is invalid.", human(field)));
            None
        }
    }

    fn int(&mut self, field: &str, required: bool, min: u64, max: u64) -> Option<u64> {
        let value = self.present(field, required)?;
        let Some(n) = value.as_u64() else {
            self.fail(
                field,
                format!("The {} field must be an integer.", human(field)),
            );
            return None;
        };
        if !(min..=max).contains(&n) {
            self.fail(
                field,
                format!(
                    "The {} field must be between {min} and {max}.",
                    human(field)
                ),
            );
            return None;
        }
        Some(n)
    }

    fn boolean(&mut self, field: &str, required: bool) -> Option<bool> {
        let value = self.present(field, required)?;
        let b = value.as_bool();
        if b.is_none() {
            self.fail(
                field,
                format!("The {} field must be true or false.", human(field)),
            );
        }
        b
    }

    fn ids(&mut self, field: &str) -> Option<Vec<u64>> {
        let value = self.present(field, false)?;
        let ids: Option<Vec<u64>> = value
            .as_array()
            .map(|a| a.iter().map(Value::as_u64).collect::<Option<Vec<u64>>>())
            .unwrap_or(None);
        if ids.is_none() {
            self.fail(
                field,
                format!("The {} field must be a list of ids.", human(field)),
            );
        }
        ids
    }

    fn finish(self) -> ApiResult<()> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Invalid(self.errors))
        }
    }
}

fn valid_repository(s: &str) -> bool {
    let ok = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    s.split_once('/').is_some_and(|(o, n)| ok(o) && ok(n))
}

/// Fields shared by `ApplicationEnvironmentCreate` and `ApplicationUpdate`.
struct AppFields {
    name: Option<String>,
    programming_language: Option<String>,
    engine_version: Option<String>,
    framework: Option<String>,
    repository: Option<String>,
    credential_id: Option<u64>,
    default_branch: Option<String>,
    root_directory: Option<String>,
    build_command: Option<String>,
    install_dependencies_command: Option<String>,
    deployments_keep: Option<u64>,
}

fn app_fields(f: &mut Fields, creating: bool) -> AppFields {
    let name = f.string("name", true, 60);
    let programming_language = f.string("programming_language", true, 30);
    let engine_version = f.string("engine_version", true, 10);
    let framework = f.string("framework", true, 30);
    let repository = f.string("repository", creating, 100);
    if repository.as_deref().is_some_and(|r| !valid_repository(r)) {
        f.fail(
            "repository",
            "The repository field must be in the format owner/name.".into(),
        );
    }
    let credential_id = f.int(
        "credential_id",
        creating || repository.is_some(),
        1,
        u64::MAX,
    );
    if credential_id.is_some_and(|c| c != DEFAULT_CREDENTIAL_ID) {
        f.fail(
            "credential_id",
            "The selected credential id is invalid.".into(),
        );
    }
    let default_branch = f.string("default_branch", true, 200);
    let root_directory = f.string("root_directory", false, 255);
    if root_directory
        .as_deref()
        .is_some_and(|r| !r.starts_with('/'))
    {
        f.fail(
            "root_directory",
            "The root directory field must start with one of the following: /.".into(),
        );
    }
    AppFields {
        name,
        programming_language,
        engine_version,
        framework,
        repository,
        credential_id,
        default_branch,
        root_directory,
        build_command: f.string("build_command", false, 255),
        install_dependencies_command: f.string("install_dependencies_command", false, 255),
        deployments_keep: f.int("deployments_keep", false, 1, 10),
    }
}

fn name_taken(d: &Data, environment_id: u64, name: &str, except: u64) -> bool {
    d.apps
        .values()
        .any(|a| a.environment_id == environment_id && a.name == name && a.id != except)
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// The simulator's HTTP API with the shared middleware and `/_sim/` endpoints.
pub fn router(sim: DevopnessSim) -> Router {
    let control = sim.control.clone();
    let api = Router::new()
        .route("/projects/{project_id}", get(get_project))
        .route(
            "/projects/{project_id}/environments",
            get(list_environments),
        )
        .route("/environments/{environment_id}", get(get_environment))
        .route(
            "/environments/{environment_id}/applications",
            get(list_applications).post(create_application),
        )
        .route(
            "/applications/{application_id}",
            get(get_application)
                .put(update_application)
                .delete(delete_application),
        )
        .route(
            "/applications/{application_id}/deployments",
            axum::routing::post(deploy_application),
        )
        .route("/actions/{action_id}", get(get_action))
        .route(
            "/variables/{resource_type}/{resource_id}",
            get(list_variables).post(create_variable),
        )
        .route(
            "/variables/{variable_id}",
            get(get_variable)
                .put(update_variable)
                .delete(delete_variable),
        )
        .route(
            "/environments/{environment_id}/virtual-hosts",
            get(list_vhosts).post(create_vhost),
        )
        .route(
            "/virtual-hosts/{virtual_host_id}",
            get(get_vhost).put(update_vhost).delete(delete_vhost),
        )
        .route(
            "/virtual-hosts/{virtual_host_id}/deploy",
            axum::routing::post(deploy_vhost),
        )
        .route(
            "/environments/{environment_id}/ssl-certificates",
            get(list_certs).post(create_cert),
        )
        .route(
            "/ssl-certificates/{ssl_certificate_id}",
            get(get_cert).delete(delete_cert),
        )
        .route(
            "/ssl-certificates/{ssl_certificate_id}/deploy",
            axum::routing::post(deploy_cert),
        )
        .with_state(sim);
    with_sim(api, control, render_error)
}

fn check_project(raw: &str) -> ApiResult<()> {
    (parse_id(raw, "Project not found.")? == DEFAULT_PROJECT_ID)
        .then_some(())
        .ok_or(ApiError::NotFound("Project not found."))
}

fn check_environment(raw: &str) -> ApiResult<u64> {
    let id = parse_id(raw, "Environment not found.")?;
    (id == DEFAULT_ENVIRONMENT_ID)
        .then_some(id)
        .ok_or(ApiError::NotFound("Environment not found."))
}

async fn get_project(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let d = sim.begin(&Method::GET, &headers)?;
    check_project(&id)?;
    Ok(Json(project(&d)).into_response())
}

async fn list_environments(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let d = sim.begin(&Method::GET, &headers)?;
    check_project(&id)?;
    let p = paging(query.as_deref())?;
    let path = format!("/projects/{id}/environments");
    Ok(paged(&headers, &path, &p, vec![environment_relation(&d)]))
}

async fn get_environment(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let d = sim.begin(&Method::GET, &headers)?;
    check_environment(&id)?;
    Ok(Json(environment(&d)).into_response())
}

async fn list_applications(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let d = sim.begin(&Method::GET, &headers)?;
    let env = check_environment(&id)?;
    let p = paging(query.as_deref())?;
    let now = Instant::now();
    let items = d
        .apps
        .values()
        .filter(|a| a.environment_id == env)
        .map(|a| app_relation(&d, a, now))
        .collect();
    Ok(paged(
        &headers,
        &format!("/environments/{env}/applications"),
        &p,
        items,
    ))
}

async fn create_application(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let mut d = sim.begin(&Method::POST, &headers)?;
    let env = check_environment(&id)?;
    if d.usage_limit_reached {
        return Err(ApiError::PaymentRequired);
    }
    let mut f = Fields::parse(&body)?;
    let a = app_fields(&mut f, true);
    let mut servers = Vec::new();
    if let Some(links) = f.present("linked_resources", false) {
        let parsed: Option<Vec<(String, u64)>> = links.as_array().and_then(|items| {
            items
                .iter()
                .map(|l| {
                    Some((
                        l.get("resource_type")?.as_str()?.to_owned(),
                        l.get("resource_id")?.as_u64()?,
                    ))
                })
                .collect()
        });
        match parsed {
            Some(links)
                if links
                    .iter()
                    .all(|(t, i)| t == "server" && *i == DEFAULT_SERVER_ID) =>
            {
                servers = links.into_iter().map(|(_, i)| i).collect();
                servers.dedup();
            }
            _ => f.fail(
                "linked_resources",
                "The selected linked resources are invalid.".into(),
            ),
        }
    }
    if a.name.as_deref().is_some_and(|n| name_taken(&d, env, n, 0)) {
        f.fail("name", "The name has already been taken.".into());
    }
    f.finish()?;
    let now_s = fmt_ts(jiff::Timestamp::now());
    let app = App {
        id: d.next(),
        environment_id: env,
        name: a.name.unwrap_or_default(),
        programming_language: a.programming_language.unwrap_or_default(),
        engine_version: a.engine_version.unwrap_or_default(),
        framework: a.framework.unwrap_or_default(),
        repository: a.repository.unwrap_or_default(),
        credential_id: a.credential_id.unwrap_or(DEFAULT_CREDENTIAL_ID),
        default_branch: a.default_branch.unwrap_or_default(),
        root_directory: a.root_directory.unwrap_or_else(|| "/".to_owned()),
        build_command: a.build_command,
        install_dependencies_command: a.install_dependencies_command,
        deployments_keep: a.deployments_keep.unwrap_or(5),
        servers,
        created_at: now_s.clone(),
        updated_at: now_s,
    };
    let body = app_full(&d, &app, Instant::now());
    d.apps.insert(app.id, app);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn get_application(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let d = sim.begin(&Method::GET, &headers)?;
    let app = d.app(parse_id(&id, "Application not found.")?)?;
    Ok(Json(app_full(&d, app, Instant::now())).into_response())
}

async fn update_application(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let mut d = sim.begin(&Method::PUT, &headers)?;
    let id = parse_id(&id, "Application not found.")?;
    let env = d.app(id)?.environment_id;
    let mut f = Fields::parse(&body)?;
    if let Some(given) = f.int("id", true, 1, u64::MAX) {
        if given != id {
            f.fail(
                "id",
                "The id must match the application in the path.".into(),
            );
        }
    }
    let a = app_fields(&mut f, false);
    if a.name
        .as_deref()
        .is_some_and(|n| name_taken(&d, env, n, id))
    {
        f.fail("name", "The name has already been taken.".into());
    }
    f.finish()?;
    let now_s = fmt_ts(jiff::Timestamp::now());
    if let Some(app) = d.apps.get_mut(&id) {
        // A full replace of the fields the update schema has; optional ones keep their value
        // when absent (Laravel's `sometimes`).
        app.name = a.name.unwrap_or_default();
        app.programming_language = a.programming_language.unwrap_or_default();
        app.engine_version = a.engine_version.unwrap_or_default();
        app.framework = a.framework.unwrap_or_default();
        app.default_branch = a.default_branch.unwrap_or_default();
        if let Some(r) = a.repository {
            app.repository = r;
        }
        if let Some(c) = a.credential_id {
            app.credential_id = c;
        }
        if let Some(r) = a.root_directory {
            app.root_directory = r;
        }
        if let Some(b) = a.build_command {
            app.build_command = Some(b);
        }
        if let Some(i) = a.install_dependencies_command {
            app.install_dependencies_command = Some(i);
        }
        if let Some(k) = a.deployments_keep {
            app.deployments_keep = k;
        }
        app.updated_at = now_s;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[allow(clippy::too_many_arguments)]
fn dispatch(
    d: &mut Data,
    kind: ActionKind,
    resource_type: &'static str,
    resource_id: u64,
    servers: Vec<u64>,
    deployment: Option<(String, String, String, u64, String)>,
    fail_reason: Option<String>,
) -> u64 {
    let id = d.next();
    let (deployment_type, source_type, source_ref, pipeline_id, repository) = deployment.map_or(
        (
            String::new(),
            String::new(),
            String::new(),
            None,
            String::new(),
        ),
        |(t, st, sr, p, r)| (t, st, sr, Some(p), r),
    );
    let record = ActionRecord {
        id,
        kind,
        resource_type,
        resource_id,
        environment_id: DEFAULT_ENVIRONMENT_ID,
        pipeline_id,
        deployment_type,
        source_type,
        source_ref,
        repository,
        servers,
        fail_reason,
        started: Instant::now(),
        created_at: jiff::Timestamp::now(),
        step: d.step,
    };
    d.actions.insert(id, record);
    id
}

async fn delete_application(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let mut d = sim.begin(&Method::DELETE, &headers)?;
    let id = parse_id(&id, "Application not found.")?;
    let app = d.app(id)?.clone();
    d.apps.remove(&id);
    d.variables.retain(|_, v| v.resource_id != id);
    for v in d.vhosts.values_mut() {
        if v.application_id == Some(id) {
            v.application_id = None;
        }
    }
    let action = dispatch(
        &mut d,
        ActionKind::Delete,
        "application",
        id,
        app.servers,
        None,
        None,
    );
    Ok(no_content_with_action(action))
}

async fn deploy_application(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let mut d = sim.begin(&Method::POST, &headers)?;
    let id = parse_id(&id, "Application not found.")?;
    let app = d.app(id)?.clone();
    let mut f = Fields::parse(&body)?;
    let kind = f.one_of("type", true, &["deploy", "redeploy", "rollback"]);
    let has_ref = f.body.get("source_ref").is_some_and(|v| !v.is_null());
    let has_type = f.body.get("source_type").is_some_and(|v| !v.is_null());
    let rollback = kind.as_deref() == Some("rollback");
    let source_type = f.one_of("source_type", has_ref, &["branch", "commit", "tag"]);
    let source_ref = f.string("source_ref", has_type && !rollback, 200);
    if rollback {
        let now = Instant::now();
        match &source_ref {
            None if !f.errors.contains_key("source_ref") => f.fail(
                "source_ref",
                "The source ref field is required when type is rollback.".into(),
            ),
            Some(r)
                if !d.actions.values().any(|a| {
                    a.deploys_app(id) && a.source_ref == *r && a.phase(now) == Phase::Completed
                }) =>
            {
                f.fail(
                    "source_ref",
                    format!(
                        "The source ref {r} was never deployed successfully to this application, so it cannot be rolled back to."
                    ),
                );
            }
            _ => {}
        }
    }
    let pipeline_id = f.int("pipeline_id", false, 1, u64::MAX);
    f.string("environment", false, 255);
    let servers = target_servers(&mut f, app.servers.clone());
    f.finish()?;
    let fail_reason = d
        .fail_next
        .get_mut(&id)
        .and_then(|reasons| (!reasons.is_empty()).then(|| reasons.remove(0)));
    *d.deploys.entry(id).or_insert(0) += 1;
    // A deployment links the servers it targets to the application.
    if let Some(app) = d.apps.get_mut(&id) {
        for s in &servers {
            if !app.servers.contains(s) {
                app.servers.push(*s);
            }
        }
    }
    let deployment = (
        kind.unwrap_or_else(|| "deploy".to_owned()),
        source_type.unwrap_or_else(|| "branch".to_owned()),
        source_ref.unwrap_or_else(|| app.default_branch.clone()),
        pipeline_id.unwrap_or(PIPELINE_BASE + id),
        app.repository.clone(),
    );
    let action = dispatch(
        &mut d,
        ActionKind::Deploy,
        "application",
        id,
        servers,
        Some(deployment),
        fail_reason,
    );
    Ok(no_content_with_action(action))
}

/// The `servers` of a deployment-like body (`ResourceIdList`): servers of the environment, or
/// `default` (every server of the environment when that is empty) when absent.
fn target_servers(f: &mut Fields, default: Vec<u64>) -> Vec<u64> {
    match f.ids("servers") {
        Some(ids) => {
            if ids.iter().any(|s| *s != DEFAULT_SERVER_ID) {
                f.fail("servers", "The selected servers are invalid.".into());
            }
            ids
        }
        None if !default.is_empty() => default,
        None => vec![DEFAULT_SERVER_ID],
    }
}

async fn get_action(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let d = sim.begin(&Method::GET, &headers)?;
    let id = id.parse::<u64>().map_err(|_| ApiError::NotFoundEmpty)?;
    let action = d.actions.get(&id).ok_or(ApiError::NotFoundEmpty)?;
    Ok(Json(action_full(&d, action, Instant::now())).into_response())
}

fn variable_owner(d: &Data, resource_type: &str, resource_id: &str) -> ApiResult<u64> {
    if resource_type != "application" {
        return Err(ApiError::NotFound("Resource not found."));
    }
    let id = parse_id(resource_id, "Application not found.")?;
    d.app(id).map(|a| a.id)
}

const VARIABLE_TARGETS: &[&str] = &[
    "my-cnf",
    "newrelic-infra-yml",
    "nginx-http-server",
    "nginx-http",
    "nginx-main",
    "os-env-var",
    "php-cli_php-ini",
    "php-fpm_php-fpm-conf",
    "php-fpm_php-ini",
    "php-fpm_pool-d-www-conf",
    "redis-conf",
    "resource-config-file",
    "resource-symlink",
    "supervisord-conf",
    "sysctl-conf",
];

struct VariableFields {
    key: Option<String>,
    value: Option<String>,
    description: Option<String>,
    target: Option<String>,
    kind: Option<String>,
    hidden: Option<bool>,
}

fn variable_fields(f: &mut Fields) -> VariableFields {
    VariableFields {
        key: f.string("key", true, 100),
        value: match f.body.get("value") {
            // An empty value is a value.
            Some(Value::String(s)) if s.is_empty() => Some(String::new()),
            _ => f.string("value", true, 21504),
        },
        description: f.string("description", false, 255),
        target: f.one_of("target", true, VARIABLE_TARGETS),
        kind: f.one_of("type", true, &["file", "symlink", "variable"]),
        hidden: f.boolean("hidden", true),
    }
}

fn key_taken(d: &Data, owner: u64, key: &str, target: &str, except: u64) -> bool {
    d.variables
        .values()
        .any(|v| v.resource_id == owner && v.key == key && v.target == target && v.id != except)
}

async fn list_variables(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path((resource_type, resource_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let d = sim.begin(&Method::GET, &headers)?;
    let owner = variable_owner(&d, &resource_type, &resource_id)?;
    let p = paging(query.as_deref())?;
    let items = d
        .variables
        .values()
        .filter(|v| v.resource_id == owner)
        .map(variable_json)
        .collect();
    let path = format!("/variables/{resource_type}/{owner}");
    Ok(paged(&headers, &path, &p, items))
}

async fn create_variable(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path((resource_type, resource_id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let mut d = sim.begin(&Method::POST, &headers)?;
    let owner = variable_owner(&d, &resource_type, &resource_id)?;
    if d.usage_limit_reached {
        return Err(ApiError::PaymentRequired);
    }
    let mut f = Fields::parse(&body)?;
    let v = variable_fields(&mut f);
    if let (Some(key), Some(target)) = (&v.key, &v.target) {
        if key_taken(&d, owner, key, target, 0) {
            f.fail("key", "The key has already been taken.".into());
        }
    }
    f.finish()?;
    let now_s = fmt_ts(jiff::Timestamp::now());
    let variable = Variable {
        id: d.next(),
        resource_id: owner,
        key: v.key.unwrap_or_default(),
        value: v.value.unwrap_or_default(),
        description: v.description,
        target: v.target.unwrap_or_default(),
        kind: v.kind.unwrap_or_default(),
        hidden: v.hidden.unwrap_or_default(),
        created_at: now_s.clone(),
        updated_at: now_s,
    };
    let body = variable_json(&variable);
    d.variables.insert(variable.id, variable);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

fn find_variable(d: &Data, raw: &str) -> ApiResult<u64> {
    let id = parse_id(raw, "Variable not found.")?;
    d.variables
        .contains_key(&id)
        .then_some(id)
        .ok_or(ApiError::NotFound("Variable not found."))
}

async fn get_variable(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let d = sim.begin(&Method::GET, &headers)?;
    let id = find_variable(&d, &id)?;
    let body = d.variables.get(&id).map(variable_json).unwrap_or_default();
    Ok(Json(body).into_response())
}

async fn update_variable(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let mut d = sim.begin(&Method::PUT, &headers)?;
    let id = find_variable(&d, &id)?;
    let owner = d
        .variables
        .get(&id)
        .map(|v| v.resource_id)
        .unwrap_or_default();
    let mut f = Fields::parse(&body)?;
    if let Some(given) = f.int("id", true, 1, u64::MAX) {
        if given != id {
            f.fail("id", "The id must match the variable in the path.".into());
        }
    }
    let v = variable_fields(&mut f);
    if let (Some(key), Some(target)) = (&v.key, &v.target) {
        if key_taken(&d, owner, key, target, id) {
            f.fail("key", "The key has already been taken.".into());
        }
    }
    f.finish()?;
    let now_s = fmt_ts(jiff::Timestamp::now());
    if let Some(var) = d.variables.get_mut(&id) {
        var.key = v.key.unwrap_or_default();
        var.value = v.value.unwrap_or_default();
        var.target = v.target.unwrap_or_default();
        var.kind = v.kind.unwrap_or_default();
        var.hidden = v.hidden.unwrap_or_default();
        if v.description.is_some() {
            var.description = v.description;
        }
        var.updated_at = now_s;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_variable(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let mut d = sim.begin(&Method::DELETE, &headers)?;
    let id = find_variable(&d, &id)?;
    d.variables.remove(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn valid_domain(s: &str) -> bool {
    let labels: Vec<&str> = s.split('.').collect();
    s.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn valid_ip_port(s: &str) -> bool {
    let (ip, port) = match s.split_once(':') {
        Some((ip, port)) => (ip, Some(port)),
        None => (s, None),
    };
    ip.parse::<std::net::Ipv4Addr>().is_ok()
        && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
}

/// Fields shared by `VirtualHostEnvironmentCreate` and `VirtualHostUpdate`.
struct VhostFields {
    name: Option<String>,
    root_directory: Option<String>,
    listen: Option<String>,
    application_id: Option<u64>,
}

/// Validates a virtual host's fields; `kind` is the (given or existing) type the name must
/// fit, `except` the virtual host being updated (0 on create).
fn vhost_fields(
    f: &mut Fields,
    d: &Data,
    env: u64,
    kind: Option<&str>,
    except: u64,
) -> VhostFields {
    let name = f.string("name", true, 255);
    match (kind, name.as_deref()) {
        (Some("name-based"), Some(n)) if !valid_domain(n) => {
            f.fail("name", "The name must be a valid domain name.".into());
        }
        (Some("ip-based"), Some(n)) if !valid_ip_port(n) => f.fail(
            "name",
            "The name must be a valid IPv4 address, optionally with a port.".into(),
        ),
        _ => {}
    }
    let name = name.map(|n| n.to_ascii_lowercase());
    if let Some(n) = &name {
        if d.vhosts
            .values()
            .any(|v| v.environment_id == env && &v.name == n && v.id != except)
        {
            f.fail("name", "The name has already been taken.".into());
        }
    }
    let root_directory = f.string("root_directory", false, 255);
    if root_directory
        .as_deref()
        .is_some_and(|r| !r.starts_with('/'))
    {
        f.fail(
            "root_directory",
            "The root directory field must start with one of the following: /.".into(),
        );
    }
    let listen = f.string("application_listen_address", false, 255);
    if listen.as_deref().is_some_and(|l| {
        !(l.starts_with("http://") || l.starts_with("https://") || l.starts_with("unix:"))
    }) {
        f.fail(
            "application_listen_address",
            "The application listen address field format is invalid.".into(),
        );
    }
    let application_id = f.int("application_id", false, 1, u64::MAX);
    if application_id.is_some_and(|a| d.apps.get(&a).is_none_or(|a| a.environment_id != env)) {
        f.fail(
            "application_id",
            "The selected application id is invalid.".into(),
        );
    }
    VhostFields {
        name,
        root_directory,
        listen,
        application_id,
    }
}

async fn list_vhosts(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let d = sim.begin(&Method::GET, &headers)?;
    let env = check_environment(&id)?;
    let p = paging(query.as_deref())?;
    let now = Instant::now();
    let items = d
        .vhosts
        .values()
        .filter(|v| v.environment_id == env)
        .map(|v| vhost_relation(&d, v, now))
        .collect();
    let path = format!("/environments/{env}/virtual-hosts");
    Ok(paged(&headers, &path, &p, items))
}

async fn create_vhost(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let mut d = sim.begin(&Method::POST, &headers)?;
    let env = check_environment(&id)?;
    if d.usage_limit_reached {
        return Err(ApiError::PaymentRequired);
    }
    let mut f = Fields::parse(&body)?;
    let kind = f.one_of("type", true, &["name-based", "ip-based"]);
    let v = vhost_fields(&mut f, &d, env, kind.as_deref(), 0);
    f.finish()?;
    let now_s = fmt_ts(jiff::Timestamp::now());
    let vhost = VirtualHost {
        id: d.next(),
        environment_id: env,
        kind: kind.unwrap_or_default(),
        name: v.name.unwrap_or_default(),
        application_id: v.application_id,
        root_directory: v.root_directory,
        application_listen_address: v.listen,
        created_at: now_s.clone(),
        updated_at: now_s,
    };
    let body = vhost_full(&d, &vhost, Instant::now());
    d.vhosts.insert(vhost.id, vhost);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

fn find_vhost(d: &Data, raw: &str) -> ApiResult<u64> {
    let id = raw.parse::<u64>().map_err(|_| ApiError::NotFoundEmpty)?;
    d.vhosts
        .contains_key(&id)
        .then_some(id)
        .ok_or(ApiError::NotFoundEmpty)
}

async fn get_vhost(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let d = sim.begin(&Method::GET, &headers)?;
    let id = find_vhost(&d, &id)?;
    let now = Instant::now();
    let body = d
        .vhosts
        .get(&id)
        .map(|v| vhost_full(&d, v, now))
        .unwrap_or_default();
    Ok(Json(body).into_response())
}

async fn update_vhost(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let mut d = sim.begin(&Method::PUT, &headers)?;
    let id = find_vhost(&d, &id)?;
    let (env, kind) = d
        .vhosts
        .get(&id)
        .map(|v| (v.environment_id, v.kind.clone()))
        .unwrap_or_default();
    let mut f = Fields::parse(&body)?;
    if let Some(given) = f.int("id", true, 1, u64::MAX) {
        if given != id {
            f.fail(
                "id",
                "The id must match the virtual host in the path.".into(),
            );
        }
    }
    let clear_listen = f.body.get("application_listen_address") == Some(&Value::Null);
    let clear_application = f.body.get("application_id") == Some(&Value::Null);
    let v = vhost_fields(&mut f, &d, env, Some(&kind), id);
    f.finish()?;
    let now_s = fmt_ts(jiff::Timestamp::now());
    if let Some(vhost) = d.vhosts.get_mut(&id) {
        // Absent optional fields keep their value (Laravel's `sometimes`); `null` clears the
        // nullable ones.
        vhost.name = v.name.unwrap_or_default();
        if v.root_directory.is_some() {
            vhost.root_directory = v.root_directory;
        }
        if v.listen.is_some() || clear_listen {
            vhost.application_listen_address = v.listen;
        }
        if v.application_id.is_some() || clear_application {
            vhost.application_id = v.application_id;
        }
        vhost.updated_at = now_s;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn deploy_vhost(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let mut d = sim.begin(&Method::POST, &headers)?;
    let id = find_vhost(&d, &id)?;
    let mut f = Fields::parse(&body)?;
    let servers = target_servers(&mut f, d.vhost_targets(id));
    f.finish()?;
    let action = dispatch(
        &mut d,
        ActionKind::Deploy,
        "virtual-host",
        id,
        servers,
        None,
        None,
    );
    Ok(no_content_with_action(action))
}

async fn delete_vhost(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let mut d = sim.begin(&Method::DELETE, &headers)?;
    let id = find_vhost(&d, &id)?;
    d.vhosts.remove(&id);
    d.certs.retain(|_, c| c.virtual_host_id != id);
    let action = dispatch(
        &mut d,
        ActionKind::Delete,
        "virtual-host",
        id,
        vec![DEFAULT_SERVER_ID],
        None,
        None,
    );
    Ok(no_content_with_action(action))
}

const CERT_NOT_FOUND: &str = "SSL certificate not found.";

/// A certificate's id; `404 {message}` when unknown, or an empty `404` where the spec
/// declares it without a body (`POST /ssl-certificates/{id}/deploy`).
fn find_cert(d: &Data, raw: &str, empty_404: bool) -> ApiResult<u64> {
    let missing = || {
        if empty_404 {
            ApiError::NotFoundEmpty
        } else {
            ApiError::NotFound(CERT_NOT_FOUND)
        }
    };
    let id = parse_id(raw, CERT_NOT_FOUND).map_err(|_| missing())?;
    d.certs.contains_key(&id).then_some(id).ok_or_else(missing)
}

async fn list_certs(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let d = sim.begin(&Method::GET, &headers)?;
    let env = check_environment(&id)?;
    let p = paging(query.as_deref())?;
    let now = Instant::now();
    let items = d
        .certs
        .values()
        .filter(|c| c.environment_id == env)
        .map(|c| cert_relation(&d, c, now))
        .collect();
    let path = format!("/environments/{env}/ssl-certificates");
    Ok(paged(&headers, &path, &p, items))
}

/// Takes the next reason an issuing action should fail with, if one was set.
fn next_cert_failure(d: &mut Data) -> Option<String> {
    (!d.fail_next_cert.is_empty()).then(|| d.fail_next_cert.remove(0))
}

async fn create_cert(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let mut d = sim.begin(&Method::POST, &headers)?;
    let env = check_environment(&id)?;
    if d.usage_limit_reached {
        return Err(ApiError::PaymentRequired);
    }
    let mut f = Fields::parse(&body)?;
    let vhost_id = f.int("virtual_host_id", true, 1, u64::MAX);
    let issuer = f.one_of("issuer", true, &["custom", "lets-encrypt"]);
    let kind = f.one_of(
        "type",
        false,
        &["single-domain", "multi-domain", "wildcard"],
    );
    let level = f.one_of("validation_level", false, &["DV", "OV", "EV"]);
    let custom = issuer.as_deref() == Some("custom");
    for field in ["custom_private_key", "custom_certificate"] {
        let given = f.string(field, false, 4096);
        match given {
            None if custom && !f.errors.contains_key(field) => f.fail(
                field,
                format!(
                    "The {} field is required when issuer is custom.",
                    human(field)
                ),
            ),
            Some(v) if v.chars().count() < 100 => f.fail(
                field,
                format!(
                    "The {} field must be at least 100 characters.",
                    human(field)
                ),
            ),
            _ => {}
        }
    }
    let vhost = vhost_id.and_then(|v| d.vhosts.get(&v).filter(|v| v.environment_id == env));
    match (vhost_id, vhost) {
        (Some(_), None) => f.fail(
            "virtual_host_id",
            "The selected virtual host id is invalid.".into(),
        ),
        (Some(v), Some(_)) if d.certs.values().any(|c| c.virtual_host_id == v) => f.fail(
            "virtual_host_id",
            "The virtual host already has an SSL certificate.".into(),
        ),
        (Some(_), Some(vh))
            if issuer.as_deref() == Some("lets-encrypt") && vh.kind != "name-based" =>
        {
            f.fail(
                "virtual_host_id",
                "Let's Encrypt only issues certificates for name-based virtual hosts.".into(),
            );
        }
        _ => {}
    }
    let name = vhost.map(|v| v.name.clone()).unwrap_or_default();
    f.finish()?;
    let vhost_id = vhost_id.unwrap_or_default();
    let cert = Certificate {
        id: d.next(),
        environment_id: env,
        virtual_host_id: vhost_id,
        name,
        issuer: issuer.unwrap_or_default(),
        kind: kind.unwrap_or_else(|| "single-domain".to_owned()),
        validation_level: level.unwrap_or_else(|| "DV".to_owned()),
        created_at: fmt_ts(jiff::Timestamp::now()),
    };
    let cert_id = cert.id;
    let lets_encrypt = cert.issuer == "lets-encrypt";
    d.certs.insert(cert_id, cert);
    if lets_encrypt {
        let fail_reason = next_cert_failure(&mut d);
        let servers = d.vhost_targets(vhost_id);
        dispatch(
            &mut d,
            ActionKind::Deploy,
            "ssl-certificate",
            cert_id,
            servers,
            None,
            fail_reason,
        );
    }
    let body = d
        .certs
        .get(&cert_id)
        .map(|c| cert_full(&d, c, Instant::now()))
        .unwrap_or_default();
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn get_cert(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let d = sim.begin(&Method::GET, &headers)?;
    let id = find_cert(&d, &id, false)?;
    let body = d
        .certs
        .get(&id)
        .map(|c| cert_full(&d, c, Instant::now()))
        .unwrap_or_default();
    Ok(Json(body).into_response())
}

async fn deploy_cert(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let mut d = sim.begin(&Method::POST, &headers)?;
    let id = find_cert(&d, &id, true)?;
    let vhost_id = d
        .certs
        .get(&id)
        .map(|c| c.virtual_host_id)
        .unwrap_or_default();
    let mut f = Fields::parse(&body)?;
    let servers = target_servers(&mut f, d.vhost_targets(vhost_id));
    f.finish()?;
    let fail_reason = next_cert_failure(&mut d);
    let action = dispatch(
        &mut d,
        ActionKind::Deploy,
        "ssl-certificate",
        id,
        servers,
        None,
        fail_reason,
    );
    Ok(no_content_with_action(action))
}

async fn delete_cert(
    State(sim): State<DevopnessSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let mut d = sim.begin(&Method::DELETE, &headers)?;
    let id = find_cert(&d, &id, false)?;
    let vhost_id = d
        .certs
        .get(&id)
        .map(|c| c.virtual_host_id)
        .unwrap_or_default();
    d.certs.remove(&id);
    let servers = d.vhost_targets(vhost_id);
    let action = dispatch(
        &mut d,
        ActionKind::Delete,
        "ssl-certificate",
        id,
        servers,
        None,
        None,
    );
    Ok(no_content_with_action(action))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::bind;
    use crate::sim::spec_check::{load_named_spec, operation, request_errors, Checker};
    use reqwest::Method as M;

    struct Harness {
        sim: DevopnessSim,
        base: String,
        http: reqwest::Client,
        _server: crate::sim::SimServer,
    }

    impl Harness {
        async fn new(config: SimConfig) -> Self {
            let sim = DevopnessSim::new(&config);
            let server = bind("127.0.0.1:0".parse().expect("addr"), router(sim.clone()))
                .await
                .expect("bind");
            Self {
                sim,
                base: server.base_url(),
                http: reqwest::Client::new(),
                _server: server,
            }
        }
        async fn default() -> Self {
            Self::new(SimConfig::default()).await
        }
        async fn send(&self, method: M, path: &str, body: Option<&Value>) -> reqwest::Response {
            let mut req = self
                .http
                .request(method, format!("{}{path}", self.base))
                .bearer_auth(DEFAULT_TOKEN_FOR_TESTS)
                .header("Accept", "application/json")
                .header("Content-Type", "application/json");
            if let Some(body) = body {
                req = req.body(body.to_string());
            }
            req.send().await.expect("send")
        }
        async fn json(&self, method: M, path: &str, body: Option<&Value>) -> (u16, Value) {
            let r = self.send(method, path, body).await;
            let status = r.status().as_u16();
            let text = r.text().await.expect("text");
            (status, serde_json::from_str(&text).unwrap_or(Value::Null))
        }
    }

    const DEFAULT_TOKEN_FOR_TESTS: &str = crate::sim::DEFAULT_TOKEN;

    fn app_body(name: &str) -> Value {
        json!({ "name": name, "programming_language": "nodejs", "engine_version": "20",
            "framework": "none", "repository": "acme/web", "credential_id": 1,
            "default_branch": "main" })
    }

    async fn wait_status(h: &Harness, action: u64, want: &str) -> Value {
        for _ in 0..100 {
            let (status, body) = h.json(M::GET, &format!("/actions/{action}"), None).await;
            assert_eq!(status, 200);
            if body["status"] == want {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("action {action} never reached {want}");
    }

    fn action_id(r: &reqwest::Response) -> u64 {
        r.headers()
            .get(ACTION_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("action id header")
    }

    #[tokio::test]
    async fn lifecycle_create_deploy_complete() {
        let h = Harness::default().await;
        h.sim.set_step_time(Duration::from_millis(50));
        let (status, app) = h
            .json(
                M::POST,
                "/environments/1/applications",
                Some(&app_body("web")),
            )
            .await;
        assert_eq!(status, 201, "{app}");
        let id = app["id"].as_u64().expect("id");
        assert_eq!(app["repository_owner"], "acme");
        assert_eq!(h.sim.deployed_ref(id), None);
        let deploy = json!({ "type": "deploy", "source_type": "tag", "source_ref": "v1.2.0",
            "servers": [1] });
        let r = h
            .send(
                M::POST,
                &format!("/applications/{id}/deployments"),
                Some(&deploy),
            )
            .await;
        assert_eq!(r.status(), 204);
        let action = action_id(&r);
        assert_eq!(r.text().await.expect("text"), "");
        assert_eq!(h.sim.deploy_count(id), 1);
        let (_, pending) = h.json(M::GET, &format!("/actions/{action}"), None).await;
        assert_eq!(pending["status"], "pending");
        assert_eq!(pending["started_at"], Value::Null);
        let running = wait_status(&h, action, "in-progress").await;
        assert_eq!(running["status_reason_code"], "IN_PROGRESS");
        assert_eq!(running["summary"]["targets"]["in_progress"], 1);
        let done = wait_status(&h, action, "completed").await;
        assert_eq!(done["action_data"]["deployment"]["source_ref"], "v1.2.0");
        assert_eq!(done["resource"]["id"], id);
        assert_eq!(h.sim.deployed_ref(id).as_deref(), Some("v1.2.0"));
        let (_, app) = h.json(M::GET, &format!("/applications/{id}"), None).await;
        assert_eq!(app["last_deployments"]["live"]["id"], action);

        // Update, then delete (and 404 afterwards).
        let mut update = app_body("web-2");
        update["id"] = json!(id);
        let r = h
            .send(M::PUT, &format!("/applications/{id}"), Some(&update))
            .await;
        assert_eq!(r.status(), 204);
        let (_, app) = h.json(M::GET, &format!("/applications/{id}"), None).await;
        assert_eq!(app["name"], "web-2");
        let r = h
            .send(M::DELETE, &format!("/applications/{id}"), None)
            .await;
        assert_eq!(r.status(), 204);
        action_id(&r);
        let (status, body) = h
            .json(M::DELETE, &format!("/applications/{id}"), None)
            .await;
        assert_eq!(status, 404);
        assert!(body["message"].is_string());
        let (status, _) = h.json(M::GET, "/actions/999999", None).await;
        assert_eq!(status, 404);
    }

    #[tokio::test]
    async fn failing_deploy_reports_the_reason() {
        let h = Harness::default().await;
        h.sim.set_step_time(Duration::from_millis(20));
        let (_, app) = h
            .json(
                M::POST,
                "/environments/1/applications",
                Some(&app_body("web")),
            )
            .await;
        let id = app["id"].as_u64().expect("id");
        h.sim.fail_next_deploy(id, "npm install failed");
        let deploy = json!({ "type": "deploy" });
        let path = format!("/applications/{id}/deployments");
        let r = h.send(M::POST, &path, Some(&deploy)).await;
        let failed = wait_status(&h, action_id(&r), "failed").await;
        assert_eq!(failed["status_reason_code"], "FAILED");
        assert_eq!(failed["status_reason_human_readable"], "npm install failed");
        assert_eq!(h.sim.deployed_ref(id), None);
        // The knob is used up: the next deployment (default branch) completes.
        let r = h.send(M::POST, &path, Some(&deploy)).await;
        wait_status(&h, action_id(&r), "completed").await;
        assert_eq!(h.sim.deployed_ref(id).as_deref(), Some("main"));
        assert_eq!(h.sim.deploy_count(id), 2);
    }

    fn links(r: &reqwest::Response) -> BTreeMap<String, String> {
        let raw = r
            .headers()
            .get("link")
            .and_then(|v| v.to_str().ok())
            .expect("Link header")
            .to_owned();
        raw.split(", ")
            .filter_map(|part| {
                let (url, rel) = part.split_once(">; rel=\"")?;
                Some((
                    rel.trim_end_matches('"').to_owned(),
                    url.trim_start_matches('<').to_owned(),
                ))
            })
            .collect()
    }

    #[tokio::test]
    async fn lists_page_with_link_headers() {
        let h = Harness::default().await;
        for i in 0..150 {
            let (status, _) = h
                .json(
                    M::POST,
                    "/environments/1/applications",
                    Some(&app_body(&format!("a{i}"))),
                )
                .await;
            assert_eq!(status, 201);
        }
        let list = "/environments/1/applications";
        let r = h.send(M::GET, &format!("{list}?per_page=100"), None).await;
        assert_eq!(r.status(), 200);
        let l = links(&r);
        let base = format!("{}{list}", h.base);
        assert_eq!(l["first"], format!("{base}?per_page=100&page=1"));
        assert_eq!(l["last"], format!("{base}?per_page=100&page=2"));
        assert_eq!(l["next"], format!("{base}?per_page=100&page=2"));
        assert!(!l.contains_key("prev"));
        let page: Vec<Value> = r.json().await.expect("json");
        assert_eq!(page.len(), 100);
        // Follow `next` as given.
        let r = h
            .http
            .get(&l["next"])
            .bearer_auth(DEFAULT_TOKEN_FOR_TESTS)
            .header("Accept", "application/json")
            .send()
            .await
            .expect("send");
        let l2 = links(&r);
        assert!(!l2.contains_key("next"));
        assert_eq!(l2["prev"], format!("{base}?per_page=100&page=1"));
        let page2: Vec<Value> = r.json().await.expect("json");
        assert_eq!(page2.len(), 50);
        let mut ids: Vec<u64> = page
            .iter()
            .chain(&page2)
            .filter_map(|a| a["id"].as_u64())
            .collect();
        ids.dedup();
        assert_eq!(ids.len(), 150);
        // Default page size 20: 8 pages.
        let r = h.send(M::GET, &format!("{list}?page=3"), None).await;
        let l = links(&r);
        assert_eq!(l["last"], format!("{base}?page=8"));
        assert_eq!(l["prev"], format!("{base}?page=2"));
        assert_eq!(l["next"], format!("{base}?page=4"));
        assert_eq!(r.json::<Vec<Value>>().await.expect("json").len(), 20);
        let (status, body) = h.json(M::GET, &format!("{list}?per_page=101"), None).await;
        assert_eq!(status, 422);
        assert!(body["errors"]["per_page"][0].is_string());
    }

    #[tokio::test]
    async fn errors_402_422_401_415() {
        let h = Harness::default().await;
        let create = "/environments/1/applications";
        let (status, body) = h
            .json(
                M::POST,
                create,
                Some(&json!({ "name": "x", "repository": "nope" })),
            )
            .await;
        assert_eq!(status, 422);
        for field in [
            "programming_language",
            "engine_version",
            "framework",
            "credential_id",
            "default_branch",
            "repository",
        ] {
            assert!(body["errors"][field][0].is_string(), "{field}: {body}");
        }
        assert!(body["message"]
            .as_str()
            .is_some_and(|m| m.contains("more errors")));
        h.json(M::POST, create, Some(&app_body("dup"))).await;
        let (status, body) = h.json(M::POST, create, Some(&app_body("dup"))).await;
        assert_eq!(status, 422);
        assert_eq!(
            body["errors"]["name"][0],
            "The name has already been taken."
        );

        h.sim.set_usage_limit_reached(true);
        let (status, body) = h.json(M::POST, create, Some(&app_body("new"))).await;
        assert_eq!(status, 402);
        assert!(body["message"].is_string());
        h.sim.set_usage_limit_reached(false);
        assert_eq!(h.json(M::POST, create, Some(&app_body("new"))).await.0, 201);

        let r = h
            .http
            .get(format!("{}/projects/1", h.base))
            .bearer_auth("wrong")
            .header("Accept", "application/json")
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 401);
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["message"], "Unauthenticated.");
        let r = h
            .http
            .get(format!("{}/projects/1", h.base))
            .bearer_auth(DEFAULT_TOKEN_FOR_TESTS)
            .header("Accept", "text/html")
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 415);
        let r = h
            .http
            .post(format!("{}{create}", h.base))
            .bearer_auth(DEFAULT_TOKEN_FOR_TESTS)
            .header("Accept", "application/json")
            .header("Content-Type", "text/plain")
            .body(app_body("z").to_string())
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 415);
    }

    #[tokio::test]
    async fn rate_limit_answers_429_in_the_error_shape() {
        let h = Harness::new(SimConfig {
            rate_limit_per_minute: Some(2),
            ..SimConfig::default()
        })
        .await;
        // Two per minute (a sliding window per credential): the third request is refused.
        assert_eq!(h.json(M::GET, "/projects/1", None).await.0, 200);
        assert_eq!(h.json(M::GET, "/projects/1", None).await.0, 200);
        let (status, body) = h.json(M::GET, "/projects/1", None).await;
        assert_eq!(status, 429);
        assert!(body["message"].is_string());
        assert_eq!(h.sim.control().stats().rate_limited_total, 1);
    }

    /// Calls routes and checks requests and responses against the published spec.
    struct Fidelity<'a> {
        h: &'a Harness,
        spec: &'a Value,
        problems: Vec<String>,
    }

    /// Statuses the API reference documents for every operation ([S-ref]), though most
    /// operations do not declare them; their body is `ApiError`.
    const DOCUMENTED: &[u16] = &[400, 401, 402, 403, 404, 405, 409, 415, 422, 429, 500, 503];

    impl Fidelity<'_> {
        async fn call(
            &mut self,
            method: M,
            template: &str,
            path: &str,
            body: Option<Value>,
            want: u16,
        ) -> (Value, Option<u64>) {
            let what = format!("{method} {path}");
            let (path_only, query) = match path.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (path, None),
            };
            let (matched, errs) =
                request_errors(self.spec, &method, path_only, query, body.as_ref());
            if matched != Some(template) {
                self.problems
                    .push(format!("{what}: matched {matched:?}, want {template}"));
            }
            // Invalid bodies are sent on purpose for 4xx answers.
            if want < 400 {
                self.problems
                    .extend(errs.into_iter().map(|e| format!("{what} request: {e}")));
            }
            let r = self.h.send(method.clone(), path, body.as_ref()).await;
            let status = r.status().as_u16();
            let headers = r.headers().clone();
            let text = r.text().await.unwrap_or_default();
            if status != want {
                self.problems
                    .push(format!("{what}: status {status}, want {want}: {text}"));
            }
            let checker = Checker { spec: self.spec };
            let op = operation(self.spec, &method, template);
            let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let api_error = json!({ "$ref": "#/components/schemas/ApiError" });
            let declared = op.pointer(&format!("/responses/{status}"));
            let schema = declared
                .map(|d| d.pointer("/content/application~1json/schema"))
                .unwrap_or_else(|| DOCUMENTED.contains(&status).then_some(&api_error));
            if declared.is_none() && !DOCUMENTED.contains(&status) {
                self.problems.push(format!(
                    "{what}: status {status} neither declared nor documented"
                ));
            }
            match schema {
                Some(schema) if *schema == api_error => {
                    // `ApiError.errors` declares a placeholder property `field_name`; the
                    // documented shape maps field names to lists of messages.
                    for e in checker.lenient_errors(schema, &value) {
                        self.problems.push(format!("{what} response {status}: {e}"));
                    }
                    if let Some(errors) = value.get("errors") {
                        let ok = errors.as_object().is_some_and(|o| {
                            o.values().all(|v| {
                                v.as_array().is_some_and(|a| a.iter().all(Value::is_string))
                            })
                        });
                        if !ok {
                            self.problems
                                .push(format!("{what}: errors is not field -> [string]: {errors}"));
                        }
                    }
                }
                Some(schema) => {
                    for e in checker.errors(schema, &value) {
                        self.problems.push(format!("{what} response {status}: {e}"));
                    }
                }
                None if !text.is_empty() => self
                    .problems
                    .push(format!("{what}: spec declares no body, got {text}")),
                None => {}
            }
            let mut action = None;
            for (name, decl) in declared
                .and_then(|d| d.get("headers"))
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                let got = headers.get(name.as_str()).and_then(|v| v.to_str().ok());
                match (got, decl.pointer("/schema/type").and_then(Value::as_str)) {
                    (None, _) => self.problems.push(format!("{what}: header {name} missing")),
                    (Some(v), Some("integer")) => match v.parse::<u64>() {
                        Ok(id) => action = Some(id),
                        Err(_) => self
                            .problems
                            .push(format!("{what}: header {name}={v} not an integer")),
                    },
                    _ => {}
                }
            }
            (value, action)
        }
    }

    #[tokio::test]
    async fn responses_match_the_published_spec() {
        let spec = load_named_spec("devopness-openapi.json");
        let h = Harness::default().await;
        h.sim.set_step_time(Duration::from_millis(30));
        let mut f = Fidelity {
            h: &h,
            spec: &spec,
            problems: Vec::new(),
        };

        f.call(M::GET, "/projects/{project_id}", "/projects/1", None, 200)
            .await;
        f.call(M::GET, "/projects/{project_id}", "/projects/7", None, 404)
            .await;
        let envs = "/projects/{project_id}/environments";
        f.call(M::GET, envs, "/projects/1/environments", None, 200)
            .await;
        f.call(
            M::GET,
            envs,
            "/projects/1/environments?page=1&per_page=5",
            None,
            200,
        )
        .await;
        f.call(
            M::GET,
            "/environments/{environment_id}",
            "/environments/1",
            None,
            200,
        )
        .await;
        f.call(
            M::GET,
            "/environments/{environment_id}",
            "/environments/2",
            None,
            404,
        )
        .await;

        let apps = "/environments/{environment_id}/applications";
        let full = json!({ "name": "api", "programming_language": "python",
            "engine_version": "3.12", "framework": "none", "repository": "acme/api",
            "credential_id": 1, "default_branch": "main", "root_directory": "/srv",
            "build_command": "make", "install_dependencies_command": "pip install .",
            "deployments_keep": 3,
            "linked_resources": [{ "resource_type": "server", "resource_id": 1 }] });
        let (created, _) = f
            .call(
                M::POST,
                apps,
                "/environments/1/applications",
                Some(full),
                201,
            )
            .await;
        let id = created["id"].as_u64().unwrap_or_default();
        f.call(
            M::POST,
            apps,
            "/environments/1/applications",
            Some(app_body("web")),
            201,
        )
        .await;
        f.call(
            M::POST,
            apps,
            "/environments/1/applications",
            Some(json!({})),
            422,
        )
        .await;
        h.sim.set_usage_limit_reached(true);
        f.call(
            M::POST,
            apps,
            "/environments/1/applications",
            Some(app_body("w2")),
            402,
        )
        .await;
        h.sim.set_usage_limit_reached(false);
        f.call(
            M::GET,
            apps,
            "/environments/1/applications?per_page=1&page=2",
            None,
            200,
        )
        .await;
        f.call(
            M::GET,
            apps,
            "/environments/1/applications?per_page=0",
            None,
            422,
        )
        .await;

        let one = "/applications/{application_id}";
        let path = format!("/applications/{id}");
        f.call(M::GET, one, &path, None, 200).await;
        f.call(M::GET, one, "/applications/99999", None, 404).await;
        let mut update = app_body("api-2");
        update["id"] = json!(id);
        f.call(M::PUT, one, &path, Some(update), 204).await;
        f.call(M::PUT, one, &path, Some(json!({ "id": id })), 422)
            .await;

        let dep = "/applications/{application_id}/deployments";
        let dpath = format!("{path}/deployments");
        let body = json!({ "type": "deploy", "source_type": "branch", "source_ref": "main",
            "pipeline_id": 5, "servers": [1] });
        let (_, action) = f.call(M::POST, dep, &dpath, Some(body), 204).await;
        f.call(
            M::POST,
            dep,
            &dpath,
            Some(json!({ "type": "sideways" })),
            422,
        )
        .await;
        let act = "/actions/{action_id}";
        let apath = format!("/actions/{}", action.unwrap_or_default());
        f.call(M::GET, act, &apath, None, 200).await;
        tokio::time::sleep(Duration::from_millis(40)).await;
        f.call(M::GET, act, &apath, None, 200).await;
        tokio::time::sleep(Duration::from_millis(40)).await;
        f.call(M::GET, act, &apath, None, 200).await;
        h.sim.fail_next_deploy(id, "boom");
        let (_, failed) = f
            .call(
                M::POST,
                dep,
                &dpath,
                Some(json!({ "type": "redeploy" })),
                204,
            )
            .await;
        tokio::time::sleep(Duration::from_millis(70)).await;
        let fpath = format!("/actions/{}", failed.unwrap_or_default());
        let (failed, _) = f.call(M::GET, act, &fpath, None, 200).await;
        assert_eq!(failed["status"], "failed");
        f.call(M::GET, one, &path, None, 200).await;
        f.call(M::GET, act, "/actions/424242", None, 404).await;
        // Rollbacks: only to a ref deployed successfully before (`main` completed above).
        let back = json!({ "type": "rollback", "source_type": "branch", "source_ref": "main" });
        f.call(M::POST, dep, &dpath, Some(back), 204).await;
        let never = json!({ "type": "rollback", "source_type": "tag", "source_ref": "v9" });
        let (err, _) = f.call(M::POST, dep, &dpath, Some(never), 422).await;
        assert!(err["errors"]["source_ref"][0].is_string(), "{err}");
        assert_eq!(
            h.sim.deploy_types(id),
            vec!["deploy", "redeploy", "rollback"]
        );

        let vars = "/variables/{resource_type}/{resource_id}";
        let vpath = format!("/variables/application/{id}");
        let var = json!({ "key": "PORT", "value": "8080", "target": "os-env-var",
            "type": "variable", "hidden": false, "description": "port" });
        let (v, _) = f.call(M::POST, vars, &vpath, Some(var.clone()), 201).await;
        f.call(M::POST, vars, &vpath, Some(var), 422).await;
        let secret = json!({ "key": "TOKEN", "value": "s3cret", "target": "os-env-var",
            "type": "variable", "hidden": true });
        f.call(M::POST, vars, &vpath, Some(secret), 201).await;
        f.call(M::GET, vars, &vpath, None, 200).await;
        f.call(M::GET, vars, "/variables/application/99999", None, 404)
            .await;
        let vid = v["id"].as_u64().unwrap_or_default();
        let one_var = "/variables/{variable_id}";
        let vp = format!("/variables/{vid}");
        f.call(M::GET, one_var, &vp, None, 200).await;
        let upd = json!({ "id": vid, "key": "PORT", "value": "9090", "target": "os-env-var",
            "type": "variable", "hidden": false });
        f.call(M::PUT, one_var, &vp, Some(upd), 204).await;
        f.call(M::PUT, one_var, &vp, Some(json!({ "id": vid })), 422)
            .await;
        f.call(M::DELETE, one_var, &vp, None, 204).await;
        f.call(M::GET, one_var, &vp, None, 404).await;

        let vhs = "/environments/{environment_id}/virtual-hosts";
        let vh = json!({ "type": "name-based", "name": "app.example.com",
            "root_directory": "/public", "application_listen_address": "http://127.0.0.1:3000",
            "application_id": id });
        let (vh, _) = f
            .call(M::POST, vhs, "/environments/1/virtual-hosts", Some(vh), 201)
            .await;
        let bad = json!({ "type": "name-based", "name": "not a domain" });
        f.call(
            M::POST,
            vhs,
            "/environments/1/virtual-hosts",
            Some(bad),
            422,
        )
        .await;
        f.call(M::GET, vhs, "/environments/1/virtual-hosts", None, 200)
            .await;
        let one_vh = "/virtual-hosts/{virtual_host_id}";
        let vhp = format!("/virtual-hosts/{}", vh["id"].as_u64().unwrap_or_default());
        f.call(M::GET, one_vh, &vhp, None, 200).await;
        f.call(M::GET, one, &path, None, 200).await;

        // Virtual host update and deploy.
        let vid = vh["id"].as_u64().unwrap_or_default();
        let upd = json!({ "id": vid, "name": "shop.example.com", "root_directory": "/srv",
            "application_listen_address": null, "application_id": id });
        f.call(M::PUT, one_vh, &vhp, Some(upd), 204).await;
        let bad = json!({ "id": vid, "name": "not a domain" });
        f.call(M::PUT, one_vh, &vhp, Some(bad), 422).await;
        let upd = json!({ "id": 999_999, "name": "x.example.com" });
        f.call(M::PUT, one_vh, "/virtual-hosts/999999", Some(upd), 404)
            .await;
        let vh_dep = "/virtual-hosts/{virtual_host_id}/deploy";
        let vdp = format!("{vhp}/deploy");
        let servers = json!({ "servers": [1] });
        let (_, vh_action) = f.call(M::POST, vh_dep, &vdp, Some(servers), 204).await;
        let (vh_now, _) = f.call(M::GET, one_vh, &vhp, None, 200).await;
        assert_eq!(vh_now["last_action"]["id"], json!(vh_action));
        assert_eq!(vh_now["application_listen_address"], Value::Null);
        f.call(M::POST, vh_dep, &vdp, Some(json!({})), 204).await;
        let wrong = json!({ "servers": [5] });
        f.call(M::POST, vh_dep, &vdp, Some(wrong), 422).await;
        let none = "/virtual-hosts/999999/deploy";
        f.call(M::POST, vh_dep, none, Some(json!({})), 404).await;
        let vh_apath = format!("/actions/{}", vh_action.unwrap_or_default());
        f.call(M::GET, act, &vh_apath, None, 200).await;

        // SSL certificates.
        let certs = "/environments/{environment_id}/ssl-certificates";
        let cp = "/environments/1/ssl-certificates";
        let le = json!({ "virtual_host_id": vid, "issuer": "lets-encrypt",
            "type": "single-domain", "validation_level": "DV" });
        let (cert, _) = f.call(M::POST, certs, cp, Some(le.clone()), 201).await;
        assert_eq!(cert["active"], false);
        assert_eq!(cert["name"], "shop.example.com");
        f.call(M::POST, certs, cp, Some(le.clone()), 422).await;
        let custom = json!({ "virtual_host_id": 999_999, "issuer": "custom" });
        let (err, _) = f.call(M::POST, certs, cp, Some(custom), 422).await;
        for field in [
            "virtual_host_id",
            "custom_private_key",
            "custom_certificate",
        ] {
            assert!(err["errors"][field][0].is_string(), "{field}: {err}");
        }
        h.sim.set_usage_limit_reached(true);
        f.call(M::POST, certs, cp, Some(le), 402).await;
        h.sim.set_usage_limit_reached(false);
        f.call(M::GET, certs, cp, None, 200).await;
        let one_cert = "/ssl-certificates/{ssl_certificate_id}";
        let cpath = format!(
            "/ssl-certificates/{}",
            cert["id"].as_u64().unwrap_or_default()
        );
        f.call(M::GET, one_cert, &cpath, None, 200).await;
        f.call(M::GET, one_vh, &vhp, None, 200).await;
        tokio::time::sleep(Duration::from_millis(70)).await;
        let (active, _) = f.call(M::GET, one_cert, &cpath, None, 200).await;
        assert_eq!(active["active"], true);
        assert!(active["expires_at"].is_string());
        let (listed, _) = f
            .call(
                M::GET,
                certs,
                &format!("{cp}?page=1&per_page=10"),
                None,
                200,
            )
            .await;
        assert_eq!(listed[0]["active"], true);
        let (vh_now, _) = f.call(M::GET, one_vh, &vhp, None, 200).await;
        assert_eq!(vh_now["ssl_certificate"]["active"], true);
        let issue = format!("/actions/{}", cert["last_action"]["id"]);
        let (issued, _) = f.call(M::GET, act, &issue, None, 200).await;
        assert_eq!(issued["resource"]["type"], "ssl-certificate");
        f.call(M::GET, one_cert, "/ssl-certificates/999999", None, 404)
            .await;
        let cert_dep = "/ssl-certificates/{ssl_certificate_id}/deploy";
        let cdp = format!("{cpath}/deploy");
        h.sim.fail_next_certificate("rate limited by Let's Encrypt");
        let (_, failing) = f.call(M::POST, cert_dep, &cdp, Some(json!({})), 204).await;
        f.call(
            M::POST,
            cert_dep,
            &cdp,
            Some(json!({ "servers": [1] })),
            204,
        )
        .await;
        f.call(
            M::POST,
            cert_dep,
            &cdp,
            Some(json!({ "servers": [3] })),
            422,
        )
        .await;
        let none = "/ssl-certificates/999999/deploy";
        f.call(M::POST, cert_dep, none, Some(json!({})), 404).await;
        tokio::time::sleep(Duration::from_millis(70)).await;
        let fpath = format!("/actions/{}", failing.unwrap_or_default());
        let (failed, _) = f.call(M::GET, act, &fpath, None, 200).await;
        assert_eq!(
            failed["status_reason_human_readable"],
            "rate limited by Let's Encrypt"
        );
        let (renewed, _) = f.call(M::GET, one_cert, &cpath, None, 200).await;
        assert!(renewed["last_renewed_at"].is_string(), "{renewed}");
        let (_, del) = f.call(M::DELETE, one_cert, &cpath, None, 204).await;
        f.call(M::DELETE, one_cert, &cpath, None, 404).await;
        let dpath_c = format!("/actions/{}", del.unwrap_or_default());
        f.call(M::GET, act, &dpath_c, None, 200).await;
        // A custom certificate, removed with its virtual host below.
        let pem = |kind: &str| {
            format!(
                "-----BEGIN {kind}-----\n{}\n-----END {kind}-----",
                "A".repeat(120)
            )
        };
        let custom = json!({ "virtual_host_id": vid, "issuer": "custom",
            "custom_private_key": pem("PRIVATE KEY"), "custom_certificate": pem("CERTIFICATE") });
        let (custom, _) = f.call(M::POST, certs, cp, Some(custom), 201).await;
        assert_eq!(custom["active"], true);
        let custom_path = format!("/ssl-certificates/{}", custom["id"]);

        let (_, del) = f.call(M::DELETE, one_vh, &vhp, None, 204).await;
        f.call(M::GET, one_cert, &custom_path, None, 404).await;
        f.call(M::GET, one_vh, &vhp, None, 404).await;
        f.call(
            M::GET,
            act,
            &format!("/actions/{}", del.unwrap_or_default()),
            None,
            200,
        )
        .await;

        let (_, del) = f.call(M::DELETE, one, &path, None, 204).await;
        f.call(M::DELETE, one, &path, None, 404).await;
        f.call(
            M::GET,
            act,
            &format!("/actions/{}", del.unwrap_or_default()),
            None,
            200,
        )
        .await;

        assert!(f.problems.is_empty(), "{:#?}", f.problems);
    }
}
