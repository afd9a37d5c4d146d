//! Supervisor benchmarks with real processes (no harness):
//!
//! - cold start: from exec of `strata-supervisor` to every service of the graph Healthy
//!   (as seen through `supervisor.svc.list`), median over N runs, on a fresh state dir (a
//!   first boot: identity makes its key and store) and on the state an earlier boot left;
//! - crash to Healthy: SIGKILL the registry (zero backoff) until a new registry is
//!   Healthy, median over N crashes;
//! - resident memory of the supervisor (and of its orphan guard);
//! - cold start scaling: exec to all Healthy with 1, 10 and 100 services in a manifest,
//!   once with trivial services (`sleep infinity`, `readiness = "started"`) and once
//!   with Strata-protocol ones (strata-registry instances, each on its own runtime dir
//!   and socket, `readiness = "health"`: Healthy once `sys.health` answers ok), median
//!   over M runs (10; 3 with `--quick`).
//!
//! The graph is the built-in one (registry, identity, fs after identity) when the
//! identity and fs binaries build; otherwise three registry instances with the same
//! shape (c after b), and the output says which.
//!
//! Run: `cargo bench -p strata-supervisor --bench lifecycle` (`STRATA_BENCH_RUNS`
//! overrides N = 30); `-- --scale` runs only the cold start scaling table.

// Unsafe: kill(2) and friends on the test services' pids, which std cannot signal.
#![allow(unsafe_code)]

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use strata_testkit::{binary, call, Proc, Sandbox};

const SUPERVISOR: &str = env!("CARGO_BIN_EXE_strata-supervisor");

enum Graph {
    Builtin { identity: PathBuf, fs: PathBuf },
    Registries,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    if args.iter().any(|a| a == "--scale") {
        cold_start_scaling(quick);
        return;
    }
    let runs: usize = std::env::var("STRATA_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let registry = binary("strata-registry");
    let graph = match std::panic::catch_unwind(|| (binary("strata-identity"), binary("strata-fs")))
    {
        Ok((identity, fs)) => Graph::Builtin { identity, fs },
        Err(_) => Graph::Registries,
    };
    let label = match &graph {
        Graph::Builtin { .. } => "built-in graph (registry, identity, fs after identity)",
        Graph::Registries => "3 registry instances (c after b); identity/fs binaries unavailable",
    };
    println!(
        "strata-supervisor benchmarks, {runs} runs each, {} CPUs",
        cpus()
    );
    println!("graph: {label}");

    let mut cold = Vec::with_capacity(runs);
    let mut rss_after_boot = 0;
    let mut guard_rss = 0;
    for _ in 0..runs {
        let sandbox = Sandbox::new();
        let mut cmd = command(&sandbox, &graph, &registry);
        let started = Instant::now();
        let proc = Proc::spawn("strata-supervisor", &mut cmd);
        wait_all_healthy(&sandbox.socket("supervisor"), 3);
        cold.push(started.elapsed());
        rss_after_boot = rss_kib(proc.pid());
        let status = call(
            &sandbox.socket("supervisor"),
            "supervisor.status",
            json!({}),
            None,
        )
        .unwrap();
        if let Some(g) = status["result"]["orphan_guard"].as_i64() {
            guard_rss = rss_kib(g as i32);
        }
        stop(proc);
    }
    report(
        "cold start to all Healthy, first boot (fresh state)",
        &mut cold,
    );
    println!("supervisor RSS after boot: {rss_after_boot} KiB (orphan guard: {guard_rss} KiB)");

    // The same, booting on the state the first boot left (keys and store exist), as a
    // node does after a reboot.
    let kept = Sandbox::new();
    let mut restart = Vec::with_capacity(runs);
    for run in 0..=runs {
        let mut cmd = command(&kept, &graph, &registry);
        let started = Instant::now();
        let proc = Proc::spawn("strata-supervisor", &mut cmd);
        wait_all_healthy(&kept.socket("supervisor"), 3);
        if run > 0 {
            restart.push(started.elapsed());
        }
        stop(proc);
    }
    report(
        "cold start to all Healthy, state kept from an earlier boot",
        &mut restart,
    );

    // Crash to Healthy, zero backoff.
    let sandbox = Sandbox::new();
    let manifest = sandbox.root().join("m.toml");
    std::fs::write(
        &manifest,
        format!(
            "[[service]]\nname = \"registry\"\nexec = \"{}\"\nbackoff = {{ base = \"0\", max = \"0\" }}\n\
             quarantine = {{ crashes = 0 }}\n",
            registry.display()
        ),
    )
    .unwrap();
    let mut cmd = base_command(&sandbox);
    cmd.arg("--config").arg(&manifest);
    let proc = Proc::spawn("strata-supervisor", &mut cmd);
    let socket = sandbox.socket("supervisor");
    wait_all_healthy(&socket, 1);
    let mut crash = Vec::with_capacity(runs);
    for _ in 0..runs {
        let old = registry_pid(&socket);
        let t0 = Instant::now();
        // SAFETY: signalling the benchmark's own service.
        unsafe { libc::kill(old, libc::SIGKILL) };
        loop {
            let s = &list(&socket)[0];
            if s["state"] == "Healthy" && s["pid"].as_i64().is_some_and(|p| p as i32 != old) {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "no recovery: {s}");
            std::thread::sleep(Duration::from_micros(200));
        }
        crash.push(t0.elapsed());
    }
    report("crash to Healthy (zero backoff)", &mut crash);
    println!(
        "supervisor RSS after {runs} crash recoveries: {} KiB",
        rss_kib(proc.pid())
    );
    stop(proc);
    cold_start_scaling(quick);
}

/// The services of a scaling manifest.
#[derive(Clone, Copy)]
enum Kind {
    Started,
    Registries,
}

/// A manifest of `n` services of `kind`.
fn scaling_manifest(sandbox: &Sandbox, kind: Kind, n: usize, registry: &Path) -> PathBuf {
    let root = sandbox.root();
    let mut text = String::new();
    for i in 0..n {
        match kind {
            Kind::Started => text.push_str(&format!(
                "[[service]]\nname = \"s{i}\"\nexec = \"sleep\"\nargs = [\"infinity\"]\nreadiness = \"started\"\n"
            )),
            // The first is the node's registry (the others register with it).
            Kind::Registries if i == 0 => text.push_str(&format!(
                "[[service]]\nname = \"registry\"\nexec = \"{}\"\n",
                registry.display()
            )),
            Kind::Registries => text.push_str(&format!(
                "[[service]]\nname = \"r{i}\"\nexec = \"{1}\"\n\
                 env = {{ STRATA_RUNTIME_DIR = \"{0}/r{i}\" }}\nsocket = \"{0}/r{i}/registry.sock\"\n",
                root.display(),
                registry.display()
            )),
        }
    }
    let path = root.join("scale.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Cold start (exec of the supervisor to every service Healthy) by manifest size.
fn cold_start_scaling(quick: bool) {
    let runs = if quick { 3 } else { 10 };
    let registry = binary("strata-registry");
    println!(
        "cold start scaling, exec to all Healthy, median of {runs} runs, {} CPUs",
        cpus()
    );
    println!("each: median wall (max) and the supervisor's own CPU time at that moment (median)");
    println!(
        "{:>9} | {:>33} | {:>33}",
        "services", "readiness = \"started\"", "strata-registry (health)"
    );
    for n in [1, 10, 100] {
        // `supervisor.svc.list` of n services is itself work for the supervisor: poll
        // less often for a big manifest, so the probe does not slow what it measures.
        let poll = Duration::from_micros(500).max(Duration::from_micros(20) * n as u32);
        let mut row = Vec::new();
        for kind in [Kind::Started, Kind::Registries] {
            let mut samples = Vec::with_capacity(runs);
            let mut cpu = Vec::with_capacity(runs);
            for _ in 0..runs {
                let sandbox = Sandbox::new();
                let manifest = scaling_manifest(&sandbox, kind, n, &registry);
                let mut cmd = base_command(&sandbox);
                cmd.arg("--config").arg(&manifest);
                let started = Instant::now();
                let proc = Proc::spawn("strata-supervisor", &mut cmd);
                wait_healthy_every(&sandbox.socket("supervisor"), n, poll);
                samples.push(started.elapsed());
                cpu.push(cpu_ns(proc.pid()));
                stop(proc);
            }
            samples.sort();
            cpu.sort_unstable();
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            row.push(format!(
                "{:>7.1} ms (max {:>6.1}) {:>6.1} ms",
                ms(samples[samples.len() / 2]),
                ms(samples[samples.len() - 1]),
                cpu[cpu.len() / 2] as f64 / 1e6
            ));
        }
        println!("{n:>9} | {:>33} | {:>33}", row[0], row[1]);
    }
}

/// CPU time (ns) the process's live threads have run, from /proc/PID/task/*/schedstat.
fn cpu_ns(pid: i32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn base_command(sandbox: &Sandbox) -> Command {
    let mut cmd = Command::new(SUPERVISOR);
    cmd.env("STRATA_RUNTIME_DIR", sandbox.runtime_dir())
        .env("STRATA_STATE_DIR", sandbox.state_dir())
        .env("STRATA_LOG", "warn")
        .env_remove("STRATA_CONFIG")
        .stdin(std::process::Stdio::null());
    cmd
}

fn command(sandbox: &Sandbox, graph: &Graph, registry: &Path) -> Command {
    let mut cmd = base_command(sandbox);
    match graph {
        Graph::Builtin { identity, fs } => {
            cmd.env("STRATA_REGISTRY_BIN", registry)
                .env("STRATA_IDENTITY_BIN", identity)
                .env("STRATA_FS_BIN", fs);
        }
        Graph::Registries => {
            let root = sandbox.root();
            let mut text = String::new();
            for (name, dep) in [("registry", None), ("b", None), ("c", Some("b"))] {
                text.push_str(&format!(
                    "[[service]]\nname = \"{name}\"\nexec = \"{}\"\n",
                    registry.display()
                ));
                if name != "registry" {
                    text.push_str(&format!(
                        "env = {{ STRATA_RUNTIME_DIR = \"{0}/{name}\" }}\nsocket = \"{0}/{name}/registry.sock\"\n",
                        root.display()
                    ));
                }
                if let Some(dep) = dep {
                    text.push_str(&format!("depends_on = [\"{dep}\"]\n"));
                }
            }
            let path = root.join("graph.toml");
            std::fs::write(&path, text).unwrap();
            cmd.arg("--config").arg(path);
        }
    }
    cmd
}

fn list(socket: &Path) -> Vec<Value> {
    match call(socket, "supervisor.svc.list", json!({}), None) {
        Ok(r) => r["result"]["services"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

fn registry_pid(socket: &Path) -> i32 {
    list(socket)[0]["pid"].as_i64().expect("registry runs") as i32
}

fn wait_all_healthy(socket: &Path, services: usize) {
    wait_healthy_every(socket, services, Duration::from_micros(200));
}

fn wait_healthy_every(socket: &Path, services: usize, poll: Duration) {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let l = list(socket);
        if l.len() == services && l.iter().all(|s| s["state"] == "Healthy") {
            return;
        }
        assert!(Instant::now() < until, "graph not Healthy: {l:?}");
        std::thread::sleep(poll);
    }
}

fn stop(mut proc: Proc) {
    proc.signal(libc::SIGTERM);
    let status = proc
        .wait_timeout(Duration::from_secs(20))
        .expect("supervisor exits");
    assert!(status.success(), "{status:?}");
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn report(what: &str, samples: &mut [Duration]) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{what}: median {:.1} ms, p90 {:.1} ms, min {:.1} ms, max {:.1} ms",
        ms(pick(0.5)),
        ms(pick(0.9)),
        ms(samples[0]),
        ms(samples[samples.len() - 1])
    );
}
