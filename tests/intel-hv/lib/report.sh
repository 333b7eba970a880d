# What the rig makes of an emulator run: the serial log split into result
# files, a report per kernel, and the matrix (matrix.json, matrix.txt).
# Sourced by tests/intel-hv/run; `judge` reads the same folders.
#
# A kernel's results folder (RES):
#   rig.env                   STAGES BUILDS KERNEL KERNEL_SPEC KERNEL_RELEASE ...
#   serial.log stamped.log    the console, as written and stamped with host time
#   times.tsv                 host_s build stage start|end guest_uptime rc
#   <build>/fix               yes|no|unknown: the fix block in the source
#   <build>/fix.why           where that was read
#   <build>/expect            ok|burst|none: what the judge expects from fix
#   <build>/cannot-judge      present when the build could not be judged: why
#   <build>/<name>.out .rc    a command's output and exit code (doctor, check,
#                             run-spin, run-hlt, tests/<executable>, dmesg)
#   <build>/<name>.json       its record (check.json, run-spin.json, ...)

# split_results RES STAMPED: the stamped serial log into RES (see above).
split_results() {
	awk -F'\t' -v dir="$1" '
		function path(b, n) { gsub(/[^A-Za-z0-9._:-]/, "_", n); sub(/^test:/, "tests/", n); return dir "/" b "/" n }
		{ t = $1; line = substr($0, length($1) + 2) }
		mode == "out" && line ~ "^RIG-OUT-END " {
			split(line, w, " "); rc = w[4]; sub(/^rc=/, "", rc); print rc > (out ".rc"); close(out ".rc"); close(out ".out"); mode = ""; next
		}
		mode == "out" { print line > (out ".out"); next }
		mode == "file" && line ~ "^RIG-FILE-END " { close(out ".b64"); mode = ""; next }
		mode == "file" { if (line ~ /^[A-Za-z0-9+\/=]+$/) print line > (out ".b64"); next }
		line ~ /^RIG-OUT-BEGIN / { split(line, w, " "); out = path(w[2], w[3]); system("mkdir -p \"$(dirname \"" out "\")\""); printf "" > (out ".out"); mode = "out"; next }
		line ~ /^RIG-FILE-BEGIN / { split(line, w, " "); out = path(w[2], w[3]); system("mkdir -p \"$(dirname \"" out "\")\""); printf "" > (out ".b64"); mode = "file"; next }
		line ~ /^RIG: / { split(line, w, " "); rc = (w[6] ~ /^rc=/) ? substr(w[6], 4) : ""; print t "\t" w[2] "\t" w[3] "\t" w[4] "\t" w[5] "\t" rc > (dir "/times.tsv"); next }
		line ~ /\] Linux version / && !lv { lv = 1; print t "\t-\tlinux-version\tseen\t\t" > (dir "/times.tsv") }
	' "$2"
	local f
	for f in "$1"/*/*.b64; do
		base64 -d "$f" 2>/dev/null | gunzip >"${f%.b64}" 2>/dev/null || echo "rig: note: could not decode ${f%.b64} from the serial log"
		rm -f "$f"
	done
	touch "$1/times.tsv"
}

# env_of RES NAME: a value from RES/rig.env.
env_of() { sed -n "s/^$2=//p" "$1/rig.env"; }
# mark_t RES BUILD STAGE start|end: host seconds of a marker.
mark_t() { awk -F'\t' -v b="$2" -v s="$3" -v e="$4" '$2 == b && $3 == s && $4 == e { print $1; exit }' "$1/times.tsv"; }
# stage_time RES BUILD STAGE: "12.3 s (guest 12.1 s)".
stage_time() {
	awk -F'\t' -v b="$2" -v s="$3" '
		$2 == b && $3 == s && $4 == "start" { hs = $1; gs = $5 }
		$2 == b && $3 == s && $4 == "end" { he = $1; ge = $5 }
		END { if (hs != "" && he != "") printf "%.1f s (guest %.1f s)", he - hs, ge - gs; else if (hs != "") printf "started at %.1f s, no end", hs; else printf "not run" }
	' "$1/times.tsv"
}
rc_of() { cat "$1/$2/$3.rc" 2>/dev/null || echo "none"; }
hr() { printf '%s\n' "------------------------------------------------------------------------"; }

# build_verdict RES BUILD: ok, burst or cannot-judge, from what ran: check's
# exit code where it ran, else the runs' verdicts.
build_verdict() {
	local r=$1 b=$2 rc k kinds=
	[ -f "$r/$b/cannot-judge" ] && { echo cannot-judge; return; }
	if has "$(env_of "$r" STAGES)" check; then
		rc=$(rc_of "$r" "$b" check)
		case "$rc" in 0) echo ok ;; 1) echo burst ;; *) echo cannot-judge ;; esac
		return
	fi
	if has "$(env_of "$r" STAGES)" runs; then
		for k in spin hlt; do
			kinds+=" $(jq -r '.verdict.kind // "none"' "$r/$b/run-$k.json" 2>/dev/null || echo none)"
		done
		case "$kinds" in *burst*) echo burst ;; " ok ok") echo ok ;; *) echo cannot-judge ;; esac
		return
	fi
	echo cannot-judge
}

# cannot_judge_why RES BUILD: why build_verdict said cannot-judge.
cannot_judge_why() {
	local r=$1 b=$2
	if [ -f "$r/$b/cannot-judge" ]; then head -n1 "$r/$b/cannot-judge"
	elif has "$(env_of "$r" STAGES)" check; then echo "tickburst check exited $(rc_of "$r" "$b" check) (0 ok and 1 burst are verdicts)"
	elif has "$(env_of "$r" STAGES)" runs; then echo "the runs gave no verdict"
	else echo "neither check nor runs among the stages"; fi
}

# kernel_report RES: what one kernel's emulator run showed, for people.
kernel_report() {
	local r=$1 b idle o n res stages builds lv ir
	trap - ERR
	set +e
	stages=$(env_of "$r" STAGES)
	builds=$(env_of "$r" BUILDS)
	hr
	echo "tickburst on emulated Intel (Bochs, VMX-preemption timer): $(env_of "$r" KERNEL) (release $(env_of "$r" KERNEL_RELEASE))"
	echo "stages: $stages   builds: $builds   results: $r"
	hr
	for b in ${builds//,/ }; do
		echo "== build: $b; fix in source: $(cat "$r/$b/fix") ($(cat "$r/$b/fix.why" 2>/dev/null || echo '?')); verdict: $(build_verdict "$r" "$b")"
		[ -f "$r/$b/cannot-judge" ] && echo "  cannot judge: $(head -n1 "$r/$b/cannot-judge")"
		[ -f "$r/$b/revert.diff" ] && echo "  --revert-fix removed $(grep -c '^-[^-]' "$r/$b/revert.diff") lines of lapic.c ($r/$b/revert.diff)"
		grep -h "^RIG-INFO $b " "$r/serial.log" 2>/dev/null | tr -d '\r' | sed 's/^RIG-INFO /  /'
		grep -h "^RIG-ERROR $b " "$r/serial.log" 2>/dev/null | tr -d '\r' | sed 's/^/  /'
		if has "$stages" doctor && [ -f "$r/$b/doctor.out" ]; then
			echo "-- $b doctor: exit $(rc_of "$r" "$b" doctor), $(stage_time "$r" "$b" doctor) (items not ok, and the timer ones)"
			sed -n '2,$p' "$r/$b/doctor.out" |
				awk '!/^ *ok / || /^ *ok +(KVM back end|hv timer|kvm_intel\.preemption_timer|apic_timer_fn) / { print "  " $0 }'
		fi
		if has "$stages" check && [ -f "$r/$b/check.out" ]; then
			echo "-- $b check: exit $(rc_of "$r" "$b" check), $(stage_time "$r" "$b" check)"
			sed -n '2,$p' "$r/$b/check.out" | grep -v '^# case [0-9]*/[0-9]*:' | sed 's/^/  /'
		fi
		if has "$stages" runs; then
			for idle in spin hlt; do
				[ -f "$r/$b/run-$idle.out" ] || continue
				echo "-- $b run --idle $idle: exit $(rc_of "$r" "$b" "run-$idle"), $(stage_time "$r" "$b" "run-$idle")"
				sed -n '2,$p' "$r/$b/run-$idle.out" | sed 's/^/  /'
				if [ -s "$r/$b/run-$idle.json" ]; then
					jq -r '"  json: verdict.kind=\(.verdict.kind) fell_back_to_sw=\(.host.timer_backend.fell_back_to_sw) backend=\(.host.timer_backend.kind) " +
						"pause0: host_callbacks_first_1s=\(.pauses[0].host_callbacks_first_1s) host_longest_run=\(.pauses[0].host_longest_run) " +
						"ticks_first_100ms=\(.pauses[0].ticks_first_100ms) clock_error_max_ns=\(.collector.clock_error_max_ns)"' "$r/$b/run-$idle.json" 2>/dev/null || echo "  json: unreadable"
				fi
			done
		fi
		if has "$stages" tests; then
			echo "-- $b tests: $(stage_time "$r" "$b" tests)"
			for o in "$r/$b"/tests/*.out; do
				n=$(basename "$o" .out)
				res=$(grep -m1 '^test result:' "$o" || echo "no 'test result' line")
				printf '  %-40s exit %-4s %-22s %s\n' "$n" "$(cat "${o%.out}.rc" 2>/dev/null || echo none)" "$(stage_time "$r" "$b" "test:$n" | cut -d'(' -f1)" "$res"
				grep -E '^test .* \.\.\. FAILED$' "$o" | sed 's/^/      /'
			done
		fi
		if [ -s "$r/$b/dmesg.out" ] && grep -Eq 'hrtimer: interrupt took|WARNING|BUG' "$r/$b/dmesg.out"; then
			echo "-- $b dmesg (notable lines):"
			grep -E 'hrtimer: interrupt took|WARNING|BUG' "$r/$b/dmesg.out" | sed 's/^/  /'
		fi
	done
	hr
	lv=$(awk -F'\t' '$3 == "linux-version" { print $1; exit }' "$r/times.tsv" 2>/dev/null)
	ir=$(mark_t "$r" - init reached 2>/dev/null)
	echo "boot: 'Linux version' at ${lv:-?} s, /init at ${ir:-?} s after Bochs started ($(env_of "$r" BOOT_OUTCOME)); kernel wall time $(env_of "$r" WALL_S) s (not counting $(env_of "$r" LOCK_WAIT_S) s waiting for the VM lock)"
	for b in ${builds//,/ }; do
		for s in modules doctor check run-spin run-hlt tests unload; do
			[ -n "$(mark_t "$r" "$b" "$s" start)" ] && printf '  %-8s %-9s %s\n' "$b" "$s" "$(stage_time "$r" "$b" "$s")"
		done
	done
	hr
}

# matrix_row RES BUILD: one object of matrix.json.
matrix_row() {
	local r=$1 b=$2 pt doctor_missing init_s lv_s
	# Whatever a build left (nothing, if it never booted) gives a row.
	trap - ERR
	set +e
	pt=$(grep -h "^RIG-INFO $b kvm_intel.preemption_timer=" "$r/serial.log" 2>/dev/null | tr -d '\r' | sed 's/.*=//' | head -n1)
	doctor_missing='[]'
	if [ -f "$r/$b/doctor.out" ]; then
		doctor_missing=$(sed -n '2,$p' "$r/$b/doctor.out" | { grep -v -e '^ *ok ' -e '^ *$' || true; } | jq -R . | jq -sc .)
	fi
	init_s=$(mark_t "$r" - init reached)
	lv_s=$(awk -F'\t' '$3 == "linux-version" { print $1; exit }' "$r/times.tsv" 2>/dev/null)
	jq -n \
		--arg kernel "$(env_of "$r" KERNEL)" --arg spec "$(env_of "$r" KERNEL_SPEC)" \
		--arg release "$(env_of "$r" KERNEL_RELEASE)" --arg version "$(env_of "$r" KERNEL_VERSION)" \
		--arg build "$b" --arg fix "$(cat "$r/$b/fix")" --arg fix_why "$(cat "$r/$b/fix.why" 2>/dev/null)" \
		--arg pt "${pt:-}" --argjson doctor_missing "${doctor_missing:-[]}" \
		--arg check_rc "$(rc_of "$r" "$b" check)" \
		--arg verdict "$(build_verdict "$r" "$b")" --arg why "$(cannot_judge_why "$r" "$b")" \
		--arg wall "$(env_of "$r" WALL_S)" --arg init_s "${init_s:-}" --arg lv_s "${lv_s:-}" \
		--arg outcome "$(env_of "$r" BOOT_OUTCOME)" --arg lock_wait "$(env_of "$r" LOCK_WAIT_S)" \
		--slurpfile spin <(cat "$r/$b/run-spin.json" 2>/dev/null || echo null) \
		--slurpfile hlt <(cat "$r/$b/run-hlt.json" 2>/dev/null || echo null) \
		--slurpfile check <(cat "$r/$b/check.json" 2>/dev/null || echo null) '
		def num: if . == "" or . == "none" then null else tonumber end;
		def lr($j): $j[0] | if . == null then null else .pauses[0].host_longest_run end;
		($check[0] | if . == null then [] else [.cases[]?.figures // "" | capture("longest run in one interrupt (?<n>[0-9]+) callback") | .n | tonumber] end) as $check_runs
		| {
			kernel: $kernel, spec: $spec, release: $release, version: $version, build: $build,
			fix_in_source: $fix, fix_source: $fix_why,
			preemption_timer: (if $pt == "" then null else $pt end),
			doctor_missing: $doctor_missing,
			check_exit: ($check_rc | num),
			run_verdicts: { spin: ($spin[0] | if . == null then null else .verdict.kind end),
				hlt: ($hlt[0] | if . == null then null else .verdict.kind end) },
			longest_run: ([lr($spin), lr($hlt)] + $check_runs | map(select(. != null)) | if length == 0 then null else max end),
			longest_run_runs: { spin: lr($spin), hlt: lr($hlt) },
			fallback_after_resume_ms: ([$spin[0], $hlt[0]] | map(select(. != null and .host.timer_backend.fallback_ms != null)
				| .host.timer_backend.fallback_ms - .pauses[0].end_ms) | if length == 0 then null else (min * 1000 | round / 1000) end),
			clock_error_us: { spin: ($spin[0] | if . == null then null else .collector.clock_error_max_ns end | if . == null then null else . / 1000 end),
				hlt: ($hlt[0] | if . == null then null else .collector.clock_error_max_ns end | if . == null then null else . / 1000 end) },
			verdict: $verdict,
			cannot_judge: (if $verdict == "cannot-judge" then $why else null end),
			boot: { outcome: $outcome, linux_version_s: ($lv_s | num), init_s: ($init_s | num) },
			wall_s: ($wall | num),
			lock_wait_s: ($lock_wait | num)
		}'
}

# matrix_write RESULTS LABEL...: RESULTS/matrix.json, one object per kernel
# and build, written atomically.
matrix_write() {
	local out=$1 l b
	shift
	{
		for l in "$@"; do
			for b in $(env_of "$out/$l" BUILDS | tr ',' ' '); do matrix_row "$out/$l" "$b"; done
		done
	} | jq -s . >"$out/matrix.json.tmp"
	mv "$out/matrix.json.tmp" "$out/matrix.json"
}

# matrix_table MATRIX_JSON: the matrix for people, one line per kernel and build.
matrix_table() {
	hr
	jq -r '
		def s: if . == null then "-" else tostring end;
		(["kernel", "build", "fix", "hv", "verdict", "longest", "fallback_ms", "check", "spin", "hlt", "clock_us", "boot_s", "wall_s"] | @tsv),
		(.[] | [.kernel, .build, .fix_in_source, (.preemption_timer | s), .verdict, (.longest_run | s),
			(.fallback_after_resume_ms | s), (.check_exit | s), (.run_verdicts.spin | s), (.run_verdicts.hlt | s),
			([.clock_error_us.spin, .clock_error_us.hlt] | map(select(. != null) | (. * 10 | round / 10) | (if . == 0 then 0 else . end) | tostring) | if length == 0 then "-" else join("/") end),
			(.boot.init_s | s), (.wall_s | s)] | @tsv)
	' "$1" | column -t -s "$(printf '\t')"
	jq -r '.[] | select(.verdict == "cannot-judge") | "  \(.kernel) \(.build): cannot judge: \(.cannot_judge)"' "$1"
	hr
}
