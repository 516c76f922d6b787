//! A real control plane for integration tests.
//!
//! The first call to [`cluster()`] in a test binary runs
//! `scripts/cluster up --dir <fresh temp dir> --watch-pid <this process>`: etcd and
//! kube-apiserver start on free loopback ports with a token for `bosun-admin`
//! (`system:masters`), RBAC enforced for everyone else, and a CA the kubeconfig carries so TLS
//! is verified. The script's watcher stops both processes and removes the temp dir when the test
//! binary exits, however it exits, so tests never clean up after themselves.
//!
//! Set `BOSUN_TEST_KUBECONFIG` to run against an existing cluster instead (for example the one
//! `scripts/cluster up` started; `eval "$(scripts/cluster env)"` prints its path).
//!
//! `#[tokio::test]` builds one runtime per test, and a `kube::Client` is bound to the runtime it
//! was built in, so [`Cluster`] keeps only the configuration and [`Cluster::client`] builds a
//! fresh client for the calling test.

use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use rand::Rng as _;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::Command;
use tokio::sync::OnceCell;

/// Environment variable naming the kubeconfig of an existing cluster to test against.
pub const EXISTING_KUBECONFIG_ENV: &str = "BOSUN_TEST_KUBECONFIG";

/// Label put on every namespace made by [`Cluster::test_namespace`].
pub const TEST_NAMESPACE_LABEL: &str = "bosun.dev/test";

/// The repository root (where `Cargo.toml`, `scripts/` and `crds/` are).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A running control plane.
#[derive(Debug)]
pub struct Cluster {
    kubeconfig: PathBuf,
    config: kube::Config,
    /// The state dir when this process started the control plane (logs live there).
    state_dir: Option<PathBuf>,
}

/// A namespace created for one test.
#[derive(Debug, Clone)]
pub struct TestNamespace {
    pub name: String,
}

/// What a `kubectl` run produced.
#[derive(Debug, Clone)]
pub struct KubectlOutput {
    pub status_success: bool,
    pub stdout: String,
    pub stderr: String,
}

static CLUSTER: OnceCell<Result<Cluster, String>> = OnceCell::const_new();

/// The control plane of this test binary, started on first use.
///
/// Panics (in every test that asks) when it cannot be started; the message carries the
/// script's output, including the tail of the apiserver log.
pub async fn cluster() -> &'static Cluster {
    match CLUSTER.get_or_init(start).await {
        Ok(cluster) => cluster,
        Err(err) => panic!("no control plane for the integration tests: {err}"),
    }
}

async fn start() -> Result<Cluster, String> {
    if let Some(path) = std::env::var_os(EXISTING_KUBECONFIG_ENV) {
        return Cluster::from_kubeconfig(PathBuf::from(path), None).await;
    }

    // The script creates the dir itself: a dir that `up --watch-pid` created is removed by the
    // watcher when this process exits.
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("bosun-test-{pid}-{}", random_suffix(6)));
    start_in(dir).await
}

/// A control plane of its own (for tests that restart it), gone when this process exits.
pub async fn private_cluster(label: &str) -> Cluster {
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("bosun-{label}-{pid}-{}", random_suffix(6)));
    match start_in(dir).await {
        Ok(cluster) => cluster,
        Err(err) => panic!("no private control plane: {err}"),
    }
}

/// `scripts/cluster up --dir DIR --watch-pid <this process>`: starts the control plane in DIR,
/// or restarts whatever of it is not running (keeping its etcd data and ports).
async fn start_in(dir: PathBuf) -> Result<Cluster, String> {
    let pid = std::process::id();
    let script = repo_root().join("scripts/cluster");
    let mut child = Command::new(&script)
        .arg("up")
        .arg("--dir")
        .arg(&dir)
        .arg("--watch-pid")
        .arg(pid.to_string())
        .current_dir(repo_root())
        // A port pinned for the developer's own cluster must not pin the tests' one.
        .env_remove("BOSUN_APISERVER_PORT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;

    // Pass the script's progress through to the terminal as it comes (the first run builds the
    // control plane, which takes minutes); writing to `io::stderr()` directly bypasses the test
    // harness' output capture. Keep a copy for the error message.
    let stderr = child.stderr.take().expect("piped stderr");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let forward = async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = writeln!(std::io::stderr(), "{line}");
            seen.push_str(&line);
            seen.push('\n');
        }
        seen
    };
    let read_stdout = async move {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out).await;
        out
    };
    let (stderr_text, _stdout_text, status) = tokio::join!(forward, read_stdout, child.wait());
    let status = status.map_err(|e| format!("waiting for {}: {e}", script.display()))?;
    if !status.success() {
        return Err(format!(
            "`scripts/cluster up --dir {}` failed ({status}):\n{stderr_text}",
            dir.display()
        ));
    }
    Cluster::from_kubeconfig(dir.join("kubeconfig"), Some(dir)).await
}

impl Cluster {
    /// Kills this control plane's kube-apiserver (SIGKILL) and brings it back with
    /// `scripts/cluster up`, on the same port, with the same etcd data. Only for a
    /// [`private_cluster`]: the shared one serves other tests.
    pub async fn restart_apiserver(&self) {
        let dir = self
            .state_dir
            .clone()
            .expect("a cluster started by the tests");
        let pid = std::fs::read_to_string(dir.join("kube-apiserver.pid")).expect("apiserver pid");
        let killed = std::process::Command::new("kill")
            .args(["-KILL", pid.trim()])
            .status()
            .expect("kill");
        assert!(killed.success(), "could not kill kube-apiserver {pid}");
        if let Err(e) = start_in(dir).await {
            panic!("restarting the control plane: {e}");
        }
    }

    async fn from_kubeconfig(
        kubeconfig: PathBuf,
        state_dir: Option<PathBuf>,
    ) -> Result<Self, String> {
        let parsed = Kubeconfig::read_from(&kubeconfig)
            .map_err(|e| format!("reading kubeconfig {}: {e}", kubeconfig.display()))?;
        let config = kube::Config::from_custom_kubeconfig(parsed, &KubeConfigOptions::default())
            .await
            .map_err(|e| format!("loading kubeconfig {}: {e}", kubeconfig.display()))?;
        Ok(Cluster {
            kubeconfig,
            config,
            state_dir,
        })
    }

    /// A new client (admin, `system:masters`) bound to the calling test's runtime.
    pub async fn client(&self) -> kube::Client {
        kube::Client::try_from(self.config.clone()).expect("building a kube client")
    }

    /// A copy of the admin client configuration, e.g. to set `auth_info.impersonate` for a
    /// ServiceAccount and check what RBAC lets it do.
    pub fn config(&self) -> kube::Config {
        self.config.clone()
    }

    /// A client that impersonates `user` (for a ServiceAccount:
    /// `system:serviceaccount:<namespace>:<name>`), so RBAC applies to its requests.
    pub async fn client_as(&self, user: &str, groups: &[&str]) -> kube::Client {
        let mut config = self.config.clone();
        config.auth_info.impersonate = Some(user.to_owned());
        if !groups.is_empty() {
            config.auth_info.impersonate_groups =
                Some(groups.iter().map(|g| (*g).to_owned()).collect());
        }
        kube::Client::try_from(config).expect("building an impersonating kube client")
    }

    /// The kubeconfig file (admin user, context `bosun`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The control plane's state dir (etcd data, `kube-apiserver.log`, `etcd.log`) when this
    /// process started it; `None` with `BOSUN_TEST_KUBECONFIG`.
    pub fn state_dir(&self) -> Option<&Path> {
        self.state_dir.as_deref()
    }

    /// Creates a namespace named `<prefix>-<random>` (DNS-safe, at most 63 characters).
    ///
    /// No cleanup: the whole control plane goes away with the test binary (and namespace
    /// deletion would not finish anyway, as no namespace controller runs).
    pub async fn test_namespace(&self, prefix: &str) -> TestNamespace {
        let api: Api<Namespace> = Api::all(self.client().await);
        let prefix = dns_label_prefix(prefix, 63 - 7);
        for _ in 0..5 {
            let name = format!("{prefix}-{}", random_suffix(6));
            let ns = Namespace {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some([(TEST_NAMESPACE_LABEL.to_owned(), "true".to_owned())].into()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            };
            match api.create(&PostParams::default(), &ns).await {
                Ok(_) => return TestNamespace { name },
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => panic!("creating test namespace {name}: {e}"),
            }
        }
        panic!("could not find a free namespace name for prefix {prefix}");
    }

    /// Runs `scripts/kubectl` (kubectl at the control plane's minor version) against this
    /// cluster, with `stdin` fed to it when given.
    pub async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> KubectlOutput {
        let script = repo_root().join("scripts/kubectl");
        let mut child = Command::new(&script)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .current_dir(repo_root())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        let input = child.stdin.take();
        let feed = async move {
            if let (Some(mut pipe), Some(text)) = (input, stdin) {
                // kubectl may exit before reading everything (e.g. on a bad flag); its exit
                // status tells, so a broken pipe here is not an error of its own.
                let _ = pipe.write_all(text.as_bytes()).await;
                let _ = pipe.shutdown().await;
            }
        };
        let ((), output) = tokio::join!(feed, child.wait_with_output());
        let output = output.unwrap_or_else(|e| panic!("running kubectl {args:?}: {e}"));
        KubectlOutput {
            status_success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Like [`Cluster::kubectl`], but panics (with kubectl's stderr) unless it succeeds, and
    /// returns stdout.
    pub async fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl(args, stdin).await;
        assert!(
            out.status_success,
            "kubectl {} failed:\n{}{}",
            args.join(" "),
            out.stderr,
            out.stdout
        );
        out.stdout
    }

    /// `kubectl apply --server-side` of a manifest file (or directory); panics on failure.
    pub async fn apply_file(&self, path: &Path) {
        let path = path.to_str().expect("UTF-8 manifest path");
        self.kubectl_ok(
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=bosun-tests",
                "-f",
                path,
            ],
            None,
        )
        .await;
    }

    /// Applies CRD manifests (a file, or a directory such as `crds/`) and waits until every one
    /// is `Established`, so their resources can be used at once.
    pub async fn install_crds(&self, path: &Path) {
        self.apply_file(path).await;
        let path = path.to_str().expect("UTF-8 manifest path");
        self.kubectl_ok(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "-f",
                path,
            ],
            None,
        )
        .await;
    }
}

/// Polls `f` (quickly at first, then every 500 ms) until it returns true; panics naming `what`
/// after `timeout`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for_value(what, timeout, || {
        let attempt = f();
        async move { attempt.await.then_some(()) }
    })
    .await
}

/// Polls `f` until it returns `Some(value)` and returns the value; panics naming `what` after
/// `timeout`.
pub async fn wait_for_value<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    let deadline = start + timeout;
    let mut delay = Duration::from_millis(25);
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        // A hanging attempt counts against the timeout too.
        let attempt = tokio::time::timeout(remaining.max(Duration::from_millis(100)), f()).await;
        if let Ok(Some(value)) = attempt {
            return value;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            panic!("timed out after {:?} waiting for {what}", now - start);
        }
        tokio::time::sleep(delay.min(deadline - now)).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

/// `prefix` made into the start of a DNS label: lowercase alphanumerics and '-', starting with
/// a letter or digit, at most `max` characters.
fn dns_label_prefix(prefix: &str, max: usize) -> String {
    let mut out: String = prefix
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    out = out.trim_matches('-').to_owned();
    out.truncate(max);
    let out = out.trim_end_matches('-');
    if out.is_empty() {
        "test".to_owned()
    } else {
        out.to_owned()
    }
}

fn random_suffix(len: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}
