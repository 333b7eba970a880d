//! `cargo xtask dist-check`: what `dist` built, proven. The `.deb`'s and
//! the `.rpm`'s payloads equal [`crate::layout`]'s list, the `.rpm`'s
//! scripts are the two reloads and nothing else, their metadata is
//! Cargo.toml's; then the `.deb` installs into a clean Debian bullseye root
//! (glibc 2.31) where `tickburst doctor` runs and a short `run` boots the
//! guest on /dev/kvm (under the VM lock).

use crate::chroot::{self, Root};
use crate::error::{Error, Result};
use crate::layout::{self, Format, ALERTS};
use crate::meta::Meta;
use crate::tool;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Instant;

/// The lock every VM run on this machine takes.
const VM_LOCK: &str = "/tmp/tickburst-kvm-tests.lock";
/// The short run: one pause, about a second.
const SHORT_RUN: [&str; 10] = [
    "run",
    "--warmup",
    "200ms",
    "--pause",
    "100ms",
    "--cycles",
    "1",
    "--observe",
    "300ms",
    "--json",
];
/// Where the short run's record goes inside the root.
const RUN_JSON: &str = "/tmp/run.json";

/// Runs every check; the first failure ends it with the tool's own words.
pub fn check(meta: &Meta) -> Result<()> {
    let started = Instant::now();
    let dist = meta.dist();
    let deb = dist.join(meta.deb_name());
    let rpm = dist.join(meta.rpm_name());
    for p in [&deb, &rpm] {
        if !p.is_file() {
            return Err(Error::Check(format!(
                "{}: missing; run `cargo xtask dist` first",
                p.display()
            )));
        }
    }
    let alerts = dist.join(ALERTS).is_file();

    // The .rpm: payload, scripts, metadata.
    let listed = tool::output(Command::new("rpm").arg("-qlp").arg(&rpm))?;
    let mut want: BTreeSet<String> = layout::entries(Format::Rpm, alerts)
        .into_iter()
        .map(|e| e.dest)
        .collect();
    if alerts {
        want.insert(layout::ALERTS_DIR.into());
    }
    same(
        "rpm -qlp",
        &want,
        &listed.lines().map(str::to_string).collect(),
    )?;
    let scripts = tool::output(Command::new("rpm").args(["-qp", "--scripts"]).arg(&rpm))?;
    let want_scripts = format!(
        "postinstall scriptlet (using /bin/sh):\n{r}\npostuninstall scriptlet (using /bin/sh):\n{r}",
        r = layout::RELOAD_SCRIPT
    );
    if scripts.trim() != want_scripts {
        return Err(Error::Check(format!(
            "rpm -qp --scripts: expected\n{want_scripts}\ngot\n{}",
            scripts.trim()
        )));
    }
    let info = tool::output(
        Command::new("rpm")
            .args([
                "-qp",
                "--queryformat",
                "%{VERSION}\n%{LICENSE}\n%{SUMMARY}\n%{ARCH}",
            ])
            .arg(&rpm),
    )?;
    let want_info = format!(
        "{}\n{}\n{}\nx86_64",
        meta.version.replace('-', "~"),
        meta.license,
        meta.description
    );
    if info.trim() != want_info {
        return Err(Error::Check(format!(
            "rpm -qp --queryformat: expected\n{want_info}\ngot\n{}",
            info.trim()
        )));
    }
    println!(
        "rpm: {} files as listed, post/postun scripts, {}",
        want.len(),
        info.lines().take(2).collect::<Vec<_>>().join(" ")
    );

    // The .deb: payload (files; folders are implied).
    let contents = tool::output(Command::new("dpkg-deb").arg("--contents").arg(&deb))?;
    let files = contents
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').to_string())
        .collect();
    let want_deb = layout::entries(Format::Deb, alerts)
        .into_iter()
        .map(|e| e.dest)
        .collect();
    same("dpkg-deb --contents", &want_deb, &files)?;
    println!("deb: {} files as listed", want_deb.len());

    // The .deb in a clean bullseye root.
    let t = Instant::now();
    let cache = chroot::ensure_cache()?;
    println!(
        "bullseye root: {:.1} s (cached at {})",
        t.elapsed().as_secs_f64(),
        cache.display()
    );
    let t = Instant::now();
    let root = Root::fresh(&cache)?;
    println!("fresh copy, mounts: {:.1} s", t.elapsed().as_secs_f64());
    std::fs::copy(&deb, root.dir().join("tmp/tickburst.deb"))
        .map_err(crate::error::io("copy the .deb into", root.dir()))?;
    println!(
        "{}",
        root.run(&["ldd", "--version"])?
            .lines()
            .next()
            .unwrap_or("")
    );
    let t = Instant::now();
    root.run(&["dpkg", "-i", "/tmp/tickburst.deb"])?;
    println!("dpkg -i: {:.1} s", t.elapsed().as_secs_f64());
    let installed = root.run(&["dpkg-query", "-L", "tickburst"])?;
    for want in &want_deb {
        if !installed.lines().any(|l| l == want)
            || !root.dir().join(want.trim_start_matches('/')).is_file()
        {
            return Err(Error::Check(format!(
                "bullseye: {want} not installed by the .deb"
            )));
        }
    }
    println!("{}", root.run(&["tickburst", "--version"])?.trim());
    let t = Instant::now();
    let doctor = root.run(&["tickburst", "doctor"])?;
    let doctor_s = t.elapsed().as_secs_f64();
    println!(
        "tickburst doctor (exit 0, {doctor_s:.1} s):\n{}",
        doctor.trim_end()
    );
    let mut args: Vec<&str> = SHORT_RUN.to_vec();
    args.push(RUN_JSON);
    let mut run = vec!["tickburst"];
    run.extend(&args);
    let t = Instant::now();
    let out = tool::output(&mut root.command_locked(VM_LOCK, &run))?;
    let run_s = t.elapsed().as_secs_f64();
    let record = std::fs::read_to_string(root.dir().join(RUN_JSON.trim_start_matches('/')))
        .map_err(crate::error::io("read the run's record", RUN_JSON))?;
    let v: serde_json::Value = serde_json::from_str(&record)
        .map_err(|e| Error::Check(format!("{RUN_JSON}: not JSON: {e}")))?;
    let ticks = v["guest"]["tick_count"].as_u64().unwrap_or(0);
    if v["outcome"] != "completed" || ticks == 0 {
        return Err(Error::Check(format!(
            "bullseye: the run did not boot the guest (outcome {}, {ticks} ticks):\n{}",
            v["outcome"],
            out.trim()
        )));
    }
    println!(
        "tickburst {}: outcome completed, guest {ticks} ticks ({run_s:.1} s with the wait for {VM_LOCK})",
        args.join(" ")
    );
    drop(root);
    println!(
        "dist-check passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Fails with what is missing and what is extra unless `got` equals `want`.
fn same(what: &str, want: &BTreeSet<String>, got: &BTreeSet<String>) -> Result<()> {
    if want == got {
        return Ok(());
    }
    let missing: Vec<_> = want.difference(got).cloned().collect();
    let extra: Vec<_> = got.difference(want).cloned().collect();
    Err(Error::Check(format!(
        "{what}: missing {missing:?}, unexpected {extra:?}"
    )))
}
