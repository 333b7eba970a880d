//! Which pauses every vCPU's tick stream has been told of: its own, and the
//! subject's (to keep its ticks around them too).

use crate::session::collector::Collector;
use tickburst_analysis::figures::PauseSpan;
use tickburst_analysis::stream::HOLD_NS;

/// How far each vCPU's stream was told of the pauses.
pub(super) struct StreamSync {
    /// Each vCPU's own pauses already told to its stream.
    synced: Vec<usize>,
    /// The subject's pauses (or gaps) already told to the other streams.
    synced_subject: usize,
}

impl StreamSync {
    /// Nothing told yet, for `vcpus` streams.
    pub(super) fn new(vcpus: usize) -> StreamSync {
        StreamSync {
            synced: vec![0; vcpus],
            synced_subject: 0,
        }
    }

    /// Tells every vCPU's stream the pauses (its own, and the subject's to
    /// keep its ticks around them too) and settles the ticks old enough.
    /// `pauses` are each vCPU's own; with `detects` the subject's are the
    /// gaps in its ticks.
    pub(super) fn sync(
        &mut self,
        collectors: &mut [Collector],
        pauses: &[Vec<PauseSpan>],
        subject: usize,
        detects: bool,
        now: u64,
    ) {
        let list: &[PauseSpan] = if detects {
            collectors[subject].stream().gaps()
        } else {
            &pauses[subject]
        };
        let from = self.synced_subject.saturating_sub(1).min(list.len());
        let subject_spans = list[from..].to_vec();
        self.synced_subject = list.len();
        let before = if detects {
            let newest = collectors[subject].stream().newest().unwrap_or(0);
            newest.saturating_sub(HOLD_NS)
        } else {
            now.saturating_sub(HOLD_NS)
        };
        for (v, c) in collectors.iter_mut().enumerate() {
            let own = &pauses[v];
            let from = self.synced[v].saturating_sub(1).min(own.len());
            for p in &own[from..] {
                c.stream_mut().pause(*p, true);
            }
            self.synced[v] = own.len();
            if v != subject {
                for p in &subject_spans {
                    c.stream_mut().pause(*p, false);
                }
            }
            c.stream_mut().settle(before);
        }
    }
}
