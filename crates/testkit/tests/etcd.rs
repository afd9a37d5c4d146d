//! The etcd harness against the real etcd binary: healthy after start, gone after stop,
//! same data after restart, killed with its guard.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;
use strata_testkit::etcd::Etcd;

/// One HTTP/1.0 request to etcd's client port; the whole reply.
/// The test key still holds its value (etcd's gRPC gateway; the key is base64).
fn assert_key_kept(port: u16) {
    let range = http(
        port,
        "POST",
        "/v3/kv/range",
        &format!(r#"{{"key":"{KEY}"}}"#),
    );
    assert!(range.contains(VALUE), "{range}");
}

fn http(port: u16, method: &str, path: &str, body: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to etcd");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply
}

/// Whether anything accepts connections on the port.
fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn pid_exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

// base64 of "strata-key" and "value-1", for etcd's JSON gateway.
const KEY: &str = "c3RyYXRhLWtleQ==";
const VALUE: &str = "dmFsdWUtMQ==";

#[test]
fn etcd_starts_stops_restarts_and_dies_with_its_guard() {
    let test = "etcd_starts_stops_restarts_and_dies_with_its_guard";
    let Some(mut etcd) = Etcd::start_or_skip(test) else {
        return;
    };
    let port = etcd.client_port();
    assert_eq!(etcd.endpoint(), format!("http://127.0.0.1:{port}"));
    assert_ne!(port, etcd.peer_port());
    let health = http(port, "GET", "/health", "");
    assert!(
        health.contains(" 200 ") && health.contains(r#""health":"true""#),
        "{health}"
    );

    // Something to find again after the restarts.
    let put = http(
        port,
        "POST",
        "/v3/kv/put",
        &format!(r#"{{"key":"{KEY}","value":"{VALUE}"}}"#),
    );
    assert!(put.contains(" 200 "), "{put}\n{}", etcd.log_tail());

    // Graceful stop: the process is gone and the port refuses.
    let pid = etcd.pid().expect("running");
    etcd.stop();
    assert_eq!(etcd.pid(), None);
    assert!(!pid_exists(pid), "etcd {pid} still exists after stop");
    assert!(!listening(port), "port {port} still accepts after stop");
    assert!(!etcd.healthy());

    // Restart: same port, same data.
    etcd.restart().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(etcd.client_port(), port);
    assert!(etcd.healthy());
    assert_key_kept(port);

    // A crash (SIGKILL) and a restart after it.
    let pid = etcd.pid().expect("running");
    etcd.kill();
    assert!(!pid_exists(pid), "etcd {pid} still exists after kill");
    assert!(!listening(port));
    etcd.restart().unwrap_or_else(|e| panic!("{e}"));
    assert_key_kept(port);
    assert!(!etcd.log_tail().is_empty());

    // Dropping the guard kills the process and removes its directory.
    let pid = etcd.pid().expect("running");
    let data = etcd.data_dir();
    assert!(data.exists());
    drop(etcd);
    assert!(!pid_exists(pid), "etcd {pid} survived its guard");
    assert!(!listening(port));
    assert!(!data.exists());
}
