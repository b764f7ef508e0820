//! Lowering the scheduling priority of the calling thread, for work that must give way to chat:
//! password hashing (always) and the store's writer (when `store.writer_nice` asks for it).
//!
//! On Linux a thread's nice value and scheduling policy are its own (`setpriority` on its
//! thread id, `sched_setscheduler` on thread 0, the caller), so the rest of the process keeps
//! its priority. Elsewhere these calls would change the whole process, so they do nothing there.

use std::io;

/// Gives the calling thread the nice value `nice` (0 to 19; 0 leaves it as it is).
pub(crate) fn lower_this_thread(nice: u8) -> io::Result<()> {
    if nice == 0 {
        return Ok(());
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: neither call takes a pointer; `gettid` cannot fail.
        let done = unsafe {
            let thread = libc::gettid();
            libc::setpriority(
                libc::PRIO_PROCESS,
                thread as libc::id_t,
                libc::c_int::from(nice),
            )
        };
        if done != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Gives the calling thread the lowest priority there is: nice 19 and the `SCHED_IDLE` policy.
/// `SCHED_IDLE` as well as nice 19 because the scheduler preempts an idle-policy thread as soon
/// as a normal one wakes, where a nice-19 thread may first finish its time slice (a millisecond
/// or more, a direct message's whole latency budget).
pub(crate) fn idle_this_thread() -> io::Result<()> {
    lower_this_thread(19)?;
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` outlives the call; thread 0 is the caller.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_thread_lowers_its_own_priority_and_no_other() {
        let before = current_nice();
        let (nice, policy) = std::thread::spawn(|| {
            idle_this_thread().expect("an unprivileged thread may lower itself");
            // SAFETY: thread 0 is the caller.
            (current_nice(), unsafe { libc::sched_getscheduler(0) })
        })
        .join()
        .expect("no panic");
        assert_eq!((nice, policy), (19, libc::SCHED_IDLE));
        assert_eq!(current_nice(), before, "the spawning thread keeps its own");
    }

    fn current_nice() -> libc::c_int {
        // SAFETY: no pointer; `gettid` cannot fail.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }
}
