//! The Devopness API client (`shared/specs/devopness-openapi.json`): the endpoints the mapping
//! needs, typed, with errors carrying the platform's `{message, errors}` body.
//!
//! Conventions (see `shared/research/devopness.md`): bearer token, `Accept` and `Content-Type`
//! `application/json` on every call (else 415), lists are bare arrays paged by the `Link`
//! header, `PUT` and custom actions answer 204, and asynchronous work is reported by the
//! `X-Devopness-Action-Id` header of that 204.

use crate::api::PlatformType;
use crate::platform::drivers::DeepChecks;
use crate::platform::http::{
    check_answer, kind_for_status, name_operation, not_found_is_none, read_json_answer, to_value,
    ApiClient,
};
use crate::platform::listing::{listing_ttl, SharedListings};
use crate::platform::{Connection, Credential, ErrorKind, Platform, PlatformError};
use async_trait::async_trait;
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE, LINK};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::fmt;
use std::sync::Arc;

/// The header naming the action a mutation dispatched.
pub const ACTION_ID_HEADER: &str = "x-devopness-action-id";
/// The largest page the API serves.
pub const PER_PAGE: u32 = 100;
/// A guard against a server whose `next` never ends.
const MAX_PAGES: usize = 1000;

// ---------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------

/// A project (`Project`; only the fields bosun reads).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Project {
    pub id: i64,
    pub name: String,
    #[serde(default)]
    pub user_id: Option<i64>,
}

/// An environment (`Environment`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Environment {
    pub id: i64,
    pub name: String,
    /// `development`, `production` or `staging`.
    #[serde(default, rename = "type")]
    pub environment_type: Option<String>,
    #[serde(default)]
    pub is_archived: bool,
}

/// The current user (`UserMe`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct User {
    pub id: i64,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub url_slug: Option<String>,
}

/// A short reference to an action (`ActionRelationShallow`, or the fields of `ActionRelation`
/// bosun reads).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ActionRef {
    pub id: i64,
    #[serde(default)]
    pub status: Option<ActionStatus>,
    #[serde(default)]
    pub status_reason_code: Option<String>,
    /// `ActionType`, for example `deploy` or `delete`.
    #[serde(default, rename = "type")]
    pub action_type: Option<String>,
}

/// `Application.last_deployments`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct LastDeployments {
    /// The most recent deployment, whatever its status.
    #[serde(default)]
    pub latest: Option<ActionRef>,
    /// The most recent successful deployment.
    #[serde(default)]
    pub live: Option<ActionRef>,
}

impl crate::platform::drivers::Identified for Application {
    fn platform_id(&self) -> i64 {
        self.id
    }
    fn platform_name(&self) -> &str {
        &self.name
    }
}

/// An application (`Application` or, in lists, `ApplicationRelation`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Application {
    pub id: i64,
    pub name: String,
    #[serde(default)]
    pub project_id: Option<i64>,
    #[serde(default)]
    pub environment_id: Option<i64>,
    #[serde(default)]
    pub repository: Option<String>,
    #[serde(default)]
    pub default_branch: Option<String>,
    #[serde(default)]
    pub programming_language: Option<String>,
    #[serde(default)]
    pub engine_version: Option<String>,
    #[serde(default)]
    pub framework: Option<String>,
    #[serde(default)]
    pub root_directory: Option<String>,
    #[serde(default)]
    pub build_command: Option<String>,
    #[serde(default)]
    pub install_dependencies_command: Option<String>,
    #[serde(default)]
    pub deployments_keep: Option<i64>,
    /// The credential's id, read from the nested `credential` object.
    #[serde(default, deserialize_with = "nested_id", rename = "credential")]
    pub credential_id: Option<i64>,
    #[serde(default, deserialize_with = "null_default")]
    pub last_deployments: LastDeployments,
    /// The servers the application is linked to. Only the full answer (`GET
    /// /applications/{id}`, `Application`) has them; lists (`ApplicationRelation`) do not.
    #[serde(default, deserialize_with = "null_default")]
    pub servers: Vec<ServerRef>,
}

/// A server an application is linked to (`ServerRelation`; the fields bosun reads).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ServerRef {
    pub id: i64,
    /// The public IPv4 address.
    #[serde(default)]
    pub ip_address: Option<String>,
}

/// A resource to link on create (`ResourceToBeLinked`).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LinkedResource {
    pub resource_type: String,
    pub resource_id: i64,
}

/// `POST /environments/{id}/applications` body (`ApplicationEnvironmentCreate`).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CreateApplication {
    pub name: String,
    pub programming_language: String,
    pub engine_version: String,
    pub framework: String,
    pub repository: String,
    pub credential_id: i64,
    pub default_branch: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_directory: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub install_dependencies_command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployments_keep: Option<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub linked_resources: Vec<LinkedResource>,
}

/// `PUT /applications/{id}` body (`ApplicationUpdate`): a full replace, `id` repeated.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct UpdateApplication {
    pub id: i64,
    pub name: String,
    pub programming_language: String,
    pub engine_version: String,
    pub framework: String,
    pub default_branch: String,
    /// When set, `credential_id` is required too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_directory: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub install_dependencies_command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployments_keep: Option<i64>,
}

/// `DeploymentType`.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DeploymentType {
    Deploy,
    Redeploy,
    Rollback,
}

/// `SourceType`.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SourceType {
    Branch,
    Commit,
    Tag,
}

/// `POST /applications/{id}/deployments` body (`DeploymentApplicationCreate`).
/// `source_type` and `source_ref` go together; without them the default branch is deployed.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DeployApplication {
    #[serde(rename = "type")]
    pub deployment_type: DeploymentType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_type: Option<SourceType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<String>,
    /// The pipeline to run; the default deploy pipeline when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline_id: Option<i64>,
    /// Target servers; the application's linked servers when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<i64>,
}

/// `ActionStatus`; a value the spec does not name is kept as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActionStatus {
    Pending,
    Waiting,
    Skipped,
    Queued,
    InProgress,
    Completed,
    Failed,
    Other(String),
}

impl ActionStatus {
    pub fn parse(s: &str) -> ActionStatus {
        match s {
            "pending" => ActionStatus::Pending,
            "waiting" => ActionStatus::Waiting,
            "skipped" => ActionStatus::Skipped,
            "queued" => ActionStatus::Queued,
            "in-progress" => ActionStatus::InProgress,
            "completed" => ActionStatus::Completed,
            "failed" => ActionStatus::Failed,
            other => ActionStatus::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            ActionStatus::Pending => "pending",
            ActionStatus::Waiting => "waiting",
            ActionStatus::Skipped => "skipped",
            ActionStatus::Queued => "queued",
            ActionStatus::InProgress => "in-progress",
            ActionStatus::Completed => "completed",
            ActionStatus::Failed => "failed",
            ActionStatus::Other(s) => s,
        }
    }

    /// `completed`, `failed` and `skipped` end an action; unknown values are not terminal.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            ActionStatus::Completed | ActionStatus::Failed | ActionStatus::Skipped
        )
    }
}

impl fmt::Display for ActionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ActionStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(ActionStatus::parse(&s))
    }
}

/// One target (server) of an action (`ActionTarget`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ActionTarget {
    #[serde(default)]
    pub id: Option<i64>,
    #[serde(default)]
    pub resource_type: Option<String>,
    #[serde(default)]
    pub resource_id: Option<i64>,
    pub status: ActionStatus,
    #[serde(default)]
    pub status_reason_code: Option<String>,
    #[serde(default)]
    pub status_reason_human_readable: Option<String>,
}

/// An action (`Action`; the fields bosun reads).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Action {
    pub id: i64,
    pub status: ActionStatus,
    /// `ActionStatusReasonCode`, for example `FAILED_INSUFFICIENT_CREDITS`.
    #[serde(default)]
    pub status_reason_code: Option<String>,
    #[serde(default)]
    pub status_reason_human_readable: Option<String>,
    /// `ActionType`, for example `deploy`.
    #[serde(default, rename = "type")]
    pub action_type: Option<String>,
    #[serde(default)]
    pub url_web_permalink: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub completed_at: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub targets: Vec<ActionTarget>,
}

impl Action {
    /// Why a failed action failed: the platform's reason, and which targets failed and why.
    /// `None` unless the action failed.
    pub fn failure_reason(&self) -> Option<String> {
        if self.status != ActionStatus::Failed {
            return None;
        }
        let mut reason = self
            .status_reason_human_readable
            .clone()
            .filter(|s| !s.trim().is_empty())
            .or_else(|| self.status_reason_code.clone())
            .unwrap_or_else(|| "failed".to_string());
        if let Some(code) = &self.status_reason_code {
            if !reason.contains(code.as_str()) {
                reason = format!("{reason} ({code})");
            }
        }
        let failed: Vec<String> = self
            .targets
            .iter()
            .filter(|t| t.status == ActionStatus::Failed)
            .map(|t| {
                let what = match (&t.resource_type, t.resource_id) {
                    (Some(ty), Some(id)) => format!("{ty} {id}"),
                    (None, Some(id)) => format!("target {id}"),
                    _ => "a target".to_string(),
                };
                match t
                    .status_reason_human_readable
                    .as_ref()
                    .or(t.status_reason_code.as_ref())
                {
                    Some(r) => format!("{what}: {r}"),
                    None => what,
                }
            })
            .collect();
        if !failed.is_empty() {
            reason = format!("{reason}; failed on {}", failed.join(", "));
        }
        Some(reason)
    }
}

/// A variable (`Variable`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Variable {
    pub id: i64,
    pub key: String,
    #[serde(default)]
    pub value: Option<String>,
    /// `file`, `symlink` or `variable`.
    #[serde(default, rename = "type")]
    pub variable_type: Option<String>,
    /// `VariableTarget`, for example `os-env-var`.
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub hidden: bool,
    #[serde(default)]
    pub description: Option<String>,
}

/// `POST /variables/{resource_type}/{resource_id}` body (`VariableCreate`).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CreateVariable {
    pub key: String,
    pub value: String,
    pub target: String,
    #[serde(rename = "type")]
    pub variable_type: String,
    pub hidden: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl CreateVariable {
    /// An environment variable of the application's processes (`type=variable`,
    /// `target=os-env-var`); `hidden` keeps it out of deployment logs.
    pub fn env(key: impl Into<String>, value: impl Into<String>, hidden: bool) -> Self {
        CreateVariable {
            key: key.into(),
            value: value.into(),
            target: "os-env-var".to_string(),
            variable_type: "variable".to_string(),
            hidden,
            description: None,
        }
    }
}

/// `PUT /variables/{id}` body (`VariableUpdate`): a full replace, `id` repeated.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct UpdateVariable {
    pub id: i64,
    pub key: String,
    pub value: String,
    pub target: String,
    #[serde(rename = "type")]
    pub variable_type: String,
    pub hidden: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A virtual host (`VirtualHost`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct VirtualHost {
    pub id: i64,
    pub name: String,
    /// `ip-based` or `name-based`.
    #[serde(default, rename = "type")]
    pub virtual_host_type: Option<String>,
    #[serde(default)]
    pub root_directory: Option<String>,
    #[serde(default)]
    pub application_listen_address: Option<String>,
    /// The linked application's id, read from the nested `application` object.
    #[serde(default, deserialize_with = "nested_id", rename = "application")]
    pub application_id: Option<i64>,
    #[serde(default)]
    pub last_action: Option<ActionRef>,
    /// The certificate issued for this virtual host (`SslCertificateRelation`), if any.
    #[serde(default)]
    pub ssl_certificate: Option<SslCertificateRef>,
}

/// `VirtualHost.ssl_certificate` (`SslCertificateRelation`; the fields bosun reads).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct SslCertificateRef {
    pub id: i64,
    /// Whether the certificate is in force on every linked server.
    #[serde(default, deserialize_with = "null_default")]
    pub active: bool,
    #[serde(default)]
    pub last_action: Option<ActionRef>,
}

/// `PUT /virtual-hosts/{id}` body (`VirtualHostUpdate`), `id` repeated. The type cannot
/// change; fields left `None` are not sent (and keep their value).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct UpdateVirtualHost {
    pub id: i64,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_directory: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_listen_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_id: Option<i64>,
}

/// `POST /virtual-hosts/{id}/deploy` and `POST /ssl-certificates/{id}/deploy` body
/// (`VirtualHostDeploy`, `SslCertificateDeploy`).
#[derive(Clone, Debug, Serialize, PartialEq)]
struct DeployToServers<'a> {
    /// Target servers; the platform's default targets when empty.
    #[serde(skip_serializing_if = "<[i64]>::is_empty")]
    servers: &'a [i64],
}

/// An SSL certificate (`SslCertificate` or, in lists, `SslCertificateRelation`).
///
/// The spec links a certificate to its virtual host only on create (`virtual_host_id` in
/// `SslCertificateEnvironmentCreate`); neither schema of the certificate names the virtual
/// host. A certificate takes the virtual host's name, so certificates are found by `name` ==
/// the virtual host's domain name, or through `VirtualHost.ssl_certificate`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct SslCertificate {
    pub id: i64,
    /// The domain name (the virtual host's name).
    pub name: String,
    /// `SslCertificateIssuer`: `lets-encrypt` or `custom`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Whether the certificate is in force on every linked server; a Let's Encrypt certificate
    /// becomes active when its issuing action completes.
    #[serde(default, deserialize_with = "null_default")]
    pub active: bool,
    #[serde(default)]
    pub last_action: Option<ActionRef>,
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Not in the spec's answers (see above), so `None` from the API unless a server sends it.
    #[serde(default)]
    pub virtual_host_id: Option<i64>,
}

/// `POST /environments/{id}/ssl-certificates` body (`SslCertificateEnvironmentCreate`). Bosun
/// sends issuer `lets-encrypt` (a `custom` issuer needs the key and certificate, which this
/// type does not carry).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CreateSslCertificate {
    pub virtual_host_id: i64,
    /// `SslCertificateIssuer`: `lets-encrypt` or `custom`.
    pub issuer: String,
    /// `SslCertificateType`: `single-domain`, `multi-domain` or `wildcard`.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub certificate_type: Option<String>,
    /// `SslCertificateValidationLevel`: `DV`, `OV` or `EV`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_level: Option<String>,
}

/// `POST /environments/{id}/virtual-hosts` body (`VirtualHostEnvironmentCreate`).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CreateVirtualHost {
    /// `name-based` (a domain name) or `ip-based`.
    #[serde(rename = "type")]
    pub virtual_host_type: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_directory: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_listen_address: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub linked_resources: Vec<LinkedResource>,
}

/// What a delete did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deleted {
    /// Removed; for asynchronous removals, the action doing it.
    Done { action_id: Option<i64> },
    /// It was not there (404).
    AlreadyGone,
}

/// The `Link` header's relations (RFC 8288), as given (usually absolute URLs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Links {
    pub first: Option<String>,
    pub last: Option<String>,
    pub next: Option<String>,
    /// `rel="prev"` or `rel="previous"` (the spec and the docs disagree).
    pub prev: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Pure helpers
// ---------------------------------------------------------------------------------------------

/// Parses a `Link` header: `<url>; rel="next", <url>; rel="last"`. Commas inside `<...>` are
/// part of the URL; `rel` may be quoted or not and may list several relations.
pub fn parse_link(header: &str) -> Links {
    let mut links = Links::default();
    let mut rest = header;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('>') else { break };
        let url = after[..close].trim().to_string();
        let tail = &after[close + 1..];
        // The parameters run up to the next link (a comma followed by `<`) or the end.
        let end = tail.find('<').unwrap_or(tail.len());
        let params = &tail[..end];
        rest = &tail[end..];
        for param in params.split(';') {
            let Some((name, value)) = param.split_once('=') else {
                continue;
            };
            if !name.trim().eq_ignore_ascii_case("rel") {
                continue;
            }
            let value = value.trim().trim_end_matches(',').trim().trim_matches('"');
            for rel in value.split_whitespace() {
                let slot = match rel.to_ascii_lowercase().as_str() {
                    "first" => &mut links.first,
                    "last" => &mut links.last,
                    "next" => &mut links.next,
                    "prev" | "previous" => &mut links.prev,
                    _ => continue,
                };
                if slot.is_none() {
                    *slot = Some(url.clone());
                }
            }
        }
    }
    links
}

/// The fields of `errors`, in the order the platform sent them.
struct OrderedErrors(Vec<(String, Vec<String>)>);

impl<'de> Deserialize<'de> for OrderedErrors {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedErrors;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of field to messages")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedErrors, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    let messages = match v {
                        Value::Array(items) => items
                            .into_iter()
                            .map(|i| match i {
                                Value::String(s) => s,
                                other => other.to_string(),
                            })
                            .collect(),
                        Value::String(s) => vec![s],
                        Value::Null => Vec::new(),
                        other => vec![other.to_string()],
                    };
                    out.push((k, messages));
                }
                Ok(OrderedErrors(out))
            }
            fn visit_unit<E>(self) -> Result<OrderedErrors, E> {
                Ok(OrderedErrors(Vec::new()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OrderedErrors, A::Error> {
                // An empty `[]` (how PHP encodes an empty map) or a list: no field named.
                while seq.next_element::<Value>()?.is_some() {}
                Ok(OrderedErrors(Vec::new()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `ApiError`.
#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    errors: Option<OrderedErrors>,
}

/// Classifies a Devopness error answer (pure, so every shape is unit-tested). The body may be
/// `{message, errors}`, `{message}`, empty or not JSON at all. `field` is the first field of
/// `errors`, and the message names it.
pub fn error_from(status: StatusCode, body: &str) -> PlatformError {
    let parsed: Option<ApiError> = serde_json::from_str(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|p| p.message.clone())
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty());
    let first = parsed
        .as_ref()
        .and_then(|p| p.errors.as_ref())
        .and_then(|e| e.0.first().cloned());
    let code = status.as_u16();
    let kind = kind_for_status(status);
    let said = message
        .clone()
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
    let mut text = match code {
        401 => format!(
            "the API token was refused (401 Unauthenticated: wrong or expired credentials): {said}"
        ),
        403 => format!("the API token does not allow this (403 Forbidden): {said}"),
        402 => format!("usage limit reached on the project's subscription: {said}"),
        404 => format!("not found (404): {said}"),
        409 => format!("conflicts with the current state (409): {said}"),
        _ => format!("answered {code}: {said}"),
    };
    let field = first.as_ref().map(|(f, _)| f.clone());
    if let Some((name, messages)) = &first {
        let detail = messages
            .iter()
            .filter(|m| !m.trim().is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join(" ");
        if detail.is_empty() || said.contains(detail.as_str()) {
            text = format!("{text} (field `{name}`)");
        } else {
            text = format!("{text} (field `{name}`: {detail})");
        }
    }
    let mut err = PlatformError::new(kind, format!("devopness {text}"));
    err.status = Some(code);
    err.field = field;
    err
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

/// `null` reads as the default (the spec marks many lists and objects nullable).
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The `id` of a nested object (`{"id": 3, ...}`), or `None` for `null` or no id.
fn nested_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = Option::<Value>::deserialize(d)?;
    Ok(v.and_then(|v| v.get("id").and_then(Value::as_i64)))
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

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

/// Turns a non-2xx answer into a typed error naming the operation.
async fn check(operation: &str, response: Response) -> Result<Response, PlatformError> {
    check_answer(response, |status, body| {
        name_operation("devopness", operation, error_from(status, body))
    })
    .await
}

#[async_trait]
impl Platform for Devopness {
    fn workspaces(&self) -> Option<&dyn crate::platform::drivers::WorkspaceDriver> {
        Some(self)
    }

    fn domains(&self) -> Option<&dyn crate::platform::drivers::DomainDriver> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::budget::RateBudget;
    use axum::body::Bytes;
    use axum::http::{HeaderMap as AxHeaders, Uri};
    use axum::response::IntoResponse;
    use axum::Router;
    use std::sync::{Arc, Mutex};

    // ----- pure --------------------------------------------------------------------------

    #[test]
    fn link_header_from_the_docs() {
        let h = r#"<https://api.devopness.com/projects?page=1>; rel="first", <https://api.devopness.com/projects?page=6>; rel="last", <https://api.devopness.com/projects?page=3>; rel="prev", <https://api.devopness.com/projects?page=5>; rel="next""#;
        let l = parse_link(h);
        assert_eq!(
            l.first.as_deref(),
            Some("https://api.devopness.com/projects?page=1")
        );
        assert_eq!(
            l.last.as_deref(),
            Some("https://api.devopness.com/projects?page=6")
        );
        assert_eq!(
            l.prev.as_deref(),
            Some("https://api.devopness.com/projects?page=3")
        );
        assert_eq!(
            l.next.as_deref(),
            Some("https://api.devopness.com/projects?page=5")
        );
    }

    #[test]
    fn link_header_variants() {
        // `previous`, unquoted rel, extra params, commas in URLs, odd spacing, no next.
        let h = "<https://x/a?page=1&f=a,b>;rel=first ,<https://x/a?page=2>; title=\"p, q\"; rel=\"previous\",<https://x/a?page=9>; rel=\"last\"";
        let l = parse_link(h);
        assert_eq!(l.first.as_deref(), Some("https://x/a?page=1&f=a,b"));
        assert_eq!(l.prev.as_deref(), Some("https://x/a?page=2"));
        assert_eq!(l.last.as_deref(), Some("https://x/a?page=9"));
        assert_eq!(l.next, None, "no next: the end of the collection");
        // Several relations in one rel.
        let l = parse_link(r#"<https://x/?page=2>; rel="next last""#);
        assert_eq!(l.next.as_deref(), Some("https://x/?page=2"));
        assert_eq!(l.last.as_deref(), Some("https://x/?page=2"));
        assert_eq!(parse_link(""), Links::default());
        assert_eq!(parse_link("garbage, <unclosed"), Links::default());
    }

    #[test]
    fn validation_errors_name_the_first_field() {
        let body = r#"{"message":"The given data was invalid.","errors":{"name":["The name has already been taken."],"credential_id":["The selected credential id is invalid."]}}"#;
        let e = error_from(StatusCode::UNPROCESSABLE_ENTITY, body);
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert_eq!(e.status, Some(422));
        assert_eq!(e.field.as_deref(), Some("name"));
        assert!(e.message.contains("`name`"), "{}", e.message);
        assert!(e.message.contains("already been taken"), "{}", e.message);
        assert!(e.message.contains("The given data was invalid."));
        // Document order, not alphabetical order.
        let body = r#"{"message":"bad","errors":{"zeta":["z"],"alpha":["a"]}}"#;
        assert_eq!(
            error_from(StatusCode::UNPROCESSABLE_ENTITY, body)
                .field
                .as_deref(),
            Some("zeta")
        );
    }

    #[test]
    fn status_codes_map_to_kinds() {
        let msg = r#"{"message":"nope"}"#;
        let e = error_from(StatusCode::UNAUTHORIZED, msg);
        assert_eq!(e.kind, ErrorKind::Unauthorized);
        assert!(e.message.contains("nope"));
        assert_eq!(e.field, None);
        assert_eq!(
            error_from(StatusCode::FORBIDDEN, msg).kind,
            ErrorKind::Forbidden
        );
        let e = error_from(
            StatusCode::PAYMENT_REQUIRED,
            r#"{"message":"Max parallel actions reached"}"#,
        );
        assert_eq!(e.kind, ErrorKind::QuotaExceeded);
        assert!(
            e.message.contains(
                "usage limit reached on the project's subscription: Max parallel actions reached"
            ),
            "{}",
            e.message
        );
        assert_eq!(
            error_from(StatusCode::NOT_FOUND, msg).kind,
            ErrorKind::NotFound
        );
        assert_eq!(
            error_from(StatusCode::CONFLICT, msg).kind,
            ErrorKind::Conflict
        );
        assert_eq!(
            error_from(StatusCode::BAD_REQUEST, msg).kind,
            ErrorKind::Invalid
        );
        assert_eq!(
            error_from(StatusCode::INTERNAL_SERVER_ERROR, msg).kind,
            ErrorKind::Unavailable
        );
        assert_eq!(
            error_from(StatusCode::TOO_MANY_REQUESTS, msg).kind,
            ErrorKind::RateLimited
        );
    }

    #[test]
    fn empty_and_non_json_bodies_still_say_something() {
        let e = error_from(StatusCode::NOT_FOUND, "");
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert!(e.message.contains("Not Found"), "{}", e.message);
        let e = error_from(StatusCode::BAD_GATEWAY, "<html>bad gateway</html>");
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert!(e.message.contains("502"), "{}", e.message);
        // `errors` absent, null, an empty PHP array, or odd shapes.
        for body in [
            r#"{"message":"m"}"#,
            r#"{"message":"m","errors":null}"#,
            r#"{"message":"m","errors":[]}"#,
        ] {
            let e = error_from(StatusCode::UNPROCESSABLE_ENTITY, body);
            assert_eq!(e.field, None, "{body}");
            assert!(e.message.contains('m'));
        }
        let e = error_from(
            StatusCode::UNPROCESSABLE_ENTITY,
            r#"{"message":"m","errors":{"key":"must be unique"}}"#,
        );
        assert_eq!(e.field.as_deref(), Some("key"));
        assert!(e.message.contains("must be unique"));
    }

    #[test]
    fn action_statuses_cover_the_spec() {
        for (text, status, terminal) in [
            ("pending", ActionStatus::Pending, false),
            ("waiting", ActionStatus::Waiting, false),
            ("queued", ActionStatus::Queued, false),
            ("in-progress", ActionStatus::InProgress, false),
            ("skipped", ActionStatus::Skipped, true),
            ("completed", ActionStatus::Completed, true),
            ("failed", ActionStatus::Failed, true),
        ] {
            let parsed: ActionStatus =
                serde_json::from_value(Value::String(text.into())).expect("status");
            assert_eq!(parsed, status);
            assert_eq!(parsed.is_terminal(), terminal, "{text}");
            assert_eq!(parsed.as_str(), text);
        }
        let odd = ActionStatus::parse("in_progress");
        assert_eq!(odd, ActionStatus::Other("in_progress".into()));
        assert!(!odd.is_terminal());
        assert_eq!(odd.to_string(), "in_progress");
    }

    #[test]
    fn failed_actions_explain_why() {
        let a: Action = serde_json::from_str(
            r#"{"id":7,"status":"failed","status_reason_code":"FAILED_INSUFFICIENT_CREDITS",
                "status_reason_human_readable":"Failed: insufficient credits","type":"deploy",
                "targets":[{"id":1,"resource_type":"server","resource_id":3,"status":"failed",
                            "status_reason_code":"FAILED"},
                           {"id":2,"resource_type":"server","resource_id":4,"status":"completed"}]}"#,
        )
        .expect("action");
        let why = a.failure_reason().expect("reason");
        assert!(why.contains("insufficient credits"), "{why}");
        assert!(why.contains("FAILED_INSUFFICIENT_CREDITS"), "{why}");
        assert!(why.contains("server 3: FAILED"), "{why}");
        assert!(!why.contains("server 4"), "{why}");
        let ok: Action =
            serde_json::from_str(r#"{"id":8,"status":"completed","targets":null}"#).expect("ok");
        assert_eq!(ok.failure_reason(), None);
    }

    #[test]
    fn request_bodies_match_the_spec() {
        let d = DeployApplication {
            deployment_type: DeploymentType::Deploy,
            source_type: Some(SourceType::Commit),
            source_ref: Some("abc123".into()),
            pipeline_id: Some(5),
            servers: vec![1, 2],
        };
        assert_eq!(
            serde_json::to_value(&d).expect("json"),
            serde_json::json!({"type":"deploy","source_type":"commit","source_ref":"abc123","pipeline_id":5,"servers":[1,2]})
        );
        let d = DeployApplication {
            deployment_type: DeploymentType::Redeploy,
            source_type: None,
            source_ref: None,
            pipeline_id: None,
            servers: vec![],
        };
        assert_eq!(
            serde_json::to_value(&d).expect("json"),
            serde_json::json!({"type":"redeploy"})
        );
        assert_eq!(
            serde_json::to_value(CreateVariable::env("A", "b", true)).expect("json"),
            serde_json::json!({"key":"A","value":"b","target":"os-env-var","type":"variable","hidden":true})
        );
    }

    #[test]
    fn applications_read_nested_and_null_fields() {
        let a: Application = serde_json::from_str(
            r#"{"id":1,"name":"web","credential":{"id":9,"name":"gh"},
                "last_deployments":{"latest":{"id":40,"status":"in-progress"},"live":null},
                "root_directory":null}"#,
        )
        .expect("app");
        assert_eq!(a.credential_id, Some(9));
        assert_eq!(a.last_deployments.latest.as_ref().map(|l| l.id), Some(40));
        assert_eq!(a.last_deployments.live, None);
        let a: Application =
            serde_json::from_str(r#"{"id":2,"name":"x","last_deployments":null}"#).expect("app");
        assert_eq!(a.last_deployments, LastDeployments::default());
    }

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

    fn connection(endpoint: &str, project: Option<i64>) -> Connection {
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
            dry_run: None,
        }
    }

    fn client(endpoint: &str) -> Devopness {
        Devopness::new(connection(endpoint, None)).expect("client")
    }

    fn update_body(id: i64) -> UpdateApplication {
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

    // ----- against the Devopness simulator ----------------------------------------------------

    fn sim_connection(endpoint: &str, token: &str, project: Option<i64>) -> Connection {
        let mut c = connection(endpoint, project);
        c.credential = Credential::new(token);
        c
    }

    fn app_body(name: &str) -> CreateApplication {
        CreateApplication {
            name: name.into(),
            programming_language: "nodejs".into(),
            engine_version: "20".into(),
            framework: "none".into(),
            repository: "acme/web".into(),
            credential_id: 1,
            default_branch: "main".into(),
            root_directory: None,
            build_command: None,
            install_dependencies_command: None,
            deployments_keep: None,
            linked_resources: vec![],
        }
    }

    #[tokio::test]
    async fn works_against_the_simulator() {
        use crate::platform::devopness::sim::{router, DevopnessSim};
        use crate::sim::{bind, SimConfig};
        let config = SimConfig::default();
        let sim = DevopnessSim::new(&config);
        sim.set_step_time(std::time::Duration::from_millis(20));
        let server = bind("127.0.0.1:0".parse().expect("addr"), router(sim.clone()))
            .await
            .expect("bind");
        let base = server.base_url();
        let c = Devopness::new(sim_connection(&base, &config.token, Some(1))).expect("client");

        // Identity, project, environment.
        assert!(c.verify().await.expect("verify").starts_with("project 1"));
        assert!(c.get_environment(1).await.expect("env").is_some());
        assert!(c.get_environment(999).await.expect("no env").is_none());
        let bad = Devopness::new(sim_connection(&base, "wrong", Some(1))).expect("client");
        assert_eq!(
            bad.verify().await.expect_err("401").kind,
            ErrorKind::Unauthorized
        );

        // Applications: create, duplicate (422 on `name`), list, get, update.
        let app = c
            .create_application(1, &app_body("web"))
            .await
            .expect("create");
        let e = c
            .create_application(1, &app_body("web"))
            .await
            .expect_err("duplicate");
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert_eq!(e.field.as_deref(), Some("name"), "{}", e.message);
        let listed = c.list_applications(1).await.expect("list");
        assert_eq!(
            listed.iter().map(|a| a.id).collect::<Vec<_>>(),
            vec![app.id]
        );
        let mut update = update_body(app.id);
        update.engine_version = "22".into();
        c.update_application(&update).await.expect("update");
        let got = c
            .get_application(app.id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(got.engine_version.as_deref(), Some("22"));

        // Deploy and poll the action to its end.
        let action_id = c
            .deploy_application(
                app.id,
                &DeployApplication {
                    deployment_type: DeploymentType::Deploy,
                    source_type: Some(SourceType::Commit),
                    source_ref: Some("abc123".into()),
                    pipeline_id: None,
                    servers: vec![1],
                },
            )
            .await
            .expect("deploy");
        let mut last = None;
        for _ in 0..100 {
            let a = c
                .get_action(action_id)
                .await
                .expect("action")
                .expect("exists");
            if a.status.is_terminal() {
                last = Some(a);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let done = last.expect("the action ended");
        assert_eq!(done.status, ActionStatus::Completed, "{done:?}");
        assert_eq!(sim.deployed_ref(app.id as u64).as_deref(), Some("abc123"));

        // A failed deploy explains itself.
        sim.fail_next_deploy(app.id as u64, "npm ci failed");
        let failed_id = c
            .deploy_application(
                app.id,
                &DeployApplication {
                    deployment_type: DeploymentType::Redeploy,
                    source_type: None,
                    source_ref: None,
                    pipeline_id: None,
                    servers: vec![],
                },
            )
            .await
            .expect("deploy");
        let mut failed = None;
        for _ in 0..100 {
            let a = c.get_action(failed_id).await.expect("a").expect("exists");
            if a.status.is_terminal() {
                failed = Some(a);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let failed = failed.expect("ended");
        assert_eq!(failed.status, ActionStatus::Failed);
        assert!(failed.failure_reason().is_some());

        // Variables, across pages.
        for i in 0..150 {
            c.create_application_variable(
                app.id,
                &CreateVariable::env(format!("K{i}"), "v", false),
            )
            .await
            .expect("create variable");
        }
        let vars = c.list_application_variables(app.id).await.expect("vars");
        assert_eq!(vars.len(), 150);
        let v = &vars[0];
        c.update_variable(&UpdateVariable {
            id: v.id,
            key: v.key.clone(),
            value: "changed".into(),
            target: "os-env-var".into(),
            variable_type: "variable".into(),
            hidden: true,
            description: None,
        })
        .await
        .expect("update variable");
        assert_eq!(
            c.delete_variable(v.id).await.expect("delete"),
            Deleted::Done { action_id: None }
        );
        assert_eq!(
            c.delete_variable(v.id).await.expect("gone"),
            Deleted::AlreadyGone
        );

        // Virtual hosts.
        let vh = c
            .create_virtual_host(
                1,
                &CreateVirtualHost {
                    virtual_host_type: "name-based".into(),
                    name: "shop.example.com".into(),
                    application_id: Some(app.id),
                    root_directory: None,
                    application_listen_address: None,
                    linked_resources: vec![],
                },
            )
            .await
            .expect("vhost");
        assert_eq!(c.list_virtual_hosts(1).await.expect("vhosts").len(), 1);
        assert!(matches!(
            c.delete_virtual_host(vh.id).await.expect("delete"),
            Deleted::Done { action_id: Some(_) }
        ));

        // Usage limit: 402.
        sim.set_usage_limit_reached(true);
        let e = c
            .create_application(1, &app_body("other"))
            .await
            .expect_err("402");
        assert_eq!(e.kind, ErrorKind::QuotaExceeded);
        assert!(e
            .message
            .contains("usage limit reached on the project's subscription"));
        sim.set_usage_limit_reached(false);

        // Delete: an action, then already gone.
        assert!(matches!(
            c.delete_application(app.id).await.expect("delete"),
            Deleted::Done { action_id: Some(_) }
        ));
        assert_eq!(
            c.delete_application(app.id).await.expect("gone"),
            Deleted::AlreadyGone
        );
        assert!(c.get_application(app.id).await.expect("get").is_none());
    }

    /// A simulator on a free port (step time 20 ms) and a client of it.
    async fn sim_client() -> (
        crate::platform::devopness::sim::DevopnessSim,
        crate::sim::SimServer,
        Devopness,
    ) {
        use crate::platform::devopness::sim::{router, DevopnessSim};
        use crate::sim::{bind, SimConfig};
        let config = SimConfig::default();
        let sim = DevopnessSim::new(&config);
        sim.set_step_time(std::time::Duration::from_millis(20));
        let server = bind("127.0.0.1:0".parse().expect("addr"), router(sim.clone()))
            .await
            .expect("bind");
        let c = Devopness::new(sim_connection(&server.base_url(), &config.token, Some(1)))
            .expect("client");
        (sim, server, c)
    }

    /// Polls an action until it ends.
    async fn finished(c: &Devopness, id: i64) -> Action {
        for _ in 0..200 {
            let a = c.get_action(id).await.expect("action").expect("exists");
            if a.status.is_terminal() {
                return a;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("action {id} never ended");
    }

    fn vhost_body(name: &str, application_id: Option<i64>) -> CreateVirtualHost {
        CreateVirtualHost {
            virtual_host_type: "name-based".into(),
            name: name.into(),
            application_id,
            root_directory: None,
            application_listen_address: Some("http://127.0.0.1:3000".into()),
            linked_resources: vec![],
        }
    }

    fn lets_encrypt(virtual_host_id: i64) -> CreateSslCertificate {
        CreateSslCertificate {
            virtual_host_id,
            issuer: "lets-encrypt".into(),
            certificate_type: None,
            validation_level: None,
        }
    }

    #[test]
    fn new_request_bodies_match_the_spec() {
        let u = UpdateVirtualHost {
            id: 4,
            name: "a.example.com".into(),
            root_directory: None,
            application_listen_address: Some("http://127.0.0.1:8080".into()),
            application_id: None,
        };
        assert_eq!(
            serde_json::to_value(&u).expect("json"),
            serde_json::json!({"id":4,"name":"a.example.com","application_listen_address":"http://127.0.0.1:8080"})
        );
        assert_eq!(
            serde_json::to_value(lets_encrypt(9)).expect("json"),
            serde_json::json!({"virtual_host_id":9,"issuer":"lets-encrypt"})
        );
        let full = CreateSslCertificate {
            certificate_type: Some("single-domain".into()),
            validation_level: Some("DV".into()),
            ..lets_encrypt(9)
        };
        assert_eq!(
            serde_json::to_value(full).expect("json"),
            serde_json::json!({"virtual_host_id":9,"issuer":"lets-encrypt","type":"single-domain","validation_level":"DV"})
        );
        assert_eq!(
            serde_json::to_value(DeployToServers { servers: &[] }).expect("json"),
            serde_json::json!({})
        );
        assert_eq!(
            serde_json::to_value(DeployToServers { servers: &[1, 2] }).expect("json"),
            serde_json::json!({"servers":[1,2]})
        );
    }

    #[test]
    fn nested_relations_are_read() {
        let v: VirtualHost = serde_json::from_str(
            r#"{"id":3,"name":"a.example.com","application":null,
                "ssl_certificate":{"id":8,"name":"a.example.com","active":true,
                    "last_action":{"id":70,"type":"deploy","status":"completed"}},
                "last_action":{"id":71,"type":"deploy","status":"pending"}}"#,
        )
        .expect("vhost");
        let cert = v.ssl_certificate.expect("certificate");
        assert_eq!((cert.id, cert.active), (8, true));
        let a = cert.last_action.expect("action");
        assert_eq!(a.action_type.as_deref(), Some("deploy"));
        assert_eq!(a.status, Some(ActionStatus::Completed));
        assert_eq!(v.last_action.map(|a| a.id), Some(71));
        let v: VirtualHost = serde_json::from_str(
            r#"{"id":3,"name":"a.example.com","ssl_certificate":{"id":8,"active":null}}"#,
        )
        .expect("vhost");
        assert_eq!(v.ssl_certificate.map(|c| c.active), Some(false));
        let v: VirtualHost =
            serde_json::from_str(r#"{"id":3,"name":"x","ssl_certificate":null}"#).expect("vhost");
        assert_eq!(v.ssl_certificate, None);
        let c: SslCertificate = serde_json::from_str(
            r#"{"id":8,"name":"a.example.com","type":"single-domain","issuer":"lets-encrypt",
                "validation_level":"DV","active":false,"last_action":null,"expires_at":null,
                "last_renewed_at":null}"#,
        )
        .expect("certificate");
        assert_eq!(c.issuer.as_deref(), Some("lets-encrypt"));
        assert_eq!(
            (c.active, c.expires_at, c.virtual_host_id),
            (false, None, None)
        );
        let a: Application = serde_json::from_str(
            r#"{"id":1,"name":"web","servers":[{"id":1,"name":"s","ip_address":"10.0.0.1"},{"id":2}]}"#,
        )
        .expect("app");
        assert_eq!(
            a.servers,
            vec![
                ServerRef {
                    id: 1,
                    ip_address: Some("10.0.0.1".into())
                },
                ServerRef {
                    id: 2,
                    ip_address: None
                }
            ]
        );
        let a: Application = serde_json::from_str(r#"{"id":1,"name":"web"}"#).expect("app");
        assert!(a.servers.is_empty());
    }

    #[tokio::test]
    async fn virtual_hosts_update_deploy_get_against_the_simulator() {
        let (_sim, _server, c) = sim_client().await;
        let app = c
            .create_application(1, &app_body("web"))
            .await
            .expect("app");
        // Listed applications carry no servers; the full answer does once a deploy linked one.
        assert!(c.list_applications(1).await.expect("list")[0]
            .servers
            .is_empty());
        let deploy = DeployApplication {
            deployment_type: DeploymentType::Deploy,
            source_type: None,
            source_ref: None,
            pipeline_id: None,
            servers: vec![],
        };
        let action = c.deploy_application(app.id, &deploy).await.expect("deploy");
        finished(&c, action).await;
        let full = c.get_application(app.id).await.expect("get").expect("app");
        assert_eq!(full.servers.len(), 1);
        assert_eq!(full.servers[0].id, 1);
        assert_eq!(full.servers[0].ip_address.as_deref(), Some("10.0.0.1"));

        let vh = c
            .create_virtual_host(1, &vhost_body("shop.example.com", Some(app.id)))
            .await
            .expect("vhost");
        assert_eq!(vh.last_action, None);
        assert_eq!(vh.ssl_certificate, None);
        c.create_virtual_host(1, &vhost_body("other.example.com", None))
            .await
            .expect("second vhost");

        // Update: name, listen address, root directory; the application stays linked.
        c.update_virtual_host(&UpdateVirtualHost {
            id: vh.id,
            name: "Store.Example.com".into(),
            root_directory: Some("/public".into()),
            application_listen_address: Some("http://127.0.0.1:8080".into()),
            application_id: None,
        })
        .await
        .expect("update");
        let got = c
            .get_virtual_host(vh.id)
            .await
            .expect("get")
            .expect("vhost");
        assert_eq!(got.name, "store.example.com");
        assert_eq!(got.root_directory.as_deref(), Some("/public"));
        assert_eq!(
            got.application_listen_address.as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(got.application_id, Some(app.id));

        // Update errors name the field.
        let e = c
            .update_virtual_host(&UpdateVirtualHost {
                id: vh.id,
                name: "other.example.com".into(),
                root_directory: None,
                application_listen_address: None,
                application_id: None,
            })
            .await
            .expect_err("duplicate name");
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert_eq!(e.field.as_deref(), Some("name"), "{}", e.message);
        assert!(e.message.contains("already been taken"), "{}", e.message);
        let e = c
            .update_virtual_host(&UpdateVirtualHost {
                id: vh.id,
                name: "not a domain".into(),
                root_directory: Some("relative".into()),
                application_listen_address: Some("ftp://x".into()),
                application_id: Some(424242),
            })
            .await
            .expect_err("invalid");
        assert_eq!(e.status, Some(422));
        assert_eq!(e.field.as_deref(), Some("application_id"), "{}", e.message);
        assert!(e.message.contains("(and 3 more errors)"), "{}", e.message);
        let e = c
            .update_virtual_host(&UpdateVirtualHost {
                id: 999_999,
                name: "x.example.com".into(),
                root_directory: None,
                application_listen_address: None,
                application_id: None,
            })
            .await
            .expect_err("unknown");
        assert_eq!(e.kind, ErrorKind::NotFound);

        // Deploy: an action on the virtual host, shown as its last action.
        let action = c.deploy_virtual_host(vh.id, &[]).await.expect("deploy");
        let pending = c
            .get_virtual_host(vh.id)
            .await
            .expect("get")
            .expect("vhost");
        let last = pending.last_action.expect("last action");
        assert_eq!(last.id, action);
        assert_eq!(last.action_type.as_deref(), Some("deploy"));
        let done = finished(&c, action).await;
        assert_eq!(done.status, ActionStatus::Completed);
        assert_eq!(done.action_type.as_deref(), Some("deploy"));
        let got = c
            .get_virtual_host(vh.id)
            .await
            .expect("get")
            .expect("vhost");
        assert_eq!(
            got.last_action.and_then(|a| a.status),
            Some(ActionStatus::Completed)
        );
        let listed = c.list_virtual_hosts(1).await.expect("list");
        let mine = listed.iter().find(|v| v.id == vh.id).expect("listed");
        assert_eq!(mine.last_action.as_ref().map(|a| a.id), Some(action));
        let e = c
            .deploy_virtual_host(vh.id, &[7])
            .await
            .expect_err("unknown server");
        assert_eq!(e.field.as_deref(), Some("servers"), "{}", e.message);
        let e = c
            .deploy_virtual_host(999_999, &[])
            .await
            .expect_err("unknown vhost");
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert!(c.get_virtual_host(999_999).await.expect("none").is_none());
    }

    #[tokio::test]
    async fn certificates_are_issued_by_an_action_against_the_simulator() {
        let (sim, _server, c) = sim_client().await;
        let vh = c
            .create_virtual_host(1, &vhost_body("shop.example.com", None))
            .await
            .expect("vhost");

        // Create: inactive, named after the virtual host, issued by its last action.
        let cert = c
            .create_ssl_certificate(1, &lets_encrypt(vh.id))
            .await
            .expect("create");
        assert_eq!(cert.name, "shop.example.com");
        assert_eq!(cert.issuer.as_deref(), Some("lets-encrypt"));
        assert!(!cert.active);
        assert_eq!(cert.expires_at, None);
        assert_eq!(cert.virtual_host_id, None, "the spec does not link it back");
        let issue = cert.last_action.clone().expect("issuing action");
        assert_eq!(issue.action_type.as_deref(), Some("deploy"));
        let on_vhost = c
            .get_virtual_host(vh.id)
            .await
            .expect("get")
            .expect("vhost")
            .ssl_certificate
            .expect("relation");
        assert_eq!((on_vhost.id, on_vhost.active), (cert.id, false));

        // Active once the action completes, for 90 days.
        assert_eq!(finished(&c, issue.id).await.status, ActionStatus::Completed);
        let got = c
            .get_ssl_certificate(cert.id)
            .await
            .expect("get")
            .expect("certificate");
        assert!(got.active);
        let expires: jiff::Timestamp = got
            .expires_at
            .as_deref()
            .expect("expires_at")
            .parse()
            .expect("timestamp");
        let days = expires.duration_since(jiff::Timestamp::now()).as_hours() / 24;
        assert!((89..=90).contains(&days), "{days} days");
        let on_vhost = c
            .get_virtual_host(vh.id)
            .await
            .expect("get")
            .expect("vhost")
            .ssl_certificate
            .expect("relation");
        assert!(on_vhost.active);
        let listed = c.list_ssl_certificates(1).await.expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].id, listed[0].active), (cert.id, true));

        // One certificate per virtual host; unknown virtual host; custom needs its PEMs.
        let e = c
            .create_ssl_certificate(1, &lets_encrypt(vh.id))
            .await
            .expect_err("second");
        assert_eq!(e.field.as_deref(), Some("virtual_host_id"), "{}", e.message);
        assert!(e.message.contains("already has"), "{}", e.message);
        let e = c
            .create_ssl_certificate(1, &lets_encrypt(424_242))
            .await
            .expect_err("unknown vhost");
        assert_eq!(e.field.as_deref(), Some("virtual_host_id"), "{}", e.message);
        assert!(
            e.message.contains("virtual host id is invalid"),
            "{}",
            e.message
        );
        let other = c
            .create_virtual_host(1, &vhost_body("other.example.com", None))
            .await
            .expect("vhost");
        let custom = CreateSslCertificate {
            issuer: "custom".into(),
            ..lets_encrypt(other.id)
        };
        let e = c
            .create_ssl_certificate(1, &custom)
            .await
            .expect_err("custom without PEMs");
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert_eq!(
            e.field.as_deref(),
            Some("custom_certificate"),
            "{}",
            e.message
        );
        assert!(
            e.message
                .contains("The custom certificate field is required when issuer is custom."),
            "{}",
            e.message
        );
        let bad = CreateSslCertificate {
            issuer: "acme".into(),
            validation_level: Some("XV".into()),
            ..lets_encrypt(other.id)
        };
        let e = c.create_ssl_certificate(1, &bad).await.expect_err("enums");
        assert_eq!(e.field.as_deref(), Some("issuer"), "{}", e.message);

        // A failed issue explains itself and leaves the certificate inactive; a deploy retries.
        sim.fail_next_certificate("DNS record for other.example.com does not point to the server");
        let failing = c
            .create_ssl_certificate(1, &lets_encrypt(other.id))
            .await
            .expect("create");
        let issue = failing.last_action.expect("issuing action").id;
        let failed = finished(&c, issue).await;
        assert_eq!(failed.status, ActionStatus::Failed);
        let why = failed.failure_reason().expect("reason");
        assert!(why.contains("DNS record for other.example.com"), "{why}");
        let got = c
            .get_ssl_certificate(failing.id)
            .await
            .expect("get")
            .expect("certificate");
        assert!(!got.active);
        assert_eq!(got.expires_at, None);
        assert_eq!(
            got.last_action.and_then(|a| a.status),
            Some(ActionStatus::Failed)
        );
        let retry = c
            .deploy_ssl_certificate(failing.id, &[])
            .await
            .expect("retry");
        assert_eq!(finished(&c, retry).await.status, ActionStatus::Completed);
        assert!(
            c.get_ssl_certificate(failing.id)
                .await
                .expect("get")
                .expect("certificate")
                .active
        );
        let e = c
            .deploy_ssl_certificate(424_242, &[])
            .await
            .expect_err("unknown");
        assert_eq!(e.kind, ErrorKind::NotFound);

        // Usage limit.
        sim.set_usage_limit_reached(true);
        let third = c
            .create_virtual_host(1, &vhost_body("third.example.com", None))
            .await
            .expect_err("402 on vhosts too");
        assert_eq!(third.kind, ErrorKind::QuotaExceeded);
        let e = c
            .create_ssl_certificate(1, &lets_encrypt(vh.id))
            .await
            .expect_err("402");
        assert_eq!(e.kind, ErrorKind::QuotaExceeded);
        sim.set_usage_limit_reached(false);

        // Delete: an action, then gone; deleting a virtual host takes its certificate along.
        assert!(matches!(
            c.delete_ssl_certificate(cert.id).await.expect("delete"),
            Deleted::Done { action_id: Some(_) }
        ));
        assert_eq!(
            c.delete_ssl_certificate(cert.id).await.expect("gone"),
            Deleted::AlreadyGone
        );
        assert!(c.get_ssl_certificate(cert.id).await.expect("get").is_none());
        assert_eq!(
            c.get_virtual_host(vh.id)
                .await
                .expect("get")
                .expect("vhost")
                .ssl_certificate,
            None
        );
        c.delete_virtual_host(other.id).await.expect("delete vhost");
        assert!(c
            .get_ssl_certificate(failing.id)
            .await
            .expect("get")
            .is_none());
        assert!(c.list_ssl_certificates(1).await.expect("list").is_empty());
    }

    #[tokio::test]
    async fn rollbacks_need_a_ref_deployed_before_against_the_simulator() {
        let (sim, _server, c) = sim_client().await;
        let app = c
            .create_application(1, &app_body("web"))
            .await
            .expect("app");
        let to = |kind: DeploymentType, r: &str| DeployApplication {
            deployment_type: kind,
            source_type: Some(SourceType::Tag),
            source_ref: Some(r.into()),
            pipeline_id: None,
            servers: vec![],
        };
        // Nothing deployed yet: no rollback.
        let e = c
            .deploy_application(app.id, &to(DeploymentType::Rollback, "v1"))
            .await
            .expect_err("nothing to roll back to");
        assert_eq!(e.field.as_deref(), Some("source_ref"), "{}", e.message);
        assert!(e.message.contains("never deployed"), "{}", e.message);
        let v1 = c
            .deploy_application(app.id, &to(DeploymentType::Deploy, "v1"))
            .await
            .expect("v1");
        // Still in flight: not yet a successful deployment.
        let e = c
            .deploy_application(app.id, &to(DeploymentType::Rollback, "v1"))
            .await
            .expect_err("v1 not done");
        assert_eq!(e.field.as_deref(), Some("source_ref"));
        finished(&c, v1).await;
        sim.fail_next_deploy(app.id as u64, "build failed");
        let v2 = c
            .deploy_application(app.id, &to(DeploymentType::Deploy, "v2"))
            .await
            .expect("v2");
        assert_eq!(finished(&c, v2).await.status, ActionStatus::Failed);
        let e = c
            .deploy_application(app.id, &to(DeploymentType::Rollback, "v2"))
            .await
            .expect_err("v2 failed");
        assert_eq!(e.field.as_deref(), Some("source_ref"));
        let rollback = c
            .deploy_application(app.id, &to(DeploymentType::Rollback, "v1"))
            .await
            .expect("rollback to v1");
        assert_eq!(finished(&c, rollback).await.status, ActionStatus::Completed);
        let redeploy = DeployApplication {
            deployment_type: DeploymentType::Redeploy,
            source_type: None,
            source_ref: None,
            pipeline_id: None,
            servers: vec![],
        };
        c.deploy_application(app.id, &redeploy)
            .await
            .expect("redeploy");
        assert_eq!(
            sim.deploy_types(app.id as u64),
            vec!["deploy", "deploy", "rollback", "redeploy"]
        );
        // A rollback without a ref names `source_ref` too.
        let bare = DeployApplication {
            deployment_type: DeploymentType::Rollback,
            ..redeploy
        };
        let e = c
            .deploy_application(app.id, &bare)
            .await
            .expect_err("no ref");
        assert_eq!(e.field.as_deref(), Some("source_ref"), "{}", e.message);
    }

    #[tokio::test]
    async fn one_hundred_fifty_applications_page_against_the_simulator() {
        let (sim, _server, c) = sim_client().await;
        let ids = sim.create_applications(1, 150, "bulk-");
        assert_eq!(ids.len(), 150);
        let apps = c.list_applications(1).await.expect("list");
        assert_eq!(apps.len(), 150);
        assert_eq!(apps.iter().map(|a| a.id as u64).collect::<Vec<_>>(), ids);
        assert_eq!(apps[0].name, "bulk-0");
        assert_eq!(apps[149].name, "bulk-149");
        assert_eq!(c.applications_of(1).await.expect("shared").len(), 150);
    }
}
