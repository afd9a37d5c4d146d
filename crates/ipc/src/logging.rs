//! Log set-up shared by every Strata binary: structured events to stderr, one per line.
//!
//! `STRATA_LOG` sets the filter (tracing's env-filter syntax, default `info`);
//! `STRATA_LOG_FORMAT=json` switches from human-readable lines to JSON lines.
//! Under a supervisor, stderr is captured per service.

use tracing_subscriber::EnvFilter;

/// Install the subscriber (once per process; later calls do nothing).
pub fn init() {
    let filter = EnvFilter::try_from_env("STRATA_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("STRATA_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Ignore "already set": a test or an embedding program may have installed its own.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.with_ansi(false).compact().try_init()
    };
}
