//! The client against a hostile or broken server: an answer that is huge, malformed or out
//! of step gives a clean error, and the error's text is bounded (it ends up in logs and on
//! terminals, so a server cannot make it carry a mebibyte).

use futures_util::StreamExt;
use std::path::PathBuf;
use std::time::Duration;
use strata_frame::frame_codec;
use strata_ipc::{Client, ClientError, Endpoint};
use strata_proto::methods::{sys, NoParams};
use strata_proto::{MAX_ERROR_MESSAGE_LEN, MAX_FRAME};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;
use tokio_util::codec::Framed;

/// Longest text a client error may have, whatever the server sent.
const MAX_ERROR_TEXT: usize = 2 * MAX_ERROR_MESSAGE_LEN;

/// A server that answers every request with `answer` (raw bytes, framing included).
fn fake_server(answer: Vec<u8>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fake.sock");
    let listener = UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut framed = Framed::new(stream, frame_codec());
                while let Some(Ok(_)) = framed.next().await {
                    if framed.get_mut().write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (dir, path)
}

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

async fn call_fake(answer: Vec<u8>) -> ClientError {
    let (_dir, path) = fake_server(answer);
    let mut client = Client::new(Endpoint::unix(&path).unwrap());
    client.set_timeout(Duration::from_secs(10));
    client
        .call::<sys::Health>(&NoParams {})
        .await
        .expect_err("the answer is not a usable health result")
}

fn assert_bounded(case: &str, e: &ClientError) {
    let text = e.to_string();
    assert!(
        text.len() <= MAX_ERROR_TEXT,
        "{case}: {} bytes: {:.200}",
        text.len(),
        text
    );
}

fn big(n: usize) -> String {
    "A".repeat(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_declared_over_the_limit_is_a_clean_error() {
    let mut answer = (16u32 << 20).to_be_bytes().to_vec();
    answer.extend_from_slice(b"{}");
    let e = call_fake(answer).await;
    assert!(matches!(e, ClientError::Io { .. }), "{e}");
    assert_bounded("16 MiB declared", &e);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_answers_give_bounded_protocol_errors() {
    let room = MAX_FRAME - 200;
    for (case, payload) in [
        ("not JSON", big(room).into_bytes()),
        (
            "mistyped v quoting a huge string",
            format!(r#"{{"v":"{}","req_id":"x","ok":true}}"#, big(room)).into_bytes(),
        ),
        (
            "another request's 1 MiB req_id",
            format!(
                r#"{{"v":1,"req_id":"{}","ok":true,"result":{{}}}}"#,
                big(room)
            )
            .into_bytes(),
        ),
        (
            "a result of the wrong shape quoting a huge string",
            format!(
                r#"{{"v":1,"req_id":"{:x}-1","ok":true,"result":{{"service":5,"version":"{}"}}}}"#,
                std::process::id(),
                big(room)
            )
            .into_bytes(),
        ),
    ] {
        let e = call_fake(framed(&payload)).await;
        assert!(
            matches!(e, ClientError::Protocol { .. }),
            "{case}: {:.200}",
            e.to_string()
        );
        assert_bounded(case, &e);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servers_huge_error_message_is_cut() {
    // A refusal-shaped answer (empty req_id) whose message fills the frame.
    let payload = format!(
        r#"{{"v":1,"req_id":"","ok":false,"error":{{"code":7,"name":"RESOURCE_EXHAUSTED","message":"{}","details":{{}}}}}}"#,
        big(MAX_FRAME - 200)
    );
    let e = call_fake(framed(payload.as_bytes())).await;
    let ClientError::Server(body) = &e else {
        panic!("{:.200}", e.to_string());
    };
    assert!(
        body.message.len() <= MAX_ERROR_MESSAGE_LEN,
        "{}",
        body.message.len()
    );
    assert_bounded("1 MiB message", &e);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_answers_then_closes_mid_frame_is_a_clean_error() {
    let mut answer = (1000u32).to_be_bytes().to_vec();
    answer.extend_from_slice(b"{\"v\":1");
    let (_dir, path) = {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fake.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            if let Ok((stream, _)) = listener.accept().await {
                let mut framed = Framed::new(stream, frame_codec());
                let _ = framed.next().await;
                let _ = framed.get_mut().write_all(&answer).await;
                // Dropped here: closed half-way through the declared frame.
            }
        });
        (dir, path)
    };
    let mut client = Client::new(Endpoint::unix(&path).unwrap());
    client.set_timeout(Duration::from_secs(10));
    let e = client.call::<sys::Health>(&NoParams {}).await.unwrap_err();
    assert_bounded("truncated", &e);
}
