//! The one place every mode, outcome and probe name is spelled: on the
//! command line, in the record (JSON) and in the printed text.
//!
//! Each type has [`Display`](std::fmt::Display) and
//! [`FromStr`](std::str::FromStr) with the same names, its `ALL` values and
//! `NAMES` in order, and a `help` line per value (the command line's
//! `--help` lists them from here). It serializes as its name, and a record
//! with an unknown name fails to load with one line naming the field and the
//! names allowed ([`UnknownName`]).
//!
//! ```
//! use tickburst_analysis::names::Timer;
//! assert_eq!("tsc-deadline".parse::<Timer>(), Ok(Timer::TscDeadline));
//! assert_eq!(Timer::OneShot.to_string(), "oneshot");
//! assert_eq!(Timer::NAMES, ["periodic", "oneshot", "tsc-deadline"]);
//! ```

use crate::limits::one_line;
use thiserror::Error;

/// A name that is not one of its type's names.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field}: unknown value `{value}` (allowed {})", .allowed.join(", "))]
pub struct UnknownName {
    /// The field (record path) or kind of name.
    pub field: &'static str,
    /// The value given, on one short line.
    pub value: String,
    /// The names allowed.
    pub allowed: &'static [&'static str],
}

/// What every name type has, for code that handles any of them (the
/// command line's parsers).
pub trait Named: Copy + Send + Sync + 'static {
    /// The name, as on the command line and in the record.
    fn name(self) -> &'static str;
    /// One line saying what the value means.
    fn help(self) -> &'static str;
}

/// Defines a name enum: the variants with their names and help lines, and
/// the conversions from and to text and JSON.
macro_rules! names {
    (
        $(#[$meta:meta])*
        pub enum $name:ident in $field:literal {
            $($variant:ident = $text:literal: $help:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $(#[doc = $help] $variant,)+
        }

        impl $name {
            /// Every value, in order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];
            /// Every name, in the order of `ALL`.
            pub const NAMES: &'static [&'static str] = &[$($text,)+];
            /// The record field (or kind of name) unknown names are reported for.
            pub const FIELD: &'static str = $field;

            /// The name, as on the command line and in the record.
            pub const fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// One line saying what the value means (the command line's help).
            pub const fn help(self) -> &'static str {
                match self {
                    $($name::$variant => $help,)+
                }
            }
        }

        impl Named for $name {
            fn name(self) -> &'static str {
                $name::name(self)
            }
            fn help(self) -> &'static str {
                $name::help(self)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.name() == s)
                    .ok_or_else(|| UnknownName {
                        field: $field,
                        value: one_line(s, 64),
                        allowed: $name::NAMES,
                    })
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        write!(f, "one of {}", $name::NAMES.join(", "))
                    }
                    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<$name, E> {
                        s.parse().map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

names! {
    /// How a run ended (`outcome`).
    pub enum Outcome in "outcome" {
        Completed = "completed": "Every cycle ran",
        Interrupted = "interrupted": "Ctrl-C or SIGTERM ended it early; the record is partial",
        Failed = "failed": "The guest or a vCPU failed after it was ready; the record is partial",
    }
}

names! {
    /// What the host's timer counts cover (`scope` of a window's host
    /// columns, `samples.host_scope`, `host.probes.sw_timer_scope`).
    pub enum Scope in "scope" {
        Vcpu = "vcpu": "Our vCPU's hrtimer only",
        HostWide = "host-wide": "Every apic_timer_fn callback on the host (our hrtimer was not learned)",
    }
}

names! {
    /// Which LAPIC timer back end KVM used (`host.timer_backend.kind`).
    pub enum BackendKind in "host.timer_backend.kind" {
        Hv = "hv": "The VMX-preemption (hv) timer throughout",
        Sw = "sw": "The hrtimer (sw) timer throughout",
        Mixed = "mixed": "Both: KVM switched between them",
        Unknown = "unknown": "Not known (no kvm_hv_timer_state event, or the probe was off)",
    }
}

names! {
    /// A host probe (`host.probes.enabled`, `host.probes.missing[].probe`).
    pub enum Probe in "host.probes (a probe name)" {
        SwTimer = "sw_timer": "apic_timer_fn callbacks (timer:hrtimer_expire_entry)",
        HvTimer = "hv_timer": "VMX-preemption timer exits (kvm:kvm_exit, reason 52)",
        HvState = "hv_state": "hv/sw switches (kvm:kvm_hv_timer_state)",
        KvmStats = "kvm_stats": "KVM binary stats of the vCPU",
    }
}

names! {
    /// How the guest accesses its LAPIC (`--apic`, `config.apic`).
    pub enum Apic in "config.apic" {
        X2Apic = "x2apic": "MSR access (x2APIC)",
        XApic = "xapic": "MMIO access at 0xFEE00000 (xAPIC)",
    }
}

names! {
    /// What the guest does between ticks (`--idle`, `config.idle`).
    pub enum Idle in "config.idle" {
        Hlt = "hlt": "`sti; hlt`: the vCPU blocks in KVM between ticks",
        Spin = "spin": "A `pause` loop: the vCPU stays in guest mode",
        SelfTestHostile = "self-test-hostile": "Self-test: HLT idle, and the guest writes hostile tick-ring contents (stamps from the past and the future, head jumps and regressions); they must be counted as invalid, never trusted",
        SelfTestExits = "self-test-exits": "Exit-heavy self-test (what host tracing costs the guest): CPUID in a loop, each one an exit to KVM, counted in guest memory; the timer ticks as usual",
        SelfTestFault = "self-test-fault": "Self-test of the fault path: the guest executes `ud2` and reports vector 6",
    }
}

impl Idle {
    /// The values `--idle` accepts (the fault self-test is for the tests).
    pub const CLI: &'static [Idle] = &[
        Idle::Hlt,
        Idle::Spin,
        Idle::SelfTestHostile,
        Idle::SelfTestExits,
    ];
}

names! {
    /// The LAPIC timer mode (`--timer`, `config.timer`).
    pub enum Timer in "config.timer" {
        Periodic = "periodic": "LVT periodic mode (the subject)",
        OneShot = "oneshot": "One-shot, re-armed in the ISR (a control)",
        TscDeadline = "tsc-deadline": "TSC-deadline through IA32_TSC_DEADLINE (a control)",
    }
}

names! {
    /// How the VM is paused (`--pause-method`, `config.pause_method`).
    pub enum PauseMethod in "config.pause_method" {
        Kick = "kick": "vCPU kicked out of KVM_RUN and parked; the VMM keeps running",
        Sigstop = "sigstop": "The whole VMM process stopped with SIGSTOP, continued with SIGCONT",
        Freeze = "freeze": "The VMM's cgroup frozen and thawed (v2 cgroup.freeze or v1 freezer)",
    }
}

impl PauseMethod {
    /// Whether the method stops the whole VMM process (every vCPU, and a
    /// supervising process must do it).
    pub fn stops_whole_process(self) -> bool {
        self != PauseMethod::Kick
    }
}

names! {
    /// `--host-probes` (`host.probes.mode`).
    pub enum ProbeMode in "host.probes.mode" {
        Auto = "auto": "Use what this host offers; name what is missing",
        On = "on": "Fail (exit 2) if a probe cannot be opened",
        Off = "off": "Guest-only",
    }
}

names! {
    /// `--format` of `check` and `analyze`.
    pub enum Format in "format" {
        Table = "table": "Aligned text",
        Json = "json": "One JSON document",
        Ktap = "ktap": "KTAP version 1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<T>(all: &[T])
    where
        T: Copy + PartialEq + std::fmt::Debug + std::fmt::Display + std::str::FromStr,
        T: serde::Serialize + serde::de::DeserializeOwned,
    {
        for &v in all {
            let name = v.to_string();
            assert_eq!(name.parse::<T>().ok(), Some(v), "{name}");
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<T>(&json).unwrap(), v);
        }
    }

    #[test]
    fn every_name_round_trips_through_text_and_json() {
        round_trips(Outcome::ALL);
        round_trips(Scope::ALL);
        round_trips(BackendKind::ALL);
        round_trips(Probe::ALL);
        round_trips(Apic::ALL);
        round_trips(Idle::ALL);
        round_trips(Timer::ALL);
        round_trips(PauseMethod::ALL);
        round_trips(ProbeMode::ALL);
        round_trips(Format::ALL);
    }

    #[test]
    fn an_unknown_name_is_one_line_naming_the_field() {
        let e = "x\ny".parse::<Apic>().unwrap_err().to_string();
        assert_eq!(
            e,
            "config.apic: unknown value `x\\ny` (allowed x2apic, xapic)"
        );
        let e = serde_json::from_str::<Timer>("\"burst\"").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("config.timer: unknown value `burst`"),
            "{e}"
        );
        assert!(serde_json::from_str::<Scope>("3").is_err());
    }

    #[test]
    fn the_command_line_idle_modes_leave_out_the_fault_test() {
        assert!(!Idle::CLI.contains(&Idle::SelfTestFault));
        assert!(PauseMethod::Sigstop.stops_whole_process());
        assert!(!PauseMethod::Kick.stops_whole_process());
    }
}
