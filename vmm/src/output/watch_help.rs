//! What `watch` prints first: the VMM's PID and what to try on it.

use crate::output::table::out;
use crate::pause::cgroup;
use tickburst_analysis::units::format_duration_ns;

/// What `watch` prints first: the PID, when it ends by itself (after
/// `duration_ns`) and what to try on it.
pub fn print_watch_help(duration_ns: u64) {
    let pid = std::process::id();
    let (v2, v1) =
        cgroup::mounts(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
    let mut lines = vec![
        format!("# tickburst watch: VMM pid {pid}; every pause of >= 5 periods is reported. Ctrl-C ends it; it ends by itself after {}.", format_duration_ns(duration_ns)),
        format!("#   stop/continue:  kill -STOP {pid}; sleep 5; kill -CONT {pid}"),
    ];
    if let Some(root) = v2 {
        let g = root.join("tb-watch");
        lines.push(format!(
            "#   freeze (v2):    mkdir {g}; echo {pid} > {g}/cgroup.procs; echo 1 > {g}/cgroup.freeze; sleep 5; echo 0 > {g}/cgroup.freeze",
            g = g.display()
        ));
    } else if let Some(root) = v1 {
        let g = root.join("tb-watch");
        lines.push(format!(
            "#   freeze (v1):    mkdir {g}; echo {pid} > {g}/cgroup.procs; echo FROZEN > {g}/freezer.state; sleep 5; echo THAWED > {g}/freezer.state",
            g = g.display()
        ));
    }
    lines.push(format!(
        "#   pin:            taskset -a -p 0x1 {pid}   (vCPU thread tid is printed below)"
    ));
    out(&lines.join("\n"));
}
