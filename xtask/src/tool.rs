//! Running external tools (cargo, dpkg-deb, rpmbuild, debootstrap, mount,
//! chroot...): a failure carries the tool's own words.

use crate::error::{Error, Result};
use std::process::{Command, Stdio};

/// The command line of `cmd` as one string, for messages.
pub fn shown(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` with its output captured; returns stdout, or the tool's own
/// words (stderr, else stdout) when it cannot start or exits non-zero.
pub fn output(cmd: &mut Command) -> Result<String> {
    let line = shown(cmd);
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| Error::Tool {
        tool: line.clone(),
        status: "did not start".into(),
        words: e.to_string(),
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let words = if stderr.trim().is_empty() {
            stdout.trim().to_string()
        } else {
            format!("{}\n{}", stdout.trim(), stderr.trim())
                .trim()
                .to_string()
        };
        return Err(Error::Tool {
            tool: line,
            status: out.status.to_string(),
            words,
        });
    }
    Ok(stdout)
}

/// Runs `cmd` with its output on the terminal (long builds show progress);
/// a failure names the tool (its words are already on the terminal).
pub fn status(cmd: &mut Command) -> Result<()> {
    let line = shown(cmd);
    eprintln!("+ {line}");
    let st = cmd.stdin(Stdio::null()).status().map_err(|e| Error::Tool {
        tool: line.clone(),
        status: "did not start".into(),
        words: e.to_string(),
    })?;
    if !st.success() {
        return Err(Error::Tool {
            tool: line,
            status: st.to_string(),
            words: "(its output is above)".into(),
        });
    }
    Ok(())
}
