//! How the simulator renders its records as Devopness's JSON.

use super::*;

pub(super) fn fmt_ts(ts: jiff::Timestamp) -> String {
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

pub(super) fn project(d: &Data) -> Value {
    let mut p = project_relation(d);
    p["current_user_permissions"] = json!({});
    p
}

pub(super) fn environment_relation(d: &Data) -> Value {
    json!({ "id": DEFAULT_ENVIRONMENT_ID, "type": "production",
        "type_human_readable": "Production", "name": "production", "description": null,
        "created_at": d.created_at, "updated_at": d.created_at, "archived_at": null,
        "project": project_relation(d) })
}

pub(super) fn environment(d: &Data) -> Value {
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

pub(super) fn provider() -> Value {
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

pub(super) fn last_deployments(d: &Data, app_id: u64, now: Instant) -> Value {
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

pub(super) fn app_relation(d: &Data, app: &App, now: Instant) -> Value {
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

pub(super) fn vhost_relation(d: &Data, v: &VirtualHost, now: Instant) -> Value {
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

pub(super) fn vhost_full(d: &Data, v: &VirtualHost, now: Instant) -> Value {
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

pub(super) fn cert_relation(d: &Data, c: &Certificate, now: Instant) -> Value {
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

pub(super) fn cert_full(d: &Data, c: &Certificate, now: Instant) -> Value {
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

pub(super) fn app_full(d: &Data, app: &App, now: Instant) -> Value {
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

pub(super) fn action_full(d: &Data, a: &ActionRecord, now: Instant) -> Value {
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

pub(super) fn variable_json(v: &Variable) -> Value {
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
