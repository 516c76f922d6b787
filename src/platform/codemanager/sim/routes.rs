//! The HTTP API: the router, the rate-limit key middleware and the Code Manager handlers.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::sim::{bind_tls, with_sim, SimServer};

use super::render::{render_error, ApiError, ApiResult};
use super::state::environment_name;
use super::tokens::mint_token;
use super::{CodeManagerSim, WEBHOOK_TYPES};

/// Unpins the deploys of a `wait` request when it ends (also when the client goes away).
struct Pins {
    sim: CodeManagerSim,
    ids: Vec<u64>,
}

impl Drop for Pins {
    fn drop(&mut self) {
        let mut data = self.sim.data();
        for id in &self.ids {
            data.pinned.remove(id);
        }
    }
}

/// The simulator's HTTP API with the shared middleware and `/_sim/` endpoints.
pub fn router(sim: CodeManagerSim) -> Router {
    let control = sim.control.clone();
    let api = Router::new()
        .route("/code-manager/v1/deploys", post(deploys))
        .route("/code-manager/v1/deploys/status", get(deploys_status))
        .route("/code-manager/v1/webhook", post(webhook))
        .route("/rbac-api/v1/auth/token", post(mint_token))
        .with_state(sim);
    with_sim(api, control, render_error).layer(middleware::from_fn(rate_limit_key))
}

/// Serves `sim` over HTTPS on `addr` (port 0 picks a free port).
///
/// # Errors
///
/// When the address cannot be bound.
pub async fn serve(addr: SocketAddr, sim: &CodeManagerSim) -> std::io::Result<SimServer> {
    bind_tls(addr, router(sim.clone()), sim.tls_config()).await
}

/// The shared rate limiter keys on `Authorization: Bearer`; Code Manager's credential is
/// `X-Authentication` or `?token=`, so present that as the key. Handlers never read
/// `Authorization`.
async fn rate_limit_key(mut req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get("x-authentication")
        .and_then(|v| v.to_str().ok())
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .or_else(|| {
            req.uri().query().and_then(|q| {
                q.split('&')
                    .find_map(|pair| pair.strip_prefix("token="))
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
            })
        });
    if let Some(value) = token.and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok()) {
        req.headers_mut().insert(header::AUTHORIZATION, value);
    }
    next.run(req).await
}

enum Target {
    All,
    Environments(Vec<String>),
}

struct DeployRequest {
    target: Target,
    wait: bool,
    dry_run: bool,
}

impl DeployRequest {
    fn parse(body: &Value) -> ApiResult<Self> {
        let obj = body
            .as_object()
            .ok_or_else(|| ApiError::malformed("The request body must be a JSON object."))?;
        let flag = |key: &str| match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ApiError::malformed(format!("'{key}' must be a boolean."))),
        };
        let dry_run = match flag("dry-run")? {
            Some(b) => b,
            None => flag("dry_run")?.unwrap_or(false),
        };
        let wait = flag("wait")?.unwrap_or(false);
        let deploy_all = flag("deploy-all")?.unwrap_or(false);
        flag("deploy-modules")?;
        match obj.get("modules") {
            None | Some(Value::Null | Value::String(_)) => {}
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => {}
            Some(_) => return Err(ApiError::malformed(
                "'modules' must be a list of module names or a comma- or space-separated string.",
            )),
        }
        let environments = match obj.get("environments") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        ApiError::malformed("'environments' must be a list of strings.")
                    })?,
            ),
            Some(_) => {
                return Err(ApiError::malformed(
                    "'environments' must be a list of strings.",
                ))
            }
        };
        let target = match (deploy_all, environments) {
            (true, _) => Target::All,
            (false, Some(envs)) => Target::Environments(envs),
            // The CLI's `--dry-run` implies `--all`.
            (false, None) if dry_run => Target::All,
            (false, None) => {
                return Err(ApiError::malformed(
                    "Either 'deploy-all' or 'environments' must be supplied.",
                ))
            }
        };
        Ok(Self {
            target,
            wait,
            dry_run,
        })
    }
}

async fn deploys(
    State(sim): State<CodeManagerSim>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult<Response> {
    sim.authenticate(&headers, &query)?;
    let body: Value = serde_json::from_slice(&body)
        .map_err(|err| ApiError::malformed(format!("The request body is not valid JSON: {err}")))?;
    sim.data().requests.push(body.clone());
    let request = DeployRequest::parse(&body)?;
    let clock = &sim.inner.clock;

    let ids = {
        let now = Instant::now();
        let mut data = sim.data();
        data.advance(now, clock);
        data.collect_garbage(now);
        if request.dry_run {
            if data.unreachable_at(now) {
                return Err(ApiError::collect_failed());
            }
            let listed: Vec<Value> = data
                .current_environments()
                .into_iter()
                .map(|environment| json!({ "environment": environment }))
                .collect();
            return Ok(Json(listed).into_response());
        }
        let environments = match request.target {
            Target::All => {
                if data.unreachable_at(now) {
                    return Err(ApiError::collect_failed());
                }
                data.current_environments()
            }
            Target::Environments(envs) => envs,
        };
        let ids: Vec<u64> = environments
            .iter()
            .map(|environment| data.enqueue(environment, now))
            .collect();
        if !request.wait {
            let entries: Vec<Value> = ids
                .iter()
                .filter_map(|id| data.deploys.get(id))
                .map(|d| {
                    json!({
                        "environment": d.environment,
                        "id": d.id,
                        "status": d.status(now),
                    })
                })
                .collect();
            return Ok(Json(entries).into_response());
        }
        data.pinned.extend(ids.iter().copied());
        ids
    };

    let pins = Pins {
        sim: sim.clone(),
        ids: ids.clone(),
    };
    loop {
        let next = {
            let now = Instant::now();
            let mut data = sim.data();
            data.advance(now, clock);
            let next = ids
                .iter()
                .filter_map(|id| data.deploys.get(id))
                .filter_map(|d| d.next_change(now))
                .max();
            match next {
                Some(next) => next,
                None => {
                    let entries: Vec<Value> =
                        ids.iter().map(|id| data.wait_entry(*id, now)).collect();
                    drop(data);
                    drop(pins);
                    return Ok(Json(entries).into_response());
                }
            }
        };
        tokio::time::sleep_until(next).await;
    }
}

async fn deploys_status(
    State(sim): State<CodeManagerSim>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    sim.authenticate(&headers, &query)?;
    let clock = &sim.inner.clock;
    let now = Instant::now();
    let mut data = sim.data();
    data.advance(now, clock);
    data.collect_garbage(now);
    let Some(raw) = query.get("id") else {
        return Ok(Json(data.status_body(now, clock)).into_response());
    };
    let id: u64 = raw
        .parse()
        .map_err(|_| ApiError::malformed(format!("'id' must be an integer, got '{raw}'.")))?;
    // What real PE answers for an unknown or garbage-collected id is undocumented; the
    // simulator says 404 with a Code Manager error body.
    let deploy = data.deploys.get(&id).ok_or_else(|| {
        ApiError::code_manager(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("No deploy with id {id} is known (it may have been garbage-collected)."),
        )
    })?;
    Ok(Json(json!({
        "environment": deploy.environment,
        "id": deploy.id,
        "status": deploy.status(now),
        "queued-at": clock.render(deploy.queued_at),
    }))
    .into_response())
}

/// The branches a push event of webhook `kind` names (`refs/heads/` stripped; tags skipped), or
/// `None` when the payload has none of the fields that kind uses.
fn pushed_branches(kind: &str, payload: &Value) -> Option<Vec<String>> {
    fn branch(reference: &str) -> Option<String> {
        if reference.starts_with("refs/") {
            reference.strip_prefix("refs/heads/").map(str::to_owned)
        } else {
            Some(reference.to_owned())
        }
    }
    let refs: Vec<&str> = match kind {
        "github" | "gitlab" => vec![payload.get("ref")?.as_str()?],
        "bitbucket-server" | "stash" => payload
            .get("changes")
            .or_else(|| payload.get("refChanges"))?
            .as_array()?
            .iter()
            .filter_map(|c| c.get("refId").and_then(Value::as_str))
            .collect(),
        "bitbucket" => payload
            .pointer("/push/changes")?
            .as_array()?
            .iter()
            .filter_map(|c| c.get("new"))
            .filter(|n| n.get("type").and_then(Value::as_str) != Some("tag"))
            .filter_map(|n| n.get("name").and_then(Value::as_str))
            .collect(),
        "tfs-git" => payload
            .pointer("/resource/refUpdates")?
            .as_array()?
            .iter()
            .filter_map(|u| u.get("name").and_then(Value::as_str))
            .collect(),
        _ => return None,
    };
    Some(refs.into_iter().filter_map(branch).collect())
}

async fn webhook(
    State(sim): State<CodeManagerSim>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult<Response> {
    sim.authenticate(&headers, &query)?;
    let kind = query.get("type").map_or("", String::as_str);
    if !WEBHOOK_TYPES.contains(&kind) {
        // The real body (docs and fixture `errors/pejava-puppet_general_fail.json`).
        return Err(ApiError::code_manager(
            StatusCode::BAD_REQUEST,
            "unrecognized-webhook-type",
            format!("Unrecognized webhook type: '{kind}'"),
        )
        .with_details(Value::String(
            "Currently supported valid webhook types include: github gitlab stash tfs-git bitbucket"
                .to_owned(),
        )));
    }
    let payload: Value = serde_json::from_slice(&body).map_err(|err| {
        ApiError::malformed(format!("The webhook payload is not valid JSON: {err}"))
    })?;
    let branches = pushed_branches(kind, &payload)
        .ok_or_else(|| ApiError::malformed(format!("The payload is not a {kind} push event.")))?;
    let prefix = query.get("prefix").filter(|p| !p.is_empty());
    let now = Instant::now();
    let mut data = sim.data();
    data.advance(now, &sim.inner.clock);
    data.collect_garbage(now);
    for branch in branches {
        let environment = match prefix {
            Some(prefix) => environment_name(&format!("{prefix}_{branch}")),
            None => environment_name(&branch),
        };
        tracing::debug!(kind, %environment, "sim: webhook queues a deploy");
        data.enqueue(&environment, now);
    }
    Ok(Json(json!({ "status": "OK" })).into_response())
}
