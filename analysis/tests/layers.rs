//! The analysis crate stays pure and layered: checked from its sources.
//!
//! - its `Cargo.toml` names none of the crates that run a VM, open perf
//!   events, make system calls or draw (those belong to `tickburst`), nor
//!   `tickburst` itself (imports go one way: `tickburst` uses this crate);
//! - its modules use each other without a cycle: every `crate::<module>` path
//!   in code (in `use` lines and inline, comments left out) is an edge, and
//!   the graph must have a topological order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Crates the analysis crate must never depend on.
const FORBIDDEN: &[&str] = &[
    "kvm-ioctls",
    "kvm-bindings",
    "vm-memory",
    "vmm-sys-util",
    "linux-loader",
    "perf-event2",
    "perf-event-open-sys2",
    "plotters",
    "libc",
    "clap",
    "signal-hook",
    "guest-payload",
    "tickburst",
];

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every dependency named in a `Cargo.toml`, of any kind (normal, dev,
/// build, per target): keys of `[*dependencies]` tables and the names of
/// `[*dependencies.<name>]` tables.
fn dependencies(manifest: &str) -> BTreeSet<String> {
    let mut deps = BTreeSet::new();
    let mut in_deps = false;
    for line in manifest.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let header = header.trim_matches(['[', ']']).trim();
            let parts: Vec<&str> = header.split('.').collect();
            match parts.iter().position(|p| p.ends_with("dependencies")) {
                Some(i) if i + 1 < parts.len() => {
                    deps.insert(parts[i + 1].trim_matches('"').to_string());
                    in_deps = false;
                }
                Some(_) => in_deps = true,
                None => in_deps = false,
            }
        } else if in_deps {
            if let Some((key, value)) = line.split_once('=') {
                let key = key.trim().trim_matches('"');
                // `name = { package = "real-name", ... }` renames a crate.
                let real = value
                    .split("package")
                    .nth(1)
                    .and_then(|v| v.split('"').nth(1))
                    .unwrap_or(key);
                deps.insert(key.to_string());
                deps.insert(real.to_string());
            }
        }
    }
    deps
}

#[test]
fn depends_on_no_vmm_perf_syscall_or_plotting_crate() {
    let text = std::fs::read_to_string(manifest_dir().join("Cargo.toml")).unwrap();
    let deps = dependencies(&text);
    assert!(deps.contains("serde"), "the parser found {deps:?}");
    let bad: Vec<&&str> = FORBIDDEN
        .iter()
        .filter(|f| deps.contains(**f) || deps.contains(&f.replace('-', "_")))
        .collect();
    assert!(bad.is_empty(), "tickburst-analysis depends on {bad:?}");
}

#[test]
fn the_dependency_parser_sees_every_kind_of_entry() {
    let deps = dependencies(
        "[package]\nname = \"x\"\n[dependencies]\nserde = \"1\"\nkvm = { package = \"kvm-ioctls\", version = \"1\" }\n\
         [dev-dependencies]\nproptest = \"1\"\n[target.'cfg(unix)'.dependencies]\nlibc = \"0.2\"\n\
         [dependencies.clap]\nversion = \"4\"\n[features]\nplotters = []\n",
    );
    for d in ["serde", "kvm-ioctls", "proptest", "libc", "clap"] {
        assert!(deps.contains(d), "{d} in {deps:?}");
    }
    assert!(!deps.contains("plotters"), "a feature is not a dependency");
}

/// The modules of `src/` and, for each, the modules it names as
/// `crate::<module>` outside comments.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = manifest_dir().join("src");
    let mut graph = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if path.extension().is_none_or(|e| e != "rs") || name == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut uses = BTreeSet::new();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            let mut rest = code;
            while let Some(i) = rest.find("crate::") {
                rest = &rest[i + "crate::".len()..];
                if let Some(group) = rest.strip_prefix('{') {
                    // `use crate::{a::X, b};`
                    let group = group.split('}').next().unwrap_or("");
                    for item in group.split(',') {
                        let m = item.trim().split("::").next().unwrap_or("").trim();
                        if !m.is_empty() {
                            uses.insert(m.to_string());
                        }
                    }
                } else {
                    let m: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !m.is_empty() {
                        uses.insert(m);
                    }
                }
            }
        }
        uses.remove(name);
        graph.insert(name.to_string(), uses);
    }
    graph
}

#[test]
fn modules_use_each_other_without_cycles() {
    let graph = module_graph();
    assert!(graph.len() >= 10, "found only {:?}", graph.keys());
    for (m, uses) in &graph {
        for u in uses {
            assert!(graph.contains_key(u), "{m} uses crate::{u}, not a module");
        }
    }
    // Kahn: repeatedly take the modules whose uses are all taken.
    let mut done: BTreeSet<&str> = BTreeSet::new();
    loop {
        let ready: Vec<&str> = graph
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
    let left: BTreeMap<&String, &BTreeSet<String>> = graph
        .iter()
        .filter(|(m, _)| !done.contains(m.as_str()))
        .collect();
    assert!(
        left.is_empty(),
        "module cycle among (module: uses) {left:#?}"
    );
}
