//! The exit codes of `tickburst`, and the one way an error leaves it: one
//! line on stderr.

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: usage or runtime error.
pub const EXIT_ERROR: i32 = 2;
/// Exit code: KVM not usable on this host (`git bisect run` skips).
pub const EXIT_KVM_UNAVAILABLE: i32 = 125;
/// Exit code: interrupted by Ctrl-C / SIGTERM; partial report printed/written.
pub const EXIT_INTERRUPTED: i32 = 130;

/// Prints `tickburst: message` on stderr; returns `code`.
pub fn fail(code: i32, message: impl std::fmt::Display) -> i32 {
    eprintln!("tickburst: {message}");
    code
}
