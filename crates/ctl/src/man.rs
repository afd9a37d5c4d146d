//! `strata-ctl man --out-dir DIR`: the man pages, made from the grammar itself
//! (clap_mangen), so they cannot drift from `--help`. The Nix package runs it at build
//! time and installs the pages.

use crate::cli::Cli;
use crate::failure::Failure;
use clap::CommandFactory;
use std::path::Path;

/// The EXIT STATUS section every page carries (the same codes as `--help`).
const EXIT_STATUS: &str = r#".SH "EXIT STATUS"
.TP
\fB0\fR
success
.TP
\fB1\fR
the server answered an error not listed below, or a local operation was refused or failed
.TP
\fB2\fR
usage error, or an unusable local set-up (runtime directory, token file)
.TP
\fB66\fR
not found (NOT_FOUND): no such service, file or registration
.TP
\fB69\fR
unreachable: no socket, connection refused, no answer in time, TLS failure
.TP
\fB77\fR
denied (PERMISSION_DENIED, UNAUTHENTICATED)
.PP
Raw mode exits 1 for any error envelope, as the original client did.
"#;

/// Write `strata-ctl.1` and `strata-ctl-<sub>[-<sub>].1` for every subcommand into `dir`.
pub fn write_pages(dir: &Path) -> Result<(), Failure> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::Failed(format!("cannot create {}: {e}", dir.display())))?;
    let mut cmd = Cli::command();
    cmd.build();
    write(&cmd, "strata-ctl", dir)
}

fn write(cmd: &clap::Command, name: &str, dir: &Path) -> Result<(), Failure> {
    // clap names are `&'static str` (without its `string` feature); these few pages are
    // the process's last act, so leaking their names costs nothing.
    let page_name: &'static str = Box::leak(name.to_owned().into_boxed_str());
    let page = cmd.clone().name(page_name);
    let mut text = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut text)
        .map_err(|e| Failure::Failed(format!("cannot render {name}.1: {e}")))?;
    text.extend_from_slice(EXIT_STATUS.as_bytes());
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, text)
        .map_err(|e| Failure::Failed(format!("cannot write {}: {e}", path.display())))?;
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        write(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(())
}
