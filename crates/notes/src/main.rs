//! `strata-notes`: serves notes on `<runtime dir>/notes.sock` (or `--socket`).
//!
//! Needs an `fs` capability routed by the supervisor (`$CREDENTIALS_DIRECTORY/fs`) whose
//! prefix is `--data-dir`, and fs exporting that directory.

use anyhow::{bail, Context};
use clap::Parser;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;
use strata_notes::{
    Notes, Store, ThroughFs, DEFAULT_MAX_NOTES, DEFAULT_MAX_NOTES_PER_CALLER, MAX_MAX_NOTES,
};
use strata_service::{Credential, Gate, ServiceArgs};

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
    /// The most notes the store holds (1 to 10000, so `notes.list` fits one frame).
    #[arg(long, value_name = "N", env = "STRATA_NOTES_MAX", default_value_t = DEFAULT_MAX_NOTES,
          value_parser = clap::value_parser!(usize))]
    max_notes: usize,
    /// The most notes one caller (a token's `sub`) may create (1 to --max-notes).
    #[arg(long, value_name = "N", env = "STRATA_NOTES_MAX_PER_CALLER",
          default_value_t = DEFAULT_MAX_NOTES_PER_CALLER,
          value_parser = clap::value_parser!(usize))]
    max_notes_per_caller: usize,
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
    if args.max_notes_per_caller == 0 || args.max_notes_per_caller > args.max_notes {
        bail!("--max-notes-per-caller must be 1 to --max-notes");
    }
    let store = open_store(&args.data_dir, args.max_notes, args.max_notes_per_caller)?;
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
            store,
            ThroughFs::new(fs_socket, Arc::new(credential)),
        ));
        strata_notes::service(gate, notes).serve(&settings).await?;
        Ok(())
    })
}

/// The store over the data directory, created 0700 if missing; refused if it is a
/// symlink, not a directory, not ours, or open to others (notes are private files). The
/// checks are of the handle every write goes beneath, not of the path.
fn open_store(dir: &std::path::Path, max_notes: usize, per_caller: usize) -> anyhow::Result<Store> {
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
    let store = Store::open(dir, max_notes, per_caller).with_context(|| {
        format!(
            "cannot open {} as a directory (a symlink is refused)",
            dir.display()
        )
    })?;
    let st = rustix::fs::fstat(store.handle())?;
    let uid = rustix::process::geteuid().as_raw();
    if st.st_uid != uid {
        bail!(
            "{} is owned by uid {}, not by notes' user ({uid})",
            dir.display(),
            st.st_uid
        );
    }
    if st.st_mode & 0o022 != 0 {
        bail!("{} is writable by group or others", dir.display());
    }
    Ok(store)
}
