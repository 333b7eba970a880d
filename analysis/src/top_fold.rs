//! `tickburst top`, pure helpers of the output: a VM's vCPU rows folded into
//! one line (`--per-vm`), and notes said once.

use crate::top::{Backend, TopRow};
use std::collections::BTreeSet;

fn sum(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    values.fold(None, |acc, v| match (acc, v) {
        (None, v) => v,
        (Some(a), Some(b)) => Some(a + b),
        (a, None) => a,
    })
}

/// The rows of one VM over one interval folded into one (`--per-vm`): rates
/// summed, back ends combined, the longest run of any vCPU, flags prefixed
/// with their vCPU. `vcpu` is the number of vCPUs folded in.
pub fn collapse(rows: &[TopRow]) -> Option<TopRow> {
    let first = rows.first()?;
    let longest = rows
        .iter()
        .filter(|r| r.longest_run.is_some())
        .max_by_key(|r| r.longest_run);
    Some(TopRow {
        vcpu: rows.len() as u32,
        tid: None,
        hv_per_s: sum(rows.iter().map(|r| r.hv_per_s)),
        sw_per_s: sum(rows.iter().map(|r| r.sw_per_s)),
        irq_per_s: sum(rows.iter().map(|r| r.irq_per_s)),
        backend: rows
            .iter()
            .map(|r| r.backend)
            .fold(Backend::Unknown, Backend::combine),
        left_hv: rows
            .iter()
            .filter_map(|r| r.left_hv)
            .reduce(|a, b| a.saturating_add(b)),
        longest_run: longest.and_then(|r| r.longest_run),
        longest_run_late_ms: longest.and_then(|r| r.longest_run_late_ms),
        longest_run_us: longest.and_then(|r| r.longest_run_us),
        sw_lost: rows.iter().map(|r| r.sw_lost).sum(),
        fell_back_at_s: rows
            .iter()
            .filter_map(|r| r.fell_back_at_s)
            .reduce(f64::min),
        flags: rows
            .iter()
            .flat_map(|r| r.flags.iter().map(move |f| format!("{}:{f}", r.vcpu)))
            .collect(),
        ..first.clone()
    })
}

/// Notes printed once: the first time a text is offered it is returned, then
/// never again (a column that is n/a says why once, not every interval).
#[derive(Debug, Default)]
pub struct OnceNotes {
    seen: BTreeSet<String>,
}

impl OnceNotes {
    /// `Some(text)` the first time, `None` after.
    pub fn once(&mut self, text: &str) -> Option<String> {
        self.seen.insert(text.to_string()).then(|| text.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::{VcpuId, VcpuInterval, VcpuTracker};

    fn id() -> VcpuId {
        VcpuId {
            pid: 42,
            name: "vm".into(),
            vcpu: 0,
            tid: Some(43),
        }
    }

    fn interval(hv: Option<u64>, sw: Option<u64>) -> VcpuInterval {
        VcpuInterval {
            len_ns: 1_000_000_000,
            hv,
            sw,
            runs: Some(vec![]),
            ..VcpuInterval::default()
        }
    }

    #[test]
    fn a_vm_collapses_its_vcpus() {
        let mut a = VcpuTracker::default().row(&id(), &interval(None, Some(1000)), 1);
        let other = VcpuId { vcpu: 1, ..id() };
        let mut b = VcpuTracker::default().row(&other, &interval(Some(5), Some(1)), 1);
        b.longest_run = Some(7);
        b.flags = vec!["run7>1@0.0s".into()];
        a.longest_run = Some(1);
        let vm = collapse(&[a, b]).unwrap();
        assert_eq!(vm.vcpu, 2);
        assert_eq!(vm.sw_per_s, Some(1001.0));
        assert_eq!(vm.hv_per_s, Some(5.0));
        assert_eq!(vm.backend, Backend::Mixed);
        assert_eq!(vm.longest_run, Some(7));
        assert_eq!(vm.flags, ["1:run7>1@0.0s"]);
        assert!(collapse(&[]).is_none());
    }

    #[test]
    fn notes_once() {
        let mut n = OnceNotes::default();
        assert!(n.once("hv n/a").is_some());
        assert!(n.once("hv n/a").is_none());
        assert!(n.once("sw n/a").is_some());
    }
}
