//! `man`: the man page (roff) of the command line `main` defines.

use crate::error::{Error, Result};

/// Prints the man page of `cli` (the command line's definition).
pub fn run(cli: clap::Command) -> Result<i32> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cli)
        .render(&mut page)
        .map_err(|e| Error::Internal(format!("man page: {e}")))
        .and_then(|_| super::print_all(&page))
}
