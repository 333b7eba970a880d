//! KVM binary statistics of a vCPU (`KVM_GET_STATS_FD`): `irq_injections`,
//! `exits`, `halt_exits`, `signal_exits`. kvm-ioctls does not wrap this ioctl,
//! so it is defined here with vmm-sys-util.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;
use thiserror::Error;
use vmm_sys_util::ioctl::ioctl;

/// The ioctl number of `KVM_GET_STATS_FD` (`_IO(KVMIO, 0xce)`).
mod nr {
    use vmm_sys_util::ioctl_io_nr;
    /// The KVM ioctl type.
    const KVMIO: u32 = 0xae;
    ioctl_io_nr!(KVM_GET_STATS_FD, KVMIO, 0xce);
}
use nr::KVM_GET_STATS_FD;

/// Size of `struct kvm_stats_header`.
const HEADER_SIZE: usize = 24;
/// Size of `struct kvm_stats_desc` without the name.
const DESC_FIXED_SIZE: usize = 16;

/// The stats tickburst reads, by their KVM names.
pub const STAT_NAMES: [&str; 4] = ["irq_injections", "exits", "halt_exits", "signal_exits"];

/// Errors opening or reading the stats.
#[derive(Debug, Error)]
pub enum StatsError {
    /// `KVM_GET_STATS_FD` failed.
    #[error("KVM_GET_STATS_FD failed: {0}")]
    Open(std::io::Error),
    /// Reading the stats file failed.
    #[error("reading KVM stats: {0}")]
    Read(std::io::Error),
    /// The header or descriptors are not what the ABI says.
    #[error("KVM stats: {0}")]
    Format(String),
}

pub use tickburst_analysis::vcpu_stats::VcpuStats;

/// An open vCPU stats file with the offsets of the stats we read.
#[derive(Debug)]
pub struct StatsReader {
    file: File,
    offsets: [Option<u64>; 4],
}

fn u32_at(buf: &[u8], at: usize) -> Result<u32, StatsError> {
    buf.get(at..at + 4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
        .ok_or_else(|| StatsError::Format(format!("short read at {at}")))
}

/// Finds the data offsets of `names` in a stats file's header and
/// descriptors (`read_at(offset, buf)` reads the file). Pure over its input,
/// so it is tested on recorded bytes.
pub fn locate(
    read_at: &dyn Fn(u64, &mut [u8]) -> std::io::Result<usize>,
    names: &[&str],
) -> Result<Vec<Option<u64>>, StatsError> {
    let mut header = [0u8; HEADER_SIZE];
    read_at(0, &mut header).map_err(StatsError::Read)?;
    let name_size = u32_at(&header, 4)? as usize;
    let num_desc = u32_at(&header, 8)? as usize;
    let desc_offset = u64::from(u32_at(&header, 16)?);
    let data_offset = u64::from(u32_at(&header, 20)?);
    if name_size == 0 || name_size > 4096 || num_desc > 4096 {
        return Err(StatsError::Format(format!(
            "implausible header: name_size {name_size}, num_desc {num_desc}"
        )));
    }
    let desc_size = DESC_FIXED_SIZE + name_size;
    let mut descs = vec![0u8; desc_size * num_desc];
    let n = read_at(desc_offset, &mut descs).map_err(StatsError::Read)?;
    if n < descs.len() {
        return Err(StatsError::Format("short descriptor block".into()));
    }
    let mut found = vec![None; names.len()];
    for desc in descs.chunks_exact(desc_size) {
        let offset = u64::from(u32_at(desc, 8)?);
        let raw_name = &desc[DESC_FIXED_SIZE..];
        let name = raw_name.split(|&b| b == 0).next().unwrap_or(&[]);
        if let Some(i) = names.iter().position(|n| n.as_bytes() == name) {
            found[i] = Some(data_offset + offset);
        }
    }
    Ok(found)
}

impl StatsReader {
    /// Opens the stats of `vcpu` (any fd KVM accepts `KVM_GET_STATS_FD` on).
    pub fn open(vcpu: &impl AsRawFd) -> Result<StatsReader, StatsError> {
        // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new fd or
        // -1; `vcpu` is a live vCPU fd.
        let fd = unsafe { ioctl(vcpu, KVM_GET_STATS_FD()) };
        if fd < 0 {
            return Err(StatsError::Open(std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
        let file = unsafe { File::from_raw_fd(fd) };
        let read_at = |off: u64, buf: &mut [u8]| file.read_at(buf, off);
        let found = locate(&read_at, &STAT_NAMES)?;
        let mut offsets = [None; 4];
        offsets.copy_from_slice(&found);
        Ok(StatsReader { file, offsets })
    }

    /// Reads the current cumulative values.
    pub fn read(&self) -> VcpuStats {
        let value = |i: usize| {
            let off = self.offsets[i]?;
            let mut buf = [0u8; 8];
            match self.file.read_at(&mut buf, off) {
                Ok(8) => Some(u64::from_le_bytes(buf)),
                _ => None,
            }
        };
        VcpuStats {
            irq_injections: value(0).into(),
            exits: value(1).into(),
            halt_exits: value(2).into(),
            signal_exits: value(3).into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a stats file image: header, descriptors, data.
    fn image(names: &[&str], name_size: usize) -> Vec<u8> {
        let desc_offset = 64u32;
        let desc_size = DESC_FIXED_SIZE + name_size;
        let data_offset = desc_offset + (desc_size * names.len()) as u32;
        let mut img = vec![0u8; data_offset as usize + 8 * names.len()];
        img[4..8].copy_from_slice(&(name_size as u32).to_le_bytes());
        img[8..12].copy_from_slice(&(names.len() as u32).to_le_bytes());
        img[16..20].copy_from_slice(&desc_offset.to_le_bytes());
        img[20..24].copy_from_slice(&data_offset.to_le_bytes());
        for (i, name) in names.iter().enumerate() {
            let d = desc_offset as usize + i * desc_size;
            img[d + 8..d + 12].copy_from_slice(&((8 * i) as u32).to_le_bytes());
            img[d + DESC_FIXED_SIZE..d + DESC_FIXED_SIZE + name.len()]
                .copy_from_slice(name.as_bytes());
            let v = data_offset as usize + 8 * i;
            img[v..v + 8].copy_from_slice(&(1000 + i as u64).to_le_bytes());
        }
        img
    }

    fn reader(img: &[u8]) -> impl Fn(u64, &mut [u8]) -> std::io::Result<usize> + '_ {
        move |off, buf| {
            let off = off as usize;
            let n = buf.len().min(img.len().saturating_sub(off));
            buf[..n].copy_from_slice(&img[off..off + n]);
            Ok(n)
        }
    }

    #[test]
    fn locates_named_stats() {
        let img = image(&["halt_exits", "exits", "irq_injections", "other"], 48);
        let found = locate(&reader(&img), &STAT_NAMES).unwrap();
        let data = 64 + 4 * (16 + 48) as u64;
        assert_eq!(
            found,
            vec![Some(data + 16), Some(data + 8), Some(data), None]
        );
    }

    #[test]
    fn rejects_implausible_headers() {
        let mut img = image(&["exits"], 48);
        img[8..12].copy_from_slice(&1_000_000u32.to_le_bytes());
        assert!(locate(&reader(&img), &STAT_NAMES).is_err());
        let short = &image(&["exits", "halt_exits"], 48)[..100];
        assert!(locate(&reader(short), &STAT_NAMES).is_err());
    }
}
