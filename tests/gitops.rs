//! GitOps health: the Argo CD health check shipped in the chart, run on its test cases the way
//! Argo CD runs it (a Lua script with the object as `obj`), and kstatus' generic rules (what
//! Flux uses for custom resources with no configuration) on the same objects.

use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn argocd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/bosun/argocd")
}

fn object(path: &str) -> Value {
    let text = std::fs::read_to_string(argocd_dir().join(path)).expect("test object");
    serde_yaml::from_str(&text).expect("yaml")
}

#[derive(Deserialize)]
struct HealthTests {
    tests: Vec<HealthTest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HealthTest {
    health_status: Health,
    input_path: String,
}

#[derive(Debug, Deserialize, PartialEq)]
struct Health {
    status: String,
    message: String,
}

fn argocd_health(script: &str, obj: &Value) -> Health {
    use mlua::LuaSerdeExt;
    let lua = mlua::Lua::new();
    let value = lua.to_value(obj).expect("object to Lua");
    lua.globals().set("obj", value).expect("set obj");
    let table: mlua::Table = lua.load(script).eval().expect("health.lua runs");
    Health {
        status: table.get("status").expect("status"),
        message: table
            .get::<Option<String>>("message")
            .expect("message")
            .unwrap_or_default(),
    }
}

#[test]
fn argocd_health_check_passes_its_test_cases() {
    let script = std::fs::read_to_string(argocd_dir().join("health.lua")).expect("health.lua");
    let cases: HealthTests = serde_yaml::from_str(
        &std::fs::read_to_string(argocd_dir().join("health_test.yaml")).expect("cases"),
    )
    .expect("health_test.yaml");
    assert!(cases.tests.len() >= 6);
    for case in cases.tests {
        let got = argocd_health(&script, &object(&case.input_path));
        assert_eq!(got, case.health_status, "{}", case.input_path);
    }
}

/// kstatus' result for a custom resource with no special handling
/// (sigs.k8s.io/cli-utils/pkg/kstatus/status: `checkGenericProperties`): a status behind the
/// spec is InProgress, `Reconciling=True` is InProgress, `Stalled=True` is Failed, and
/// anything else is Current.
fn kstatus(obj: &Value) -> &'static str {
    let generation = obj["metadata"]["generation"].as_i64();
    if let (Some(g), Some(o)) = (generation, obj["status"]["observedGeneration"].as_i64()) {
        if o < g {
            return "InProgress";
        }
    }
    let is_true = |type_: &str| {
        obj["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == type_ && c["status"] == "True")
        })
    };
    if is_true("Reconciling") {
        "InProgress"
    } else if is_true("Stalled") {
        "Failed"
    } else {
        "Current"
    }
}

#[test]
fn kstatus_reads_bosun_status_with_no_configuration() {
    for (path, want) in [
        ("testdata/ready.yaml", "Current"),
        ("testdata/stalled.yaml", "Failed"),
        ("testdata/reconciling.yaml", "InProgress"),
        ("testdata/behind.yaml", "InProgress"),
        ("testdata/paused.yaml", "Current"),
        ("testdata/not-ready.yaml", "Current"),
    ] {
        assert_eq!(kstatus(&object(path)), want, "{path}");
    }
}
