//! `top`'s rows as Prometheus metrics (text exposition format 0.0.4), for
//! `top --listen` and `top --textfile`.
//!
//! One `tickburst_` prefix, base units, `_total` on counters; labels `pid`,
//! `vm` (the VM's name, bounded and escaped) and `vcpu`, plus `backend`
//! (five values). Series of a VM that is gone are dropped with it, so the
//! memory is bounded by the VMs watched now.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use tickburst_analysis::top::{Backend, TopRow};

/// Every back end, in the order the gauge lists them.
const BACKENDS: [Backend; 5] = [
    Backend::Hv,
    Backend::Sw,
    Backend::Mixed,
    Backend::Idle,
    Backend::Unknown,
];
/// Longest label value written (VM names are at most 32 characters; the
/// host's kernel release and module parameters are cut here).
const LABEL_MAX: usize = 64;

/// A label value as the exposition format wants it: `\`, `"` and newline
/// escaped, control characters replaced by `?`, at most [`LABEL_MAX`]
/// characters.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars().take(LABEL_MAX) {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// A label name from a module parameter (`kvm_intel.preemption_timer` ->
/// `kvm_intel_preemption_timer`): only `[a-zA-Z0-9_]`.
fn label_name(raw: &str) -> String {
    raw.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// What `tickburst_info` says: the version and the host's kvm parameters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostLabels {
    /// `(label name, value)`, in order.
    pub labels: Vec<(String, String)>,
}

impl HostLabels {
    /// tickburst's version, the kernel release, the KVM back-end module and
    /// the recorded module parameters of this host.
    pub fn of_this_host() -> HostLabels {
        let host = crate::host::facts::gather(None);
        let mut labels = vec![
            ("version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
            ("kernel".to_string(), host.kernel_release),
            (
                "kvm_backend".to_string(),
                host.kvm_backend.unwrap_or_else(|| "none".into()),
            ),
        ];
        for (name, value) in host.kvm_params {
            labels.push((label_name(&name), value));
        }
        HostLabels { labels }
    }
}

/// What is kept of one vCPU between scrapes.
#[derive(Debug, Clone, Default)]
struct VcpuSeries {
    name: String,
    sw_total: u64,
    hv_total: u64,
    irq_total: u64,
    sw_measured: bool,
    hv_measured: bool,
    irq_measured: bool,
    backend: Option<Backend>,
    fell_back: bool,
    fallbacks_total: u64,
    last_fallback_s: Option<f64>,
    /// Longest run since the last scrape of `/metrics`.
    run_since_scrape: Option<u64>,
    /// Longest run of the last interval.
    run_last_interval: Option<u64>,
}

/// The count an interval's rate stands for (the rate is `n / interval`).
fn count(per_s: Option<f64>, interval_s: f64) -> Option<u64> {
    per_s
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| (v * interval_s).round() as u64)
}

/// Which longest run a rendering shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunWindow {
    /// Since the last scrape (then reset): `/metrics`.
    SinceScrape,
    /// The last interval: the text file, rewritten every interval.
    LastInterval,
}

/// The metrics of every vCPU watched now.
#[derive(Debug, Clone, Default)]
pub struct PromMetrics {
    host: HostLabels,
    /// Wall-clock time of `top`'s epoch, s since 1970.
    epoch_unix_s: f64,
    series: BTreeMap<(u32, u32), VcpuSeries>,
    updated_unix_s: Option<f64>,
}

impl PromMetrics {
    /// Empty metrics of a `top` whose epoch is `epoch_unix_s` (wall clock).
    pub fn new(host: HostLabels, epoch_unix_s: f64) -> PromMetrics {
        PromMetrics {
            host,
            epoch_unix_s,
            ..PromMetrics::default()
        }
    }

    /// Adds one interval's rows (all vCPUs watched now), which ended at
    /// `now_unix_s` (wall clock): counters grow, gauges are replaced,
    /// vCPUs absent from `rows` are dropped.
    pub fn update(&mut self, rows: &[TopRow], now_unix_s: f64) {
        let mut next = BTreeMap::new();
        for r in rows {
            let mut s = self.series.remove(&(r.pid, r.vcpu)).unwrap_or_default();
            s.name = r.name.clone();
            if let Some(n) = count(r.sw_per_s, r.interval_s) {
                s.sw_total = s.sw_total.saturating_add(n);
                s.sw_measured = true;
            }
            if let Some(n) = count(r.hv_per_s, r.interval_s) {
                s.hv_total = s.hv_total.saturating_add(n);
                s.hv_measured = true;
            }
            if let Some(n) = count(r.irq_per_s, r.interval_s) {
                s.irq_total = s.irq_total.saturating_add(n);
                s.irq_measured = true;
            }
            s.backend = Some(r.backend);
            let fell_back = r.fell_back_at_s.is_some();
            if fell_back && !s.fell_back {
                s.fallbacks_total += 1;
                s.last_fallback_s = r.fell_back_at_s.map(|t| self.epoch_unix_s + t);
            }
            s.fell_back = fell_back;
            s.run_last_interval = r.longest_run;
            s.run_since_scrape = match (s.run_since_scrape, r.longest_run) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            next.insert((r.pid, r.vcpu), s);
        }
        self.series = next;
        self.updated_unix_s = Some(now_unix_s);
    }

    /// The vCPUs watched now.
    pub fn vcpus(&self) -> usize {
        self.series.len()
    }

    /// The exposition text; with [`RunWindow::SinceScrape`] the longest
    /// runs start again from nothing.
    pub fn render(&mut self, window: RunWindow) -> String {
        let mut out = String::new();
        let info: Vec<String> = self
            .host
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
            .collect();
        head(
            &mut out,
            "tickburst_info",
            "gauge",
            "tickburst's version and the host's kvm parameters (value 1).",
        );
        let _ = writeln!(out, "tickburst_info{{{}}} 1", info.join(","));
        let vms: std::collections::BTreeSet<u32> = self.series.keys().map(|k| k.0).collect();
        head(&mut out, "tickburst_vms", "gauge", "KVM VMs watched now.");
        let _ = writeln!(out, "tickburst_vms {}", vms.len());
        head(&mut out, "tickburst_vcpus", "gauge", "vCPUs watched now.");
        let _ = writeln!(out, "tickburst_vcpus {}", self.series.len());
        if let Some(t) = self.updated_unix_s {
            head(
                &mut out,
                "tickburst_last_update_timestamp_seconds",
                "gauge",
                "When the last interval ended (s since 1970).",
            );
            let _ = writeln!(out, "tickburst_last_update_timestamp_seconds {t:.3}");
        }
        let labels = |(pid, vcpu): (u32, u32), s: &VcpuSeries| {
            format!(
                "pid=\"{pid}\",vm=\"{}\",vcpu=\"{vcpu}\"",
                escape_label(&s.name)
            )
        };
        let family = |out: &mut String,
                      name: &str,
                      kind: &str,
                      help: &str,
                      value: &dyn Fn(&VcpuSeries) -> Option<String>| {
            let lines: Vec<String> = self
                .series
                .iter()
                .filter_map(|(k, s)| Some(format!("{name}{{{}}} {}", labels(*k, s), value(s)?)))
                .collect();
            if !lines.is_empty() {
                head(out, name, kind, help);
                for l in lines {
                    out.push_str(&l);
                    out.push('\n');
                }
            }
        };
        family(
            &mut out,
            "tickburst_vcpu_sw_callbacks_total",
            "counter",
            "LAPIC timer callbacks of the sw timer (apic_timer_fn) on the host.",
            &|s| s.sw_measured.then(|| s.sw_total.to_string()),
        );
        family(
            &mut out,
            "tickburst_vcpu_hv_expiries_total",
            "counter",
            "hv timer (VMX-preemption timer) expiries.",
            &|s| s.hv_measured.then(|| s.hv_total.to_string()),
        );
        family(
            &mut out,
            "tickburst_vcpu_guest_interrupts_total",
            "counter",
            "LAPIC interrupts accepted by the vCPU (what the guest gets; top --irq).",
            &|s| s.irq_measured.then(|| s.irq_total.to_string()),
        );
        family(
            &mut out,
            "tickburst_vcpu_fallbacks_total",
            "counter",
            "Times the vCPU fell back from the hv timer to sw and stayed there.",
            &|s| Some(s.fallbacks_total.to_string()),
        );
        family(
            &mut out,
            "tickburst_vcpu_fallen_back",
            "gauge",
            "1 while the vCPU stays on the sw timer after a fall-back.",
            &|s| Some(u8::from(s.fell_back).to_string()),
        );
        family(
            &mut out,
            "tickburst_vcpu_last_fallback_timestamp_seconds",
            "gauge",
            "When the vCPU last fell back to sw (s since 1970).",
            &|s| s.last_fallback_s.map(|t| format!("{t:.3}")),
        );
        family(&mut out, "tickburst_vcpu_longest_irq_run_callbacks", "gauge",
            "Most timer callbacks run inside one hard interrupt since the last scrape (textfile: in the last interval).",
            &|s| match window {
                RunWindow::SinceScrape => s.run_since_scrape,
                RunWindow::LastInterval => s.run_last_interval,
            }
            .map(|n| n.to_string()));
        let backend_lines: Vec<String> = self
            .series
            .iter()
            .filter(|(_, s)| s.backend.is_some())
            .flat_map(|(k, s)| {
                BACKENDS.iter().map(move |b| {
                    format!(
                        "tickburst_vcpu_timer_backend{{{},backend=\"{}\"}} {}",
                        labels(*k, s),
                        b.name(),
                        u8::from(s.backend == Some(*b))
                    )
                })
            })
            .collect();
        if !backend_lines.is_empty() {
            head(
                &mut out,
                "tickburst_vcpu_timer_backend",
                "gauge",
                "The LAPIC timer back end of the last interval (1 for the one in use).",
            );
            for l in backend_lines {
                out.push_str(&l);
                out.push('\n');
            }
        }
        if window == RunWindow::SinceScrape {
            for s in self.series.values_mut() {
                s.run_since_scrape = None;
            }
        }
        out
    }
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pid: u32, vcpu: u32, t: f64, sw: f64, fell: Option<f64>, run: u64) -> TopRow {
        TopRow {
            t_s: t,
            interval_s: 1.0,
            pid,
            name: "web\"1\\\n".into(),
            vcpu,
            tid: Some(7),
            hv_per_s: Some(0.0),
            sw_per_s: Some(sw),
            backend: Backend::Sw,
            left_hv: Some(0),
            longest_run: Some(run),
            fell_back_at_s: fell,
            ..TopRow::default()
        }
    }

    #[test]
    fn labels_are_escaped_and_bounded() {
        assert_eq!(escape_label("a\"b\\c\nd\u{1b}"), "a\\\"b\\\\c\\nd?");
        assert_eq!(escape_label(&"x".repeat(500)).len(), LABEL_MAX);
        assert_eq!(
            label_name("kvm_intel.preemption_timer"),
            "kvm_intel_preemption_timer"
        );
    }

    #[test]
    fn counters_grow_fallbacks_count_and_gone_vcpus_go() {
        let host = HostLabels {
            labels: vec![("version".into(), "0.1.0".into())],
        };
        let mut m = PromMetrics::new(host, 1000.0);
        m.update(
            &[
                row(5, 0, 0.0, 1000.0, None, 1),
                row(6, 0, 0.0, 10.0, None, 1),
            ],
            1001.0,
        );
        m.update(&[row(5, 0, 1.0, 1000.0, Some(1.0), 4000)], 1002.0);
        assert_eq!(m.vcpus(), 1, "pid 6 is gone with its series");
        let text = m.render(RunWindow::SinceScrape);
        let labels = "pid=\"5\",vm=\"web\\\"1\\\\\\n\",vcpu=\"0\"";
        for want in [
            "tickburst_info{version=\"0.1.0\"} 1".to_string(),
            format!("tickburst_vcpu_sw_callbacks_total{{{labels}}} 2000"),
            format!("tickburst_vcpu_hv_expiries_total{{{labels}}} 0"),
            format!("tickburst_vcpu_fallbacks_total{{{labels}}} 1"),
            format!("tickburst_vcpu_fallen_back{{{labels}}} 1"),
            format!("tickburst_vcpu_last_fallback_timestamp_seconds{{{labels}}} 1001.000"),
            format!("tickburst_vcpu_longest_irq_run_callbacks{{{labels}}} 4000"),
            format!("tickburst_vcpu_timer_backend{{{labels},backend=\"sw\"}} 1"),
            format!("tickburst_vcpu_timer_backend{{{labels},backend=\"hv\"}} 0"),
            "tickburst_vms 1".to_string(),
            "tickburst_last_update_timestamp_seconds 1002.000".to_string(),
        ] {
            assert!(text.lines().any(|l| l == want), "{want} in\n{text}");
        }
        assert!(!text.contains("pid=\"6\""), "{text}");
        assert!(
            !text.contains("guest_interrupts"),
            "not measured: not shown"
        );
        // The longest run starts again after a scrape; the same fall-back
        // is counted once.
        let again = m.render(RunWindow::SinceScrape);
        assert!(
            !again.contains("tickburst_vcpu_longest_irq_run_callbacks{"),
            "{again}"
        );
        m.update(&[row(5, 0, 2.0, 1000.0, Some(1.0), 2)], 1003.0);
        let text = m.render(RunWindow::LastInterval);
        assert!(text.contains(&format!("tickburst_vcpu_fallbacks_total{{{labels}}} 1")));
        assert!(text.contains(&format!(
            "tickburst_vcpu_longest_irq_run_callbacks{{{labels}}} 2"
        )));
    }
}
