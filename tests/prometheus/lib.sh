# Shared by tests/prometheus/test-*: the binary, temp dirs, free ports,
# waiting, and the VM lock. Sourced, not run.

TB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# The VM lock every VM run takes (never deleted).
TB_LOCK=/tmp/tickburst-kvm-tests.lock

# The tickburst binary: $TICKBURST_BIN, else a debug build of this tree.
tb_binary() {
  if [[ -n "${TICKBURST_BIN:-}" ]]; then
    echo "$TICKBURST_BIN"
    return
  fi
  (cd "$TB_ROOT" && cargo build -q --bin tickburst) >&2
  echo "$TB_ROOT/target/debug/tickburst"
}

# A TCP port free on loopback now.
tb_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# tb_wait SECONDS COMMAND...: runs COMMAND every 0.2 s until it succeeds;
# fails after SECONDS.
tb_wait() {
  local limit=$1; shift
  local end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    (( SECONDS < end )) || return 1
    sleep 0.2
  done
}

# Takes the VM lock on fd 9 for the rest of the script (released at exit).
# Says how long it waited (other VM tests of the machine), so that the
# script's own time can be told apart.
tb_lock_vms() {
  local t0=$SECONDS
  exec 9>>"$TB_LOCK"
  flock 9
  echo "VM lock taken after $((SECONDS - t0)) s"
}

# A tickburst VM (`watch`: its periodic timer, no pause of its own) named
# NAME (its argv[0], what `top` shows for a process without -name): starts
# `tickburst watch ARGS` in the background with stdout in FILE, and waits
# for its guest to be ready. Sets TB_VM_PID.
tb_start_vm() {
  local bin=$1 name=$2 file=$3; shift 3
  bash -c 'exec -a "$0" "$@"' "$name" "$bin" watch "$@" >"$file" 2>&1 &
  TB_VM_PID=$!
  if ! tb_wait 120 grep -q "guest ready" "$file"; then
    echo "the VM did not get ready: $(cat "$file")" >&2
    return 1
  fi
}

# Stops pid $1 (continued first: a stopped VMM must not stay stopped) and
# waits for it.
tb_end() {
  local pid=$1
  [[ -n "$pid" ]] || return 0
  kill -CONT "$pid" 2>/dev/null || true
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
