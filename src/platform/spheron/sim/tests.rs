use super::routes::*;
use super::*;
use crate::api::{PlatformDefaults, PlatformType};
use crate::core::budget::RateBudget;
use crate::core::seam::{Connection, Credential, ErrorKind, Platform};
use crate::platform::spheron::client::*;
use crate::sim::{bind, SimServer, SimStats};

const STEP: Duration = Duration::from_millis(80);

struct Harness {
    sim: SpheronSim,
    base: String,
    _server: SimServer,
}

async fn harness(config: SimConfig) -> Harness {
    let sim = SpheronSim::new(&config);
    sim.set_step_time(STEP);
    sim.set_compute_step_time(STEP);
    let server = bind("127.0.0.1:0".parse().expect("addr"), router(sim.clone()))
        .await
        .expect("bind");
    Harness {
        sim,
        base: server.base_url(),
        _server: server,
    }
}

async fn default_harness() -> Harness {
    harness(SimConfig::default()).await
}

fn connection(base: &str, token: &str, org: Option<&str>) -> Connection {
    Connection {
        platform: PlatformType::Spheron,
        endpoint: base.to_owned(),
        credential: Credential::new(token),
        ca_pem: None,
        defaults: PlatformDefaults {
            organization_id: org.map(str::to_owned),
            ..Default::default()
        },
        budget: Arc::new(RateBudget::new(60_000, 1000)),
        metrics: crate::core::metrics::Metrics::new(),
        read_only: false,
    }
}

fn client_with(h: &Harness, token: &str, org: Option<&str>) -> SpheronClient {
    SpheronClient::new(connection(&h.base, token, org)).expect("client")
}

fn client(h: &Harness) -> SpheronClient {
    client_with(h, crate::sim::DEFAULT_TOKEN, None)
}

async fn control(h: &Harness, path: &str, body: Value) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{}{path}", h.base))
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.expect("json")
}

fn start_body(repo: &str) -> StartDeployment {
    StartDeployment {
        organization_id: DEFAULT_ORGANIZATION_ID.into(),
        git_url: format!("https://github.com/acme/{repo}"),
        repo_name: repo.into(),
        branch: "main".into(),
        protocol: "ipfs".into(),
        provider: "GITHUB".into(),
        create_default_webhook: false,
        configuration: BuildConfiguration {
            build_command: "npm run build".into(),
            install_command: "npm ci".into(),
            workspace: String::new(),
            publish_dir: "build".into(),
            framework: "react".into(),
            node_version: "V_16".into(),
        },
        env: None,
        unique_topic_id: None,
    }
}

fn service(name: &str, count: u32) -> ComputeService {
    ComputeService {
        name: name.into(),
        image: "nginx".into(),
        tag: "1.27".into(),
        private_image_config: None,
        service_count: count,
        build_image: false,
        ports: vec![Port {
            container_port: 80,
            exposed_port: 80,
            global: None,
            expose_to: None,
        }],
        env: vec![EnvEntry::new("MODE", "prod", false)],
        command: vec![],
        args: vec![],
        akash_machine_image_name: PLANS[0].name.into(),
        custom_service_specs: None,
        health_check: Some(HealthCheck {
            path: "/".into(),
            port: 80,
        }),
        autoscaling_rules: None,
        template_id: None,
    }
}

fn create_body(project: &str, services: Vec<ComputeService>) -> CreateComputeInstance {
    CreateComputeInstance {
        organization_id: DEFAULT_ORGANIZATION_ID.into(),
        unique_topic_id: format!("topic-{project}"),
        compute_provider: "DOCKERHUB".into(),
        compute_project_name: project.into(),
        compute_project_description: None,
        region: "any".into(),
        scalable: true,
        services,
    }
}

/// Polls a site deployment to its end; the distinct statuses seen, in order.
async fn until_terminal(c: &SpheronClient, id: &str) -> (Vec<DeploymentStatus>, Deployment) {
    let mut seen: Vec<DeploymentStatus> = Vec::new();
    for _ in 0..1000 {
        let d = c.get_deployment(id).await.expect("get").expect("exists");
        if seen.last() != Some(&d.status) {
            seen.push(d.status.clone());
        }
        if d.status.is_terminal() {
            return (seen, d);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("deployment {id} never ended: {seen:?}");
}

async fn until_compute_terminal(c: &SpheronClient, id: &str) -> ComputeDeployment {
    for _ in 0..1000 {
        let d = c
            .get_compute_deployment(id)
            .await
            .expect("get")
            .expect("exists");
        if d.status.is_terminal() {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("compute deployment {id} never ended");
}

#[tokio::test]
async fn site_deployment_goes_through_every_status_to_deployed() {
    let h = default_harness().await;
    // Long phases, so a slow poll on a busy machine still sees each one.
    h.sim.set_step_time(Duration::from_millis(150));
    let c = client(&h);
    let started = c
        .start_deployment(&start_body("site"))
        .await
        .expect("start");
    assert!(started.success);
    let project_id = started.project_id.clone().expect("project id");
    let first = started
        .deployment
        .expect("the start answer embeds the deployment");
    assert_eq!(first.status, DeploymentStatus::PreQueue);
    assert_eq!(first.project.as_deref(), Some(project_id.as_str()));
    let (seen, done) = until_terminal(&c, &started.deployment_id).await;
    assert_eq!(
        seen,
        vec![
            DeploymentStatus::PreQueue,
            DeploymentStatus::Queued,
            DeploymentStatus::Pending,
            DeploymentStatus::Deployed
        ]
    );
    assert!(done.status.is_success());
    assert!(done
        .site_preview
        .as_deref()
        .is_some_and(|u| u.starts_with("https://")));
    assert_eq!(
        done.deployment_environment_name.as_deref(),
        Some("Production")
    );
    assert_eq!(done.failure_reason(), None);
    assert_eq!(done.commit_id.as_deref().map(str::len), Some(40));

    // The deployment created the project (there is no create endpoint); a second start of
    // the same repository reuses it, and a new commit is built.
    let p = c
        .get_project(&project_id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        (p.name.as_str(), p.state.clone()),
        ("site", ProjectState::Maintained)
    );
    assert_eq!(p.organization.as_deref(), Some(DEFAULT_ORGANIZATION_ID));
    assert_eq!(
        p.configuration.map(|c| c.framework),
        Some("react".to_string())
    );
    let pushed = h
        .sim
        .push_commit("https://github.com/acme/site.git", "main");
    let again = c
        .start_deployment(&start_body("site"))
        .await
        .expect("start");
    assert_eq!(again.project_id.as_deref(), Some(project_id.as_str()));
    let (_, second) = until_terminal(&c, &again.deployment_id).await;
    assert_eq!(second.commit_id.as_deref(), Some(pushed.as_str()));
    let all = c
        .list_project_deployments(&project_id, None)
        .await
        .expect("list");
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].id, again.deployment_id, "newest first");
    assert!(c
        .get_deployment("65f0ffffffffffffffffffff")
        .await
        .expect("get")
        .is_none());
}

#[tokio::test]
async fn failed_and_timed_out_deployments_explain_why() {
    let h = default_harness().await;
    let c = client(&h);
    h.sim
        .fail_next_deployment(Ending::Failed, "npm ERR! missing script: build");
    let s = c.start_deployment(&start_body("web")).await.expect("start");
    let (seen, failed) = until_terminal(&c, &s.deployment_id).await;
    assert_eq!(seen.last(), Some(&DeploymentStatus::Failed));
    assert_eq!(
        failed.failure_reason().as_deref(),
        Some("Failed: npm ERR! missing script: build")
    );
    assert!(!failed.status.is_success());

    // Through the control route: the next one times out.
    let queued = control(
        &h,
        "/_sim/deployments/fail-next",
        json!({"status": "TimedOut", "reason": "build exceeded 15 minutes"}),
    )
    .await;
    assert_eq!(queued["queued"], 1);
    let project = s.project_id.clone().expect("project");
    let env = c
        .add_environment_variables(
            &project,
            &[NewEnvironmentVariable {
                name: "API_URL".into(),
                value: "https://api.acme.dev".into(),
                environments: vec!["Production".into()],
            }],
        )
        .await
        .expect("add variable");
    assert_eq!(env.len(), 1);
    // A redeploy of the failed deployment: same commit, latest variables.
    let r = c.redeploy(&s.deployment_id).await.expect("redeploy");
    let (_, timed_out) = until_terminal(&c, &r.deployment_id).await;
    assert_eq!(timed_out.status, DeploymentStatus::TimedOut);
    assert!(timed_out
        .failure_reason()
        .is_some_and(|m| m.contains("exceeded 15 minutes")));
    assert_eq!(timed_out.commit_id, failed.commit_id);
    assert_eq!(
        h.sim.data().deployments[&r.deployment_id]
            .env
            .get("API_URL")
            .map(String::as_str),
        Some("https://api.acme.dev")
    );
    assert_eq!(
        c.list_project_deployments(&project, Some(&DeploymentStatus::Failed))
            .await
            .expect("filtered")
            .len(),
        1
    );
}

#[tokio::test]
async fn authorization_and_cancel_paths() {
    let h = default_harness().await;
    let c = client(&h);
    h.sim.require_authorization_next(1);
    let s = c
        .start_deployment(&start_body("gated"))
        .await
        .expect("start");
    tokio::time::sleep(STEP * 4).await;
    let d = c
        .get_deployment(&s.deployment_id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(d.status, DeploymentStatus::AuthorizationNeeded);
    assert!(d.status.needs_authorization() && !d.status.is_terminal());
    let a = c
        .authorize_deployment(&s.deployment_id)
        .await
        .expect("authorize");
    assert_eq!(a.deployment_id, s.deployment_id);
    let (seen, done) = until_terminal(&c, &s.deployment_id).await;
    assert_eq!(seen.first(), Some(&DeploymentStatus::PreQueue), "{seen:?}");
    assert!(done.status.is_success());
    let e = c
        .authorize_deployment(&s.deployment_id)
        .await
        .expect_err("not needed");
    assert_eq!(e.kind, ErrorKind::Invalid);

    // Cancel: Killing, then Canceled.
    let s = c
        .start_deployment(&start_body("gated"))
        .await
        .expect("start");
    let e = c
        .redeploy(&s.deployment_id)
        .await
        .expect_err("still running");
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert!(e.message.contains("redeployed"), "{}", e.message);
    let canceled = c.cancel_deployment(&s.deployment_id).await.expect("cancel");
    assert!(canceled.canceled && canceled.killing);
    let (seen, done) = until_terminal(&c, &s.deployment_id).await;
    assert_eq!(
        seen,
        vec![DeploymentStatus::Killing, DeploymentStatus::Canceled]
    );
    assert!(!done.status.is_success());
    assert!(done.failure_reason().is_some());
    let e = c
        .cancel_deployment(&s.deployment_id)
        .await
        .expect_err("ended");
    assert_eq!(e.kind, ErrorKind::Invalid);

    // An authorization-needed deployment can be canceled too.
    control(
        &h,
        "/_sim/deployments/require-authorization",
        json!({"count": 1}),
    )
    .await;
    let s = c
        .start_deployment(&start_body("gated"))
        .await
        .expect("start");
    c.cancel_deployment(&s.deployment_id).await.expect("cancel");
    let (_, done) = until_terminal(&c, &s.deployment_id).await;
    assert_eq!(done.status, DeploymentStatus::Canceled);
}

#[tokio::test]
async fn projects_are_paged_and_archived() {
    let h = default_harness().await;
    let c = client(&h);
    let n = PAGE_LIMIT as usize + 5;
    for i in 0..n {
        c.start_deployment(&start_body(&format!("site-{i:02}")))
            .await
            .expect("start");
    }
    let all = c
        .list_projects(DEFAULT_ORGANIZATION_ID, None)
        .await
        .expect("list");
    assert_eq!(all.len(), n, "every page was read");
    let names: BTreeSet<&str> = all.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names.len(), n, "no project twice");
    let tail = c
        .list_projects_page(DEFAULT_ORGANIZATION_ID, PAGE_LIMIT, PAGE_LIMIT, None)
        .await
        .expect("page");
    assert_eq!(tail.len(), 5);
    let e = c
        .list_projects_page(DEFAULT_ORGANIZATION_ID, 0, 101, None)
        .await
        .expect_err("limit too big");
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert_eq!(e.field.as_deref(), Some("limit"));

    let victim = all[0].id.clone();
    assert_eq!(
        c.archive_project(&victim).await.expect("archive"),
        Deleted::Done
    );
    let archived = c
        .list_projects(DEFAULT_ORGANIZATION_ID, Some(&ProjectState::Archived))
        .await
        .expect("archived");
    assert_eq!(
        archived.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        vec![victim.as_str()]
    );
    assert_eq!(
        c.list_projects(DEFAULT_ORGANIZATION_ID, Some(&ProjectState::Maintained))
            .await
            .expect("maintained")
            .len(),
        n - 1
    );
    let e = c
        .start_deployment(&start_body("site-00"))
        .await
        .expect_err("archived");
    assert_eq!(e.kind, ErrorKind::Invalid);
    c.set_project_state(&victim, &ProjectState::Maintained)
        .await
        .expect("unarchive");
    c.start_deployment(&start_body("site-00"))
        .await
        .expect("deployable again");
    assert_eq!(
        c.archive_project("65f0ffffffffffffffffffff")
            .await
            .expect("gone"),
        Deleted::AlreadyGone
    );

    // Deployments of a project, paged.
    for _ in 0..2 {
        c.start_deployment(&start_body("site-01"))
            .await
            .expect("start");
    }
    let p1 = all[1].id.clone();
    let page2 = c
        .list_project_deployments_page(&p1, 2, 2, None)
        .await
        .expect("page");
    assert_eq!(page2.len(), 1);
    assert_eq!(
        c.list_project_deployments(&p1, None)
            .await
            .expect("all")
            .len(),
        3
    );
}

#[tokio::test]
async fn environment_variables_per_environment() {
    let h = default_harness().await;
    let c = client(&h);
    let s = c
        .start_deployment(&start_body("vars"))
        .await
        .expect("start");
    let project = s.project_id.expect("project");
    let envs = c
        .list_deployment_environments(&project)
        .await
        .expect("envs");
    let names: Vec<&str> = envs.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, vec!["Production", "Development"]);
    assert_eq!(envs[0].branches, vec!["main".to_string()]);
    assert_eq!(envs[0].status, Some(DeploymentEnvironmentStatus::Active));
    let ids: Vec<String> = envs.iter().map(|e| e.id.clone()).collect();

    let added = c
        .add_environment_variables(
            &project,
            &[
                NewEnvironmentVariable {
                    name: "A".into(),
                    value: "1".into(),
                    environments: vec!["Production".into()],
                },
                NewEnvironmentVariable {
                    name: "B".into(),
                    value: "2".into(),
                    environments: ids.clone(),
                },
            ],
        )
        .await
        .expect("add");
    assert_eq!(added.len(), 2);
    assert!(added[1]
        .deployment_environments
        .iter()
        .any(|e| e.matches("Development")));
    let e = c
        .add_environment_variables(
            &project,
            &[NewEnvironmentVariable {
                name: "A".into(),
                value: "x".into(),
                environments: vec![ids[0].clone()],
            }],
        )
        .await
        .expect_err("duplicate");
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert_eq!(e.field.as_deref(), Some("environmentVariables.0.name"));
    let e = c
        .add_environment_variables(
            &project,
            &[NewEnvironmentVariable {
                name: "C".into(),
                value: "x".into(),
                environments: vec!["Staging".into()],
            }],
        )
        .await
        .expect_err("unknown environment");
    assert_eq!(
        e.field.as_deref(),
        Some("environmentVariables.0.environments")
    );

    let a = &added[0];
    let updated = c
        .update_environment_variable(
            &project,
            &a.id,
            &NewEnvironmentVariable {
                name: "A".into(),
                value: "changed".into(),
                environments: vec!["Production".into(), "Development".into()],
            },
        )
        .await
        .expect("update");
    assert_eq!(updated.value, "changed");
    assert_eq!(updated.deployment_environments.len(), 2);
    assert_eq!(
        c.delete_environment_variable(&project, &added[1].id)
            .await
            .expect("delete"),
        Deleted::Done
    );
    assert_eq!(
        c.delete_environment_variable(&project, &added[1].id)
            .await
            .expect("gone"),
        Deleted::AlreadyGone
    );
    let vars = c
        .list_environment_variables(&project)
        .await
        .expect("list")
        .expect("project exists");
    assert_eq!(
        vars.iter()
            .map(|v| (v.name.as_str(), v.value.as_str()))
            .collect::<Vec<_>>(),
        vec![("A", "changed")]
    );
    assert!(c
        .list_environment_variables("65f0ffffffffffffffffffff")
        .await
        .expect("none")
        .is_none());
}

#[tokio::test]
async fn project_domains_verify_once_dns_is_in_place() {
    let h = default_harness().await;
    let c = client(&h);
    h.sim.set_dns_delay(None);
    let s = c
        .start_deployment(&start_body("shop"))
        .await
        .expect("start");
    let project = s.project_id.expect("project");
    let apex = c
        .create_project_domain(
            &project,
            &NewDomain {
                name: "Acme.dev".into(),
                domain_type: DomainType::Domain,
                link: None,
                deployment_environments: Some(vec!["Production".into()]),
            },
        )
        .await
        .expect("create");
    assert_eq!(apex.name, "acme.dev");
    assert!(!apex.verified);
    assert_eq!(apex.app_type, Some(1));
    let records = c.cdn_records().await.expect("cdn records");
    assert_eq!(
        dns_records(&apex, &records),
        vec![DnsRecord {
            record_type: "A",
            name: "acme.dev".into(),
            value: CDN_IPV4.into()
        }]
    );
    let www = c
        .create_project_domain(
            &project,
            &NewDomain {
                name: "www.acme.dev".into(),
                domain_type: DomainType::Subdomain,
                link: None,
                deployment_environments: None,
            },
        )
        .await
        .expect("create");
    assert_eq!(dns_records(&www, &records)[0].value, CDN_CNAME);

    let v = c
        .verify_project_domain(&project, &apex.id)
        .await
        .expect("verify");
    assert!(!v.success && !v.verified(), "DNS is not there yet");
    control(&h, "/_sim/domains/dns-ready", json!({"name": "acme.dev"})).await;
    let v = c
        .verify_project_domain(&project, "acme.dev")
        .await
        .expect("verify");
    assert!(v.success && v.verified());
    let got = c
        .get_project_domain(&project, "acme.dev")
        .await
        .expect("get")
        .expect("exists");
    assert!(got.verified);
    assert_eq!(
        c.get_project_domain(&project, &apex.id)
            .await
            .expect("by id")
            .map(|d| d.name),
        Some("acme.dev".to_string())
    );
    assert_eq!(
        c.list_project_domains(&project).await.expect("list").len(),
        2
    );

    // DNS that propagates by itself after the delay.
    h.sim.set_dns_delay(Some(Duration::from_millis(400)));
    assert!(
        !c.verify_project_domain(&project, &www.id)
            .await
            .expect("v")
            .success
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(
        c.verify_project_domain(&project, &www.id)
            .await
            .expect("v")
            .success
    );

    // A rename needs a new check.
    let renamed = c
        .update_project_domain(
            &project,
            &www.id,
            &DomainUpdate {
                name: "app.acme.dev".into(),
                link: Some("https://x.ipfs.sphn.link".into()),
                deployment_environments: None,
            },
        )
        .await
        .expect("update");
    assert!(!renamed.verified);
    assert_eq!(renamed.link.as_deref(), Some("https://x.ipfs.sphn.link"));

    let e = c
        .create_project_domain(
            &project,
            &NewDomain {
                name: "acme.dev".into(),
                domain_type: DomainType::Domain,
                link: None,
                deployment_environments: None,
            },
        )
        .await
        .expect_err("taken");
    assert_eq!(
        (e.kind, e.field.as_deref()),
        (ErrorKind::Invalid, Some("name"))
    );
    let e = c
        .create_project_domain(
            &project,
            &NewDomain {
                name: "not a domain".into(),
                domain_type: DomainType::Domain,
                link: None,
                deployment_environments: None,
            },
        )
        .await
        .expect_err("invalid");
    assert_eq!(e.field.as_deref(), Some("name"));
    assert_eq!(
        c.delete_project_domain(&project, &apex.id)
            .await
            .expect("delete"),
        Deleted::Done
    );
    assert_eq!(
        c.delete_project_domain(&project, &apex.id)
            .await
            .expect("gone"),
        Deleted::AlreadyGone
    );
    assert!(c
        .get_project_domain(&project, &apex.id)
        .await
        .expect("get")
        .is_none());
}

#[tokio::test]
async fn compute_update_changes_replicas() {
    let h = default_harness().await;
    let c = client(&h);
    let created = c
        .create_compute_instance(&create_body(
            "shop",
            vec![service("web", 1), service("worker", 1)],
        ))
        .await
        .expect("create");
    assert_eq!(created.topic.as_deref(), Some("topic-shop"));
    let instance = created.compute_instance_id.clone();
    let i = c
        .get_compute_instance(&instance)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(i.state, InstanceState::Starting);
    assert_eq!(i.instance_type.as_deref(), Some("ON_DEMAND"));
    let first = until_compute_terminal(&c, &created.compute_deployment_id).await;
    assert_eq!(first.status, ComputeDeploymentStatus::Deployed);
    assert_eq!(first.deployment_type.as_deref(), Some("DEPLOY"));
    let i = c
        .get_compute_instance(&instance)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(i.state, InstanceState::Active);
    let current = c
        .current_deployment(&instance)
        .await
        .expect("current")
        .expect("one");
    assert_eq!(
        current.replicas(),
        BTreeMap::from([("web".to_string(), 1), ("worker".to_string(), 1)])
    );
    assert!(current.services[0].url_preview.is_some());

    // Scale web to 3: resend the full configuration with a new serviceCount.
    let mut services = current.service_configs();
    services[0].service_count = 3;
    let update = UpdateComputeInstance {
        services: services.clone(),
        organization_id: DEFAULT_ORGANIZATION_ID.into(),
        unique_topic_id: "t-2".into(),
    };
    let u = c
        .update_compute_instance(&instance, &update)
        .await
        .expect("update");
    let e = c
        .update_compute_instance(&instance, &update)
        .await
        .expect_err("one at a time");
    assert_eq!(e.kind, ErrorKind::Conflict);
    assert_eq!(
        c.current_deployment(&instance)
            .await
            .expect("c")
            .expect("one")
            .replicas()["web"],
        1,
        "the running configuration changes only once the update is deployed"
    );
    let second = until_compute_terminal(&c, &u.compute_deployment_id).await;
    assert_eq!(second.deployment_type.as_deref(), Some("UPDATE"));
    assert_eq!(second.replicas()["web"], 3);
    let i = c
        .get_compute_instance(&instance)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        i.active_deployment.as_deref(),
        Some(u.compute_deployment_id.as_str())
    );
    assert_eq!(i.deployments.len(), 2);
    let old = c
        .get_compute_deployment(&created.compute_deployment_id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(old.status, ComputeDeploymentStatus::Deprecated);

    // An out-of-band change (someone scales in the dashboard) is a normal API call.
    let person = client(&h);
    let mut theirs = person
        .current_deployment(&instance)
        .await
        .expect("c")
        .expect("one")
        .service_configs();
    theirs[1].service_count = 5;
    let oob = person
        .update_compute_instance(
            &instance,
            &UpdateComputeInstance {
                services: theirs,
                organization_id: DEFAULT_ORGANIZATION_ID.into(),
                unique_topic_id: "t-oob".into(),
            },
        )
        .await
        .expect("update");
    until_compute_terminal(&person, &oob.compute_deployment_id).await;
    let seen = c
        .current_deployment(&instance)
        .await
        .expect("c")
        .expect("one");
    assert_eq!(
        seen.replicas(),
        BTreeMap::from([("web".to_string(), 3), ("worker".to_string(), 5)])
    );
    assert_eq!(h.sim.service_counts(&instance)["worker"], 5);

    // A failed update leaves the running configuration alone.
    control(
        &h,
        "/_sim/compute/fail-next",
        json!({"reason": "no provider has capacity"}),
    )
    .await;
    let mut bad = seen.service_configs();
    bad[0].service_count = 9;
    let f = c
        .update_compute_instance(
            &instance,
            &UpdateComputeInstance {
                services: bad,
                organization_id: DEFAULT_ORGANIZATION_ID.into(),
                unique_topic_id: "t-3".into(),
            },
        )
        .await
        .expect("update");
    let failed = until_compute_terminal(&c, &f.compute_deployment_id).await;
    assert_eq!(failed.status, ComputeDeploymentStatus::Failed);
    assert!(failed
        .failure_reason()
        .is_some_and(|r| r.contains("no provider has capacity")));
    assert_eq!(h.sim.service_counts(&instance)["web"], 3);

    // Listing by organization and compute project.
    let projects = c
        .list_compute_projects(DEFAULT_ORGANIZATION_ID)
        .await
        .expect("projects");
    assert_eq!(projects.len(), 1);
    assert_eq!(projects[0].provider.as_deref(), Some("DOCKERHUB"));
    let listed = c
        .list_compute_instances(DEFAULT_ORGANIZATION_ID, Some(&projects[0].id), None)
        .await
        .expect("instances");
    assert_eq!(
        listed.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        vec![instance.as_str()]
    );
    assert!(c
        .list_compute_instances(DEFAULT_ORGANIZATION_ID, None, Some(&InstanceState::Closed))
        .await
        .expect("closed")
        .is_empty());

    // Instance domains.
    let link = seen.services[0].url_preview.clone().unwrap_or_default();
    let dom = c
        .create_instance_domain(
            &instance,
            &NewInstanceDomain {
                link: link.clone(),
                domain_type: DomainType::Subdomain,
                name: "api.acme.dev".into(),
            },
        )
        .await
        .expect("create");
    assert_eq!((dom.verified, dom.app_type), (false, Some(2)));
    h.sim.set_dns_ready("api.acme.dev");
    let v = c
        .verify_instance_domain(&instance, &dom.id)
        .await
        .expect("verify");
    assert!(v.success);
    assert!(c
        .get_instance_domain(&instance, "api.acme.dev")
        .await
        .expect("get")
        .is_some_and(|d| d.verified));
    let moved = c
        .update_instance_domain(
            &instance,
            &dom.id,
            &NewInstanceDomain {
                link,
                domain_type: DomainType::Subdomain,
                name: "api2.acme.dev".into(),
            },
        )
        .await
        .expect("update");
    assert!(!moved.verified);
    assert_eq!(
        c.list_instance_domains(&instance)
            .await
            .expect("list")
            .len(),
        1
    );
    assert_eq!(
        c.delete_instance_domain(&instance, &dom.id)
            .await
            .expect("delete"),
        Deleted::Done
    );
    assert_eq!(
        c.delete_instance_domain(&instance, &dom.id)
            .await
            .expect("gone"),
        Deleted::AlreadyGone
    );

    // Close, then delete; the compute project goes last.
    let e = c
        .delete_compute_project(&projects[0].id)
        .await
        .expect_err("open instance");
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert_eq!(
        c.close_compute_instance(&instance).await.expect("close"),
        Deleted::Done
    );
    let i = c
        .get_compute_instance(&instance)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(i.state, InstanceState::Closed);
    let e = c
        .update_compute_instance(&instance, &update)
        .await
        .expect_err("closed");
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert_eq!(
        c.delete_compute_instance(&instance).await.expect("delete"),
        Deleted::Done
    );
    assert_eq!(
        c.delete_compute_instance(&instance).await.expect("gone"),
        Deleted::AlreadyGone
    );
    assert!(c
        .get_compute_instance(&instance)
        .await
        .expect("get")
        .is_none());
    assert_eq!(
        c.delete_compute_project(&projects[0].id)
            .await
            .expect("delete"),
        Deleted::Done
    );
    assert!(c
        .get_compute_project(&projects[0].id)
        .await
        .expect("get")
        .is_none());
}

#[tokio::test]
async fn compute_requests_are_validated() {
    let h = default_harness().await;
    let c = client(&h);
    let mut s = service("web", 1);
    s.akash_machine_image_name = "Huge 9000".into();
    let e = c
        .create_compute_instance(&create_body("x", vec![s]))
        .await
        .expect_err("unknown plan");
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert_eq!(e.field.as_deref(), Some("services.0.akashMachineImageName"));
    let e = c
        .create_compute_instance(&create_body("x", vec![service("web", 0)]))
        .await
        .expect_err("no replicas");
    assert_eq!(e.field.as_deref(), Some("services.0.serviceCount"));
    let e = c
        .create_compute_instance(&create_body("x", vec![]))
        .await
        .expect_err("no services");
    assert_eq!(e.field.as_deref(), Some("services"));

    // A first deployment that fails leaves the instance `Failed-start`.
    h.sim.fail_next_compute_deployment("image not found");
    let created = c
        .create_compute_instance(&create_body("broken", vec![service("web", 1)]))
        .await
        .expect("create");
    let d = until_compute_terminal(&c, &created.compute_deployment_id).await;
    assert_eq!(d.status, ComputeDeploymentStatus::Failed);
    let i = c
        .get_compute_instance(&created.compute_instance_id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(i.state, InstanceState::FailedStart);
}

#[tokio::test]
async fn tokens_errors_and_other_organizations() {
    let h = default_harness().await;
    let c = client(&h);
    assert_eq!(
        c.verify().await.expect("verify"),
        format!("organization {DEFAULT_ORGANIZATION_ID} ({DEFAULT_ORGANIZATION_NAME})")
    );
    assert_eq!(
        c.token_organizations().await.expect("scope"),
        vec![DEFAULT_ORGANIZATION_ID.to_string()]
    );
    let org = c
        .get_organization(DEFAULT_ORGANIZATION_ID)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(org.profile.name.as_deref(), Some(DEFAULT_ORGANIZATION_NAME));
    assert!(!org.overdue);
    let s = c
        .start_deployment(&start_body("mine"))
        .await
        .expect("start");
    let mine = s.project_id.expect("project");
    let created = c
        .create_compute_instance(&create_body("mine", vec![service("web", 1)]))
        .await
        .expect("create");

    // 401: a token the platform does not know.
    let bad = client_with(&h, "wrong-s3cr3t", None);
    let e = bad.verify().await.expect_err("401");
    assert_eq!(e.kind, ErrorKind::Unauthorized);
    assert_eq!(e.status, Some(401));
    assert!(e.message.contains("token was refused"), "{}", e.message);
    assert!(!e.message.contains("s3cr3t") && !format!("{e:?}").contains("s3cr3t"));
    assert!(!format!("{bad:?}").contains("s3cr3t"));

    // A token of another organization, made through the control route.
    let made = control(
        &h,
        "/_sim/tokens",
        json!({"token": "other-token", "organization": "Globex"}),
    )
    .await;
    let other_org = made["organizationId"].as_str().expect("id").to_owned();
    assert_ne!(other_org, DEFAULT_ORGANIZATION_ID);
    let other = client_with(&h, "other-token", None);
    assert_eq!(
        other.verify().await.expect("verify"),
        format!("organization {other_org} (Globex)")
    );
    for e in [
        other.get_project(&mine).await.expect_err("403"),
        other
            .get_organization(DEFAULT_ORGANIZATION_ID)
            .await
            .expect_err("403"),
        other
            .get_compute_instance(&created.compute_instance_id)
            .await
            .expect_err("403"),
        other
            .list_compute_instances(DEFAULT_ORGANIZATION_ID, None, None)
            .await
            .expect_err("403"),
        other
            .start_deployment(&start_body("theirs"))
            .await
            .expect_err("403"),
    ] {
        assert_eq!(e.kind, ErrorKind::Forbidden, "{}", e.message);
        assert!(e.message.contains("another organization"), "{}", e.message);
    }
    // The Provider names an organization the token is not scoped to.
    let wrong_default = client_with(&h, "other-token", Some(DEFAULT_ORGANIZATION_ID));
    let e = wrong_default.verify().await.expect_err("scope");
    assert_eq!(e.kind, ErrorKind::Forbidden);
    assert_eq!(e.field.as_deref(), Some("defaults.organizationId"));
    assert!(!e.message.contains("other-token"));

    // A token scoped to two organizations needs the default.
    h.sim.add_token(crate::sim::DEFAULT_TOKEN, "Globex");
    let e = c.verify().await.expect_err("two organizations");
    assert_eq!(e.kind, ErrorKind::Invalid);
    let chosen = client_with(&h, crate::sim::DEFAULT_TOKEN, Some(&other_org));
    assert!(chosen.verify().await.expect("verify").contains("Globex"));
    assert_eq!(chosen.default_organization(), Some(other_org.as_str()));

    // 404s.
    let e = c
        .update_compute_instance(
            "65f0ffffffffffffffffffff",
            &UpdateComputeInstance {
                services: vec![service("web", 1)],
                organization_id: DEFAULT_ORGANIZATION_ID.into(),
                unique_topic_id: "t".into(),
            },
        )
        .await
        .expect_err("404");
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(c
        .get_organization("65f0ffffffffffffffffffff")
        .await
        .expect("none")
        .is_none());

    // An overdue organization: a quota error the user must act on.
    control(&h, "/_sim/organizations/overdue", json!({"overdue": true})).await;
    let e = c
        .start_deployment(&start_body("mine"))
        .await
        .expect_err("overdue");
    assert_eq!(e.kind, ErrorKind::QuotaExceeded, "{}", e.message);
    let e = c
        .create_compute_instance(&create_body("more", vec![service("web", 1)]))
        .await
        .expect_err("overdue");
    assert_eq!(e.kind, ErrorKind::QuotaExceeded);
    let envs = c.list_deployment_environments(&mine).await.expect("envs");
    assert_eq!(
        envs[0].status,
        Some(DeploymentEnvironmentStatus::PaymentPending)
    );
    assert!(c
        .get_organization(DEFAULT_ORGANIZATION_ID)
        .await
        .expect("get")
        .is_some_and(|o| o.overdue));
}

#[tokio::test]
async fn rate_limits_faults_and_stats() {
    let h = harness(SimConfig {
        rate_limit_per_minute: Some(2),
        ..SimConfig::default()
    })
    .await;
    let c = client(&h);
    c.token_scope().await.expect("1");
    c.token_scope().await.expect("2");
    let e = c.token_scope().await.expect_err("429");
    assert_eq!(e.kind, ErrorKind::RateLimited);
    assert!(e.retry_after.is_some_and(|r| r >= Duration::from_secs(1)));
    let stats: SimStats = reqwest::get(format!("{}/_sim/stats", h.base))
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!(stats.requests_for("GET", "/v1/api-keys/scope"), 3);
    assert_eq!(stats.rate_limited_total, 1);

    let h = default_harness().await;
    let c = client(&h);
    h.sim.control().set_outage(true);
    let e = c.token_scope().await.expect_err("outage");
    assert_eq!(e.kind, ErrorKind::Unavailable);
    assert!(e.is_transient());
    h.sim.control().set_outage(false);
    let timing = control(
        &h,
        "/_sim/timing",
        json!({"deploymentStepMs": 5, "computeStepMs": 5, "dnsDelayMs": null}),
    )
    .await;
    assert_eq!(timing["dnsDelayMs"], Value::Null);
    assert_eq!(timing["deploymentStepMs"], 5);
    let s = c
        .start_deployment(&start_body("fast"))
        .await
        .expect("start");
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(h.sim.deployment_status(&s.deployment_id), Some("Deployed"));
    // Unknown paths answer 404 in the platform's shape.
    let r = reqwest::get(format!("{}/v1/nothing", h.base))
        .await
        .expect("send");
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.expect("json");
    assert!(body["message"].is_string());
}

#[tokio::test]
async fn wrappers_on_the_wire() {
    // The raw shapes, independent of the client's parsing.
    let h = default_harness().await;
    let http = reqwest::Client::new();
    let get = |path: &str| {
        http.get(format!("{}{path}", h.base))
            .bearer_auth(crate::sim::DEFAULT_TOKEN)
            .send()
    };
    let c = client(&h);
    let s = c
        .start_deployment(&start_body("wire"))
        .await
        .expect("start");
    let project = s.project_id.expect("project");
    let v: Value = get(&format!("/v1/project/{project}"))
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(v["_id"], project.as_str(), "a project is bare");
    let v: Value = get(&format!("/v1/deployment/{}", s.deployment_id))
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert!(
        v["deployment"]["_id"].is_string(),
        "a deployment is wrapped"
    );
    let v: Value = get(&format!("/v1/project/{project}/deployments?skip=0&limit=5"))
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert!(v.is_array(), "a project's deployments are a bare array");
    let v: Value = get(&format!("/v1/organization/{DEFAULT_ORGANIZATION_ID}"))
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(v["_id"], DEFAULT_ORGANIZATION_ID, "an organization is bare");
    let v: Value = get(&format!("/v1/project/{project}/deployment-environments"))
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert!(v["result"].is_array());
    let v: Value = get("/v1/api-keys/scope")
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(v["organizations"][0]["id"], DEFAULT_ORGANIZATION_ID);
    let r = http
        .get(format!("{}/v1/api-keys/scope", h.base))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.expect("json");
    assert!(v["message"].is_string(), "errors are {{message}}");
}
