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

mod render;
mod routes;
#[cfg(test)]
mod tests;

use render::fmt_ts;
pub use routes::router;

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
