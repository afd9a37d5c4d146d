//! Reading notes back through Strata fs, with the capability the supervisor routed to
//! notes (`[[service.capability]] name = "fs"`, whose `path_prefix` is the data
//! directory): `fs.list` for `notes.list`; `fs.open`, `fs.read` until end of file and
//! `fs.close` for `notes.get`.
//!
//! The token is taken from its file ([`Credential::token`]) for every operation, so a
//! rotation is followed without a restart. Each operation uses one connection of its own
//! (a slow fs costs that request, not every other). A refusal by fs of notes' own
//! capability is UNAVAILABLE to notes' caller, whose token is not at fault.

use crate::api::{NoteName, MAX_TEXT_LEN};
use crate::NotesError;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use strata_ipc::{Client, ClientError, Endpoint};
use strata_proto::methods::fs;
use strata_proto::ErrorCode;
use strata_service::Credential;

/// Deadline of each call to fs.
const FS_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes asked for in each `fs.read`: a whole note at most, plus one byte to tell a note
/// that is too large.
const READ_CHUNK: u64 = MAX_TEXT_LEN as u64 + 1;
/// Entries asked for in each `fs.list` page.
const LIST_PAGE: u64 = 1000;

/// notes' way to fs: its socket and the routed capability.
pub struct ThroughFs {
    socket: PathBuf,
    credential: Arc<Credential>,
}

impl ThroughFs {
    /// Reading through the fs at `socket` with `credential`.
    pub fn new(socket: PathBuf, credential: Arc<Credential>) -> ThroughFs {
        ThroughFs { socket, credential }
    }

    /// A client for one operation, with the current token.
    fn client(&self) -> Result<Client, NotesError> {
        let token = self.credential.token().map_err(|e| {
            tracing::warn!(error = %e, "cannot read the routed fs capability");
            NotesError::Fs("its routed fs capability cannot be read".into())
        })?;
        let endpoint = Endpoint::unix(&self.socket)
            .map_err(|_| NotesError::Fs("the fs socket path is unusable".into()))?;
        let mut client = Client::new(endpoint);
        client.set_timeout(FS_CALL_TIMEOUT);
        client.set_token(Some(token.as_str().to_owned()));
        Ok(client)
    }

    /// The text of the note `name`.
    pub async fn get(&self, name: &NoteName) -> Result<String, NotesError> {
        let mut client = self.client()?;
        let open = fs::OpenParams {
            path: name.as_str().to_owned(),
            mode: "r".into(),
        };
        let handle = client
            .call::<fs::Open>(&open)
            .await
            .map_err(|e| from_fs(e, Some(name)))?
            .handle;
        let read = read_all(&mut client, &handle, name).await;
        // Closed whatever the read gave; a failed close only costs fs a handle until
        // the capability expires or is revoked.
        if let Err(e) = client.call::<fs::Close>(&fs::CloseParams { handle }).await {
            tracing::warn!(error = %e, "fs.close failed");
        }
        let bytes = read?;
        String::from_utf8(bytes).map_err(|_| NotesError::Unservable {
            name: name.to_string(),
            reason: "it is not UTF-8",
        })
    }

    /// Every note's name, sorted (entries that are not notes skipped), at most `max`.
    pub async fn list(&self, max: usize) -> Result<Vec<NoteName>, NotesError> {
        let mut client = self.client()?;
        let mut names = Vec::new();
        let mut cursor = None;
        loop {
            let page = client
                .call::<fs::List>(&fs::ListParams {
                    path: ".".into(),
                    limit: Some(LIST_PAGE),
                    cursor: cursor.take(),
                })
                .await
                .map_err(|e| from_fs(e, None))?;
            names.extend(
                page.entries
                    .into_iter()
                    .filter(|e| !e.is_dir)
                    .filter_map(|e| NoteName::parse(&e.name).ok()),
            );
            if names.len() >= max {
                names.truncate(max);
                break;
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        names.sort();
        Ok(names)
    }
}

/// Read `handle` to its end, refusing more than [`MAX_TEXT_LEN`] bytes.
async fn read_all(
    client: &mut Client,
    handle: &str,
    name: &NoteName,
) -> Result<Vec<u8>, NotesError> {
    let mut bytes = Vec::new();
    loop {
        let r = client
            .call::<fs::Read>(&fs::ReadParams {
                handle: handle.to_owned(),
                offset: bytes.len() as u64,
                size: READ_CHUNK,
            })
            .await
            .map_err(|e| from_fs(e, Some(name)))?;
        let chunk = base64_simd::STANDARD
            .decode_to_vec(r.data_b64.as_bytes())
            .map_err(|_| NotesError::Fs("fs answered bytes that are not base64".into()))?;
        bytes.extend_from_slice(&chunk);
        if bytes.len() > MAX_TEXT_LEN {
            return Err(NotesError::Unservable {
                name: name.to_string(),
                reason: "it is larger than 64 KiB",
            });
        }
        if r.eof || chunk.is_empty() {
            return Ok(bytes);
        }
    }
}

/// What fs's answer means for notes' caller.
fn from_fs(e: ClientError, name: Option<&NoteName>) -> NotesError {
    match (e.code(), name) {
        (Some(ErrorCode::NotFound), Some(name)) => NotesError::NotFound(name.to_string()),
        (Some(code @ (ErrorCode::Unauthenticated | ErrorCode::PermissionDenied)), _) => {
            tracing::warn!(error = %e, "fs refused notes' routed capability");
            NotesError::Fs(format!(
                "fs refused its routed capability ({})",
                code.name()
            ))
        }
        _ => {
            tracing::warn!(error = %e, "fs call failed");
            NotesError::Fs(format!(
                "fs did not serve the request ({})",
                e.code().map_or("unreachable", ErrorCode::name)
            ))
        }
    }
}
