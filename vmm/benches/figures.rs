//! `cargo bench -p tickburst`: prints the figures the project tracks (these are
//! measurements, not pass/fail tests; this host is shared and noisy).
//!
//! - setup time: entry of `main` to guest ready, and to the first tick
//!   (median and minimum of 10 runs);
//! - peak RSS of a default `tickburst run`;
//! - set-up time, peak RSS and total tick rate with the most vCPUs (64);
//! - the shortest period captured with zero lost ticks over
//!   `TICKBURST_BENCH_LOSS_SECS` (default 60) in HLT mode, starting at the
//!   host's `kvm.min_timer_period_us`.
//!
//! Needs `/dev/kvm`; without it, prints why and exits 0.

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_tickburst");

/// Runs tickburst with `args` plus `--json`, returns (record, peak RSS KiB).
fn run(args: &[&str]) -> Option<(serde_json::Value, i64)> {
    common::run_measured(BIN, args).map(|m| (m.record, m.rss_kib))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if let Err(e) = tickburst::vstate::kvm::open_kvm() {
        println!("figures: not measured: {e}");
        return;
    }
    let _vm = tickburst_testkit::lock();

    for probes in ["off", "auto"] {
        let mut ready = Vec::new();
        let mut first = Vec::new();
        for _ in 0..10 {
            let args = [
                "run",
                "--cycles",
                "0",
                "--warmup",
                "200ms",
                "--interval",
                "100ms",
                "--host-probes",
                probes,
            ];
            if let Some((r, _)) = run(&args) {
                ready.push(r["timing"]["setup_us"].as_f64().unwrap_or(f64::NAN));
                first.push(r["timing"]["first_tick_us"].as_f64().unwrap_or(f64::NAN));
            }
        }
        if !ready.is_empty() {
            println!(
                "setup (--host-probes {probes}): entry of main -> guest ready {:.2} ms (min {:.2}), -> first tick {:.2} ms \
                 (median of {}; aim < 10 ms)",
                median(ready.clone()) / 1e3,
                ready.iter().copied().fold(f64::INFINITY, f64::min) / 1e3,
                median(first) / 1e3,
                ready.len()
            );
        }
    }

    if let Some((_, rss_kib)) = run(&["run"]) {
        println!(
            "peak RSS of a default run: {:.1} MiB (aim < 8 MiB)",
            rss_kib as f64 / 1024.0
        );
    }

    // The largest VM: 64 vCPUs (or what KVM allows), each with its own ring.
    let kvm_max = tickburst::vstate::kvm::open_kvm()
        .map(|k| tickburst::vstate::kvm::max_vcpus(&k))
        .unwrap_or(1);
    let vcpus = kvm_max.to_string();
    let args = [
        "run",
        "--vcpus",
        &vcpus,
        "--cycles",
        "0",
        "--warmup",
        "2s",
        "--host-probes",
        "off",
    ];
    if let Some((r, rss_kib)) = run(&args) {
        println!(
            "--vcpus {vcpus}: process start -> all vCPUs ready {:.2} ms, peak RSS {:.1} MiB, \
             {:.0} ticks/s in all (nominal {:.0}; the vCPUs share the host's CPUs)",
            r["timing"]["setup_us"].as_f64().unwrap_or(f64::NAN) / 1e3,
            rss_kib as f64 / 1024.0,
            r["vcpus"]["totals"]["rate_hz"].as_f64().unwrap_or(f64::NAN),
            r["vcpus"]["totals"]["nominal_hz"]
                .as_f64()
                .unwrap_or(f64::NAN),
        );
    }

    let secs: u64 = std::env::var("TICKBURST_BENCH_LOSS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let min_us = tickburst::host::facts::min_timer_period_us().unwrap_or(200);
    let mut period_us = min_us;
    while period_us <= 10_000 {
        let period = format!("{period_us}us");
        let warmup = format!("{secs}s");
        let args = [
            "run", "--period", &period, "--cycles", "0", "--warmup", &warmup, "--idle", "hlt",
        ];
        match run(&args) {
            Some((r, _)) if r["lost_ticks"] == 0 => {
                println!(
                    "shortest period with zero lost ticks over {secs} s (HLT): {period} \
                     (host minimum {min_us}us; {} ticks, steady {:.1} Hz)",
                    r["guest"]["tick_count"],
                    r["steady"]["rate_hz"].as_f64().unwrap_or(0.0)
                );
                return;
            }
            Some((r, _)) => println!("{period}: {} lost ticks", r["lost_ticks"]),
            None => println!("{period}: run failed"),
        }
        period_us *= 2;
    }
}
