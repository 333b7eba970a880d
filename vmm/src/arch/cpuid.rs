//! CPUID for the guest: what KVM supports, with x2APIC and TSC-deadline
//! advertised and the APIC ID of each vCPU.

use kvm_bindings::CpuId;

/// CPUID leaf 1: feature information.
pub const LEAF_FEATURES: u32 = 1;
/// CPUID leaf 0xB: extended topology (x2APIC ID in EDX).
pub const LEAF_TOPOLOGY: u32 = 0xb;
/// CPUID.1:ECX: x2APIC.
pub const ECX_X2APIC: u32 = 1 << 21;
/// CPUID.1:ECX: TSC-deadline timer.
pub const ECX_TSC_DEADLINE: u32 = 1 << 24;
/// CPUID.1:ECX: hypervisor present.
pub const ECX_HYPERVISOR: u32 = 1 << 31;
/// CPUID.1:EDX: on-chip APIC.
pub const EDX_APIC: u32 = 1 << 9;

/// Adjusts KVM's supported CPUID for the vCPU with APIC ID `apic_id`.
pub fn adjust(cpuid: &mut CpuId, apic_id: u32) {
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            LEAF_FEATURES => {
                entry.ecx |= ECX_X2APIC | ECX_TSC_DEADLINE | ECX_HYPERVISOR;
                entry.edx |= EDX_APIC;
                entry.ebx = (entry.ebx & 0x00ff_ffff) | (apic_id << 24);
            }
            LEAF_TOPOLOGY => entry.edx = apic_id,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    #[test]
    fn advertises_x2apic_and_deadline() {
        let entries = [
            kvm_cpuid_entry2 {
                function: 1,
                ebx: 0xff00_0800,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                edx: 7,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0x8000_0001,
                ecx: 0x55,
                ..Default::default()
            },
        ];
        let mut cpuid = CpuId::from_entries(&entries).unwrap();
        adjust(&mut cpuid, 0);
        let s = cpuid.as_slice();
        assert_eq!(
            s[0].ecx & (ECX_X2APIC | ECX_TSC_DEADLINE),
            ECX_X2APIC | ECX_TSC_DEADLINE
        );
        assert_ne!(s[0].edx & EDX_APIC, 0);
        assert_eq!(s[0].ebx, 0x0000_0800);
        assert_eq!(s[1].edx, 0);
        assert_eq!(s[2].ecx, 0x55);
        adjust(&mut cpuid, 5);
        let s = cpuid.as_slice();
        assert_eq!(s[0].ebx >> 24, 5);
        assert_eq!(s[1].edx, 5);
    }
}
