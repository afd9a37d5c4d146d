//! The `identity.issue.scale` mode: `identity.issue` throughput with 1k, 100k and 1M
//! issued capabilities on record (`--issued`). Identity's store is filled through
//! identity itself — real `identity.issue` calls over 16 connections, the records it
//! writes for any issue — up to each count in turn, then the usual identity.issue rows
//! are measured beside their floor. Nothing writes records behind identity's back, so
//! there is no fill flag in identity at all.

use crate::{exchange, frame_codec, is_ok, measure, start_floor, Conn, Row, Workload};
use anyhow::{bail, Context};
use bytes::Bytes;
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixStream;
use tokio_util::codec::Framed;

/// Connections the fill uses.
const FILL_CONNS: u64 = 16;

/// Issues `n` capabilities with `request` over [`FILL_CONNS`] connections; fails on the
/// first refusal.
async fn fill(socket: &Path, request: &Bytes, n: u64) -> anyhow::Result<()> {
    let left = Arc::new(AtomicU64::new(n));
    let mut tasks = Vec::new();
    for _ in 0..FILL_CONNS.min(n.max(1)) {
        let (left, request) = (Arc::clone(&left), request.clone());
        let mut conn: Conn = Framed::new(
            UnixStream::connect(socket)
                .await
                .with_context(|| format!("cannot connect to {}", socket.display()))?,
            frame_codec(),
        );
        tasks.push(tokio::spawn(async move {
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(1))
                .is_ok()
            {
                let reply = exchange(&mut conn, request.clone()).await?;
                if !is_ok(&reply) {
                    bail!("the fill was refused: {}", String::from_utf8_lossy(&reply));
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// For each count in `issued` (ascending): fill identity's store up to it, then measure
/// `work` (identity.issue) with each of `conns` beside a floor of `response_bytes`. The
/// measured issues add to the records, so each count is "at least".
pub(crate) async fn rows(
    work: &Workload,
    floor_dir: &Path,
    conns: &[usize],
    secs: Duration,
    issued: &[u64],
) -> anyhow::Result<Vec<Row>> {
    let request = (work.request)(&Value::Null);
    let mut probe: Conn = Framed::new(UnixStream::connect(&work.socket).await?, frame_codec());
    let reply = exchange(&mut probe, request.clone()).await?;
    if !is_ok(&reply) {
        bail!(
            "identity.issue is refused: {}",
            String::from_utf8_lossy(&reply)
        );
    }
    drop(probe);
    let (floor_sock, _floor) = start_floor(floor_dir, reply.len()).await?;
    let mut counts = issued.to_vec();
    counts.sort_unstable();
    let mut on_record = 1u64;
    let mut rows = Vec::new();
    for count in counts {
        let started = std::time::Instant::now();
        fill(&work.socket, &request, count.saturating_sub(on_record)).await?;
        eprintln!(
            "identity.issue.scale: {count} on record (filled in {:.1} s)",
            started.elapsed().as_secs_f64()
        );
        on_record = on_record.max(count);
        for &n in conns {
            let service = measure(work.clone(), n, secs).await?;
            on_record += service.requests;
            let floor_req = request.clone();
            let floor = measure(
                Workload {
                    socket: floor_sock.clone(),
                    setup: None,
                    request: Arc::new(move |_| floor_req.clone()),
                },
                n,
                secs,
            )
            .await?;
            rows.push(Row {
                mode: format!("issue @{count}"),
                conns: n,
                request_bytes: request.len(),
                response_bytes: reply.len(),
                service,
                floor,
            });
        }
    }
    Ok(rows)
}
