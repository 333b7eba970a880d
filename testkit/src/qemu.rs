//! A QEMU VM running tickburst's own guest, for tests and benchmarks that
//! need a VM tickburst did not start (`tickburst top`, the start-up
//! comparison).
//!
//! [`QemuGuest::start`] writes [`guest_payload::QEMU_GUEST_ELF`] to a
//! temporary file, starts `qemu-system-x86_64 -accel kvm -kernel <file>` as a
//! child process with the guest's COM1 on a pipe, and returns once the guest
//! has printed [`guest_payload::QEMU_READY_LINE`]: its periodic LAPIC timer
//! (1 ms, HLT idle) is then running. The VM is killed when the
//! [`QemuGuest`] drops.
//!
//! The caller holds the VM lock ([`crate::kvm_or_skip`] or [`crate::lock`]);
//! this module does not take it.
//!
//! ```no_run
//! use tickburst_testkit::qemu::{self, Firmware, QemuGuest};
//! let Some(_vm) = tickburst_testkit::kvm_or_skip("my_test") else { return };
//! let Some(binary) = qemu::qemu_or_skip("my_test") else { return };
//! let vm = QemuGuest::start(&binary, &Firmware::default_fast()).unwrap();
//! println!("QEMU pid {} ready after {:?}", vm.pid(), vm.ready_after());
//! ```

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The QEMU binary looked up on `PATH`.
pub const QEMU_BINARY: &str = "qemu-system-x86_64";
/// Where Debian's `qemu-system-data` puts qboot, QEMU's minimal firmware.
pub const QBOOT_ROM: &str = "/usr/share/qemu/qboot.rom";
/// How long [`QemuGuest::start`] waits for the ready line. SeaBIOS alone
/// takes ~4 s on the nested development host; qboot ~0.1 s.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The name the VM gets (`-name`), so it can be told apart in `ps` and
/// `tickburst top`.
pub const VM_NAME: &str = "tickburst-qemu-guest";

/// The firmware (and machine) QEMU runs before the guest's PVH entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Firmware {
    /// QEMU's default BIOS (SeaBIOS), which enters the guest through its
    /// `pvh.bin` option ROM.
    SeaBios,
    /// qboot (`-bios <path>`), which boots PVH images from fw_cfg itself.
    Qboot(PathBuf),
    /// QEMU's `microvm` machine (`-M microvm`: no PCI, no ACPI by default)
    /// with its own firmware, QEMU's build of qboot (`bios-microvm.bin`).
    Microvm,
}

impl Firmware {
    /// qboot where it is installed ([`QBOOT_ROM`]), else SeaBIOS.
    pub fn default_fast() -> Firmware {
        find_qboot().map_or(Firmware::SeaBios, Firmware::Qboot)
    }

    /// A short name for reports: `qboot` or `seabios`.
    pub fn name(&self) -> &'static str {
        match self {
            Firmware::SeaBios => "seabios",
            Firmware::Qboot(_) => "qboot",
            Firmware::Microvm => "microvm",
        }
    }
}

/// `qemu-system-x86_64` on `PATH`, if installed.
pub fn find_qemu() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(QEMU_BINARY))
        .find(|candidate| candidate.is_file())
}

/// qboot's ROM, if installed.
pub fn find_qboot() -> Option<PathBuf> {
    let rom = PathBuf::from(QBOOT_ROM);
    rom.is_file().then_some(rom)
}

/// The QEMU binary, or `None` after printing
/// `SKIPPED <test>: qemu-system-x86_64 not installed` (the caller returns).
pub fn qemu_or_skip(test: &str) -> Option<PathBuf> {
    let found = find_qemu();
    if found.is_none() {
        eprintln!("SKIPPED {test}: {QEMU_BINARY} not installed");
    }
    found
}

/// The arguments QEMU gets for `elf` with `firmware`: KVM, no default
/// devices, no display, COM1 on stdio, exit instead of reboot.
pub fn qemu_args(elf: &Path, firmware: &Firmware) -> Vec<String> {
    let mut args: Vec<String> = [
        "-accel",
        "kvm",
        "-name",
        VM_NAME,
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
        "-m",
        "64",
        "-kernel",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(elf.display().to_string());
    match firmware {
        Firmware::SeaBios => {}
        Firmware::Qboot(rom) => {
            args.push("-bios".into());
            args.push(rom.display().to_string());
        }
        Firmware::Microvm => {
            args.push("-M".into());
            args.push("microvm".into());
        }
    }
    args
}

/// A running QEMU VM with tickburst's guest; killed on drop.
pub struct QemuGuest {
    child: Child,
    ready_after: Duration,
    firmware: Firmware,
    stderr: Option<JoinHandle<String>>,
}

/// Numbers the temporary ELF files of one process.
static NEXT_ELF: AtomicU32 = AtomicU32::new(0);

impl QemuGuest {
    /// Starts QEMU (`binary`) with the guest and `firmware`, and waits until
    /// the guest's ready line arrives on its serial port (at most
    /// [`READY_TIMEOUT`]). The error names what QEMU said on stderr.
    pub fn start(binary: &Path, firmware: &Firmware) -> Result<QemuGuest, String> {
        let elf = std::env::temp_dir().join(format!(
            "tickburst-qemu-guest-{}-{}.elf",
            std::process::id(),
            NEXT_ELF.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&elf, guest_payload::QEMU_GUEST_ELF)
            .map_err(|e| format!("writing {}: {e}", elf.display()))?;
        let result = Self::start_with(binary, &elf, firmware);
        // QEMU has read the image once the guest runs (or failed to start).
        let _ = std::fs::remove_file(&elf);
        result
    }

    fn start_with(binary: &Path, elf: &Path, firmware: &Firmware) -> Result<QemuGuest, String> {
        let started = Instant::now();
        let mut child = Command::new(binary)
            .args(qemu_args(elf, firmware))
            // Not a terminal: QEMU's stdio chardev leaves the caller's
            // terminal settings alone.
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr_pipe.read_to_string(&mut text);
            text
        });
        // The reader sends every serial line and keeps draining the pipe
        // until QEMU exits, so the guest can never block on a full pipe.
        let (lines_tx, lines) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // After the ready line nobody listens; keep draining.
                let _ = lines_tx.send(line);
            }
        });
        let mut vm = QemuGuest {
            child,
            ready_after: Duration::ZERO,
            firmware: firmware.clone(),
            stderr: Some(stderr),
        };
        let deadline = started + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.trim_end() == guest_payload::QEMU_READY_LINE => {
                    vm.ready_after = started.elapsed();
                    return Ok(vm);
                }
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(vm.failure(&format!(
                        "no ready line from the guest within {READY_TIMEOUT:?}"
                    )))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(vm.failure("QEMU closed the serial port before the ready line"))
                }
            }
        }
    }

    /// Kills the VM and describes why it failed, with QEMU's stderr.
    fn failure(&mut self, what: &str) -> String {
        self.kill();
        // The stderr reader finishes at EOF, once QEMU is gone.
        let stderr = self
            .stderr
            .take()
            .and_then(|reader| reader.join().ok())
            .unwrap_or_default();
        format!(
            "QEMU ({} firmware): {what}; stderr: {}",
            self.firmware.name(),
            stderr.trim()
        )
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The QEMU process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Time from just before QEMU was spawned to the ready line read from
    /// its serial port.
    pub fn ready_after(&self) -> Duration {
        self.ready_after
    }

    /// The firmware the VM booted with.
    pub fn firmware(&self) -> &Firmware {
        &self.firmware
    }
}

impl Drop for QemuGuest {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_name_the_image_and_the_firmware() {
        let elf = Path::new("/tmp/g.elf");
        let seabios = qemu_args(elf, &Firmware::SeaBios);
        assert!(seabios.windows(2).any(|w| w == ["-kernel", "/tmp/g.elf"]));
        assert!(seabios.windows(2).any(|w| w == ["-accel", "kvm"]));
        assert!(!seabios.iter().any(|a| a == "-bios"));
        let qboot = qemu_args(elf, &Firmware::Qboot(PathBuf::from(QBOOT_ROM)));
        assert!(qboot.windows(2).any(|w| w == ["-bios", QBOOT_ROM]));
        let microvm = qemu_args(elf, &Firmware::Microvm);
        assert!(microvm.windows(2).any(|w| w == ["-M", "microvm"]));
    }
}
