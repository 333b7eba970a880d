# shellcheck shell=bash disable=SC2015
# (SC2015: "A && B || fail" is used on purpose: fail when A or B fails.)
# Debian's amd64 kernels from the archive, for the emulated-Intel rig.
#
# Sourced by tests/intel-hv/run (set -Eeuo pipefail, shopt -s nullglob). A
# private apt set-up under WORK/apt/ reads Debian's suites (bullseye .. sid)
# without touching the machine's own apt sources; kernels are downloaded and
# unpacked with dpkg -x, never installed (debian_headers is the exception: it
# installs linux-headers-KVER).
#
#   debian_apt_init WORK       private apt set-up; sets DAPT (apt -o options)
#   debian_resolve SPEC        prints "PACKAGE VERSION"
#   debian_list [SERIES]       prints "VERSION PACKAGE SUITE[,SUITE]" lines
#   debian_prepare SPEC OUTDIR vmlinuz, modules/, source/lapic.c, changelog.fix
#   debian_headers KVER        /usr/src/linux-headers-KVER (apt-get install)
#   debian_kvm_source KDIR DEST  arch/x86/kvm, virt/kvm of a prepared kernel
#
# SPEC: an exact package version (5.10.223-1, 6.1.180-1~deb11u1), SERIES:oldest,
# SERIES:newest (SERIES = upstream major.minor: 5.10, 6.1, 6.12, 7.2) or current
# (what the machine's own release's linux-image-amd64 depends on now).
#
# Every function returns 0 on success; on failure it prints one line starting
# with "debian: " to stderr (quoting the failing tool's own last words) and
# returns 1. Fallible commands are checked one by one: callers may run these
# functions in a condition (where set -e is off) or plainly (where run's ERR
# trap would otherwise end the script before the "debian:" line).
#
# Environment: DEBIAN_APT_REFRESH=1 forces apt-get update (else the lists are
# reused while younger than 6 hours); DEBIAN_SOURCE=0 skips linux-source;
# DEBIAN_KEYRING overrides the archive keyring (a test hook);
# DEBIAN_HEADERS_ALLOW_UPGRADE=1 lets debian_headers upgrade or remove
# installed packages (refused by default).

# The suites read, in this order (first listed wins for display): "SUITE URI".
DEBIAN_SUITES=(
	"bullseye http://deb.debian.org/debian"
	"bullseye-security http://deb.debian.org/debian-security"
	"bookworm http://deb.debian.org/debian"
	"bookworm-updates http://deb.debian.org/debian"
	"bookworm-security http://deb.debian.org/debian-security"
	"bookworm-backports http://deb.debian.org/debian"
	"trixie http://deb.debian.org/debian"
	"trixie-updates http://deb.debian.org/debian"
	"trixie-security http://deb.debian.org/debian-security"
	"sid http://deb.debian.org/debian"
)
DEBIAN_KEYRING_DEFAULT=/usr/share/keyrings/debian-archive-keyring.gpg
DAPT=()
_DEBIAN_WORK=
_DEBIAN_UPDATED=
_DEBIAN_DEB=''
_DEBIAN_HOW=''
_DEBIAN_BYTES=''
_DEBIAN_SECS=''
_DEBIAN_TARBALL=''
_DEBIAN_SOURCE_STATE=''

# modules_collect and ko_plain (the rig's kernel layout).
# shellcheck source=kernel.sh
[ "$(type -t modules_collect)" = function ] || . "$(dirname "${BASH_SOURCE[0]}")/kernel.sh"

# _debian_fail MESSAGE [LOG]: the one "debian:" line on stderr, with the last
# error lines of LOG (apt's "E:" lines, else its last non-empty line). Returns
# 0: the caller returns 1 itself (under run's set -e a status of 1 here would
# end the script inside "|| { _debian_fail ...; return 1; }").
_debian_fail() {
	local msg=$1 log=${2:-} words=
	if [ -n "$log" ] && [ -s "$log" ]; then
		# apt's resolver explains an "E: Unable to correct problems" in the
		# lines before it ("X : Depends: Y but Z is to be installed"): the
		# first of those is quoted too.
		words=$(awk '/^E: / { e = e (e == "" ? "" : " | ") $0 }
			/ : Depends: / && dep == "" { dep = $0; gsub(/  +/, " ", dep); sub(/^ /, "", dep) }
			NF { last = $0 }
			END {
				if (e == "") print last
				else print e (dep != "" ? " (" dep ")" : "")
			}' "$log")
		# Never more than one line, and not a whole screen either.
		words=${words//$'\n'/ }
		[ ${#words} -le 600 ] || words="${words:0:600}..."
	fi
	echo "debian: $msg${words:+: $words}" >&2
}

# _debian_now: seconds since the epoch, with decimals (for timings).
_debian_now() {
	printf '%s\n' "${EPOCHREALTIME/,/.}"
}

# _debian_secs START: seconds elapsed since START (from _debian_now), "%.1f".
_debian_secs() {
	awk -v a="$1" -v b="$(_debian_now)" 'BEGIN { printf "%.1f", b - a }'
}

# _debian_mb BYTES: megabytes, "%.1f".
_debian_mb() {
	awk -v n="$1" 'BEGIN { printf "%.1f", n / 1e6 }'
}

# _debian_series VERSION: the upstream major.minor of a Debian version
# (6.1.180-1~deb11u1 -> 6.1; 1:7.2.13-1 -> 7.2); nothing if it has none.
_debian_series() {
	local v=${1#*:}
	v=${v%%-*}
	[[ $v =~ ^([0-9]+)\.([0-9]+) ]] && echo "${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
	return 0
}

# _debian_vsort: sorts "VERSION REST" lines by VERSION in dpkg's order. sort -V
# gets them almost right; an insertion sort with dpkg --compare-versions then
# fixes what it gets wrong (few comparisons on nearly sorted input).
_debian_vsort() {
	local -a lines=()
	local line i j
	mapfile -t lines < <(sort -V -k1,1 -k2)
	for ((i = 1; i < ${#lines[@]}; i++)); do
		line=${lines[i]}
		j=$((i - 1))
		while [ "$j" -ge 0 ] && dpkg --compare-versions "${lines[j]%% *}" gt "${line%% *}"; do
			lines[j + 1]=${lines[j]}
			j=$((j - 1))
		done
		lines[j + 1]=$line
	done
	[ ${#lines[@]} = 0 ] || printf '%s\n' "${lines[@]}"
}

# debian_apt_init WORK: the private apt set-up under WORK/apt/ (its own sources,
# lists, cache and an empty dpkg status) and the global array DAPT of apt -o
# options for it (apt-get "${DAPT[@]}" ..., apt-cache "${DAPT[@]}" ...). Runs
# apt-get update at most once per process, and only when the lists are older
# than 6 hours, the sources changed, or DEBIAN_APT_REFRESH=1.
debian_apt_init() {
	local work=${1:-} a keyring sources want stamp log fresh=0 t0
	[ -n "$work" ] || { _debian_fail "debian_apt_init: no WORK directory given"; return 1; }
	mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/apt/keyring" ||
		{ _debian_fail "cannot create $work/apt"; return 1; }
	# Absolute: apt-get download runs in another directory.
	work=$(cd "$work" && pwd) || { _debian_fail "cannot enter $work"; return 1; }
	a=$work/apt
	keyring=${DEBIAN_KEYRING:-$DEBIAN_KEYRING_DEFAULT}
	# A newer keyring fetched earlier (see below) replaces the machine's.
	[ -n "${DEBIAN_KEYRING:-}" ] || [ ! -s "$a/keyring/debian-archive-keyring.gpg" ] ||
		keyring=$a/keyring/debian-archive-keyring.gpg
	[ -r "$keyring" ] ||
		{ _debian_fail "archive keyring $keyring missing (apt-get install debian-archive-keyring)"; return 1; }
	sources=$a/sources.list
	# Rewritten only when it changes: apt's cache is checked against its age.
	_debian_write_sources "$keyring" >"$sources.new" || { _debian_fail "cannot write $sources.new"; return 1; }
	if cmp -s "$sources.new" "$sources"; then
		rm -f "$sources.new"
	else
		mv -f "$sources.new" "$sources" || { _debian_fail "cannot write $sources"; return 1; }
	fi
	DAPT=(
		-o "Dir::Etc::SourceList=$sources"
		-o Dir::Etc::SourceParts=/dev/null
		-o "Dir::State::Lists=$a/lists"
		-o "Dir::Cache=$a/cache"
		# The machine's apt.conf.d may disable the package cache ("" =
		# rebuilt, ~2.5 s, on every apt-cache call); ours is kept (~110 MB).
		# The source cache only speeds up rebuilds after dpkg status
		# changes, and this status never changes: not kept.
		-o Dir::Cache::pkgcache=pkgcache.bin
		-o Dir::Cache::srcpkgcache=
		-o Dir::State::status=/dev/null
		-o Dir::Etc::Preferences=/dev/null
		-o Dir::Etc::PreferencesParts=/dev/null
		-o APT::Default-Release=
		-o Acquire::Languages=none
	)
	_DEBIAN_WORK=$work
	stamp=$a/updated
	want=$(cksum <"$sources") || { _debian_fail "cannot read $sources"; return 1; }
	if [ "$_DEBIAN_UPDATED" = "$a" ]; then
		return 0 # at most once per process
	elif [ "${DEBIAN_APT_REFRESH:-0}" = 1 ] || [ ! -f "$stamp" ] ||
		[ "$(cat "$stamp")" != "$want" ] || [ -z "$(find "$stamp" -mmin -360)" ]; then
		fresh=1
	fi
	[ "$fresh" = 1 ] || return 0
	log=$a/update.log
	t0=$(_debian_now)
	rm -f "$stamp"
	if ! apt-get "${DAPT[@]}" update >"$log" 2>&1; then
		# A suite signed only with keys newer than the machine's keyring:
		# fetch the newest debian-archive-keyring from the suites that did
		# verify (apt only downloads from those) and try once more with it.
		if grep -Eq 'NO_PUBKEY|EXPKEYSIG|KEYEXPIRED|is not signed' "$log"; then
			echo "rig: debian: apt-get update: $(grep -Em1 'NO_PUBKEY|EXPKEYSIG|KEYEXPIRED' "$log" | sed 's/^ *//' || true)"
			echo "rig: debian: fetching the newest debian-archive-keyring from the suites that verified"
			_debian_new_keyring "$a" || return 1
			keyring=$a/keyring/debian-archive-keyring.gpg
			_debian_write_sources "$keyring" >"$sources" ||
				{ _debian_fail "cannot write $sources"; return 1; }
			want=$(cksum <"$sources")
			apt-get "${DAPT[@]}" update >"$log" 2>&1 ||
				{ _debian_fail "apt-get update (private sources $sources, keyring $keyring) failed" "$log"; return 1; }
		else
			_debian_fail "apt-get update (private sources $sources) failed" "$log"
			return 1
		fi
	fi
	# apt-get update exits 0 with only a warning when a suite's signature cannot
	# be checked but an older list is kept: treat that as a failure too.
	if grep -Eq '^(W|E): .*(NO_PUBKEY|EXPKEYSIG|KEYEXPIRED|not signed|GPG error)' "$log"; then
		_debian_fail "apt-get update: signature problem (keyring $keyring)" "$log"
		return 1
	fi
	echo "$want" >"$stamp"
	_DEBIAN_UPDATED=$a
	echo "rig: debian: apt-get update of ${#DEBIAN_SUITES[@]} suites (private lists in $a) in $(_debian_secs "$t0") s"
}

# _debian_write_sources KEYRING: the private sources.list on stdout (binary
# Packages indexes only: no DEP-11 or translations).
_debian_write_sources() {
	local s
	for s in "${DEBIAN_SUITES[@]}"; do
		echo "deb [arch=amd64 signed-by=$1 target=Packages] ${s#* } ${s%% *} main"
	done
}

# _debian_new_keyring APTDIR: downloads the newest debian-archive-keyring from
# the suites whose signatures checked out and puts its keyring in
# APTDIR/keyring/debian-archive-keyring.gpg.
_debian_new_keyring() {
	local a=$1 d ver log debs
	d=$a/keyring/tmp
	log=$a/keyring.log
	rm -rf "$d" && mkdir -p "$d" && chmod 0755 "$d" || { _debian_fail "cannot create $d"; return 1; }
	! id _apt >/dev/null 2>&1 || chown _apt "$d" || true
	ver=$(apt-cache "${DAPT[@]}" madison debian-archive-keyring 2>"$log" | awk -F' *\\| *' 'NR == 1 { print $2 }')
	[ -n "$ver" ] || { _debian_fail "no debian-archive-keyring in the suites that verified" "$log"; return 1; }
	(cd "$d" && apt-get "${DAPT[@]}" download "debian-archive-keyring=$ver") >"$log" 2>&1 ||
		{ _debian_fail "apt-get download debian-archive-keyring=$ver failed" "$log"; return 1; }
	debs=("$d"/*.deb)
	[ ${#debs[@]} = 1 ] && dpkg -x "${debs[0]}" "$d/x" >>"$log" 2>&1 &&
		[ -s "$d/x/usr/share/keyrings/debian-archive-keyring.gpg" ] ||
		{ _debian_fail "debian-archive-keyring $ver: no usr/share/keyrings/debian-archive-keyring.gpg" "$log"; return 1; }
	cp "$d/x/usr/share/keyrings/debian-archive-keyring.gpg" "$a/keyring/debian-archive-keyring.gpg" &&
		echo "$ver" >"$a/keyring/version" && rm -rf "$d" ||
		{ _debian_fail "cannot install the keyring into $a/keyring"; return 1; }
	echo "rig: debian: using debian-archive-keyring $ver from the archive ($a/keyring)"
}

# _debian_need: makes sure debian_apt_init ran (with DEBIAN_WORK, run's WORK or
# the rig's default work directory).
_debian_need() {
	[ ${#DAPT[@]} -gt 0 ] && [ -n "$_DEBIAN_WORK" ] && return 0
	debian_apt_init "${DEBIAN_WORK:-${WORK:-/var/tmp/tickburst-intel-hv}}"
}

# _debian_catalog: every generic amd64 image in the private lists, one
# "VERSION PACKAGE SUITE[,SUITE...]" line each, unsorted. Generic means
# linux-image-<abi>-amd64: not -cloud-/-rt-, not -unsigned or -dbg (they do not
# end in -amd64), not the meta packages linux-image-amd64 and
# linux-image-<major.minor>-amd64.
_debian_catalog() {
	local -a names=()
	local order log
	log=$_DEBIAN_WORK/apt/cache.log
	mapfile -t names < <(apt-cache "${DAPT[@]}" pkgnames linux-image- 2>"$log" |
		grep -E '^linux-image-[0-9][0-9A-Za-z.+~-]*-amd64$' |
		grep -Ev -e '-(cloud|rt)-amd64$' -e '^linux-image-[0-9]+\.[0-9]+-amd64$' || true)
	[ ${#names[@]} -gt 0 ] ||
		{ _debian_fail "no linux-image-*-amd64 package in the private lists (apt-cache pkgnames)" "$log"; return 1; }
	order=$(printf '%s\n' "${DEBIAN_SUITES[@]%% *}")
	# madison: "PKG | VERSION | URI SUITE/main amd64 Packages", one per suite.
	apt-cache "${DAPT[@]}" madison "${names[@]}" 2>"$log" | awk -F' *\\| *' -v order="$order" '
		BEGIN { n = split(order, o, "\n"); for (i = 1; i <= n; i++) rank[o[i]] = i }
		NF >= 3 {
			split($3, f, " "); suite = f[2]; sub(/\/.*/, "", suite)
			k = $2 " " $1
			if (!(k in seen)) { seen[k] = 1; keys[++nk] = k }
			has[k, suite] = 1
		}
		END {
			for (i = 1; i <= nk; i++) {
				s = ""
				for (r = 1; r <= n; r++) if ((keys[i], o[r]) in has) s = s (s == "" ? "" : ",") o[r]
				print keys[i], s
			}
		}' || { _debian_fail "apt-cache madison failed" "$log"; return 1; }
}

# _debian_resolve_full SPEC: prints "PACKAGE VERSION SUITES" for SPEC.
_debian_resolve_full() {
	local spec=${1:-} series line best='' v cat pkg codename meta log
	local -a lines=() cands=()
	_debian_need || return 1
	cat=$(_debian_catalog) || return 1
	mapfile -t lines <<<"$cat"
	case "$spec" in
	current)
		# The machine's own release (bookworm here) and its updates and
		# security suites: where its own linux-image-amd64 comes from.
		# shellcheck source=/dev/null
		codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}" || true)
		[ -n "$codename" ] || { _debian_fail "current: no VERSION_CODENAME in /etc/os-release"; return 1; }
		log=$_DEBIAN_WORK/apt/cache.log
		for line in $(apt-cache "${DAPT[@]}" madison linux-image-amd64 2>"$log" |
			awk -F' *\\| *' -v c="$codename" '{ split($3, f, " "); s = f[2]; sub(/\/.*/, "", s) }
				s == c || s == c "-updates" || s == c "-security" { print $2 }'); do
			[ -z "$best" ] || dpkg --compare-versions "$line" gt "$best" && best=$line
		done
		[ -n "$best" ] ||
			{ _debian_fail "current: no linux-image-amd64 in $codename, $codename-updates or $codename-security" "$log"; return 1; }
		meta=$(apt-cache "${DAPT[@]}" show "linux-image-amd64=$best" 2>"$log" |
			awk '/^Depends:/ { n = split(substr($0, 10), d, ","); for (i = 1; i <= n; i++) {
				split(d[i], w, " "); if (w[1] ~ /^linux-image-[0-9]/) { print w[1]; exit } } }')
		[ -n "$meta" ] ||
			{ _debian_fail "current: linux-image-amd64 $best depends on no linux-image-<abi>-amd64" "$log"; return 1; }
		for line in "${lines[@]}"; do
			read -r v pkg _ <<<"$line"
			[ "$pkg" = "$meta" ] && [ "$v" = "$best" ] && { echo "$pkg $v ${line##* }"; return 0; }
		done
		_debian_fail "current: linux-image-amd64 $best ($codename) depends on $meta, which is not in the lists at $best"
		return 1
		;;
	*:oldest | *:newest)
		series=${spec%:*}
		[[ $series =~ ^[0-9]+\.[0-9]+$ ]] ||
			{ _debian_fail "bad series '$series' in '$spec' (want MAJOR.MINOR, e.g. 5.10:oldest)"; return 1; }
		for line in "${lines[@]}"; do
			[ "$(_debian_series "${line%% *}")" = "$series" ] || continue
			if [ -z "$best" ]; then
				best=$line
			elif [ "${spec#*:}" = oldest ]; then
				dpkg --compare-versions "${line%% *}" lt "${best%% *}" && best=$line
			else
				dpkg --compare-versions "${line%% *}" gt "${best%% *}" && best=$line
			fi
		done
		[ -n "$best" ] || { _debian_fail "no generic amd64 image of series $series in the archive (series there: $(_debian_series_list "$cat"))"; return 1; }
		read -r v pkg line <<<"$best"
		echo "$pkg $v $line"
		;;
	[0-9]*.[0-9]*)
		# Exact version: the package whose Version field is this string,
		# compared as a string (6.12.118-1 is trixie's
		# linux-image-6.12.118+deb13-amd64, never bookworm's
		# 6.12.118-1~deb12u1 build of linux-image-6.12.118+deb12-amd64). One
		# source version builds one ABI, so one package name per version;
		# should the archive ever hold two, the one whose name sorts highest
		# (sort -V) is taken.
		for line in "${lines[@]}"; do
			[ "${line%% *}" = "$spec" ] && cands+=("$line")
		done
		if [ ${#cands[@]} -gt 0 ]; then
			best=$(printf '%s\n' "${cands[@]}" | sort -V -k2,2 | tail -n1)
			read -r v pkg line <<<"$best"
			echo "$pkg $v $line"
			return 0
		fi
		_debian_fail "$(_debian_nearest "$spec" "$cat")"
		return 1
		;;
	*)
		_debian_fail "cannot read kernel spec '$spec' (want a package version like 5.10.223-1, SERIES:oldest, SERIES:newest or current)"
		return 1
		;;
	esac
}

# _debian_series_list CATALOG: the series in CATALOG, space separated.
_debian_series_list() {
	local v
	while read -r v _; do _debian_series "$v"; done <<<"$1" | sort -uV | tr '\n' ' ' | sed 's/ $//'
}

# _debian_nearest VERSION CATALOG: the message for an unknown version: the
# nearest versions of its series below and above it.
_debian_nearest() {
	local want=$1 series v below='' above=''
	series=$(_debian_series "$want")
	while read -r v _; do
		[ "$(_debian_series "$v")" = "$series" ] || continue
		if dpkg --compare-versions "$v" lt "$want"; then
			[ -z "$below" ] || dpkg --compare-versions "$v" gt "$below" && below=$v
		else
			[ -z "$above" ] || dpkg --compare-versions "$v" lt "$above" && above=$v
		fi
	done <<<"$2"
	if [ -z "$below$above" ]; then
		echo "no generic amd64 image at version $want, and no ${series:-such} series in the archive (series there: $(_debian_series_list "$2"))"
	else
		echo "no generic amd64 image at version $want; nearest $series: ${below:-none} (below), ${above:-none} (above)"
	fi
}

# debian_resolve SPEC: prints "PACKAGE VERSION" of the generic amd64 image.
debian_resolve() {
	local r
	r=$(_debian_resolve_full "${1:-}") || return 1
	echo "${r% *}"
}

# debian_list [SERIES]: every generic amd64 image in the archive, one
# "VERSION PACKAGE SUITE[,SUITE]" line each, in dpkg's version order.
debian_list() {
	local series=${1:-} cat line
	_debian_need || return 1
	cat=$(_debian_catalog) || return 1
	if [ -n "$series" ]; then
		[[ $series =~ ^[0-9]+\.[0-9]+$ ]] || { _debian_fail "bad series '$series' (want MAJOR.MINOR, e.g. 5.10)"; return 1; }
		cat=$(while read -r line; do
			[ "$(_debian_series "${line%% *}")" != "$series" ] || echo "$line"
		done <<<"$cat")
		[ -n "$cat" ] ||
			{ _debian_fail "no generic amd64 image of series $series in the archive (series there: $(_debian_series_list "$(_debian_catalog)"))"; return 1; }
	fi
	_debian_vsort <<<"$cat"
}

# _debian_fetch PACKAGE VERSION: PACKAGE_VERSION's .deb in the download cache
# WORK/debian/deb/, downloaded (apt-get download, as _apt where it can) unless
# a copy with the archive's SHA256 is there. Sets _DEBIAN_DEB (its path),
# _DEBIAN_HOW (downloaded or cached), _DEBIAN_BYTES and _DEBIAN_SECS.
_debian_fetch() {
	local pkg=$1 ver=$2 dir show file sha size t0 log tmp
	local -a debs=()
	dir=$_DEBIAN_WORK/debian/deb
	log=$_DEBIAN_WORK/debian/download.log
	mkdir -p "$dir" || { _debian_fail "cannot create $dir"; return 1; }
	show=$(apt-cache "${DAPT[@]}" show "$pkg=$ver" 2>"$log") ||
		{ _debian_fail "apt-cache show $pkg=$ver failed" "$log"; return 1; }
	file=$(awk '/^Filename:/ { n = split($2, p, "/"); print p[n]; exit }' <<<"$show")
	sha=$(awk '/^SHA256:/ { print $2; exit }' <<<"$show")
	size=$(awk '/^Size:/ { print $2; exit }' <<<"$show")
	[ -n "$file" ] && [ -n "$sha" ] || { _debian_fail "$pkg $ver is not in the archive (apt-cache show has no Filename or SHA256)" "$log"; return 1; }
	_DEBIAN_DEB=$dir/$file
	if [ -f "$dir/$file" ] && [ "$(sha256sum <"$dir/$file")" = "$sha  -" ]; then
		_DEBIAN_HOW=cached _DEBIAN_BYTES=$size _DEBIAN_SECS=0
		return 0
	fi
	# apt-get download runs as _apt when that user can write the directory:
	# a private directory per download owned by _apt (it stays unsandboxed
	# as root, with a notice, where there is no _apt user).
	tmp=$dir/.get.$$
	rm -rf "$tmp" && mkdir -p "$tmp" && chmod 0755 "$tmp" || { _debian_fail "cannot create $tmp"; return 1; }
	! id _apt >/dev/null 2>&1 || chown _apt "$tmp" || true
	t0=$(_debian_now)
	(cd "$tmp" && apt-get "${DAPT[@]}" download "$pkg=$ver") >"$log" 2>&1 ||
		{ _debian_fail "apt-get download $pkg=$ver failed" "$log"; rm -rf "$tmp"; return 1; }
	debs=("$tmp"/*.deb)
	[ ${#debs[@]} = 1 ] ||
		{ _debian_fail "apt-get download $pkg=$ver left ${#debs[@]} .deb files" "$log"; rm -rf "$tmp"; return 1; }
	mv -f "${debs[0]}" "$dir/$file" && rm -rf "$tmp" || { _debian_fail "cannot move the .deb into $dir"; return 1; }
	_DEBIAN_HOW=downloaded
	_DEBIAN_BYTES=$(stat -c %s "$dir/$file")
	_DEBIAN_SECS=$(_debian_secs "$t0")
}

# _debian_modules MODDIR OUT KVER: kvm-intel, kvm and every module they depend
# on, from the unpacked image's MODDIR, into OUT in the rig's layout
# (modules_collect, lib/kernel.sh: plain .ko, load.order, vermagic).
_debian_modules() {
	local err
	err=$(modules_collect "$1" "$2" "$3" 2>&1 >/dev/null) || { _debian_fail "${err:-cannot collect the kvm modules from $1}"; return 1; }
}

# _debian_changelog_fix CHANGELOG_GZ: the changelog lines about the fix for
# CVE-2025-71104 ("KVM: x86: Fix VM hard lockup after prolonged inactivity with
# periodic HV timer"), each as "linux VERSION: TEXT" with the version of the
# entry it is in. A subject wrapped onto two lines is joined. Entries of
# linux-signed-amd64 are named after the linux version they sign.
_debian_changelog_fix() {
	gzip -dc "$1" | awk '
		# Entry headers: "linux (5.10.249-1) bullseye-security; urgency=high".
		/^[a-z0-9][a-z0-9.+-]* \(/ {
			v = $2; gsub(/[()]/, "", v); ver = $1 " " v
			signed = ($1 ~ /^linux-signed/)
		}
		signed && /Sign kernel from linux / {
			v = $0; sub(/.*Sign kernel from linux /, "", v); sub(/[ \t].*/, "", v)
			ver = "linux " v
		}
		{ n++; text[n] = $0; entry[n] = ver }
		END {
			for (i = 1; i <= n; i++) {
				l = tolower(text[i]); nx = tolower(text[i + 1])
				# The line after, when it continues this item (wrapped).
				cont = (i < n && text[i + 1] ~ /^[ \t]+[^ \t*-]/ && text[i + 1] !~ /^[ \t]+(https?:|\[)/)
				hit = index(l, "cve-2025-71104") ||
					(index(l, "hard lockup") && (index(l, "periodic") || (cont && index(nx, "periodic"))))
				if (!hit) continue
				t = text[i]; sub(/^[ \t]+/, "", t); e = entry[i]
				if (cont) { c = text[i + 1]; sub(/^[ \t]+/, "", c); t = t " " c; i++ }
				print e ": " t
			}
		}'
}

# _debian_source_pkg VERSION: the binary package with the kernel source
# tarball of exactly VERSION: linux-source-MAJOR.MINOR, or linux-source where
# that is not a meta package (it is one today, up to 7.2, depending on
# linux-source-MAJOR.MINOR); nothing if the archive has neither.
_debian_source_pkg() {
	local ver=$1 cand show
	for cand in "linux-source-$(_debian_series "$ver")" linux-source; do
		# (apt-cache show exits 0, saying nothing, for a version it lacks.)
		show=$(apt-cache "${DAPT[@]}" show "$cand=$ver" 2>/dev/null) || continue
		grep -q '^Filename:' <<<"$show" || continue
		! grep -q '^Depends:.*linux-source-[0-9]' <<<"$show" || continue
		echo "$cand"
		return 0
	done
}

# _debian_source_tar DEB DIR ONE PATTERN...: extracts the members of the
# kernel source tarball inside DEB (usr/src/linux-source-*.tar.*) that match
# PATTERN (tar wildcards, '*' = the tarball's one top directory) into DIR.
# ONE=1: stop after the first match (tar --occurrence=1; arch/ comes early in
# the tarball, so ~1.5 s instead of ~15 s for decompressing all of it; the
# stages before tar then die of SIGPIPE, which is expected: tar's own status
# decides). Sets _DEBIAN_TARBALL.
_debian_source_tar() {
	local deb=$1 dir=$2 one=$3 log tarball z st=0
	local -a occ=()
	shift 3
	log=$_DEBIAN_WORK/debian/source.log
	tarball=$(dpkg-deb -c "$deb" 2>"$log" | awk '$6 ~ /^\.\/usr\/src\/linux-source[^\/]*\.tar(\.(xz|zst|gz|bz2))?$/ { print $6 }')
	[ -n "$tarball" ] && [ "$(wc -l <<<"$tarball")" = 1 ] ||
		{ _debian_fail "no single usr/src/linux-source*.tar.* in $deb" "$log"; return 1; }
	case "$tarball" in
	*.xz) z=-J ;;
	*.zst) z=--zstd ;;
	*.gz) z=-z ;;
	*.bz2) z=-j ;;
	*) z=--no-auto-compress ;;
	esac
	[ "$one" = 1 ] && occ=(--occurrence=1)
	mkdir -p "$dir" || { _debian_fail "cannot create $dir"; return 1; }
	(
		set +o pipefail
		dpkg-deb --fsys-tarfile "$deb" 2>/dev/null | tar -xOf - "$tarball" 2>/dev/null |
			tar -x "$z" -f - -C "$dir" --wildcards --no-wildcards-match-slash "${occ[@]}" "$@" 2>"$log"
	) || st=$?
	[ "$st" = 0 ] || { _debian_fail "cannot extract $* from $tarball in ${deb##*/} (tar exit $st)" "$log"; return 1; }
	_DEBIAN_TARBALL=$tarball
}

# _debian_source PACKAGE VERSION OUTDIR: OUTDIR/source/arch/x86/kvm/lapic.c
# from the source package of exactly VERSION (_debian_source_pkg), or
# OUTDIR/source.none saying why not. The source .deb (121-164 MB for 5.10 ..
# 7.2, measured) is deleted once lapic.c is out: only that one file (~100 KB)
# is needed, and it is kept under WORK/debian/source/VERSION/ so that a
# prepare of the same version into any OUTDIR does not download it again
# (debian_kvm_source downloads it once more, if used).
_debian_source() {
	local pkg=$1 ver=$2 out=$3 spkg cache deb how bytes secs t0 top
	local -a got=()
	cache=$_DEBIAN_WORK/debian/source/$(_debian_label "$ver")
	_DEBIAN_SOURCE_STATE=1
	mkdir -p "${cache%/*}" || { _debian_fail "cannot create ${cache%/*}"; return 1; }
	if [ -s "$cache/lapic.c" ] && [ -s "$cache/from" ]; then
		mkdir -p "$out/source/arch/x86/kvm" && cp "$cache/lapic.c" "$out/source/arch/x86/kvm/lapic.c" ||
			{ _debian_fail "cannot copy $cache/lapic.c"; return 1; }
		echo "rig: debian $ver: lapic.c from $(cat "$cache/from") (cached in $cache)"
		return 0
	fi
	spkg=$(_debian_source_pkg "$ver")
	if [ -z "$spkg" ]; then
		echo "no linux-source-$(_debian_series "$ver") (or linux-source with a source tarball) at version $ver in the archive" >"$out/source.none"
		echo "rig: debian $ver: $(cat "$out/source.none")"
		return 0
	fi
	# A source listed but not downloadable (seen: 404 for linux-source-5.10
	# 5.10.257-1 and 5.10.259-1 while the images were there) is not an error
	# of the kernel: source.none says why, and the stamp makes the next
	# prepare try again.
	if ! _debian_fetch "$spkg" "$ver" 2>"$cache.err"; then
		sed -e 's/^debian: //' "$cache.err" >"$out/source.none"
		rm -f "$cache.err"
		_DEBIAN_SOURCE_STATE=failed
		echo "rig: debian $ver: no source: $(cat "$out/source.none")"
		return 0
	fi
	rm -f "$cache.err"
	deb=$_DEBIAN_DEB how=$_DEBIAN_HOW bytes=$_DEBIAN_BYTES secs=$_DEBIAN_SECS
	t0=$(_debian_now)
	rm -rf "$cache" || { _debian_fail "cannot remove $cache"; return 1; }
	_debian_source_tar "$deb" "$cache/x" 1 '*/arch/x86/kvm/lapic.c' || return 1
	got=("$cache"/x/*/arch/x86/kvm/lapic.c)
	[ ${#got[@]} = 1 ] && [ -s "${got[0]}" ] ||
		{ _debian_fail "$spkg $ver: no */arch/x86/kvm/lapic.c in $_DEBIAN_TARBALL"; return 1; }
	top=${got[0]#"$cache"/x/}
	top=${top%%/*}
	mv "${got[0]}" "$cache/lapic.c" && rm -rf "$cache/x" &&
		echo "$spkg $ver ($top/arch/x86/kvm/lapic.c in $_DEBIAN_TARBALL)" >"$cache/from" ||
		{ _debian_fail "cannot write $cache"; return 1; }
	rm -f "$deb"
	mkdir -p "$out/source/arch/x86/kvm" && cp "$cache/lapic.c" "$out/source/arch/x86/kvm/lapic.c" ||
		{ _debian_fail "cannot write $out/source"; return 1; }
	if [ "$how" = downloaded ]; then
		echo "rig: debian $ver: $spkg $ver, $(_debian_mb "$bytes") MB in $secs s; lapic.c extracted in $(_debian_secs "$t0") s"
	else
		echo "rig: debian $ver: $spkg $ver (cached .deb); lapic.c extracted in $(_debian_secs "$t0") s"
	fi
}

# debian_kvm_source KDIR DEST: arch/x86/kvm, virt/kvm and virt/lib of the
# Debian kernel prepared in KDIR (debian_prepare's OUTDIR: its package and
# version files) into DEST, from the source package of exactly that version.
# Reused while DEST/.debian-source names the same package and version. The
# source .deb is deleted afterwards, as in debian_prepare.
debian_kvm_source() {
	local kdir=${1:-} dest=${2:-} ver spkg want deb how bytes secs t0 top
	local -a tops=()
	[ -n "$kdir" ] && [ -n "$dest" ] || { _debian_fail "usage: debian_kvm_source KDIR DEST"; return 1; }
	ver=$(cat "$kdir/version" 2>/dev/null) && [ -n "$ver" ] ||
		{ _debian_fail "$kdir/version missing: not a kernel from debian_prepare"; return 1; }
	_debian_need || return 1
	spkg=$(_debian_source_pkg "$ver")
	[ -n "$spkg" ] || { _debian_fail "no linux-source-$(_debian_series "$ver") (or linux-source with a source tarball) at version $ver in the archive"; return 1; }
	want="$spkg $ver"
	if [ -f "$dest/.debian-source" ] && [ "$(cat "$dest/.debian-source")" = "$want" ]; then
		return 0
	fi
	_debian_fetch "$spkg" "$ver" || return 1
	deb=$_DEBIAN_DEB how=$_DEBIAN_HOW bytes=$_DEBIAN_BYTES secs=$_DEBIAN_SECS
	t0=$(_debian_now)
	rm -rf "$dest/.x" "$dest/arch" "$dest/virt" "$dest/.debian-source" || { _debian_fail "cannot clear $dest"; return 1; }
	_debian_source_tar "$deb" "$dest/.x" 0 '*/arch/x86/kvm' '*/virt/kvm' '*/virt/lib' || return 1
	tops=("$dest"/.x/*/arch/x86/kvm)
	[ ${#tops[@]} = 1 ] && [ -d "${tops[0]%/arch/x86/kvm}/virt/kvm" ] ||
		{ _debian_fail "$spkg $ver: no single */arch/x86/kvm and */virt/kvm in $_DEBIAN_TARBALL"; return 1; }
	top=${tops[0]%/arch/x86/kvm}
	mv "$top/arch" "$top/virt" "$dest/" && rm -rf "$dest/.x" && echo "$want" >"$dest/.debian-source" ||
		{ _debian_fail "cannot write $dest"; return 1; }
	rm -f "$deb"
	if [ "$how" = downloaded ]; then
		echo "rig: debian $ver: kvm source from $spkg $ver, $(_debian_mb "$bytes") MB in $secs s; extracted in $(_debian_secs "$t0") s"
	else
		echo "rig: debian $ver: kvm source from $spkg $ver (cached .deb); extracted in $(_debian_secs "$t0") s"
	fi
}

# _debian_label VERSION: VERSION with only [A-Za-z0-9._+-] (others, such as
# ~ and an epoch's :, become _), as run names a kernel's directory.
_debian_label() {
	local v=$1
	echo "${v//[^A-Za-z0-9._+-]/_}"
}

# _debian_image_parts PACKAGE VERSION: PACKAGE and, recursively, the packages
# of the same ABI and version it depends on (linux-binary-ABI, linux-modules-ABI,
# linux-base-ABI for the split images of 7.x), space separated.
_debian_image_parts() {
	local pkg=$1 ver=$2 abi=${1#linux-image-} log todo p d
	local -a list=()
	log=$_DEBIAN_WORK/debian/show.log
	todo=$pkg
	while [ -n "$todo" ]; do
		p=${todo%% *}
		[[ $todo == *" "* ]] && todo=${todo#* } || todo=
		[[ " ${list[*]} " != *" $p "* ]] || continue
		list+=("$p")
		d=$(apt-cache "${DAPT[@]}" show "$p=$ver" 2>"$log" | awk -v abi="$abi" -v ver="$ver" '
			/^Depends:/ {
				n = split(substr($0, 10), alt, /[,|]/)
				for (i = 1; i <= n; i++) {
					t = alt[i]; gsub(/^ +| +$/, "", t)
					name = substr(t, 1, index(t, " ") - 1)
					# String comparisons: the ABI has regex characters (+).
					if (name ~ /^linux-[a-z]+-/ && t == name " (= " ver ")" &&
						substr(name, length(name) - length(abi)) == "-" abi)
						print name
				}
				exit
			}') || { _debian_fail "apt-cache show $p=$ver failed" "$log"; return 1; }
		todo=$(echo "$todo" "$d" | xargs)
	done
	echo "${list[*]}"
}

# debian_prepare SPEC OUTDIR: the kernel SPEC resolves to, ready for the rig,
# in OUTDIR: vmlinuz, kver, version, package, label, modules/ (plain .ko of
# kvm-intel and its dependencies, load.order, vermagic), source/ (lapic.c) or
# source.none, changelog.fix, and last the stamp "prepared". A complete
# OUTDIR for the same package, version and source choice is reused as is.
debian_prepare() {
	local spec=${1:-} out=${2:-} r pkg ver suites want how secs t0 un kver
	local log mdir src f parts p total up
	local -a kd=() vz=() cl=()
	[ -n "$spec" ] && [ -n "$out" ] || { _debian_fail "usage: debian_prepare SPEC OUTDIR"; return 1; }
	r=$(_debian_resolve_full "$spec") || return 1
	read -r pkg ver suites <<<"$r"
	src=${DEBIAN_SOURCE:-1}
	want="$pkg $ver source=$src"
	# Reused: the same kernel, with the source as asked (any, without it).
	if [ -f "$out/prepared" ] && { [ "$(cat "$out/prepared")" = "$want" ] ||
		{ [ "$src" = 0 ] && [[ $(cat "$out/prepared") == "$pkg $ver source="* ]]; }; }; then
		echo "rig: debian $ver: $pkg, cached in $out"
		return 0
	fi
	mkdir -p "$out" || { _debian_fail "cannot create $out"; return 1; }
	rm -rf "$out/prepared" "$out/vmlinuz" "$out/kver" "$out/version" "$out/package" "$out/label" \
		"$out/modules" "$out/source" "$out/source.none" "$out/changelog.fix" ||
		{ _debian_fail "cannot clear $out"; return 1; }
	log=$_DEBIAN_WORK/debian/prepare.log
	mkdir -p "$_DEBIAN_WORK/debian" || { _debian_fail "cannot create $_DEBIAN_WORK/debian"; return 1; }
	# The image, and the parts it is split into from 7.x on (linux-image-ABI
	# is then an empty package depending on linux-binary-ABI, with vmlinuz,
	# and linux-modules-ABI, with the modules, at the same version).
	parts=$(_debian_image_parts "$pkg" "$ver") || return 1
	un=$_DEBIAN_WORK/debian/unpack.$$
	rm -rf "$un" || { _debian_fail "cannot remove $un"; return 1; }
	total=0 secs=0 how=cached up=0
	for p in $parts; do
		_debian_fetch "$p" "$ver" || { rm -rf "$un"; return 1; }
		total=$((total + _DEBIAN_BYTES))
		[ "$_DEBIAN_HOW" = cached ] || how=downloaded
		secs=$(awk -v a="$secs" -v b="$_DEBIAN_SECS" 'BEGIN { print a + b }')
		# Unpacked whole (dpkg -x, 300-500 MB) next to the cache, then
		# removed: kvm-intel's dependencies can be anywhere in the tree.
		t0=$(_debian_now)
		dpkg -x "$_DEBIAN_DEB" "$un" 2>"$log" ||
			{ _debian_fail "dpkg -x $_DEBIAN_DEB failed" "$log"; rm -rf "$un"; return 1; }
		up=$(awk -v a="$up" -v b="$(_debian_secs "$t0")" 'BEGIN { print a + b }')
	done
	[ "$parts" = "$pkg" ] || suites="$suites; $(wc -w <<<"$parts") packages: $parts"
	if [ "$how" = downloaded ]; then
		echo "rig: debian $ver: $pkg from $suites, $(_debian_mb "$total") MB in $secs s"
	else
		echo "rig: debian $ver: $pkg from $suites (cached .deb, $(_debian_mb "$total") MB)"
	fi
	t0=$(_debian_now)
	kd=("$un"/lib/modules/* "$un"/usr/lib/modules/*)
	[ ${#kd[@]} = 1 ] || { _debian_fail "$pkg $ver: ${#kd[@]} directories in lib/modules (want one)"; rm -rf "$un"; return 1; }
	kver=${kd[0]##*/}
	mdir=${kd[0]}
	# boot/vmlinuz-KVER; in the split 7.x packages usr/lib/modules/KVER/vmlinuz.
	vz=()
	for f in "$un/boot/vmlinuz-$kver" "$mdir/vmlinuz"; do
		[ -f "$f" ] && vz+=("$f")
	done
	[ ${#vz[@]} -ge 1 ] ||
		{ _debian_fail "$pkg $ver: no boot/vmlinuz-$kver or ${mdir#"$un"/}/vmlinuz"; rm -rf "$un"; return 1; }
	cp "${vz[0]}" "$out/vmlinuz" || { _debian_fail "cannot copy vmlinuz"; rm -rf "$un"; return 1; }
	_debian_modules "$mdir" "$out/modules" "$kver" || { rm -rf "$un"; return 1; }
	# The signed images ship changelog.gz (linux-signed-amd64's, which repeats
	# linux's entries); others changelog.Debian.gz.
	cl=()
	for f in "$un/usr/share/doc/$pkg/changelog.Debian.gz" "$un/usr/share/doc/$pkg/changelog.gz" \
		"$un"/usr/share/doc/*/changelog.Debian.gz "$un"/usr/share/doc/*/changelog.gz; do
		[ -f "$f" ] && cl+=("$f")
	done
	if [ ${#cl[@]} -ge 1 ]; then
		_debian_changelog_fix "${cl[0]}" >"$out/changelog.fix" ||
			{ _debian_fail "cannot read ${cl[0]#"$un"/}"; rm -rf "$un"; return 1; }
	else
		: >"$out/changelog.fix"
		echo "rig: debian $ver: $pkg has no usr/share/doc/$pkg/changelog(.Debian).gz: changelog.fix left empty"
	fi
	rm -rf "$un"
	echo "$kver" >"$out/kver" && echo "$ver" >"$out/version" && echo "$pkg" >"$out/package" &&
		echo "debian-$(_debian_label "$ver")" >"$out/label" ||
		{ _debian_fail "cannot write $out"; return 1; }
	echo "rig: debian $ver: $kver unpacked in $up s; modules $(tr '\n' ' ' <"$out/modules/load.order")in $(_debian_secs "$t0") s"
	if [ "$src" = 0 ]; then
		echo "not fetched (DEBIAN_SOURCE=0)" >"$out/source.none"
	else
		_debian_source "$pkg" "$ver" "$out" || return 1
		# A failed source download is stamped as such: not reused as
		# complete by the next prepare, which tries again.
		want="$pkg $ver source=$_DEBIAN_SOURCE_STATE"
	fi
	echo "$want" >"$out/prepared" || { _debian_fail "cannot write $out/prepared"; return 1; }
}

# debian_headers KVER: makes /usr/src/linux-headers-KVER (with Module.symvers)
# available, installing linux-headers-KVER from the private suites with
# apt-get install if it is missing. Dependencies prefer the machine's own
# release (pinned 990); an install that would upgrade or remove an installed
# package is refused (apt's simulated lines are quoted) unless
# DEBIAN_HEADERS_ALLOW_UPGRADE=1.
debian_headers() {
	local kver=${1:-} d log pref codename a bad img s
	local -a opts=()
	[ -n "$kver" ] || { _debian_fail "usage: debian_headers KVER"; return 1; }
	d=/usr/src/linux-headers-$kver
	if [ -f "$d/Module.symvers" ]; then
		return 0
	fi
	_debian_need || return 1
	a=$_DEBIAN_WORK/apt
	log=$a/headers-$kver.log
	# shellcheck source=/dev/null
	codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}" || true)
	pref=$a/preferences
	{
		for s in "$codename" "$codename-updates" "$codename-security"; do
			printf 'Package: *\nPin: release n=%s\nPin-Priority: 990\n\n' "$s"
		done
	} >"$pref" || { _debian_fail "cannot write $pref"; return 1; }
	# The machine's real dpkg status (DAPT has none), no package cache file
	# (so that DAPT's stays valid; built in memory, ~2.5 s) and the pins above.
	opts=("${DAPT[@]}" -o Dir::State::status=/var/lib/dpkg/status
		-o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=)
	[ -z "$codename" ] || opts+=(-o "Dir::Etc::Preferences=$pref")
	apt-get "${opts[@]}" install -s --no-install-recommends "linux-headers-$kver" >"$log" 2>&1 ||
		{ _debian_fail "apt-get install linux-headers-$kver (simulated) failed" "$log"; return 1; }
	# apt -s: "Inst PKG [OLD] (NEW RELEASE [ARCH])" upgrades, "Remv PKG [OLD]".
	bad=$(awk '/^Inst [^ ]+ \[/ { o = $3; gsub(/[][]/, "", o); n = $4; sub(/^\(/, "", n)
			printf "%s%s %s -> %s", s, $2, o, n; s = ", " }
		/^Remv / { printf "%sremove %s", s, $2; s = ", " }' "$log")
	img=$(awk '/^Inst linux-image-/ { printf "%s%s", s, $2; s = " " }' "$log")
	if [ -n "$bad" ] && [ "${DEBIAN_HEADERS_ALLOW_UPGRADE:-0}" != 1 ]; then
		_debian_fail "apt-get install linux-headers-$kver would change installed packages: $bad${img:+ (and install $img, which these headers depend on)}; DEBIAN_HEADERS_ALLOW_UPGRADE=1 allows it (apt -s: $log)"
		return 1
	fi
	echo "rig: debian: installing linux-headers-$kver: $(grep -c '^Inst ' "$log") packages ($(awk '/^Inst / { printf "%s%s", s, $2; s = " " }' "$log"))"
	DEBIAN_FRONTEND=noninteractive apt-get "${opts[@]}" install -y -q --no-install-recommends \
		"linux-headers-$kver" >>"$log" 2>&1 ||
		{ _debian_fail "apt-get install linux-headers-$kver failed" "$log"; return 1; }
	[ -f "$d/Module.symvers" ] ||
		{ _debian_fail "linux-headers-$kver installed but $d/Module.symvers is missing"; return 1; }
}
