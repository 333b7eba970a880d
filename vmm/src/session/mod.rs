//! Sessions: one `run`, `sweep` or `watch` in one VM, the `check` matrix of
//! runs, and `doctor`.
//!
//! A run, step by step: [`config`] (what to run) -> [`boot`] (VM, vCPU
//! threads, host probes, the guest's probe phase, [`startup`] reports) ->
//! [`live`] (the [`collector`]s drain the guest rings, windows go to the
//! [`observer`]) -> [`pause_loop`] (warm-up, pauses, observation; [`watch`]
//! finds pauses from outside) -> [`assemble`] (the record, analysed and
//! judged) -> [`outcome`]. [`run`] strings the steps together.
//!
//! A session of another kind belongs here too: it drives the lower layers
//! and reports through an observer trait of its own, which `output`
//! implements; [`top`] (every VM on the host, live) is one.

mod assemble;
mod boot;
pub mod check;
pub mod clock_fit;
pub mod collector;
pub mod config;
pub mod doctor;
pub mod error;
mod host_track;
mod live;
pub mod observer;
pub mod outcome;
mod pause_loop;
pub mod run;
pub mod startup;
mod stream_sync;
pub mod top;
mod watch;
