//! The public error type, grouped by what the caller can do about it, and the exit codes.

use std::path::PathBuf;

/// Process exit codes, documented in the README. `main` maps every `Error` to one of these.
pub mod exit {
    /// Everything was delivered.
    pub const OK: i32 = 0;
    /// The run failed (storage, query execution, retries exhausted); nothing more to say.
    pub const FAILURE: i32 = 1;
    /// Usage or configuration error: bad flags, project file, cohort SQL or a missing secret.
    pub const USAGE: i32 = 2;
    /// Reserved: committed, but some ids were dead-lettered or some input quarantined.
    pub const PARTIAL: i32 = 3;
    /// The partner refused the request permanently (400 or 401): retrying will not help.
    pub const PARTNER_REJECTED: i32 = 4;
    /// Another run holds this cohort's lock; nothing was done.
    pub const LOCKED: i32 = 5;
    /// Stopped by a signal (128 + its number: 130 for SIGINT, 143 for SIGTERM): what was
    /// acknowledged is journaled, the lock released; the next run resumes.
    pub const SIGNALLED: i32 = 128;
}

/// Everything that can stop a command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The project file or the command line is wrong. `file` is the project file when known.
    #[error("{}{message}", file.as_ref().map(|f| format!("{}: ", f.display())).unwrap_or_default())]
    Config {
        file: Option<PathBuf>,
        message: String,
    },

    /// A cohort or analysis SQL file cannot be planned (parse error, unknown column, refused
    /// statement, wrong result shape). `location` is `file:line:column` or `file`.
    #[error("{location}: {message}")]
    Sql { location: String, message: String },

    /// Reading or writing the lake failed.
    #[error("storage: {0}")]
    Storage(String),

    /// Running a query failed after it planned (corrupt Parquet, resources, ...).
    #[error("query: {0}")]
    Query(String),

    /// The partner refused a request permanently (HTTP 400 or 401).
    #[error("partner rejected {what} with HTTP {status}: {message}")]
    PartnerRejected {
        what: String,
        status: u16,
        message: String,
    },

    /// Delivery failed: retries exhausted, timeouts, connection errors.
    #[error("delivery: {0}")]
    Delivery(String),

    /// Another run holds the cohort's lock (or took it over from this one).
    #[error("locked: {0}")]
    Locked(String),

    /// A bug or an unexpected state.
    #[error("internal: {0}")]
    Internal(String),

    /// SIGTERM or SIGINT stopped the run cleanly (exit 128 + `signal`).
    #[error(
        "interrupted by {}: no new batches were started, the answers in flight are journaled \
         and the lock released; the next sync resumes where this one stopped",
        crate::signals::name(*signal)
    )]
    Interrupted { signal: i32 },
}

impl Error {
    pub fn config(file: impl Into<Option<PathBuf>>, message: impl Into<String>) -> Self {
        Error::Config {
            file: file.into(),
            message: message.into(),
        }
    }

    /// The documented exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config { .. } | Error::Sql { .. } => exit::USAGE,
            Error::PartnerRejected { .. } => exit::PARTNER_REJECTED,
            Error::Locked(_) => exit::LOCKED,
            Error::Interrupted { signal } => exit::SIGNALLED + signal,
            Error::Storage(_) | Error::Query(_) | Error::Delivery(_) | Error::Internal(_) => {
                exit::FAILURE
            }
        }
    }
}

impl From<object_store::Error> for Error {
    fn from(e: object_store::Error) -> Self {
        Error::Storage(crate::redact::scrubbed(e.to_string()))
    }
}

impl From<parquet::errors::ParquetError> for Error {
    fn from(e: parquet::errors::ParquetError) -> Self {
        Error::Storage(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
