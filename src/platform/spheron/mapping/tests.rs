use super::compute::*;
use super::site::*;
use super::*;
use crate::api::{EnvVar, EnvVarSource, PipelineSpec, SecretKeyRef, SpheronWorkspace};
use crate::core::locate::{locate, Located};
use serde_json::json;

fn spec(source: serde_json::Value, spheron: serde_json::Value) -> WorkspaceSpec {
    serde_json::from_value(json!({
        "providerRef": {"name": "p"},
        "source": source,
        "spheron": spheron,
    }))
    .expect("spec")
}

fn site_spec(source: serde_json::Value) -> WorkspaceSpec {
    spec(source, json!({}))
}

fn main_repo() -> serde_json::Value {
    json!({"repository": "https://github.com/acme/shop.git", "branch": "main"})
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn deployment(v: serde_json::Value) -> Deployment {
    let mut base = json!({"_id": "d1", "status": "Deployed", "branch": "main", "protocol": "ipfs",
        "configuration": {"framework": "static", "nodeVersion": "V_16", "buildCommand": "", "publishDir": ""},
        "env": {}});
    if let (Some(b), Some(extra)) = (base.as_object_mut(), v.as_object()) {
        b.extend(extra.clone());
    }
    serde_json::from_value(base).expect("deployment")
}

fn op(kind: &str, state: &str, generation: Option<i64>) -> OperationStatus {
    OperationStatus {
        kind: kind.into(),
        id: Some("d1".into()),
        state: state.into(),
        generation,
        started_at: None,
        deadline: None,
    }
}

fn service(v: serde_json::Value) -> DeployedService {
    let mut base = json!({"name": "main", "image": "nginx", "tag": "1.27", "serviceCount": 1,
        "ports": [{"containerPort": 80, "exposedPort": 80}], "env": [],
        "agreedMachineImage": {"machineType": "Ventus Nano 1"}});
    if let (Some(b), Some(extra)) = (base.as_object_mut(), v.as_object()) {
        b.extend(extra.clone());
    }
    serde_json::from_value(base).expect("service")
}

fn compute_deployment(id: &str, status: &str) -> ComputeDeployment {
    serde_json::from_value(json!({"_id": id, "status": status, "services": []}))
        .expect("compute deployment")
}

fn compute_spec(compute: serde_json::Value, replicas: i32) -> WorkspaceSpec {
    let mut s = spec(
        json!({"repository": "https://github.com/acme/shop.git", "tag": "v1"}),
        json!({"compute": compute}),
    );
    s.replicas = replicas;
    s
}

// ----- sites ---------------------------------------------------------------------------

#[test]
fn repositories_compare_without_case_slash_or_dot_git() {
    assert_eq!(
        repo_key(" https://GitHub.com/Acme/Shop.git/ "),
        "https://github.com/acme/shop"
    );
    assert_eq!(
        repo_key("https://github.com/acme/shop"),
        repo_key("https://github.com/acme/shop.git")
    );
    assert_eq!(repo_name("https://github.com/acme/shop.git"), "shop");
    assert_eq!(repo_name("git@gitlab.com:group/app.git"), "app");
}

#[test]
fn git_providers_come_from_the_host() {
    assert_eq!(
        git_provider("https://github.com/acme/shop.git"),
        Some("GITHUB")
    );
    assert_eq!(git_provider("git@github.com:acme/shop.git"), Some("GITHUB"));
    assert_eq!(git_provider("https://gitlab.com/g/app"), Some("GITLAB"));
    assert_eq!(
        git_provider("https://user@bitbucket.org/t/app.git"),
        Some("BITBUCKET")
    );
    assert_eq!(git_provider("https://git.example.com/acme/shop.git"), None);
}

#[test]
fn branches_and_tags_deploy_but_commits_cannot() {
    assert_eq!(site_branch(GitRef::Branch("main")), Ok("main".into()));
    assert_eq!(site_branch(GitRef::Tag("v1.2")), Ok("v1.2".into()));
    let err = site_branch(GitRef::Commit("abc1234")).expect_err("commit");
    assert!(err.starts_with("spec.source.commit"), "{err}");
}

#[test]
fn build_settings_come_from_the_spec_over_the_project_over_defaults() {
    let fresh = build_configuration(None, None);
    assert_eq!(
        (fresh.framework.as_str(), fresh.node_version.as_str()),
        ("static", "V_16")
    );
    let project = BuildConfiguration {
        framework: "react".into(),
        build_command: "yarn build".into(),
        publish_dir: "build".into(),
        node_version: "V_14".into(),
        ..Default::default()
    };
    // What the spec leaves out is the project's.
    assert_eq!(build_configuration(None, Some(&project)), project);
    let site = SpheronSite {
        framework: Some("vue".into()),
        build_command: None,
        publish_dir: Some("dist".into()),
        protocol: None,
    };
    let c = build_configuration(Some(&site), Some(&project));
    assert_eq!(
        (
            c.framework.as_str(),
            c.build_command.as_str(),
            c.publish_dir.as_str(),
            c.node_version.as_str()
        ),
        ("vue", "yarn build", "dist", "V_14")
    );
}

#[test]
fn a_site_spec_becomes_a_start_request() {
    let s = spec(
        main_repo(),
        json!({"site": {"protocol": "arweave", "framework": "react"}}),
    );
    let d = SiteDesired::new(&s, &env(&[("MODE", "prod")]), "org1", None).expect("desired");
    let body = d.start_body("topic-1");
    assert_eq!(body.organization_id, "org1");
    assert_eq!(body.git_url, "https://github.com/acme/shop.git");
    assert_eq!(body.repo_name, "shop");
    assert_eq!(body.branch, "main");
    assert_eq!(body.protocol, "arweave");
    assert_eq!(body.provider, "GITHUB");
    assert!(!body.create_default_webhook);
    assert_eq!(body.configuration.framework, "react");
    assert_eq!(body.env, Some(env(&[("MODE", "prod")])));
    assert_eq!(body.unique_topic_id.as_deref(), Some("topic-1"));
    assert_eq!(d.git_ref, "branch:main");
    assert_eq!(d.repo_key, "https://github.com/acme/shop");
    // The fingerprint moves with the variables and the ref.
    let other_env = SiteDesired::new(&s, &env(&[("MODE", "dev")]), "org1", None).expect("desired");
    assert_ne!(d.print, other_env.print);
    let tag = spec(
        json!({"repository": "https://github.com/acme/shop.git", "tag": "v1"}),
        json!({}),
    );
    let tagged = SiteDesired::new(&tag, &BTreeMap::new(), "org1", None).expect("desired");
    assert_eq!(
        (tagged.branch.as_str(), tagged.git_ref.as_str()),
        ("v1", "tag:v1")
    );
    assert_ne!(tagged.print, d.print);
}

#[test]
fn site_specs_spheron_cannot_deploy_are_refused_naming_the_field() {
    let commit =
        site_spec(json!({"repository": "https://github.com/acme/shop.git", "commit": "abc1234"}));
    let err = SiteDesired::new(&commit, &BTreeMap::new(), "o", None)
        .err()
        .expect("commit");
    assert_eq!(err.reason(), Reason::UnsupportedByProvider);
    assert!(err.to_string().starts_with("spec.source.commit"), "{err}");
    let host =
        site_spec(json!({"repository": "https://git.example.com/a/b.git", "branch": "main"}));
    let err = SiteDesired::new(&host, &BTreeMap::new(), "o", None)
        .err()
        .expect("host");
    assert_eq!(err.reason(), Reason::UnsupportedByProvider);
    assert!(
        err.to_string().starts_with("spec.source.repository"),
        "{err}"
    );
}

#[test]
fn a_finished_deployment_is_compared_field_by_field() {
    let s = site_spec(main_repo());
    let desired = SiteDesired::new(&s, &env(&[("MODE", "prod")]), "o", None).expect("desired");
    let same = deployment(json!({"env": {"MODE": "prod"}}));
    let fields = |d: &Deployment, variables: &[String]| -> Vec<String> {
        site_differences(d, &desired, variables, &[])
            .into_iter()
            .map(|c| c.field)
            .collect()
    };
    assert_eq!(fields(&same, &[]), Vec::<String>::new());
    let cases = [
        (
            json!({"branch": "dev", "env": {"MODE": "prod"}}),
            vec!["spec.source"],
        ),
        (
            json!({"protocol": "arweave", "env": {"MODE": "prod"}}),
            vec!["spec.spheron.site.protocol"],
        ),
        (
            json!({"configuration": {"framework": "react", "buildCommand": "b", "publishDir": "out"}, "env": {"MODE": "prod"}}),
            vec![
                "spec.spheron.site.framework",
                "spec.spheron.site.buildCommand",
                "spec.spheron.site.publishDir",
            ],
        ),
        (json!({"env": {"MODE": "debug"}}), vec!["spec.env[MODE]"]),
        (json!({"env": {}}), vec!["spec.env[MODE]"]),
        (
            json!({"env": {"MODE": "prod", "OLD": "x"}}),
            vec!["spec.env[OLD]"],
        ),
    ];
    for (patch, want) in cases {
        let d = deployment(patch.clone());
        assert_eq!(fields(&d, &[]), want, "{patch}");
    }
    // Old -> new, and a Secret-backed value never shown.
    let debug = deployment(json!({"env": {"MODE": "debug"}}));
    let changes = site_differences(&debug, &desired, &[], &[]);
    assert_eq!(changes[0].from.as_deref(), Some("\"debug\""));
    assert_eq!(changes[0].to.as_deref(), Some("\"prod\""));
    let hidden = site_differences(&debug, &desired, &[], &["MODE".to_string()]);
    assert_eq!(hidden[0].from.as_deref(), Some("(a Secret value)"));
    assert_eq!(hidden[0].to.as_deref(), Some("(a Secret value)"));
    // A variable of the project's own (set at Spheron) is not one the spec removed.
    let with_project_var = deployment(json!({"env": {"MODE": "prod", "CDN": "on"}}));
    assert!(fields(&with_project_var, &["CDN".to_string()]).is_empty());
    // Settings a deployment does not report are not claimed to differ.
    let bare =
        deployment(json!({"configuration": null, "protocol": null, "env": {"MODE": "prod"}}));
    assert!(fields(&bare, &[]).is_empty());
}

#[test]
fn every_deployment_state_has_a_next_step() {
    use SiteStep::*;
    let g = 5;
    // Nothing followed yet, or a call that never arrived: deploy.
    assert_eq!(plan_site(None, g, false, false), Start);
    assert_eq!(
        plan_site(Some(&op(DEPLOY, REQUESTING, Some(g))), g, false, false),
        Start
    );
    // A compute operation is not a site deployment.
    assert_eq!(
        plan_site(Some(&op(UPDATE, "Deployed", Some(g))), g, false, true),
        Start
    );
    for state in ["PreQueue", "Queued", "Pending", "Killing", "SomethingNew"] {
        for kind in [DEPLOY, REDEPLOY] {
            assert_eq!(
                plan_site(Some(&op(kind, state, Some(g))), g, false, false),
                Wait,
                "{state}"
            );
            assert_eq!(
                plan_site(Some(&op(kind, state, Some(g - 1))), g, false, false),
                Supersede,
                "{state}"
            );
            // Not bosun's own (found on an adopted project): never canceled.
            assert_eq!(
                plan_site(Some(&op(kind, state, None)), g, false, false),
                Wait,
                "{state}"
            );
        }
    }
    let auth = "AuthorizationNeeded";
    assert_eq!(
        plan_site(Some(&op(DEPLOY, auth, Some(g))), g, false, false),
        Authorize
    );
    assert_eq!(
        plan_site(Some(&op(DEPLOY, auth, None)), g, true, false),
        Authorize
    );
    assert_eq!(
        plan_site(Some(&op(DEPLOY, auth, Some(g - 1))), g, false, false),
        Supersede
    );
    for generation in [Some(g), Some(g - 1), None] {
        let deployed = op(DEPLOY, "Deployed", generation);
        assert_eq!(plan_site(Some(&deployed), g, false, true), Done);
        assert_eq!(plan_site(Some(&deployed), g, true, true), Redeploy);
        assert_eq!(plan_site(Some(&deployed), g, false, false), Start);
        assert_eq!(plan_site(Some(&deployed), g, true, false), Start);
    }
    for state in ["Failed", "TimedOut", "Canceled"] {
        let failed = |generation| op(DEPLOY, state, generation);
        // This spec's deployment failed: wait for a change or a request.
        assert_eq!(
            plan_site(Some(&failed(Some(g))), g, false, false),
            Failed,
            "{state}"
        );
        assert_eq!(
            plan_site(Some(&failed(Some(g))), g, true, false),
            Start,
            "{state}"
        );
        // An older spec's, or one bosun did not start: deploy this spec.
        assert_eq!(
            plan_site(Some(&failed(Some(g - 1))), g, false, false),
            Start,
            "{state}"
        );
        assert_eq!(
            plan_site(Some(&failed(None)), g, false, false),
            Start,
            "{state}"
        );
    }
}

#[test]
fn failures_keep_spherons_state_in_the_reason() {
    assert_eq!(
        failure_reason_code(&DeploymentStatus::Failed),
        Reason::DeployFailed
    );
    assert_eq!(
        failure_reason_code(&DeploymentStatus::TimedOut),
        Reason::DeployTimedOut
    );
    assert_eq!(
        failure_reason_code(&DeploymentStatus::Canceled),
        Reason::DeployCanceled
    );
}

#[test]
fn a_deploy_sent_before_a_crash_is_found_not_repeated() {
    let recent = vec![
        deployment(json!({"_id": "d3", "topic": "t-other"})),
        deployment(json!({"_id": "d2", "topic": "t-ours"})),
        deployment(json!({"_id": "d1", "topic": "t-old"})),
    ];
    let marker = |id: &str| OperationStatus {
        id: Some(id.into()),
        ..op(DEPLOY, REQUESTING, Some(1))
    };
    // A start is found by the topic it carried, wherever it is in the list.
    assert_eq!(
        adopt_requested(&marker("topic:t-ours"), &recent).map(|d| d.id.as_str()),
        Some("d2")
    );
    assert_eq!(adopt_requested(&marker("topic:t-lost"), &recent), None);
    // A redeploy: the newest, if newer than the newest before the call.
    assert_eq!(
        adopt_requested(&marker("after:d2"), &recent).map(|d| d.id.as_str()),
        Some("d3")
    );
    assert_eq!(adopt_requested(&marker("after:d3"), &recent), None);
    assert_eq!(
        adopt_requested(&marker("after:"), &recent).map(|d| d.id.as_str()),
        Some("d3")
    );
    assert_eq!(adopt_requested(&marker("after:"), &[]), None);
    assert_eq!(adopt_requested(&marker("d3"), &recent), None, "no marker");
    // Compute updates: the instance's newest deployment.
    assert_eq!(
        adopt_requested_update(&marker("after:c1"), Some("c2")),
        Some("c2")
    );
    assert_eq!(
        adopt_requested_update(&marker("after:c2"), Some("c2")),
        None
    );
    assert_eq!(adopt_requested_update(&marker("after:c2"), None), None);
}

#[test]
fn deadlines_pass() {
    let now = Timestamp::now();
    let mut o = op(DEPLOY, "Pending", Some(1));
    assert!(!past_deadline(&o, now), "no deadline");
    o.deadline = Some((now - SignedDuration::from_secs(1)).to_string());
    assert!(past_deadline(&o, now));
    o.deadline = Some((now + SignedDuration::from_secs(60)).to_string());
    assert!(!past_deadline(&o, now));
    let fresh = new_operation(DEPLOY, "topic:x".into(), 3);
    assert_eq!(
        (fresh.state.as_str(), fresh.generation),
        (REQUESTING, Some(3))
    );
    assert!(!past_deadline(&fresh, now));
    assert!(past_deadline(
        &fresh,
        now + SignedDuration::from_secs(31 * 60)
    ));
}

#[test]
fn topics_are_version_4_uuids() {
    let t = topic_id();
    let parts: Vec<&str> = t.split('-').collect();
    assert_eq!(
        parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
        vec![8, 4, 4, 4, 12],
        "{t}"
    );
    assert!(parts[2].starts_with('4'), "{t}");
    assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"), "{t}");
    assert!(t.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    assert_ne!(topic_id(), t);
}

#[test]
fn pipeline_settings_spheron_cannot_honour_are_refused() {
    let mut s = site_spec(main_repo());
    assert!(check_pipeline(&s).is_ok());
    s.pipeline = Some(PipelineSpec::default());
    assert!(check_pipeline(&s).is_ok());
    s.pipeline = Some(PipelineSpec {
        test: true,
        ..Default::default()
    });
    assert!(check_pipeline(&s)
        .expect_err("test")
        .to_string()
        .starts_with("spec.pipeline.test"));
    s.pipeline = Some(PipelineSpec {
        run: RunState::Stopped,
        ..Default::default()
    });
    assert!(check_pipeline(&s)
        .expect_err("run")
        .to_string()
        .starts_with("spec.pipeline.run"));
}

#[test]
fn projects_are_found_by_id_or_repository() {
    let projects: Vec<Project> = serde_json::from_value(json!([
        {"_id": "p1", "name": "shop", "url": "https://github.com/acme/shop"},
        {"_id": "p2", "name": "blog", "url": "https://github.com/acme/blog"},
    ]))
    .expect("projects");
    let shop = "https://github.com/acme/shop";
    assert_eq!(
        locate(&projects, Some("p2".to_string()), shop, false, false),
        Located::Found(&projects[1])
    );
    assert_eq!(
        locate(&projects, Some("p9".to_string()), shop, false, false),
        Located::Gone("p9".to_string())
    );
    assert_eq!(
        locate(&projects, None, shop, false, false),
        Located::NameTaken(&projects[0])
    );
    assert_eq!(
        locate(&projects, None, shop, true, false),
        Located::Found(&projects[0])
    );
    assert_eq!(
        locate(&projects, None, "https://github.com/acme/new", false, false),
        Located::Absent
    );
    let instances: Vec<ComputeInstance> = serde_json::from_value(json!([
        {"_id": "i1", "name": "ns-a", "state": "Active"},
        {"_id": "i2", "name": "ns-a", "state": "Active"},
    ]))
    .expect("instances");
    assert_eq!(
        locate(&instances, None, "ns-a", true, false),
        Located::Ambiguous(2)
    );
    assert_eq!(
        locate(&instances, Some("i1".to_string()), "x", false, false),
        Located::Found(&instances[0])
    );
}

// ----- compute --------------------------------------------------------------------------

#[test]
fn images_split_into_name_and_tag() {
    assert_eq!(split_image("nginx"), ("nginx".into(), None));
    assert_eq!(
        split_image("nginx:1.27"),
        ("nginx".into(), Some("1.27".into()))
    );
    assert_eq!(
        split_image("registry:5000/app"),
        ("registry:5000/app".into(), None)
    );
    assert_eq!(
        split_image("registry:5000/app:v2"),
        ("registry:5000/app".into(), Some("v2".into()))
    );
    // The tag follows the image, else the source's tag or commit, else latest.
    assert_eq!(
        image_and_tag("nginx:1.27", GitRef::Tag("v1")),
        ("nginx".into(), "1.27".into())
    );
    assert_eq!(
        image_and_tag("ghcr.io/acme/shop", GitRef::Tag("v1")),
        ("ghcr.io/acme/shop".into(), "v1".into())
    );
    assert_eq!(
        image_and_tag("shop", GitRef::Commit("abc1234")),
        ("shop".into(), "abc1234".into())
    );
    assert_eq!(
        image_and_tag("shop", GitRef::Branch("main")),
        ("shop".into(), "latest".into())
    );
    assert_eq!(
        image_and_tag("shop:", GitRef::Branch("main")),
        ("shop".into(), "latest".into())
    );
}

#[test]
fn the_main_service_follows_the_spec_and_keeps_the_rest() {
    let mut s = compute_spec(
        json!({"image": "nginx:1.27", "machine": "Ventus Nano 1"}),
        3,
    );
    s.env = vec![
        EnvVar {
            name: "MODE".into(),
            value: Some("prod".into()),
            value_from: None,
        },
        EnvVar {
            name: "TOKEN".into(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: SecretKeyRef {
                    name: "s".into(),
                    key: "k".into(),
                    namespace: None,
                },
            }),
        },
    ];
    let compute = s.spheron.clone().and_then(|x| x.compute).expect("compute");
    let m = MainService::new(&s, &compute, &env(&[("MODE", "prod"), ("TOKEN", "t0k3n")]));
    assert_eq!(m.region, DEFAULT_REGION);
    let new = m.config(None).expect("create");
    assert_eq!(new.name, MAIN_SERVICE);
    assert_eq!((new.image.as_str(), new.tag.as_str()), ("nginx", "1.27"));
    assert_eq!(new.service_count, 3);
    assert_eq!(new.akash_machine_image_name, "Ventus Nano 1");
    assert_eq!(new.ports[0].container_port, MAIN_PORT);
    assert_eq!(
        new.env,
        vec![
            EnvEntry::new("MODE", "prod", false),
            EnvEntry::new("TOKEN", "t0k3n", true)
        ]
    );
    // Over what runs: the name, ports and command stay.
    let running = service(
        json!({"name": "web", "ports": [{"containerPort": 8080, "exposedPort": 80}],
        "command": ["serve"], "serviceCount": 1}),
    );
    let updated = m.config(Some(&running)).expect("update");
    assert_eq!(updated.name, "web");
    assert_eq!(updated.ports[0].container_port, 8080);
    assert_eq!(updated.command, vec!["serve".to_string()]);
    assert_eq!(updated.service_count, 3);
    // A create needs an image and a machine; an adopted instance keeps its own.
    let bare = compute_spec(json!({}), 1);
    let none = MainService::new(&bare, &SpheronCompute::default(), &BTreeMap::new());
    assert!(none
        .config(None)
        .expect_err("image")
        .starts_with("spec.spheron.compute.image"));
    let no_machine = MainService::new(
        &bare,
        &SpheronCompute {
            image: Some("x".into()),
            ..Default::default()
        },
        &BTreeMap::new(),
    );
    assert!(no_machine
        .config(None)
        .expect_err("machine")
        .starts_with("spec.spheron.compute.machine"));
    let kept = none.config(Some(&running)).expect("adopted");
    assert_eq!(
        (kept.image.as_str(), kept.akash_machine_image_name.as_str()),
        ("nginx", "Ventus Nano 1")
    );
    // spec.plan names the machine when compute.machine does not.
    let mut planned = compute_spec(json!({"image": "x"}), 1);
    planned.plan = Some("Ventus Small 1".into());
    let c = planned
        .spheron
        .clone()
        .and_then(|x| x.compute)
        .expect("compute");
    assert_eq!(
        MainService::new(&planned, &c, &BTreeMap::new())
            .machine
            .as_deref(),
        Some("Ventus Small 1")
    );
}

#[test]
fn every_difference_of_the_main_service_is_named() {
    let s = compute_spec(
        json!({"image": "nginx:1.27", "machine": "Ventus Nano 1"}),
        2,
    );
    let compute = s.spheron.clone().and_then(|x| x.compute).expect("compute");
    let m = MainService::new(&s, &compute, &env(&[("MODE", "prod")]));
    let runs = |patch: serde_json::Value| {
        let mut base =
            json!({"serviceCount": 2, "env": [{"value": "MODE=prod", "isSecret": false}]});
        if let (Some(b), Some(p)) = (base.as_object_mut(), patch.as_object()) {
            b.extend(p.clone());
        }
        service(base)
    };
    assert_eq!(main_differences(&runs(json!({})), &m), Vec::new());
    let cases = [
        (json!({"serviceCount": 5}), "spec.replicas", "5", "2"),
        (
            json!({"image": "httpd"}),
            "spec.spheron.compute.image",
            "httpd:1.27",
            "nginx:1.27",
        ),
        (
            json!({"tag": "1.26"}),
            "spec.spheron.compute.image",
            "nginx:1.26",
            "nginx:1.27",
        ),
        (
            json!({"agreedMachineImage": {"machineType": "Ventus Small 1"}}),
            "spec.spheron.compute.machine",
            "\"Ventus Small 1\"",
            "\"Ventus Nano 1\"",
        ),
        (
            json!({"env": [{"value": "MODE=debug"}]}),
            "spec.env[MODE]",
            "\"debug\"",
            "\"prod\"",
        ),
        (
            json!({"env": []}),
            "spec.env[MODE]",
            "(not set)",
            "\"prod\"",
        ),
    ];
    for (patch, field, observed, desired) in cases {
        let d = main_differences(&runs(patch.clone()), &m);
        assert_eq!(
            d,
            vec![Difference {
                field: field.into(),
                observed: observed.into(),
                desired: desired.into()
            }],
            "{patch}"
        );
    }
    let extra = main_differences(
        &runs(json!({"env": [{"value": "MODE=prod"}, {"value": "KEY=s3cret", "isSecret": true}]})),
        &m,
    );
    assert_eq!(
        extra,
        vec![Difference {
            field: "spec.env[KEY]".into(),
            observed: "(a Secret value)".into(),
            desired: "(not set)".into()
        }]
    );
    // Fields the spec leaves out are never compared.
    let open = MainService::new(
        &compute_spec(json!({}), 2),
        &SpheronCompute::default(),
        &env(&[("MODE", "prod")]),
    );
    assert!(main_differences(
        &runs(json!({"image": "anything", "agreedMachineImage": null})),
        &open
    )
    .is_empty());
}

#[test]
fn secret_values_never_reach_an_event() {
    let mut s = compute_spec(json!({"image": "x:1", "machine": "m"}), 1);
    s.env = vec![EnvVar {
        name: "TOKEN".into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: SecretKeyRef {
                name: "s".into(),
                key: "k".into(),
                namespace: None,
            },
        }),
    }];
    let c = s.spheron.clone().and_then(|x| x.compute).expect("compute");
    let m = MainService::new(&s, &c, &env(&[("TOKEN", "new-s3cret")]));
    let running = service(
        json!({"image": "x", "tag": "1", "agreedMachineImage": {"machineType": "m"},
        "env": [{"value": "TOKEN=old-s3cret", "isSecret": true}]}),
    );
    let d = main_differences(&running, &m);
    assert_eq!(d.len(), 1);
    // The differences are what a drift step's changes (and so its Events) are made of.
    for diff in &d {
        assert!(
            !diff.observed.contains("s3cret") && !diff.desired.contains("s3cret"),
            "{diff:?}"
        );
    }
    let note = update_note("i1", &d);
    assert!(!note.message.contains("s3cret"), "{}", note.message);
}

#[test]
fn a_spec_update_is_one_event_naming_every_field() {
    let d = vec![
        Difference {
            field: "spec.replicas".into(),
            observed: "5".into(),
            desired: "3".into(),
        },
        Difference {
            field: "spec.env[A]".into(),
            observed: "\"x\"".into(),
            desired: "\"y\"".into(),
        },
    ];
    // Drift corrections are the plan's drift steps (a_compute_plan_sets_back_replicas_changed_at_spheron_as_drift).
    let update = update_note("i1", &d);
    assert_eq!(
        (update.reason.as_str(), update.drift_field.clone()),
        ("Updated", None)
    );
    assert_eq!(
        update.message,
        "updating compute instance i1: spec.replicas 5 -> 3, spec.env[A] \"x\" -> \"y\""
    );
}

#[test]
fn every_compute_deployment_state_has_a_next_step() {
    use ComputeStep::*;
    let g = 4;
    let ours = |generation| OperationStatus {
        id: Some("c2".into()),
        ..op(UPDATE, "Queued", generation)
    };
    let theirs = OperationStatus {
        id: Some("c1".into()),
        ..op(UPDATE, "Deployed", Some(g))
    };
    assert_eq!(compute_step(Some(&ours(Some(g))), None, g, false), Converge);
    for state in ["Queued", "Pending", "SomethingNew"] {
        let n = compute_deployment("c2", state);
        assert_eq!(
            compute_step(Some(&ours(Some(g))), Some(&n), g, false),
            Wait { ours: true },
            "{state}"
        );
        assert_eq!(
            compute_step(Some(&theirs), Some(&n), g, false),
            Wait { ours: false },
            "{state}"
        );
        assert_eq!(
            compute_step(None, Some(&n), g, true),
            Wait { ours: false },
            "{state}"
        );
    }
    for state in ["Deployed", "Deprecated", "Deprecated-Provider"] {
        let n = compute_deployment("c2", state);
        assert_eq!(
            compute_step(Some(&ours(Some(g))), Some(&n), g, false),
            Converge,
            "{state}"
        );
        assert_eq!(compute_step(None, Some(&n), g, false), Converge, "{state}");
    }
    let failed = compute_deployment("c2", "Failed");
    assert_eq!(
        compute_step(Some(&ours(Some(g))), Some(&failed), g, false),
        Failed
    );
    // Retried on request or a new spec; someone else's failure is not this spec's.
    assert_eq!(
        compute_step(Some(&ours(Some(g))), Some(&failed), g, true),
        Converge
    );
    assert_eq!(
        compute_step(Some(&ours(Some(g - 1))), Some(&failed), g, false),
        Converge
    );
    assert_eq!(
        compute_step(Some(&theirs), Some(&failed), g, false),
        Converge
    );
    assert_eq!(compute_step(None, Some(&failed), g, false), Converge);
}

#[test]
fn service_scales_leave_the_main_service_to_the_workspace() {
    let services = vec![
        service(json!({"name": "web", "serviceCount": 2})),
        service(json!({"name": "worker", "serviceCount": 1, "image": "w", "tag": "7"})),
    ];
    let err = plan_service_scale(&services, "web", 3).expect_err("main");
    assert_eq!(err.reason(), Reason::ScaledByWorkspace);
    assert!(err.to_string().contains("spec.replicas"), "{err}");
    let err = plan_service_scale(&services, "cron", 3).expect_err("unknown");
    assert_eq!(err.reason(), Reason::ServiceNotFound);
    assert!(err.to_string().contains("web, worker"), "{err}");
    assert_eq!(
        plan_service_scale(&services, "worker", 1).ok(),
        Some(ScalePlan::InSync(1))
    );
    match plan_service_scale(&services, "worker", 4) {
        Ok(ScalePlan::Scale {
            observed,
            services: sent,
        }) => {
            assert_eq!(observed, 1);
            // The full list again, only this service's count changed.
            assert_eq!(
                sent.iter()
                    .map(|s| (s.name.as_str(), s.service_count))
                    .collect::<Vec<_>>(),
                vec![("web", 2), ("worker", 4)]
            );
            assert_eq!((sent[1].image.as_str(), sent[1].tag.as_str()), ("w", "7"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn drift_needs_a_ready_status_of_the_same_spec() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    let ready = |status: &str, generation: i64| Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: "R".into(),
        message: String::new(),
        observed_generation: Some(generation),
        last_transition_time: Time(Timestamp::now()),
    };
    assert!(is_drift(&[ready("True", 3)], 3, Some(3)));
    // The spec changed since: an update, not drift.
    assert!(!is_drift(&[ready("True", 2)], 3, Some(2)));
    // The last status of this spec was a failure or still progressing: no baseline.
    assert!(!is_drift(&[ready("False", 3)], 3, Some(3)));
    assert!(!is_drift(&[], 3, Some(3)));
    assert!(!is_drift(&[ready("True", 3)], 3, None));
}

#[test]
fn a_workspace_block_is_site_or_compute() {
    let s = SpheronWorkspace::default();
    assert!(s.compute.is_none() && s.site.is_none());
    assert_eq!(selector("ns/shop"), "bosun.dev/workspace=ns.shop");
}

// ----- compute on the plan seam ---------------------------------------------------------

/// What Spheron holds for the compute plan; observe's reads are answered from it.
struct ComputeWorld {
    instances: Vec<ComputeInstance>,
    deployments: BTreeMap<String, ComputeDeployment>,
    confirmed: Option<(String, u64)>,
}

fn instance(id: &str, deployments: &[&str], active: Option<&str>) -> ComputeInstance {
    serde_json::from_value(json!({
        "_id": id, "state": "Active", "name": "team-api",
        "deployments": deployments, "activeDeployment": active, "region": "any"
    }))
    .expect("instance")
}

fn running(id: &str, status: &str, replicas: u32) -> ComputeDeployment {
    serde_json::from_value(json!({"_id": id, "status": status, "services": [
        {"name": "main", "image": "nginx", "tag": "1.27", "serviceCount": replicas,
         "ports": [{"containerPort": 80, "exposedPort": 80}], "env": [],
         "agreedMachineImage": {"machineType": "Ventus Nano 1"}}
    ]}))
    .expect("compute deployment")
}

/// Runs observe's loop against the world: the reads made, and the plan.
fn plan_compute(
    spec: &WorkspaceSpec,
    previous: &WorkspaceStatus,
    generation: i64,
    hold: Option<crate::core::plan::Hold>,
    world: &ComputeWorld,
) -> (Vec<ComputeRead>, Result<Decided<ComputeOp>, ComputeHalt>) {
    let compute = spec
        .spheron
        .clone()
        .and_then(|s| s.compute)
        .expect("compute");
    let request = WorkspaceRequest {
        key: "team/api".into(),
        external_name: "team-api".into(),
        spec,
        env: BTreeMap::new(),
        previous,
        generation,
        observed_generation: previous.observed_generation,
        mode: crate::core::reconciler::Mode {
            hold,
            requested: false,
        },
        create_pending: false,
        poll_interval: None,
    };
    let mut o = ComputeObserved::new("org", world.instances.clone(), "topic-1".into());
    let mut reads = Vec::new();
    loop {
        let result = decide_compute(&request, &compute, &o);
        let Err(crate::core::plan::Halt::Need(read)) = &result else {
            return (reads, result);
        };
        assert!(reads.len() < 8, "reads without end: {reads:?}");
        reads.push(read.clone());
        match read.clone() {
            ComputeRead::FreshListing => o.fresh = true,
            ComputeRead::OtherKind(id) => {
                o.other_kind.insert(id, false);
            }
            ComputeRead::Confirmed(id) => {
                o.confirmed.insert(id, world.confirmed.clone());
            }
            ComputeRead::Deployment(id) => {
                let d = world.deployments.get(&id).cloned();
                o.deployments.insert(id, d);
            }
        }
    }
}

fn ready_at(generation: i64) -> WorkspaceStatus {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    WorkspaceStatus {
        external_id: Some("i1".into()),
        observed_generation: Some(generation),
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: "Available".into(),
            message: String::new(),
            observed_generation: Some(generation),
            last_transition_time: Time(Timestamp::now()),
        }],
        ..Default::default()
    }
}

#[test]
fn a_compute_plan_creates_then_follows_the_first_deployment() {
    use crate::core::plan::table::assert_steps;
    use crate::core::plan::StepAction::{Await, Create};
    let s = compute_spec(
        json!({"image": "nginx:1.27", "machine": "Ventus Nano 1"}),
        2,
    );
    let world = ComputeWorld {
        instances: vec![],
        deployments: BTreeMap::new(),
        confirmed: None,
    };
    let (reads, d) = plan_compute(&s, &WorkspaceStatus::default(), 1, None, &world);
    assert_eq!(
        reads,
        vec![],
        "without the create-pending marker bosun never sent a create: the shared listing will do"
    );
    let p = d.expect("plan").planned;
    assert_steps(
        &p.plan,
        &[
            (
                Create,
                "compute instance",
                "<new>",
                false,
                vec!["spec.spheron.compute.image", "spec.replicas"],
            ),
            (Await, "deployment", "<step 1>", false, vec![]),
        ],
        "create",
    );
    let ComputeOp::Create { body, .. } = &p.plan.steps[0].op else {
        panic!("not a create")
    };
    assert_eq!(
        body.unique_topic_id, "topic-1",
        "the topic comes from the observation"
    );
    assert!(
        p.report.notes.is_empty(),
        "the Created Event comes with the answer"
    );

    // Observed: nothing to create, and no plan.
    let (_, d) = plan_compute(
        &s,
        &WorkspaceStatus::default(),
        1,
        Some(crate::core::plan::Hold::Observe),
        &world,
    );
    let p = d.expect("plan").planned;
    assert!(p.plan.is_empty());
    assert_eq!(p.report.readiness.reason, Reason::NotFound);
}

#[test]
fn a_compute_plan_sets_back_replicas_changed_at_spheron_as_drift() {
    use crate::core::plan::table::assert_steps;
    use crate::core::plan::StepAction::{Await, Update};
    let s = compute_spec(
        json!({"image": "nginx:1.27", "machine": "Ventus Nano 1"}),
        2,
    );
    let mut world = ComputeWorld {
        instances: vec![instance("i1", &["d1", "d2"], Some("d2"))],
        deployments: [("d2".to_string(), running("d2", "Deployed", 3))].into(),
        confirmed: None,
    };
    let (reads, d) = plan_compute(&s, &ready_at(1), 1, None, &world);
    assert_eq!(
        reads,
        vec![
            ComputeRead::Confirmed("i1".into()),
            ComputeRead::Deployment("d2".into())
        ]
    );
    let p = d.expect("plan").planned;
    assert_steps(
        &p.plan,
        &[
            (
                Update,
                "compute instance",
                "i1",
                true,
                vec!["spec.replicas"],
            ),
            (Await, "deployment", "<step 1>", false, vec![]),
        ],
        "drift",
    );
    assert_eq!(p.plan.steps[0].first_change(), ("3".into(), "2".into()));
    assert!(
        p.plan.steps[0].record.is_some(),
        "the update's operation is saved before it is sent"
    );
    // A spec change is an update, not drift.
    let (_, d) = plan_compute(&s, &ready_at(1), 2, None, &world);
    assert!(!d.expect("plan").planned.plan.steps[0].drift);

    // In line with the spec: nothing to send, and bosun may remember that.
    world
        .deployments
        .insert("d2".into(), running("d2", "Deployed", 2));
    let (_, d) = plan_compute(&s, &ready_at(1), 1, None, &world);
    let d = d.expect("plan");
    assert!(d.planned.plan.is_empty() && d.planned.report.readiness.ready);
    let (_, _, print) = d.confirm.expect("confirmed");
    // Remembered: the next poll reads no deployment.
    world.confirmed = Some(("d2".into(), print));
    let (reads, d) = plan_compute(&s, &ready_at(1), 1, None, &world);
    assert_eq!(reads, vec![ComputeRead::Confirmed("i1".into())]);
    assert!(d.expect("plan").planned.report.readiness.ready);
}

#[test]
fn a_compute_deployment_in_flight_is_awaited() {
    let s = compute_spec(
        json!({"image": "nginx:1.27", "machine": "Ventus Nano 1"}),
        2,
    );
    let world = ComputeWorld {
        instances: vec![instance("i1", &["d1", "d3"], Some("d1"))],
        deployments: [("d3".to_string(), running("d3", "Pending", 2))].into(),
        confirmed: None,
    };
    let (_, d) = plan_compute(&s, &ready_at(1), 1, None, &world);
    let p = d.expect("plan").planned;
    assert_eq!(p.plan.steps.len(), 1);
    assert_eq!(p.plan.steps[0].action, crate::core::plan::StepAction::Await);
    assert_eq!(p.report.readiness.reason, Reason::Deploying);
}

// ----- sites on the plan seam -----------------------------------------------------------

fn project(id: &str, state: &str) -> Project {
    serde_json::from_value(json!({
        "_id": id, "name": "shop", "state": state,
        "url": "https://github.com/acme/shop", "environmentVariables": []
    }))
    .expect("project")
}

/// Runs observe's loop against a world of projects and deployments: the reads made, and the
/// plan.
fn plan_site_of(
    spec: &WorkspaceSpec,
    previous: &WorkspaceStatus,
    projects: Vec<Project>,
    deployments: &[Deployment],
    confirmed: Option<(String, u64)>,
) -> (Vec<SiteRead>, Result<Decided<SiteOp>, SiteHalt>) {
    let request = WorkspaceRequest {
        key: "team/shop".into(),
        external_name: "team-shop".into(),
        spec,
        env: BTreeMap::new(),
        previous,
        generation: 1,
        observed_generation: previous.observed_generation,
        mode: crate::core::reconciler::Mode {
            hold: None,
            requested: false,
        },
        create_pending: false,
        poll_interval: None,
    };
    let mut o = SiteObserved::new("org", Arc::new(projects), "topic-1".into());
    let mut reads = Vec::new();
    loop {
        let result = decide_site(&request, &o);
        let Err(crate::core::plan::Halt::Need(read)) = &result else {
            return (reads, result);
        };
        assert!(reads.len() < 8, "reads without end: {reads:?}");
        reads.push(read.clone());
        match read.clone() {
            SiteRead::FreshListing => o.fresh = true,
            SiteRead::OtherKind(id) => {
                o.other_kind.insert(id, false);
            }
            SiteRead::Recent(p) => o.read_recent(p, deployments.to_vec()),
            SiteRead::Newest(p) => o.read_newest(p, deployments.first().cloned()),
            SiteRead::Deployment(id) => {
                let d = deployments.iter().find(|d| d.id == id).cloned();
                o.deployments.insert(id, d);
            }
            SiteRead::Confirmed(p) => {
                o.confirmed.insert(p, confirmed.clone());
            }
        }
    }
}

#[test]
fn a_site_plan_creates_its_project_with_the_first_deployment() {
    use crate::core::plan::table::assert_steps;
    use crate::core::plan::StepAction::{Await, Create};
    let s = site_spec(main_repo());
    let (reads, d) = plan_site_of(&s, &WorkspaceStatus::default(), vec![], &[], None);
    assert_eq!(
        reads,
        vec![],
        "no create was ever sent: the shared listing will do"
    );
    let p = d.expect("plan").planned;
    assert_steps(
        &p.plan,
        &[
            (Create, "project", "<new>", false, vec!["status.sourceRef"]),
            (Await, "deployment", "<step 1>", false, vec![]),
        ],
        "create",
    );
    assert!(
        p.plan.steps[0].record.is_some(),
        "the start is recorded before it is sent"
    );
    let SiteOp::Start { body, .. } = &p.plan.steps[0].op else {
        panic!("not a start")
    };
    assert_eq!(body.unique_topic_id.as_deref(), Some("topic-1"));
}

#[test]
fn a_site_plan_follows_serves_and_redeploys_for_a_new_branch() {
    use crate::core::plan::table::assert_steps;
    use crate::core::plan::StepAction::{Await, Start, Update};
    let s = site_spec(main_repo());
    let previous = WorkspaceStatus {
        external_id: Some("p1".into()),
        observed_generation: Some(1),
        ..Default::default()
    };
    // An adopted project: its newest deployment is followed.
    let building = deployment(json!({"_id": "d1", "status": "Pending"}));
    let (reads, d) = plan_site_of(
        &s,
        &previous,
        vec![project("p1", "MAINTAINED")],
        &[building],
        None,
    );
    assert_eq!(
        reads,
        vec![SiteRead::Newest("p1".into())],
        "the listing's deployment is not read twice"
    );
    let p = d.expect("plan").planned;
    assert_steps(
        &p.plan,
        &[(Await, "deployment", "d1", false, vec![])],
        "in flight",
    );

    // Served as the spec says: nothing to send, remembered.
    let served = deployment(json!({"_id": "d1", "status": "Deployed"}));
    let (_, d) = plan_site_of(
        &s,
        &previous,
        vec![project("p1", "MAINTAINED")],
        std::slice::from_ref(&served),
        None,
    );
    let d = d.expect("plan");
    assert!(d.planned.plan.is_empty() && d.planned.report.readiness.ready);
    assert!(d.confirm.is_some());

    // Another branch: a new deployment; an archived project is set back first.
    let s = site_spec(json!({"repository": "https://github.com/acme/shop.git", "branch": "next"}));
    let (_, d) = plan_site_of(
        &s,
        &previous,
        vec![project("p1", "ARCHIVED")],
        &[served],
        None,
    );
    let p = d.expect("plan").planned;
    assert_steps(
        &p.plan,
        &[
            (Update, "project", "p1", true, vec!["project state"]),
            (Start, "project", "p1", false, vec!["spec.source"]),
            (Await, "deployment", "<step 2>", false, vec![]),
        ],
        "new branch",
    );
}

#[test]
fn an_instance_of_the_name_is_adopted_only_when_asked() {
    let mut s = compute_spec(
        json!({"image": "nginx:1.27", "machine": "Ventus Nano 1"}),
        2,
    );
    let world = ComputeWorld {
        instances: vec![instance("i1", &["d2"], Some("d2"))],
        deployments: [("d2".to_string(), running("d2", "Deployed", 2))].into(),
        confirmed: None,
    };
    let (_, d) = plan_compute(&s, &WorkspaceStatus::default(), 1, None, &world);
    let Err(crate::core::plan::Halt::Error(err)) = d else {
        panic!("a name bosun did not create is refused");
    };
    assert_eq!(err.reason(), Reason::NameTaken, "never taken over unasked");
    s.adopt_by_name = true;
    let (_, d) = plan_compute(&s, &WorkspaceStatus::default(), 1, None, &world);
    let p = d.expect("plan").planned;
    assert_eq!(
        p.adopt.as_deref(),
        Some("i1"),
        "its id is saved before any step"
    );
    assert!(
        p.plan.is_empty(),
        "it already runs the spec: {:?}",
        p.plan.view()
    );
    assert_eq!(
        p.report.messages(Reason::Adopted),
        vec!["manages Spheron compute instance i1 (team-api)"]
    );
}
