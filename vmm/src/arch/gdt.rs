//! The flat 64-bit GDT the guest runs with, and the matching `kvm_segment`s.

use kvm_bindings::kvm_segment;

/// Selector of the 64-bit code segment.
pub const CODE_SELECTOR: u16 = 0x08;
/// Selector of the data segment.
pub const DATA_SELECTOR: u16 = 0x10;
/// Selector of the TSS.
pub const TSS_SELECTOR: u16 = 0x18;

/// Access/flags word (flags nibble << 12 | access byte) of the code segment:
/// present, DPL 0, execute/read, accessed; L=1 (64-bit), G=1.
const CODE_FLAGS: u16 = 0xa09b;
/// Data segment: present, DPL 0, read/write, accessed; D/B=1, G=1.
const DATA_FLAGS: u16 = 0xc093;
/// TSS: present, 64-bit busy TSS; G=1.
const TSS_FLAGS: u16 = 0x808b;

/// The GDT: null, code, data, TSS.
pub fn gdt() -> [u64; 4] {
    [
        0,
        descriptor(CODE_FLAGS, 0, 0xfffff),
        descriptor(DATA_FLAGS, 0, 0xfffff),
        descriptor(TSS_FLAGS, 0, 0xfffff),
    ]
}

/// Encodes one segment descriptor.
pub fn descriptor(flags: u16, base: u32, limit: u32) -> u64 {
    let base = u64::from(base);
    let limit = u64::from(limit);
    let flags = u64::from(flags);
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0x0000_ffff)
}

/// Decodes a descriptor into the `kvm_segment` KVM wants in `kvm_sregs`.
pub fn segment(entry: u64, selector: u16) -> kvm_segment {
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = (entry & 0xffff) | ((entry >> 32) & 0x000f_0000);
    let granular = (entry >> 55) & 1 == 1;
    let limit = if granular {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    kvm_segment {
        base,
        limit: limit as u32,
        selector,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g: granular as u8,
        avl: ((entry >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_segment_is_64_bit_ring0() {
        let table = gdt();
        assert_eq!(table[1], 0x00af_9b00_0000_ffff);
        let cs = segment(table[1], CODE_SELECTOR);
        assert_eq!((cs.l, cs.db, cs.dpl, cs.present, cs.s), (1, 0, 0, 1, 1));
        assert_eq!(cs.type_, 0xb);
        assert_eq!(cs.limit, 0xffff_ffff);
        assert_eq!(cs.base, 0);
    }

    #[test]
    fn data_and_tss_segments() {
        let table = gdt();
        assert_eq!(table[2], 0x00cf_9300_0000_ffff);
        let ds = segment(table[2], DATA_SELECTOR);
        assert_eq!((ds.type_, ds.db, ds.l, ds.s), (3, 1, 0, 1));
        let tr = segment(table[3], TSS_SELECTOR);
        assert_eq!((tr.type_, tr.s, tr.present), (0xb, 0, 1));
        assert_eq!(table[0], 0);
    }

    #[test]
    fn base_and_limit_round_trip() {
        let entry = descriptor(0x4093, 0x1234_5678, 0xabcde);
        let seg = segment(entry, 0);
        assert_eq!(seg.base, 0x1234_5678);
        assert_eq!(seg.limit, 0xabcde);
        assert_eq!(seg.g, 0);
    }
}
