//! The public error type, grouped by what the caller can do about it, and the exit codes.

use std::fmt::Display;
use std::path::PathBuf;

/// The error underneath an [`Error`] (an object store's, DataFusion's, Parquet's, the OS's),
/// kept so a caller can match on it (`source()` and `downcast_ref`).
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Any error that can become a [`Cause`].
pub trait AnyError: std::error::Error + Send + Sync + 'static {}
impl<E: std::error::Error + Send + Sync + 'static> AnyError for E {}

/// The message of an error caused by `cause` (after `context`, if any) and the cause kept.
fn said(context: Option<&dyn Display>, cause: impl AnyError) -> (String, Option<Cause>) {
    let message = match context {
        Some(context) => format!("{context}: {cause}"),
        None => cause.to_string(),
    };
    (message, Some(Box::new(cause)))
}

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
///
/// `Display` is the whole story, one line: an error with a cause says it after its context
/// (`snapshots/x.parquet: Object at location … not found`), so print the error, not its
/// chain. The cause is also kept as `source()` for callers that act on its kind; its own text
/// has not been scrubbed of secrets (only what reaches stdout, stderr and the lake is).
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

    /// Reading or writing the lake or the state failed.
    #[error("storage: {message}")]
    Storage {
        message: String,
        #[source]
        source: Option<Cause>,
    },

    /// Running a query failed after it planned (corrupt Parquet, resources, ...).
    #[error("query: {message}")]
    Query {
        message: String,
        #[source]
        source: Option<Cause>,
    },

    /// The partner refused a request permanently (HTTP 400 or 401).
    #[error("partner rejected {what} with HTTP {status}: {message}")]
    PartnerRejected {
        what: String,
        status: u16,
        message: String,
    },

    /// Delivery failed: retries exhausted, timeouts, connection errors. Its causes are the
    /// partner's answers over many attempts (status, headers, body), said in words; there is
    /// no single error underneath to keep.
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
        signal_name(*signal)
    )]
    Interrupted { signal: i32 },
}

/// How messages name a signal (`signals` catches SIGINT = 2 and SIGTERM = 15).
pub fn signal_name(signal: i32) -> &'static str {
    match signal {
        2 => "SIGINT",
        15 => "SIGTERM",
        _ => "a signal",
    }
}

impl Error {
    pub fn config(file: impl Into<Option<PathBuf>>, message: impl Into<String>) -> Self {
        Error::Config {
            file: file.into(),
            message: message.into(),
        }
    }

    /// A storage failure we detected ourselves (no underlying error).
    pub fn storage(message: impl Into<String>) -> Self {
        Error::Storage {
            message: message.into(),
            source: None,
        }
    }

    /// A storage failure caused by `cause`, said as `context: cause`.
    pub fn storage_at(context: impl Display, cause: impl AnyError) -> Self {
        let (message, source) = said(Some(&context), cause);
        Error::Storage { message, source }
    }

    /// A storage failure that is `cause` itself (its text is the message).
    pub fn storage_of(cause: impl AnyError) -> Self {
        let (message, source) = said(None, cause);
        Error::Storage { message, source }
    }

    /// A query failure we detected ourselves.
    pub fn query(message: impl Into<String>) -> Self {
        Error::Query {
            message: message.into(),
            source: None,
        }
    }

    /// A query failure caused by `cause`, said as `context: cause`.
    pub fn query_at(context: impl Display, cause: impl AnyError) -> Self {
        let (message, source) = said(Some(&context), cause);
        Error::Query { message, source }
    }

    /// A query failure that is `cause` itself.
    pub fn query_of(cause: impl AnyError) -> Self {
        let (message, source) = said(None, cause);
        Error::Query { message, source }
    }

    /// The underlying error of kind `E`, if this error has one (anywhere in its chain).
    pub fn cause<E: std::error::Error + 'static>(&self) -> Option<&E> {
        let mut next = std::error::Error::source(self);
        while let Some(e) = next {
            if let Some(found) = e.downcast_ref::<E>() {
                return Some(found);
            }
            next = e.source();
        }
        None
    }

    /// The documented exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config { .. } | Error::Sql { .. } => exit::USAGE,
            Error::PartnerRejected { .. } => exit::PARTNER_REJECTED,
            Error::Locked(_) => exit::LOCKED,
            Error::Interrupted { signal } => exit::SIGNALLED + signal,
            Error::Storage { .. }
            | Error::Query { .. }
            | Error::Delivery(_)
            | Error::Internal(_) => exit::FAILURE,
        }
    }
}

impl From<object_store::Error> for Error {
    fn from(e: object_store::Error) -> Self {
        Error::Storage {
            message: crate::redact::scrubbed(e.to_string()),
            source: Some(Box::new(e)),
        }
    }
}

impl From<parquet::errors::ParquetError> for Error {
    fn from(e: parquet::errors::ParquetError) -> Self {
        Error::storage_of(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_is_said_once_and_kept_as_the_source() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let e = Error::storage_at("state/plan.json", io);
        assert_eq!(e.to_string(), "storage: state/plan.json: denied");
        let kept = e
            .cause::<std::io::Error>()
            .expect("the io error is the source");
        assert_eq!(kept.kind(), std::io::ErrorKind::PermissionDenied);
        assert!(std::error::Error::source(&e).is_some());

        let store = object_store::Error::NotFound {
            path: "x".into(),
            source: "gone".into(),
        };
        let e = Error::from(store);
        assert!(matches!(
            e.cause::<object_store::Error>(),
            Some(object_store::Error::NotFound { .. })
        ));
        assert_eq!(e.exit_code(), exit::FAILURE);

        let ours = Error::query("the query returned no batches");
        assert_eq!(ours.to_string(), "query: the query returned no batches");
        assert!(std::error::Error::source(&ours).is_none());
        assert!(ours.cause::<std::io::Error>().is_none());
    }
}
