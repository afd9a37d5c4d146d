//! Where a token comes from: the command line, `$STRATA_TOKEN`, a file, or stdin (`-`).
//!
//! A token is a bearer credential and the command line shows in `ps`, so a file or stdin
//! is the better way. A token file others may read is refused (it would hand the token
//! to every user of the machine); one the file's group may read is used with a warning
//! (a deliberate share with that group).

use crate::failure::Failure;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Longest token accepted from a file or stdin (tokens are well under 1 KiB).
pub const MAX_TOKEN_BYTES: u64 = 64 * 1024;

/// Reads stdin at most once: two arguments that both say `-` get one token.
#[derive(Default)]
pub struct Stdin {
    taken: bool,
}

impl Stdin {
    /// The token piped to stdin.
    pub fn token(&mut self) -> Result<String, Failure> {
        if self.taken {
            return Err(Failure::Usage(
                "stdin gives only one token: pass the other with --token-file FILE".into(),
            ));
        }
        self.taken = true;
        read_bounded(std::io::stdin().lock(), "stdin")
    }
}

/// The token in `file`, `-` meaning stdin. Refused when others may read or write it.
pub fn from_file(file: &Path, stdin: &mut Stdin) -> Result<String, Failure> {
    if file == Path::new("-") {
        return stdin.token();
    }
    let cannot = |e: std::io::Error| Failure::Usage(format!("cannot read {}: {e}", file.display()));
    let handle = std::fs::File::open(file).map_err(cannot)?;
    // Checked on the open file, so it is the file that is read.
    let mode = handle.metadata().map_err(cannot)?.permissions().mode();
    check_mode(file, mode)?;
    read_bounded(handle, &file.display().to_string())
}

/// Refuse a token file others may read or write, or its group may write; warn when
/// its group may read it.
pub fn check_mode(file: &Path, mode: u32) -> Result<(), Failure> {
    if mode & 0o007 != 0 || mode & 0o020 != 0 {
        return Err(Failure::Usage(format!(
            "refusing the token file {}: its mode {:04o} lets other users {} it (chmod 600 {0})",
            file.display(),
            mode & 0o7777,
            if mode & 0o004 != 0 { "read" } else { "change" },
        )));
    }
    if mode & 0o040 != 0 {
        let _ = writeln!(
            std::io::stderr(),
            "strata-ctl: warning: the token file {} is readable by its group (mode {:04o})",
            file.display(),
            mode & 0o7777
        );
    }
    Ok(())
}

fn read_bounded(source: impl Read, what: &str) -> Result<String, Failure> {
    let mut bytes = Vec::new();
    source
        .take(MAX_TOKEN_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::Usage(format!("cannot read a token from {what}: {e}")))?;
    if bytes.len() as u64 > MAX_TOKEN_BYTES {
        return Err(Failure::Usage(format!(
            "{what} holds more than {MAX_TOKEN_BYTES} bytes: not a token"
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| Failure::Usage(format!("{what} does not hold a token (not UTF-8)")))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(Failure::Usage(format!("{what} holds no token")));
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_open_to_others_are_refused() {
        let f = Path::new("/t");
        assert!(check_mode(f, 0o100600).is_ok());
        assert!(check_mode(f, 0o100400).is_ok());
        assert!(check_mode(f, 0o100640).is_ok(), "group-readable: warned");
        for bad in [0o100644, 0o100604, 0o100602, 0o100660, 0o100666] {
            let e = check_mode(f, bad).unwrap_err();
            assert_eq!(e.exit_code(), crate::failure::EXIT_USAGE, "{bad:o}");
        }
    }

    #[test]
    fn tokens_are_trimmed_and_bounded() {
        assert_eq!(
            read_bounded(&b"v2.public.x\n"[..], "t").unwrap(),
            "v2.public.x"
        );
        assert!(read_bounded(&b"  \n"[..], "t").is_err());
        let longest = vec![b'a'; MAX_TOKEN_BYTES as usize];
        assert_eq!(
            read_bounded(&longest[..], "t").unwrap().len(),
            MAX_TOKEN_BYTES as usize
        );
        let huge = vec![b'a'; MAX_TOKEN_BYTES as usize + 1];
        assert!(read_bounded(&huge[..], "t").is_err());
    }
}
