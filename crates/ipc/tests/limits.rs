//! Connection quotas (issue 13, finding 5): one uid cannot take every slot, a flood by
//! other uids never locks out root or the server's own uid (the supervisor's health
//! probe), and a refusal at a limit is one RESOURCE_EXHAUSTED frame, never a silent close.
//!
//! The tests that connect as another uid need root: a dedicated thread changes only its
//! own credentials (the raw `setresuid` system call, not libc's process-wide wrapper), and
//! the kernel records those as the connection's `SO_PEERCRED`.

// The per-thread `setresuid` (and `geteuid`) have no safe wrapper in std or libc's safe
// surface: these tests make the raw system calls, each with its SAFETY reason.
#![allow(unsafe_code)]

mod pki;

use serde_json::Value;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use strata_ipc::{Router, Server, ServerConfig};
use strata_proto::ErrorCode;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const DEADLINE: Duration = Duration::from_secs(10);

struct TestServer {
    _dir: tempfile::TempDir,
    path: PathBuf,
    /// The TCP port, when the configuration asked for one.
    addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    fn start(config: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        // Other uids must reach the socket: as members of its group (gid 0 here).
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("run").join("test.sock");
        let mut cfg = ServerConfig::new(&path);
        config(&mut cfg);
        let server = Server::bind(cfg, Router::new("test", "1")).unwrap();
        let addr = server.tcp_addr();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(server.serve(async {
            let _ = rx.await;
        }));
        TestServer {
            _dir: dir,
            path,
            addr,
            stop: Some(tx),
            task: Some(task),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        false
    } else {
        strata_testkit::skip(test, "needs root to connect as other uids");
        true
    }
}

/// What one connection got: served `sys.health`, refused with a code, or nothing.
#[derive(Debug, PartialEq)]
enum Outcome {
    Served,
    Refused(u64),
    NoAnswer(String),
}

fn health(stream: &mut UnixStream) -> Outcome {
    let req = br#"{"v":1,"req_id":"h","method":"sys.health"}"#;
    let mut frame = (req.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(req);
    // A refused connection may be closed before the write: the refusal is still there.
    let _ = stream.write_all(&frame);
    let mut len = [0u8; 4];
    if let Err(e) = stream.read_exact(&mut len) {
        return Outcome::NoAnswer(e.to_string());
    }
    let mut body = vec![0u8; (u32::from_be_bytes(len) as usize).min(1 << 16)];
    if let Err(e) = stream.read_exact(&mut body) {
        return Outcome::NoAnswer(e.to_string());
    }
    let v: Value = serde_json::from_slice(&body).unwrap();
    if v["ok"] == true {
        Outcome::Served
    } else {
        assert_eq!(v["req_id"], "", "{v}");
        Outcome::Refused(v["error"]["code"].as_u64().unwrap())
    }
}

fn connect(path: &Path) -> UnixStream {
    let s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s
}

/// Connections opened by a thread running as `uid` (gid unchanged), held until the
/// returned sender is dropped. Each tells what `sys.health` got on it.
fn hold_as(uid: u32, path: &Path, count: usize) -> (Vec<Outcome>, mpsc::Sender<()>) {
    let (release, wait) = mpsc::channel::<()>();
    let (report, outcomes) = mpsc::channel();
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        // SAFETY: the raw system call changes this thread's credentials only; the saved
        // uid stays 0, and the thread ends after releasing its connections.
        let rc = unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, 0) };
        assert_eq!(rc, 0, "setresuid: {}", std::io::Error::last_os_error());
        let mut held = Vec::new();
        let mut got = Vec::new();
        for _ in 0..count {
            let mut s = connect(&path);
            got.push(health(&mut s));
            held.push(s);
        }
        report.send(got).unwrap();
        let _ = wait.recv();
    });
    (outcomes.recv_timeout(DEADLINE * 3).unwrap(), release)
}

fn served(outcomes: &[Outcome]) -> usize {
    outcomes.iter().filter(|o| **o == Outcome::Served).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uid_at_its_quota_is_refused_while_root_is_still_served() {
    if skip_unless_root("a_uid_at_its_quota_is_refused_while_root_is_still_served") {
        return;
    }
    let server = TestServer::start(|_| {});
    let path = server.path.clone();
    tokio::task::spawn_blocking(move || {
        // The default quota is 128 per uid: the 129th is refused, the 130th too.
        let (got, _release) = hold_as(65534, &path, 130);
        assert_eq!(served(&got), 128, "{:?}", &got[126..]);
        assert_eq!(
            got[128..],
            [
                Outcome::Refused(ErrorCode::ResourceExhausted.code().into()),
                Outcome::Refused(ErrorCode::ResourceExhausted.code().into())
            ]
        );
        // Another uid has its own quota; root (the supervisor's uid) is served.
        let (other, _release_other) = hold_as(65533, &path, 1);
        assert_eq!(other, [Outcome::Served]);
        assert_eq!(health(&mut connect(&path)), Outcome::Served);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_slots_keep_root_served_when_other_uids_fill_the_server() {
    if skip_unless_root("reserved_slots_keep_root_served_when_other_uids_fill_the_server") {
        return;
    }
    let server = TestServer::start(|c| {
        c.max_connections = 8;
        c.max_connections_per_peer = 3;
        c.reserved_connections = 2;
    });
    let path = server.path.clone();
    tokio::task::spawn_blocking(move || {
        // Two uids take the 6 unreserved slots; a third uid finds none.
        let (a, _ra) = hold_as(65534, &path, 3);
        let (b, _rb) = hold_as(65533, &path, 3);
        assert_eq!(served(&a) + served(&b), 6);
        let (c, _rc) = hold_as(65532, &path, 1);
        assert_eq!(
            c,
            [Outcome::Refused(ErrorCode::ResourceExhausted.code().into())]
        );
        // Root gets the two reserved ones, and then the server is full for root too.
        let mut root = vec![connect(&path), connect(&path)];
        for s in &mut root {
            assert_eq!(health(s), Outcome::Served);
        }
        assert_eq!(
            health(&mut connect(&path)),
            Outcome::Refused(ErrorCode::ResourceExhausted.code().into())
        );
        // A slot freed by another uid is usable again.
        drop(_rb);
        let until = Instant::now() + DEADLINE;
        while health(&mut connect(&path)) != Outcome::Served {
            assert!(Instant::now() < until, "the freed slots never came back");
            std::thread::sleep(Duration::from_millis(10));
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_own_uid_is_held_only_to_the_global_limit() {
    let server = TestServer::start(|c| {
        c.max_connections = 6;
        c.max_connections_per_peer = 2;
        c.reserved_connections = 1;
    });
    let path = server.path.clone();
    tokio::task::spawn_blocking(move || {
        let mut held: Vec<UnixStream> = (0..6).map(|_| connect(&path)).collect();
        for s in &mut held {
            assert_eq!(health(s), Outcome::Served);
        }
        // At the global limit: one RESOURCE_EXHAUSTED frame, then the close.
        let mut over = connect(&path);
        assert_eq!(
            health(&mut over),
            Outcome::Refused(ErrorCode::ResourceExhausted.code().into())
        );
        let mut rest = Vec::new();
        assert_eq!(
            over.read_to_end(&mut rest).unwrap_or(0),
            0,
            "closed after it"
        );
    })
    .await
    .unwrap();
}

/// Open a connection and send the header of a `declared`-byte frame plus 100 bytes of it,
/// then stall. Returns the stream (read timeout short).
fn start_big_frame(path: &Path, declared: u32) -> UnixStream {
    let mut s = connect(path);
    let mut part = declared.to_be_bytes().to_vec();
    part.extend_from_slice(&[b' '; 100]);
    s.write_all(&part).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s
}

/// What a stalled big-frame connection got: `Some(code)` for a refusal frame, `None` if
/// the server is still waiting for the rest of the frame.
fn refusal(s: &mut UnixStream) -> Option<u64> {
    let mut len = [0u8; 4];
    match s.read_exact(&mut len) {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            return None
        }
        Err(e) => panic!("closed without an answer: {e}"),
    }
    let mut body = vec![0u8; (u32::from_be_bytes(len) as usize).min(1 << 16)];
    s.read_exact(&mut body).unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    Some(v["error"]["code"].as_u64().unwrap())
}

/// Start `count` big frames from the current thread's uid and hold them all; wait until
/// the server has refused `refused` of them (in whatever order it read them), and check
/// that it refused no more. Returns the refusal codes.
fn big_frames_refused(path: &Path, count: usize, refused: usize) -> Vec<u64> {
    let mut held: Vec<UnixStream> = (0..count).map(|_| start_big_frame(path, BIG)).collect();
    let mut codes: Vec<Option<u64>> = vec![None; count];
    let until = Instant::now() + DEADLINE;
    while codes.iter().filter(|c| c.is_some()).count() < refused {
        assert!(
            Instant::now() < until,
            "only {codes:?} were refused, expected {refused}"
        );
        for (s, code) in held.iter_mut().zip(codes.iter_mut()) {
            if code.is_none() {
                *code = refusal(s);
            }
        }
    }
    // The others are still waiting for the rest of their frames.
    for (s, code) in held.iter_mut().zip(codes.iter_mut()) {
        if code.is_none() {
            assert_eq!(refusal(s), None, "refused more than {refused}");
        }
    }
    codes.into_iter().flatten().collect()
}

const BIG: u32 = 1_000_000;
const EXHAUSTED: u64 = ErrorCode::ResourceExhausted.code() as u64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partly_received_big_frames_are_held_to_a_byte_budget() {
    let server = TestServer::start(|c| c.max_buffered_bytes = 2_500_000);
    let path = server.path.clone();
    tokio::task::spawn_blocking(move || {
        // Room for two 1 MB frames: of four, two are refused.
        assert_eq!(big_frames_refused(&path, 4, 2), [EXHAUSTED; 2]);
        // Small frames are never held to it.
        assert_eq!(health(&mut connect(&path)), Outcome::Served);
        // The budget came back when those connections went.
        let until = Instant::now() + DEADLINE;
        loop {
            let mut a = start_big_frame(&path, BIG);
            let mut b = start_big_frame(&path, BIG);
            if refusal(&mut a).is_none() && refusal(&mut b).is_none() {
                break;
            }
            assert!(Instant::now() < until, "the budget never came back");
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_uid_cannot_take_the_whole_frame_budget() {
    if skip_unless_root("one_uid_cannot_take_the_whole_frame_budget") {
        return;
    }
    let server = TestServer::start(|c| {
        c.max_buffered_bytes = 10_000_000;
        c.max_buffered_bytes_per_peer = 2_500_000;
    });
    let path = server.path.clone();
    tokio::task::spawn_blocking(move || {
        let (tx, rx) = mpsc::channel();
        let (p, (release, wait)) = (path.clone(), mpsc::channel::<()>());
        std::thread::spawn(move || {
            // SAFETY: as in `hold_as`: this thread's credentials only.
            let rc = unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 0) };
            assert_eq!(rc, 0);
            tx.send(big_frames_refused(&p, 4, 2)).unwrap();
            let _ = wait.recv();
        });
        assert_eq!(rx.recv_timeout(DEADLINE * 2).unwrap(), [EXHAUSTED; 2]);
        // With that uid's two held, root's big frames still fit the global budget.
        assert_eq!(big_frames_refused(&path, 2, 0), Vec::<u64>::new());
        drop(release);
    })
    .await
    .unwrap();
}

/// A TCP listener (mutual TLS with a throwaway CA) on 127.0.0.1, port chosen by the kernel.
fn tls_listener(dir: &Path) -> strata_ipc::TcpListen {
    let ca = pki::TestCa::new(dir, "cluster-ca");
    let files = ca.node("node-a", &["127.0.0.1"]);
    strata_ipc::TcpListen {
        addr: "127.0.0.1:0".parse().unwrap(),
        tls: strata_ipc::tls::server_config(&files).unwrap(),
        methods: Vec::new(),
    }
}

/// `count` TCP connections to `to` from the local address `from`, each connected and then
/// silent: not one TLS byte.
async fn bare_from(
    from: std::net::Ipv4Addr,
    to: SocketAddr,
    count: usize,
) -> Vec<tokio::net::TcpStream> {
    let mut held = Vec::new();
    for _ in 0..count {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(from.into(), 0)).unwrap();
        held.push(socket.connect(to).await.unwrap());
    }
    held
}

/// How many of `conns` the server has closed (end of stream or reset) so far.
fn closed_by_server(conns: &[tokio::net::TcpStream]) -> usize {
    conns
        .iter()
        .filter(|c| {
            let mut byte = [0u8; 1];
            !matches!(c.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_tcp_peers_never_take_the_slots_local_uids_need() {
    if skip_unless_root("unauthenticated_tcp_peers_never_take_the_slots_local_uids_need") {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let listen = tls_listener(certs.path());
    let server = TestServer::start(|c| {
        c.max_connections = 64;
        c.max_connections_per_peer = 16;
        c.reserved_connections = 4;
        // Long deadlines: the handshakes are held for the whole test, not cut and retried.
        c.frame_timeout = Duration::from_secs(120);
        c.handshake_timeout = Duration::from_secs(120);
        c.max_tcp_connections = 32;
        c.max_tls_handshakes = 16;
        c.max_tls_handshakes_per_addr = 4;
        c.tcp = Some(listen);
    });
    let to = server.addr.unwrap();
    // 8 addresses × 16 bare connections: 128, twice what the whole server holds.
    let mut bare = Vec::new();
    for last in 2..=9u8 {
        bare.extend(bare_from(std::net::Ipv4Addr::new(127, 0, 0, last), to, 16).await);
    }
    // The server holds 16 of them (its handshake pool; 4 per address would allow 32)
    // and closes the other 112 at once.
    let until = Instant::now() + DEADLINE;
    loop {
        let closed = closed_by_server(&bare);
        if closed >= 112 {
            assert_eq!(closed, 112, "held fewer than the pool");
            break;
        }
        assert!(
            Instant::now() < until,
            "the server holds {} bare tcp connections; expected 16",
            bare.len() - closed
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let path = server.path.clone();
    tokio::task::spawn_blocking(move || {
        // Local uids are served to their full quota while the handshakes are held.
        let (a, _ra) = hold_as(65534, &path, 16);
        assert_eq!(served(&a), 16, "{a:?}");
        let (b, _rb) = hold_as(65533, &path, 16);
        assert_eq!(served(&b), 16, "{b:?}");
        assert_eq!(health(&mut connect(&path)), Outcome::Served);
    })
    .await
    .unwrap();
    // And the held handshakes are still held (not closed to make room).
    assert_eq!(closed_by_server(&bare), 112);
}
