//! The text `top` reads from `/proc` (proc(5)), parsed once here: `stat`
//! lines (the command field may hold spaces and parentheses), fd link
//! targets, a thread's `syscall` file and a command line. All untrusted: a
//! field that does not parse is `None`, never a panic.

/// Task flags of threads that are not userspace threads (include/linux/sched.h):
/// `PF_IO_WORKER`, `PF_USER_WORKER`, `PF_KTHREAD`.
pub const WORKER_FLAGS: u64 = 0x10 | 0x4000 | PF_KTHREAD;
/// `PF_KTHREAD`: a kernel thread (never a VMM).
pub const PF_KTHREAD: u64 = 0x0020_0000;
/// `PF_VCPU`: the thread is in guest mode now (set around VM entry by the
/// kernel's guest-time accounting).
pub const PF_VCPU: u64 = 0x1;

/// Fields of a `stat` line after the command: `state` is field 0 of the
/// result.
fn fields(stat: &str) -> Vec<&str> {
    stat.rfind(')')
        .map_or_else(Vec::new, |i| stat[i + 1..].split_whitespace().collect())
}

/// The state letter (field 3 of `stat`: `R`, `S`, `T`, `Z`, ...).
pub fn state(stat: &str) -> Option<char> {
    fields(stat).first()?.chars().next()
}

/// Whether a `stat` line is of a process that has exited: a zombie (`Z`)
/// not yet reaped by its parent, or dead (`X`).
pub fn has_exited(stat: &str) -> bool {
    matches!(state(stat), Some('Z') | Some('X'))
}

/// The task flags (field 9 of `stat`).
pub fn flags(stat: &str) -> Option<u64> {
    fields(stat).get(6)?.parse().ok()
}

/// The start time in clock ticks since boot (field 22 of `stat`).
pub fn start_time(stat: &str) -> Option<u64> {
    fields(stat).get(19)?.parse().ok()
}

/// The time the thread spent in guest mode, in clock ticks (field 43 of
/// `stat`).
pub fn guest_time(stat: &str) -> Option<u64> {
    fields(stat).get(40)?.parse().ok()
}

/// Whether the thread has run a guest, as the kernel accounts it: in guest
/// mode now (`PF_VCPU`) or guest time charged to it. Only a vCPU thread
/// (one inside `ioctl(KVM_RUN)`) ever has either. Back ends that account
/// guest time as system time (kvm_pvm) show neither.
pub fn has_run_a_guest(stat: &str) -> bool {
    flags(stat).is_some_and(|f| f & PF_VCPU != 0) || guest_time(stat).is_some_and(|t| t > 0)
}

/// `ioctl` on x86-64.
const SYS_IOCTL: u64 = 16;
/// `KVM_RUN` = `_IO(0xAE, 0x80)`.
const KVM_RUN: u64 = 0xae80;
/// The longest VM name kept (from an untrusted command line).
const NAME_MAX: usize = 32;

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

/// The longest command line read (bytes): QEMU's and libvirt's `-name`
/// comes early; the rest of an untrusted, up to megabytes long, command
/// line is not read.
pub const CMDLINE_MAX: usize = 64 * 1024;

/// The guest name of a QEMU `-name` value (QEMU option syntax: `,,` is a
/// literal comma): `guest=NAME` wherever it is among the options (libvirt
/// writes `guest=NAME,debug-threads=on`), else a first option without `=`.
fn qemu_name(value: &str) -> Option<String> {
    let mut opts = Vec::new();
    let mut cur = String::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                cur.push(',');
            } else {
                opts.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    opts.push(cur);
    opts.iter()
        .find_map(|o| o.strip_prefix("guest="))
        .map(str::to_string)
        .or_else(|| opts.first().filter(|o| !o.contains('=')).cloned())
}

/// A short name for a VM from its NUL-separated command line (at most
/// [`CMDLINE_MAX`] bytes of it are looked at): QEMU's `-name guest=NAME,...`
/// (libvirt's domain name) or `-name NAME`, else the program's file name.
/// Untrusted: non-printing characters become `?`, and it is cut short.
pub fn vm_name(cmdline: &[u8]) -> String {
    let cmdline = &cmdline[..cmdline.len().min(CMDLINE_MAX)];
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
        qemu_name(value)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A `stat` line with the given command, flags and guest time (the
    /// other fields as a sleeping thread here has them).
    fn line(comm: &str, flags: u64, guest: u64) -> String {
        format!(
            "20757 ({comm}) S 1 20752 20752 0 -1 {flags} 0 0 0 0 0 200 0 0 20 0 3 0 \
             996530 0 0 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 -1 1 0 0 0 {guest} 0 \
             0 0 0 0 0 0 0 0"
        )
    }

    #[test]
    fn zombies_have_exited() {
        let sleeping = line("a) Z (b", 0, 0);
        assert_eq!(state(&sleeping), Some('S'));
        assert!(!has_exited(&sleeping));
        let zombie = sleeping.replacen(") S ", ") Z ", 1);
        assert!(has_exited(&zombie));
        assert!(!has_exited("garbage"));
    }

    #[test]
    fn fields_after_an_odd_command() {
        // The kvm-nx-lpage-recovery worker (flags 0x404040: PF_USER_WORKER).
        let worker = line("kvm-nx-lpage-re", 4_210_752, 0);
        assert_eq!(flags(&worker), Some(4_210_752));
        assert_ne!(4_210_752 & WORKER_FLAGS, 0);
        let vcpu = line("a) b) c", 4_194_368, 0);
        assert_eq!(flags(&vcpu), Some(4_194_368));
        assert_eq!(4_194_368 & WORKER_FLAGS, 0);
        assert_eq!(start_time(&vcpu), Some(996_530));
        assert_eq!(guest_time(&vcpu), Some(0));
        assert_eq!(flags("garbage"), None);
        assert_eq!(guest_time("1 (x) S 1 2 3"), None, "short line");
    }

    #[test]
    fn a_thread_that_ran_a_guest() {
        // A spinning vCPU thread on kvm_pvm (seen here: flags 0x400040,
        // guest time 0, 200 ticks of system time): not recognisable.
        assert!(!has_run_a_guest(&line("vcpu0", 0x40_0040, 0)));
        assert!(has_run_a_guest(&line("CPU 0/KVM", 0x40_0040, 17)));
        assert!(has_run_a_guest(&line("vcpu0", 0x40_0041, 0)), "PF_VCPU now");
        assert!(!has_run_a_guest("garbage"));
    }

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
        // libvirt's form with the options in another order, QEMU's `,,`.
        let l = b"qemu\0-name\0debug-threads=on,guest=db,,1\0";
        assert_eq!(vm_name(l), "db,1");
        assert_eq!(vm_name(b"qemu\0-name\0a,,b,process=x\0"), "a,b");
        assert_eq!(vm_name(b"qemu\0-name\0process=x\0"), "qemu");
        // A -name past the bound is not read.
        let mut long = b"qemu\0".to_vec();
        long.extend(std::iter::repeat_n(b'a', CMDLINE_MAX));
        long.extend(b"\0-name\0far\0");
        assert_eq!(vm_name(&long), "qemu");
    }
}
