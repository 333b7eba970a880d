//! The docs name only subcommands and flags that tickburst has.
//!
//! Reads README.md, GUIDE.md and every `docs/*.md` of the repository and
//! checks each place that names a tickburst subcommand or a `--flag` of
//! tickburst against the CLI itself: the set of subcommands and of each
//! subcommand's long flags is built from clap ([`clap::CommandFactory`] on
//! the parser type), never written down here. No VM is started.
//!
//! # What counts as tickburst's (the rule)
//!
//! Only text in code counts: fenced or indented code blocks and inline code
//! spans (`` `...` ``). Prose is never parsed. In code:
//!
//! 1. **A tickburst command line** starts at the token `tickburst` (a whole
//!    token, or a path ending in `/tickburst`) where a command starts: first
//!    in the line or span, or after `$`, `sudo`, `time`, `env`, a
//!    `VAR=value`, `git bisect run`, or a shell separator (so `tickburst`
//!    in prose or in program output, "as tickburst needs", is not one, nor
//!    the crate in `cargo test -p tickburst`); or at the `--` of a line that
//!    runs `cargo run` (the program's arguments follow it). The next token,
//!    if it is a word, must be a subcommand; if it is a `--flag`, a
//!    top-level flag (`--help`, `--version`). The `--flags` after the
//!    subcommand, up to a shell separator (`|`, `;`, `&&`, `>`, `#`, ...),
//!    must be that subcommand's. A token after `tickburst` that is not a
//!    word (a number, in `top`'s output table) means this is no command
//!    line.
//! 2. **An inline span that starts with a subcommand name and a `--flag`**
//!    (`` `watch --duration` ``, `` `run --pause 2s` ``) is a tickburst
//!    command line without its program name.
//! 3. **An inline span that starts with `--`** (`` `--pause-method` ``) is a
//!    tickburst flag: some subcommand must have it.
//!
//! Other tools' flags are therefore always written with their tool in the
//! same span or line (`cargo test --test readme`,
//! `tests/intel-hv/run --kvm-src DIR`, `git bisect run ...`), never as a
//! bare `--flag` span and never after a bare `run`.

use clap::CommandFactory;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use tickburst::cli::args::Cli;

/// The CLI as clap knows it: subcommand name -> its long flags.
struct Known {
    top_level: BTreeSet<String>,
    subcommands: BTreeMap<String, BTreeSet<String>>,
}

impl Known {
    fn from_clap() -> Known {
        let cmd = Cli::command();
        let longs = |c: &clap::Command| -> BTreeSet<String> {
            let mut set: BTreeSet<String> = c
                .get_arguments()
                .filter_map(|a| a.get_long().map(str::to_string))
                .collect();
            // clap adds these itself at build time.
            set.insert("help".into());
            set
        };
        let mut top_level = longs(&cmd);
        top_level.insert("version".into());
        let subcommands = cmd
            .get_subcommands()
            .map(|s| (s.get_name().to_string(), longs(s)))
            .collect();
        Known {
            top_level,
            subcommands,
        }
    }

    fn any_flag(&self, flag: &str) -> bool {
        self.top_level.contains(flag) || self.subcommands.values().any(|f| f.contains(flag))
    }
}

/// A shell token that ends a command line.
fn is_separator(tok: &str) -> bool {
    matches!(
        tok,
        "|" | "||" | "&&" | ";" | "&" | ">" | ">>" | "<" | "2>" | "2>&1" | ")"
    ) || tok.starts_with('#')
        || tok.starts_with('>')
        || tok.starts_with("2>")
}

/// `--name` of a token such as `--json=FILE`, `[--max-host-ratio` or
/// `--plot]`; `None` for anything that is not a long flag.
fn long_flag(tok: &str) -> Option<&str> {
    let t = tok.trim_start_matches(['[', '(', '`']);
    let name = t.strip_prefix("--")?;
    let name = name.split('=').next().unwrap_or("");
    let name = name.trim_end_matches([']', ')', ',', '.', ':', ';', '`']);
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .then_some(name)
}

fn is_word(tok: &str) -> bool {
    let mut chars = tok.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c == '-')
}

/// Checks the tokens after a program name (`args[0]` is the subcommand or
/// a top-level flag); pushes one line per unknown name to `errors`.
fn check_args(known: &Known, args: &[&str], whence: &str, errors: &mut Vec<String>) -> bool {
    let Some(first) = args.first() else {
        return false;
    };
    if let Some(flag) = long_flag(first) {
        if !known.top_level.contains(flag) {
            errors.push(format!(
                "{whence}: `tickburst --{flag}`: tickburst has no such top-level flag"
            ));
        }
        return true;
    }
    if !is_word(first) {
        return false; // not a command line (e.g. a name column in output)
    }
    let Some(flags) = known.subcommands.get(*first) else {
        errors.push(format!(
            "{whence}: `tickburst {first}`: tickburst has no such subcommand"
        ));
        return true;
    };
    for tok in &args[1..] {
        if is_separator(tok) {
            break;
        }
        if let Some(flag) = long_flag(tok) {
            if !flags.contains(flag) {
                errors.push(format!(
                    "{whence}: `tickburst {first} --{flag}`: {first} has no such flag"
                ));
            }
        }
    }
    true
}

/// Checks one line of code (a code block's line or an inline span).
/// Returns how many tickburst command lines it held.
fn check_code(
    known: &Known,
    code: &str,
    inline: bool,
    whence: &str,
    errors: &mut Vec<String>,
) -> usize {
    let toks: Vec<&str> = code.split_whitespace().collect();
    let mut found = 0;
    // Rule 1: `tickburst ...` and `cargo run ... -- ...`.
    let cargo_run = code.contains("cargo run");
    let mut dashdash_seen = false;
    for (i, tok) in toks.iter().enumerate() {
        let prev = i.checked_sub(1).map(|p| toks[p]);
        let program = (*tok == "tickburst" || tok.ends_with("/tickburst"))
            && prev.is_none_or(|p| {
                matches!(p, "$" | "sudo" | "time" | "env" | "(")
                    || is_separator(p)
                    || (p.contains('=') && !p.starts_with('-'))
                    || (p == "run" && i >= 3 && toks[i - 3..i - 1] == ["git", "bisect"])
            });
        let cargo_args = cargo_run && *tok == "--" && !dashdash_seen;
        if cargo_args {
            dashdash_seen = true;
        }
        if (program || cargo_args) && check_args(known, &toks[i + 1..], whence, errors) {
            found += 1;
        }
    }
    if !inline || found > 0 {
        return found;
    }
    // Rule 2: a span `SUBCOMMAND --flag ...`.
    if let (Some(first), Some(second)) = (toks.first(), toks.get(1)) {
        if known.subcommands.contains_key(*first) && long_flag(second).is_some() {
            check_args(known, &toks, whence, errors);
            return 1;
        }
    }
    // Rule 3: a span that starts with `--`.
    if let Some(flag) = toks
        .first()
        .and_then(|t| t.starts_with("--").then(|| long_flag(t)))
    {
        match flag {
            Some(flag) if known.any_flag(flag) => {}
            Some(flag) => errors.push(format!(
                "{whence}: `--{flag}`: no tickburst subcommand has this flag \
                 (another tool's flag goes with its tool's name in the span)"
            )),
            None => {}
        }
        return 1;
    }
    0
}

/// Checks a Markdown text; returns the number of tickburst names checked.
/// An inline span may run over a line break inside a paragraph (Markdown
/// joins the lines with a space); a blank line or a code block ends it.
fn check_markdown(known: &Known, name: &str, text: &str, errors: &mut Vec<String>) -> usize {
    let mut found = 0;
    let mut fenced = false;
    let mut prev_blank = true;
    let mut in_indented = false;
    // The open inline span and the line it started on.
    let mut span: Option<(String, usize)> = None;
    for (n, line) in text.lines().enumerate() {
        let whence = format!("{name}:{}", n + 1);
        let trimmed = line.trim_start();
        let blank = line.trim().is_empty();
        if trimmed.starts_with("```") {
            fenced = !fenced;
            span = None;
            continue;
        }
        let indented = line.starts_with("    ") && span.is_none() && (prev_blank || in_indented);
        in_indented = indented || (in_indented && blank);
        prev_blank = blank;
        if fenced || indented {
            found += check_code(known, line, false, &whence, errors);
            continue;
        }
        if blank {
            span = None;
            continue;
        }
        for c in line.chars() {
            match (&mut span, c) {
                (Some((text, start)), '`') => {
                    let at = format!("{name}:{}", *start + 1);
                    found += check_code(known, text, true, &at, errors);
                    span = None;
                }
                (Some((text, _)), c) => text.push(c),
                (None, '`') => span = Some((String::new(), n)),
                (None, _) => {}
            }
        }
        if let Some((text, _)) = &mut span {
            text.push(' ');
        }
    }
    found
}

/// README.md, GUIDE.md and docs/*.md of the repository.
fn doc_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = vec![root.join("README.md"), root.join("GUIDE.md")];
    if let Ok(dir) = std::fs::read_dir(root.join("docs")) {
        let mut docs: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "md"))
            .collect();
        docs.sort();
        files.extend(docs);
    }
    files
}

#[test]
fn docs_name_only_real_subcommands_and_flags() {
    let known = Known::from_clap();
    let mut errors = Vec::new();
    let mut found = 0;
    for path in doc_files() {
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let n = check_markdown(&known, &name, &text, &mut errors);
        assert!(
            n > 0 || name != "README.md",
            "README.md names no tickburst command"
        );
        found += n;
    }
    assert!(
        errors.is_empty(),
        "the docs name what the CLI does not have:\n{}",
        errors.join("\n")
    );
    eprintln!("{found} tickburst subcommands and flags named in the docs, all real");
    // The docs show many command lines; far fewer means the parser broke.
    assert!(
        found >= 30,
        "only {found} tickburst names found in the docs"
    );
}

#[test]
fn made_up_names_are_caught_and_other_tools_are_not() {
    let known = Known::from_clap();
    let bad = [
        "    tickburst run --no-such-flag 1",
        "Use `tickburst frobnicate` to ...",
        "    cargo run --release -p tickburst -- run --pauses 1s",
        "`watch --pause 1s`",
        "`--made-up-flag`",
        "    git bisect run tickburst check --nope",
        "    $ sudo tickburst top --bogus",
        "`tickburst --verbose`",
        "a span over a line break: `tickburst run\n--pause 1s --bogus 2`, read whole",
    ];
    for text in bad {
        let mut errors = Vec::new();
        check_markdown(&known, "t.md", text, &mut errors);
        assert_eq!(errors.len(), 1, "{text:?} gave {errors:?}");
    }
    let good = [
        "    tickburst run --period 1ms --pause 2s --json run.json",
        "    cargo run --release -p tickburst -- check --format ktap",
        "    cargo test -p tickburst --test readme",
        "    sudo tests/intel-hv/run --kernel debian:5.10.223-1 --find-fix",
        "`tests/intel-hv/run --kvm-src DIR`",
        "    tickburst analyze run.json [--max-host-ratio 1.2] [--plot run.svg]",
        "    tickburst top --json top.ndjson | jq . # --not-a-flag after a comment",
        "       1.000    26655 tickburst           0       n/a     991.9",
        "`--pause-method`, `sweep --pauses 1s,2s`, `tickburst --version`",
        "a `tickburst-<pid>` cgroup",
        "    ok  in-kernel irqchip   yes  -- the LAPIC is emulated by KVM, as tickburst needs",
        "    TICKBURST_DAYS_SECS=10,60 cargo bench -p tickburst --bench days",
    ];
    for text in good {
        let mut errors = Vec::new();
        check_markdown(&known, "t.md", text, &mut errors);
        assert!(errors.is_empty(), "{text:?} gave {errors:?}");
    }
    // The subcommands come from clap, not from a list here.
    assert!(known.subcommands.contains_key("top"));
    assert!(known.subcommands["run"].contains("pause-method"));
    assert!(!known.subcommands["watch"].contains("pause"));
}
