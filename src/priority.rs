//! Lowering the scheduling priority of the calling thread, for work that must give way to chat:
//! password hashing (always, and stepping aside while it hashes: [`Yielding`]) and the store's
//! writer (when `store.writer_nice` asks for it).
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

/// Makes the calling thread step aside for any other runnable thread on its CPU every `period`
/// of wall time, while armed ([`Yielding::arm`]).
///
/// Why: on Linux's EEVDF scheduler (6.6 and later) a `SCHED_IDLE` thread is preempted at once
/// when a normal thread *wakes*, but not when one that is already runnable waits: a chat thread
/// that has just used up its slice (preempted by a thread it woke, say) is "not eligible", and
/// the scheduler may run the idle thread instead — until the next tick, 4 ms later, when the
/// idle thread's tiny weight sends it to the back again. A CPU going idle meanwhile does not
/// take the waiting thread over if it idles only briefly. Measured on 2 cores: a busy `SCHED_IDLE`
/// loop beside a 500 msg/s exchange raised its p99 from 0.3 ms to 4 ms; the same loop calling
/// `sched_yield` every 100 µs left it at 0.34–0.46 ms. Argon2 gives no chance to call anything
/// mid-hash, so a per-thread timer does: it sends this thread a real-time signal every `period`,
/// and the handler yields (`sched_yield` is async-signal-safe). The signals stop when disarmed,
/// so an idle thread is never woken.
pub(crate) struct Yielding {
    #[cfg(target_os = "linux")]
    timer: libc::timer_t,
    period: std::time::Duration,
}

/// The signal the [`Yielding`] timers send: one of the real-time signals, which neither std
/// nor tokio (nor anything else here) uses.
#[cfg(target_os = "linux")]
fn yield_signal() -> libc::c_int {
    libc::SIGRTMIN() + 4
}

#[cfg(target_os = "linux")]
extern "C" fn yield_now(_: libc::c_int) {
    // SAFETY: sched_yield takes nothing and is async-signal-safe.
    unsafe {
        libc::sched_yield();
    }
}

impl Yielding {
    /// A timer for the calling thread, not yet armed.
    pub(crate) fn for_this_thread(period: std::time::Duration) -> io::Result<Yielding> {
        #[cfg(target_os = "linux")]
        {
            static HANDLER: std::sync::OnceLock<io::Result<()>> = std::sync::OnceLock::new();
            let installed = HANDLER.get_or_init(|| {
                // SAFETY: `action` is fully initialised before use and outlives the call; the
                // handler only calls an async-signal-safe function; SA_RESTART resumes a
                // system call the signal interrupts.
                unsafe {
                    let mut action: libc::sigaction = std::mem::zeroed();
                    action.sa_sigaction = yield_now as extern "C" fn(libc::c_int) as usize;
                    action.sa_flags = libc::SA_RESTART;
                    libc::sigemptyset(&mut action.sa_mask);
                    if libc::sigaction(yield_signal(), &action, std::ptr::null_mut()) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
            if let Err(error) = installed {
                return Err(io::Error::new(error.kind(), error.to_string()));
            }
            // SAFETY: `event` is fully initialised and outlives the call; `timer` is written by
            // a successful call; the target is the calling thread, which exists.
            unsafe {
                let mut event: libc::sigevent = std::mem::zeroed();
                event.sigev_notify = libc::SIGEV_THREAD_ID;
                event.sigev_signo = yield_signal();
                event.sigev_notify_thread_id = libc::gettid();
                let mut timer: libc::timer_t = std::mem::zeroed();
                if libc::timer_create(libc::CLOCK_MONOTONIC, &mut event, &mut timer) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(Yielding { timer, period })
            }
        }
        #[cfg(not(target_os = "linux"))]
        Ok(Yielding { period })
    }

    /// Starts the signals: the thread steps aside every period until the guard is dropped.
    #[must_use = "the signals stop when the guard is dropped"]
    pub(crate) fn arm(&self) -> Armed<'_> {
        self.set(self.period);
        Armed(self)
    }

    fn set(&self, period: std::time::Duration) {
        #[cfg(target_os = "linux")]
        {
            let every = libc::timespec {
                tv_sec: period.as_secs() as libc::time_t,
                tv_nsec: period.subsec_nanos() as libc::c_long,
            };
            let spec = libc::itimerspec {
                it_interval: every,
                it_value: every,
            };
            // SAFETY: `self.timer` is a live timer (deleted only on drop); `spec` outlives the
            // call. A zero value disarms it.
            unsafe {
                libc::timer_settime(self.timer, 0, &spec, std::ptr::null_mut());
            }
        }
        let _ = period;
    }
}

/// An armed [`Yielding`]: dropping it stops the signals.
pub(crate) struct Armed<'a>(&'a Yielding);

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        self.0.set(std::time::Duration::ZERO);
    }
}

impl Drop for Yielding {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        // SAFETY: the timer was made by `timer_create` and is deleted once.
        unsafe {
            libc::timer_delete(self.timer);
        }
    }
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

    #[test]
    fn a_yielding_timer_runs_only_while_armed_and_its_signal_is_handled() {
        let yielding =
            Yielding::for_this_thread(std::time::Duration::from_micros(100)).expect("a timer");
        let interval = |yielding: &Yielding| {
            // SAFETY: a live timer and a value written by the call.
            unsafe {
                let mut now: libc::itimerspec = std::mem::zeroed();
                assert_eq!(libc::timer_gettime(yielding.timer, &mut now), 0);
                (now.it_interval.tv_sec, now.it_interval.tv_nsec)
            }
        };
        assert_eq!(interval(&yielding), (0, 0), "made disarmed");
        let armed = yielding.arm();
        assert_eq!(interval(&yielding), (0, 100_000));
        // Busy for a while, taking the signals (a missing handler would kill the process).
        let start = std::time::Instant::now();
        let mut spins = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(20) {
            spins = std::hint::black_box(spins + 1);
        }
        drop(armed);
        assert_eq!(interval(&yielding), (0, 0), "disarmed");
        // SAFETY: a query only; `action` is written by the call.
        let handler = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            assert_eq!(
                libc::sigaction(yield_signal(), std::ptr::null(), &mut action),
                0
            );
            action.sa_sigaction
        };
        assert_eq!(handler, yield_now as extern "C" fn(libc::c_int) as usize);
    }

    fn current_nice() -> libc::c_int {
        // SAFETY: no pointer; `gettid` cannot fail.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }
}
