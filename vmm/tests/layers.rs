//! The VMM's layers, checked from its sources: imports go one way only.
//!
//! Every file of `src/` is a module (`session/run.rs` is `session::run`)
//! in the layer of its top folder, lowest first:
//!
//! `arch` < `vstate` < `host` < `pause` < `session` < `output` < `cli`
//!
//! (The tests' helpers are in the dev-only `testkit` crate, not here.) Every
//! `crate::<path>` in code (in `use` lines and inline, comments left out) is
//! an edge to the module it names; a module may name its own layer or a
//! lower one, and the modules must use each other without a cycle. The
//! analysis crate and the guest ABI are below every layer (they are other
//! crates, named by their own names). `mod.rs` files only declare modules,
//! `main.rs` only calls the CLI. Files are split by concept (a struct and its
//! `impl` in one file), not by a line count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first.
const LAYERS: &[&str] = &[
    "arch", "vstate", "host", "pause", "session", "output", "cli",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The module a file is (`session/run.rs` -> `session::run`, `pause/mod.rs`
/// -> `pause`); `None` for the crate roots.
fn module_of(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src()).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts == ["lib"] || parts == ["main"] {
        return None;
    }
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    Some(parts.join("::"))
}

/// The layer of a module: its top folder.
fn layer_of(module: &str) -> Option<usize> {
    let top = module.split("::").next().unwrap_or("");
    LAYERS.iter().position(|l| *l == top)
}

/// The code of a file, comments left out (line comments and doc comments).
fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(|l| l.split("//").next().unwrap_or(""))
}

/// Every path named as `crate::...` in `text`, as segments; a group
/// (`crate::pause::{kick, protocol}`) gives one path per item.
fn crate_paths(text: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for code in code_lines(text) {
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            // `tickburst_analysis::...` and the like are other crates.
            let before = rest[..i].chars().last();
            rest = &rest[i + "crate::".len()..];
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let mut prefix = Vec::new();
            loop {
                if let Some(group) = rest.strip_prefix('{') {
                    let group = group.split('}').next().unwrap_or("");
                    for item in group.split(',') {
                        let first = ident(item.trim());
                        if !first.is_empty() {
                            let mut p = prefix.clone();
                            p.push(first);
                            paths.push(p);
                        }
                    }
                    break;
                }
                let seg = ident(rest);
                if seg.is_empty() {
                    if !prefix.is_empty() {
                        paths.push(prefix);
                    }
                    break;
                }
                rest = &rest[seg.len()..];
                prefix.push(seg);
                match rest.strip_prefix("::") {
                    Some(r) => rest = r,
                    None => {
                        paths.push(prefix);
                        break;
                    }
                }
            }
        }
    }
    paths
}

/// The longest module that `path` starts with.
fn resolve(path: &[String], modules: &BTreeSet<String>) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|m| modules.contains(m))
}

struct Crate {
    /// Module -> the modules it names.
    graph: BTreeMap<String, BTreeSet<String>>,
    /// Module -> its file.
    files: BTreeMap<String, PathBuf>,
}

fn read_crate() -> Crate {
    let all = files(&src());
    let mut files_of = BTreeMap::new();
    for f in &all {
        if let Some(m) = module_of(f) {
            files_of.insert(m, f.clone());
        }
    }
    let modules: BTreeSet<String> = files_of.keys().cloned().collect();
    let mut graph = BTreeMap::new();
    for (m, f) in &files_of {
        let text = std::fs::read_to_string(f).unwrap();
        let mut uses = BTreeSet::new();
        for path in crate_paths(&text) {
            let target = resolve(&path, &modules)
                .unwrap_or_else(|| panic!("{m} names crate::{}, not a module", path.join("::")));
            if &target != m {
                uses.insert(target);
            }
        }
        graph.insert(m.clone(), uses);
    }
    Crate {
        graph,
        files: files_of,
    }
}

#[test]
fn the_path_parser_sees_every_kind_of_use() {
    let paths = crate_paths(
        "use crate::pause::{kick, protocol::request_pause};\n\
         let x = crate::host::clock::monotonic_ns(); // crate::cli::nothing\n\
         use tickburst_analysis::names; /// [`crate::output`]\n\
         use crate::arch::layout;\n",
    );
    let joined: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        joined,
        [
            "pause::kick",
            "pause::protocol",
            "host::clock::monotonic_ns",
            "arch::layout"
        ]
    );
}

#[test]
fn every_module_is_in_a_layer_and_mod_files_only_declare() {
    let c = read_crate();
    assert!(c.graph.len() >= 40, "found only {:?}", c.graph.keys());
    for (m, f) in &c.files {
        assert!(layer_of(m).is_some(), "{m} is in no layer ({LAYERS:?})");
        if f.ends_with("mod.rs") {
            let text = std::fs::read_to_string(f).unwrap();
            for line in code_lines(&text).map(str::trim).filter(|l| !l.is_empty()) {
                assert!(
                    line.starts_with("pub mod ") || line.starts_with("mod "),
                    "{}: a mod.rs only declares modules, found `{line}`",
                    f.display()
                );
            }
        }
    }
}

#[test]
fn imports_go_down_the_layers_only() {
    let c = read_crate();
    let mut layer_graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut upward = Vec::new();
    for (m, uses) in &c.graph {
        let from = layer_of(m).unwrap();
        layer_graph.entry(LAYERS[from]).or_default();
        for u in uses {
            let to = layer_of(u).unwrap();
            if to > from {
                upward.push(format!("{m} ({}) uses {u} ({})", LAYERS[from], LAYERS[to]));
            } else if to < from {
                layer_graph
                    .entry(LAYERS[from])
                    .or_default()
                    .insert(LAYERS[to]);
            }
        }
    }
    println!("layer imports (lowest first):");
    for l in LAYERS {
        let files = c
            .graph
            .keys()
            .filter(|m| layer_of(m) == layer_of(l))
            .count();
        let uses: Vec<&str> = layer_graph
            .get(l)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        println!("  {l:<8} ({files:>2} files) -> {}", uses.join(", "));
    }
    assert!(
        upward.is_empty(),
        "imports up the layers:\n{}",
        upward.join("\n")
    );
}

#[test]
fn modules_use_each_other_without_cycles() {
    let c = read_crate();
    // Kahn: repeatedly take the modules whose uses are all taken.
    let mut done: BTreeSet<&str> = BTreeSet::new();
    loop {
        let ready: Vec<&str> = c
            .graph
            .iter()
            .filter(|(m, uses)| {
                !done.contains(m.as_str()) && uses.iter().all(|u| done.contains(u.as_str()))
            })
            .map(|(m, _)| m.as_str())
            .collect();
        if ready.is_empty() {
            break;
        }
        done.extend(ready);
    }
    let left: BTreeMap<&String, &BTreeSet<String>> = c
        .graph
        .iter()
        .filter(|(m, _)| !done.contains(m.as_str()))
        .collect();
    assert!(
        left.is_empty(),
        "module cycle among (module: uses) {left:#?}"
    );
}

#[test]
fn main_only_calls_the_cli() {
    let text = std::fs::read_to_string(src().join("main.rs")).unwrap();
    for code in code_lines(&text) {
        if let Some(i) = code.find("tickburst::") {
            assert!(
                code[i..].starts_with("tickburst::cli::"),
                "main.rs: `{}`",
                code.trim()
            );
        }
    }
}
