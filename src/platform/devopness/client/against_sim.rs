//! The Devopness client against the Devopness simulator (`crate::platform::devopness::sim`).

use super::tests::{connection, update_body};
use super::*;
use crate::platform::devopness::wire::tests::lets_encrypt;

fn sim_connection(endpoint: &str, token: &str, project: Option<i64>) -> Connection {
    let mut c = connection(endpoint, project);
    c.credential = Credential::new(token);
    c
}

fn app_body(name: &str) -> CreateApplication {
    CreateApplication {
        name: name.into(),
        programming_language: "nodejs".into(),
        engine_version: "20".into(),
        framework: "none".into(),
        repository: "acme/web".into(),
        credential_id: 1,
        default_branch: "main".into(),
        root_directory: None,
        build_command: None,
        install_dependencies_command: None,
        deployments_keep: None,
        linked_resources: vec![],
    }
}

#[tokio::test]
async fn works_against_the_simulator() {
    use crate::platform::devopness::sim::{router, DevopnessSim};
    use crate::sim::{bind, SimConfig};
    let config = SimConfig::default();
    let sim = DevopnessSim::new(&config);
    sim.set_step_time(std::time::Duration::from_millis(20));
    let server = bind("127.0.0.1:0".parse().expect("addr"), router(sim.clone()))
        .await
        .expect("bind");
    let base = server.base_url();
    let c = Devopness::new(sim_connection(&base, &config.token, Some(1))).expect("client");

    // Identity, project, environment.
    assert!(c.verify().await.expect("verify").starts_with("project 1"));
    assert!(c.get_environment(1).await.expect("env").is_some());
    assert!(c.get_environment(999).await.expect("no env").is_none());
    let bad = Devopness::new(sim_connection(&base, "wrong", Some(1))).expect("client");
    assert_eq!(
        bad.verify().await.expect_err("401").kind,
        ErrorKind::Unauthorized
    );

    // Applications: create, duplicate (422 on `name`), list, get, update.
    let app = c
        .create_application(1, &app_body("web"))
        .await
        .expect("create");
    let e = c
        .create_application(1, &app_body("web"))
        .await
        .expect_err("duplicate");
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert_eq!(e.field.as_deref(), Some("name"), "{}", e.message);
    let listed = c.list_applications(1).await.expect("list");
    assert_eq!(
        listed.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![app.id]
    );
    let mut update = update_body(app.id);
    update.engine_version = "22".into();
    c.update_application(&update).await.expect("update");
    let got = c
        .get_application(app.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(got.engine_version.as_deref(), Some("22"));

    // Deploy and poll the action to its end.
    let action_id = c
        .deploy_application(
            app.id,
            &DeployApplication {
                deployment_type: DeploymentType::Deploy,
                source_type: Some(SourceType::Commit),
                source_ref: Some("abc123".into()),
                pipeline_id: None,
                servers: vec![1],
            },
        )
        .await
        .expect("deploy");
    let mut last = None;
    for _ in 0..100 {
        let a = c
            .get_action(action_id)
            .await
            .expect("action")
            .expect("exists");
        if a.status.is_terminal() {
            last = Some(a);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let done = last.expect("the action ended");
    assert_eq!(done.status, ActionStatus::Completed, "{done:?}");
    assert_eq!(sim.deployed_ref(app.id as u64).as_deref(), Some("abc123"));

    // A failed deploy explains itself.
    sim.fail_next_deploy(app.id as u64, "npm ci failed");
    let failed_id = c
        .deploy_application(
            app.id,
            &DeployApplication {
                deployment_type: DeploymentType::Redeploy,
                source_type: None,
                source_ref: None,
                pipeline_id: None,
                servers: vec![],
            },
        )
        .await
        .expect("deploy");
    let mut failed = None;
    for _ in 0..100 {
        let a = c.get_action(failed_id).await.expect("a").expect("exists");
        if a.status.is_terminal() {
            failed = Some(a);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let failed = failed.expect("ended");
    assert_eq!(failed.status, ActionStatus::Failed);
    assert!(failed.failure_reason().is_some());

    // Variables, across pages.
    for i in 0..150 {
        c.create_application_variable(app.id, &CreateVariable::env(format!("K{i}"), "v", false))
            .await
            .expect("create variable");
    }
    let vars = c.list_application_variables(app.id).await.expect("vars");
    assert_eq!(vars.len(), 150);
    let v = &vars[0];
    c.update_variable(&UpdateVariable {
        id: v.id,
        key: v.key.clone(),
        value: "changed".into(),
        target: "os-env-var".into(),
        variable_type: "variable".into(),
        hidden: true,
        description: None,
    })
    .await
    .expect("update variable");
    assert_eq!(
        c.delete_variable(v.id).await.expect("delete"),
        Deleted::Done { action_id: None }
    );
    assert_eq!(
        c.delete_variable(v.id).await.expect("gone"),
        Deleted::AlreadyGone
    );

    // Virtual hosts.
    let vh = c
        .create_virtual_host(
            1,
            &CreateVirtualHost {
                virtual_host_type: "name-based".into(),
                name: "shop.example.com".into(),
                application_id: Some(app.id),
                root_directory: None,
                application_listen_address: None,
                linked_resources: vec![],
            },
        )
        .await
        .expect("vhost");
    assert_eq!(c.list_virtual_hosts(1).await.expect("vhosts").len(), 1);
    assert!(matches!(
        c.delete_virtual_host(vh.id).await.expect("delete"),
        Deleted::Done { action_id: Some(_) }
    ));

    // Usage limit: 402.
    sim.set_usage_limit_reached(true);
    let e = c
        .create_application(1, &app_body("other"))
        .await
        .expect_err("402");
    assert_eq!(e.kind, ErrorKind::QuotaExceeded);
    assert!(e
        .message
        .contains("usage limit reached on the project's subscription"));
    sim.set_usage_limit_reached(false);

    // Delete: an action, then already gone.
    assert!(matches!(
        c.delete_application(app.id).await.expect("delete"),
        Deleted::Done { action_id: Some(_) }
    ));
    assert_eq!(
        c.delete_application(app.id).await.expect("gone"),
        Deleted::AlreadyGone
    );
    assert!(c.get_application(app.id).await.expect("get").is_none());
}

/// A simulator on a free port (step time 20 ms) and a client of it.
async fn sim_client() -> (
    crate::platform::devopness::sim::DevopnessSim,
    crate::sim::SimServer,
    Devopness,
) {
    use crate::platform::devopness::sim::{router, DevopnessSim};
    use crate::sim::{bind, SimConfig};
    let config = SimConfig::default();
    let sim = DevopnessSim::new(&config);
    sim.set_step_time(std::time::Duration::from_millis(20));
    let server = bind("127.0.0.1:0".parse().expect("addr"), router(sim.clone()))
        .await
        .expect("bind");
    let c =
        Devopness::new(sim_connection(&server.base_url(), &config.token, Some(1))).expect("client");
    (sim, server, c)
}

/// Polls an action until it ends.
async fn finished(c: &Devopness, id: i64) -> Action {
    for _ in 0..200 {
        let a = c.get_action(id).await.expect("action").expect("exists");
        if a.status.is_terminal() {
            return a;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("action {id} never ended");
}

fn vhost_body(name: &str, application_id: Option<i64>) -> CreateVirtualHost {
    CreateVirtualHost {
        virtual_host_type: "name-based".into(),
        name: name.into(),
        application_id,
        root_directory: None,
        application_listen_address: Some("http://127.0.0.1:3000".into()),
        linked_resources: vec![],
    }
}

#[tokio::test]
async fn virtual_hosts_update_deploy_get_against_the_simulator() {
    let (_sim, _server, c) = sim_client().await;
    let app = c
        .create_application(1, &app_body("web"))
        .await
        .expect("app");
    // Listed applications carry no servers; the full answer does once a deploy linked one.
    assert!(c.list_applications(1).await.expect("list")[0]
        .servers
        .is_empty());
    let deploy = DeployApplication {
        deployment_type: DeploymentType::Deploy,
        source_type: None,
        source_ref: None,
        pipeline_id: None,
        servers: vec![],
    };
    let action = c.deploy_application(app.id, &deploy).await.expect("deploy");
    finished(&c, action).await;
    let full = c.get_application(app.id).await.expect("get").expect("app");
    assert_eq!(full.servers.len(), 1);
    assert_eq!(full.servers[0].id, 1);
    assert_eq!(full.servers[0].ip_address.as_deref(), Some("10.0.0.1"));

    let vh = c
        .create_virtual_host(1, &vhost_body("shop.example.com", Some(app.id)))
        .await
        .expect("vhost");
    assert_eq!(vh.last_action, None);
    assert_eq!(vh.ssl_certificate, None);
    c.create_virtual_host(1, &vhost_body("other.example.com", None))
        .await
        .expect("second vhost");

    // Update: name, listen address, root directory; the application stays linked.
    c.update_virtual_host(&UpdateVirtualHost {
        id: vh.id,
        name: "Store.Example.com".into(),
        root_directory: Some("/public".into()),
        application_listen_address: Some("http://127.0.0.1:8080".into()),
        application_id: None,
    })
    .await
    .expect("update");
    let got = c
        .get_virtual_host(vh.id)
        .await
        .expect("get")
        .expect("vhost");
    assert_eq!(got.name, "store.example.com");
    assert_eq!(got.root_directory.as_deref(), Some("/public"));
    assert_eq!(
        got.application_listen_address.as_deref(),
        Some("http://127.0.0.1:8080")
    );
    assert_eq!(got.application_id, Some(app.id));

    // Update errors name the field.
    let e = c
        .update_virtual_host(&UpdateVirtualHost {
            id: vh.id,
            name: "other.example.com".into(),
            root_directory: None,
            application_listen_address: None,
            application_id: None,
        })
        .await
        .expect_err("duplicate name");
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert_eq!(e.field.as_deref(), Some("name"), "{}", e.message);
    assert!(e.message.contains("already been taken"), "{}", e.message);
    let e = c
        .update_virtual_host(&UpdateVirtualHost {
            id: vh.id,
            name: "not a domain".into(),
            root_directory: Some("relative".into()),
            application_listen_address: Some("ftp://x".into()),
            application_id: Some(424242),
        })
        .await
        .expect_err("invalid");
    assert_eq!(e.status, Some(422));
    assert_eq!(e.field.as_deref(), Some("application_id"), "{}", e.message);
    assert!(e.message.contains("(and 3 more errors)"), "{}", e.message);
    let e = c
        .update_virtual_host(&UpdateVirtualHost {
            id: 999_999,
            name: "x.example.com".into(),
            root_directory: None,
            application_listen_address: None,
            application_id: None,
        })
        .await
        .expect_err("unknown");
    assert_eq!(e.kind, ErrorKind::NotFound);

    // Deploy: an action on the virtual host, shown as its last action.
    let action = c.deploy_virtual_host(vh.id, &[]).await.expect("deploy");
    let pending = c
        .get_virtual_host(vh.id)
        .await
        .expect("get")
        .expect("vhost");
    let last = pending.last_action.expect("last action");
    assert_eq!(last.id, action);
    assert_eq!(last.action_type.as_deref(), Some("deploy"));
    let done = finished(&c, action).await;
    assert_eq!(done.status, ActionStatus::Completed);
    assert_eq!(done.action_type.as_deref(), Some("deploy"));
    let got = c
        .get_virtual_host(vh.id)
        .await
        .expect("get")
        .expect("vhost");
    assert_eq!(
        got.last_action.and_then(|a| a.status),
        Some(ActionStatus::Completed)
    );
    let listed = c.list_virtual_hosts(1).await.expect("list");
    let mine = listed.iter().find(|v| v.id == vh.id).expect("listed");
    assert_eq!(mine.last_action.as_ref().map(|a| a.id), Some(action));
    let e = c
        .deploy_virtual_host(vh.id, &[7])
        .await
        .expect_err("unknown server");
    assert_eq!(e.field.as_deref(), Some("servers"), "{}", e.message);
    let e = c
        .deploy_virtual_host(999_999, &[])
        .await
        .expect_err("unknown vhost");
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(c.get_virtual_host(999_999).await.expect("none").is_none());
}

#[tokio::test]
async fn certificates_are_issued_by_an_action_against_the_simulator() {
    let (sim, _server, c) = sim_client().await;
    let vh = c
        .create_virtual_host(1, &vhost_body("shop.example.com", None))
        .await
        .expect("vhost");

    // Create: inactive, named after the virtual host, issued by its last action.
    let cert = c
        .create_ssl_certificate(1, &lets_encrypt(vh.id))
        .await
        .expect("create");
    assert_eq!(cert.name, "shop.example.com");
    assert_eq!(cert.issuer.as_deref(), Some("lets-encrypt"));
    assert!(!cert.active);
    assert_eq!(cert.expires_at, None);
    assert_eq!(cert.virtual_host_id, None, "the spec does not link it back");
    let issue = cert.last_action.clone().expect("issuing action");
    assert_eq!(issue.action_type.as_deref(), Some("deploy"));
    let on_vhost = c
        .get_virtual_host(vh.id)
        .await
        .expect("get")
        .expect("vhost")
        .ssl_certificate
        .expect("relation");
    assert_eq!((on_vhost.id, on_vhost.active), (cert.id, false));

    // Active once the action completes, for 90 days.
    assert_eq!(finished(&c, issue.id).await.status, ActionStatus::Completed);
    let got = c
        .get_ssl_certificate(cert.id)
        .await
        .expect("get")
        .expect("certificate");
    assert!(got.active);
    let expires: jiff::Timestamp = got
        .expires_at
        .as_deref()
        .expect("expires_at")
        .parse()
        .expect("timestamp");
    let days = expires.duration_since(jiff::Timestamp::now()).as_hours() / 24;
    assert!((89..=90).contains(&days), "{days} days");
    let on_vhost = c
        .get_virtual_host(vh.id)
        .await
        .expect("get")
        .expect("vhost")
        .ssl_certificate
        .expect("relation");
    assert!(on_vhost.active);
    let listed = c.list_ssl_certificates(1).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].id, listed[0].active), (cert.id, true));

    // One certificate per virtual host; unknown virtual host; custom needs its PEMs.
    let e = c
        .create_ssl_certificate(1, &lets_encrypt(vh.id))
        .await
        .expect_err("second");
    assert_eq!(e.field.as_deref(), Some("virtual_host_id"), "{}", e.message);
    assert!(e.message.contains("already has"), "{}", e.message);
    let e = c
        .create_ssl_certificate(1, &lets_encrypt(424_242))
        .await
        .expect_err("unknown vhost");
    assert_eq!(e.field.as_deref(), Some("virtual_host_id"), "{}", e.message);
    assert!(
        e.message.contains("virtual host id is invalid"),
        "{}",
        e.message
    );
    let other = c
        .create_virtual_host(1, &vhost_body("other.example.com", None))
        .await
        .expect("vhost");
    let custom = CreateSslCertificate {
        issuer: "custom".into(),
        ..lets_encrypt(other.id)
    };
    let e = c
        .create_ssl_certificate(1, &custom)
        .await
        .expect_err("custom without PEMs");
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert_eq!(
        e.field.as_deref(),
        Some("custom_certificate"),
        "{}",
        e.message
    );
    assert!(
        e.message
            .contains("The custom certificate field is required when issuer is custom."),
        "{}",
        e.message
    );
    let bad = CreateSslCertificate {
        issuer: "acme".into(),
        validation_level: Some("XV".into()),
        ..lets_encrypt(other.id)
    };
    let e = c.create_ssl_certificate(1, &bad).await.expect_err("enums");
    assert_eq!(e.field.as_deref(), Some("issuer"), "{}", e.message);

    // A failed issue explains itself and leaves the certificate inactive; a deploy retries.
    sim.fail_next_certificate("DNS record for other.example.com does not point to the server");
    let failing = c
        .create_ssl_certificate(1, &lets_encrypt(other.id))
        .await
        .expect("create");
    let issue = failing.last_action.expect("issuing action").id;
    let failed = finished(&c, issue).await;
    assert_eq!(failed.status, ActionStatus::Failed);
    let why = failed.failure_reason().expect("reason");
    assert!(why.contains("DNS record for other.example.com"), "{why}");
    let got = c
        .get_ssl_certificate(failing.id)
        .await
        .expect("get")
        .expect("certificate");
    assert!(!got.active);
    assert_eq!(got.expires_at, None);
    assert_eq!(
        got.last_action.and_then(|a| a.status),
        Some(ActionStatus::Failed)
    );
    let retry = c
        .deploy_ssl_certificate(failing.id, &[])
        .await
        .expect("retry");
    assert_eq!(finished(&c, retry).await.status, ActionStatus::Completed);
    assert!(
        c.get_ssl_certificate(failing.id)
            .await
            .expect("get")
            .expect("certificate")
            .active
    );
    let e = c
        .deploy_ssl_certificate(424_242, &[])
        .await
        .expect_err("unknown");
    assert_eq!(e.kind, ErrorKind::NotFound);

    // Usage limit.
    sim.set_usage_limit_reached(true);
    let third = c
        .create_virtual_host(1, &vhost_body("third.example.com", None))
        .await
        .expect_err("402 on vhosts too");
    assert_eq!(third.kind, ErrorKind::QuotaExceeded);
    let e = c
        .create_ssl_certificate(1, &lets_encrypt(vh.id))
        .await
        .expect_err("402");
    assert_eq!(e.kind, ErrorKind::QuotaExceeded);
    sim.set_usage_limit_reached(false);

    // Delete: an action, then gone; deleting a virtual host takes its certificate along.
    assert!(matches!(
        c.delete_ssl_certificate(cert.id).await.expect("delete"),
        Deleted::Done { action_id: Some(_) }
    ));
    assert_eq!(
        c.delete_ssl_certificate(cert.id).await.expect("gone"),
        Deleted::AlreadyGone
    );
    assert!(c.get_ssl_certificate(cert.id).await.expect("get").is_none());
    assert_eq!(
        c.get_virtual_host(vh.id)
            .await
            .expect("get")
            .expect("vhost")
            .ssl_certificate,
        None
    );
    c.delete_virtual_host(other.id).await.expect("delete vhost");
    assert!(c
        .get_ssl_certificate(failing.id)
        .await
        .expect("get")
        .is_none());
    assert!(c.list_ssl_certificates(1).await.expect("list").is_empty());
}

#[tokio::test]
async fn rollbacks_need_a_ref_deployed_before_against_the_simulator() {
    let (sim, _server, c) = sim_client().await;
    let app = c
        .create_application(1, &app_body("web"))
        .await
        .expect("app");
    let to = |kind: DeploymentType, r: &str| DeployApplication {
        deployment_type: kind,
        source_type: Some(SourceType::Tag),
        source_ref: Some(r.into()),
        pipeline_id: None,
        servers: vec![],
    };
    // Nothing deployed yet: no rollback.
    let e = c
        .deploy_application(app.id, &to(DeploymentType::Rollback, "v1"))
        .await
        .expect_err("nothing to roll back to");
    assert_eq!(e.field.as_deref(), Some("source_ref"), "{}", e.message);
    assert!(e.message.contains("never deployed"), "{}", e.message);
    let v1 = c
        .deploy_application(app.id, &to(DeploymentType::Deploy, "v1"))
        .await
        .expect("v1");
    // Still in flight: not yet a successful deployment.
    let e = c
        .deploy_application(app.id, &to(DeploymentType::Rollback, "v1"))
        .await
        .expect_err("v1 not done");
    assert_eq!(e.field.as_deref(), Some("source_ref"));
    finished(&c, v1).await;
    sim.fail_next_deploy(app.id as u64, "build failed");
    let v2 = c
        .deploy_application(app.id, &to(DeploymentType::Deploy, "v2"))
        .await
        .expect("v2");
    assert_eq!(finished(&c, v2).await.status, ActionStatus::Failed);
    let e = c
        .deploy_application(app.id, &to(DeploymentType::Rollback, "v2"))
        .await
        .expect_err("v2 failed");
    assert_eq!(e.field.as_deref(), Some("source_ref"));
    let rollback = c
        .deploy_application(app.id, &to(DeploymentType::Rollback, "v1"))
        .await
        .expect("rollback to v1");
    assert_eq!(finished(&c, rollback).await.status, ActionStatus::Completed);
    let redeploy = DeployApplication {
        deployment_type: DeploymentType::Redeploy,
        source_type: None,
        source_ref: None,
        pipeline_id: None,
        servers: vec![],
    };
    c.deploy_application(app.id, &redeploy)
        .await
        .expect("redeploy");
    assert_eq!(
        sim.deploy_types(app.id as u64),
        vec!["deploy", "deploy", "rollback", "redeploy"]
    );
    // A rollback without a ref names `source_ref` too.
    let bare = DeployApplication {
        deployment_type: DeploymentType::Rollback,
        ..redeploy
    };
    let e = c
        .deploy_application(app.id, &bare)
        .await
        .expect_err("no ref");
    assert_eq!(e.field.as_deref(), Some("source_ref"), "{}", e.message);
}

#[tokio::test]
async fn one_hundred_fifty_applications_page_against_the_simulator() {
    let (sim, _server, c) = sim_client().await;
    let ids = sim.create_applications(1, 150, "bulk-");
    assert_eq!(ids.len(), 150);
    let apps = c.list_applications(1).await.expect("list");
    assert_eq!(apps.len(), 150);
    assert_eq!(apps.iter().map(|a| a.id as u64).collect::<Vec<_>>(), ids);
    assert_eq!(apps[0].name, "bulk-0");
    assert_eq!(apps[149].name, "bulk-149");
    assert_eq!(c.applications_of(1).await.expect("shared").len(), 150);
}
