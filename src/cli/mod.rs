//! The commands of the `cohort-bridge` command line, one file per command: each takes its parsed
//! flags, calls the library and is the only code that writes to stdout (the library returns
//! values; logs and progress go to stderr). `main.rs` holds the clap definition and the
//! dispatch, and maps a command's `Result` to its exit code.

pub mod args;
pub mod check;
#[cfg(feature = "ballista")]
pub mod cluster;
pub mod completions;
pub mod demo;
pub mod emulator;
pub mod export_engagement;
pub mod generate;
pub mod http_floor;
pub mod ingest;
pub mod init;
pub mod man;
pub mod query;
pub mod report;
pub mod runs;
pub mod state;
pub mod sync;

use crate::error::{Error, Result, exit};

/// Writes generated text to stdout; a reader that stops early (`| head`) is not an error.
pub(crate) fn print_all(bytes: &[u8]) -> Result<i32> {
    use std::io::Write;
    match std::io::stdout().write_all(bytes) {
        Ok(()) => Ok(exit::OK),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(exit::OK),
        Err(e) => Err(Error::Internal(format!("stdout: {e}"))),
    }
}
