//! The Spheron wire types: the request and response bodies the client sends and reads, as
//! `shared/research/spheron.md` rebuilt them, the response wrappers (one per endpoint shape)
//! and the lenient readers they use.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

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
impl crate::core::locate::Identified<String> for Project {
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
impl crate::core::locate::Identified<String> for ComputeInstance {
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

// ---------------------------------------------------------------------------------------------
// Response wrappers, one per endpoint shape
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
pub(super) struct ProjectsPage {
    #[serde(default, deserialize_with = "null_default")]
    pub(super) projects: Vec<Project>,
}

/// `GET /v1/project/{id}/deployments`: the SDK reads a bare array; a `{deployments}` wrapper
/// is accepted too in case the server wraps it.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum DeploymentsPage {
    Bare(Vec<Deployment>),
    Wrapped { deployments: Vec<Deployment> },
}

impl DeploymentsPage {
    pub(super) fn into_vec(self) -> Vec<Deployment> {
        match self {
            DeploymentsPage::Bare(v) | DeploymentsPage::Wrapped { deployments: v } => v,
        }
    }
}

#[derive(Deserialize)]
pub(super) struct DeploymentWrapper {
    pub(super) deployment: Deployment,
}

#[derive(Deserialize)]
pub(super) struct EnvironmentsWrapper {
    #[serde(default, deserialize_with = "null_default")]
    pub(super) result: Vec<DeploymentEnvironment>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct EnvironmentVariablesWrapper {
    #[serde(default, deserialize_with = "null_default")]
    pub(super) environment_variables: Vec<EnvironmentVariable>,
}

#[derive(Deserialize)]
pub(super) struct UpdatedWrapper {
    pub(super) updated: EnvironmentVariable,
}

#[derive(Deserialize)]
pub(super) struct DomainsWrapper {
    #[serde(default, deserialize_with = "null_default")]
    pub(super) domains: Vec<Domain>,
}

#[derive(Deserialize)]
pub(super) struct DomainWrapper {
    pub(super) domain: Domain,
}

#[derive(Deserialize)]
pub(super) struct CdnRecordsWrapper {
    #[serde(default, deserialize_with = "null_default")]
    pub(super) records: CdnRecords,
}

#[derive(Deserialize)]
pub(super) struct InstanceWrapper {
    pub(super) instance: ComputeInstance,
}

#[derive(Deserialize)]
pub(super) struct InstancesWrapper {
    #[serde(default, deserialize_with = "null_default")]
    pub(super) instances: Vec<ComputeInstance>,
}

#[derive(Deserialize)]
pub(super) struct ComputeDeploymentWrapper {
    pub(super) deployment: ComputeDeployment,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ComputeProjectsWrapper {
    #[serde(default, deserialize_with = "null_default")]
    pub(super) compute_projects: Vec<ComputeProject>,
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
}
