use super::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// How long a blackholed read waits to show that nothing arrives (and nothing closes):
/// the one place a test must wait out a span, since "nothing happened" has no event.
const QUIET: Duration = Duration::from_millis(300);

/// An echo server on a free loopback port, on its own threads (one per connection).
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn connect(proxy: &TcpProxy) -> TcpStream {
    let stream = TcpStream::connect(proxy.addr()).unwrap();
    stream.set_read_timeout(Some(crate::DEADLINE)).unwrap();
    stream
}

/// Sends `msg` and reads the echo back (within the generous deadline).
fn round_trip(stream: &mut TcpStream, msg: &[u8]) {
    stream.write_all(msg).unwrap();
    expect(stream, msg);
}

fn expect(stream: &mut TcpStream, msg: &[u8]) {
    let mut got = vec![0u8; msg.len()];
    stream.read_exact(&mut got).unwrap();
    assert_eq!(got, msg);
}

/// Nothing arrives and the connection is not closed within [`QUIET`].
fn assert_silent(stream: &mut TcpStream) {
    stream.set_read_timeout(Some(QUIET)).unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        Ok(0) => panic!("the blackholed connection was closed"),
        Ok(_) => panic!("a byte crossed the blackhole"),
        Err(e) => panic!("the blackholed connection failed: {e}"),
    }
    stream.set_read_timeout(Some(crate::DEADLINE)).unwrap();
}

#[test]
fn forwards_both_ways() {
    let proxy = TcpProxy::start(echo_server()).unwrap();
    assert_eq!(proxy.mode(), Mode::Forward);
    assert_eq!(proxy.endpoint(), format!("http://{}", proxy.addr()));
    let mut a = connect(&proxy);
    let mut b = connect(&proxy);
    round_trip(&mut a, b"hello");
    round_trip(&mut b, b"other connection");
    round_trip(&mut a, &vec![7u8; 100_000]);
}

#[test]
fn a_blackhole_keeps_connections_open_and_moves_nothing_until_healed() {
    let proxy = TcpProxy::start(echo_server()).unwrap();
    let mut old = connect(&proxy);
    round_trip(&mut old, b"before");

    proxy.blackhole();
    assert_eq!(proxy.mode(), Mode::Blackhole);
    // An existing connection: what is sent does not come back, and nothing closes it.
    old.write_all(b"during").unwrap();
    assert_silent(&mut old);
    // A new one is accepted (the kernel completes the handshake) and just as silent.
    let mut new = connect(&proxy);
    new.write_all(b"new during").unwrap();
    assert_silent(&mut new);

    // Heal: the same connections carry on, and what was sent in the cut arrives, in order.
    proxy.heal();
    expect(&mut old, b"during");
    round_trip(&mut old, b"after");
    expect(&mut new, b"new during");
    round_trip(&mut new, b"new after");
}

#[test]
fn a_blackhole_in_the_reply_direction_holds_the_reply_too() {
    // The server's answer is cut as well as the request: a request made just before the
    // cut is not answered during it.
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = TcpProxy::start(upstream.local_addr().unwrap()).unwrap();
    let mut client = connect(&proxy);
    client.write_all(b"x").unwrap();
    let (mut server, _) = upstream.accept().unwrap();
    let mut byte = [0u8; 1];
    server.read_exact(&mut byte).unwrap();
    proxy.blackhole();
    server.write_all(b"reply").unwrap();
    assert_silent(&mut client);
    proxy.heal();
    expect(&mut client, b"reply");
}

#[test]
fn a_close_is_passed_on_and_dropping_the_proxy_closes_everything() {
    let proxy = TcpProxy::start(echo_server()).unwrap();
    let mut stream = connect(&proxy);
    round_trip(&mut stream, b"x");
    // The client's half-close reaches the echo server, which closes: EOF comes back.
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());

    let mut open = connect(&proxy);
    round_trip(&mut open, b"y");
    let addr = proxy.addr();
    drop(proxy);
    // The connection is closed (EOF or reset, not silence) and the port refuses.
    let mut byte = [0u8; 1];
    let closed = open.read(&mut byte);
    assert!(
        matches!(closed, Ok(0))
            || closed
                .as_ref()
                .is_err_and(|e| e.kind() == ErrorKind::ConnectionReset),
        "{closed:?}"
    );
    let until = Instant::now() + crate::DEADLINE;
    while TcpStream::connect(addr).is_ok() {
        assert!(Instant::now() < until, "the dropped proxy still accepts");
        std::thread::sleep(Duration::from_millis(10));
    }
}
