//! Codesphere's request and answer bodies (`shared/specs/codesphere-openapi.json`): only the
//! fields bosun reads or sends.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A team, as `GET /teams` lists it (only the fields bosun reads).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Team {
    pub id: i64,
    pub name: String,
}

/// A workspace (the fields bosun reads or writes).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Workspace {
    pub id: i64,
    pub team_id: i64,
    pub name: String,
    pub plan_id: i64,
    pub replicas: i32,
    #[serde(default)]
    pub git_url: Option<String>,
    #[serde(default)]
    pub initial_branch: Option<String>,
    #[serde(default)]
    pub dev_domain: Option<String>,
    #[serde(default)]
    pub base_image: Option<String>,
    #[serde(default)]
    pub restricted: bool,
}

impl crate::core::locate::Identified for Workspace {
    fn platform_id(&self) -> i64 {
        self.id
    }
    fn platform_name(&self) -> &str {
        &self.name
    }
}

/// `POST /workspaces` body.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CreateWorkspace {
    pub team_id: i64,
    pub name: String,
    pub plan_id: i64,
    pub is_private_repo: bool,
    pub replicas: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub git_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_branch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restricted: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_mib: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vpn_config: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
}

/// `PATCH /workspaces/{id}` body: only the fields to change.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UpdateWorkspace {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
}

impl UpdateWorkspace {
    pub fn is_empty(&self) -> bool {
        self == &UpdateWorkspace::default()
    }
}

/// An environment variable.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

/// A plan from `GET /metadata/workspace-plans`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub id: i64,
    pub title: String,
    #[serde(default)]
    pub deprecated: bool,
    pub max_replicas: i32,
}

/// A pipeline stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Prepare,
    Test,
    Run,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Prepare => "prepare",
            Stage::Test => "test",
            Stage::Run => "run",
        }
    }
}

/// One element of a stage's status: one per server and replica.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StageElement {
    pub state: String,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    pub replica: String,
    pub server: String,
}

/// A domain (the fields bosun reads).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Domain {
    pub name: String,
    pub team_id: i64,
    #[serde(default)]
    pub workspaces: BTreeMap<String, Vec<i64>>,
    pub dns_entries: DnsEntries,
    pub domain_verification_status: Verification,
    pub certificate_request_status: CertificateStatus,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct DnsEntries {
    pub a: String,
    pub cname: String,
    pub txt: String,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Verification {
    pub verified: bool,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct CertificateStatus {
    pub issued: bool,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct Head {
    pub(crate) head: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RunningStatus {
    pub(crate) is_running: bool,
}
