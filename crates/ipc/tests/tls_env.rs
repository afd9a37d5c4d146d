//! A client's TLS settings from the environment. In a test binary of its own, with one
//! test, because it changes this process's environment.

mod pki;

use pki::TestCa;
use strata_ipc::tls::{self, CA_ENV, CERT_ENV, KEY_ENV};
use strata_ipc::{Client, ClientError, Endpoint, Router, Server, ServerConfig, TcpListen};
use strata_proto::methods::sys::Health;
use tokio::sync::oneshot;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_clients_take_their_tls_files_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "cluster-ca");
    let server_files = ca.node("node-a", &["127.0.0.1"]);
    let client_files = ca.node("node-b", &["127.0.0.1"]);
    let mut cfg = ServerConfig::new(dir.path().join("t.sock"));
    cfg.tcp = Some(TcpListen {
        addr: "127.0.0.1:0".parse().unwrap(),
        tls: tls::server_config(&server_files).unwrap(),
        methods: vec![],
    });
    let server = Server::bind(cfg, Router::new("test", "1")).unwrap();
    let endpoint = Endpoint::from_socket_addr(server.tcp_addr().unwrap()).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));

    for k in [CA_ENV, CERT_ENV, KEY_ENV] {
        std::env::remove_var(k);
    }
    let mut client = Client::new(endpoint.clone());
    let err = client
        .call::<Health>(&Default::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::TlsRequired { .. }), "{err:?}");
    let msg = err.to_string();
    for k in [CA_ENV, CERT_ENV, KEY_ENV] {
        assert!(msg.contains(k), "{msg}");
    }

    std::env::set_var(CA_ENV, &client_files.ca);
    let err = client
        .call::<Health>(&Default::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::TlsSetup { .. }), "{err:?}");
    assert!(err.to_string().contains("STRATA_TLS_CERT"), "{err}");

    std::env::set_var(CERT_ENV, &client_files.cert);
    std::env::set_var(KEY_ENV, &client_files.key);
    let health = client.call::<Health>(&Default::default()).await.unwrap();
    assert_eq!(health.service, "test");

    let _ = stop.send(());
    task.await.unwrap();
}
