//! How the simulator renders its records as Spheron's JSON.

use super::*;

pub(super) fn iso(ts: jiff::Timestamp) -> String {
    let dt = ts.to_zoned(jiff::tz::TimeZone::UTC).datetime();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.subsec_nanosecond() / 1_000_000
    )
}

fn iso_after(ts: jiff::Timestamp, after: Duration) -> String {
    let offset = jiff::SignedDuration::try_from(after).unwrap_or_default();
    iso(ts.checked_add(offset).unwrap_or(ts))
}

/// A stable hex string of `len` digits from some text.
pub(super) fn fake_hash(parts: &[&str], len: usize) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut out = String::new();
    let mut round = 0u8;
    while out.len() < len {
        for b in parts
            .iter()
            .flat_map(|p| p.bytes().chain([0]))
            .chain([round])
        {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        out.push_str(&format!("{h:016x}"));
        round = round.wrapping_add(1);
    }
    out.truncate(len);
    out
}

pub(super) fn normalize_git_url(url: &str) -> String {
    url.trim()
        .trim_end_matches('/')
        .trim_end_matches(".git")
        .to_owned()
}

pub(super) fn org_json(o: &Org) -> Value {
    json!({ "_id": o.id, "profile": { "name": o.name, "username": o.username, "image": "" },
        "users": [SIM_USER_ID], "registries": [], "overdue": o.overdue, "appType": "compute",
        "createdAt": o.created_at, "updatedAt": o.created_at })
}

pub(super) fn env_json(e: &EnvRec, overdue: bool) -> Value {
    let status = if overdue { "PAYMENT_PENDING" } else { "ACTIVE" };
    json!({ "_id": e.id, "name": e.name, "branches": e.branches, "status": status,
        "protocol": e.protocol, "isFree": true })
}

pub(super) fn var_json(p: &ProjectRec, v: &VarRec, overdue: bool) -> Value {
    let envs: Vec<Value> = p
        .envs
        .iter()
        .filter(|e| v.env_ids.contains(&e.id))
        .map(|e| env_json(e, overdue))
        .collect();
    json!({ "_id": v.id, "name": v.name, "value": v.value, "deploymentEnvironments": envs })
}

pub(super) fn project_json(d: &Data, p: &ProjectRec) -> Value {
    let overdue = d.overdue(&p.org_id);
    let domains: Vec<&str> = d
        .domains
        .values()
        .filter(|x| x.owned_by(Owner::Project(&p.id)))
        .map(|x| x.id.as_str())
        .collect();
    json!({ "_id": p.id, "name": p.name, "type": "STANDARD", "url": p.url,
        "environmentVariables": p.vars.iter().map(|v| var_json(p, v, overdue)).collect::<Vec<_>>(),
        "deploymentEnvironments": p.envs.iter().map(|e| env_json(e, overdue)).collect::<Vec<_>>(),
        "organization": p.org_id, "state": if p.archived { "ARCHIVED" } else { "MAINTAINED" },
        "hookId": p.hook_id, "provider": p.provider, "prCommentIds": [],
        "configuration": p.configuration,
        "passwordProtection": { "enabled": false, "credentials": [] },
        "createdAt": p.created_at, "updatedAt": p.updated_at, "domains": domains })
}

pub(super) fn site_preview(dep: &SiteDeployment) -> String {
    format!("https://{}.ipfs.sphn.link", fake_hash(&[&dep.id], 12))
}

pub(super) fn deployment_json(d: &Data, dep: &SiteDeployment, now: Instant) -> Value {
    let status = dep.status(now);
    let project = d.projects.get(&dep.project_id);
    let repo = project.map(|p| p.name.clone()).unwrap_or_default();
    let url = project.map(|p| p.url.clone()).unwrap_or_default();
    let config = &dep.configuration;
    // Phase `n` began `n` steps after progress started (creation, or authorization).
    let lead = dep.started.saturating_duration_since(dep.created);
    let at = |steps: u32| iso_after(dep.created_ts, lead + dep.step * steps);
    let mut logs = vec![json!({ "time": at(0),
        "log": format!("Deployment of {repo}@{} received", dep.branch) })];
    if dep.needs_auth && !dep.authorized {
        logs.push(json!({ "time": at(0),
            "log": "Waiting for authorization: the repository's owner must authorize this deployment" }));
    } else {
        // A cancel stops the build where it was.
        let until = dep.canceled_at.map_or(now, |c| c.min(now));
        let elapsed = until.saturating_duration_since(dep.started);
        if elapsed >= dep.step {
            logs.push(json!({ "time": at(1), "log": "Queued for a build worker" }));
        }
        if elapsed >= dep.step * 2 {
            logs.push(
                json!({ "time": at(2), "log": format!("Cloning {url} at {}", dep.commit_id) }),
            );
            logs.push(json!({ "time": at(2), "log": format!("Running {}",
                config["installCommand"].as_str().unwrap_or("install")) }));
            logs.push(json!({ "time": at(2), "log": format!("Running {}",
                config["buildCommand"].as_str().unwrap_or("build")) }));
        }
    }
    let (failed_message, end_log) = match (status, &dep.outcome) {
        ("Failed", Outcome::Failed(r)) => (r.clone(), Some(r.clone())),
        ("TimedOut", Outcome::TimedOut(r)) => (r.clone(), Some(format!("Build timed out: {r}"))),
        ("Deployed", _) => (
            String::new(),
            Some(format!("Deployed to {}", site_preview(dep))),
        ),
        ("Canceled", _) => (String::new(), Some("Deployment canceled".to_owned())),
        _ => (String::new(), None),
    };
    if let Some(line) = end_log {
        logs.push(json!({ "time": at(3), "log": line }));
    }
    let done = matches!(status, "Deployed" | "Failed" | "TimedOut" | "Canceled");
    let updated = if done {
        at(3)
    } else {
        iso(jiff::Timestamp::now())
    };
    let preview = if status == "Deployed" {
        site_preview(dep)
    } else {
        String::new()
    };
    json!({ "_id": dep.id, "sitePreview": preview, "commitId": dep.commit_id,
        "commitMessage": format!("Commit {}", &dep.commit_id[..7]),
        "logs": logs, "buildDirectory": [],
        "contentHash": if status == "Deployed" { format!("bafy{}", fake_hash(&[&dep.id, "cid"], 40)) } else { String::new() },
        "topic": dep.topic, "status": status, "paymentId": "",
        "buildTime": if done { dep.step.as_secs_f64() } else { 0.0 },
        "memoryUsed": 0, "env": dep.env,
        "project": project.map(|p| project_json(d, p)).unwrap_or(Value::Null),
        "branch": dep.branch, "externalRepositoryName": repo, "protocol": dep.protocol,
        "deploymentEnvironmentName": dep.env_name, "failedMessage": failed_message,
        "isFromRequest": false, "configuration": dep.configuration,
        "pickedUpByDeployerAt": Value::Null, "encrypted": false,
        "createdAt": iso(dep.created_ts), "updatedAt": updated })
}

pub(super) fn domain_json(x: &DomainRec) -> Value {
    json!({ "_id": x.id, "name": x.name, "link": x.link, "type": x.kind,
        "verified": x.verified, "projectId": x.owner,
        "deploymentEnvironmentIds": x.env_ids, "version": "1", "credentials": [],
        "appType": if x.compute { 2 } else { 1 },
        "createdAt": x.created_at, "updatedAt": x.updated_at })
}

pub(super) fn compute_project_json(p: &ComputeProjectRec) -> Value {
    json!({ "_id": p.id, "name": p.name, "description": p.description,
        "proivder": "DOCKERHUB", "state": "MAINTAINED", "organization": p.org_id,
        "createdAt": p.created_at, "updatedAt": p.created_at })
}

pub(super) fn instance_json(d: &Data, i: &InstanceRec, now: Instant, extended: bool) -> Value {
    let mut v = json!({ "_id": i.id, "state": d.instance_state(i, now), "name": i.name,
        "deployments": i.deployments, "computeProject": i.project_id,
        "activeDeployment": d.active_deployment(i, now), "retrievableAkt": 0,
        "withdrawnAkt": 0, "scalableRunningCostUpdatedAt": i.updated_at,
        "scalableRunningCost": 0, "type": if i.scalable { "ON_DEMAND" } else { "SPOT" },
        "region": i.region, "createdAt": i.created_at, "updatedAt": i.updated_at });
    if extended {
        v["defaultDailyTopup"] = json!(0);
        v["leasePricePerBlock"] = json!(0);
    }
    v
}

pub(super) fn compute_deployment_json(d: &Data, c: &ComputeDeploymentRec, now: Instant) -> Value {
    let status = d.compute_status(c, now);
    let at = |steps: u32| iso_after(c.created_ts, c.step * steps);
    let mut lines = vec![format!("{} requested", c.kind)];
    let e = now.saturating_duration_since(c.started);
    if e >= c.step {
        lines.push("Lease created with a provider; pulling images".to_owned());
    }
    match (status, &c.fail) {
        ("Failed", Some(reason)) => lines.push(reason.clone()),
        ("Deployed" | "Deprecated", _) => lines.push("All services are running".to_owned()),
        _ => {}
    }
    let health = |s: &Value| {
        let port = s["healthCheck"]["port"].as_u64();
        s.get("healthCheck").filter(|h| !h.is_null()).map(|h| {
            json!({ "path": h["path"], "status": if status == "Deployed" { "Active" } else { "Pending" },
                "port": port.map(|p| json!({ "containerPort": p, "exposedPort": p })) })
        })
    };
    let services: Vec<Value> = c
        .services
        .iter()
        .map(|s| {
            let mut s = s.clone();
            s["healthCheck"] = health(&s).unwrap_or(Value::Null);
            s
        })
        .collect();
    let url = services
        .first()
        .and_then(|s| s["urlPrewiew"].as_str())
        .unwrap_or_default()
        .to_owned();
    json!({ "_id": c.id, "type": c.kind, "commitId": "", "status": status,
        "buildTime": 0, "topic": c.topic, "env": {},
        "logs": [{ "time": at(0), "log": lines }], "topups": [], "closingLogs": [],
        "instanceLogs": [], "instanceEvents": [], "computeInstance": c.instance_id,
        "services": services, "lastTopup": Value::Null, "deploymentConfigBase64": "",
        "protocolData": { "providerHost": "provider.sim.spheron.invalid",
            "dseq": c.created_ts.as_millisecond() },
        "urlPrewiew": url, "akashWalletId": "", "deploymentInitiator": SIM_USER_ID,
        "createdAt": at(0), "updatedAt": at(2) })
}
