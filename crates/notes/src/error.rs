//! notes' one error type and its one mapping to protocol errors.

use strata_proto::{ErrorBody, ErrorCode};

/// Why a notes method failed.
#[derive(Debug, thiserror::Error)]
pub enum NotesError {
    /// `notes.get` of a name with no note.
    #[error("no note named {0}")]
    NotFound(String),
    /// `notes.put` of a new note when the store holds its maximum.
    #[error("the store holds its maximum of {0} notes: replace or remove one")]
    Full(usize),
    /// `notes.put` of a new note when the caller (the token's `sub`) created its most.
    #[error("you created this service's most notes per caller ({0}): replace one of yours")]
    CallerFull(usize),
    /// A note on disk that is not what notes writes (too large, not UTF-8): an operator
    /// put it there.
    #[error("note {name} cannot be served: {reason}")]
    Unservable {
        /// The note.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Writing to the data directory failed (logged with the cause; the caller gets none).
    #[error("the note could not be written")]
    Write,
    /// notes could not read through fs: fs unreachable, notes' own fs capability
    /// missing, refused or revoked (the caller's token is not at fault).
    #[error("notes cannot read through fs: {0}")]
    Fs(String),
}

impl From<NotesError> for ErrorBody {
    fn from(e: NotesError) -> ErrorBody {
        let code = match &e {
            NotesError::NotFound(_) => ErrorCode::NotFound,
            NotesError::Full(_) | NotesError::CallerFull(_) => ErrorCode::ResourceExhausted,
            NotesError::Unservable { .. } | NotesError::Write => ErrorCode::Internal,
            NotesError::Fs(_) => ErrorCode::Unavailable,
        };
        ErrorBody::new(code, e.to_string())
    }
}
