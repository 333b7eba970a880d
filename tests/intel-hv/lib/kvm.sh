# kvm modules for the rig: whether a source has the CVE-2025-71104 fix, the
# fix removed ("--revert-fix"), and kvm.ko + kvm-intel.ko built out of tree
# from a source directory or git work tree against a kernel's build tree.
# Sourced by tests/intel-hv/run.

# The fix is one block in advance_periodic_target_expiration()
# (arch/x86/kvm/lapic.c): an optional comment, then
#	if (ktime_before(<t>target_expiration, now))
#		<t>target_expiration = now;
# where <t> is `apic->lapic_timer.` (5.10 .. 6.x) or `ktimer->` (7.x).
#
# fix_block LAPIC_C [OUT]: prints the block on stdout and returns 0 if it is
# in that function exactly once; returns 1 if it is absent, 3 if the function
# is missing or the block is there more than once (a line on stderr). With
# OUT, also writes the file with the block removed there.
fix_block() {
	perl -0777 -e '
		my ($in, $out) = @ARGV;
		open(my $f, "<", $in) or do { print STDERR "cannot read $in: $!\n"; exit 3 };
		my $s = <$f>; close $f;
		$s =~ /^static void advance_periodic_target_expiration\(struct kvm_lapic \*apic\)\n\{\n.*?^\}\n/ms
			or do { print STDERR "function advance_periodic_target_expiration() not found in $in\n"; exit 3 };
		my ($fs, $fe) = ($-[0], $+[0]);
		my $body = substr($s, $fs, $fe - $fs);
		my $re = qr{
			(?: ^\t/\*\n (?: ^\t\ \*[^\n]*\n )*? ^\t\ \*/\n )?
			^\tif\ \(ktime_before\(([a-z_>.-]*)target_expiration,\ now\)\)\n
			^\t\t\1target_expiration\ =\ now;\n
			(?: ^\n )?
		}xm;
		my @m; while ($body =~ /$re/g) { push @m, [$-[0], $+[0]] }
		exit 1 if @m == 0;
		if (@m != 1) { print STDERR scalar(@m) . " copies of the fix block in advance_periodic_target_expiration()\n"; exit 3 }
		print substr($body, $m[0][0], $m[0][1] - $m[0][0]);
		if (defined $out) {
			substr($body, $m[0][0], $m[0][1] - $m[0][0]) = "";
			substr($s, $fs, $fe - $fs) = $body;
			open(my $o, ">", $out) or die "write $out: $!\n"; print $o $s; close $o;
		}
	' "$@"
}

# fix_state LAPIC_C: "yes", "no" or "unknown" (no file, or a lapic.c this
# check cannot read) on stdout.
fix_state() {
	local rc=0
	[ -f "$1" ] || { echo unknown; return 0; }
	fix_block "$1" >/dev/null 2>&1 || rc=$?
	case "$rc" in 0) echo yes ;; 1) echo no ;; *) echo unknown ;; esac
}

# check_revert ORIG NEW: the diff removes one contiguous block (comment, the
# if and the assignment) and adds nothing.
check_revert() {
	local d
	d=$(diff "$1" "$2" || true)
	[ "$(printf '%s\n' "$d" | grep -c '^[0-9]')" = 1 ] || return 1
	printf '%s\n' "$d" | head -n1 | grep -Eq '^[0-9]+(,[0-9]+)?d[0-9]+$' || return 1
	printf '%s\n' "$d" | grep -Eq '^< .*if \(ktime_before\([a-z_>.-]*target_expiration, now\)\)$' || return 1
	printf '%s\n' "$d" | grep -Eq '^< .*[a-z_>.-]*target_expiration = now;$' || return 1
	# Everything else removed is comment or blank.
	! printf '%s\n' "$d" | grep '^< ' | grep -Ev -e 'ktime_before\([a-z_>.-]*target_expiration, now\)\)$' \
		-e '[a-z_>.-]*target_expiration = now;$' | grep -Ev '^< (	/\*|	 \*.*|	 \*/|)$' | grep -q .
}

# kvm_sync SRC DEST: copies SRC's arch/x86/kvm and virt/kvm (and virt/lib
# where present) to DEST, leaving a file that did not change untouched (its
# mtime too), so that make rebuilds only what changed since the last build
# there: a bisect step recompiles one or two objects. Build outputs in SRC
# (an in-tree build) are not copied; those in DEST are kept.
kvm_sync() {
	local d
	for d in arch/x86/kvm virt/kvm; do
		[ -d "$1/$d" ] || { echo "no $d in $1" >&2; return 1; }
		mkdir -p "$2/$d"
		rsync -rc --delete --exclude='*.o' --exclude='*.ko' --exclude='*.mod' --exclude='*.mod.c' \
			--exclude='.*.cmd' --exclude='*.a' --exclude='modules.order' --exclude='Module.symvers' \
			--exclude='Kbuild' --exclude='.*.d' --exclude='*.tmp' "$1/$d/" "$2/$d/" || return 1
	done
}

# kvm_kbuild K: writes K/Kbuild (K = the copy's arch/x86/kvm) from the kvm
# Makefile's object lists, with the paths that point into a full kernel tree
# pointed at this partial one: virt/kvm's Makefile.kvm (6.x) or the KVM
# variable (5.x), and the include path trace.h needs ("../../arch/x86/kvm/
# trace.h" relative to an include directory: -idirafter arch/x86 resolves it).
# Returns 1 (with a line on stderr) if the Makefile has none of the lines the
# rig knows how to rewrite.
kvm_kbuild() {
	local k=$1
	sed -e 's|\$(srctree)/virt/kvm/Makefile.kvm|$(src)/../../../virt/kvm/Makefile.kvm|' \
		-e 's|-I *\$(srctree)/arch/x86/kvm|-I $(src) -idirafter $(src)/..|' \
		-e 's|-Iarch/x86/kvm|-I $(src) -idirafter $(src)/..|' \
		"$k/Makefile" >"$k/Kbuild.new"
	if cmp -s "$k/Makefile" "$k/Kbuild.new"; then
		rm -f "$k/Kbuild.new"
		echo "arch/x86/kvm/Makefile has none of the lines the rig rewrites for an out-of-tree build" >&2
		return 1
	fi
	if cmp -s "$k/Kbuild.new" "$k/Kbuild"; then rm -f "$k/Kbuild.new"; else mv "$k/Kbuild.new" "$k/Kbuild"; fi
}

# kvm_build SRC HEADERS BUILD_DIR OUT_DIR LOG [revert]: kvm.ko and kvm-intel.ko
# from SRC (a directory with arch/x86/kvm and virt/kvm: a kernel source tree,
# a git work tree, an unpacked linux-source) built against HEADERS (a
# kernel's build tree with Module.symvers), incrementally in BUILD_DIR, into
# OUT_DIR (debug info stripped) with OUT_DIR/load.order (kvm kvm-intel).
# With "revert", lapic.c is built with the fix block removed (OUT_DIR/
# revert.diff shows what went). Returns 0, or 1 with one line on stderr.
kvm_build() {
	local src=$1 hdrs=$2 bd=$3 out=$4 log=$5 revert=${6:-} k lapic rc=0
	[ -f "$hdrs/Module.symvers" ] || { echo "no Module.symvers in $hdrs (not a kernel build tree)" >&2; return 1; }
	mkdir -p "$bd"
	kvm_sync "$src" "$bd" 2>"$log" || { echo "cannot copy the kvm sources from $src: $(tail -n1 "$log")" >&2; return 1; }
	k=$bd/arch/x86/kvm
	lapic=$k/lapic.c
	[ -f "$lapic" ] || { echo "no arch/x86/kvm/lapic.c in $src" >&2; return 1; }
	rm -f "$out/revert.diff"
	mkdir -p "$out"
	if [ "$revert" = revert ]; then
		fix_block "$lapic" "$lapic.reverted" >"$out/removed.txt" 2>"$log" || rc=$?
		case "$rc" in
		0) ;;
		1) echo "--revert-fix: the fix block is not in advance_periodic_target_expiration() of $src/arch/x86/kvm/lapic.c" >&2; return 1 ;;
		*) echo "--revert-fix: $(head -n1 "$log")" >&2; return 1 ;;
		esac
		check_revert "$lapic" "$lapic.reverted" ||
			{ echo "--revert-fix: removing the fix would change more than the one block (diff $lapic $lapic.reverted)" >&2; return 1; }
		diff -u --label a/arch/x86/kvm/lapic.c --label b/arch/x86/kvm/lapic.c "$lapic" "$lapic.reverted" >"$out/revert.diff" || true
		mv "$lapic.reverted" "$lapic"
	fi
	kvm_kbuild "$k" 2>"$log" || { cat "$log" >&2; return 1; }
	make -C "$hdrs" M="$k" CONFIG_KVM_AMD= -j"$(nproc)" modules >"$log" 2>&1 ||
		{ echo "building kvm failed: $(grep -m1 -E 'error|Error' "$log" || tail -n1 "$log") (log: $log)" >&2; return 1; }
	strip --strip-debug -o "$out/kvm.ko" "$k/kvm.ko" &&
		strip --strip-debug -o "$out/kvm-intel.ko" "$k/kvm-intel.ko" ||
		{ echo "the kvm build left no kvm.ko/kvm-intel.ko in $k" >&2; return 1; }
	printf '%s\n' kvm.ko kvm-intel.ko >"$out/load.order"
}
