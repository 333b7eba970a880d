//! The state of a run once the guest is ready: every vCPU's collector and
//! pauses, the host marks, the windows printed so far. It drains the rings,
//! reads host counts, tells the observer each complete window, and watches
//! Ctrl-C and the vCPU threads.

use crate::session::collector::{Collector, HostPair, SlotRing};
use crate::session::config::{RunConfig, WINDOW_SLACK_NS};
use crate::session::host_track::HostTrack;
use crate::session::observer::RunObserver;
use crate::session::stream_sync::StreamSync;
use crate::session::watch::{Seen, Watch};
use crate::vstate::tsc_sync;
use crate::vstate::vcpu_control::{VcpuEvent, VcpuEventKind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tickburst_analysis::figures::{self, PauseSpan, Samples};
use tickburst_analysis::names::Outcome;
use tickburst_analysis::periodic::PeriodicAcc;
use vm_memory::GuestMemoryMmap;

/// How often the collector drains the ring. At the shortest period KVM
/// allows (200 us) that is 10 ticks a drain; the ring holds 65536.
pub const POLL_INTERVAL: Duration = Duration::from_millis(2);
/// State of a run after the guest is ready.
pub(super) struct Live<'a> {
    /// What the run does.
    pub(super) cfg: &'a RunConfig,
    /// The guest's memory (the tick rings, the counters).
    pub(super) mem: GuestMemoryMmap,
    /// When the guest reported ready: every time is ns since it.
    pub(super) epoch: Instant,
    /// CLOCK_MONOTONIC ns of the epoch (perf and supervisor times are in it).
    pub(super) epoch_mono: u64,
    /// One per vCPU, by index.
    pub(super) collectors: Vec<Collector>,
    /// Each vCPU's pauses (an open pause ends at `u64::MAX`).
    pub(super) pauses: Vec<Vec<PauseSpan>>,
    /// Index of the subject vCPU (the table, host probes, verdict).
    pub(super) subject: usize,
    /// Report windows told to the observer so far.
    pub(super) printed_windows: u64,
    /// What the vCPU threads report (one that ends fails the run).
    pub(super) events: Receiver<VcpuEvent>,
    /// Set by Ctrl-C / SIGTERM.
    pub(super) stop: Option<Arc<AtomicBool>>,
    /// The host's probes and marks.
    pub(super) host: HostTrack,
    /// Windows since the last periodic summary.
    pub(super) periodic: PeriodicAcc,
    /// How far the streams were told of the pauses.
    pub(super) sync: StreamSync,
    /// `watch`: the pauses found so far.
    pub(super) watch: Watch,
    /// Why the run failed, once a phase ended [`Outcome::Failed`].
    pub(super) error: Option<String>,
}

impl Live<'_> {
    /// Now, ns since the epoch (the first ready report).
    pub(super) fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// `at`, ns since the epoch (0 before it).
    pub(super) fn since_epoch(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// Drains every vCPU's ring, after a read of the host's TSC against its
    /// clock for the conversions' rate.
    pub(super) fn drain(&mut self, now: u64) {
        let host = tsc_sync::read_host();
        let pair = HostPair {
            tsc: host.tsc,
            ns: self.since_epoch(host.at),
            width_ns: host.width.as_nanos().min(u128::from(u64::MAX)) as u64,
        };
        for (vcpu, c) in self.collectors.iter_mut().enumerate() {
            c.observe_host(pair);
            c.drain(
                &SlotRing {
                    mem: &self.mem,
                    vcpu: vcpu as u32,
                },
                now,
            );
        }
    }

    /// Every vCPU's ticks in report window `k` (empty with one vCPU).
    pub(super) fn vcpu_ticks(&self, k: u64) -> Vec<u64> {
        if self.collectors.len() < 2 {
            return Vec::new();
        }
        self.collectors
            .iter()
            .map(|c| c.stream().window_ticks(k))
            .collect()
    }

    /// Tells every vCPU's stream the pauses and settles the ticks old
    /// enough (see [`StreamSync::sync`]).
    pub(super) fn sync_streams(&mut self, now: u64) {
        self.sync.sync(
            &mut self.collectors,
            &self.pauses,
            self.subject,
            self.cfg.plan.detects(),
            now,
        );
    }

    /// Drains the rings and prints complete windows; checks stop and vCPUs.
    /// [`Outcome::Completed`]: the run goes on.
    pub(super) fn poll(&mut self, observer: &mut dyn RunObserver) -> Outcome {
        let now = self.now_ns();
        self.watch.polled(now);
        self.drain(now);
        self.mark_host(now, false);
        if self.cfg.plan.detects() {
            self.detect(now, false, observer);
        }
        self.sync_streams(now);
        self.thin_host(now);
        self.complete_windows(now, observer);
        if self
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
        {
            return Outcome::Interrupted;
        }
        self.vcpu_events()
    }

    /// Tells the observer every window that is complete by `now`.
    fn complete_windows(&mut self, now: u64, observer: &mut dyn RunObserver) {
        let interval = self.cfg.interval_ns;
        while (self.printed_windows + 1) * interval + WINDOW_SLACK_NS <= now {
            let start = self.printed_windows * interval;
            let pauses = self.pauses_until(self.subject, now);
            let samples = Samples {
                period_ns: self.cfg.period_ns,
                interval_ns: interval,
                end_ns: start + interval,
                ticks_ns: &[],
                pauses: &pauses,
                host: self.host.marks.marks(),
                host_scope: self.host.scope,
                host_events: None,
            };
            let k = self.printed_windows;
            let counted = self.collectors[self.subject].stream().window_ticks(k);
            let window = figures::window_counted(&samples, start, Some(counted));
            observer.window(&window, &self.vcpu_ticks(k));
            self.printed_windows += 1;
            self.periodic_summary(&window, observer);
        }
    }

    /// Folds `window` into the periodic summary; tells the observer the
    /// summary once it spans `--summary-every`.
    fn periodic_summary(&mut self, window: &figures::Window, observer: &mut dyn RunObserver) {
        let every = self.cfg.summary_every_ns;
        if every == 0 {
            return;
        }
        self.periodic.add(window);
        if self.periodic.span_ms() * 1e6 + 0.5 < every as f64 {
            return;
        }
        let worst = self.collectors[self.subject]
            .stream_mut()
            .take_worst_interval();
        let seen = if self.cfg.plan.detects() {
            self.watch.found()
        } else {
            self.pauses[self.subject].len()
        };
        let summary = self.periodic.take(self.cfg.period_ns, worst, seen);
        observer.summary(&summary);
    }

    /// A vCPU thread that ended while the guest should run ends the run.
    fn vcpu_events(&mut self) -> Outcome {
        while let Ok(event) = self.events.try_recv() {
            match event.kind {
                VcpuEventKind::Exited(Err(e)) => {
                    return self.fail(format!("vCPU {}: {e}", event.vcpu))
                }
                VcpuEventKind::Exited(Ok(_)) => {
                    return self.fail(format!("vCPU {} stopped unexpectedly", event.vcpu))
                }
                VcpuEventKind::Ready { .. } | VcpuEventKind::Probed => {}
            }
        }
        Outcome::Completed
    }

    /// The run failed for `why`: kept for the record; returns
    /// [`Outcome::Failed`].
    pub(super) fn fail(&mut self, why: String) -> Outcome {
        self.error = Some(why);
        Outcome::Failed
    }

    /// Reads host counts when the next 10 ms mark is due (or `force`).
    pub(super) fn mark_host(&mut self, now: u64, force: bool) {
        self.host.mark(now, self.epoch_mono, force);
    }

    /// Thins the host data up to where the subject settled.
    fn thin_host(&mut self, now: u64) {
        let subject = self.collectors[self.subject].stream();
        let pauses: &[PauseSpan] = if self.cfg.plan.detects() {
            subject.gaps()
        } else {
            &self.pauses[self.subject]
        };
        self.host
            .thin(now, self.epoch_mono, subject.settled_to(), pauses);
    }

    /// `watch`: finds new gaps in the subject's ticks and reports each one
    /// a second after its resume (all of them when `flush`).
    pub(super) fn detect(&mut self, now: u64, flush: bool, observer: &mut dyn RunObserver) {
        let seen = Seen {
            stream: self.collectors[self.subject].stream(),
            host: self.host.marks.marks(),
            host_scope: self.host.scope,
            period_ns: self.cfg.period_ns,
            interval_ns: self.cfg.interval_ns,
        };
        self.watch.detect(&seen, now, flush, observer);
    }

    /// At the end of a watch: every pause reported, and each vCPU's pauses
    /// set to what its ticks show (the subject's: the detected ones).
    pub(super) fn finish_detection(&mut self, end_ns: u64, observer: &mut dyn RunObserver) {
        self.detect(end_ns, true, observer);
        let spans = self.watch.spans();
        for (i, pauses) in self.pauses.iter_mut().enumerate() {
            *pauses = if i == self.subject {
                spans.clone()
            } else {
                self.collectors[i].stream().gaps().to_vec()
            };
        }
    }

    /// The subject's figures for `span` from what it has seen by `now` (its
    /// kept and not yet settled ticks, the host marks so far).
    pub(super) fn pause_stats_now(&self, span: &PauseSpan, now: u64) -> figures::PauseStats {
        let ticks = self.collectors[self.subject]
            .stream()
            .ticks_between(span.start_ns, now);
        let pauses = self.pauses_until(self.subject, now);
        let samples = Samples {
            period_ns: self.cfg.period_ns,
            interval_ns: self.cfg.interval_ns,
            end_ns: now,
            ticks_ns: &ticks,
            pauses: &pauses,
            host: self.host.marks.marks(),
            host_scope: self.host.scope,
            host_events: None,
        };
        figures::pause_stats(&samples, span, now)
    }

    /// vCPU `vcpu`'s pauses, an open end closed at `now`.
    pub(super) fn pauses_until(&self, vcpu: usize, now: u64) -> Vec<PauseSpan> {
        self.pauses[vcpu]
            .iter()
            .map(|p| PauseSpan {
                start_ns: p.start_ns,
                end_ns: if p.end_ns == u64::MAX { now } else { p.end_ns },
            })
            .collect()
    }

    /// Polls until `until_ns` (since epoch); [`Outcome::Completed`] when
    /// it got there.
    pub(super) fn run_until(&mut self, until_ns: u64, observer: &mut dyn RunObserver) -> Outcome {
        loop {
            let step = self.poll(observer);
            if step != Outcome::Completed {
                return step;
            }
            let now = self.now_ns();
            if now >= until_ns {
                return Outcome::Completed;
            }
            std::thread::sleep(POLL_INTERVAL.min(Duration::from_nanos(until_ns - now)));
        }
    }
}
