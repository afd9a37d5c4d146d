//! `strata-notes`: serves notes on `<runtime dir>/notes.sock` (or `--socket`).
//!
//! Needs an `fs` capability routed by the supervisor (`$CREDENTIALS_DIRECTORY/fs`) whose
//! prefix is `--data-dir`, and fs exporting that directory.

use anyhow::{bail, Context};
use clap::Parser;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use strata_notes::{Notes, Store, ThroughFs, DEFAULT_MAX_NOTES};
use strata_service::{Credential, Gate, ServiceArgs};

/// The most notes `--max-notes` may allow.
const MAX_MAX_NOTES: usize = 100_000;

#[derive(Parser)]
#[command(
    version,
    about = "Strata notes: the example service (notes.put/get/list), reading back through Strata fs"
)]
struct Args {
    /// Where notes are written, one file each (mode 0600); export it to fs and route notes
    /// an fs capability with this directory as its path_prefix. Created 0700 if missing.
    #[arg(long, value_name = "DIR", env = "STRATA_NOTES_DATA_DIR")]
    data_dir: PathBuf,
    /// The most notes the store holds.
    #[arg(long, value_name = "N", env = "STRATA_NOTES_MAX", default_value_t = DEFAULT_MAX_NOTES,
          value_parser = clap::value_parser!(usize))]
    max_notes: usize,
    /// fs's socket (default: `<runtime dir>/fs.sock`).
    #[arg(long, value_name = "PATH")]
    fs_socket: Option<PathBuf>,
    /// The routed capability for fs, by its name in `$CREDENTIALS_DIRECTORY`.
    #[arg(long, value_name = "NAME", default_value = "fs")]
    fs_credential: String,
    #[command(flatten)]
    service: ServiceArgs,
}

fn main() -> anyhow::Result<()> {
    strata_ipc::logging::init();
    let args = Args::parse();
    if args.max_notes == 0 || args.max_notes > MAX_MAX_NOTES {
        bail!("--max-notes must be 1 to {MAX_MAX_NOTES}");
    }
    let data_dir = data_dir(&args.data_dir)?;
    let credential = Credential::from_env(&args.fs_credential)
        .context("notes reads notes back through fs with a routed fs capability")?;
    let settings = args.service.settings("notes")?;
    let fs_socket = args.fs_socket.unwrap_or_else(|| settings.socket_of("fs"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let gate = Gate::start(&settings)?;
        let notes = Arc::new(Notes::new(
            Store::new(data_dir, args.max_notes),
            ThroughFs::new(fs_socket, Arc::new(credential)),
        ));
        strata_notes::service(gate, notes).serve(&settings).await?;
        Ok(())
    })
}

/// The data directory, created 0700 if missing; refused if it is a symlink, not a
/// directory, not ours, or open to others (notes are private files).
fn data_dir(dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    if !dir.is_absolute() {
        bail!("--data-dir must be an absolute path (it is also the fs capability's prefix)");
    }
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?,
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", dir.display())),
        Ok(_) => {}
    }
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.file_type().is_dir() {
        bail!(
            "{} is not a directory (a symlink is refused)",
            dir.display()
        );
    }
    let uid = rustix::process::geteuid().as_raw();
    if meta.uid() != uid {
        bail!(
            "{} is owned by uid {}, not by notes' user ({uid})",
            dir.display(),
            meta.uid()
        );
    }
    if meta.permissions().mode() & 0o022 != 0 {
        bail!("{} is writable by group or others", dir.display());
    }
    Ok(dir.to_owned())
}
