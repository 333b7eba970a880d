//! Finding the KVM VMs of this host from `/proc`, whoever started them.
//!
//! - A VM is a process holding a KVM VM fd (`/proc/<pid>/fd/<n>` links to
//!   `anon_inode:kvm-vm`); its vCPUs are its `anon_inode:kvm-vcpu:<index>`
//!   fds.
//! - Which thread runs which vCPU, without relying on thread names (QEMU
//!   names them only with `debug-threads=on`): a vCPU thread spends its life
//!   inside `ioctl(vcpu_fd, KVM_RUN)`, and `/proc/<pid>/task/<tid>/syscall`
//!   shows that call with its fd (`16 0x<fd> 0xae80 ...`) while the thread
//!   is not on a CPU (blocked in guest HLT, or preempted). KVM's own worker
//!   threads in the process (`kvm-nx-lpage-recovery`, cloned from a vCPU
//!   thread in `KVM_RUN`) show the same stale registers: they are left out
//!   by their task flags (`PF_USER_WORKER`, `PF_KTHREAD`, `PF_IO_WORKER`).
//!   A thread that is in guest mode at the moment reads `running`; it is
//!   tried again at the next scan.
//! - A VM is known by its pid and start time, so a reused pid is a new VM.
//!
//! Reading another process's `fd` links and `syscall` file needs ptrace
//! access to it (root): processes whose `fd` directory we may not read are
//! skipped and counted ([`Scan::denied`]; kernel threads left out).

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use thiserror::Error;

/// `ioctl` on x86-64.
const SYS_IOCTL: u64 = 16;
/// `KVM_RUN` = `_IO(0xAE, 0x80)`.
const KVM_RUN: u64 = 0xae80;
/// Task flags of threads that are not userspace threads (include/linux/sched.h):
/// `PF_IO_WORKER`, `PF_USER_WORKER`, `PF_KTHREAD`.
const WORKER_FLAGS: u64 = 0x10 | 0x4000 | PF_KTHREAD;
/// `PF_KTHREAD`: a kernel thread (never a VMM).
const PF_KTHREAD: u64 = 0x0020_0000;
/// Reads of a thread's `syscall` file while it shows `running`.
const RUNNING_TRIES: u32 = 20;
/// The longest VM name kept (from an untrusted command line).
const NAME_MAX: usize = 32;

/// Why a process could not be read.
#[derive(Debug, Error)]
pub enum DiscoverError {
    /// `/proc` itself is not readable.
    #[error("reading {path}: {source}")]
    Proc {
        /// What was read.
        path: String,
        /// Why not.
        source: std::io::Error,
    },
}

/// What an fd of a process is, as far as KVM goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvmFd {
    /// A VM fd (`anon_inode:kvm-vm`).
    Vm,
    /// A vCPU fd with its index (`anon_inode:kvm-vcpu:<n>`).
    Vcpu(u32),
}

/// Parses the target of an fd link.
pub fn parse_fd_link(target: &str) -> Option<KvmFd> {
    match target.strip_prefix("anon_inode:kvm-")? {
        "vm" => Some(KvmFd::Vm),
        rest => rest.strip_prefix("vcpu:")?.parse().ok().map(KvmFd::Vcpu),
    }
}

/// The fd of a thread's current `ioctl(fd, KVM_RUN)` from its
/// `/proc/<pid>/task/<tid>/syscall` text, if that is what it is in.
pub fn parse_kvm_run_fd(syscall: &str) -> Option<i32> {
    let mut fields = syscall.split_whitespace();
    let nr: u64 = fields.next()?.parse().ok()?;
    let hex = |s: &str| u64::from_str_radix(s.strip_prefix("0x")?, 16).ok();
    let fd = hex(fields.next()?)?;
    let request = hex(fields.next()?)?;
    (nr == SYS_IOCTL && request == KVM_RUN)
        .then(|| i32::try_from(fd).ok())
        .flatten()
}

/// Fields of `/proc/<pid>/stat` after the command (which may hold spaces
/// and parentheses): `state` is field 0 of the result.
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rfind(')')
        .map_or_else(Vec::new, |i| stat[i + 1..].split_whitespace().collect())
}

/// The task flags (field 9 of `stat`).
pub fn stat_flags(stat: &str) -> Option<u64> {
    stat_fields(stat).get(6)?.parse().ok()
}

/// The start time in clock ticks since boot (field 22 of `stat`).
pub fn stat_start_time(stat: &str) -> Option<u64> {
    stat_fields(stat).get(19)?.parse().ok()
}

/// A short name for a VM from its NUL-separated command line: QEMU's
/// `-name guest=NAME,...` or `-name NAME`, else the program's file name.
/// Untrusted: non-printing characters become `?`, and it is cut short.
pub fn vm_name(cmdline: &[u8]) -> String {
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let named = args.iter().enumerate().find_map(|(i, a)| {
        let value = match a.as_str() {
            "-name" | "--name" => args.get(i + 1)?.as_str(),
            other => other
                .strip_prefix("-name=")
                .or_else(|| other.strip_prefix("--name="))?,
        };
        let first = value.split(',').next()?;
        Some(first.strip_prefix("guest=").unwrap_or(first).to_string())
    });
    let name = named.filter(|n| !n.is_empty()).unwrap_or_else(|| {
        args.first()
            .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
            .unwrap_or_else(|| "?".into())
    });
    name.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(NAME_MAX)
        .collect()
}

/// One vCPU of a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcpuInfo {
    /// Its fd in the VMM.
    pub fd: i32,
    /// The thread running it, once found.
    pub tid: Option<u32>,
}

/// One VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    /// The VMM's pid.
    pub pid: u32,
    /// Its start time (clock ticks since boot): with the pid, the VM's
    /// identity.
    pub start_time: u64,
    /// Its name ([`vm_name`]).
    pub name: String,
    /// Its vCPUs by index.
    pub vcpus: BTreeMap<u32, VcpuInfo>,
}

/// Whether process `pid` exists now.
pub fn process_exists(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Whether reading a process's `/proc` files failed for want of permission
/// (EACCES, EPERM), not because it exited meanwhile (ENOENT, ESRCH).
pub fn permission_denied(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::PermissionDenied
}

/// The KVM fds of process `pid` under `proc_root`, or `None` when it holds
/// no VM fd (or exited meanwhile); an error when its `fd` directory cannot
/// be read. A link that cannot be read is left out: it is EACCES also once
/// its process is reaped, and was even for root on a sandbox's pid 1.
pub fn read_vm(proc_root: &Path, pid: u32) -> io::Result<Option<Vm>> {
    let dir = proc_root.join(pid.to_string());
    let mut has_vm = false;
    let mut vcpus = BTreeMap::new();
    for entry in std::fs::read_dir(dir.join("fd"))?.flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let Some(fd) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        match parse_fd_link(&target.to_string_lossy()) {
            Some(KvmFd::Vm) => has_vm = true,
            Some(KvmFd::Vcpu(n)) => {
                vcpus.insert(n, VcpuInfo { fd, tid: None });
            }
            None => {}
        }
    }
    if !has_vm {
        return Ok(None);
    }
    let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
    let Some(start_time) = stat_start_time(&stat) else {
        return Ok(None);
    };
    Ok(Some(Vm {
        pid,
        start_time,
        name: vm_name(&std::fs::read(dir.join("cmdline")).unwrap_or_default()),
        vcpus,
    }))
}

/// The fd of the `KVM_RUN` a thread is in, reading its `syscall` file
/// again (up to [`RUNNING_TRIES`] times, 0.5 ms apart) while the thread is
/// on a CPU (`running`: a vCPU in guest mode).
fn kvm_run_fd(syscall: &Path) -> Option<i32> {
    for _ in 0..RUNNING_TRIES {
        let text = std::fs::read_to_string(syscall).ok()?;
        if text.trim() != "running" {
            return parse_kvm_run_fd(&text);
        }
        std::thread::sleep(std::time::Duration::from_micros(500));
    }
    None
}

/// Finds the threads of `vm` that run its vCPUs not yet mapped.
fn map_threads(proc_root: &Path, vm: &mut Vm) {
    if vm.vcpus.values().all(|v| v.tid.is_some()) {
        return;
    }
    let tasks = proc_root.join(vm.pid.to_string()).join("task");
    let Ok(entries) = std::fs::read_dir(&tasks) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if vm.vcpus.values().any(|v| v.tid == Some(tid)) {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if stat_flags(&stat).is_none_or(|f| f & WORKER_FLAGS != 0) {
            continue;
        }
        if let Some(fd) = kvm_run_fd(&entry.path().join("syscall")) {
            if let Some(v) = vm
                .vcpus
                .values_mut()
                .find(|v| v.fd == fd && v.tid.is_none())
            {
                v.tid = Some(tid);
            }
        }
    }
}

/// What one scan found.
#[derive(Debug, Default)]
pub struct Scan {
    /// The VMs, by pid.
    pub vms: BTreeMap<u32, Vm>,
    /// Processes (kernel threads left out) whose `fd` directory could not
    /// be read for want of permission: VMs among them are not in `vms`.
    pub denied: usize,
}

/// The VMs of the host now (only `pids` when given), keeping what `known`
/// already knew of the same VMs (their threads), and mapping the threads
/// still unknown; each process is read by `read` ([`read_vm`]; tests give
/// errors of their own). This process is never a VM of its own listing.
pub fn scan(
    proc_root: &Path,
    pids: Option<&[u32]>,
    known: &BTreeMap<u32, Vm>,
    read: impl Fn(&Path, u32) -> io::Result<Option<Vm>>,
) -> Result<Scan, DiscoverError> {
    let own = std::process::id();
    let candidates: Vec<u32> = match pids {
        Some(p) => p.to_vec(),
        None => std::fs::read_dir(proc_root)
            .map_err(|source| DiscoverError::Proc {
                path: proc_root.display().to_string(),
                source,
            })?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect(),
    };
    let mut found = Scan::default();
    for pid in candidates.into_iter().filter(|&p| p != own) {
        let mut vm = match read(proc_root, pid) {
            Ok(Some(vm)) => vm,
            Ok(None) => continue,
            Err(e) => {
                let stat = std::fs::read_to_string(proc_root.join(format!("{pid}/stat")));
                let flags = stat.ok().and_then(|s| stat_flags(&s)).unwrap_or(0);
                found.denied += usize::from(permission_denied(&e) && flags & PF_KTHREAD == 0);
                continue;
            }
        };
        if let Some(old) = known.get(&pid).filter(|o| o.start_time == vm.start_time) {
            for (n, v) in vm.vcpus.iter_mut() {
                v.tid = old
                    .vcpus
                    .get(n)
                    .filter(|o| o.fd == v.fd)
                    .and_then(|o| o.tid);
            }
        }
        map_threads(proc_root, &mut vm);
        found.vms.insert(pid, vm);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_links() {
        assert_eq!(parse_fd_link("anon_inode:kvm-vm"), Some(KvmFd::Vm));
        assert_eq!(parse_fd_link("anon_inode:kvm-vcpu:0"), Some(KvmFd::Vcpu(0)));
        assert_eq!(
            parse_fd_link("anon_inode:kvm-vcpu:63"),
            Some(KvmFd::Vcpu(63))
        );
        assert_eq!(parse_fd_link("anon_inode:kvm-vcpu-stats:0"), None);
        assert_eq!(parse_fd_link("anon_inode:kvm-vcpu:x"), None);
        assert_eq!(parse_fd_link("/dev/kvm"), None);
        assert_eq!(parse_fd_link("socket:[123]"), None);
    }

    #[test]
    fn kvm_run_in_the_syscall_file() {
        // Seen here: the vCPU thread blocked in guest HLT.
        let line = "16 0x6 0xae80 0x0 0x7ffefc367f60 0x0 0x0 0x7f355a1fe620 0x7f355c8a8d6b\n";
        assert_eq!(parse_kvm_run_fd(line), Some(6));
        assert_eq!(parse_kvm_run_fd("running\n"), None);
        assert_eq!(parse_kvm_run_fd("16 0x6 0xae81 0x0"), None, "not KVM_RUN");
        assert_eq!(parse_kvm_run_fd("230 0x1 0x0 0x7ffe"), None, "nanosleep");
        assert_eq!(parse_kvm_run_fd("-1 0x7ffe 0x0"), None);
        assert_eq!(parse_kvm_run_fd("16 0xffffffffffff 0xae80"), None);
        assert_eq!(parse_kvm_run_fd(""), None);
    }

    #[test]
    fn stat_fields_after_an_odd_command() {
        // The kvm-nx-lpage-recovery worker (flags 0x404040: PF_USER_WORKER).
        let worker = "20758 (kvm-nx-lpage-re) S 1 20752 20752 0 -1 4210752 0 0 0 0 0 0 0 0 20 0 3 0 996531 0 0";
        assert_eq!(stat_flags(worker), Some(4_210_752));
        assert_ne!(4_210_752 & WORKER_FLAGS, 0);
        let vcpu =
            "20757 (a) b) c) S 1 20752 20752 0 -1 4194368 0 0 0 0 0 0 0 0 20 0 3 0 996530 0 0";
        assert_eq!(stat_flags(vcpu), Some(4_194_368));
        assert_eq!(4_194_368 & WORKER_FLAGS, 0);
        assert_eq!(stat_start_time(vcpu), Some(996_530));
        assert_eq!(stat_flags("garbage"), None);
    }

    #[test]
    fn vm_names_from_command_lines() {
        let q = b"qemu-system-x86_64\0-m\0M\0-name\0guest=web1,debug-threads=on\0";
        assert_eq!(vm_name(q), "web1");
        assert_eq!(vm_name(b"/usr/bin/qemu-kvm\0-name\0db\0"), "db");
        assert_eq!(vm_name(b"qemu\0-name=x,y\0"), "x");
        assert_eq!(
            vm_name(b"/work/target/release/tickburst\0run\0"),
            "tickburst"
        );
        assert_eq!(vm_name(b""), "?");
        assert_eq!(vm_name(b"qemu\0-name\0"), "qemu");
        assert_eq!(vm_name(b"a\x1b[2J\0"), "a?[2J");
        assert_eq!(vm_name(&[b'x'; 100]).len(), NAME_MAX);
    }

    #[test]
    fn a_fake_proc_tree() {
        let root = std::env::temp_dir().join(format!("tickburst-top-proc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let p = root.join("4242");
        std::fs::create_dir_all(p.join("fd")).unwrap();
        for (fd, target) in [("5", "anon_inode:kvm-vm"), ("6", "anon_inode:kvm-vcpu:0")] {
            std::os::unix::fs::symlink(target, p.join("fd").join(fd)).unwrap();
        }
        std::fs::write(
            p.join("stat"),
            "4242 (vmm) S 1 1 1 0 -1 4194304 0 0 0 0 0 0 0 0 20 0 3 0 777 0 0",
        )
        .unwrap();
        std::fs::write(p.join("cmdline"), b"vmm\0-name\0t1\0").unwrap();
        for (tid, flags, syscall) in [
            ("4243", 4_210_752u64, "16 0x6 0xae80 0x0"),
            ("4244", 4_194_368, "16 0x6 0xae80 0x0"),
        ] {
            let t = p.join("task").join(tid);
            std::fs::create_dir_all(&t).unwrap();
            std::fs::write(t.join("stat"), format!("{tid} (t) S 1 1 1 0 -1 {flags} 0")).unwrap();
            std::fs::write(t.join("syscall"), syscall).unwrap();
        }
        std::fs::create_dir_all(root.join("99")).unwrap();
        let none = BTreeMap::new();
        let found = scan(&root, None, &none, read_vm).unwrap();
        let vms = found.vms;
        assert_eq!((vms.len(), found.denied), (1, 0), "99: no fd (exited)");
        let vm = &vms[&4242];
        assert_eq!((vm.name.as_str(), vm.start_time), ("t1", 777));
        assert_eq!((vm.vcpus[&0].fd, vm.vcpus[&0].tid), (6, Some(4244)));
        // Crafted errors (root reads anything): a process we may not read is
        // counted, one that exited meanwhile is not, nor a kernel thread.
        let kthread = format!("99 (k) S 2 0 0 0 -1 {PF_KTHREAD} 0");
        std::fs::write(root.join("99/stat"), kthread).unwrap();
        use libc::{EACCES, ENOENT, EPERM, ESRCH};
        for (errno, n) in [(EACCES, 1), (EPERM, 1), (ENOENT, 0), (ESRCH, 0)] {
            let read = |_: &Path, _| Err(io::Error::from_raw_os_error(errno));
            assert_eq!(scan(&root, None, &none, read).unwrap().denied, n, "{errno}");
        }
        std::fs::remove_dir_all(&root).unwrap();
        assert!(scan(&root, None, &none, read_vm).is_err());
        let gone = scan(&root, Some(&[4242]), &none, read_vm).unwrap();
        assert!(gone.vms.is_empty());
    }
}
