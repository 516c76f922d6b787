//! `Workspace`: one deployed unit of code on a provider.

use super::common::{
    conditions_schema, DeletionPolicy, ManagementPolicy, ProviderRef, SecretKeyRef,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One deployed unit of code on a provider: a Codesphere workspace, a Devopness application,
/// a Spheron deployment or compute instance, or a Puppet Code Manager environment.
#[derive(CustomResource, KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "bosun.dev",
    version = "v1alpha1",
    kind = "Workspace",
    namespaced,
    status = "WorkspaceStatus",
    shortname = "bws",
    category = "bosun",
    doc = "A deployed unit of code on a provider, kept in line with this spec.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Provider",
        type_ = "string",
        json_path = ".spec.providerRef.name"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.replicas"),
    printcolumn(
        name = "Revision",
        type_ = "string",
        json_path = ".status.deployedRevision"
    ),
    printcolumn(
        name = "URL",
        type_ = "string",
        json_path = ".status.url",
        priority = 1
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("!has(oldSelf.externalId) || (has(self.externalId) && self.externalId == oldSelf.externalId)").message("spec.externalId cannot change or be removed once set: create a new Workspace to point at another platform object"))]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceSpec {
    /// The Provider (or ClusterProvider) this workspace lives on. Cannot change.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.providerRef cannot change: create a new Workspace on the other provider"))]
    pub provider_ref: ProviderRef,
    /// The code to deploy: a repository and exactly one of branch, tag or commit.
    pub source: Source,
    /// Name of the object at the platform. Defaults to `<namespace>-<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub external_name: Option<String>,
    /// The platform's plan (machine size) by name or id, for example `Micro` or `8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// How many replicas to run (at least 1). `kubectl scale` sets this.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub replicas: i32,
    /// Environment variables: literal values or values from Secrets in this namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "env_schema")]
    pub env: Vec<EnvVar>,
    /// The desired outcome of the platform's pipeline (prepare, test, run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<PipelineSpec>,
    /// How a new source revision is rolled out: `InPlace` (default) or `BlueGreen`.
    #[serde(default)]
    pub strategy: RolloutStrategy,
    /// `Delete` (default) removes the platform object with this Workspace; `Orphan` leaves it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// `Manage` (default) creates, updates and heals; `Observe` only reports.
    #[serde(default)]
    pub management_policy: ManagementPolicy,
    /// Adopt this existing platform object instead of creating one. Cannot change once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub external_id: Option<String>,
    /// Adopt an existing platform object whose name is `externalName` instead of creating a new
    /// one (default false: a name clash is reported, never silently taken over).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopt_by_name: bool,
    // The platform sections are boxed: a Workspace names one platform at most, and inline the
    // four would add 472 bytes to every cached Workspace (4.5 MiB at 10,000; docs/benchmarks.md).
    /// Codesphere-specific settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codesphere: Option<Box<CodesphereWorkspace>>,
    /// Devopness-specific settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devopness: Option<Box<DevopnessWorkspace>>,
    /// Spheron-specific settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spheron: Option<Box<SpheronWorkspace>>,
    /// Puppet Enterprise Code Manager-specific settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub puppet_code_manager: Option<Box<CodeManagerWorkspace>>,
}

impl WorkspaceSpec {
    /// The names of the variables whose value comes from a Secret: never shown in a plan or
    /// an Event.
    pub fn secret_backed_env(&self) -> Vec<String> {
        self.env
            .iter()
            .filter(|e| e.value_from.is_some())
            .map(|e| e.name.clone())
            .collect()
    }
}

fn default_replicas() -> i32 {
    1
}

/// The code to deploy.
#[derive(KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[x_kube(validation = Rule::new("[has(self.branch), has(self.tag), has(self.commit)].filter(x, x).size() == 1").message("spec.source needs exactly one of branch, tag or commit"))]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// Git repository URL, for example `https://github.com/acme/shop.git`.
    #[schemars(length(min = 1, max = 2048))]
    pub repository: String,
    /// Branch to track.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub branch: Option<String>,
    /// Tag to deploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub tag: Option<String>,
    /// Commit SHA to deploy (7 to 40 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9a-f]{7,40}$')").message("spec.source.commit must be 7 to 40 lowercase hex digits"))]
    #[schemars(length(max = 40))]
    pub commit: Option<String>,
}

impl Source {
    /// The one ref the spec names (the schema guarantees exactly one).
    pub fn git_ref(&self) -> GitRef<'_> {
        match (&self.branch, &self.tag, &self.commit) {
            (Some(b), _, _) => GitRef::Branch(b),
            (None, Some(t), _) => GitRef::Tag(t),
            (None, None, Some(c)) => GitRef::Commit(c),
            (None, None, None) => GitRef::Branch("main"),
        }
    }
}

/// A source ref, by kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GitRef<'a> {
    Branch(&'a str),
    Tag(&'a str),
    Commit(&'a str),
}

impl std::fmt::Display for GitRef<'_> {
    /// `branch:<name>`, `tag:<name>` or `commit:<sha>`, as `status.sourceRef` records it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GitRef::Branch(s) => write!(f, "branch:{s}"),
            GitRef::Tag(s) => write!(f, "tag:{s}"),
            GitRef::Commit(s) => write!(f, "commit:{s}"),
        }
    }
}

impl GitRef<'_> {
    /// The ref as text, without its kind.
    pub fn name(&self) -> &str {
        match self {
            GitRef::Branch(s) | GitRef::Tag(s) | GitRef::Commit(s) => s,
        }
    }
}

/// An environment variable.
#[derive(KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[x_kube(validation = Rule::new("has(self.value) != has(self.valueFrom)").message("each env entry needs exactly one of value or valueFrom"))]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    /// Variable name: a letter or `_`, then letters, digits, `_`, `.` or `-`.
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z_][A-Za-z0-9_.-]*$')").message("env names start with a letter or _ and contain only letters, digits, _, . and -"))]
    #[schemars(length(min = 1, max = 255))]
    pub name: String,
    /// A literal value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Where to read the value from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

/// The source of an environment variable's value.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnvVarSource {
    /// A key of a Secret in the Workspace's namespace. Changes to the Secret are rolled out at once.
    pub secret_key_ref: SecretKeyRef,
}

fn env_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = <Vec<EnvVar>>::json_schema(generator);
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["name"]),
    );
    schema.insert("maxItems".into(), 500.into());
    schema
}

/// The desired outcome of the platform pipeline.
#[derive(KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PipelineSpec {
    /// Run the prepare stage for each new source revision (default true).
    #[serde(default = "default_true")]
    pub prepare: bool,
    /// Run the test stage after prepare (default false).
    #[serde(default)]
    pub test: bool,
    /// `Running` (default) keeps the run stage up; `Stopped` keeps it stopped.
    #[serde(default)]
    pub run: RunState,
    /// How long one stage may take before the Workspace is reported `Stalled`, as a duration
    /// such as `15m` (default `15m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(ms|s|m|h))+$')").message("spec.pipeline.stageTimeout must be a duration such as 90s, 15m or 1h30m"))]
    pub stage_timeout: Option<String>,
}

impl Default for PipelineSpec {
    fn default() -> Self {
        PipelineSpec {
            prepare: true,
            test: false,
            run: RunState::Running,
            stage_timeout: None,
        }
    }
}

fn default_true() -> bool {
    true
}

/// The desired state of the run stage.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum RunState {
    /// The application runs.
    #[default]
    Running,
    /// The application is stopped.
    Stopped,
}

/// How a new source revision reaches users.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum RolloutStrategy {
    /// Update the running object in place.
    #[default]
    InPlace,
    /// Build a candidate next to the current object, switch the domain routes when it runs,
    /// then delete the old one.
    BlueGreen,
}

/// Codesphere settings.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CodesphereWorkspace {
    /// Team id (default: the Provider's `defaults.teamId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub team_id: Option<i64>,
    /// Whether the repository is private (Codesphere then uses the team's git credentials).
    #[serde(default)]
    pub private_repo: bool,
    /// Base image of the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_image: Option<String>,
    /// Restrict the dev domain to team members (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restricted: Option<bool>,
    /// Persistent storage in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub storage_mib: Option<i64>,
    /// Name of a VPN configuration of the team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpn_config: Option<String>,
    /// The `ci.yml` profile to run the pipeline with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

/// Devopness settings.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DevopnessWorkspace {
    /// Environment id (default: the Provider's `defaults.environmentId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub environment_id: Option<i64>,
    /// Id of the source-provider credential that can read the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub credential_id: Option<i64>,
    /// Programming language of the application, for example `php` or `nodejs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub programming_language: Option<String>,
    /// Version of the language runtime, for example `8.3` or `20`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_version: Option<String>,
    /// Framework of the application, for example `laravel` or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework: Option<String>,
    /// Directory the web server serves, relative to the repository root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_directory: Option<String>,
    /// Pipeline to run deployments with (default: the application's deploy pipeline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub pipeline_id: Option<i64>,
    /// Server ids to deploy to (default: every server of the environment).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<i64>,
}

/// Spheron settings.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SpheronWorkspace {
    /// Organization id (default: the Provider's `defaults.organizationId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    /// Build settings of a site deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<SpheronSite>,
    /// Run as a compute instance whose services' replica counts are `spec.replicas` and
    /// `ServiceScale`s, instead of a site deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute: Option<SpheronCompute>,
}

/// Build settings of a Spheron site.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SpheronSite {
    /// Framework preset, for example `static` or `react`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework: Option<String>,
    /// Build command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_command: Option<String>,
    /// Directory with the build output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_dir: Option<String>,
    /// Storage protocol, for example `ipfs` or `arweave`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// A Spheron compute instance.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SpheronCompute {
    /// Region, for example `any` or `us-east`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Machine image (container image) of the main service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Machine size of each replica, for example `Ventus Nano`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
}

/// Puppet Enterprise Code Manager settings.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CodeManagerWorkspace {
    /// Environment name (default: the branch name after Code Manager's naming rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Also deploy the environment's Puppetfile modules (default true).
    #[serde(default = "default_true")]
    pub deploy_modules: bool,
}

/// What bosun last observed about a workspace.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Synced`, `Reconciling` and `Stalled`.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Id of the platform object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Public URL of the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Replicas observed at the platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Label selector for the `scale` subresource (HPA, KEDA); matches nothing in the cluster,
    /// because replicas run at the platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The source revision running at the platform (commit, tag or signature).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_revision: Option<String>,
    /// The spec's source ref last rolled out, as `branch:<name>`, `tag:<name>` or `commit:<sha>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<String>,
    /// Source refs deployed before, newest first, as many as the platform keeps builds of
    /// (Devopness rolls back to a kept tag or commit instead of building it again).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub deployed_refs: Vec<String>,
    /// Pipeline stages as observed at the platform.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageStatus>,
    /// A long-running platform operation bosun started and is polling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<OperationStatus>,
    /// The last `bosun.dev/reconcile-requested-at` token handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}

/// One pipeline stage as observed at the platform.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StageStatus {
    /// Stage name (`prepare`, `test`, `run`, or the platform's own name).
    pub name: String,
    /// The platform's state for it, for example `waiting`, `running`, `success`, `failure`.
    pub state: String,
    /// Extra detail from the platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A long-running platform operation.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OperationStatus {
    /// What it is, for example `deploy` or `prepare`.
    pub kind: String,
    /// The platform's id for it (action id, deploy id), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The platform's state for it.
    pub state: String,
    /// The generation that started it (a generation never starts a second one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// When it started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When bosun gives up waiting and reports `Stalled` (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
}
