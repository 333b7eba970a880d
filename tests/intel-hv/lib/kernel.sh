# Kernels for the rig: a user's own kernel from a directory, prepared into the
# rig's kernel layout. (Debian's kernels: lib/debian.sh, same layout.)
# Sourced by tests/intel-hv/run.
#
# The kernel layout (a directory, OUT below):
#   vmlinuz                 the kernel image the emulator boots
#   kver                    its release (uname -r)
#   version, label          a version to show, a name for result folders
#   modules/                kvm-intel.ko, kvm.ko and what they depend on, as
#                           plain .ko, with load.order (dependencies first)
#   source/arch/x86/kvm/lapic.c   the kernel's own lapic.c when known, else
#   source.none             one line: why the source is unknown
#   headers                 one line: a build tree for out-of-tree modules, if any

# ko_plain IN OUT: a module file (.ko, .ko.xz, .ko.zst, .ko.gz) as a plain
# .ko (busybox insmod in the emulator takes no other). Debug sections, where
# there are any, are stripped to keep the initramfs small; a module without
# them is left byte for byte (stripping would drop its signature, and the
# kernel would load it tainted).
ko_plain() {
	case "$1" in
	*.ko) cp "$1" "$2" ;;
	*.ko.xz) xz -dc "$1" >"$2" ;;
	*.ko.zst) zstd -qdc "$1" >"$2" ;;
	*.ko.gz) gzip -dc "$1" >"$2" ;;
	*) echo "module in an unknown format: $1" >&2; return 1 ;;
	esac || { echo "cannot decompress $1" >&2; return 1; }
	if readelf -S -W "$2" 2>/dev/null | grep -q ' \.debug_'; then
		strip --strip-debug "$2" || { echo "strip --strip-debug $2 failed" >&2; return 1; }
	fi
}

# modules_collect ROOT OUT [KVER]: kvm-intel and kvm found under ROOT (a
# modules tree: lib/modules/<kver>, or a kernel build tree), with every module
# they depend on (modinfo's depends, recursively), into OUT as plain .ko
# files, OUT/load.order with dependencies first, OUT/vermagic. With KVER,
# every module's vermagic must name that release. Returns 1 with a line on
# stderr if kvm-intel is not there (built in, or not built) or a dependency is
# missing.
modules_collect() {
	local root=$1 out=$2 kver=${3:-} name f vm
	local -A path=() state=()
	local -a order=()
	rm -rf "$out"
	mkdir -p "$out"
	# Module name (dashes as underscores) -> file.
	while IFS= read -r -d '' f; do
		name=${f##*/}
		name=${name%%.ko*}
		path[${name//-/_}]=$f
	done < <(find -L "$root" \( -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst' -o -name '*.ko.gz' \) -print0 2>/dev/null)
	[ -n "${path[kvm_intel]:-}" ] ||
		{ echo "no kvm-intel module under $root (is kvm built into this kernel, or not built?)" >&2; return 1; }
	# _modules_visit NAME: depth first, NAME into order after its dependencies.
	_modules_visit() {
		local m=$1 ko d deps
		[ -z "${state[$m]:-}" ] || { [ "${state[$m]}" = "done" ] && return 0; echo "module dependency loop at $m" >&2; return 1; }
		state[$m]=visiting
		[ -n "${path[$m]:-}" ] || { echo "module $m (needed by kvm-intel) not found under $root" >&2; return 1; }
		ko=${path[$m]##*/}
		ko=${ko%%.ko*}.ko
		ko_plain "${path[$m]}" "$out/$ko" || return 1
		deps=$(modinfo -F depends "$out/$ko" 2>/dev/null) || { echo "modinfo cannot read $out/$ko" >&2; return 1; }
		for d in ${deps//,/ }; do _modules_visit "${d//-/_}" || return 1; done
		state[$m]="done"
		order+=("$ko")
	}
	_modules_visit kvm_intel || return 1
	[ -n "${state[kvm]:-}" ] || { echo "kvm-intel does not depend on kvm (modinfo -F depends)" >&2; return 1; }
	printf '%s\n' "${order[@]}" >"$out/load.order"
	vm=$(modinfo -F vermagic "$out/kvm.ko" 2>/dev/null)
	echo "$vm" >"$out/vermagic"
	if [ -n "$kver" ]; then
		for f in "${order[@]}"; do
			[[ "$(modinfo -F vermagic "$out/$f" 2>/dev/null)" == "$kver "* ]] ||
				{ echo "$f has vermagic '$(modinfo -F vermagic "$out/$f" 2>/dev/null)', not for the kernel release $kver" >&2; return 1; }
		done
	fi
}

# kimage_release FILE: the release an x86 bzImage says it is, from its header.
kimage_release() {
	file -bL "$1" 2>/dev/null | sed -n 's/.*, version \([^ ]*\) .*/\1/p'
}

# kernel_dir_prepare DIR OUT: a user's kernel into the kernel layout. DIR is
# one of:
#   - an install root: boot/vmlinuz-<kver> (or vmlinuz, bzImage at the top)
#     and lib/modules/<kver> or usr/lib/modules/<kver> (what `make install
#     modules_install INSTALL_PATH=DIR/boot INSTALL_MOD_PATH=DIR` writes, or an
#     unpacked distro package);
#   - a kernel build tree: arch/x86/boot/bzImage, include/config/
#     kernel.release, the modules built in place.
# Returns 1 with a line on stderr if DIR is neither.
kernel_dir_prepare() {
	local dir out img kver mods c hdr src
	dir=$(cd "$1" && pwd) || { echo "--kernel $1: not a directory" >&2; return 1; }
	out=$2
	rm -rf "$out"
	mkdir -p "$out"
	if [ -f "$dir/arch/x86/boot/bzImage" ] && [ -f "$dir/include/config/kernel.release" ]; then
		img=$dir/arch/x86/boot/bzImage
		kver=$(cat "$dir/include/config/kernel.release")
		mods=$dir
		hdr=$dir
		src=$dir/arch/x86/kvm/lapic.c
	else
		img=
		for c in "$dir"/boot/vmlinuz-* "$dir"/vmlinuz-* "$dir"/vmlinuz "$dir"/bzImage "$dir"/boot/vmlinuz; do
			[ -f "$c" ] && { img=$c; break; }
		done
		[ -n "$img" ] || { echo "--kernel $1: no kernel image (boot/vmlinuz-*, vmlinuz, bzImage or arch/x86/boot/bzImage)" >&2; return 1; }
		kver=$(kimage_release "$img")
		[ -n "$kver" ] || { echo "--kernel $1: $img is not an x86 bzImage (file says: $(file -bL "$img" | cut -c1-80))" >&2; return 1; }
		mods=
		for c in "$dir/lib/modules/$kver" "$dir/usr/lib/modules/$kver"; do
			[ -d "$c" ] && { mods=$c; break; }
		done
		[ -n "$mods" ] || { echo "--kernel $1: no lib/modules/$kver (the release $img says it is) under $dir" >&2; return 1; }
		hdr=
		for c in "$mods/build" "/usr/src/linux-headers-$kver" "/lib/modules/$kver/build"; do
			[ -f "$c/Module.symvers" ] && { hdr=$(cd "$c" && pwd -P); break; }
		done
		src=$mods/source/arch/x86/kvm/lapic.c
	fi
	cp "$img" "$out/vmlinuz"
	echo "$kver" >"$out/kver"
	echo "$kver" >"$out/version"
	echo "local-$(basename "$dir")-$kver" | tr -c 'A-Za-z0-9._+\n-' _ >"$out/label"
	modules_collect "$mods" "$out/modules" "$kver" || return 1
	[ -z "$hdr" ] || echo "$hdr" >"$out/headers"
	if [ -f "$src" ]; then
		mkdir -p "$out/source/arch/x86/kvm"
		cp "$src" "$out/source/arch/x86/kvm/lapic.c"
	else
		echo "no arch/x86/kvm/lapic.c with the kernel ($src)" >"$out/source.none"
	fi
	echo "$1" >"$out/spec"
	touch "$out/prepared"
}
