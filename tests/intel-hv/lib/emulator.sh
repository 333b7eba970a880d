# The emulator of the rig: Bochs with VMX and the VMX-preemption timer.
# Sourced by tests/intel-hv/run.
#
# Nothing here depends on the machine's sound, display or network set-up:
# sound and speaker go to Bochs' dummy drivers, the display is rfb (no X
# needed) inside a private network namespace, the console is a file.

# This folder (pvh/ is in it).
EMU_LIB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# emu_config MEDIUM SERIAL LOG [EXTRA_LINE...]: a bochsrc on stdout. Per
# RIG-NOTES: Haswell (its TSC is calibrated from the PIT, so kvm_intel keeps
# preemption_timer=Y), 1 CPU, 100 M ips, no clock sync (emulated time ~ wall).
# MEDIUM: floppy:PATH (the preflight's), cdrom:PATH (an isolinux ISO) or
# disk:PATH (emu_pvh_disk's raw disk).
emu_config() {
	local medium=$1 serial=$2 log=$3
	shift 3
	cat <<-CFG
		display_library: rfb, options="timeout=0"
		megs: 768
		cpu: model=corei7_haswell_4770, count=1, ips=100000000
		clock: sync=none, time0=local
		romimage: file=/usr/share/bochs/BIOS-bochs-latest
		vgaromimage: file=/usr/share/vgabios/vgabios.bin
		speaker: enabled=0
		sound: waveoutdrv=dummy, waveindrv=dummy, midioutdrv=dummy
		mouse: enabled=0
		com1: enabled=1, mode=file, dev=$serial
		log: $log
		panic: action=fatal
		error: action=report
		info: action=ignore
		debug: action=ignore
	CFG
	case "$medium" in
	floppy:*) printf '%s\n' "floppya: 1_44=${medium#floppy:}, status=inserted" "boot: floppy" ;;
	cdrom:*) printf '%s\n' "ata0-master: type=cdrom, path=${medium#cdrom:}, status=inserted" "boot: cdrom" ;;
	disk:*) printf '%s\n' "ata0-master: type=disk, path=${medium#disk:}, mode=flat" "boot: disk" ;;
	esac
	local l
	for l in "$@"; do echo "$l"; done
}

# emu_pvh_disk VMLINUZ INITRD CMDLINE OUT: a raw disk that boots the kernel
# through its PVH entry (CONFIG_PVH): a 512-byte MBR (pvh/disk.S) loads the
# kernel's ELF segments, decompressed on the host, and the initramfs, and
# enters the kernel in 32-bit protected mode. Measured on Debian's 6.1 in
# Bochs: "Linux version" at ~5 s instead of ~60 s (the bzImage's xz
# decompressor on the emulated CPU); the same kernel code runs from its entry
# on. Returns 1 with the reason on stderr (a kernel without a PVH entry note,
# an unknown compression): the caller boots the ISO then.
emu_pvh_disk() {
	local d=${EMU_PVH_TMP:-/tmp}/pvh.$$ rc=0
	mkdir -p "$d"
	as --32 -o "$d/disk.o" "$EMU_LIB/pvh/disk.S" &&
		ld -m elf_i386 -Ttext 0x7c00 --oformat binary -o "$d/disk.bin" "$d/disk.o" || rc=1
	[ "$rc" = 0 ] && { python3 "$EMU_LIB/pvh/mkdisk.py" "$d/disk.bin" "$1" "$2" "$3" "$4" >/dev/null || rc=1; }
	rm -rf "$d"
	return "$rc"
}

# emu_start DIR: starts Bochs on DIR/bochsrc (in its own network namespace:
# the rfb display listens on all addresses and cannot bind to loopback only),
# its stdout and stderr to DIR/bochs.out. Sets EMU_PID.
emu_start() {
	echo c >"$1/debugger.rc"
	unshare --net bochs-bin -q -rc "$1/debugger.rc" -f "$1/bochsrc" \
		</dev/null >"$1/bochs.out" 2>&1 9>&- &
	EMU_PID=$!
}

# emu_stop: ends Bochs (TERM, then KILL after 5 s).
emu_stop() {
	if [ -n "${EMU_PID:-}" ] && kill -0 "$EMU_PID" 2>/dev/null; then
		kill "$EMU_PID" 2>/dev/null || true
		local _
		for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$EMU_PID" 2>/dev/null || break; sleep 0.5; done
		kill -9 "$EMU_PID" 2>/dev/null || true
		wait "$EMU_PID" 2>/dev/null || true
	fi
	EMU_PID=
}

# emu_status RC: how a process ended, in words ("exit status 1",
# "killed by signal 6 (SIGABRT)").
emu_status() {
	if [ "$1" -gt 128 ]; then
		echo "killed by signal $(($1 - 128)) (SIG$(kill -l "$(($1 - 128))" 2>/dev/null || echo '?'))"
	else
		echo "exit status $1"
	fi
}

# emu_last_words DIR: the emulator's own last lines (stdout/stderr, then its
# log file), for an error message: at most 8 lines, indented.
emu_last_words() {
	{
		grep -v '^[[:space:]]*$' "$1/bochs.out" 2>/dev/null | grep -v '^<bochs:[0-9]*>' | tail -n 6
		grep -Ei 'PANIC|ERROR|FATAL' "$1/bochs.log" 2>/dev/null | tail -n 2
	} | cut -c1-200 | sed 's/^/    | /'
}

# emu_preflight_floppy FILE: a 1.44 MB floppy whose boot sector writes
# "PREFLIGHT-OK" 400 times to COM1 through the BIOS (int 14h; Bochs writes its
# serial file through a buffer: a few bytes would stay unseen) and then idles
# in a hlt loop: proof that the emulated CPU runs and the serial console works,
# within seconds, before anything is built.
emu_preflight_floppy() {
	# cld; xor ax,ax; mov ds,ax; xor dx,dx; mov ax,0xe3; int 14h; mov cx,400
	# o: mov si,msg; i: lodsb; or al,al; jz n; mov ah,1; int 14h; jmp i
	# n: loop o; sti; h: hlt; jmp h; msg: "PREFLIGHT-OK\n\0" (loaded at 0:7c00)
	{
		printf '\xfc\x31\xc0\x8e\xd8\x31\xd2\xb8\xe3\x00\xcd\x14\xb9\x90\x01\xbe\x23\x7c'
		printf '\xac\x08\xc0\x74\x06\xb4\x01\xcd\x14\xeb\xf5\xe2\xf0\xfb\xf4\xeb\xfd'
		printf 'PREFLIGHT-OK\n\0'
	} >"$1"
	truncate -s 510 "$1"
	printf '\x55\xaa' >>"$1"
	truncate -s 1474560 "$1"
}

# emu_preflight DIR [EXTRA_LINE...]: starts the emulator with the rig's own
# configuration (a floppy that prints one line instead of the kernel's ISO)
# and fails within seconds, with its exit status and its own last lines, if it
# cannot run. Returns 0 once the floppy's line is on the serial console and
# Bochs is still running EMU_PREFLIGHT_S seconds (default 3) after its start;
# else prints the reason on stdout and returns 1. Seen on a machine without a
# sound card before the dummy sound drivers: "*** buffer overflow detected
# ***", SIGABRT 1 s after the start.
emu_preflight() {
	local dir=$1 rc t
	shift
	rm -rf "$dir"
	mkdir -p "$dir"
	command -v bochs-bin >/dev/null || { echo "bochs-bin not found (Debian package bochs)"; return 1; }
	emu_preflight_floppy "$dir/preflight.img"
	emu_config "floppy:$dir/preflight.img" "$dir/serial.log" "$dir/bochs.log" "$@" >"$dir/bochsrc"
	: >"$dir/serial.log"
	emu_start "$dir"
	t=0
	while [ "$t" -lt "$((${EMU_PREFLIGHT_S:-3} * 5))" ] || ! grep -q PREFLIGHT-OK "$dir/serial.log"; do
		if ! kill -0 "$EMU_PID" 2>/dev/null; then
			rc=0
			wait "$EMU_PID" 2>/dev/null || rc=$?
			EMU_PID=
			echo "the emulator (bochs-bin) cannot run: it ended $(awk -v t="$t" 'BEGIN { printf "%.1f", t / 5 }') s after its start with $(emu_status "$rc"); its last words:"
			emu_last_words "$dir"
			echo "    (configuration: $dir/bochsrc)"
			return 1
		fi
		if [ "$t" -ge 150 ]; then
			emu_stop
			echo "the emulator (bochs-bin) runs but its emulated CPU printed nothing on the serial console in 30 s; its last words:"
			emu_last_words "$dir"
			return 1
		fi
		sleep 0.2
		t=$((t + 1))
	done
	emu_stop
	return 0
}

# emu_outcome_text OUTCOME RC DIR SERIAL: one line (plus the emulator's last
# words where it died) saying how an emulator run ended, for a set-up error.
# OUTCOME: exited, panic, timeout, done; the serial log tells how far the
# kernel got.
emu_outcome_text() {
	local outcome=$1 rc=$2 dir=$3 serial=$4
	case "$outcome" in
	exited)
		if ! grep -q 'Linux version' "$serial" 2>/dev/null; then
			echo "the emulator ended ($(emu_status "$rc")) before the kernel printed its first line; its last words:"
			emu_last_words "$dir"
		elif ! grep -q '^RIG: - init reached' "$serial"; then
			echo "the emulator ended ($(emu_status "$rc")) after the kernel started but before /init ran (see $serial); its last words:"
			emu_last_words "$dir"
		elif ! grep -q '^RIG-DONE' "$serial"; then
			echo "the emulator ended ($(emu_status "$rc")) while /init was running, before it finished (see $serial); its last words:"
			emu_last_words "$dir"
		fi
		;;
	panic) echo "the emulated kernel panicked (see $serial)" ;;
	timeout)
		if ! grep -q 'Linux version' "$serial" 2>/dev/null; then
			echo "the kernel printed nothing on the serial console within the timeout (BIOS or boot loader stuck? see $dir/bochs.log)"
		elif ! grep -q '^RIG: - init reached' "$serial"; then
			echo "the emulated kernel did not reach /init within the timeout (see $serial)"
		else
			echo "the emulator run hit the timeout while /init was running (see $serial; --timeout raises it)"
		fi
		;;
	esac
}
