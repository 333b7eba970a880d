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
    // Every page names the version (clap gives it only to the top command).
    clap_mangen::generate_to(Cli::command().propagate_version(true), dir)
        .map_err(io("write man pages into", dir))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout;
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    /// A fresh folder for one test.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn one_man_page_per_subcommand_as_the_packages_list() {
        let dir = scratch("man");
        man_pages(&dir).unwrap();
        let got: BTreeSet<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let want: BTreeSet<String> = layout::man_pages()
            .iter()
            .map(|p| format!("{p}.1"))
            .collect();
        assert_eq!(got, want);
        assert!(want.contains("tickburst-top.1") && want.contains("tickburst-doctor.1"));
        let top = std::fs::read_to_string(dir.join("tickburst-top.1")).unwrap();
        let version = Cli::command().get_version().unwrap().to_string();
        let th = format!(".TH tickburst-top 1  \"top {version}\"");
        assert!(top.contains(&th), "{th} not in\n{top}");
        assert!(
            top.contains("interval"),
            "top's page lacks its --interval flag"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn completions_for_bash_zsh_fish_name_the_subcommands() {
        let dir = scratch("completions");
        completions(&dir).unwrap();
        for (file, _, _) in layout::COMPLETIONS {
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            for sub in ["run", "doctor", "top", "analyze"] {
                assert!(text.contains(sub), "{file} lacks `{sub}`");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
