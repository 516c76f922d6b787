//! Benchmarks: the real control plane (kube-apiserver + etcd from `scripts/cluster`), the real
//! `bosun run` binary and the in-process Codesphere simulator, as in the integration tests.
//!
//! Each benchmark prints figures, every one a ratio against a floor or baseline measured in the
//! same run (lines starting with `FIGURE`). They are `#[ignore]`d, so `cargo test` never runs
//! them; run them with
//!
//! ```text
//! scripts/bench            # full sizes (about 25 minutes on 2 cores)
//! scripts/bench --quick    # smaller N (about 7 minutes)
//! ```
//!
//! which runs `cargo test --test bench -- --ignored --nocapture --test-threads=1`
//! (`BOSUN_BENCH_QUICK=1` for `--quick`). `docs/benchmarks.md` explains the figures and keeps
//! the latest results.

#[path = "../support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bosun::core::drivers::DEEP_CHECK_INTERVAL;
use bosun::platform::codesphere::sim::{router, CodesphereSim};
use bosun::sim::{bind, SimConfig, SimServer};
use futures::StreamExt as _;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::{watcher, WatchStreamExt as _};
use serde_json::{json, Value};

/// Counts the heap bytes this process holds, so the cost of typed objects can be measured
/// exactly (RSS hides it: freed memory is reused without growing it).
struct CountingAlloc;

static HEAP_BYTES: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is added.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        HEAP_BYTES.fetch_add(layout.size() as isize, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        HEAP_BYTES.fetch_sub(layout.size() as isize, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        HEAP_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            std::sync::atomic::Ordering::Relaxed,
        );
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

fn heap_bytes() -> isize {
    HEAP_BYTES.load(std::sync::atomic::Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------------------
// Sizes.

/// Set (to anything but `0`) by `scripts/bench --quick`.
const QUICK_ENV: &str = "BOSUN_BENCH_QUICK";
/// A directory: profile the operator's heap with heaptrack (see `BenchOperator::start`).
const HEAPTRACK_ENV: &str = "BOSUN_BENCH_HEAPTRACK";

/// The operator's poll interval: its default (`--poll-interval` is not passed). The Workspaces
/// set no `bosun.dev/poll-interval`: an object's own interval also sets how often its
/// variables and run stage are read, which would not measure the default.
const POLL: Duration = Duration::from_secs(60);
/// Objects per `kubectl apply` when creating many.
const APPLY_BATCH: usize = 500;

struct Sizes {
    /// (Workspaces, simulator limit in requests per second) of the first convergence run.
    small: (usize, u32),
    /// The same for the run that steady state and latency then reuse.
    large: (usize, u32),
    /// Spec changes timed at scale (and on one Workspace alone, for the baseline).
    latency_samples: usize,
    latency_baseline_samples: usize,
    /// Poll intervals the steady-state window spans.
    steady_polls: u32,
    /// Workspace counts the operator's memory is read at (after the 0 baseline).
    memory: [usize; 2],
}

fn quick() -> bool {
    std::env::var(QUICK_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

fn sizes() -> Sizes {
    if quick() {
        Sizes {
            small: (50, 5),
            large: (200, 20),
            latency_samples: 20,
            latency_baseline_samples: 10,
            steady_polls: 1,
            memory: [200, 1000],
        }
    } else {
        Sizes {
            small: (100, 5),
            large: (1000, 20),
            latency_samples: 100,
            latency_baseline_samples: 20,
            steady_polls: 2,
            memory: [1000, 10_000],
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The benchmarks.

/// 1a. Convergence of a small batch at bosun's default Codesphere budget (300 a minute).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run scripts/bench"]
async fn bench_1_convergence() {
    let (n, rate) = sizes().small;
    let env = setup("bench-conv", Some(rate)).await;
    convergence(&env, n, rate).await;
    report_operator_memory(&env, &format!("{n} Ready Workspaces (convergence run)"));
}

/// 1b, 2, 3. Convergence of the large batch, then steady state and spec-change latency on the
/// same Ready Workspaces (creating them once takes most of the time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run scripts/bench"]
async fn bench_2_scale_convergence_steady_latency() {
    let sizes = sizes();
    let (n, rate) = sizes.large;
    let env = setup("bench-scale", Some(rate)).await;
    let single = convergence(&env, n, rate).await;
    report_operator_memory(&env, &format!("{n} Ready Workspaces (convergence run)"));
    steady_state(&env, n, sizes.steady_polls).await;
    latency(&env, n, &single, sizes.latency_samples).await;
}

/// 4. Operator memory with 0, 1000 and 10,000 Workspaces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run scripts/bench"]
async fn bench_3_memory() {
    memory(sizes().memory).await;
}

// ---------------------------------------------------------------------------------------------
// 1. Convergence.

/// What the single-Workspace run before the batch measured.
struct Single {
    /// Spec-change latencies on the one Workspace while it was alone (the latency baseline).
    latencies: Vec<Duration>,
}

/// Applies `n` Workspaces at once and times them to Ready, against the floor of the minimum
/// calls divided by the rate. The minimum calls per Workspace come from one Workspace created
/// alone just before, in the same namespace, operator and simulator.
async fn convergence(env: &Env, n: usize, rate: u32) -> Single {
    let label = format!("convergence N={n} R={rate}/s");
    // One Workspace alone: the calls the mapping makes for one object.
    env.sim.control().reset_stats();
    let t = Instant::now();
    apply(env, &workspace("single", &[])).await;
    env.tracker
        .wait(
            &format!("{label}: the single Workspace Ready"),
            Duration::from_secs(180),
            |s| s.ready("single") == 1,
        )
        .await;
    let single_time = env.tracker.ready_at("single").unwrap_or_else(Instant::now) - t;
    let single = env.sim.control().stats();
    let (per_object, shared): (Vec<_>, Vec<_>) = single
        .requests_by_route
        .keys()
        .cloned()
        .partition(|route| is_per_object(route));
    println!(
        "[{label}] one Workspace alone: Ready in {:.1} s with {} calls: {:?}",
        single_time.as_secs_f64(),
        single.requests_total,
        single.requests_by_route
    );
    let latencies = plan_change_latencies(env, &["single"], sizes().latency_baseline_samples).await;

    // The batch.
    tokio::time::sleep(Duration::from_secs(1)).await;
    env.sim.control().reset_stats();
    let names: Vec<String> = (0..n).map(|i| format!("w{i:05}")).collect();
    let manifest: Vec<String> = names.iter().map(|name| workspace(name, &[])).collect();
    let t0 = Instant::now();
    apply(env, &manifest.join("---\n")).await;
    let apply_time = t0.elapsed();
    let floor_calls = (n * per_object.len() + shared.len()) as f64;
    let floor = floor_calls / f64::from(rate);
    let timeout = Duration::from_secs_f64(floor * 4.0 + 240.0);
    let sim = env.sim.clone();
    env.tracker
        .wait_reporting(&format!("{label}: all Ready"), timeout, |s| {
            let ready = s.ready("w");
            let stats = sim.control().stats();
            (
                ready == n,
                format!(
                    "{ready}/{n} Ready, {} calls, {} answered 429",
                    stats.requests_total, stats.rate_limited_total
                ),
            )
        })
        .await;
    let stats = env.sim.control().stats();
    let last_ready = env.tracker.last_ready_at("w").expect("ready times");
    let time = last_ready - t0;
    let ratio = time.as_secs_f64() / floor;
    let limit = 60 * u64::from(rate);
    let n_f = n as f64;
    println!(
        "[{label}] kubectl apply of {n} Workspaces took {:.1} s; calls by route: {:?}",
        apply_time.as_secs_f64(),
        stats.requests_by_route
    );
    println!(
        "[{label}] calls per Workspace: {:.2} made vs {} minimum ({} per-object routes once each: {:?}); shared routes once for the batch: {:?}",
        stats.requests_total as f64 / n_f,
        per_object.len(),
        per_object.len(),
        per_object,
        shared
    );
    println!(
        "[{label}] the team listing was read {} times ({:.2} per Workspace)",
        stats.requests_for("GET", "/api/workspaces/team/{teamId}"),
        stats.requests_for("GET", "/api/workspaces/team/{teamId}") as f64 / n_f
    );
    figure(
        &format!("convergence N={n}"),
        &format!(
            "{:.1} s from apply to all Ready vs floor {:.1} s ({floor_calls:.0} calls / {rate} per s) = {ratio:.2}x; one Workspace alone: {:.1} s",
            time.as_secs_f64(),
            floor,
            single_time.as_secs_f64()
        ),
        goal_at_most(ratio, 1.15),
    );
    figure(
        &format!("convergence N={n} calls"),
        &format!(
            "{} calls made vs {floor_calls:.0} minimum = {:.2}x",
            stats.requests_total,
            stats.requests_total as f64 / floor_calls
        ),
        String::new(),
    );
    figure(
        &format!("convergence N={n} rate budget"),
        &format!(
            "max {} requests in any 60 s at the simulator vs its limit {limit} = {:.3}x; max {} in any 1 s vs burst {rate}; average {:.2} per s vs {rate} per s = {:.2}x",
            stats.max_requests_per_minute,
            stats.max_requests_per_minute as f64 / limit as f64,
            stats.max_requests_per_second,
            stats.requests_total as f64 / time.as_secs_f64(),
            stats.requests_total as f64 / time.as_secs_f64() / f64::from(rate),
        ),
        goal_at_most(stats.max_requests_per_minute as f64 / limit as f64, 1.0),
    );
    figure(
        &format!("convergence N={n} 429s"),
        &format!("{} requests answered 429", stats.rate_limited_total),
        if stats.rate_limited_total == 0 {
            "goal 0: MET".into()
        } else {
            "goal 0: MISSED".into()
        },
    );
    Single { latencies }
}

/// Routes that name one workspace (or create one), as opposed to team-wide reads that every
/// Workspace of the team shares.
fn is_per_object(route: &str) -> bool {
    route.contains("{workspaceId}") || route == "POST /api/workspaces"
}

// ---------------------------------------------------------------------------------------------
// 2. Steady state.

async fn steady_state(env: &Env, n: usize, polls: u32) {
    let label = format!("steady state N={n}");
    // Whatever the last Workspaces' reconciles still do passes; only periodic work is left.
    tokio::time::sleep(Duration::from_secs(15)).await;
    env.sim.control().reset_stats();
    let t = Instant::now();
    tokio::time::sleep(POLL * polls).await;
    let stats = env.sim.control().stats();
    let intervals = t.elapsed().as_secs_f64() / POLL.as_secs_f64();
    let per_poll = stats.requests_total as f64 / intervals;
    let naive = n as f64;
    let (ready_now, lost) = env.tracker.with(|s| {
        (
            s.count("w", |o| o.ready_now),
            s.objects.values().map(|o| o.ready_lost).sum::<u32>(),
        )
    });
    println!(
        "[{label}] {ready_now}/{n} Ready at the end of the window; Ready was lost {lost} times after first reached"
    );
    println!(
        "[{label}] {} calls in {intervals:.2} poll intervals of {} s: {:?}",
        stats.requests_total,
        POLL.as_secs(),
        stats.requests_by_route
    );
    figure(
        &label,
        &format!(
            "{per_poll:.1} calls per poll interval ({} s) vs {naive:.0} for one GET per object = {:.1}x fewer",
            POLL.as_secs(),
            naive / per_poll.max(0.01)
        ),
        goal_at_least(naive / per_poll.max(0.01), 10.0),
    );

    // Variables and the run stage are read per workspace only when something may have changed,
    // or every DEEP_CHECK_INTERVAL: longer than the window above, so measure what one costs and
    // add its share.
    let token = format!("bench-{}", std::process::id());
    env.sim.control().reset_stats();
    patch(
        env,
        "w00000",
        json!({"metadata": {"annotations": {"bosun.dev/reconcile-requested-at": token}}}),
    )
    .await;
    env.tracker
        .wait("the requested reconcile", Duration::from_secs(60), |s| {
            s.objects
                .get("w00000")
                .is_some_and(|o| o.last_handled.as_deref() == Some(token.as_str()))
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = env.sim.control().stats();
    let deep: BTreeMap<&String, &u64> = stats
        .requests_by_route
        .iter()
        .filter(|(route, _)| is_per_object(route))
        .collect();
    let per_check: u64 = deep.values().copied().sum();
    let amortized = per_poll
        + n as f64 * per_check as f64 * POLL.as_secs_f64() / DEEP_CHECK_INTERVAL.as_secs_f64();
    println!("[{label}] one deep check (reconcile requested on one Workspace): {deep:?}");
    figure(
        &format!("{label} incl. deep checks"),
        &format!(
            "{amortized:.1} calls per poll interval with each Workspace's deep check ({per_check} calls every {} min) spread in = {:.1}x fewer than {naive:.0}",
            DEEP_CHECK_INTERVAL.as_secs() / 60,
            naive / amortized.max(0.01)
        ),
        goal_at_least(naive / amortized.max(0.01), 10.0),
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Latency.

async fn latency(env: &Env, n: usize, single: &Single, samples: usize) {
    let step = (n / samples).max(1);
    let names: Vec<String> = (0..samples.min(n))
        .map(|i| format!("w{:05}", i * step))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let at_scale = plan_change_latencies(env, &names, names.len()).await;
    let (base50, base99) = (
        percentile(&single.latencies, 0.5),
        percentile(&single.latencies, 0.99),
    );
    let (p50, p99) = (percentile(&at_scale, 0.5), percentile(&at_scale, 0.99));
    println!(
        "[latency] one Workspace alone (ms): {:?}",
        millis(&single.latencies)
    );
    println!("[latency] N={n} (ms): {:?}", millis(&at_scale));
    figure(
        &format!("latency N={n} p50"),
        &format!(
            "{:.0} ms from spec change to the object's first provider call vs {:.0} ms with one Workspace = {:.2}x",
            ms(p50),
            ms(base50),
            ms(p50) / ms(base50).max(0.001)
        ),
        String::new(),
    );
    figure(
        &format!("latency N={n} p99"),
        &format!(
            "{:.0} ms vs {:.0} ms with one Workspace = {:.2}x ({} samples; max {:.0} ms)",
            ms(p99),
            ms(base99),
            ms(p99) / ms(base99).max(0.001),
            at_scale.len(),
            ms(at_scale.iter().max().copied().unwrap_or_default())
        ),
        String::new(),
    );
}

/// Changes `spec.plan` of each named Workspace in turn (`samples` changes in all, cycling) and
/// times, from just before the API request to the apiserver, until the simulator holds the new
/// plan. The PATCH of the workspace is the first call bosun makes for that object: before it, a
/// reconcile only reads the cached plans and the team listing, which all Workspaces share.
async fn plan_change_latencies(env: &Env, names: &[&str], samples: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(samples);
    for i in 0..samples {
        let name = names[i % names.len()];
        let id: u64 = env
            .tracker
            .external_id(name)
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("{name} has no externalId"));
        let current = env
            .sim
            .workspace(id)
            .expect("workspace at the simulator")
            .plan_id;
        let (title, plan_id) = if current == 20 {
            ("Micro", 8)
        } else {
            ("Boost", 20)
        };
        let t0 = Instant::now();
        patch(env, name, json!({"spec": {"plan": title}})).await;
        loop {
            if env.sim.workspace(id).is_some_and(|w| w.plan_id == plan_id) {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "{name}: plan {title} never reached the simulator"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        out.push(t0.elapsed());
        // Let the rest of that reconcile (its deep check) finish before the next change.
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    out
}

fn percentile(samples: &[Duration], q: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn millis(samples: &[Duration]) -> Vec<u64> {
    samples.iter().map(|d| d.as_millis() as u64).collect()
}

// ---------------------------------------------------------------------------------------------
// 4. Memory.

async fn memory(counts: [usize; 2]) {
    let env = setup("bench-mem", None).await;
    let pid = env.operator.pid().expect("operator pid");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let base = rss_settled(pid).await;
    println!(
        "[memory] 0 Workspaces: VmRSS {:.1} MiB (anonymous {:.1} MiB, file-backed {:.1} MiB; peak {:.1} MiB)",
        mib(base.rss),
        mib(base.anon),
        mib(base.file),
        mib(base.hwm)
    );
    let mut made = 0;
    for target in counts {
        let t = Instant::now();
        while made < target {
            let end = (made + APPLY_BATCH).min(target);
            let docs: Vec<String> = (made..end)
                .map(|i| workspace(&format!("m{i:05}"), &[("bosun.dev/paused", "\"true\"")]))
                .collect();
            apply(&env, &docs.join("---\n")).await;
            made = end;
        }
        let applied = t.elapsed();
        env.tracker
            .wait_reporting(
                &format!("{target} Workspaces reconciled"),
                Duration::from_secs(1800),
                |s| {
                    let done = s.processed("m");
                    (done == target, format!("{done}/{target} have a status"))
                },
            )
            .await;
        let processed = t.elapsed();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let at = rss_settled(pid).await;
        let bytes = env.tracker.mean_bytes("m");
        println!(
            "[memory] {target} Workspaces: applied in {:.0} s, all reconciled after {:.0} s; mean object {:.0} bytes as JSON (with managedFields and status)",
            applied.as_secs_f64(),
            processed.as_secs_f64(),
            bytes
        );
        let growth = at.rss.saturating_sub(base.rss);
        figure(
            &format!("memory N={target}"),
            &format!(
                "VmRSS {:.1} MiB vs {:.1} MiB with 0 Workspaces = {:.2}x (+{:.1} MiB, {:.1} KiB per Workspace; anonymous {:.1} MiB, file-backed {:.1} MiB); peak (VmHWM) {:.1} MiB",
                mib(at.rss),
                mib(base.rss),
                at.rss as f64 / base.rss.max(1) as f64,
                mib(growth),
                growth as f64 / 1024.0 / target as f64,
                mib(at.anon),
                mib(at.file),
                mib(at.hwm)
            ),
            match target {
                10_000.. if mib(at.rss) <= 64.0 => "goal <= 64 MiB: MET".to_string(),
                10_000.. => format!(
                    "goal <= 64 MiB: MISSED by {:.0}%",
                    (mib(at.rss) / 64.0 - 1.0) * 100.0
                ),
                _ => String::new(),
            },
        );
    }
    typed_object_cost(&env).await;
}

/// What the Workspaces cost as typed objects (what the operator's watch cache holds), measured
/// in this process: the namespace's Workspaces deserialized into `bosun::api::Workspace` from
/// their JSON, first without `metadata.managedFields`, then as they are.
async fn typed_object_cost(env: &Env) {
    let api: Api<DynamicObject> = Api::namespaced_with(
        support::cluster().await.client().await,
        &env.ns,
        &resource("Workspace", "workspaces"),
    );
    let items = api
        .list(&kube::api::ListParams::default())
        .await
        .expect("list Workspaces")
        .items;
    let n = items.len();
    let full: Vec<String> = items
        .iter()
        .map(|o| serde_json::to_string(o).expect("JSON"))
        .collect();
    let stripped: Vec<String> = items
        .into_iter()
        .map(|o| {
            let mut v = serde_json::to_value(o).expect("JSON");
            if let Some(meta) = v["metadata"].as_object_mut() {
                meta.remove("managedFields");
            }
            v.to_string()
        })
        .collect();
    let json_full = full.iter().map(String::len).sum::<usize>() as f64 / n as f64;
    let json_stripped = stripped.iter().map(String::len).sum::<usize>() as f64 / n as f64;
    let base = heap_bytes();
    let without: Vec<bosun::api::Workspace> = stripped
        .iter()
        .map(|j| serde_json::from_str(j).expect("a Workspace"))
        .collect();
    let after_without = heap_bytes();
    let with: Vec<bosun::api::Workspace> = full
        .iter()
        .map(|j| serde_json::from_str(j).expect("a Workspace"))
        .collect();
    let after_with = heap_bytes();
    let per = |bytes: isize| bytes.max(0) as f64 / n as f64;
    println!(
        "[memory] {n} Workspaces deserialized into bosun::api::Workspace in this process (heap bytes, counted): {:.0} bytes each without managedFields (JSON {json_stripped:.0} bytes), {:.0} bytes each with them (JSON {json_full:.0} bytes); {:.1} MiB for all {n} as the watch cache holds them",
        per(after_without - base),
        per(after_with - after_without),
        mib((after_with - after_without).max(0) as u64),
    );
    drop((without, with));
}

#[derive(Clone, Copy)]
struct Rss {
    rss: u64,
    hwm: u64,
    /// Anonymous (heap, stacks) and file-backed (the binary's pages) parts of `rss`.
    anon: u64,
    file: u64,
}

/// VmRSS and VmHWM (bytes) of a process.
fn read_rss(pid: u32) -> Rss {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"));
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    Rss {
        rss: field("VmRSS:"),
        hwm: field("VmHWM:"),
        anon: field("RssAnon:"),
        file: field("RssFile:"),
    }
}

/// The highest VmRSS over five samples a second apart (periodic reconciles come and go).
async fn rss_settled(pid: u32) -> Rss {
    let mut best = read_rss(pid);
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = read_rss(pid);
        if now.rss > best.rss {
            best = now;
        }
        best.hwm = now.hwm;
    }
    best
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn report_operator_memory(env: &Env, what: &str) {
    if let Some(pid) = env.operator.pid() {
        let r = read_rss(pid);
        println!(
            "[memory] operator with {what}: VmRSS {:.1} MiB, peak {:.1} MiB",
            mib(r.rss),
            mib(r.hwm)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Printing.

/// One figure: `FIGURE <name>: <text> [<goal verdict>]`.
fn figure(name: &str, text: &str, verdict: String) {
    if verdict.is_empty() {
        println!("FIGURE {name}: {text}");
    } else {
        println!("FIGURE {name}: {text} [{verdict}]");
    }
}

fn goal_at_most(ratio: f64, goal: f64) -> String {
    if ratio <= goal {
        format!("goal <= {goal:.2}x: MET")
    } else {
        format!(
            "goal <= {goal:.2}x: MISSED by {:.0}%",
            (ratio / goal - 1.0) * 100.0
        )
    }
}

fn goal_at_least(ratio: f64, goal: f64) -> String {
    if ratio >= goal {
        format!("goal >= {goal:.0}x: MET")
    } else {
        format!(
            "goal >= {goal:.0}x: MISSED by {:.0}%",
            (1.0 - ratio / goal) * 100.0
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Environment.

struct Env {
    ns: String,
    sim: CodesphereSim,
    _server: SimServer,
    operator: BenchOperator,
    tracker: Tracker,
}

/// `bosun run` for one namespace with its default poll interval (60 s). The integration tests'
/// `support::Operator` always passes `--poll-interval 5s`, which clap does not let a second flag
/// override; 5 s polls of 10,000 objects would measure the poll loop, not the default.
struct BenchOperator {
    child: tokio::process::Child,
    log: std::path::PathBuf,
}

impl BenchOperator {
    async fn start(cluster: &support::Cluster, namespace: &str) -> BenchOperator {
        let http = format!("127.0.0.1:{}", support::free_port());
        let log = std::env::temp_dir().join(format!("bosun-bench-operator-{namespace}.log"));
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_bosun"));
        command
            .args(["run", "--http-addr", &http, "--namespace", namespace])
            .env("KUBECONFIG", cluster.kubeconfig())
            .env("RUST_LOG", "info")
            .env_remove("BOSUN_POLL_INTERVAL")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("operator log"))
            .kill_on_drop(true);
        // Where the operator's memory goes: heaptrack's preload library writes every
        // allocation to a raw file (`heaptrack_interpret < raw | gzip > x.gz`, then
        // `heaptrack_print x.gz`). The RSS figures of such a run are not comparable.
        if let Ok(dir) = std::env::var(HEAPTRACK_ENV) {
            let raw = std::path::Path::new(&dir).join(format!("heaptrack-{namespace}.raw"));
            println!(
                "heaptrack: the operator's allocations go to {}",
                raw.display()
            );
            command
                .env("LD_PRELOAD", "/usr/lib/heaptrack/libheaptrack_preload.so")
                .env("DUMP_HEAPTRACK_OUTPUT", raw);
        }
        let child = command.spawn().expect("spawn bosun run");
        let operator = BenchOperator { child, log };
        let url = format!("http://{http}/healthz");
        support::wait_for("the operator healthy", Duration::from_secs(30), || async {
            reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        println!("operator log: {}", operator.log.display());
        operator
    }

    fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

/// The control plane with bosun's CRDs installed (once per test binary).
async fn bosun_cluster() -> &'static support::Cluster {
    static CRDS: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let cluster = support::cluster().await;
    CRDS.get_or_init(|| async {
        cluster
            .install_crds(&support::repo_root().join("crds"))
            .await;
    })
    .await;
    cluster
}

/// A namespace with a Codesphere simulator limited to `rate` requests per second (60 × rate per
/// minute, per credential), a Provider `cs` with the same budget and a burst of `rate` (so
/// bosun never sends faster than the floor assumes), and a running operator.
async fn setup(prefix: &str, rate: Option<u32>) -> Env {
    let cluster = bosun_cluster().await;
    let ns = cluster.test_namespace(prefix).await.name;
    let sim = CodesphereSim::new(&SimConfig {
        rate_limit_per_minute: rate.map(|r| 60 * r),
        ..SimConfig::default()
    });
    sim.set_start_delay(Duration::from_millis(500));
    sim.set_stage_duration(Duration::from_millis(500));
    sim.set_run_delay(Duration::from_millis(500));
    let server = bind("127.0.0.1:0".parse().unwrap(), router(sim.clone()))
        .await
        .expect("simulator");
    let rate_limit = match rate {
        Some(r) => format!(
            "  rateLimit: {{requestsPerMinute: {}, burst: {r}}}\n",
            60 * r
        ),
        None => String::new(),
    };
    let manifest = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: cs-token}}\nstringData: {{token: sim-token}}\n---\n\
         apiVersion: bosun.dev/v1alpha1\nkind: Provider\nmetadata: {{name: cs}}\nspec:\n  type: codesphere\n  endpoint: {}/api\n  \
         credentials: {{secretRef: {{name: cs-token, key: token}}}}\n  defaults: {{teamId: 1}}\n{rate_limit}",
        server.base_url()
    );
    kubectl_apply(cluster, &ns, &manifest).await;
    let tracker = Tracker::start(cluster, &ns).await;
    let operator = BenchOperator::start(cluster, &ns).await;
    let providers: Api<DynamicObject> = Api::namespaced_with(
        cluster.client().await,
        &ns,
        &resource("Provider", "providers"),
    );
    support::wait_for("Provider cs Ready", Duration::from_secs(90), || async {
        providers
            .get_opt("cs")
            .await
            .ok()
            .flatten()
            .is_some_and(|p| condition_true(&p.data, "Ready"))
    })
    .await;
    Env {
        ns,
        sim,
        _server: server,
        operator,
        tracker,
    }
}

fn workspace(name: &str, annotations: &[(&str, &str)]) -> String {
    let annotations: Vec<String> = annotations
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    format!(
        "apiVersion: bosun.dev/v1alpha1\nkind: Workspace\nmetadata:\n  name: {name}\n  annotations: {{{}}}\nspec:\n  \
         providerRef: {{name: cs}}\n  source: {{repository: 'https://git.example.com/shop.git', branch: main}}\n  \
         pipeline: {{prepare: false, run: Running}}\n",
        annotations.join(", ")
    )
}

/// `kubectl apply --server-side` (one PATCH per object) of a manifest into the namespace.
async fn kubectl_apply(cluster: &support::Cluster, ns: &str, manifest: &str) {
    cluster
        .kubectl_ok(
            &[
                "apply",
                "--server-side",
                "--field-manager=bosun-bench",
                "-n",
                ns,
                "-f",
                "-",
            ],
            Some(manifest),
        )
        .await;
}

async fn apply(env: &Env, manifest: &str) {
    kubectl_apply(support::cluster().await, &env.ns, manifest).await;
}

/// A JSON merge patch of one Workspace, sent in-process so the time it is sent is known.
async fn patch(env: &Env, name: &str, body: Value) {
    let api: Api<DynamicObject> = Api::namespaced_with(
        support::cluster().await.client().await,
        &env.ns,
        &resource("Workspace", "workspaces"),
    );
    api.patch(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .unwrap_or_else(|e| panic!("patching workspace {name}: {e}"));
}

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("bosun.dev", "v1alpha1", kind),
        plural,
    )
}

fn condition_true(obj: &Value, type_: &str) -> bool {
    obj["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == type_ && c["status"] == "True")
    })
}

// ---------------------------------------------------------------------------------------------
// Watching Workspaces.

/// What the watch saw of one Workspace.
#[derive(Default)]
struct Seen {
    /// When it was first seen Ready.
    ready_at: Option<Instant>,
    /// When it first had status conditions (bosun reconciled it).
    processed_at: Option<Instant>,
    external_id: Option<String>,
    last_handled: Option<String>,
    json_bytes: usize,
    /// Whether it is Ready now, and how often it stopped being Ready after it first was.
    ready_now: bool,
    ready_lost: u32,
}

#[derive(Default)]
struct Seens {
    objects: HashMap<String, Seen>,
}

impl Seens {
    fn ready(&self, prefix: &str) -> usize {
        self.count(prefix, |s| s.ready_at.is_some())
    }

    fn processed(&self, prefix: &str) -> usize {
        self.count(prefix, |s| s.processed_at.is_some())
    }

    fn count(&self, prefix: &str, f: impl Fn(&Seen) -> bool) -> usize {
        self.objects
            .iter()
            .filter(|(name, seen)| name.starts_with(prefix) && f(seen))
            .count()
    }
}

/// Watches the namespace's Workspaces in-process, so the moment each turns Ready is known to
/// within the watch's delivery time (milliseconds), without polling the apiserver.
struct Tracker {
    seen: Arc<Mutex<Seens>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Tracker {
    async fn start(cluster: &support::Cluster, ns: &str) -> Tracker {
        let api: Api<DynamicObject> = Api::namespaced_with(
            cluster.client().await,
            ns,
            &resource("Workspace", "workspaces"),
        );
        let seen = Arc::new(Mutex::new(Seens::default()));
        let synced = Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn({
            let seen = seen.clone();
            let synced = synced.clone();
            async move {
                let mut events = watcher(api, watcher::Config::default())
                    .default_backoff()
                    .boxed();
                while let Some(event) = events.next().await {
                    let obj = match event {
                        Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => o,
                        Ok(watcher::Event::InitDone) => {
                            synced.notify_one();
                            continue;
                        }
                        _ => continue,
                    };
                    let now = Instant::now();
                    let name = obj.metadata.name.clone().unwrap_or_default();
                    let bytes = serde_json::to_vec(&obj).map(|v| v.len()).unwrap_or(0);
                    let data = &obj.data;
                    let mut seen = seen.lock().unwrap();
                    let s = seen.objects.entry(name).or_default();
                    s.json_bytes = bytes;
                    let ready = condition_true(data, "Ready");
                    if s.ready_at.is_none() && ready {
                        s.ready_at = Some(now);
                    }
                    if s.ready_now && !ready {
                        s.ready_lost += 1;
                    }
                    s.ready_now = ready;
                    if s.processed_at.is_none()
                        && data["status"]["conditions"]
                            .as_array()
                            .is_some_and(|c| !c.is_empty())
                    {
                        s.processed_at = Some(now);
                    }
                    if let Some(id) = data["status"]["externalId"].as_str() {
                        s.external_id = Some(id.to_owned());
                    }
                    if let Some(token) = data["status"]["lastHandledReconcileAt"].as_str() {
                        s.last_handled = Some(token.to_owned());
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(60), synced.notified())
            .await
            .expect("the Workspace watch never synced");
        Tracker { seen, task }
    }

    fn with<T>(&self, f: impl FnOnce(&Seens) -> T) -> T {
        f(&self.seen.lock().unwrap())
    }

    fn ready_at(&self, name: &str) -> Option<Instant> {
        self.with(|s| s.objects.get(name).and_then(|o| o.ready_at))
    }

    fn last_ready_at(&self, prefix: &str) -> Option<Instant> {
        self.with(|s| {
            s.objects
                .iter()
                .filter(|(name, _)| name.starts_with(prefix))
                .filter_map(|(_, o)| o.ready_at)
                .max()
        })
    }

    fn external_id(&self, name: &str) -> Option<String> {
        self.with(|s| s.objects.get(name).and_then(|o| o.external_id.clone()))
    }

    fn mean_bytes(&self, prefix: &str) -> f64 {
        self.with(|s| {
            let sizes: Vec<usize> = s
                .objects
                .iter()
                .filter(|(name, _)| name.starts_with(prefix))
                .map(|(_, o)| o.json_bytes)
                .collect();
            sizes.iter().sum::<usize>() as f64 / sizes.len().max(1) as f64
        })
    }

    /// Waits until `done` holds for what the watch saw; panics after `timeout`.
    async fn wait(&self, what: &str, timeout: Duration, done: impl Fn(&Seens) -> bool) {
        self.wait_reporting(what, timeout, |s| (done(s), String::new()))
            .await;
    }

    /// Like [`Tracker::wait`], printing the progress `f` describes every 30 s.
    async fn wait_reporting(
        &self,
        what: &str,
        timeout: Duration,
        f: impl Fn(&Seens) -> (bool, String),
    ) {
        let start = Instant::now();
        let mut last_report = start;
        loop {
            let (done, progress) = self.with(&f);
            if done {
                return;
            }
            if last_report.elapsed() >= Duration::from_secs(30) && !progress.is_empty() {
                println!(
                    "  ... {what}: {progress} after {:.0} s",
                    start.elapsed().as_secs_f64()
                );
                last_report = Instant::now();
            }
            assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}: {progress}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
