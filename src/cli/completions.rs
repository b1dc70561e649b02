//! `completions SHELL`: a shell completion script for the command line `main` defines.

use clap::Args;

use crate::error::Result;

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// Prints the script completing `cli` (the command line's definition) in the asked shell.
pub fn run(a: CompletionsArgs, mut cli: clap::Command) -> Result<i32> {
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cli, "cohort-bridge", &mut script);
    super::print_all(&script)
}
