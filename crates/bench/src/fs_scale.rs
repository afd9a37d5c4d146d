//! The fs parts of strata-bench that are not a plain request loop: the service's own CPU
//! time per request (read from `/proc` for the process behind a socket), and the
//! `fs.handles` scaling mode (fs memory and `fs.open` latency with N handles open).

use crate::{exchange, frame, Conn};
use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Instant;
use strata_frame::frame_codec;
use tokio::net::UnixStream;
use tokio_util::codec::Framed;

/// Timed `fs.open`s at each handle count (each closed again, untimed).
const SAMPLES: usize = 2_000;
/// Connections that open (and at the end close) the held handles.
const OPENERS: usize = 8;

/// The process serving `socket`, by the kernel's peer credentials.
pub(crate) async fn server_pid(socket: &Path) -> Option<u32> {
    let stream = UnixStream::connect(socket).await.ok()?;
    let pid = stream.peer_cred().ok()?.pid()?;
    u32::try_from(pid).ok()
}

/// CPU time (user + system, every thread, living or exited) `pid` has used, in µs.
pub(crate) fn cpu_us(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are fixed. utime and stime are
    // fields 14 and 15, the 12th and 13th after the name's closing parenthesis.
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let per_second = rustix::param::clock_ticks_per_second() as f64;
    Some((utime + stime) as f64 * 1e6 / per_second)
}

/// VmRSS of `pid`, in KiB.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// One row of the `fs.handles` table.
#[derive(Debug, Serialize)]
pub(crate) struct ScaleRow {
    /// Handles held open while measuring.
    handles: usize,
    /// fs's VmRSS with them open.
    rss_kib: u64,
    open_p50_us: f64,
    open_p99_us: f64,
    /// Timed opens.
    samples: usize,
}

async fn connect(socket: &Path) -> anyhow::Result<Conn> {
    let stream = UnixStream::connect(socket)
        .await
        .with_context(|| format!("cannot connect to {}", socket.display()))?;
    Ok(Framed::new(stream, frame_codec()))
}

/// Open `bench.dat` once; the new handle.
async fn open(conn: &mut Conn, request: &Bytes) -> anyhow::Result<String> {
    let reply: Value = serde_json::from_slice(&exchange(conn, request.clone()).await?)?;
    match reply["result"]["handle"].as_str() {
        Some(h) => Ok(h.to_owned()),
        None => bail!(
            "fs.open refused: {} (for fs.handles, raise fs's handle quotas: \
             STRATA_FS_MAX_HANDLES_PER_CAP, _PER_LINEAGE, _PER_CALLER and STRATA_FS_MAX_HANDLES, \
             and its open-files limit, `ulimit -n`)",
            reply["error"]
        ),
    }
}

async fn close(conn: &mut Conn, token: &str, handle: &str) -> anyhow::Result<()> {
    exchange(
        conn,
        frame("fs.close", Some(token), json!({"handle": handle})),
    )
    .await?;
    Ok(())
}

/// `fs.handles`: for each count in `counts` (ascending), hold that many handles open on
/// the fs behind `socket`, then time [`SAMPLES`] further opens (each closed again) and
/// read fs's VmRSS. The first row (0 handles) is fs as it stood before. Every handle
/// opened is closed at the end.
pub(crate) async fn handles(
    socket: &Path,
    token: &str,
    counts: &[usize],
) -> anyhow::Result<Vec<ScaleRow>> {
    let pid = server_pid(socket)
        .await
        .ok_or_else(|| anyhow!("cannot tell which process serves {}", socket.display()))?;
    let request = frame("fs.open", Some(token), json!({"path": "bench.dat"}));
    let mut openers = Vec::new();
    for _ in 0..OPENERS {
        openers.push((connect(socket).await?, Vec::<String>::new()));
    }
    let mut probe = connect(socket).await?;
    let mut counts = counts.to_vec();
    counts.sort_unstable();
    counts.dedup();
    let mut rows = Vec::new();
    let mut held = 0;
    let outcome = async {
        for &target in std::iter::once(&0).chain(&counts) {
            // Open up to `target`, OPENERS connections at a time.
            let need = target.saturating_sub(held);
            let tasks: Vec<_> = openers
                .drain(..)
                .enumerate()
                .map(|(i, (mut conn, mut ids))| {
                    let n = need / OPENERS + usize::from(i < need % OPENERS);
                    let request = request.clone();
                    tokio::spawn(async move {
                        let mut result = Ok(());
                        for _ in 0..n {
                            match open(&mut conn, &request).await {
                                Ok(h) => ids.push(h),
                                Err(e) => {
                                    result = Err(e);
                                    break;
                                }
                            }
                        }
                        (conn, ids, result)
                    })
                })
                .collect();
            let mut failed = None;
            for task in tasks {
                let (conn, ids, result) = task.await?;
                openers.push((conn, ids));
                if let Err(e) = result {
                    failed = Some(e);
                }
            }
            held = openers.iter().map(|(_, ids)| ids.len()).sum();
            if let Some(e) = failed {
                return Err(e.context(format!("while opening handle {} of {target}", held + 1)));
            }
            let mut lat = Vec::with_capacity(SAMPLES);
            for _ in 0..SAMPLES {
                let t = Instant::now();
                let handle = open(&mut probe, &request).await?;
                lat.push(t.elapsed().as_nanos() as u64);
                close(&mut probe, token, &handle).await?;
            }
            lat.sort_unstable();
            let pct =
                |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] as f64 / 1e3;
            rows.push(ScaleRow {
                handles: held,
                rss_kib: rss_kib(pid).unwrap_or(0),
                open_p50_us: pct(0.50),
                open_p99_us: pct(0.99),
                samples: SAMPLES,
            });
        }
        anyhow::Ok(())
    }
    .await;
    // Close everything we opened, even after a failure, so fs is as we found it.
    let closers: Vec<_> = openers
        .into_iter()
        .map(|(mut conn, ids)| {
            let token = token.to_owned();
            tokio::spawn(async move {
                for id in ids {
                    if close(&mut conn, &token, &id).await.is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    for c in closers {
        let _ = c.await;
    }
    outcome.map(|()| rows)
}

/// Print the `fs.handles` rows as a table.
pub(crate) fn print(rows: &[ScaleRow]) {
    println!(
        "\nfs.handles: fs memory and fs.open latency with N handles open ({SAMPLES} opens each)"
    );
    println!(
        "{:>9} {:>10} {:>12} {:>12}",
        "handles", "RSS KiB", "open p50 µs", "open p99 µs"
    );
    for r in rows {
        println!(
            "{:>9} {:>10} {:>12.1} {:>12.1}",
            r.handles, r.rss_kib, r.open_p50_us, r.open_p99_us
        );
    }
}
