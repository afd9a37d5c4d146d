//! `identity.issue` round trips per second over the socket, with 1 and 16 connections.
//! `cargo bench -p strata-identity --bench issue` (`-- --quick` for a short run).
//! The identity server runs in this process on a 2-worker runtime (as the binary does);
//! clients run on their own runtime. The caller is root/owner, so the policy is admin.

use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_identity::{router, Identity, IdentityConfig};
use strata_ipc::{Client, Endpoint, Server, ServerConfig};
use strata_proto::methods::identity::{Issue, IssueParams};

fn params() -> IssueParams {
    IssueParams {
        service: "fs".into(),
        rights: Some(vec!["fs.open".into(), "fs.read".into()]),
        path_prefix: Some("/srv/data".into()),
        ttl_seconds: Some(600),
        ..Default::default()
    }
}

async fn run(endpoint: Endpoint, conns: usize, secs: Duration) -> f64 {
    let deadline = Instant::now() + secs;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let endpoint = endpoint.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(endpoint).await.unwrap();
            let p = params();
            let mut n = 0u64;
            while Instant::now() < deadline {
                client.call::<Issue>(&p).await.unwrap();
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / secs.as_secs_f64()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let secs = Duration::from_secs(if quick { 1 } else { 3 });
    let dir = tempfile::tempdir().unwrap();
    let config = IdentityConfig {
        runtime_dir: dir.path().join("run"),
        state_dir: dir.path().join("state"),
        node_id: "bench".into(),
        policy: None,
        revocation_retention: strata_cap::DEFAULT_REVOCATION_RETENTION,
        mint_limits: strata_identity::mint_quota::MintLimits::default(),
        verifier_uids: Vec::new(),
    };
    std::fs::create_dir_all(&config.runtime_dir).unwrap();
    let socket = config.runtime_dir.join("identity.sock");
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    server_rt.block_on(async {
        let identity =
            Arc::new(Identity::open(&config, Arc::new(strata_cap::SystemClock::new())).unwrap());
        let server = Server::bind(ServerConfig::new(&socket), router(identity)).unwrap();
        tokio::spawn(server.serve(std::future::pending()));
    });
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let endpoint = Endpoint::unix(&socket).unwrap();
    client_rt.block_on(async {
        println!("{:<28} {:>12}", "identity.issue", "issues/s");
        for conns in [1, 16] {
            let rate = run(endpoint.clone(), conns, secs).await;
            println!("{:<28} {:>12.0}", format!("{conns} connection(s)"), rate);
        }
    });
}
