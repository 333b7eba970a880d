//! Waiting on several descriptors at once with `ppoll(2)` (a timeout to the
//! nanosecond): the supervisor
//! waits on the VMM's pause requests, the VMM's pidfd and the guard's pidfd
//! together, so the death of either process is seen at once, not at the
//! end of a pause (a pidfd is readable once its process has exited).

use std::os::fd::RawFd;
use std::time::Duration;

/// Which of the descriptors given to [`ready`] are readable (or hung up):
/// one flag per descriptor, in order.
pub(crate) type Ready = Vec<bool>;

/// Waits up to `timeout` for any of `fds` to be readable or hung up.
/// A signal ends the wait early (`EINTR` is not an error here: nothing is
/// ready). Errors keep the errno.
pub(crate) fn ready(fds: &[RawFd], timeout: Duration) -> std::io::Result<Ready> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `pfds` is a valid array of `pfds.len()` pollfds that lives
    // across the call (ppoll only writes their `revents`), `ts` is a valid
    // timespec, and a null signal mask leaves the mask unchanged.
    let n = unsafe {
        libc::ppoll(
            pfds.as_mut_ptr(),
            pfds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINTR) {
            return Ok(vec![false; fds.len()]);
        }
        return Err(e);
    }
    Ok(pfds.iter().map(|p| p.revents != 0).collect())
}

/// Whether `fd` is readable (or hung up) right now.
pub(crate) fn is_ready(fd: RawFd) -> bool {
    ready(&[fd], Duration::ZERO).is_ok_and(|r| r[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pause::fds::pipe;
    use crate::pause::pidfd::Pidfd;
    use std::os::fd::AsRawFd;

    /// A pidfd becomes readable when its process exits; a pipe when its
    /// write end closes.
    #[test]
    fn sees_exits_and_hang_ups() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let fd = Pidfd::open(child.id() as i32).unwrap();
        let (r, w) = pipe().unwrap();
        let fds = [fd.0.as_raw_fd(), r.as_raw_fd()];
        assert_eq!(ready(&fds, Duration::from_millis(10)).unwrap(), [false; 2]);
        fd.send(libc::SIGKILL).unwrap();
        assert!(ready(&fds, Duration::from_secs(10)).unwrap()[0]);
        assert!(is_ready(fd.0.as_raw_fd()));
        drop(w);
        assert!(is_ready(r.as_raw_fd()));
        let _ = child.wait();
    }
}
