//! `fs.read` of 4 KiB over persistent connections, beside a bare echo server that answers
//! every request with a response of exactly the same size, measured in the same run; the
//! same fs.read over the server's TCP port (mutual TLS 1.3 on loopback); then the resident
//! memory of the real `strata-fs` binary idle and with 10,000 open handles.
//!
//! `cargo bench -p strata-fs --bench read` (add `-- --quick` for a short run).
//!
//! Latency and throughput: an in-process fs (real router, guard with a fixed key, audit
//! log, export root in a temp dir) and the echo server share a 2-worker Tokio runtime; the
//! clients run on their own 2-worker runtime and send the same pre-encoded frames to each.
//! The fs server also listens on 127.0.0.1 with mutual TLS (certificates from a CA made for
//! the run, every fs method allow-listed); its connections are persistent, so the
//! handshake is outside the measured loop. Rounds are interleaved and each figure is the
//! median over the rounds.
//!
//! Memory: `strata-identity` and `strata-fs` (release builds) on a temp runtime dir; VmRSS
//! of the fs process from /proc after one authorized request, and again with 10,000
//! handles open.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_audit::Audit;
use strata_cap::{CapId, Claims, Constraints, SigningKey, Timestamp, TrustedKey, TrustedKeys};
use strata_frame::frame_codec;
use strata_fs::{ExportRoots, FsService, HandleLimits, LandlockState};
use strata_guard::Guard;
use strata_ipc::tls::{self, rustls};
use strata_ipc::{Client, Endpoint, Server, ServerConfig, TcpListen, TlsFiles};
use tokio::net::UnixListener;
use tokio_util::codec::Framed;

const READ_SIZE: usize = 4096;
const ROUNDS: usize = 3;

type Conn = strata_ipc::client::Connection;

/// Where a client loop connects.
#[derive(Clone)]
enum Target {
    Unix(PathBuf),
    /// A TCP port spoken over mutual TLS.
    Tls(SocketAddr, Arc<rustls::ClientConfig>),
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (samples, secs) = if quick {
        (5_000, Duration::from_millis(500))
    } else {
        (30_000, Duration::from_secs(2))
    };
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().canonicalize().unwrap();
    let (fs_sock, echo_sock) = (base.join("fs.sock"), base.join("echo.sock"));
    std::fs::create_dir_all(base.join("export/data")).unwrap();
    let content: Vec<u8> = (0..READ_SIZE * 4).map(|i| (i % 251) as u8).collect();
    std::fs::write(base.join("export/data/bench.dat"), &content).unwrap();
    let key = SigningKey::generate().unwrap();
    let token = key.sign(&claims(&base.join("export/data"))).unwrap();
    let (server_tls, client_tls) = node_certificates(&base);

    let servers = runtime();
    let (_revocation_feed, tls_addr) = servers.block_on(async {
        let keys = Arc::new(TrustedKeys::new([TrustedKey::new(key.public_key())]));
        let (guard, feed) = Guard::offline(keys);
        let fs = Arc::new(FsService::new(
            ExportRoots::open(&[base.join("export")]).unwrap(),
            HandleLimits::default(),
            Audit::open(&base.join("state"), "fs").unwrap(),
            guard.clone(),
        ));
        strata_fs::spawn_maintenance(Arc::clone(&fs), &guard);
        let router = strata_fs::router(fs, guard, LandlockState::Off);
        dispatch_cost(&router, &token, if quick { 20_000 } else { 100_000 }).await;
        let mut config = ServerConfig::new(&fs_sock);
        config.tcp = Some(TcpListen {
            addr: "127.0.0.1:0".parse().unwrap(),
            tls: tls::server_config(&server_tls).unwrap(),
            methods: router
                .methods()
                .into_iter()
                .filter(|m| m.starts_with("fs."))
                .map(String::from)
                .collect(),
        });
        let server = Server::bind(config, router).unwrap();
        let tls_addr = server.tcp_addr().unwrap();
        tokio::spawn(server.serve(std::future::pending()));
        (feed, tls_addr)
    });
    let fs_unix = Target::Unix(fs_sock.clone());
    let fs_tls = Target::Tls(tls_addr, tls::client_config(&client_tls).unwrap());

    let clients = runtime();
    clients.block_on(async {
        // One real response tells the echo server how big its canned answer must be.
        let mut probe = connect(&fs_unix).await;
        let read = read_frame(&mut probe, &token).await;
        let sample = exchange(&mut probe, read).await;
        let reply: Value = serde_json::from_slice(&sample).unwrap();
        assert_eq!(reply["ok"], true, "{reply}");
        assert_eq!(reply["result"]["bytes_read"], READ_SIZE);
        let canned = Bytes::from(sample.to_vec());
        let listener = UnixListener::bind(&echo_sock).unwrap();
        servers.spawn(bare_echo(listener, canned.clone()));

        println!(
            "fs.read of {READ_SIZE} bytes: request {} bytes, response {} bytes (echo answers the same size)",
            read_frame(&mut probe, &token).await.len(),
            canned.len()
        );
        println!("rounds: {ROUNDS}, interleaved; each figure is the median over the rounds");
        let targets = [Target::Unix(echo_sock.clone()), fs_unix, fs_tls];
        let mut results: [Vec<Figures>; 3] = [Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..ROUNDS {
            for (i, target) in targets.iter().enumerate() {
                let lat = latencies(target, &token, samples).await;
                let one = throughput(target, &token, 1, secs).await;
                let sixteen = throughput(target, &token, 16, secs).await;
                results[i].push(Figures {
                    p50: pct(&lat, 0.50),
                    p99: pct(&lat, 0.99),
                    one,
                    sixteen,
                });
            }
        }
        println!(
            "{:<12} {:>10} {:>10} {:>14} {:>14}",
            "server", "p50", "p99", "1 conn rps", "16 conn rps"
        );
        let echo = Figures::median(&results[0]);
        let fs = Figures::median(&results[1]);
        let mtls = Figures::median(&results[2]);
        for (name, m) in [("bare echo", &echo), ("fs.read", &fs), ("fs.read mtls", &mtls)] {
            println!(
                "{:<12} {:>10.1?} {:>10.1?} {:>14.0} {:>14.0}",
                name, m.p50, m.p99, m.one, m.sixteen
            );
        }
        println!(
            "p50 fs/echo (1 conn): {:.2} (target <= 2)",
            fs.p50.as_secs_f64() / echo.p50.as_secs_f64()
        );
        println!(
            "throughput fs/echo (16 conns): {:.0}% (target >= 50%)",
            100.0 * fs.sixteen / echo.sixteen
        );
        println!(
            "fs.read over mutual TLS on loopback vs the unix socket: p50 {:.2}x, 16-conn throughput {:.0}%",
            mtls.p50.as_secs_f64() / fs.p50.as_secs_f64(),
            100.0 * mtls.sixteen / fs.sixteen
        );
    });
    drop(clients);
    drop(servers);
    memory();
}

/// The router's own cost per fs.read, without sockets: parse, authorize, read, encode.
async fn dispatch_cost(router: &strata_ipc::Router, token: &str, n: u32) {
    let peer = strata_ipc::PeerCred::current_process();
    let opened = router
        .dispatch(
            peer,
            &request("fs.open", token, json!({"path": "bench.dat"})),
        )
        .await;
    let opened: Value = serde_json::from_slice(&opened).unwrap();
    let handle = opened["result"]["handle"].as_str().unwrap();
    let read = request(
        "fs.read",
        token,
        json!({"handle": handle, "offset": READ_SIZE, "size": READ_SIZE}),
    );
    let started = Instant::now();
    for _ in 0..n {
        router.dispatch(peer, &read).await;
    }
    println!(
        "fs.read handled in-process (router.dispatch, no socket): {:.1?} per request",
        started.elapsed() / n
    );
    router
        .dispatch(peer, &request("fs.close", token, json!({"handle": handle})))
        .await;
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn claims(prefix: &Path) -> Claims {
    let now = Timestamp::now();
    Claims {
        jti: CapId::random().unwrap(),
        sub: "bench".into(),
        iss: "identity@bench".into(),
        aud: "strata".into(),
        iat: now,
        exp: now.saturating_add(Duration::from_secs(3600)),
        nbf: None,
        service: "fs".into(),
        actions: vec![],
        rights: vec!["fs.open".parse().unwrap(), "fs.read".parse().unwrap()],
        constraints: Constraints {
            path_prefix: Some(prefix.to_str().unwrap().parse().unwrap()),
            rate_limit: None,
            shared_rate_limits: vec![],
        },
        parents: vec![],
    }
}

async fn connect(target: &Target) -> Conn {
    let client = match target {
        Target::Unix(path) => Client::new(Endpoint::unix(path).unwrap()),
        Target::Tls(addr, config) => Client::with_tls(
            Endpoint::from_socket_addr(*addr).unwrap(),
            Arc::clone(config),
        ),
    };
    client.connect_framed().await.unwrap()
}

/// A CA for this run and two node certificates from it (as `strata-pki` makes them: CN =
/// node id, O = strata:nodes, SAN 127.0.0.1, serverAuth and clientAuth), for the fs server
/// and the clients.
fn node_certificates(dir: &Path) -> (TlsFiles, TlsFiles) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
        ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
    };
    use std::os::unix::fs::OpenOptionsExt;
    let named = |cn: &str| {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params
    };
    let mut ca = named("bench-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let ca_path = dir.join("ca.crt");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let node = |id: &str| {
        let mut params = named(id);
        // What makes it a node's (clients refuse any other server certificate).
        params
            .distinguished_name
            .push(DnType::OrganizationName, "strata:nodes");
        params.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        let files = TlsFiles {
            ca: ca_path.clone(),
            cert: dir.join(format!("{id}.crt")),
            key: dir.join(format!("{id}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        let mut key_file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&files.key)
            .unwrap();
        std::io::Write::write_all(&mut key_file, key.serialize_pem().as_bytes()).unwrap();
        files
    };
    (node("bench-fs"), node("bench-client"))
}

async fn exchange(conn: &mut Conn, frame: Bytes) -> bytes::BytesMut {
    conn.send(frame).await.unwrap();
    conn.next().await.unwrap().unwrap()
}

fn request(method: &str, token: &str, params: Value) -> Bytes {
    let req = json!({"v": 1, "req_id": "b", "method": method, "auth": {"token": token}, "params": params});
    Bytes::from(serde_json::to_vec(&req).unwrap())
}

/// Open `bench.dat` on this connection and return the frame that reads 4 KiB from it.
/// Against the echo server the open is answered with the canned read, which is ignored.
async fn read_frame(conn: &mut Conn, token: &str) -> Bytes {
    let opened = exchange(
        conn,
        request("fs.open", token, json!({"path": "bench.dat"})),
    )
    .await;
    let opened: Value = serde_json::from_slice(&opened).unwrap();
    let handle = opened["result"]["handle"].as_str().unwrap_or("echo");
    request(
        "fs.read",
        token,
        json!({"handle": handle, "offset": READ_SIZE, "size": READ_SIZE}),
    )
}

async fn bare_echo(listener: UnixListener, canned: Bytes) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let canned = canned.clone();
        tokio::spawn(async move {
            let mut framed = Framed::new(stream, frame_codec());
            while let Some(Ok(_)) = framed.next().await {
                if framed.send(canned.clone()).await.is_err() {
                    return;
                }
            }
        });
    }
}

async fn latencies(target: &Target, token: &str, n: usize) -> Vec<Duration> {
    let mut conn = connect(target).await;
    let frame = read_frame(&mut conn, token).await;
    for _ in 0..n / 10 {
        exchange(&mut conn, frame.clone()).await;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let reply = exchange(&mut conn, frame.clone()).await;
        samples.push(t.elapsed());
        assert!(reply.len() > READ_SIZE);
    }
    close(&mut conn, token, &frame).await;
    samples.sort_unstable();
    samples
}

async fn throughput(target: &Target, token: &str, conns: usize, for_how_long: Duration) -> f64 {
    let deadline = Instant::now() + for_how_long;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (target, token) = (target.clone(), token.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut conn = connect(&target).await;
            let frame = read_frame(&mut conn, &token).await;
            let mut done = 0u64;
            while Instant::now() < deadline {
                exchange(&mut conn, frame.clone()).await;
                done += 1;
            }
            close(&mut conn, &token, &frame).await;
            done
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / for_how_long.as_secs_f64()
}

/// Close the handle a read frame names, so rounds do not pile up handles.
async fn close(conn: &mut Conn, token: &str, read: &Bytes) {
    let read: Value = serde_json::from_slice(read).unwrap();
    let handle = read["params"]["handle"].clone();
    exchange(
        conn,
        request("fs.close", token, json!({ "handle": handle })),
    )
    .await;
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

struct Figures {
    p50: Duration,
    p99: Duration,
    one: f64,
    sixteen: f64,
}

impl Figures {
    fn median(rounds: &[Figures]) -> Figures {
        fn mid<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[v.len() / 2]
        }
        Figures {
            p50: mid(rounds.iter().map(|r| r.p50).collect()),
            p99: mid(rounds.iter().map(|r| r.p99).collect()),
            one: mid(rounds.iter().map(|r| r.one).collect()),
            sixteen: mid(rounds.iter().map(|r| r.sixteen).collect()),
        }
    }
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// RSS of the real binary: idle, then holding 10,000 handles.
fn memory() {
    const HANDLES: usize = 10_000;
    let sandbox = strata_testkit::Sandbox::new();
    let export = sandbox.root().canonicalize().unwrap().join("export");
    std::fs::create_dir_all(&export).unwrap();
    std::fs::write(export.join("f"), b"x").unwrap();
    let _identity = strata_testkit::Proc::spawn(
        "identity",
        sandbox
            .command("strata-identity")
            .env("STRATA_LOG", "error"),
    );
    let identity = sandbox.socket("identity");
    strata_testkit::wait_until("identity", strata_testkit::DEADLINE, || {
        strata_testkit::healthy(&identity)
    });
    let fs = strata_testkit::Proc::spawn(
        "fs",
        std::process::Command::new(fs_binary())
            .env("STRATA_RUNTIME_DIR", sandbox.runtime_dir())
            .env("STRATA_STATE_DIR", sandbox.state_dir())
            .env("STRATA_LOG", "error")
            .arg("--export-root")
            .arg(&export)
            .arg("--max-handles-per-cap")
            .arg(HANDLES.to_string())
            .arg("--max-handles-per-lineage")
            .arg(HANDLES.to_string())
            .arg("--max-handles-per-caller")
            .arg(HANDLES.to_string()),
    );
    let socket = sandbox.socket("fs");
    strata_testkit::wait_until("fs", strata_testkit::DEADLINE, || {
        strata_testkit::healthy(&socket)
    });
    let issued = strata_testkit::call(
        &identity,
        "identity.issue",
        json!({"service": "fs", "rights": ["fs.open"], "path_prefix": export}),
        None,
    )
    .unwrap();
    let token = issued["result"]["token"].as_str().unwrap().to_owned();
    let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    let mut open = || {
        let req = json!({"v": 1, "req_id": "m", "method": "fs.open",
                         "auth": {"token": token}, "params": {"path": "f"}});
        strata_testkit::write_frame(&mut stream, &serde_json::to_vec(&req).unwrap()).unwrap();
        let reply: Value =
            serde_json::from_slice(&strata_testkit::read_frame(&mut stream).unwrap()).unwrap();
        assert_eq!(reply["ok"], true, "{reply}");
    };
    open();
    let idle = rss_kib(fs.pid() as u32);
    for _ in 1..HANDLES {
        open();
    }
    let loaded = rss_kib(fs.pid() as u32);
    println!("strata-fs RSS: idle {idle} KiB; with {HANDLES} open handles {loaded} KiB");
}

fn fs_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_strata-fs"))
}
