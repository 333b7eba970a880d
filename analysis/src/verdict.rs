//! The regression verdict of one pause: **ok**, **burst** or **not
//! exercised**, from figures the analysis already computed. Pure: the same
//! rules judge a live run, a saved run and a bpftrace log.
//!
//! Rules (in this order; thresholds are [`Thresholds`]):
//!
//! 1. **burst** if any of: the host ran more than `max_host_ratio` times the
//!    nominal number of timer callbacks in the first second after resume; the
//!    guest took more than `max_guest_ratio` times its nominal ticks in the
//!    first 100 ms after resume; KVM went from the hv timer to the sw timer
//!    and stayed there.
//! 2. **not exercised** if the host side was not seen (without host probes
//!    the stall is invisible: the guest mostly sees a single coalesced
//!    interrupt), or if the hv timer was not in use before the pause (the bug
//!    lives on the hv timer path; a sw-only host cannot show it).
//! 3. **ok** otherwise.

use serde::{Deserialize, Serialize};

/// Default of [`Thresholds::max_host_ratio`].
pub const DEFAULT_MAX_HOST_RATIO: f64 = 1.5;
/// Default of [`Thresholds::max_guest_ratio`].
pub const DEFAULT_MAX_GUEST_RATIO: f64 = 2.0;

/// Limits above which a resume counts as a burst.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Host timer callbacks in the first second after resume over nominal.
    /// An unpatched kernel after a pause of P seconds runs about P + 1 times
    /// nominal; a patched one about 1.
    pub max_host_ratio: f64,
    /// Guest ticks in the first 100 ms after resume over nominal.
    pub max_guest_ratio: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            max_host_ratio: DEFAULT_MAX_HOST_RATIO,
            max_guest_ratio: DEFAULT_MAX_GUEST_RATIO,
        }
    }
}

/// The verdict kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The pause was exercised on the hv path and no burst followed.
    Ok,
    /// A burst (or an hv-to-sw fallback) followed the resume.
    Burst,
    /// The case could not show the bug here; `reasons` says why.
    NotExercised,
}

impl Kind {
    /// `ok`, `burst`, `not exercised`.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Ok => "ok",
            Kind::Burst => "burst",
            Kind::NotExercised => "not exercised",
        }
    }
}

/// What the verdict of one pause is judged on.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    /// Guest `burst_ratio` (first 100 ms over nominal), when the guest side was seen.
    pub guest_burst_ratio: Option<f64>,
    /// Host callbacks in the first second after resume over nominal, or why
    /// the host side cannot be used.
    pub host_burst_ratio: Result<f64, String>,
    /// Host callbacks in the first second after resume.
    pub host_callbacks_first_1s: Option<u64>,
    /// Whether the hv timer ran before the pause: `Ok(true/false)` when
    /// measured, `Err(reason)` when it could not be.
    pub hv_used_before: Result<bool, String>,
    /// When KVM fell from hv to sw for good, if that happened during this
    /// pause or in the second after its resume (ms since ready).
    pub fell_back_at_ms: Option<f64>,
    /// The longest run of host callbacks inside one interrupt, as words
    /// (told with a burst).
    pub longest_run: Option<String>,
}

/// What the fix is, for the reasons of a fallback.
pub const FIX_NOTE: &str =
    "the CVE-2025-71104 signature (fixed by KVM commit 18ab3fc8e880, \"Fix VM hard lockup after prolonged inactivity with periodic HV timer\")";

/// Why KVM falling back to the sw timer for good at `t_ms` is a burst.
pub fn fallback_reason(t_ms: f64, when: &str) -> String {
    format!(
        "KVM fell back from the hv timer to the sw timer at t={:.3} s {when} and stayed there: {FIX_NOTE}",
        t_ms / 1e3
    )
}

/// The verdict of a fallback outside every pause's span (before the first
/// pause, or later than a second after a resume): its own finding, not the
/// pause's.
pub fn outside_fallback(t_ms: f64, when: &str) -> Verdict {
    Verdict {
        kind: Kind::Burst,
        reasons: vec![
            fallback_reason(t_ms, when),
            "no pause caused it: the vCPU thread was kept out of guest mode for longer than a timer period while the hv timer was armed, and on this kernel any such stall ends in the fallback".into(),
        ],
    }
}

/// Why the host side is missing when no host probe counted timer callbacks.
pub const HOST_NOT_MEASURED: &str =
    "host timer callbacks not measured (host probes unavailable): only the guest side was seen";

/// The verdict of one pause, with every reason that led to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// ok / burst / not exercised.
    pub kind: Kind,
    /// Why, one sentence each.
    pub reasons: Vec<String>,
}

/// Judges one pause.
pub fn judge(e: &Evidence, t: &Thresholds) -> Verdict {
    let mut burst = Vec::new();
    if let Some(&r) = e
        .host_burst_ratio
        .as_ref()
        .ok()
        .filter(|&&r| r > t.max_host_ratio)
    {
        burst.push(format!(
            "host ran {} timer callbacks in the first second after resume, {r:.2}x nominal (limit {:.2}x)",
            e.host_callbacks_first_1s
                .map_or_else(|| "?".into(), |n| n.to_string()),
            t.max_host_ratio
        ));
    }
    if let Some(r) = e.guest_burst_ratio.filter(|&r| r > t.max_guest_ratio) {
        burst.push(format!(
            "guest took {r:.2}x its nominal ticks in the first 100 ms after resume (limit {:.2}x)",
            t.max_guest_ratio
        ));
    }
    if let Some(t_ms) = e.fell_back_at_ms {
        burst.push(fallback_reason(
            t_ms,
            "(this pause or the second after its resume)",
        ));
    }
    if !burst.is_empty() {
        burst.extend(e.longest_run.clone());
        return Verdict {
            kind: Kind::Burst,
            reasons: burst,
        };
    }
    let mut missing = Vec::new();
    if let Err(why) = &e.host_burst_ratio {
        missing.push(why.clone());
    }
    match &e.hv_used_before {
        Ok(true) => {}
        Ok(false) => missing.push("the hv timer was not in use right before the pause".into()),
        Err(why) => missing.push(why.clone()),
    }
    if missing.is_empty() {
        Verdict {
            kind: Kind::Ok,
            reasons: vec![format!(
                "hv timer in use before the pause; host burst ratio {:.2} (limit {:.2})",
                e.host_burst_ratio.as_ref().map_or(0.0, |&r| r),
                t.max_host_ratio
            )],
        }
    } else {
        Verdict {
            kind: Kind::NotExercised,
            reasons: missing,
        }
    }
}

/// The verdict of several pauses or cases: burst if any is, else ok if any
/// is, else not exercised.
pub fn combine<'a>(kinds: impl IntoIterator<Item = &'a Kind>) -> Kind {
    let mut any_ok = false;
    for k in kinds {
        match k {
            Kind::Burst => return Kind::Burst,
            Kind::Ok => any_ok = true,
            Kind::NotExercised => {}
        }
    }
    if any_ok {
        Kind::Ok
    } else {
        Kind::NotExercised
    }
}

/// Exit code for `git bisect run`: 0 ok, 1 burst, 125 nothing exercised.
pub fn exit_code(kind: Kind) -> i32 {
    match kind {
        Kind::Ok => 0,
        Kind::Burst => 1,
        Kind::NotExercised => 125,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercised(host: f64, guest: f64) -> Evidence {
        Evidence {
            guest_burst_ratio: Some(guest),
            host_burst_ratio: Ok(host),
            host_callbacks_first_1s: Some((host * 1000.0) as u64),
            hv_used_before: Ok(true),
            fell_back_at_ms: None,
            longest_run: None,
        }
    }

    #[test]
    fn thresholds_at_their_edges() {
        let t = Thresholds::default();
        assert_eq!(judge(&exercised(1.5, 1.0), &t).kind, Kind::Ok);
        assert_eq!(judge(&exercised(1.5001, 1.0), &t).kind, Kind::Burst);
        assert_eq!(judge(&exercised(1.0, 2.0), &t).kind, Kind::Ok);
        assert_eq!(judge(&exercised(1.0, 2.01), &t).kind, Kind::Burst);
        let strict = Thresholds {
            max_host_ratio: 1.0,
            max_guest_ratio: 1.0,
        };
        assert_eq!(judge(&exercised(1.2, 1.0), &strict).kind, Kind::Burst);
    }

    #[test]
    fn unpatched_figures_are_a_burst_with_reasons() {
        let mut e = exercised(51543.0 / 4768.0, 1.0);
        e.fell_back_at_ms = Some(10_000.0);
        e.longest_run = Some("longest run in one interrupt 51541 callbacks".into());
        let v = judge(&e, &Thresholds::default());
        assert_eq!(v.kind, Kind::Burst);
        assert_eq!(v.reasons.len(), 3, "{:?}", v.reasons);
        assert!(v.reasons[0].contains("10.81x"), "{:?}", v.reasons);
        assert!(v.reasons[1].contains("t=10.000 s"), "{:?}", v.reasons);
        assert!(v.reasons[1].contains("CVE-2025-71104"), "{:?}", v.reasons);
        assert!(v.reasons[2].contains("51541"), "{:?}", v.reasons);
    }

    #[test]
    fn fallback_alone_is_a_burst() {
        let mut e = exercised(1.0, 1.0);
        e.fell_back_at_ms = Some(3.0);
        assert_eq!(judge(&e, &Thresholds::default()).kind, Kind::Burst);
        let outside = outside_fallback(250.0, "before pause 1");
        assert_eq!(outside.kind, Kind::Burst);
        assert!(outside.reasons[0].contains("t=0.250 s before pause 1"));
        assert!(outside.reasons[1].contains("no pause caused it"));
    }

    #[test]
    fn sw_only_host_is_not_exercised_with_the_reason() {
        let mut e = exercised(0.99, 1.01);
        e.hv_used_before = Err("hv timer not available on this host: kvm_pvm".into());
        let v = judge(&e, &Thresholds::default());
        assert_eq!(v.kind, Kind::NotExercised);
        assert!(v.reasons[0].contains("kvm_pvm"));
    }

    #[test]
    fn guest_only_is_not_exercised_but_a_guest_burst_still_counts() {
        let e = Evidence {
            guest_burst_ratio: Some(1.0),
            host_burst_ratio: Err(HOST_NOT_MEASURED.into()),
            host_callbacks_first_1s: None,
            hv_used_before: Err("host probes off".into()),
            fell_back_at_ms: None,
            longest_run: None,
        };
        let v = judge(&e, &Thresholds::default());
        assert_eq!(v.kind, Kind::NotExercised);
        assert_eq!(v.reasons.len(), 2);
        let storm = Evidence {
            guest_burst_ratio: Some(30.0),
            ..e
        };
        assert_eq!(judge(&storm, &Thresholds::default()).kind, Kind::Burst);
    }

    #[test]
    fn combining_and_exit_codes() {
        use Kind::*;
        assert_eq!(combine(&[Ok, NotExercised]), Ok);
        assert_eq!(combine(&[Ok, Burst, NotExercised]), Burst);
        assert_eq!(combine(&[NotExercised, NotExercised]), NotExercised);
        assert_eq!(combine(&[]), NotExercised);
        assert_eq!(exit_code(Ok), 0);
        assert_eq!(exit_code(Burst), 1);
        assert_eq!(exit_code(NotExercised), 125);
    }
}
