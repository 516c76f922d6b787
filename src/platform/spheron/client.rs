//! The Spheron API client (`https://api-v2.spheron.network`): the endpoints a mapping needs,
//! typed, with errors carrying the platform's `{message}` body.
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
//!   own wrapper type below;
//! - lists are paged with `skip`/`limit` and say nothing about totals: a short page ends a list;
//! - errors are JSON with a top-level `message` (a string, or a list of strings in the NestJS
//!   validation style); `error` is read as a fallback;
//! - IDs are 24-hex Mongo ObjectIds.

use crate::api::PlatformType;
use crate::platform::http::{
    check_answer, kind_for_status, name_operation, not_found_is_none, read_json_answer, to_value,
    ApiClient,
};
use crate::platform::{Connection, Credential, ErrorKind, Platform, PlatformError};
use async_trait::async_trait;
use reqwest::header::ACCEPT;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// The page size bosun asks for. The API documents no maximum; the simulator allows 100.
pub const PAGE_LIMIT: u32 = 50;
/// A guard against a server that never returns a short page.
const MAX_PAGES: u32 = 1000;

// ---------------------------------------------------------------------------------------------
// String enums with a fallback
// ---------------------------------------------------------------------------------------------

/// A string enum of the API: known values as variants, anything else kept as `Unknown(text)`,
/// so a value Spheron adds later never breaks reading a whole object.
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value this version of bosun does not know, as sent.
            Unknown(String),
        }

        impl $name {
            /// Reads the wire text; unknown text becomes `Unknown`.
            pub fn parse(s: &str) -> Self {
                match s {
                    $($text => Self::$variant,)+
                    other => Self::Unknown(other.to_string()),
                }
            }

            /// The wire text.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)+
                    Self::Unknown(s) => s,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Ok(Self::parse(&s))
            }
        }
    };
}

string_enum! {
    /// `DeploymentStatusEnum` of a site deployment.
    DeploymentStatus {
        PreQueue => "PreQueue",
        Queued => "Queued",
        Pending => "Pending",
        /// Blocked until `POST /v1/deployment/{id}/authorize`.
        AuthorizationNeeded => "AuthorizationNeeded",
        /// A cancel is in progress.
        Killing => "Killing",
        Deployed => "Deployed",
        Failed => "Failed",
        Canceled => "Canceled",
        TimedOut => "TimedOut",
    }
}

impl DeploymentStatus {
    /// `Deployed`, `Failed`, `Canceled` and `TimedOut` end a deployment; unknown values do not.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Deployed | Self::Failed | Self::Canceled | Self::TimedOut
        )
    }

    /// Only `Deployed` is a success.
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Deployed)
    }

    /// Waiting for someone to authorize the deployment (a policy decision, not progress).
    pub fn needs_authorization(&self) -> bool {
        matches!(self, Self::AuthorizationNeeded)
    }
}

string_enum! {
    /// Status of a compute deployment (`packages/compute` `interfaces.ts`).
    ComputeDeploymentStatus {
        Queued => "Queued",
        Pending => "Pending",
        Deployed => "Deployed",
        Failed => "Failed",
        /// Superseded by a newer deployment of the same instance.
        Deprecated => "Deprecated",
        DeprecatedProvider => "Deprecated-Provider",
    }
}

impl ComputeDeploymentStatus {
    /// Everything but `Queued`, `Pending` and unknown values.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Deployed | Self::Failed | Self::Deprecated | Self::DeprecatedProvider
        )
    }

    /// Only `Deployed` is a success (a `Deprecated` deployment was replaced).
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Deployed)
    }
}

string_enum! {
    /// `InstanceStateEnum` of a compute instance.
    InstanceState {
        Starting => "Starting",
        FailedStart => "Failed-start",
        Active => "Active",
        /// The lease was stopped (`POST .../close`); the instance no longer runs.
        Closed => "Closed",
    }
}

string_enum! {
    /// `ProjectStateEnum`: projects are archived, never deleted.
    ProjectState {
        Maintained => "MAINTAINED",
        Archived => "ARCHIVED",
    }
}

string_enum! {
    /// `DomainTypeEnum`.
    DomainType {
        /// An apex domain (`example.com`): an `A` record.
        Domain => "domain",
        /// A subdomain (`www.example.com`): a `CNAME` record.
        Subdomain => "subdomain",
        HandshakeDomain => "handshake-domain",
        HandshakeSubdomain => "handshake-subdomain",
        EnsDomain => "ens-domain",
    }
}

string_enum! {
    /// `DeploymentEnvironmentStatusEnum`.
    DeploymentEnvironmentStatus {
        Active => "ACTIVE",
        Inactive => "INACTIVE",
        /// Likely an unpaid (`overdue`) organization.
        PaymentPending => "PAYMENT_PENDING",
    }
}

// ---------------------------------------------------------------------------------------------
// Lenient readers
// ---------------------------------------------------------------------------------------------

/// `null` reads as the default (Mongo documents often carry `null` for empty fields).
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// An object of strings; anything else (a missing field, `null`, another shape) reads as empty,
/// and non-string values are left out.
fn string_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::Object(o)) => o
            .into_iter()
            .filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_owned())))
            .collect(),
        _ => BTreeMap::new(),
    })
}

/// A reference that is either an id string or a populated object with `_id`.
fn id_or_object<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::String(s)) => Some(s),
        Some(Value::Object(o)) => o
            .get("_id")
            .or_else(|| o.get("id"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    })
}

/// A reference to a deployment environment: an id, or a populated environment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvironmentRef {
    pub id: Option<String>,
    pub name: Option<String>,
}

impl EnvironmentRef {
    /// Whether this reference names `env` by id or by name.
    pub fn matches(&self, env: &str) -> bool {
        self.id.as_deref() == Some(env) || self.name.as_deref() == Some(env)
    }
}

impl<'de> Deserialize<'de> for EnvironmentRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::String(id) => EnvironmentRef {
                id: Some(id),
                name: None,
            },
            Value::Object(o) => EnvironmentRef {
                id: o.get("_id").and_then(Value::as_str).map(str::to_owned),
                name: o.get("name").and_then(Value::as_str).map(str::to_owned),
            },
            _ => EnvironmentRef::default(),
        })
    }
}

/// `Project.configuration` is an object in the newer SDK and a one-element list in an older
/// one; both read as the object.
fn object_or_first<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let value = match Option::<Value>::deserialize(d)? {
        Some(Value::Array(items)) => items.into_iter().next(),
        other => other,
    };
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

// ---------------------------------------------------------------------------------------------
// Types: identity and organizations
// ---------------------------------------------------------------------------------------------

/// `GET /v1/api-keys/scope` (`TokenScope`): who the token belongs to and which organizations
/// it may act on.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct TokenScope {
    #[serde(default, deserialize_with = "null_default")]
    pub user: ScopeUser,
    #[serde(default, deserialize_with = "null_default")]
    pub organizations: Vec<ScopeOrganization>,
}

/// The user of a token scope.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct ScopeUser {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// One organization of a token scope.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScopeOrganization {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    /// `app`, `compute` or `storage` (`AppTypeEnum`).
    #[serde(default)]
    pub app_type: Option<String>,
}

/// An organization's profile.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct OrganizationProfile {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub image: Option<String>,
}

/// `GET /v1/organization/{id}` (`Organization`, or a `MasterOrganization` whose products are
/// sub-organizations).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Organization {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(default, deserialize_with = "null_default")]
    pub profile: OrganizationProfile,
    /// Unpaid: deployments may be blocked (`PAYMENT_PENDING` environments).
    #[serde(default, deserialize_with = "null_default")]
    pub overdue: bool,
    #[serde(default)]
    pub app_type: Option<String>,
    #[serde(default)]
    pub site: Option<Box<Organization>>,
    #[serde(default)]
    pub compute: Option<Box<Organization>>,
    #[serde(default)]
    pub storage: Option<Box<Organization>>,
}

// ---------------------------------------------------------------------------------------------
// Types: projects, deployments, environments, variables
// ---------------------------------------------------------------------------------------------

/// A project's build settings (`Configuration`; also the `configuration` of a start request).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BuildConfiguration {
    #[serde(default, deserialize_with = "null_default")]
    pub build_command: String,
    #[serde(default, deserialize_with = "null_default")]
    pub install_command: String,
    #[serde(default, deserialize_with = "null_default")]
    pub workspace: String,
    #[serde(default, deserialize_with = "null_default")]
    pub publish_dir: String,
    /// `FrameworkEnum`, for example `static`, `react`, `next`.
    #[serde(default, deserialize_with = "null_default")]
    pub framework: String,
    /// `V_12`, `V_14` or `V_16`.
    #[serde(default, deserialize_with = "null_default")]
    pub node_version: String,
}

/// A deployment environment (`DeploymentEnvironment`): which branches deploy where.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentEnvironment {
    #[serde(rename = "_id", default)]
    pub id: String,
    pub name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub branches: Vec<String>,
    #[serde(default)]
    pub status: Option<DeploymentEnvironmentStatus>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub is_free: bool,
}

/// A project environment variable (`EnvironmentVariable`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentVariable {
    #[serde(rename = "_id", default)]
    pub id: String,
    pub name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub value: String,
    #[serde(default, deserialize_with = "null_default")]
    pub deployment_environments: Vec<EnvironmentRef>,
}

/// One variable to add or the body of an update. `environments` lists deployment
/// environments; whether the API wants names or ids is not documented (research notes §8.3),
/// and the simulator accepts both.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct NewEnvironmentVariable {
    pub name: String,
    pub value: String,
    pub environments: Vec<String>,
}

/// A static-site project (`Project`; the fields bosun reads).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    #[serde(rename = "_id")]
    pub id: String,
    pub name: String,
    /// `STANDARD` or `UPLOAD`.
    #[serde(default, rename = "type")]
    pub project_type: Option<String>,
    /// The repository URL.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default, deserialize_with = "id_or_object")]
    pub organization: Option<String>,
    #[serde(default = "maintained")]
    pub state: ProjectState,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default, deserialize_with = "object_or_first")]
    pub configuration: Option<BuildConfiguration>,
    #[serde(default, deserialize_with = "null_default")]
    pub environment_variables: Vec<EnvironmentVariable>,
    #[serde(default, deserialize_with = "null_default")]
    pub deployment_environments: Vec<DeploymentEnvironment>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
}

fn maintained() -> ProjectState {
    ProjectState::Maintained
}

/// A site project is found by id, or by its repository: Spheron keys projects by organization
/// and repository URL (the first deployment of a repository creates its project), so the
/// repository is the project's name for bosun. The mapping's listing normalizes `url` with
/// [`crate::platform::spheron::mapping::repo_key`].
impl crate::platform::drivers::Identified<String> for Project {
    fn platform_id(&self) -> String {
        self.id.clone()
    }
    fn platform_name(&self) -> &str {
        self.url.as_deref().unwrap_or_default()
    }
}

/// One line of a deployment's build log.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct DeploymentLog {
    #[serde(default, deserialize_with = "null_default")]
    pub time: String,
    #[serde(default, deserialize_with = "null_default")]
    pub log: String,
}

/// A site deployment (`Deployment`; the fields bosun reads).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    #[serde(rename = "_id")]
    pub id: String,
    pub status: DeploymentStatus,
    /// The live URL once `Deployed`.
    #[serde(default)]
    pub site_preview: Option<String>,
    #[serde(default)]
    pub commit_id: Option<String>,
    #[serde(default)]
    pub commit_message: Option<String>,
    #[serde(default)]
    pub branch: Option<String>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub deployment_environment_name: Option<String>,
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub content_hash: Option<String>,
    #[serde(default)]
    pub failed_message: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub logs: Vec<DeploymentLog>,
    #[serde(default)]
    pub build_time: Option<f64>,
    /// The variables the build ran with (the project's, with the start request's over them).
    #[serde(default, deserialize_with = "string_map")]
    pub env: BTreeMap<String, String>,
    /// The build settings the deployment ran with.
    #[serde(default, deserialize_with = "object_or_first")]
    pub configuration: Option<BuildConfiguration>,
    /// The project's id (the API may embed the whole project).
    #[serde(default, deserialize_with = "id_or_object")]
    pub project: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
}

impl Deployment {
    /// Why a deployment did not succeed: `failedMessage`, else the last log line, else the
    /// status. `None` for deployments that are not `Failed`, `TimedOut` or `Canceled`.
    pub fn failure_reason(&self) -> Option<String> {
        if !self.status.is_terminal() || self.status.is_success() {
            return None;
        }
        let said = self
            .failed_message
            .clone()
            .filter(|m| !m.trim().is_empty())
            .or_else(|| {
                self.logs
                    .iter()
                    .rev()
                    .map(|l| l.log.trim())
                    .find(|l| !l.is_empty())
                    .map(str::to_owned)
            });
        Some(match said {
            Some(m) => format!("{}: {m}", self.status),
            None => self.status.to_string(),
        })
    }
}

/// `POST /v1/deployment` body (`StartDeploymentConfiguration`). The project is created by the
/// first deployment of a repository: there is no "create project" endpoint.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StartDeployment {
    pub organization_id: String,
    pub git_url: String,
    pub repo_name: String,
    pub branch: String,
    /// `ipfs`, `ipfs-filecoin` or `arweave`.
    pub protocol: String,
    /// `GITHUB`, `GITLAB` or `BITBUCKET`.
    pub provider: String,
    pub create_default_webhook: bool,
    pub configuration: BuildConfiguration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unique_topic_id: Option<String>,
}

/// The answer of start, redeploy and authorize.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStarted {
    #[serde(default, deserialize_with = "null_default")]
    pub success: bool,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub topic: Option<String>,
    pub deployment_id: String,
    #[serde(default)]
    pub project_id: Option<String>,
    #[serde(default)]
    pub deployment: Option<Deployment>,
}

/// The answer of `POST /v1/deployment/{id}/cancel`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct CancelResult {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub canceled: bool,
    #[serde(default, deserialize_with = "null_default")]
    pub killing: bool,
}

// ---------------------------------------------------------------------------------------------
// Types: domains
// ---------------------------------------------------------------------------------------------

/// A custom domain of a project or compute instance (`Domain`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Domain {
    #[serde(rename = "_id")]
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub link: Option<String>,
    #[serde(rename = "type")]
    pub domain_type: DomainType,
    /// Serving: DNS was checked by a `verify` call.
    #[serde(default, deserialize_with = "null_default")]
    pub verified: bool,
    #[serde(default)]
    pub project_id: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub deployment_environment_ids: Vec<EnvironmentRef>,
    /// 1 = web app (site), 2 = compute.
    #[serde(default)]
    pub app_type: Option<i64>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// `POST /v1/project/{id}/domains` body.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NewDomain {
    pub name: String,
    #[serde(rename = "type")]
    pub domain_type: DomainType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment_environments: Option<Vec<String>>,
}

/// `PATCH /v1/project/{id}/domains/{domain}` body.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DomainUpdate {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment_environments: Option<Vec<String>>,
}

/// `POST`/`PATCH /v1/compute-instance/{id}/domains[/{domain}]` body.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct NewInstanceDomain {
    /// What the domain points at (the instance's URL).
    pub link: String,
    #[serde(rename = "type")]
    pub domain_type: DomainType,
    pub name: String,
}

/// The answer of a verify call: `success` says whether DNS checked out now.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct DomainVerification {
    #[serde(default, deserialize_with = "null_default")]
    pub success: bool,
    #[serde(default)]
    pub domain: Option<Domain>,
}

impl DomainVerification {
    /// Verified by this call or before it.
    pub fn verified(&self) -> bool {
        self.success || self.domain.as_ref().is_some_and(|d| d.verified)
    }
}

/// `GET /v1/project/1/domains/cdn-records`: where custom domains must point.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct CdnRecords {
    /// The `A` record target (an IPv4 address) for apex domains.
    #[serde(rename = "recordIpv4V2", default)]
    pub ipv4: Option<String>,
    /// The `CNAME` target for subdomains.
    #[serde(rename = "recordCnameV2", default)]
    pub cname: Option<String>,
}

/// A DNS record the user must create at their DNS provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsRecord {
    /// `A` or `CNAME`.
    pub record_type: &'static str,
    /// The record's name (the domain itself).
    pub name: String,
    pub value: String,
}

/// The records a domain needs, from the CDN records [DOC attach-domain.md]: an `A` record for
/// an apex domain, a `CNAME` for a subdomain. Handshake and ENS names are not DNS: none.
/// For compute-instance domains the research notes name no records; using the same CDN
/// records there is an inference.
pub fn dns_records(domain: &Domain, records: &CdnRecords) -> Vec<DnsRecord> {
    let name = domain.name.clone();
    match domain.domain_type {
        DomainType::Domain => records
            .ipv4
            .iter()
            .map(|ip| DnsRecord {
                record_type: "A",
                name: name.clone(),
                value: ip.clone(),
            })
            .collect(),
        DomainType::Subdomain => records
            .cname
            .iter()
            .map(|target| DnsRecord {
                record_type: "CNAME",
                name: name.clone(),
                value: target.clone(),
            })
            .collect(),
        _ => Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Types: compute
// ---------------------------------------------------------------------------------------------

/// A port of a service (`Port`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    pub container_port: u16,
    pub exposed_port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose_to: Option<String>,
}

/// One environment entry of a service: `value` is a whole `KEY=VALUE` string.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EnvEntry {
    pub value: String,
    #[serde(default, deserialize_with = "null_default")]
    pub is_secret: bool,
}

impl EnvEntry {
    pub fn new(key: &str, value: &str, is_secret: bool) -> Self {
        EnvEntry {
            value: format!("{key}={value}"),
            is_secret,
        }
    }

    /// `(key, value)`; a string without `=` is a key with an empty value.
    pub fn key_value(&self) -> (&str, &str) {
        self.value.split_once('=').unwrap_or((&self.value, ""))
    }
}

// Secrets never reach a log line through `{:?}`.
impl fmt::Debug for PrivateImageConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateImageConfig")
            .field("docker_registry_url", &self.docker_registry_url)
            .field("docker_user_name", &self.docker_user_name)
            .field("docker_password_or_token", &"<redacted>")
            .finish()
    }
}

/// Credentials for a private image.
#[derive(Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PrivateImageConfig {
    #[serde(rename = "dockerRegistryURL")]
    pub docker_registry_url: String,
    pub docker_user_name: String,
    pub docker_password_or_token: String,
}

/// Persistent storage of a service.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PersistentStorage {
    /// For example `10Gi`.
    pub size: String,
    /// `beta1` (HDD), `beta2` (SSD) or `beta3` (NVMe).
    pub class: String,
    pub mount_point: String,
}

/// Custom resources instead of (or on top of) a plan.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CustomServiceSpecs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// For example `2Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_storage: Option<PersistentStorage>,
}

/// A health check in a request.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    pub port: u16,
}

/// One service of a create or update (`ComputeServiceConfigurationDTO`). Updates resend the
/// full list; `service_count` is the service's replica count.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComputeService {
    pub name: String,
    pub image: String,
    pub tag: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_image_config: Option<PrivateImageConfig>,
    pub service_count: u32,
    pub build_image: bool,
    pub ports: Vec<Port>,
    pub env: Vec<EnvEntry>,
    pub command: Vec<String>,
    pub args: Vec<String>,
    /// The plan's name.
    pub akash_machine_image_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_service_specs: Option<CustomServiceSpecs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoscaling_rules: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
}

/// `POST /v1/compute-instance/create` body (`CreateInstanceRequest`).
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CreateComputeInstance {
    pub organization_id: String,
    /// A client-chosen id (a UUID in the SDK) echoed back as `topic`.
    pub unique_topic_id: String,
    /// `DOCKERHUB`.
    pub compute_provider: String,
    /// The compute project to create the instance in (created if it does not exist).
    pub compute_project_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compute_project_description: Option<String>,
    pub region: String,
    /// True is `ON_DEMAND`, false is `SPOT`.
    pub scalable: bool,
    pub services: Vec<ComputeService>,
}

/// `PATCH /v1/compute-instance/{id}/update` body: the full service list again.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UpdateComputeInstance {
    pub services: Vec<ComputeService>,
    pub organization_id: String,
    pub unique_topic_id: String,
}

/// The answer of create and update (`InstanceResponse`): the deployment to poll.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InstanceDeployment {
    #[serde(default)]
    pub compute_project_id: Option<String>,
    pub compute_instance_id: String,
    pub compute_deployment_id: String,
    #[serde(default)]
    pub topic: Option<String>,
}

/// A compute instance (`Instance` / `ExtendedInstance`; the fields bosun reads).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComputeInstance {
    #[serde(rename = "_id")]
    pub id: String,
    pub state: InstanceState,
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// Ids of every deployment of the instance, oldest first.
    #[serde(default, deserialize_with = "null_default")]
    pub deployments: Vec<String>,
    #[serde(default, deserialize_with = "id_or_object")]
    pub compute_project: Option<String>,
    /// The deployment whose configuration runs now.
    #[serde(default, deserialize_with = "id_or_object")]
    pub active_deployment: Option<String>,
    /// `ON_DEMAND` or `SPOT`.
    #[serde(default, rename = "type")]
    pub instance_type: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// A compute instance is found by id or by name (its compute project's name, which bosun sets
/// to the Workspace's external name).
impl crate::platform::drivers::Identified<String> for ComputeInstance {
    fn platform_id(&self) -> String {
        self.id.clone()
    }
    fn platform_name(&self) -> &str {
        &self.name
    }
}

/// The plan a service runs on, as agreed with the provider.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgreedMachineImage {
    /// The plan's name.
    #[serde(default)]
    pub machine_type: Option<String>,
    #[serde(default)]
    pub cpu: Option<f64>,
    #[serde(default)]
    pub memory: Option<String>,
    #[serde(default)]
    pub storage: Option<String>,
}

/// A health check as a deployment reports it.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct DeployedHealthCheck {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub port: Option<Port>,
    /// `Active`, `Inactive`, `Pending` or `Unknown`.
    #[serde(default)]
    pub status: Option<String>,
}

/// A service as a compute deployment reports it (`ComputeServiceConfiguration`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeployedService {
    pub name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub image: String,
    #[serde(default, deserialize_with = "null_default")]
    pub tag: String,
    /// Replicas of this service.
    #[serde(default, deserialize_with = "null_default")]
    pub service_count: u32,
    #[serde(default, deserialize_with = "null_default")]
    pub build_image: bool,
    #[serde(default, deserialize_with = "null_default")]
    pub ports: Vec<Port>,
    #[serde(default, deserialize_with = "null_default")]
    pub env: Vec<EnvEntry>,
    #[serde(default, deserialize_with = "null_default")]
    pub command: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub args: Vec<String>,
    #[serde(default)]
    pub custom_service_specs: Option<CustomServiceSpecs>,
    #[serde(default)]
    pub agreed_machine_image: Option<AgreedMachineImage>,
    /// The service's public URL (the API spells it `urlPrewiew`).
    #[serde(default, rename = "urlPrewiew", alias = "urlPreview")]
    pub url_preview: Option<String>,
    #[serde(default)]
    pub health_check: Option<DeployedHealthCheck>,
    #[serde(default)]
    pub autoscaling_rules: Option<Value>,
}

impl DeployedService {
    /// The request form of this service, to resend it unchanged in an update (updates carry
    /// the full configuration). Private-image credentials are not reported back by the API
    /// and must be added by the caller.
    pub fn to_config(&self) -> ComputeService {
        ComputeService {
            name: self.name.clone(),
            image: self.image.clone(),
            tag: self.tag.clone(),
            private_image_config: None,
            service_count: self.service_count,
            build_image: self.build_image,
            ports: self.ports.clone(),
            env: self.env.clone(),
            command: self.command.clone(),
            args: self.args.clone(),
            akash_machine_image_name: self
                .agreed_machine_image
                .as_ref()
                .and_then(|m| m.machine_type.clone())
                .unwrap_or_default(),
            custom_service_specs: self.custom_service_specs.clone(),
            health_check: self.health_check.as_ref().and_then(|h| {
                Some(HealthCheck {
                    path: h.path.clone()?,
                    port: h.port.as_ref()?.container_port,
                })
            }),
            autoscaling_rules: self.autoscaling_rules.clone(),
            template_id: None,
        }
    }
}

/// A compute deployment (`ComputeDeployment`; the fields bosun reads).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComputeDeployment {
    #[serde(rename = "_id")]
    pub id: String,
    /// `DEPLOY` or `UPDATE`.
    #[serde(default, rename = "type")]
    pub deployment_type: Option<String>,
    pub status: ComputeDeploymentStatus,
    #[serde(default, deserialize_with = "id_or_object")]
    pub compute_instance: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub services: Vec<DeployedService>,
    #[serde(default, rename = "urlPrewiew", alias = "urlPreview")]
    pub url_preview: Option<String>,
    #[serde(default)]
    pub topic: Option<String>,
    /// Deployment logs: `[{time, log: [lines]}]` (a `log` string is read as one line).
    #[serde(default, deserialize_with = "null_default")]
    pub logs: Vec<Value>,
}

impl ComputeDeployment {
    /// The log lines, oldest first.
    pub fn log_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for entry in &self.logs {
            match entry.get("log") {
                Some(Value::String(s)) => out.push(s.clone()),
                Some(Value::Array(lines)) => {
                    out.extend(lines.iter().filter_map(Value::as_str).map(str::to_owned))
                }
                _ => {}
            }
        }
        out
    }

    /// Why a `Failed` deployment failed (its last log line); `None` unless it failed.
    pub fn failure_reason(&self) -> Option<String> {
        if self.status != ComputeDeploymentStatus::Failed {
            return None;
        }
        Some(
            self.log_lines()
                .into_iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map_or_else(|| "Failed".to_string(), |l| format!("Failed: {l}")),
        )
    }

    /// Replicas per service name.
    pub fn replicas(&self) -> BTreeMap<String, u32> {
        self.services
            .iter()
            .map(|s| (s.name.clone(), s.service_count))
            .collect()
    }

    /// The full service list in request form (see [`DeployedService::to_config`]).
    pub fn service_configs(&self) -> Vec<ComputeService> {
        self.services
            .iter()
            .map(DeployedService::to_config)
            .collect()
    }
}

/// A compute project (`ComputeProject`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComputeProject {
    #[serde(rename = "_id")]
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// The API spells it `proivder`.
    #[serde(default, rename = "proivder", alias = "provider")]
    pub provider: Option<String>,
    #[serde(default)]
    pub state: Option<ProjectState>,
    #[serde(default, deserialize_with = "id_or_object")]
    pub organization: Option<String>,
}

/// What a delete did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deleted {
    Done,
    /// It was not there (404).
    AlreadyGone,
}

// ---------------------------------------------------------------------------------------------
// Response wrappers, one per endpoint shape
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct ProjectsPage {
    #[serde(default, deserialize_with = "null_default")]
    projects: Vec<Project>,
}

/// `GET /v1/project/{id}/deployments`: the SDK reads a bare array; a `{deployments}` wrapper
/// is accepted too in case the server wraps it.
#[derive(Deserialize)]
#[serde(untagged)]
enum DeploymentsPage {
    Bare(Vec<Deployment>),
    Wrapped { deployments: Vec<Deployment> },
}

impl DeploymentsPage {
    fn into_vec(self) -> Vec<Deployment> {
        match self {
            DeploymentsPage::Bare(v) | DeploymentsPage::Wrapped { deployments: v } => v,
        }
    }
}

#[derive(Deserialize)]
struct DeploymentWrapper {
    deployment: Deployment,
}

#[derive(Deserialize)]
struct EnvironmentsWrapper {
    #[serde(default, deserialize_with = "null_default")]
    result: Vec<DeploymentEnvironment>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvironmentVariablesWrapper {
    #[serde(default, deserialize_with = "null_default")]
    environment_variables: Vec<EnvironmentVariable>,
}

#[derive(Deserialize)]
struct UpdatedWrapper {
    updated: EnvironmentVariable,
}

#[derive(Deserialize)]
struct DomainsWrapper {
    #[serde(default, deserialize_with = "null_default")]
    domains: Vec<Domain>,
}

#[derive(Deserialize)]
struct DomainWrapper {
    domain: Domain,
}

#[derive(Deserialize)]
struct CdnRecordsWrapper {
    #[serde(default, deserialize_with = "null_default")]
    records: CdnRecords,
}

#[derive(Deserialize)]
struct InstanceWrapper {
    instance: ComputeInstance,
}

#[derive(Deserialize)]
struct InstancesWrapper {
    #[serde(default, deserialize_with = "null_default")]
    instances: Vec<ComputeInstance>,
}

#[derive(Deserialize)]
struct ComputeDeploymentWrapper {
    deployment: ComputeDeployment,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ComputeProjectsWrapper {
    #[serde(default, deserialize_with = "null_default")]
    compute_projects: Vec<ComputeProject>,
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Words that mark a 400 as a billing or plan limit rather than a bad request.
const QUOTA_WORDS: &[&str] = &[
    "balance",
    "quota",
    "insufficient",
    "not enough funds",
    "overdue",
    "subscription",
    "limit reached",
    "limit exceeded",
    "upgrade your plan",
    "payment",
];

/// The `message` of an error body: a string, or the first of a list (NestJS validation).
fn said_in(body: &str) -> (Option<String>, Vec<String>) {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(body) else {
        return (None, Vec::new());
    };
    let read = |v: &Value| -> Vec<String> {
        match v {
            Value::String(s) => vec![s.trim().to_string()],
            Value::Array(items) => items
                .iter()
                .filter_map(Value::as_str)
                .map(|s| s.trim().to_string())
                .collect(),
            _ => Vec::new(),
        }
    };
    let mut all: Vec<String> = map
        .get("message")
        .map(read)
        .unwrap_or_default()
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    if all.is_empty() {
        all = map
            .get("error")
            .map(read)
            .unwrap_or_default()
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
    }
    let joined = (!all.is_empty()).then(|| all.join("; "));
    (joined, all)
}

/// The field a validation message names, in the class-validator style the API's messages
/// use (`"organizationId must be a string"`, `"services.0.serviceCount must not be less than
/// 1"`, `"property foo should not exist"`). This is a heuristic: the API documents no field.
fn field_in(message: &str) -> Option<String> {
    let mut words = message.split_whitespace();
    let mut first = words.next()?;
    let mut second = words.next()?;
    if first == "property" {
        first = second;
        second = words.next()?;
    }
    let ident = first
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']'))
        && first.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    (ident && matches!(second, "must" | "should")).then(|| first.to_string())
}

/// Classifies a Spheron error answer (pure, so every shape is unit-tested). The body may be
/// `{message}`, `{message: [..]}`, `{error}`, empty, or not JSON at all.
pub fn error_from(status: StatusCode, body: &str) -> PlatformError {
    let (message, all) = said_in(body);
    let code = status.as_u16();
    let said = message
        .clone()
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
    let lower = said.to_ascii_lowercase();
    let quota = QUOTA_WORDS.iter().any(|w| lower.contains(w));
    let mut kind = kind_for_status(status);
    if quota && matches!(code, 400 | 403 | 422) {
        kind = ErrorKind::QuotaExceeded;
    }
    let field = if kind == ErrorKind::Invalid {
        all.iter().find_map(|m| field_in(m))
    } else {
        None
    };
    let mut text = match (code, kind) {
        (401, _) => format!(
            "the API token was refused (401 Unauthorized: wrong, expired or revoked token): {said}"
        ),
        (_, ErrorKind::QuotaExceeded) => {
            format!("the organization's plan, balance or usage limit does not allow this ({code}): {said}")
        }
        (403, _) => format!(
            "the API token is refused for this (403 Forbidden): it is invalid, or scoped to another organization: {said}"
        ),
        (404, _) => format!("not found (404): {said}"),
        (409, _) => format!("conflicts with the current state (409): {said}"),
        _ => format!("answered {code}: {said}"),
    };
    if let Some(f) = &field {
        text = format!("{text} (field `{f}`)");
    }
    let mut err = PlatformError::new(kind, format!("spheron {text}"));
    err.status = Some(code);
    err.field = field;
    err
}

/// Turns a non-2xx answer into a typed error naming the operation.
async fn check(operation: &str, response: Response) -> Result<Response, PlatformError> {
    check_answer(response, |status, body| {
        name_operation("spheron", operation, error_from(status, body))
    })
    .await
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

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

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

    fn workspaces(&self) -> Option<&dyn crate::platform::drivers::WorkspaceDriver> {
        Some(self)
    }

    fn service_scales(&self) -> Option<&dyn crate::platform::drivers::ServiceScaleDriver> {
        Some(self)
    }

    fn domains(&self) -> Option<&dyn crate::platform::drivers::DomainDriver> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn from<T: DeserializeOwned>(v: Value) -> T {
        serde_json::from_value(v).expect("parse")
    }

    #[test]
    fn deployment_statuses_cover_the_enum() {
        for (text, status, terminal, success) in [
            ("PreQueue", DeploymentStatus::PreQueue, false, false),
            ("Queued", DeploymentStatus::Queued, false, false),
            ("Pending", DeploymentStatus::Pending, false, false),
            (
                "AuthorizationNeeded",
                DeploymentStatus::AuthorizationNeeded,
                false,
                false,
            ),
            ("Killing", DeploymentStatus::Killing, false, false),
            ("Deployed", DeploymentStatus::Deployed, true, true),
            ("Failed", DeploymentStatus::Failed, true, false),
            ("Canceled", DeploymentStatus::Canceled, true, false),
            ("TimedOut", DeploymentStatus::TimedOut, true, false),
        ] {
            let parsed: DeploymentStatus = from(json!(text));
            assert_eq!(parsed, status);
            assert_eq!(parsed.is_terminal(), terminal, "{text}");
            assert_eq!(parsed.is_success(), success, "{text}");
            assert_eq!(parsed.as_str(), text);
            assert_eq!(serde_json::to_value(&parsed).expect("json"), json!(text));
        }
        let odd = DeploymentStatus::parse("Archived");
        assert_eq!(odd, DeploymentStatus::Unknown("Archived".into()));
        assert!(!odd.is_terminal() && !odd.is_success());
        assert_eq!(odd.to_string(), "Archived");
        assert!(DeploymentStatus::AuthorizationNeeded.needs_authorization());
    }

    #[test]
    fn compute_statuses_and_states() {
        assert!(ComputeDeploymentStatus::parse("Deployed").is_success());
        assert!(ComputeDeploymentStatus::parse("Deprecated-Provider").is_terminal());
        assert!(!ComputeDeploymentStatus::parse("Queued").is_terminal());
        assert_eq!(
            InstanceState::parse("Failed-start"),
            InstanceState::FailedStart
        );
        assert_eq!(
            InstanceState::parse("Sleeping"),
            InstanceState::Unknown("Sleeping".into())
        );
        assert_eq!(ProjectState::Archived.as_str(), "ARCHIVED");
    }

    #[test]
    fn errors_map_to_kinds_and_say_why() {
        let e = error_from(StatusCode::UNAUTHORIZED, r#"{"message":"Unauthorized"}"#);
        assert_eq!(e.kind, ErrorKind::Unauthorized);
        assert!(e.message.contains("token was refused"), "{}", e.message);
        let e = error_from(
            StatusCode::FORBIDDEN,
            r#"{"message":"You don't have access to this organization"}"#,
        );
        assert_eq!(e.kind, ErrorKind::Forbidden);
        assert!(
            e.message.contains("scoped to another organization"),
            "{}",
            e.message
        );
        assert!(e.message.contains("access to this organization"));
        assert_eq!(
            error_from(
                StatusCode::NOT_FOUND,
                r#"{"message":"Deployment not found"}"#
            )
            .kind,
            ErrorKind::NotFound
        );
        let e = error_from(StatusCode::CONFLICT, r#"{"message":"busy"}"#);
        assert_eq!(e.kind, ErrorKind::Conflict);
        assert_eq!(
            error_from(StatusCode::PAYMENT_REQUIRED, "").kind,
            ErrorKind::QuotaExceeded
        );
        assert_eq!(
            error_from(StatusCode::BAD_GATEWAY, "<html>").kind,
            ErrorKind::Unavailable
        );
        assert_eq!(
            error_from(StatusCode::TOO_MANY_REQUESTS, "").kind,
            ErrorKind::RateLimited
        );
    }

    #[test]
    fn balance_messages_are_quota_errors() {
        let e = error_from(
            StatusCode::BAD_REQUEST,
            r#"{"message":"Insufficient balance in the organization wallet"}"#,
        );
        assert_eq!(e.kind, ErrorKind::QuotaExceeded);
        assert!(!e.is_transient());
        assert_eq!(e.field, None);
        let e = error_from(
            StatusCode::FORBIDDEN,
            r#"{"message":"Subscription limit reached for domains"}"#,
        );
        assert_eq!(e.kind, ErrorKind::QuotaExceeded);
    }

    #[test]
    fn validation_errors_name_the_field() {
        let e = error_from(
            StatusCode::BAD_REQUEST,
            r#"{"message":"services.0.serviceCount must not be less than 1"}"#,
        );
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert_eq!(e.field.as_deref(), Some("services.0.serviceCount"));
        assert!(e.message.contains("`services.0.serviceCount`"));
        // NestJS lists, `property ... should not exist`, `{error}` only, not JSON.
        let e = error_from(
            StatusCode::BAD_REQUEST,
            r#"{"statusCode":400,"message":["property foo should not exist","name must be a string"],"error":"Bad Request"}"#,
        );
        assert_eq!(e.field.as_deref(), Some("foo"));
        assert!(e.message.contains("name must be a string"), "{}", e.message);
        let e = error_from(StatusCode::UNPROCESSABLE_ENTITY, r#"{"error":"bad thing"}"#);
        assert!(e.message.contains("bad thing"));
        assert_eq!(e.field, None);
        let e = error_from(StatusCode::BAD_REQUEST, "not json");
        assert!(e.message.contains("Bad Request"), "{}", e.message);
        // Sentences are not fields.
        assert_eq!(field_in("Deployment must be finished first"), None);
        assert_eq!(field_in("Invalid organization"), None);
    }

    #[test]
    fn token_scope_and_organization_shapes() {
        let s: TokenScope = from(json!({
            "user": {"id": "u1", "username": "ann", "name": "Ann", "email": "a@b.c"},
            "organizations": [{"id": "65f000000000000000000001", "name": "Acme",
                "username": "acme", "appType": "compute"}]
        }));
        assert_eq!(s.organizations[0].app_type.as_deref(), Some("compute"));
        // A bare organization, and a master organization with products.
        let o: Organization = from(json!({"_id": "o1", "profile": {"name": "Acme",
            "username": "acme", "image": null}, "overdue": true, "appType": "compute",
            "users": ["u1"]}));
        assert!(o.overdue);
        assert_eq!(o.profile.name.as_deref(), Some("Acme"));
        let m: Organization = from(json!({"_id": "m1", "profile": {"name": "M"},
            "compute": {"_id": "c1", "profile": {"name": "C"}, "overdue": null}}));
        assert_eq!(m.compute.map(|c| c.id), Some("c1".to_string()));
    }

    #[test]
    fn project_shapes() {
        // `GET /v1/project/{id}` is bare; configuration as object or one-element list;
        // organization as id or object; environments of variables as ids or objects.
        let p: Project = from(json!({"_id": "p1", "name": "site", "type": "STANDARD",
            "url": "https://github.com/acme/site", "organization": {"_id": "o1"},
            "state": "MAINTAINED", "configuration": [{"framework": "react", "nodeVersion": "V_16",
            "buildCommand": "npm run build", "installCommand": "npm i", "workspace": "",
            "publishDir": "build"}],
            "environmentVariables": [{"_id": "v1", "name": "A", "value": "1",
                "deploymentEnvironments": ["e1", {"_id": "e2", "name": "Development"}]}],
            "deploymentEnvironments": [{"_id": "e1", "name": "Production", "branches": ["main"],
                "status": "ACTIVE", "protocol": "ipfs", "isFree": true}],
            "domains": ["d1"]}));
        assert_eq!(p.organization.as_deref(), Some("o1"));
        assert_eq!(
            p.configuration.as_ref().map(|c| c.framework.as_str()),
            Some("react")
        );
        let refs = &p.environment_variables[0].deployment_environments;
        assert!(refs[0].matches("e1") && refs[1].matches("Development"));
        assert_eq!(
            p.deployment_environments[0].status,
            Some(DeploymentEnvironmentStatus::Active)
        );
        let page: ProjectsPage = from(json!({"projects": [{"_id": "p1", "name": "x"}]}));
        assert_eq!(page.projects[0].state, ProjectState::Maintained);
        let env: EnvironmentsWrapper =
            from(json!({"result": [{"_id": "e1", "name": "Production"}]}));
        assert_eq!(env.result[0].name, "Production");
    }

    #[test]
    fn deployment_shapes() {
        let w: DeploymentWrapper = from(json!({"deployment": {"_id": "d1", "status": "Failed",
            "failedMessage": "", "logs": [{"time": "t", "log": "npm ERR! missing script"}],
            "project": {"_id": "p1", "name": "site"}}}));
        assert_eq!(w.deployment.project.as_deref(), Some("p1"));
        assert_eq!(
            w.deployment.failure_reason().as_deref(),
            Some("Failed: npm ERR! missing script")
        );
        let bare: DeploymentsPage = from(json!([{"_id": "d1", "status": "Deployed"}]));
        assert_eq!(bare.into_vec().len(), 1);
        let wrapped: DeploymentsPage =
            from(json!({"deployments": [{"_id": "d1", "status": "Queued"}]}));
        assert_eq!(wrapped.into_vec()[0].status, DeploymentStatus::Queued);
        let started: DeploymentStarted = from(json!({"success": true, "message": "ok",
            "topic": "t", "deploymentId": "d1", "projectId": "p1",
            "deployment": {"_id": "d1", "status": "PreQueue"}}));
        assert_eq!(started.project_id.as_deref(), Some("p1"));
        let c: CancelResult = from(json!({"message": "m", "canceled": true, "killing": true}));
        assert!(c.canceled && c.killing);
        let ok: Deployment = from(json!({"_id": "d", "status": "Deployed"}));
        assert_eq!(ok.failure_reason(), None);
    }

    #[test]
    fn variable_and_domain_shapes() {
        let w: EnvironmentVariablesWrapper = from(json!({"environmentVariables":
            [{"_id": "v1", "name": "A", "value": "1", "deploymentEnvironments": []}]}));
        assert_eq!(w.environment_variables[0].id, "v1");
        let u: UpdatedWrapper = from(json!({"updated": {"_id": "v1", "name": "A", "value": "2"}}));
        assert_eq!(u.updated.value, "2");
        let d: DomainWrapper = from(json!({"domain": {"_id": "x", "name": "www.acme.dev",
            "link": "https://l", "type": "subdomain", "verified": false, "projectId": "p1",
            "deploymentEnvironmentIds": ["e1"], "appType": 1}}));
        assert_eq!(d.domain.domain_type, DomainType::Subdomain);
        let list: DomainsWrapper = from(json!({"domains": []}));
        assert!(list.domains.is_empty());
        let v: DomainVerification = from(json!({"success": false, "domain": {"_id": "x",
            "name": "acme.dev", "type": "domain", "verified": true}}));
        assert!(v.verified());
        let r: CdnRecordsWrapper =
            from(json!({"records": {"recordIpv4V2": "1.2.3.4", "recordCnameV2": "cdn.x"}}));
        let apex: Domain = from(json!({"_id": "a", "name": "acme.dev", "type": "domain"}));
        assert_eq!(
            dns_records(&apex, &r.records),
            vec![DnsRecord {
                record_type: "A",
                name: "acme.dev".into(),
                value: "1.2.3.4".into()
            }]
        );
        assert_eq!(dns_records(&d.domain, &r.records)[0].record_type, "CNAME");
        let ens: Domain = from(json!({"_id": "e", "name": "acme.eth", "type": "ens-domain"}));
        assert!(dns_records(&ens, &r.records).is_empty());
    }

    #[test]
    fn compute_shapes() {
        let i: InstanceWrapper = from(json!({"success": true, "instance": {"_id": "i1",
            "state": "Active", "name": "web", "deployments": ["d1", "d2"],
            "computeProject": "cp1", "activeDeployment": "d2", "type": "ON_DEMAND",
            "region": "any"}, "topupReport": {"dailyUsage": 1, "usedTillNow": 2}}));
        assert_eq!(i.instance.active_deployment.as_deref(), Some("d2"));
        let list: InstancesWrapper = from(json!({"instances": [{"_id": "i1", "state": "Closed",
            "defaultDailyTopup": 0, "leasePricePerBlock": 0}]}));
        assert_eq!(list.instances[0].state, InstanceState::Closed);
        let created: InstanceDeployment = from(json!({"computeProjectId": "cp1",
            "computeInstanceId": "i1", "computeDeploymentId": "d1", "topic": "t"}));
        assert_eq!(created.compute_deployment_id, "d1");
        let d: ComputeDeploymentWrapper = from(json!({"deployment": {"_id": "d2",
            "type": "UPDATE", "status": "Deployed", "computeInstance": "i1",
            "services": [{"name": "web", "image": "nginx", "tag": "1", "serviceCount": 3,
                "ports": [{"containerPort": 80, "exposedPort": 80}],
                "env": [{"value": "A=1", "isSecret": false}], "command": [], "args": [],
                "agreedMachineImage": {"machineType": "Ventus Nano 1", "cpu": 1},
                "urlPrewiew": "web.provider.example", "healthCheck": {"path": "/",
                "port": {"containerPort": 80, "exposedPort": 80}, "status": "Active"}}],
            "urlPrewiew": "web.provider.example"}, "liveLogs": []}));
        assert_eq!(d.deployment.replicas().get("web"), Some(&3));
        let config = d.deployment.service_configs();
        assert_eq!(config[0].akash_machine_image_name, "Ventus Nano 1");
        assert_eq!(
            config[0].health_check,
            Some(HealthCheck {
                path: "/".into(),
                port: 80
            })
        );
        assert_eq!(config[0].env[0].key_value(), ("A", "1"));
        let p: ComputeProjectsWrapper = from(json!({"computeProjects": [{"_id": "cp1",
            "name": "shop", "proivder": "DOCKERHUB", "state": "MAINTAINED"}]}));
        assert_eq!(p.compute_projects[0].provider.as_deref(), Some("DOCKERHUB"));
    }

    #[test]
    fn request_bodies_use_the_wire_names() {
        let s = ComputeService {
            name: "web".into(),
            image: "nginx".into(),
            tag: "1".into(),
            private_image_config: Some(PrivateImageConfig {
                docker_registry_url: "r".into(),
                docker_user_name: "u".into(),
                docker_password_or_token: "s3cr3t".into(),
            }),
            service_count: 2,
            build_image: false,
            ports: vec![],
            env: vec![EnvEntry::new("A", "1", true)],
            command: vec![],
            args: vec![],
            akash_machine_image_name: "Ventus Nano 1".into(),
            custom_service_specs: None,
            health_check: None,
            autoscaling_rules: None,
            template_id: None,
        };
        let v = serde_json::to_value(&s).expect("json");
        assert_eq!(v["serviceCount"], 2);
        assert_eq!(v["akashMachineImageName"], "Ventus Nano 1");
        assert_eq!(v["privateImageConfig"]["dockerRegistryURL"], "r");
        assert_eq!(v["env"][0], json!({"value": "A=1", "isSecret": true}));
        assert!(!format!("{s:?}").contains("s3cr3t"));
        let d = NewDomain {
            name: "acme.dev".into(),
            domain_type: DomainType::Domain,
            link: None,
            deployment_environments: Some(vec!["Production".into()]),
        };
        assert_eq!(
            serde_json::to_value(&d).expect("json"),
            json!({"name": "acme.dev", "type": "domain", "deploymentEnvironments": ["Production"]})
        );
    }

    #[test]
    fn path_segments_cannot_escape() {
        assert_eq!(seg("65f0"), "65f0");
        assert_eq!(seg("a/../b?x#y"), "a%2F..%2Fb%3Fx%23y");
    }
}
