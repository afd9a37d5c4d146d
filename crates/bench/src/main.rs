//! `strata-bench`: measure Strata methods over persistent connections, each beside a bare
//! echo server (started here) that answers the same request with a same-size response:
//! the floor no server on this kind of socket can beat.
//!
//! Every figure comes from raw frames on persistent connections, sent the same way to the
//! service and to the floor, so the difference is the service's own work.

mod issue_scale;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_frame::frame_codec;
use strata_ipc::paths;
use tokio::net::{UnixListener, UnixStream};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

mod fs_scale;

const MODES: [&str; 5] = [
    "echo",
    "fs.read",
    "fs.list",
    "identity.issue",
    "registry.resolve",
];

/// Modes run only when asked for (`--mode`): they need a node configured for them.
const EXTRA_MODES: [&str; 1] = ["fs.handles"];

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Load a Strata node and compare each method with a bare echo floor"
)]
struct Args {
    /// Runtime directory of the node under test (default: $STRATA_RUNTIME_DIR, /run/strata for root).
    #[arg(long, value_name = "DIR")]
    runtime_dir: Option<PathBuf>,
    /// Modes to run (repeatable): echo, fs.read, fs.list, identity.issue, registry.resolve
    /// (the default: all of these), and fs.handles (only when asked: it needs fs's handle
    /// quotas and open-files limit raised to the largest --handles).
    #[arg(long = "mode", value_name = "MODE")]
    modes: Vec<String>,
    /// Connection counts to run each mode with (repeatable). Default: 1 and 16.
    #[arg(long = "conns", value_name = "N")]
    conns: Vec<usize>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Bytes per fs.read.
    #[arg(long, default_value_t = 4096)]
    size: u64,
    /// Entries in the directory fs.list lists (`--fs-dir` itself: bench.dat and
    /// `list-entry-N` files are made up to this count).
    #[arg(long, default_value_t = 50)]
    list_entries: usize,
    /// Handle counts for fs.handles (repeatable). Default: 1000, 10000 and 100000.
    #[arg(long = "handles", value_name = "N")]
    handles: Vec<usize>,
    /// Token for fs modes (default: one is issued, which needs admin credentials).
    #[arg(long, env = "STRATA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Directory for the fs modes (required by them): bench.dat is written there and a
    /// token for it is issued. It must lie inside one of fs's export roots.
    #[arg(long, value_name = "DIR")]
    fs_dir: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Capabilities on record for the identity.issue.scale mode (repeatable), which runs
    /// only when asked for with --mode: identity's store is filled by issuing up to each
    /// count, then identity.issue is measured. Default: 1000, 100000 and 1000000.
    #[arg(long = "issued", value_name = "N")]
    issued: Vec<u64>,
    /// Internal: run as the floor server on this socket (used by strata-bench itself).
    #[arg(long, hide = true, value_name = "SOCKET", requires = "floor_bytes")]
    serve_floor: Option<PathBuf>,
    /// Internal: the floor server's response size.
    #[arg(long, hide = true, value_name = "BYTES")]
    floor_bytes: Option<usize>,
}

#[derive(Debug, Serialize, Clone)]
struct Stats {
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    rps: f64,
    requests: u64,
    errors: u64,
    /// CPU time the serving process used per request over the measured window (µs, all
    /// its threads), when it could be read from /proc.
    cpu_us: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Row {
    mode: String,
    conns: usize,
    request_bytes: usize,
    response_bytes: usize,
    service: Stats,
    floor: Stats,
}

/// What one connection sends: an optional set-up exchange, then the same frame again and again.
#[derive(Clone)]
struct Workload {
    socket: PathBuf,
    setup: Option<Bytes>,
    /// Built from the set-up's answer (e.g. to insert a handle), or fixed.
    request: Arc<dyn Fn(&Value) -> Bytes + Send + Sync>,
}

fn frame(method: &str, token: Option<&str>, params: Value) -> Bytes {
    let mut req = json!({"v": 1, "req_id": "b", "method": method, "params": params});
    if let Some(t) = token {
        req["auth"] = json!({"token": t});
    }
    Bytes::from(serde_json::to_vec(&req).expect("request serialises"))
}

type Conn = Framed<UnixStream, LengthDelimitedCodec>;

async fn exchange(conn: &mut Conn, frame: Bytes) -> anyhow::Result<Bytes> {
    conn.send(frame).await?;
    Ok(conn
        .next()
        .await
        .ok_or_else(|| anyhow!("connection closed"))??
        .freeze())
}

fn is_ok(reply: &[u8]) -> bool {
    // The envelope is small; a full parse would dominate the client's own cost.
    let head = &reply[..reply.len().min(64)];
    head.windows(9).any(|w| w == b"\"ok\":true")
}

async fn measure(work: Workload, conns: usize, secs: Duration) -> anyhow::Result<Stats> {
    let start = Instant::now() + Duration::from_millis(100);
    let deadline = start + secs;
    let server = fs_scale::server_pid(&work.socket).await;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let work = work.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn: Conn =
                Framed::new(UnixStream::connect(&work.socket).await?, frame_codec());
            let setup = match &work.setup {
                Some(f) => serde_json::from_slice(&exchange(&mut conn, f.clone()).await?)?,
                None => Value::Null,
            };
            let request = (work.request)(&setup);
            // Warm up until the common start, so every connection measures the same window.
            while Instant::now() < start {
                exchange(&mut conn, request.clone()).await?;
            }
            let mut lat = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let reply = exchange(&mut conn, request.clone()).await?;
                lat.push(t.elapsed().as_nanos() as u64);
                if !is_ok(&reply) {
                    errors += 1;
                }
            }
            anyhow::Ok((lat, errors))
        }));
    }
    // The server's CPU time over exactly the measured window.
    tokio::time::sleep_until(start.into()).await;
    let cpu_start = server.and_then(fs_scale::cpu_us);
    tokio::time::sleep_until(deadline.into()).await;
    let cpu_end = server.and_then(fs_scale::cpu_us);
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await??;
        all.extend(lat);
        errors += e;
    }
    if all.is_empty() {
        bail!("no request completed");
    }
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)] as f64 / 1000.0;
    Ok(Stats {
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        p999_us: pct(0.999),
        rps: all.len() as f64 / secs.as_secs_f64(),
        requests: all.len() as u64,
        errors,
        cpu_us: cpu_start
            .zip(cpu_end)
            .map(|(a, b)| (b - a) / all.len() as f64),
    })
}

/// A bare echo server, in a process of its own like every Strata service and on the same
/// runtime shape (2 workers), answering every frame with a fixed response of
/// `response_bytes`. It is killed when the returned guard drops.
async fn start_floor(dir: &Path, response_bytes: usize) -> anyhow::Result<(PathBuf, Floor)> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("floor-{n}.sock"));
    let child = std::process::Command::new(std::env::current_exe()?)
        .arg("--serve-floor")
        .arg(&path)
        .arg("--floor-bytes")
        .arg(response_bytes.to_string())
        .stdin(std::process::Stdio::null())
        .spawn()
        .context("cannot start the floor server")?;
    let floor = Floor(child);
    let until = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(&path).await.is_err() {
        if Instant::now() > until {
            bail!("the floor server did not start");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok((path, floor))
}

/// The floor server process; killed on drop.
struct Floor(std::process::Child);

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The floor server's loop (runs in the child process).
async fn serve_floor(path: PathBuf, response_bytes: usize) -> anyhow::Result<()> {
    let listener = UnixListener::bind(&path)?;
    // A response that is ok-shaped, so the client's check is the same for both.
    let mut body = br#"{"v":1,"req_id":"b","ok":true,"result":{"pad":""#.to_vec();
    let tail = br#""}}"#;
    let pad = response_bytes.saturating_sub(body.len() + tail.len());
    body.extend(std::iter::repeat_n(b'x', pad));
    body.extend_from_slice(tail);
    let response = Bytes::from(body);
    while let Ok((stream, _)) = listener.accept().await {
        let response = response.clone();
        tokio::spawn(async move {
            let mut framed = Framed::new(stream, frame_codec());
            while let Some(Ok(_)) = framed.next().await {
                if framed.send(response.clone()).await.is_err() {
                    return;
                }
            }
        });
    }
    Ok(())
}

async fn one_call(socket: &Path, f: Bytes) -> anyhow::Result<Value> {
    let mut conn: Conn = Framed::new(
        UnixStream::connect(socket)
            .await
            .with_context(|| format!("cannot connect to {}", socket.display()))?,
        frame_codec(),
    );
    Ok(serde_json::from_slice(&exchange(&mut conn, f).await?)?)
}

async fn workload(
    args: &Args,
    runtime: &Path,
    mode: &str,
    token: &Option<String>,
) -> anyhow::Result<Workload> {
    let sock = |s: &str| paths::socket_path(runtime, s);
    let fixed =
        |b: Bytes| -> Arc<dyn Fn(&Value) -> Bytes + Send + Sync> { Arc::new(move |_| b.clone()) };
    let fs_token = |token: &Option<String>| -> anyhow::Result<String> {
        token
            .clone()
            .ok_or_else(|| anyhow!("fs modes need --fs-dir (and a token or admin credentials)"))
    };
    Ok(match mode {
        "registry.resolve" => {
            // Resolve an entry of our own when we may register one; else identity's.
            let registered = one_call(
                &sock("registry"),
                frame(
                    "registry.register",
                    None,
                    json!({"service": "bench-target", "endpoint": format!("unix://{}", sock("bench-target").display())}),
                ),
            )
            .await
            .is_ok_and(|r| r["ok"] == true);
            let name = if registered {
                "bench-target"
            } else {
                "identity"
            };
            Workload {
                socket: sock("registry"),
                setup: None,
                request: fixed(frame("registry.resolve", None, json!({"service": name}))),
            }
        }
        "identity.issue" => Workload {
            socket: sock("identity"),
            setup: None,
            request: fixed(frame(
                "identity.issue",
                None,
                json!({"service": "fs", "rights": ["fs.read"], "path_prefix": "/srv/data", "ttl_seconds": 60}),
            )),
        },
        "fs.list" => {
            let t = fs_token(token)?;
            Workload {
                socket: sock("fs"),
                setup: None,
                request: fixed(frame("fs.list", Some(&t), json!({"path": "."}))),
            }
        }
        "fs.read" => {
            let t = fs_token(token)?;
            let size = args.size;
            let t2 = t.clone();
            Workload {
                socket: sock("fs"),
                setup: Some(frame("fs.open", Some(&t), json!({"path": "bench.dat"}))),
                request: Arc::new(move |opened: &Value| {
                    let handle = opened["result"]["handle"].as_str().unwrap_or("missing");
                    frame(
                        "fs.read",
                        Some(&t2),
                        json!({"handle": handle, "offset": 0, "size": size}),
                    )
                }),
            }
        }
        other => bail!(
            "unknown mode `{other}`; modes: {}, {}",
            MODES.join(", "),
            EXTRA_MODES.join(", ")
        ),
    })
}

/// For fs modes: a file to read in `--fs-dir`, and a token for that directory.
async fn prepare_fs(args: &Args, runtime: &Path) -> anyhow::Result<Option<String>> {
    let Some(dir) = &args.fs_dir else {
        return Ok(args.token.clone());
    };
    let dir = std::path::absolute(dir)?;
    std::fs::write(dir.join("bench.dat"), vec![b'a'; args.size.max(1) as usize])
        .with_context(|| format!("cannot write {}/bench.dat", dir.display()))?;
    // fs.list lists the directory itself: bench.dat and these make `--list-entries`.
    for i in 1..args.list_entries {
        let name = dir.join(format!("list-entry-{i:05}"));
        std::fs::write(&name, b"x").with_context(|| format!("cannot write {}", name.display()))?;
    }
    if let Some(t) = &args.token {
        return Ok(Some(t.clone()));
    }
    let r = one_call(
        &paths::socket_path(runtime, "identity"),
        frame(
            "identity.issue",
            None,
            json!({"service": "fs", "rights": ["fs.open", "fs.read", "fs.list", "fs.close"],
                   "path_prefix": dir, "ttl_seconds": 3600}),
        ),
    )
    .await?;
    r["result"]["token"]
        .as_str()
        .map(|t| Some(t.to_owned()))
        .ok_or_else(|| anyhow!("identity refused a bench token: {}", r["error"]))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if let (Some(path), Some(bytes)) = (args.serve_floor.clone(), args.floor_bytes) {
        return rt.block_on(serve_floor(path, bytes));
    }
    rt.block_on(run(args))
}

/// A CPU-per-request figure for the table.
fn cpu(us: Option<f64>) -> String {
    us.map_or_else(|| "-".to_owned(), |us| format!("{us:.1}"))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let runtime = paths::resolve_runtime_dir(args.runtime_dir.clone())?;
    let modes: Vec<String> = if args.modes.is_empty() {
        MODES.iter().map(|m| m.to_string()).collect()
    } else {
        args.modes.clone()
    };
    let conns = if args.conns.is_empty() {
        vec![1, 16]
    } else {
        args.conns.clone()
    };
    if !(args.duration.is_finite() && args.duration > 0.0) {
        bail!("--duration must be a positive number of seconds");
    }
    let secs = Duration::from_secs_f64(args.duration);
    let floor_dir = tempfile::tempdir()?;
    let token = if modes.iter().any(|m| m.starts_with("fs.")) {
        prepare_fs(&args, &runtime).await?
    } else {
        None
    };
    let mut rows = Vec::new();
    let mut floors = Vec::new();
    let mut scale_rows = None;
    for mode in &modes {
        if mode == "identity.issue.scale" {
            let counts = if args.issued.is_empty() {
                vec![1_000, 100_000, 1_000_000]
            } else {
                args.issued.clone()
            };
            let work = workload(&args, &runtime, "identity.issue", &token).await?;
            let scale = issue_scale::rows(&work, floor_dir.path(), &conns, secs, &counts);
            rows.extend(scale.await?);
            continue;
        }
        if mode == "fs.handles" {
            let counts = if args.handles.is_empty() {
                vec![1_000, 10_000, 100_000]
            } else {
                args.handles.clone()
            };
            let t = token.as_deref().ok_or_else(|| {
                anyhow!("fs modes need --fs-dir (and a token or admin credentials)")
            })?;
            let fs = paths::socket_path(&runtime, "fs");
            scale_rows = Some(fs_scale::handles(&fs, t, &counts).await?);
            continue;
        }
        let (work, request_bytes, response_bytes) = if mode == "echo" {
            let req = frame("bench.echo", None, json!({"pad": "x".repeat(100)}));
            let (floor, guard) = start_floor(floor_dir.path(), req.len()).await?;
            floors.push(guard);
            let n = req.len();
            let work = Workload {
                socket: floor,
                setup: None,
                request: Arc::new(move |_| req.clone()),
            };
            (work, n, n)
        } else {
            let work = workload(&args, &runtime, mode, &token).await?;
            // One real exchange tells the request and response sizes for the floor.
            let mut conn: Conn = Framed::new(
                UnixStream::connect(&work.socket).await.with_context(|| {
                    format!("{mode}: cannot connect to {}", work.socket.display())
                })?,
                frame_codec(),
            );
            let setup = match &work.setup {
                Some(f) => serde_json::from_slice(&exchange(&mut conn, f.clone()).await?)?,
                None => Value::Null,
            };
            let req = (work.request)(&setup);
            let reply = exchange(&mut conn, req.clone()).await?;
            if !is_ok(&reply) {
                bail!("{mode} is refused: {}", String::from_utf8_lossy(&reply));
            }
            (work, req.len(), reply.len())
        };
        let (floor_sock, floor_guard) = start_floor(floor_dir.path(), response_bytes).await?;
        for &n in &conns {
            let service = measure(work.clone(), n, secs).await?;
            let floor_req = (work.request)(&Value::Null);
            let floor = measure(
                Workload {
                    socket: floor_sock.clone(),
                    setup: None,
                    request: Arc::new(move |_| floor_req.clone()),
                },
                n,
                secs,
            )
            .await?;
            rows.push(Row {
                mode: mode.clone(),
                conns: n,
                request_bytes,
                response_bytes,
                service,
                floor,
            });
        }
        drop(floor_guard);
    }
    if args.json {
        match &scale_rows {
            None => println!("{}", serde_json::to_string_pretty(&rows)?),
            Some(scale) => println!(
                "{}",
                serde_json::to_string_pretty(&json!({"rows": rows, "fs_handles": scale}))?
            ),
        }
    } else {
        println!(
            "{:<17} {:>5} {:>9} {:>9} {:>9} {:>10} {:>6} {:>8} | {:>9} {:>9} {:>10} {:>8} | {:>6} {:>6}",
            "mode",
            "conns",
            "p50 µs",
            "p99 µs",
            "p99.9 µs",
            "req/s",
            "errors",
            "cpu µs",
            "floor p50",
            "floor p99",
            "floor r/s",
            "fl cpu µs",
            "p50 ×",
            "rps %"
        );
        for r in &rows {
            println!(
                "{:<17} {:>5} {:>9.1} {:>9.1} {:>9.1} {:>10.0} {:>6} {:>8} | {:>9.1} {:>9.1} {:>10.0} {:>8} | {:>6.2} {:>5.0}%",
                r.mode,
                r.conns,
                r.service.p50_us,
                r.service.p99_us,
                r.service.p999_us,
                r.service.rps,
                r.service.errors,
                cpu(r.service.cpu_us),
                r.floor.p50_us,
                r.floor.p99_us,
                r.floor.rps,
                cpu(r.floor.cpu_us),
                r.service.p50_us / r.floor.p50_us,
                100.0 * r.service.rps / r.floor.rps
            );
        }
        if let Some(scale) = &scale_rows {
            fs_scale::print(scale);
        }
    }
    Ok(())
}
