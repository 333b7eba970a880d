//! Man pages (clap_mangen, one per subcommand) and shell completions
//! (clap_complete: bash, zsh, fish), generated from the CLI's parser.

use crate::error::{io, Result};
use clap::CommandFactory;
use clap_complete::Shell;
use std::path::Path;
use tickburst::cli::args::Cli;

/// Writes `tickburst.1` and `tickburst-SUB.1` into `dir`.
pub fn man_pages(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    clap_mangen::generate_to(Cli::command(), dir).map_err(io("write man pages into", dir))
}

/// Writes the bash, zsh and fish completions into `dir`.
pub fn completions(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut Cli::command(), "tickburst", dir)
            .map_err(io("write completions into", dir))?;
    }
    Ok(())
}
