//! One round trip through the IPC server with a trivial handler, against a bare echo
//! server on the same kind of socket with the same payload, measured in the same run; and
//! the same server's TCP port (mutual TLS 1.3 on loopback) with the same payload.
//!
//! `cargo bench -p strata-ipc --bench roundtrip` (add `-- --quick` for a short run).
//! The servers run on a 2-worker Tokio runtime, the clients on their own runtime, all in
//! this process; every target is measured by the same client loop sending the same bytes.
//! Connections are persistent, so the TLS handshake is outside the measured loop.

#[path = "../tests/pki/mod.rs"]
mod pki;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_frame::frame_codec;
use strata_ipc::tls::{self, rustls};
use strata_ipc::{Client, Endpoint, Router, Server, ServerConfig, TcpListen};
use tokio::net::UnixListener;
use tokio_util::codec::Framed;

#[derive(serde::Serialize, serde::Deserialize)]
struct EchoParams {
    data: String,
}

/// The benchmarked method: answers its params.
struct Echo;
impl strata_proto::methods::Method for Echo {
    const NAME: &'static str = "bench.echo";
    type Params = EchoParams;
    type Result = EchoParams;
}

fn payload() -> Bytes {
    let data = "x".repeat(64);
    Bytes::from(format!(
        r#"{{"v":1,"req_id":"bench-1","method":"bench.echo","params":{{"data":"{data}"}}}}"#
    ))
}

async fn bare_echo(listener: UnixListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let mut framed = Framed::new(stream, frame_codec());
            while let Some(Ok(frame)) = framed.next().await {
                if framed.send(frame.freeze()).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Where a client loop connects.
#[derive(Clone)]
enum Target {
    Unix(PathBuf),
    /// A TCP port spoken over mutual TLS.
    Tls(SocketAddr, Arc<rustls::ClientConfig>),
}

type Conn = strata_ipc::client::Connection;

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

async fn latencies(target: &Target, n: usize) -> Vec<Duration> {
    let mut conn = connect(target).await;
    let frame = payload();
    for _ in 0..n / 10 {
        conn.send(frame.clone()).await.unwrap();
        conn.next().await.unwrap().unwrap();
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        conn.send(frame.clone()).await.unwrap();
        let reply = conn.next().await.unwrap().unwrap();
        samples.push(t.elapsed());
        assert!(!reply.is_empty());
    }
    samples.sort_unstable();
    samples
}

async fn throughput(target: &Target, conns: usize, for_how_long: Duration) -> f64 {
    let deadline = Instant::now() + for_how_long;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = connect(&target).await;
            let frame = payload();
            let mut done = 0u64;
            while Instant::now() < deadline {
                conn.send(frame.clone()).await.unwrap();
                conn.next().await.unwrap().unwrap();
                done += 1;
            }
            done
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / for_how_long.as_secs_f64()
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (n, secs) = if quick {
        (5_000, Duration::from_millis(500))
    } else {
        (30_000, Duration::from_secs(2))
    };
    let dir = tempfile::tempdir().unwrap();
    let ipc_path = dir.path().join("bench.sock");
    let echo_path = dir.path().join("echo.sock");
    let ca = pki::TestCa::new(dir.path(), "bench-ca");
    let server_files = ca.node("bench-server", &["127.0.0.1"]);
    let client_files = ca.node("bench-client", &["127.0.0.1"]);

    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tls_addr = servers.block_on(async {
        let router =
            Router::new("bench", "0").method::<Echo, _, _, _>(|_call, p: EchoParams| async move {
                Ok::<_, strata_proto::ErrorBody>(p)
            });
        let mut config = ServerConfig::new(&ipc_path);
        config.tcp = Some(TcpListen {
            addr: "127.0.0.1:0".parse().unwrap(),
            tls: tls::server_config(&server_files).unwrap(),
            methods: vec!["bench.echo".into()],
        });
        let server = Server::bind(config, router).unwrap();
        let tls_addr = server.tcp_addr().unwrap();
        tokio::spawn(server.serve(std::future::pending()));
        let listener = UnixListener::bind(&echo_path).unwrap();
        tokio::spawn(bare_echo(listener));
        tls_addr
    });
    let client_tls = tls::client_config(&client_files).unwrap();

    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    clients.block_on(async {
        println!("payload: {} bytes per request frame", payload().len());
        println!("rounds: {ROUNDS}, interleaved; each figure is the median over the rounds");
        // [server][round] -> (p50, p99, rps with 1 conn, rps with 16 conns)
        let targets = [
            ("bare echo", Target::Unix(echo_path.clone())),
            ("strata ipc", Target::Unix(ipc_path.clone())),
            ("strata mtls", Target::Tls(tls_addr, client_tls)),
        ];
        let mut results = vec![Vec::new(); targets.len()];
        for _ in 0..ROUNDS {
            for (i, (_, target)) in targets.iter().enumerate() {
                let lat = latencies(target, n).await;
                let one = throughput(target, 1, secs).await;
                let sixteen = throughput(target, 16, secs).await;
                results[i].push((pct(&lat, 0.50), pct(&lat, 0.99), one, sixteen));
            }
        }
        println!(
            "{:<12} {:>10} {:>10} {:>14} {:>14}",
            "server", "p50", "p99", "1 conn rps", "16 conn rps"
        );
        let mut medians = Vec::new();
        for ((name, _), rounds) in targets.iter().zip(&results) {
            let m = Medians::of(rounds);
            println!(
                "{:<12} {:>10.1?} {:>10.1?} {:>14.0} {:>14.0}",
                name, m.p50, m.p99, m.one, m.sixteen
            );
            medians.push(m);
        }
        let ratio = medians[1].p50.as_secs_f64() / medians[0].p50.as_secs_f64();
        println!("p50 ratio strata/echo: {ratio:.2} (target <= 1.5)");
        println!(
            "16-conn throughput strata/echo: {:.0}%",
            100.0 * medians[1].sixteen / medians[0].sixteen
        );
        println!(
            "mutual TLS over loopback vs the unix socket: p50 {:.2}x, 16-conn throughput {:.0}%",
            medians[2].p50.as_secs_f64() / medians[1].p50.as_secs_f64(),
            100.0 * medians[2].sixteen / medians[1].sixteen
        );
    });
}

const ROUNDS: usize = 3;

struct Medians {
    p50: Duration,
    p99: Duration,
    one: f64,
    sixteen: f64,
}

impl Medians {
    fn of(rounds: &[(Duration, Duration, f64, f64)]) -> Medians {
        fn mid<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[v.len() / 2]
        }
        Medians {
            p50: mid(rounds.iter().map(|r| r.0).collect()),
            p99: mid(rounds.iter().map(|r| r.1).collect()),
            one: mid(rounds.iter().map(|r| r.2).collect()),
            sixteen: mid(rounds.iter().map(|r| r.3).collect()),
        }
    }
}
