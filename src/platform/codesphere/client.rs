//! The Codesphere Public API client (`shared/specs/codesphere-openapi.json`).

use crate::api::PlatformType;
use crate::platform::http::{kind_for_status, ApiClient};
use crate::platform::{Connection, Credential, ErrorKind, Platform, PlatformError};
use async_trait::async_trait;
use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// The error body of every non-2xx answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Problem {
    status: Option<u16>,
    title: Option<String>,
    detail: Option<String>,
    trace_id: Option<String>,
}

/// A team, as `GET /teams` lists it (only the fields bosun reads).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Team {
    pub id: i64,
    pub name: String,
}

/// A Codesphere account reached with a bearer token.
pub struct Codesphere {
    api: ApiClient,
    token: Credential,
}

impl Codesphere {
    pub fn new(connection: Connection) -> Result<Self, PlatformError> {
        let api = ApiClient::new(&connection, "codesphere")?;
        Ok(Codesphere {
            api,
            token: connection.credential,
        })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.api
            .request(method, path)
            .bearer_auth(self.token.expose())
    }

    async fn call<T: DeserializeOwned>(
        &self,
        operation: &str,
        request: RequestBuilder,
    ) -> Result<T, PlatformError> {
        let response = self.api.send(operation, request).await?;
        let response = check(operation, response).await?;
        response.json::<T>().await.map_err(|e| {
            PlatformError::new(
                ErrorKind::Protocol,
                format!("codesphere {operation}: unreadable answer: {e}"),
            )
        })
    }

    /// `GET /teams`: the teams the token's user belongs to.
    pub async fn list_teams(&self) -> Result<Vec<Team>, PlatformError> {
        self.call("listTeams", self.request(Method::GET, "/teams"))
            .await
    }
}

/// Turns a non-2xx answer into a typed error carrying the platform's `title`, `detail` and
/// `traceId`.
async fn check(operation: &str, response: Response) -> Result<Response, PlatformError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    let problem: Option<Problem> = serde_json::from_str(&body).ok();
    let mut kind = kind_for_status(status);
    let (title, detail, trace_id) = match &problem {
        Some(p) => (p.title.clone(), p.detail.clone(), p.trace_id.clone()),
        None => (None, None, None),
    };
    let text = [title.as_deref(), detail.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(": ");
    // Plan and quota limits come back as 400 with a telling message.
    let lower = text.to_ascii_lowercase();
    if kind == ErrorKind::Invalid
        && (lower.contains("limit") || lower.contains("quota") || lower.contains("billing"))
    {
        kind = ErrorKind::QuotaExceeded;
    }
    let shown = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let message = format!(
        "codesphere {operation} answered {}: {shown}",
        problem
            .as_ref()
            .and_then(|p| p.status)
            .unwrap_or(status.as_u16())
    );
    let mut err = PlatformError::new(kind, message);
    err.status = Some(status.as_u16());
    err.trace_id = trace_id;
    Err(err)
}

#[async_trait]
impl Platform for Codesphere {
    fn platform_type(&self) -> PlatformType {
        PlatformType::Codesphere
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
