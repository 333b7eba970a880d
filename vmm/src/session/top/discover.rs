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
//!   tried again at the next scan. A thread that never leaves the CPU (a
//!   spinning guest) is known by the kernel's guest-time accounting instead
//!   ([`proc_text::has_run_a_guest`]: `PF_VCPU` or guest time charged), and
//!   mapped when it is the VM's one such thread and one vCPU is left
//!   without a thread; on back ends that charge guest time as system time
//!   (kvm_pvm) it waits until the thread sleeps.
//! - A VM is known by its pid and start time, so a reused pid is a new VM.
//!
//! Reading another process's `fd` links and `syscall` file needs ptrace
//! access to it (root): processes whose `fd` directory we may not read are
//! skipped and counted ([`Scan::denied`]; kernel threads left out).

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use thiserror::Error;

use crate::session::top::proc_text::{
    self, parse_fd_link, parse_kvm_run_fd, vm_name, KvmFd, PF_KTHREAD, WORKER_FLAGS,
};

/// Reads of a thread's `syscall` file while it shows `running`.
const RUNNING_TRIES: u32 = 20;

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
pub struct WatchedVm {
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

/// Whether process `pid` exists now and has not exited: a zombie (exited,
/// not yet reaped by its parent, which may never do it) counts as gone, so
/// `top --pid` ends when its VMM exits whoever its parent is.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")) {
        Ok(stat) => !proc_text::has_exited(&stat),
        // Gone, or its stat unreadable (it was there: permission).
        Err(e) => permission_denied(&e),
    }
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
pub fn read_vm(proc_root: &Path, pid: u32) -> io::Result<Option<WatchedVm>> {
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
    let Some(start_time) = proc_text::start_time(&stat) else {
        return Ok(None);
    };
    Ok(Some(WatchedVm {
        pid,
        start_time,
        name: vm_name(&read_bounded(&dir.join("cmdline"), proc_text::CMDLINE_MAX)),
        vcpus,
    }))
}

/// At most `max` bytes of file `path` (nothing when it cannot be read).
fn read_bounded(path: &Path, max: usize) -> Vec<u8> {
    use std::io::Read;
    let mut bytes = Vec::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(max as u64).read_to_end(&mut bytes);
    }
    bytes
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
fn map_threads(proc_root: &Path, vm: &mut WatchedVm) {
    if vm.vcpus.values().all(|v| v.tid.is_some()) {
        return;
    }
    let tasks = proc_root.join(vm.pid.to_string()).join("task");
    let Ok(entries) = std::fs::read_dir(&tasks) else {
        return;
    };
    let mut ran_a_guest = Vec::new();
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
        if proc_text::flags(&stat).is_none_or(|f| f & WORKER_FLAGS != 0) {
            continue;
        }
        match kvm_run_fd(&entry.path().join("syscall")) {
            Some(fd) => {
                if let Some(v) = vm
                    .vcpus
                    .values_mut()
                    .find(|v| v.fd == fd && v.tid.is_none())
                {
                    v.tid = Some(tid);
                }
            }
            None if proc_text::has_run_a_guest(&stat) => ran_a_guest.push(tid),
            None => {}
        }
    }
    // A vCPU thread never seen off the CPU (its guest spins): it is known to
    // run a guest, and which vCPU it runs is certain only when it is the one
    // such thread and one vCPU is left without a thread.
    let mut unmapped = vm.vcpus.values_mut().filter(|v| v.tid.is_none());
    if let (Some(v), None, [tid]) = (unmapped.next(), unmapped.next(), &ran_a_guest[..]) {
        v.tid = Some(*tid);
    }
}

/// Scans between two full ones: a full scan reads every process's fd links;
/// the others read only processes new since the last full one, and check
/// known VMs by their start time alone (reading a process's fd links costs a
/// system call per fd, `top`'s main cost on a host with many processes).
/// A process that opens its first VM later than the first full scan that
/// saw it, or a vCPU added to a known VM, is therefore found within this
/// many intervals.
pub const FULL_SCAN_EVERY: u32 = 10;

/// What the last full scan learned of the processes that are no VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// It held no VM fd.
    NotVm,
    /// Its fd links could not be read (counted in [`Scan::denied`]).
    Denied,
}

/// What scans remember between intervals.
#[derive(Debug, Default)]
pub struct ScanMemory {
    /// Scans since the last full one (0: the next is full).
    since_full: u32,
    /// Processes that were no VM at the last full scan.
    seen: BTreeMap<u32, Seen>,
}

/// What one scan found.
#[derive(Debug, Default)]
pub struct Scan {
    /// The VMs, by pid.
    pub vms: BTreeMap<u32, WatchedVm>,
    /// Processes (kernel threads left out) whose `fd` directory could not
    /// be read for want of permission: VMs among them are not in `vms`.
    pub denied: usize,
}

/// The start time of process `pid` from its `stat` (None: gone).
fn start_time_of(proc_root: &Path, pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    proc_text::start_time(&stat)
}

/// The VMs of the host now (only `pids` when given), keeping what `known`
/// already knew of the same VMs (their threads), and mapping the threads
/// still unknown; each process is read by `read` ([`read_vm`]; tests give
/// errors of their own), except what `memory` allows to skip between full
/// scans ([`FULL_SCAN_EVERY`]). This process is never a VM of its own
/// listing.
pub fn scan(
    proc_root: &Path,
    pids: Option<&[u32]>,
    known: &BTreeMap<u32, WatchedVm>,
    memory: &mut ScanMemory,
    read: impl Fn(&Path, u32) -> io::Result<Option<WatchedVm>>,
) -> Result<Scan, DiscoverError> {
    let full = memory.since_full == 0;
    memory.since_full = (memory.since_full + 1) % FULL_SCAN_EVERY;
    if full {
        memory.seen.clear();
    }
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
        if !full {
            match memory.seen.get(&pid) {
                Some(Seen::NotVm) => continue,
                Some(Seen::Denied) => {
                    found.denied += 1;
                    continue;
                }
                None => {}
            }
            // A known VM whose threads are all mapped: the same process
            // still (its start time), its fds as last read.
            if let Some(old) = known
                .get(&pid)
                .filter(|o| !o.vcpus.is_empty() && o.vcpus.values().all(|v| v.tid.is_some()))
            {
                match start_time_of(proc_root, pid) {
                    Some(t) if t == old.start_time => {
                        found.vms.insert(pid, old.clone());
                        continue;
                    }
                    // Gone.
                    None => continue,
                    // The pid reused: a new process, read below.
                    Some(_) => {}
                }
            }
        }
        let mut vm = match read(proc_root, pid) {
            Ok(Some(vm)) => vm,
            Ok(None) => {
                // Only a full scan marks a process as no VM: one that is new
                // (a VMM just started, its VM not created yet) is read
                // again at every scan until then.
                if full {
                    memory.seen.insert(pid, Seen::NotVm);
                }
                continue;
            }
            Err(e) => {
                let stat = std::fs::read_to_string(proc_root.join(format!("{pid}/stat")));
                let flags = stat.ok().and_then(|s| proc_text::flags(&s)).unwrap_or(0);
                if permission_denied(&e) && flags & PF_KTHREAD == 0 {
                    found.denied += 1;
                    memory.seen.insert(pid, Seen::Denied);
                }
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

    /// Writes thread `tid` of process dir `p`: its `stat` (flags, guest
    /// time) and `syscall` files.
    fn task(p: &Path, tid: &str, flags: u64, guest: u64, syscall: &str) {
        let t = p.join("task").join(tid);
        std::fs::create_dir_all(&t).unwrap();
        let mid = "0 0 0 0 0 200 0 0 20 0 3 0 777 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 -1 1 0 0 0";
        let stat = format!("{tid} (t) R 1 1 1 0 -1 {flags} {mid} {guest} 0 0");
        std::fs::write(t.join("stat"), stat).unwrap();
        std::fs::write(t.join("syscall"), syscall).unwrap();
    }

    /// A VM process dir under `root` with `vcpus` vCPU fds (6, 7, ...).
    fn vm_dir(root: &Path, pid: &str, vcpus: u32) -> std::path::PathBuf {
        let p = root.join(pid);
        std::fs::create_dir_all(p.join("fd")).unwrap();
        std::os::unix::fs::symlink("anon_inode:kvm-vm", p.join("fd/5")).unwrap();
        for n in 0..vcpus {
            let link = format!("anon_inode:kvm-vcpu:{n}");
            std::os::unix::fs::symlink(link, p.join(format!("fd/{}", 6 + n))).unwrap();
        }
        let stat = format!("{pid} (vmm) S 1 1 1 0 -1 4194304 0 0 0 0 0 0 0 0 20 0 3 0 777 0 0");
        std::fs::write(p.join("stat"), stat).unwrap();
        p
    }

    #[test]
    fn a_spinning_vcpu_thread_by_its_guest_time() {
        let root = std::env::temp_dir().join(format!("tickburst-top-spin-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        // One vCPU, its thread always on the CPU: mapped by its guest time.
        let p = vm_dir(&root, "500", 1);
        task(&p, "501", 0x40_0040, 0, "running");
        task(&p, "502", 0x40_0040, 31, "running");
        // Guest time but no vCPU left: nothing to map.
        // Two vCPUs, one found asleep in KVM_RUN, the other by elimination.
        let q = vm_dir(&root, "600", 2);
        task(&q, "601", 0x40_0040, 9, "16 0x7 0xae80 0x0");
        task(&q, "602", 0x40_0041, 0, "running");
        // Two vCPUs, both spinning: which is which is not certain.
        let r = vm_dir(&root, "700", 2);
        task(&r, "701", 0x40_0040, 5, "running");
        task(&r, "702", 0x40_0040, 6, "running");
        // kvm_pvm: no guest time, no PF_VCPU: waits until it sleeps.
        let s = vm_dir(&root, "800", 1);
        task(&s, "801", 0x40_0040, 0, "running");
        let found = scan(
            &root,
            None,
            &BTreeMap::new(),
            &mut ScanMemory::default(),
            read_vm,
        )
        .unwrap()
        .vms;
        let tids =
            |pid: u32| -> Vec<Option<u32>> { found[&pid].vcpus.values().map(|v| v.tid).collect() };
        assert_eq!(tids(500), [Some(502)]);
        assert_eq!(tids(600), [Some(602), Some(601)]);
        assert_eq!(tids(700), [None, None]);
        assert_eq!(tids(800), [None]);
        std::fs::remove_dir_all(&root).unwrap();
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
            task(&p, tid, flags, 0, syscall);
        }
        std::fs::create_dir_all(root.join("99")).unwrap();
        let none = BTreeMap::new();
        let found = scan(&root, None, &none, &mut ScanMemory::default(), read_vm).unwrap();
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
            assert_eq!(
                scan(&root, None, &none, &mut ScanMemory::default(), read)
                    .unwrap()
                    .denied,
                n,
                "{errno}"
            );
        }
        std::fs::remove_dir_all(&root).unwrap();
        assert!(scan(&root, None, &none, &mut ScanMemory::default(), read_vm).is_err());
        let gone = scan(
            &root,
            Some(&[4242]),
            &none,
            &mut ScanMemory::default(),
            read_vm,
        )
        .unwrap();
        assert!(gone.vms.is_empty());
    }

    #[test]
    fn between_full_scans_only_new_processes_are_read() {
        let root = std::env::temp_dir().join(format!("tickburst-top-memo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let vm = vm_dir(&root, "500", 1);
        task(&vm, "501", 0x40_0040, 0, "16 0x6 0xae80 0x0");
        // A process with no VM yet.
        let late = root.join("600");
        std::fs::create_dir_all(late.join("fd")).unwrap();
        let mut memory = ScanMemory::default();
        let first = scan(&root, None, &BTreeMap::new(), &mut memory, read_vm).unwrap();
        assert_eq!(first.vms.keys().collect::<Vec<_>>(), [&500]);
        assert_eq!(first.vms[&500].vcpus[&0].tid, Some(501));
        // 600 opens a VM, and 700 starts with one: 700 is read at once, 600
        // at the next full scan; 500 is kept by its start time, unread (its
        // new vCPU fd waits for the full scan too). 800, new and no VM yet,
        // is read at every scan until it has one.
        for (dir, fd) in [(&late, "5"), (&vm, "9")] {
            std::os::unix::fs::symlink("anon_inode:kvm-vm", dir.join("fd").join(fd)).unwrap();
        }
        std::os::unix::fs::symlink("anon_inode:kvm-vcpu:1", vm.join("fd/10")).unwrap();
        std::fs::write(
            late.join("stat"),
            "600 (v) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 3 0 900 0 0",
        )
        .unwrap();
        vm_dir(&root, "700", 1);
        let young = root.join("800");
        std::fs::create_dir_all(young.join("fd")).unwrap();
        let mut known = first.vms;
        for k in 1..FULL_SCAN_EVERY {
            if k == 3 {
                let vm = vm_dir(&root, "800", 1);
                task(&vm, "801", 0x40_0040, 0, "16 0x6 0xae80 0x0");
            }
            let s = scan(&root, None, &known, &mut memory, read_vm).unwrap();
            let want: &[u32] = if k < 3 { &[500, 700] } else { &[500, 700, 800] };
            assert_eq!(s.vms.keys().copied().collect::<Vec<_>>(), want, "scan {k}");
            assert_eq!(s.vms[&500].vcpus.len(), 1);
            known = s.vms;
        }
        let full = scan(&root, None, &known, &mut memory, read_vm).unwrap();
        assert_eq!(
            full.vms.keys().collect::<Vec<_>>(),
            [&500, &600, &700, &800]
        );
        assert_eq!(full.vms[&500].vcpus.len(), 2);
        assert_eq!(full.vms[&500].vcpus[&0].tid, Some(501), "threads kept");
        // A known VM that exited is gone at once.
        std::fs::remove_dir_all(&vm).unwrap();
        let s = scan(&root, None, &full.vms, &mut memory, read_vm).unwrap();
        assert!(!s.vms.contains_key(&500));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
