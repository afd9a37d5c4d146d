//! Connection quotas (issue 13, finding 5): one uid cannot take every slot, a flood by
//! other uids never locks out root or the server's own uid (the supervisor's health
//! probe), and a refusal at a limit is one RESOURCE_EXHAUSTED frame, never a silent close.
//!
//! The tests that connect as another uid need root: a dedicated thread changes only its
//! own credentials (the raw `setresuid` system call, not libc's process-wide wrapper), and
//! the kernel records those as the connection's `SO_PEERCRED`.

use serde_json::Value;
use std::io::{Read, Write};
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
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(server.serve(async {
            let _ = rx.await;
        }));
        TestServer {
            _dir: dir,
            path,
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
        eprintln!("SKIPPED {test}: needs root to connect as other uids");
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
