//! How a tracepoint filter names the sw timer callback `apic_timer_fn`.
//!
//! Where the kernel's event filter understands the `.function` suffix
//! (Linux 6.3 and later) the filter names the symbol and the kernel resolves
//! it: `function.function == apic_timer_fn`, nothing read from
//! `/proc/kallsyms`. Elsewhere the filter compares the raw pointer with the
//! address found in `/proc/kallsyms`, read line by line up to the first
//! match only (the whole file is ~5 MB of text that the kernel formats on
//! every read: 50-70 ms and as many bytes of heap when read at once).
//!
//! Support is found by trying the named filter on a real perf event, never
//! from the kernel version.

use std::io::BufRead;
use thiserror::Error;

/// The sw timer callback of KVM's LAPIC timer.
pub const APIC_TIMER_FN: &str = "apic_timer_fn";
/// Where kernel symbols are listed.
pub const KALLSYMS: &str = "/proc/kallsyms";

/// Errors finding a kernel symbol.
#[derive(Debug, Error)]
pub enum KsymsError {
    /// `/proc/kallsyms` could not be read.
    #[error("{KALLSYMS}: {0}")]
    Read(std::io::Error),
    /// The symbol is not listed, or its address is hidden.
    #[error("{0} not in {KALLSYMS} (kvm not loaded, or addresses hidden by kptr_restrict)")]
    NotFound(String),
}

/// How a filter on a tracepoint's `function` field names the callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FunctionMatch {
    /// By name: `function.function == <name>` (Linux 6.3+).
    Named(String),
    /// By address from `/proc/kallsyms`: `function == 0x<address>`.
    Address(u64),
}

impl FunctionMatch {
    /// The filter expression on the tracepoint field `field`.
    pub fn filter(&self, field: &str) -> String {
        match self {
            FunctionMatch::Named(name) => format!("{field}.function == {name}"),
            FunctionMatch::Address(a) => format!("{field} == {a:#x}"),
        }
    }

    /// The address, when the filter uses one.
    pub fn address(&self) -> Option<u64> {
        match self {
            FunctionMatch::Named(_) => None,
            FunctionMatch::Address(a) => Some(*a),
        }
    }
}

impl From<u64> for FunctionMatch {
    /// A function by its address.
    fn from(address: u64) -> FunctionMatch {
        FunctionMatch::Address(address)
    }
}

/// The address of `symbol` in kallsyms text read from `reader`, stopping at
/// the first line that names it. `Ok(None)` when it is not listed or its
/// address is hidden (printed as 0 under `kptr_restrict`).
pub fn find_symbol(mut reader: impl BufRead, symbol: &str) -> std::io::Result<Option<u64>> {
    let mut line = Vec::with_capacity(128);
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(None);
        }
        // "<address> <type> <name>[\t[module]]"
        let mut parts = line
            .split(|&b| b == b' ' || b == b'\t' || b == b'\n')
            .filter(|p| !p.is_empty());
        let (Some(addr), Some(_kind), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if name != symbol.as_bytes() {
            continue;
        }
        let addr = std::str::from_utf8(addr)
            .ok()
            .and_then(|a| u64::from_str_radix(a, 16).ok());
        return Ok(addr.filter(|&a| a != 0));
    }
}

/// The address of `symbol` from `/proc/kallsyms` (read up to its line only).
pub fn kallsyms_address(symbol: &str) -> Result<u64, KsymsError> {
    let file = std::fs::File::open(KALLSYMS).map_err(KsymsError::Read)?;
    find_symbol(std::io::BufReader::with_capacity(16 * 1024, file), symbol)
        .map_err(KsymsError::Read)?
        .ok_or_else(|| KsymsError::NotFound(symbol.into()))
}

/// Chooses how to name `symbol` in a filter on the field `field`: tries the
/// named form with `try_filter` (which sets the filter on a real event)
/// unless `named_supported` already says it is not supported, and otherwise
/// finds the address with `lookup` and sets that form. Returns the form that
/// was set, and why the named one was not used (`None` when it was).
pub fn resolve(
    symbol: &str,
    field: &str,
    named_supported: bool,
    try_filter: &mut dyn FnMut(&str) -> Result<(), String>,
    lookup: &dyn Fn(&str) -> Result<u64, KsymsError>,
) -> Result<(FunctionMatch, Option<String>), String> {
    let mut why_not_named = Some("the kernel's event filter has no .function (Linux 6.3+)".into());
    if named_supported {
        let named = FunctionMatch::Named(symbol.into());
        match try_filter(&named.filter(field)) {
            Ok(()) => return Ok((named, None)),
            Err(e) => why_not_named = Some(e),
        }
    }
    let address = lookup(symbol).map_err(|e| match &why_not_named {
        Some(why) => format!("{e}; naming it in the filter failed too ({why})"),
        None => e.to_string(),
    })?;
    let by_address = FunctionMatch::Address(address);
    try_filter(&by_address.filter(field))?;
    Ok((by_address, why_not_named))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_match_and_ignores_hidden_ones() {
        let text = "ffffffff81000000 T _stext\nffffffff812c81d0 t apic_timer_fn\nffffffff812c8000 t apic_timer_fn_other\t[kvm]\n";
        assert_eq!(
            find_symbol(text.as_bytes(), "apic_timer_fn").unwrap(),
            Some(0xffff_ffff_812c_81d0)
        );
        assert_eq!(
            find_symbol(
                "ffffffffc0a01000 t apic_timer_fn\t[kvm]\n".as_bytes(),
                "apic_timer_fn"
            )
            .unwrap(),
            Some(0xffff_ffff_c0a0_1000)
        );
        assert_eq!(
            find_symbol(
                "0000000000000000 t apic_timer_fn\n".as_bytes(),
                "apic_timer_fn"
            )
            .unwrap(),
            None
        );
        assert_eq!(
            find_symbol(
                "garbage\n\nzz t apic_timer_fn\n".as_bytes(),
                "apic_timer_fn"
            )
            .unwrap(),
            None
        );
        assert_eq!(find_symbol("".as_bytes(), "apic_timer_fn").unwrap(), None);
    }

    #[test]
    fn stops_reading_at_the_match() {
        // A reader that fails after the matching line proves nothing after it is read.
        struct Then<'a>(&'a [u8]);
        impl std::io::Read for Then<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0.is_empty() {
                    return Err(std::io::Error::other("read past the match"));
                }
                let n = buf.len().min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let r = std::io::BufReader::with_capacity(8, Then(b"1 t a\n2 t apic_timer_fn\n"));
        assert_eq!(find_symbol(r, "apic_timer_fn").unwrap(), Some(2));
    }

    #[test]
    fn filters_name_the_symbol_or_its_address() {
        let named = FunctionMatch::Named(APIC_TIMER_FN.into());
        assert_eq!(
            named.filter("function"),
            "function.function == apic_timer_fn"
        );
        assert_eq!(named.address(), None);
        let addr = FunctionMatch::Address(0xffff_ffff_812c_81d0);
        assert_eq!(addr.filter("function"), "function == 0xffffffff812c81d0");
        assert_eq!(addr.address(), Some(0xffff_ffff_812c_81d0));
        assert_eq!(FunctionMatch::from(0xffff_ffff_812c_81d0), addr);
    }

    #[test]
    fn resolve_prefers_the_name_and_falls_back_to_the_address() {
        let found = |_: &str| Ok(0x1234);
        let hidden = |s: &str| Err(KsymsError::NotFound(s.into()));
        // A kernel that accepts the name: kallsyms is never read.
        let mut tried = Vec::new();
        let (m, why) = resolve(
            APIC_TIMER_FN,
            "function",
            true,
            &mut |f| {
                tried.push(f.to_string());
                Ok(())
            },
            &hidden,
        )
        .unwrap();
        assert_eq!(m, FunctionMatch::Named(APIC_TIMER_FN.into()));
        assert_eq!((why, tried.len()), (None, 1));
        // A kernel that rejects it (before 6.3): the address, with the reason.
        let (m, why) = resolve(
            APIC_TIMER_FN,
            "function",
            true,
            &mut |f| {
                if f.contains(".function") {
                    Err("setting filter: Invalid argument".into())
                } else {
                    Ok(())
                }
            },
            &found,
        )
        .unwrap();
        assert_eq!(m, FunctionMatch::Address(0x1234));
        assert!(why.unwrap().contains("Invalid argument"));
        // Known not to support it: not even tried.
        let (m, why) = resolve(
            APIC_TIMER_FN,
            "function",
            false,
            &mut |f| {
                assert!(!f.contains(".function"), "{f}");
                Ok(())
            },
            &found,
        )
        .unwrap();
        assert_eq!(m, FunctionMatch::Address(0x1234));
        assert!(why.unwrap().contains("6.3"));
        // Neither: why.
        let err = resolve(APIC_TIMER_FN, "function", false, &mut |_| Ok(()), &hidden).unwrap_err();
        assert!(err.contains("kptr_restrict"), "{err}");
    }
}
