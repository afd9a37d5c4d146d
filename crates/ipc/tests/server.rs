//! The IPC server over real Unix sockets: bad input, limits, timeouts, start-up and
//! shutdown. Each test runs its own server on its own temporary directory.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use strata_frame::frame_codec;
use strata_ipc::{Call, Client, Endpoint, PeerCred, Router, Server, ServerConfig, ServerError};
use strata_proto::methods::Method;
use strata_proto::{ErrorBody, ErrorCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

const DEADLINE: Duration = Duration::from_secs(10);

#[derive(serde::Deserialize, serde::Serialize)]
struct EchoParams {
    text: String,
    #[serde(default)]
    times: u32,
}

/// A test method: its wire name, the params its handler takes, the result it answers.
macro_rules! test_method {
    ($(#[$doc:meta])* $ty:ident = $name:literal, $params:ty) => {
        $(#[$doc])*
        struct $ty;
        impl Method for $ty {
            const NAME: &'static str = $name;
            type Params = $params;
            type Result = Value;
        }
    };
}

test_method!(
    /// Answers its text and count.
    Echo = "test.echo", EchoParams
);
test_method!(
    /// Answers the caller's kernel credentials and token.
    Whoami = "test.whoami", Value
);
test_method!(
    /// Panics.
    Panic = "test.panic", Value
);
test_method!(
    /// Answers a result too large for a frame.
    Huge = "test.huge", Value
);
test_method!(
    /// Fails with CONFLICT.
    Fail = "test.fail", Value
);
test_method!(
    /// Answers once the test lets it.
    Slow = "test.slow", Value
);
test_method!(
    /// Never answers.
    Hang = "test.hang", Value
);

/// A running test server; stops (and is awaited) when dropped or on `stop()`.
struct TestServer {
    _dir: tempfile::TempDir,
    path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    fn start(config: impl FnOnce(&mut ServerConfig), router: Router) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run").join("test.sock");
        let mut cfg = ServerConfig::new(&path);
        config(&mut cfg);
        let server = Server::bind(cfg, router).unwrap();
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

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
    }

    async fn raw(&self) -> Framed<UnixStream, LengthDelimitedCodec> {
        Framed::new(
            UnixStream::connect(&self.path).await.unwrap(),
            frame_codec(),
        )
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

fn test_router() -> Router {
    Router::new("test", "9.9.9")
        .method::<Echo, _, _, _>(|_c: Call, p: EchoParams| async move {
            Ok::<_, ErrorBody>(json!({"text": p.text, "times": p.times}))
        })
        .method::<Whoami, _, _, _>(|c: Call, _p: Value| async move {
            let peer = c.require_local()?;
            Ok::<_, ErrorBody>(
                json!({"uid": peer.uid, "gid": peer.gid, "pid": peer.pid, "token": c.token()}),
            )
        })
        .method::<Panic, _, _, _>(|_c: Call, _p: Value| async move {
            if true {
                panic!("handler bug");
            }
            Ok::<Value, ErrorBody>(json!({}))
        })
        .method::<Huge, _, _, _>(|_c: Call, _p: Value| async move {
            Ok::<_, ErrorBody>(json!({"blob": "z".repeat(2 << 20)}))
        })
        .method::<Fail, _, _, _>(|_c: Call, _p: Value| async move {
            Err::<Value, _>(ErrorBody::new(ErrorCode::Conflict, "already running"))
        })
}

async fn ask(conn: &mut Framed<UnixStream, LengthDelimitedCodec>, frame: &[u8]) -> Value {
    conn.send(Bytes::copy_from_slice(frame)).await.unwrap();
    let reply = timeout(DEADLINE, conn.next())
        .await
        .expect("no reply in time")
        .expect("connection closed")
        .unwrap();
    serde_json::from_slice(&reply).unwrap()
}

/// A reply shortened for assertion messages.
fn brief(reply: &Value) -> String {
    let text = reply.to_string();
    if text.len() > 300 {
        format!("{}… ({} bytes)", &text[..300], text.len())
    } else {
        text
    }
}

fn assert_error(reply: &Value, code: ErrorCode, req_id: &str, mentions: &str) {
    let shown = brief(reply);
    assert_eq!(reply["ok"], false, "{shown}");
    assert_eq!(reply["v"], 1, "{shown}");
    assert_eq!(reply["req_id"], req_id, "{shown}");
    assert_eq!(reply["error"]["code"], code.code(), "{shown}");
    assert_eq!(reply["error"]["name"], code.name(), "{shown}");
    let msg = reply["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains(mentions),
        "`{msg}` should mention `{mentions}`"
    );
}

/// Read until the peer closes; fails if it does not close within the deadline.
async fn wait_closed(stream: &mut UnixStream) {
    let mut buf = [0u8; 4096];
    let closed = timeout(DEADLINE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "server did not close the connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_without_a_token() {
    let server = TestServer::start(|_| {}, test_router());
    let mut conn = server.raw().await;
    let r = ask(&mut conn, br#"{"v":1,"req_id":"h","method":"sys.health"}"#).await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(
        r["result"],
        json!({"service": "test", "version": "9.9.9", "status": "ok"})
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_per_connection_answered_in_order() {
    let server = TestServer::start(|_| {}, test_router());
    let mut conn = server.raw().await;
    // Pipeline three requests before reading anything.
    for i in 0..3 {
        let frame =
            format!(r#"{{"v":1,"req_id":"r{i}","method":"test.echo","params":{{"text":"t{i}"}}}}"#);
        conn.feed(Bytes::from(frame)).await.unwrap();
    }
    SinkExt::<Bytes>::flush(&mut conn).await.unwrap();
    for i in 0..3 {
        let reply: Value = serde_json::from_slice(&conn.next().await.unwrap().unwrap()).unwrap();
        assert_eq!(reply["req_id"], format!("r{i}"));
        assert_eq!(reply["result"]["text"], format!("t{i}"));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_frame_is_refused_then_closed() {
    let server = TestServer::start(|_| {}, test_router());
    let mut stream = UnixStream::connect(&server.path).await.unwrap();
    // Declare 1 MiB + 1 and send nothing more: the server must answer from the header.
    stream
        .write_all(&((1u32 << 20) + 1).to_be_bytes())
        .await
        .unwrap();
    let mut framed = Framed::new(stream, frame_codec());
    let reply = timeout(DEADLINE, framed.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let reply: Value = serde_json::from_slice(&reply).unwrap();
    assert_error(&reply, ErrorCode::InvalidArgument, "", "frame too large");
    let mut stream = framed.into_inner();
    wait_closed(&mut stream).await;
    // The server itself is fine.
    let mut conn = server.raw().await;
    let r = ask(&mut conn, br#"{"v":1,"req_id":"h","method":"sys.health"}"#).await;
    assert_eq!(r["ok"], true);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_mebibyte_is_accepted() {
    let server = TestServer::start(|_| {}, test_router());
    let mut conn = server.raw().await;
    let prefix = r#"{"v":1,"req_id":"big","method":"test.echo","params":{"text":""#;
    let suffix = r#""}}"#;
    let fill = (1 << 20) - prefix.len() - suffix.len();
    let frame = format!("{prefix}{}{suffix}", "a".repeat(fill));
    assert_eq!(frame.len(), 1 << 20);
    let r = ask(&mut conn, frame.as_bytes()).await;
    assert_eq!(r["ok"], true, "{}", brief(&r));
    assert_eq!(r["result"]["text"].as_str().unwrap().len(), fill);
    // A handler whose answer cannot fit in one frame gets INTERNAL, and the connection
    // stays usable.
    let r = ask(
        &mut conn,
        br#"{"v":1,"req_id":"huge","method":"test.huge"}"#,
    )
    .await;
    assert_error(&r, ErrorCode::Internal, "huge", "too large");
    let r = ask(
        &mut conn,
        br#"{"v":1,"req_id":"after","method":"sys.health"}"#,
    )
    .await;
    assert_eq!(r["ok"], true);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_object_json_is_refused_and_connection_stays_usable() {
    let server = TestServer::start(|_| {}, test_router());
    let mut conn = server.raw().await;
    for bad in [
        &b"[1,2,3]"[..],
        b"\"str\"",
        b"nonsense",
        b"",
        b"\xff\xfe",
        b"{\"v\":1",
    ] {
        let r = ask(&mut conn, bad).await;
        assert_error(&r, ErrorCode::InvalidArgument, "", "");
    }
    let r = ask(&mut conn, br#"{"v":1,"req_id":"ok","method":"sys.health"}"#).await;
    assert_eq!(r["ok"], true);
    assert_eq!(r["req_id"], "ok");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_version_echoes_req_id() {
    let server = TestServer::start(|_| {}, test_router());
    let mut conn = server.raw().await;
    let r = ask(&mut conn, br#"{"v":2,"req_id":"v2","method":"sys.health"}"#).await;
    assert_error(&r, ErrorCode::InvalidArgument, "v2", "`v` must be 1");
    let r = ask(&mut conn, br#"{"req_id":"nov","method":"sys.health"}"#).await;
    assert_error(&r, ErrorCode::InvalidArgument, "nov", "v");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_method_is_named() {
    let server = TestServer::start(|_| {}, test_router());
    let mut conn = server.raw().await;
    let r = ask(&mut conn, br#"{"v":1,"req_id":"u","method":"test.nope"}"#).await;
    assert_error(&r, ErrorCode::InvalidArgument, "u", "test.nope");
    server.stop().await;
}

fn echo_with_req_id(req_id: &str, method: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"v": 1, "req_id": req_id, "method": method,
                               "params": {"text": "hi"}}))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn req_id_is_echoed_up_to_256_bytes_and_refused_past_it() {
    let server = TestServer::start(|_| {}, test_router());
    let mut conn = server.raw().await;
    let at = "r".repeat(256);
    let r = ask(&mut conn, &echo_with_req_id(&at, "test.echo")).await;
    assert_eq!(r["ok"], true, "{}", brief(&r));
    assert_eq!(r["req_id"], at);
    let past = "r".repeat(257);
    let r = ask(&mut conn, &echo_with_req_id(&past, "test.echo")).await;
    assert_error(&r, ErrorCode::InvalidArgument, "", "req_id");
    assert_eq!(r["error"]["details"]["field"], "req_id");
    // The connection stays usable.
    let r = ask(&mut conn, &echo_with_req_id("after", "test.echo")).await;
    assert_eq!(r["req_id"], "after");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mebibyte_req_id_gets_a_small_error_and_the_server_lives_on() {
    let server = TestServer::start(|_| {}, test_router());
    let mut conn = server.raw().await;
    // Used to recurse: the answer echoing it did not fit a frame, nor did the fallback
    // echoing it again.
    let huge = "A".repeat(strata_proto::MAX_FRAME - 100);
    for method in ["test.nope", "test.huge", "sys.health", "test.echo"] {
        conn.send(Bytes::from(echo_with_req_id(&huge, method)))
            .await
            .unwrap();
        let reply = timeout(DEADLINE, conn.next())
            .await
            .expect("no reply in time")
            .expect("connection closed")
            .unwrap();
        assert!(reply.len() < 1024, "{method}: {} bytes", reply.len());
        let r: Value = serde_json::from_slice(&reply).unwrap();
        assert_error(&r, ErrorCode::InvalidArgument, "", "req_id");
    }
    // A 256-byte req_id on a response too large for a frame: one small INTERNAL.
    let r = ask(&mut conn, &echo_with_req_id(&"q".repeat(256), "test.huge")).await;
    assert_error(&r, ErrorCode::Internal, &"q".repeat(256), "too large");
    let r = ask(&mut conn, br#"{"v":1,"req_id":"h","method":"sys.health"}"#).await;
    assert_eq!(r["ok"], true);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_names_past_128_bytes_are_refused_unechoed() {
    let server = TestServer::start(|_| {}, test_router());
    let mut conn = server.raw().await;
    let at = format!("test.{}", "n".repeat(123));
    let r = ask(&mut conn, &echo_with_req_id("m1", &at)).await;
    assert_error(&r, ErrorCode::InvalidArgument, "m1", "unknown method");
    let past = format!("{at}n");
    let r = ask(&mut conn, &echo_with_req_id("m2", &past)).await;
    assert_error(&r, ErrorCode::InvalidArgument, "m2", "longer than 128");
    assert!(!r.to_string().contains(&past), "{}", brief(&r));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_mistyped_params_name_the_field() {
    let server = TestServer::start(|_| {}, test_router());
    let mut conn = server.raw().await;
    let r = ask(
        &mut conn,
        br#"{"v":1,"req_id":"m","method":"test.echo","params":{}}"#,
    )
    .await;
    assert_error(&r, ErrorCode::InvalidArgument, "m", "text");
    assert_eq!(r["error"]["details"]["field"], "text");
    let r = ask(&mut conn, br#"{"v":1,"req_id":"m2","method":"test.echo"}"#).await;
    assert_error(&r, ErrorCode::InvalidArgument, "m2", "text");
    let r = ask(
        &mut conn,
        br#"{"v":1,"req_id":"t","method":"test.echo","params":{"text":"a","times":"x"}}"#,
    )
    .await;
    assert_error(&r, ErrorCode::InvalidArgument, "t", "times");
    assert_eq!(r["error"]["details"]["field"], "times");
    let r = ask(
        &mut conn,
        br#"{"v":1,"req_id":"n","method":"test.echo","params":{"text":"a","times":-1}}"#,
    )
    .await;
    assert_error(&r, ErrorCode::InvalidArgument, "n", "times");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_errors_pass_through() {
    let server = TestServer::start(|_| {}, test_router());
    let mut conn = server.raw().await;
    let r = ask(&mut conn, br#"{"v":1,"req_id":"f","method":"test.fail"}"#).await;
    assert_error(&r, ErrorCode::Conflict, "f", "already running");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_handler_is_internal_and_others_are_served() {
    let server = TestServer::start(|_| {}, test_router());
    let mut a = server.raw().await;
    let mut b = server.raw().await;
    let r = ask(&mut a, br#"{"v":1,"req_id":"p","method":"test.panic"}"#).await;
    assert_error(&r, ErrorCode::Internal, "p", "internal error");
    assert!(
        !r.to_string().contains("handler bug"),
        "panic text leaked: {r}"
    );
    // The same connection and another one both keep working.
    let r = ask(&mut a, br#"{"v":1,"req_id":"a","method":"sys.health"}"#).await;
    assert_eq!(r["ok"], true);
    let r = ask(&mut b, br#"{"v":1,"req_id":"b","method":"sys.health"}"#).await;
    assert_eq!(r["ok"], true);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_see_kernel_peer_credentials_and_the_token() {
    let server = TestServer::start(|_| {}, test_router());
    let mut conn = server.raw().await;
    let r = ask(
        &mut conn,
        br#"{"v":1,"req_id":"w","method":"test.whoami","auth":{"token":"tok"}}"#,
    )
    .await;
    let me = PeerCred::current_process();
    assert_eq!(r["result"]["uid"], me.uid);
    assert_eq!(r["result"]["gid"], me.gid);
    assert_eq!(r["result"]["pid"], std::process::id());
    assert_eq!(r["result"]["token"], "tok");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_mid_frame_client_is_dropped() {
    let server = TestServer::start(
        |c| {
            c.frame_timeout = Duration::from_millis(200);
            c.idle_timeout = Duration::from_secs(600);
        },
        test_router(),
    );
    // Half a header.
    let mut s1 = UnixStream::connect(&server.path).await.unwrap();
    s1.write_all(&[0, 0]).await.unwrap();
    // A header announcing 100 bytes, then only 10 of them.
    let mut s2 = UnixStream::connect(&server.path).await.unwrap();
    s2.write_all(&100u32.to_be_bytes()).await.unwrap();
    s2.write_all(&[b' '; 10]).await.unwrap();
    let started = Instant::now();
    wait_closed(&mut s1).await;
    wait_closed(&mut s2).await;
    // Dropped for the frame deadline, not the 10-minute idle one.
    assert!(started.elapsed() < Duration::from_secs(60));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_is_closed() {
    let server = TestServer::start(
        |c| c.idle_timeout = Duration::from_millis(300),
        test_router(),
    );
    let mut conn = server.raw().await;
    let r = ask(&mut conn, br#"{"v":1,"req_id":"i","method":"sys.health"}"#).await;
    assert_eq!(r["ok"], true);
    let mut stream = conn.into_inner();
    wait_closed(&mut stream).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_concurrent_connections_are_served_or_cleanly_refused() {
    let server = TestServer::start(|_| {}, test_router());
    const CLIENTS: usize = 2000;
    // Open every connection first and hold them all, so they are truly concurrent.
    let mut streams = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let until = Instant::now() + DEADLINE;
        let stream = loop {
            match UnixStream::connect(&server.path).await {
                Ok(s) => break s,
                // Listen backlog momentarily full: the accept loop is behind; retry.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < until => {
                    tokio::task::yield_now().await
                }
                Err(e) => panic!("connect failed: {e}"),
            }
        };
        streams.push(stream);
    }
    let mut tasks = Vec::with_capacity(CLIENTS);
    for (i, stream) in streams.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut framed = Framed::new(stream, frame_codec());
            let frame = format!(r#"{{"v":1,"req_id":"c{i}","method":"sys.health"}}"#);
            // A refused connection may already be closed: the write can fail, the
            // refusal is still there to read.
            let _ = framed.send(Bytes::from(frame)).await;
            let reply = timeout(DEADLINE, framed.next()).await.expect("no answer");
            let reply: Value = match reply {
                Some(Ok(bytes)) => serde_json::from_slice(&bytes).unwrap(),
                other => panic!("connection {i} ended without an answer: {other:?}"),
            };
            let outcome = if reply["ok"] == true {
                assert_eq!(reply["req_id"], format!("c{i}"));
                "served"
            } else {
                assert_eq!(
                    reply["error"]["code"],
                    ErrorCode::ResourceExhausted.code(),
                    "{reply}"
                );
                "refused"
            };
            (outcome, framed)
        }));
    }
    let mut served = 0;
    let mut refused = 0;
    let mut keep = Vec::new();
    for t in tasks {
        let (outcome, framed) = t.await.unwrap();
        match outcome {
            "served" => served += 1,
            _ => refused += 1,
        }
        keep.push(framed);
    }
    assert_eq!(served + refused, CLIENTS);
    assert_eq!(
        served, 1024,
        "the default limit is 1024 concurrent connections"
    );
    drop(keep);
    // Once they are gone, new clients are served again.
    let mut conn = server.raw().await;
    let until = Instant::now() + DEADLINE;
    loop {
        let r = ask(&mut conn, br#"{"v":1,"req_id":"x","method":"sys.health"}"#).await;
        if r["ok"] == true {
            break;
        }
        assert!(Instant::now() < until, "server never freed its slots");
        conn = server.raw().await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_start_over_a_live_server() {
    let server = TestServer::start(|_| {}, test_router());
    let err = Server::bind(ServerConfig::new(&server.path), test_router())
        .err()
        .expect("second server must not bind");
    assert!(matches!(err, ServerError::AlreadyRunning(_)), "{err}");
    assert!(err.to_string().contains("already answering"));
    // The live one is untouched.
    let mut conn = server.raw().await;
    let r = ask(&mut conn, br#"{"v":1,"req_id":"h","method":"sys.health"}"#).await;
    assert_eq!(r["ok"], true);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaces_a_stale_socket_and_refuses_a_non_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists(), "stale file should be left behind");
    let server = Server::bind(ServerConfig::new(&path), test_router()).unwrap();
    drop(server);

    let file = dir.path().join("plain");
    std::fs::write(&file, b"not a socket").unwrap();
    let err = Server::bind(ServerConfig::new(&file), test_router())
        .err()
        .unwrap();
    assert!(matches!(err, ServerError::NotASocket(_)), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"not a socket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_runtime_dir_and_sets_socket_mode() {
    use std::os::unix::fs::PermissionsExt;
    let server = TestServer::start(|_| {}, test_router());
    let dir_mode = std::fs::metadata(server.path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    let sock_mode = std::fs::metadata(&server.path)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(sock_mode & 0o777, 0o660);
    // 0750 less whatever the umask removes; never more.
    assert_eq!(dir_mode & 0o777 & !0o750, 0, "{dir_mode:o}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_never_appears_with_a_wider_mode_than_configured() {
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.sock");
    let stop = Arc::new(AtomicBool::new(false));
    // Stat the path as fast as possible while servers bind it, one after another.
    let watcher = {
        let (path, stop) = (path.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut seen = std::collections::BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(m) = std::fs::symlink_metadata(&path) {
                    seen.insert(m.mode() & 0o7777);
                }
            }
            seen
        })
    };
    for _ in 0..300 {
        let mut config = ServerConfig::new(&path);
        config.socket_mode = 0o600;
        // Dropped unserved: the next bind replaces the stale file.
        drop(Server::bind(config, test_router()).unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    let seen = watcher.join().unwrap();
    assert!(!seen.is_empty(), "the watcher never saw the socket");
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        [0o600],
        "modes the socket was seen with"
    );
    // No private binding directory is left behind.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, [std::ffi::OsString::from("w.sock")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_requests_and_removes_the_socket() {
    let entered = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let router = {
        let (entered, release) = (entered.clone(), release.clone());
        test_router().method::<Slow, _, _, _>(move |_c: Call, _p: Value| {
            let (entered, release) = (entered.clone(), release.clone());
            async move {
                entered.notify_one();
                release.notified().await;
                Ok::<_, ErrorBody>(json!({"finished": true}))
            }
        })
    };
    let server = TestServer::start(|_| {}, router);
    let path = server.path.clone();
    let mut conn = server.raw().await;
    conn.send(Bytes::from_static(
        br#"{"v":1,"req_id":"s","method":"test.slow"}"#,
    ))
    .await
    .unwrap();
    entered.notified().await;
    let stopping = tokio::spawn(server.stop());
    // New connections are refused once the listener is gone.
    let until = Instant::now() + DEADLINE;
    while UnixStream::connect(&path).await.is_ok() {
        assert!(Instant::now() < until, "still accepting after shutdown");
        tokio::task::yield_now().await;
    }
    release.notify_one();
    let reply = timeout(DEADLINE, conn.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let reply: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(reply["result"]["finished"], true);
    timeout(DEADLINE, stopping).await.unwrap().unwrap();
    assert!(!path.exists(), "socket file left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_calls_typed_methods_and_reconnects() {
    use strata_proto::methods::sys::Health;
    let server = TestServer::start(
        |c| c.idle_timeout = Duration::from_millis(200),
        test_router(),
    );
    let mut client = Client::connect(Endpoint::unix(&server.path).unwrap())
        .await
        .unwrap();
    let h = client.call::<Health>(&Default::default()).await.unwrap();
    assert_eq!(h.service, "test");
    // Let the server close the idle connection, then call again on the same client.
    let mut probe = server.raw().await.into_inner();
    wait_closed(&mut probe).await;
    let h = client.call::<Health>(&Default::default()).await.unwrap();
    assert_eq!(h.status, "ok");
    // A server error carries its code.
    let err = client.call_raw("test.fail", None).await.unwrap();
    assert!(!err.ok);
    assert_eq!(err.error.unwrap().code, ErrorCode::Conflict);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_times_out_and_reports_unreachable_servers() {
    let dir = tempfile::tempdir().unwrap();
    let missing = Endpoint::unix(&dir.path().join("none.sock")).unwrap();
    let err = Client::connect(missing).await.err().unwrap();
    assert!(err.to_string().contains("cannot connect"), "{err}");

    let never = Arc::new(Notify::new());
    let router = {
        let never = never.clone();
        test_router().method::<Hang, _, _, _>(move |_c: Call, _p: Value| {
            let never = never.clone();
            async move {
                never.notified().await;
                Ok::<_, ErrorBody>(json!({}))
            }
        })
    };
    let server = TestServer::start(|_| {}, router);
    let mut client = Client::new(Endpoint::unix(&server.path).unwrap());
    client.set_timeout(Duration::from_millis(200));
    let err = client.call_raw("test.hang", None).await.unwrap_err();
    assert!(
        matches!(err, strata_ipc::ClientError::Timeout { .. }),
        "{err}"
    );
    // The next call uses a fresh connection and is not confused by the late answer.
    never.notify_waiters();
    let ok = client.call_raw("sys.health", None).await.unwrap();
    assert!(ok.ok);
    server.stop().await;
}
