//! TCP endpoints with mutual TLS: who may connect, what they may call, and that a bad
//! connection never disturbs a good one. Each test runs its own server (a Unix socket and
//! a TCP port on 127.0.0.1) with certificates made on the spot.

mod pki;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use pki::TestCa;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use strata_frame::frame_codec;
use strata_ipc::tls::{self, rustls};
use strata_ipc::{
    Call, Client, ClientError, Endpoint, PeerCred, Router, Server, ServerConfig, TcpListen,
    TlsError, TlsFiles,
};
use strata_proto::methods::{sys::Health, Method};
use strata_proto::{ErrorBody, ErrorCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};
use tokio_util::codec::Framed;

const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, serde::Deserialize, serde::Serialize, PartialEq)]
struct EchoParams {
    text: String,
}

struct Echo;
impl Method for Echo {
    const NAME: &'static str = "test.echo";
    type Params = EchoParams;
    type Result = EchoParams;
}

/// Answers who the caller is, as the server saw it.
struct Whoami;
impl Method for Whoami {
    const NAME: &'static str = "test.whoami";
    type Params = Value;
    type Result = Value;
}

/// A method no TCP listener of these tests allows.
struct Secret;
impl Method for Secret {
    const NAME: &'static str = "test.secret";
    type Params = Value;
    type Result = Value;
}

/// Certificates for one test: the cluster CA, a server and a client node, and a second
/// CA that nobody trusts.
struct Pki {
    _dir: tempfile::TempDir,
    ca: TestCa,
    other: TestCa,
    server: TlsFiles,
    client: TlsFiles,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new(dir.path(), "cluster-ca");
        let other = TestCa::new(dir.path(), "other-ca");
        let server = ca.node("node-a", &["127.0.0.1", "localhost"]);
        let client = ca.node("node-b", &["127.0.0.1"]);
        Pki {
            _dir: dir,
            ca,
            other,
            server,
            client,
        }
    }

    fn client_config(&self) -> Arc<rustls::ClientConfig> {
        tls::client_config(&self.client).unwrap()
    }
}

/// A running server with a Unix socket and a TCP port; stops when dropped or on `stop()`.
struct TestServer {
    _dir: tempfile::TempDir,
    path: PathBuf,
    addr: SocketAddr,
    handled: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    fn start(files: &TlsFiles, config: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.sock");
        let mut cfg = ServerConfig::new(&path);
        cfg.tcp = Some(TcpListen {
            addr: "127.0.0.1:0".parse().unwrap(),
            tls: tls::server_config(files).unwrap(),
            methods: vec!["test.echo".into(), "test.whoami".into()],
        });
        config(&mut cfg);
        let handled = Arc::new(AtomicUsize::new(0));
        let server = Server::bind(cfg, test_router(Arc::clone(&handled))).unwrap();
        let addr = server.tcp_addr().expect("a tcp address");
        assert_ne!(addr.port(), 0);
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(server.serve(async {
            let _ = rx.await;
        }));
        TestServer {
            _dir: dir,
            path,
            addr,
            handled,
            stop: Some(tx),
            task: Some(task),
        }
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::from_socket_addr(self.addr).unwrap()
    }

    fn client(&self, config: Arc<rustls::ClientConfig>) -> Client {
        Client::with_tls(self.endpoint(), config)
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
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

fn test_router(handled: Arc<AtomicUsize>) -> Router {
    let counted = move || {
        handled.fetch_add(1, Ordering::SeqCst);
    };
    let (c1, c2, c3) = (counted.clone(), counted.clone(), counted);
    Router::new("test", "9.9.9")
        .method::<Echo, _, _, _>(move |_c: Call, p: EchoParams| {
            c1();
            async move { Ok::<_, ErrorBody>(p) }
        })
        .method::<Whoami, _, _, _>(move |c: Call, _p: Value| {
            c2();
            async move {
                Ok::<_, ErrorBody>(json!({
                    "remote": c.remote_peer().map(|r| &r.name),
                    "remote_ip": c.remote_peer().map(|r| r.addr.ip().to_string()),
                    "uid": c.local_peer().map(|p| p.uid),
                    "gid": c.local_peer().map(|p| p.gid),
                    "pid": c.local_peer().and_then(|p| p.pid),
                    "local": c.local_peer().is_some(),
                }))
            }
        })
        .method::<Secret, _, _, _>(move |_c: Call, _p: Value| {
            c3();
            async move { Ok::<_, ErrorBody>(json!({"secret": true})) }
        })
}

async fn health(client: &mut Client) -> Result<String, ClientError> {
    client
        .call::<Health>(&Default::default())
        .await
        .map(|h| h.service)
}

/// Read until the peer closes; return what arrived. Fails if it does not close in time.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = timeout(DEADLINE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "server did not close the connection");
    seen
}

/// `client` is refused in the TLS handshake, no handler runs, and a client with a cluster
/// certificate is still served; then the server stops.
async fn refused_while_cluster_clients_are_served(
    server: TestServer,
    mut client: Client,
    pki: &Pki,
) {
    let err = client
        .call::<Echo>(&EchoParams { text: "x".into() })
        .await
        .unwrap_err();
    assert_tls_refusal(&err);
    assert_eq!(server.handled.load(Ordering::SeqCst), 0, "a handler ran");
    let mut good = server.client(pki.client_config());
    assert_eq!(health(&mut good).await.unwrap(), "test");
    server.stop().await;
}

fn assert_tls_refusal(err: &ClientError) {
    assert!(
        matches!(err, ClientError::Tls { .. }),
        "expected a TLS refusal, got: {err:?}"
    );
    assert_eq!(err.code(), None, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_round_trip_names_the_peer() {
    let pki = Pki::new();
    let server = TestServer::start(&pki.server, |_| {});
    let mut client = server.client(pki.client_config());
    let echoed = client
        .call::<Echo>(&EchoParams {
            text: "over tls".into(),
        })
        .await
        .unwrap();
    assert_eq!(echoed.text, "over tls");

    let me = client.call_raw("test.whoami", None).await.unwrap();
    let me = me.into_result().unwrap();
    let me: Value = serde_json::from_str(me.get()).unwrap();
    assert_eq!(me["remote"], "node-b", "{me}");
    assert_eq!(me["remote_ip"], "127.0.0.1", "{me}");
    assert_eq!(me["local"], false, "{me}");
    // No credentials at all: a remote caller has no uid to mistake for a local user.
    assert_eq!(me["uid"], Value::Null, "{me}");
    assert_eq!(me["gid"], Value::Null, "{me}");
    assert_eq!(me["pid"], Value::Null, "{me}");

    // The same handler over the Unix socket sees kernel credentials and no remote peer.
    let mut local = Client::new(Endpoint::unix(&server.path).unwrap());
    let me = local.call_raw("test.whoami", None).await.unwrap();
    let me: Value = serde_json::from_str(me.into_result().unwrap().get()).unwrap();
    assert_eq!(me["remote"], Value::Null, "{me}");
    assert_eq!(me["local"], true, "{me}");
    assert_eq!(me["uid"], PeerCred::current_process().uid, "{me}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_without_a_common_name_is_named_by_its_fingerprint() {
    let pki = Pki::new();
    let anonymous = pki.ca.issue("anonymous", None, &["127.0.0.1"]);
    let server = TestServer::start(&pki.server, |_| {});
    let mut client = server.client(tls::client_config(&anonymous).unwrap());
    let me = client.call_raw("test.whoami", None).await.unwrap();
    let me: Value = serde_json::from_str(me.into_result().unwrap().get()).unwrap();
    let name = me["remote"].as_str().unwrap();
    assert_eq!(name.len(), 64, "{name}");
    assert!(name.bytes().all(|b| b.is_ascii_hexdigit()), "{name}");
    // The fingerprint is of the certificate the client presented.
    let pem = std::fs::read(&anonymous.cert).unwrap();
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(name, hex);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_client_gets_no_answer_and_good_clients_keep_working() {
    let pki = Pki::new();
    let server = TestServer::start(&pki.server, |_| {});
    let mut good = server.client(pki.client_config());
    assert_eq!(health(&mut good).await.unwrap(), "test");

    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    let frame = br#"{"v":1,"req_id":"plain","method":"sys.health"}"#;
    plain
        .write_all(&(frame.len() as u32).to_be_bytes())
        .await
        .unwrap();
    plain.write_all(frame).await.unwrap();
    let seen = read_until_closed(&mut plain).await;
    // At most a TLS alert record; never a response envelope.
    let text = String::from_utf8_lossy(&seen);
    assert!(
        !text.contains("req_id") && !text.contains("\"ok\""),
        "plaintext client got an answer: {text:?}"
    );
    assert!(
        seen.len() < 64,
        "unexpected bytes for a plaintext client: {seen:?}"
    );

    // The good connection (already open) and a new one both still work.
    assert_eq!(health(&mut good).await.unwrap(), "test");
    let mut fresh = server.client(pki.client_config());
    assert_eq!(health(&mut fresh).await.unwrap(), "test");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_from_another_ca_is_refused() {
    let pki = Pki::new();
    let server = TestServer::start(&pki.server, |_| {});
    // Signed by the other CA, while trusting the cluster CA for the server.
    let stranger = TlsFiles {
        ca: pki.ca.cert.clone(),
        ..pki.other.node("stranger", &["127.0.0.1"])
    };
    let client = server.client(tls::client_config(&stranger).unwrap());
    refused_while_cluster_clients_are_served(server, client, &pki).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_without_a_certificate_is_refused() {
    let pki = Pki::new();
    let server = TestServer::start(&pki.server, |_| {});
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&pki.ca.cert).unwrap();
    use rustls::pki_types::pem::PemObject;
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(&pem).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let anonymous = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let client = server.client(Arc::new(anonymous));
    refused_while_cluster_clients_are_served(server, client, &pki).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_certificate_from_another_ca_is_refused_by_the_client() {
    let pki = Pki::new();
    // It verifies clients against the cluster CA but presents a certificate from the
    // other CA.
    let impostor = TlsFiles {
        ca: pki.ca.cert.clone(),
        ..pki.other.node("impostor", &["127.0.0.1"])
    };
    let server = TestServer::start(&impostor, |_| {});
    let mut client = server.client(pki.client_config());
    let err = health(&mut client).await.unwrap_err();
    assert_tls_refusal(&err);
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_certificate_for_another_host_is_refused_by_the_client() {
    let pki = Pki::new();
    let elsewhere = pki.ca.node("elsewhere", &["10.9.9.9", "elsewhere.example"]);
    let server = TestServer::start(&elsewhere, |_| {});
    let mut client = server.client(pki.client_config());
    let err = health(&mut client).await.unwrap_err();
    assert_tls_refusal(&err);
    assert!(err.to_string().contains("not valid for name"), "{err}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_certificate_is_a_client_and_never_a_node() {
    let pki = Pki::new();
    // A user named like a node connects, and goes by a name no node can have.
    let user = pki.ca.user("node-b");
    let server = TestServer::start(&pki.server, |_| {});
    let mut client = server.client(tls::client_config(&user).unwrap());
    let me = client.call_raw("test.whoami", None).await.unwrap();
    let me: Value = serde_json::from_str(me.into_result().unwrap().get()).unwrap();
    assert_eq!(me["remote"], "user:node-b", "{me}");
    // So does a certificate from before the kinds existed.
    let legacy = pki.ca.unmarked("node-c", &["127.0.0.1"]);
    let mut client = server.client(tls::client_config(&legacy).unwrap());
    let me = client.call_raw("test.whoami", None).await.unwrap();
    let me: Value = serde_json::from_str(me.into_result().unwrap().get()).unwrap();
    assert_eq!(me["remote"], "unmarked:node-c", "{me}");
    server.stop().await;

    // Neither can serve as a node: a client refuses it as the server, even for its host.
    let server = TestServer::start(&user, |_| {});
    let mut client = server.client(pki.client_config());
    let err = health(&mut client).await.unwrap_err();
    assert_tls_refusal(&err);
    server.stop().await;
    let server = TestServer::start(&legacy, |_| {});
    let mut client = server.client(pki.client_config());
    let err = health(&mut client).await.unwrap_err();
    assert_tls_refusal(&err);
    assert!(err.to_string().contains("NotANodeServer"), "{err}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_name_endpoints_are_checked_against_the_certificate() {
    let pki = Pki::new();
    let server = TestServer::start(&pki.server, |_| {});
    // The server's certificate names `localhost` as well as 127.0.0.1.
    let by_name = Endpoint::parse(&format!("tcp://localhost:{}", server.addr.port())).unwrap();
    let mut client = Client::with_tls(by_name, pki.client_config());
    assert_eq!(health(&mut client).await.unwrap(), "test");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allow_listed_methods_are_served_over_tcp() {
    let pki = Pki::new();
    let server = TestServer::start(&pki.server, |_| {});
    let mut client = server.client(pki.client_config());
    for method in ["test.secret", "test.nope"] {
        let reply = client.call_raw(method, None).await.unwrap();
        let error = reply.error.expect("an error");
        assert_eq!(error.code, ErrorCode::PermissionDenied, "{method}");
        assert_eq!(error.message, format!("`{method}` is not served over tcp"));
        assert_eq!(error.details["method"], method);
    }
    assert_eq!(server.handled.load(Ordering::SeqCst), 0, "a handler ran");
    // An allowed method on the same connection works.
    let echoed = client
        .call::<Echo>(&EchoParams { text: "ok".into() })
        .await
        .unwrap();
    assert_eq!(echoed.text, "ok");
    // Locally, everything routed is served.
    let mut local = Client::new(Endpoint::unix(&server.path).unwrap());
    let secret = local.call_raw("test.secret", None).await.unwrap();
    assert!(secret.ok, "{secret:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_health_is_served_over_tcp_without_being_listed() {
    let pki = Pki::new();
    let server = TestServer::start(&pki.server, |c| {
        c.tcp.as_mut().unwrap().methods.clear();
    });
    let mut client = server.client(pki.client_config());
    let h = client.call::<Health>(&Default::default()).await.unwrap();
    assert_eq!((h.service.as_str(), h.status.as_str()), ("test", "ok"));
    let denied = client
        .call::<Echo>(&EchoParams { text: "x".into() })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Some(ErrorCode::PermissionDenied), "{denied}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_list_naming_an_unrouted_method_is_refused_at_bind() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ServerConfig::new(dir.path().join("t.sock"));
    cfg.tcp = Some(TcpListen {
        addr: "127.0.0.1:0".parse().unwrap(),
        tls: tls::server_config(&pki.server).unwrap(),
        methods: vec!["test.echo".into(), "test.ecoh".into()],
    });
    let err = Server::bind(cfg, test_router(Default::default()))
        .err()
        .expect("bind must fail");
    assert!(err.to_string().contains("`test.ecoh`"), "{err}");
    assert!(
        !dir.path().join("t.sock").exists(),
        "socket left behind by a failed bind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_tls_handshake_is_dropped_at_the_handshake_deadline() {
    let pki = Pki::new();
    let server = TestServer::start(&pki.server, |c| {
        c.handshake_timeout = Duration::from_millis(200);
        c.frame_timeout = Duration::from_secs(600);
        c.idle_timeout = Duration::from_secs(600);
    });
    let started = Instant::now();
    // Connected, then silent; and a second that sends half a TLS record header.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut half = TcpStream::connect(server.addr).await.unwrap();
    half.write_all(&[0x16, 0x03]).await.unwrap();
    read_until_closed(&mut silent).await;
    read_until_closed(&mut half).await;
    // Dropped for the handshake deadline, not the 10-minute frame or idle one.
    assert!(started.elapsed() < Duration::from_secs(60));
    let mut good = server.client(pki.client_config());
    assert_eq!(health(&mut good).await.unwrap(), "test");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_is_shared_by_unix_and_tcp() {
    let pki = Pki::new();
    let server = TestServer::start(&pki.server, |c| {
        c.max_connections = 2;
        c.reserved_connections = 0;
    });
    // Two local connections, each answered once, so both hold a slot.
    let mut held = Vec::new();
    for i in 0..2 {
        let mut conn = Framed::new(
            UnixStream::connect(&server.path).await.unwrap(),
            frame_codec(),
        );
        let frame = format!(r#"{{"v":1,"req_id":"u{i}","method":"sys.health"}}"#);
        conn.send(Bytes::from(frame)).await.unwrap();
        let reply = timeout(DEADLINE, conn.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let reply: Value = serde_json::from_slice(&reply).unwrap();
        assert_eq!(reply["ok"], true, "{reply}");
        held.push(conn);
    }
    let mut client = server.client(pki.client_config());
    let err = health(&mut client).await.unwrap_err();
    assert_eq!(
        err.code(),
        None,
        "refused before TLS, so no server answer: {err}"
    );
    // Free a slot: the TCP client gets in.
    held.pop();
    let until = Instant::now() + DEADLINE;
    loop {
        match health(&mut client).await {
            Ok(service) => break assert_eq!(service, "test"),
            Err(e) => assert!(Instant::now() < until, "never admitted: {e}"),
        }
        tokio::task::yield_now().await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_tls_connections_and_handshakes() {
    let pki = Pki::new();
    let server = TestServer::start(&pki.server, |c| {
        c.shutdown_grace = Duration::from_secs(600);
        c.idle_timeout = Duration::from_secs(600);
        c.frame_timeout = Duration::from_secs(600);
    });
    let mut idle = server.client(pki.client_config());
    assert_eq!(health(&mut idle).await.unwrap(), "test");
    let mut handshaking = TcpStream::connect(server.addr).await.unwrap();
    handshaking.write_all(&[0x16, 0x03]).await.unwrap();
    let addr = server.addr;
    timeout(DEADLINE, server.stop())
        .await
        .expect("shutdown waited on idle or handshaking connections");
    read_until_closed(&mut handshaking).await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting tcp after shutdown"
    );
    assert!(health(&mut idle).await.is_err());
}

#[test]
fn key_file_readable_by_others_is_refused_at_load() {
    let pki = Pki::new();
    std::fs::set_permissions(&pki.server.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    for result in [
        tls::server_config(&pki.server).map(|_| ()),
        tls::client_config(&pki.server).map(|_| ()),
    ] {
        let err = result.unwrap_err();
        assert!(
            matches!(err, TlsError::KeyMode { mode: 0o644, .. }),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(pki.server.key.to_str().unwrap()), "{msg}");
        assert!(msg.contains("0600"), "{msg}");
    }
    // The same key at 0600 loads.
    std::fs::set_permissions(&pki.server.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    tls::server_config(&pki.server).unwrap();
}

#[test]
fn mismatched_certificate_and_key_are_refused_at_load() {
    let pki = Pki::new();
    let crossed = TlsFiles {
        key: pki.client.key.clone(),
        ..pki.server.clone()
    };
    let err = tls::server_config(&crossed).unwrap_err();
    assert!(matches!(err, TlsError::BadIdentity { .. }), "{err}");
    assert!(err.to_string().contains("node-b.key"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reconnects_after_the_server_closes_an_idle_tls_connection() {
    let pki = Pki::new();
    let server = TestServer::start(&pki.server, |c| {
        c.idle_timeout = Duration::from_millis(200);
    });
    let mut client = server.client(pki.client_config());
    assert_eq!(health(&mut client).await.unwrap(), "test");
    // A second TLS connection, opened after the client's: once the server has closed it
    // for idleness, it has closed the client's too.
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(server.addr.ip().into());
    let mut probe = tokio_rustls::TlsConnector::from(pki.client_config())
        .connect(name, tcp)
        .await
        .unwrap();
    let closed = timeout(DEADLINE, async {
        let mut buf = [0u8; 64];
        loop {
            match probe.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "idle tls connection was not closed");
    // The client's connection is gone; the call goes out on a fresh one.
    assert_eq!(health(&mut client).await.unwrap(), "test");
    server.stop().await;
}

/// A TLS connection to `server` from the local address `from`, framed.
async fn tls_from(
    server: &TestServer,
    from: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<
    Framed<tokio_rustls::client::TlsStream<TcpStream>, tokio_util::codec::LengthDelimitedCodec>,
> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().unwrap())?;
    let tcp = socket.connect(server.addr).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    Ok(Framed::new(tls, frame_codec()))
}

/// `sys.health` on a framed connection: the reply, or `None` if it closed first.
async fn framed_health<S>(
    conn: &mut Framed<S, tokio_util::codec::LengthDelimitedCodec>,
) -> Option<Value>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let _ = conn
        .send(Bytes::from_static(
            br#"{"v":1,"req_id":"q","method":"sys.health"}"#,
        ))
        .await;
    match timeout(DEADLINE, conn.next())
        .await
        .expect("no answer in time")
    {
        Some(Ok(reply)) => Some(serde_json::from_slice(&reply).unwrap()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_callers_have_a_quota_per_address_and_per_certificate_name() {
    let pki = Pki::new();
    let server = TestServer::start(&pki.server, |c| c.max_connections_per_peer = 2);
    // Two handshakes that never finish hold 127.0.0.1's quota: a third connection from
    // there is closed before TLS, while another address is served.
    let _stalled: Vec<TcpStream> = vec![
        TcpStream::connect(server.addr).await.unwrap(),
        TcpStream::connect(server.addr).await.unwrap(),
    ];
    let mut client = server.client(pki.client_config());
    let until = Instant::now() + DEADLINE;
    // The server counts the stalled ones as it accepts them.
    loop {
        match health(&mut client).await {
            Err(e) => break assert_eq!(e.code(), None, "refused before TLS: {e}"),
            Ok(_) => assert!(
                Instant::now() < until,
                "127.0.0.1 was never held to its quota"
            ),
        }
        tokio::task::yield_now().await;
    }
    // node-b from two other addresses: its name's quota of 2 is reached...
    let mut b2 = tls_from(&server, "127.0.0.2", pki.client_config())
        .await
        .unwrap();
    let mut b3 = tls_from(&server, "127.0.0.3", pki.client_config())
        .await
        .unwrap();
    assert_eq!(framed_health(&mut b2).await.unwrap()["ok"], true);
    assert_eq!(framed_health(&mut b3).await.unwrap()["ok"], true);
    // ... so from a fourth address it gets one RESOURCE_EXHAUSTED frame, after TLS.
    let mut b4 = tls_from(&server, "127.0.0.4", pki.client_config())
        .await
        .unwrap();
    let refused = framed_health(&mut b4).await.expect("a refusal frame");
    assert_eq!(
        refused["error"]["code"],
        ErrorCode::ResourceExhausted.code(),
        "{refused}"
    );
    assert_eq!(refused["req_id"], "");
    // The local socket is unaffected.
    let mut local = Framed::new(
        UnixStream::connect(&server.path).await.unwrap(),
        frame_codec(),
    );
    assert_eq!(framed_health(&mut local).await.unwrap()["ok"], true);
    server.stop().await;
}

/// Log lines written by the current thread's subscriber, for a test to read.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// The number after `field=` in `line`, if it has one.
fn field_number(line: &str, field: &str) -> Option<u64> {
    let at = line.find(&format!("{field}="))? + field.len() + 1;
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

// A current-thread runtime, so the server's tasks log to this thread's subscriber.
#[tokio::test]
async fn failed_handshakes_are_logged_at_a_bounded_rate_and_the_rest_counted() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let pki = Pki::new();
    let server = TestServer::start(&pki.server, |_| {});
    let started = Instant::now();
    const PROBES: u64 = 100;
    for _ in 0..PROBES {
        // Not TLS at all: the handshake fails on the first record.
        let mut probe = TcpStream::connect(server.addr).await.unwrap();
        probe.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        read_until_closed(&mut probe).await;
    }
    let elapsed = started.elapsed();
    // Every failure is either logged on its own line or counted in a summary line, which
    // comes within a second or so of the interval it covers.
    let until = Instant::now() + DEADLINE;
    let (logged, counted) = loop {
        let lines = captured.lines();
        let logged = lines
            .iter()
            .filter(|l| l.contains("tls handshake failed"))
            .count() as u64;
        let counted: u64 = lines
            .iter()
            .filter_map(|l| field_number(l, "suppressed"))
            .sum();
        if logged + counted >= PROBES {
            break (logged, counted);
        }
        assert!(
            Instant::now() < until,
            "{logged} logged and {counted} counted of {PROBES} failed handshakes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(logged + counted, PROBES);
    // At most 10 lines a second (the default), in each interval the probes spanned.
    let intervals = elapsed.as_secs() + 2;
    assert!(
        logged <= 10 * intervals,
        "{logged} lines for {PROBES} failed handshakes in {elapsed:?}"
    );
    // A good client is unaffected.
    let mut good = server.client(pki.client_config());
    assert_eq!(health(&mut good).await.unwrap(), "test");
    server.stop().await;
}

/// Start a `declared`-byte frame on `conn` (its header and 100 bytes), then stall.
async fn start_big_frame<S>(
    conn: &mut Framed<S, tokio_util::codec::LengthDelimitedCodec>,
    declared: u32,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut part = declared.to_be_bytes().to_vec();
    part.extend_from_slice(&[b' '; 100]);
    conn.get_mut().write_all(&part).await.unwrap();
    conn.get_mut().flush().await.unwrap();
}

/// The refusal frame `conn` got within `wait`, if any.
async fn refusal_within<S>(
    conn: &mut Framed<S, tokio_util::codec::LengthDelimitedCodec>,
    wait: Duration,
) -> Option<Value>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match timeout(wait, conn.next()).await {
        Ok(Some(Ok(frame))) => Some(serde_json::from_slice(&frame).unwrap()),
        Ok(other) => panic!("closed without a refusal: {other:?}"),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_peers_hold_at_most_their_share_of_the_frame_budget() {
    let pki = Pki::new();
    let server = TestServer::start(&pki.server, |c| {
        c.max_buffered_bytes = 4_500_000;
        c.max_buffered_bytes_tcp = 2_500_000;
    });
    const BIG: u32 = 1_000_000;
    // Three addresses each start a 1 MB frame: two fit the TCP share, the third not.
    let mut conns = Vec::new();
    for from in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        let mut conn = tls_from(&server, from, pki.client_config()).await.unwrap();
        start_big_frame(&mut conn, BIG).await;
        conns.push(conn);
    }
    let until = Instant::now() + DEADLINE;
    let mut refused = Vec::new();
    while refused.is_empty() {
        assert!(Instant::now() < until, "no tcp frame was refused");
        for conn in &mut conns {
            if let Some(r) = refusal_within(conn, Duration::from_millis(50)).await {
                refused.push(r);
            }
        }
    }
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(
        refused[0]["error"]["code"],
        ErrorCode::ResourceExhausted.code()
    );
    assert_eq!(
        refused[0]["error"]["details"]["buffered_bytes_limit_tcp"],
        2_500_000
    );
    // The rest of the budget is the local callers': two 1 MB frames fit beside them.
    let mut locals = Vec::new();
    for _ in 0..2 {
        let mut local = Framed::new(
            UnixStream::connect(&server.path).await.unwrap(),
            frame_codec(),
        );
        start_big_frame(&mut local, BIG).await;
        locals.push(local);
    }
    for local in &mut locals {
        assert!(
            refusal_within(local, Duration::from_millis(300))
                .await
                .is_none(),
            "a local frame was refused while tcp peers hold only their share"
        );
    }
    server.stop().await;
}
