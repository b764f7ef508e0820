//! Password hashing: argon2id with the OWASP parameters, and the bounded pool it runs on.
//!
//! One hash costs tens of milliseconds of one core and 19 MiB of memory, on purpose. Run on an
//! actor's thread, it would stall every connection served there; run without a bound, a storm
//! of logins would take every core and a lot of memory. So hashing runs on a few threads of its
//! own at a lower priority — one fewer than the cores, at least one ([`HashPool`]) — and only a
//! bounded number of requests may wait for their turn: past that, a login is told
//! `rate-limited|login` at once rather than queued.

use std::{
    num::NonZeroUsize,
    sync::{Arc, OnceLock},
};

use argon2::{
    password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Algorithm, Argon2, Params, Version,
};

/// OWASP's recommendation for argon2id: 19 MiB of memory, 2 passes, 1 lane.
const MEMORY_KIB: u32 = 19_456;
const PASSES: u32 = 2;
const LANES: u32 = 1;

/// Requests that may wait for a hashing thread, per core.
const WAITING_PER_CORE: usize = 32;

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
#[error("cannot hash the password: {0}")]
pub struct HashError(String);

/// The hasher, with the OWASP parameters (argon2's own defaults are the same; spelt out so that
/// an upgrade of the crate cannot change them silently).
fn argon2() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, PASSES, LANES, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes `password` with a fresh random salt, into a PHC string
/// (`$argon2id$v=19$m=19456,t=2,p=1$SALT$HASH`). Slow on purpose: call it on a
/// [`HashPool`] (or any thread that may block).
pub fn hash_password(password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| HashError(error.to_string()))
}

/// Whether `password` matches the PHC string `phc`, compared in constant time (argon2's
/// `verify_password`), with the parameters the hash was made with. A string that is not a
/// valid hash matches nothing. Slow on purpose, like [`hash_password`].
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => argon2().verify_password(password.as_bytes(), &hash).is_ok(),
        Err(_) => false,
    }
}

/// Spends what checking a password against a real account would, for a name that has no
/// account, so that the time of the answer does not tell the two apart.
pub(crate) fn verify_nothing(password: &str) {
    let _ = verify_password(password, dummy_hash());
}

/// The hash an unknown name is checked against, made once.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password("no account has this").unwrap_or_default())
}

/// Makes the dummy hash now (at start, on a blocking thread), so that not even the first
/// unknown name takes longer to refuse than a wrong password.
pub(crate) fn warm_up() {
    let _ = dummy_hash();
}

/// Too many hashing requests are waiting: the answer is `rate-limited`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolBusy;

/// A job for a hashing thread.
type Job = Box<dyn FnOnce() + Send>;

/// A few threads of its own that do nothing but hash, fed by a bounded queue.
///
/// Why threads of its own rather than tokio's blocking pool: every worker arbiter is a runtime
/// with its own blocking pool, so hashes would land on ever other threads, and glibc keeps the
/// freed 19 MiB of each in that thread's arena — measured: 630–810 MB after a few hundred
/// logins. A fixed set of threads holds at most one such buffer each. Why one thread fewer than
/// the cores (at least one), at a lower priority: a storm of wrong passwords that gets past the
/// throttle (many addresses, many accounts) would otherwise take every core from chat — the p99
/// of direct messages went from 4.7 ms to 48–76 ms with a thread per core on 2 cores.
pub(crate) struct HashPool {
    /// Jobs waiting for a thread; full means [`PoolBusy`].
    jobs: std::sync::mpsc::SyncSender<Job>,
}

impl HashPool {
    /// A pool of `threads` hashing threads, with room for [`WAITING_PER_CORE`] waiting jobs per
    /// thread. The threads end when the pool is dropped (after the jobs already queued).
    pub(crate) fn new(threads: NonZeroUsize) -> HashPool {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(threads.get() * WAITING_PER_CORE);
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for index in 0..threads.get() {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("hash-{index}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return, // the pool is gone
                        }
                    }
                });
            if let Err(error) = spawned {
                log::warn!("cannot start a password-hashing thread: {error}");
            }
        }
        HashPool { jobs }
    }

    /// One thread fewer than the machine has cores, and at least one (see the type's docs).
    pub(crate) fn per_core() -> HashPool {
        let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        Self::new(NonZeroUsize::new(cores.saturating_sub(1)).unwrap_or(NonZeroUsize::MIN))
    }

    /// Runs `job` (a hash or a verification) on a hashing thread; [`PoolBusy`] at once when
    /// too many are waiting already. A job whose caller has stopped waiting by the time a
    /// thread takes it is skipped; one that has started finishes.
    pub(crate) async fn run<T, F>(&self, job: F) -> Result<T, PoolBusy>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            if !answer.is_closed() {
                let _ = answer.send(job());
            }
        });
        self.jobs.try_send(job).map_err(|_| PoolBusy)?;
        answered.await.map_err(|_| PoolBusy)
    }
}

/// Asks the kernel to run this thread after chat's threads when both want a core (Linux: a
/// thread's nice value is its own). Best effort: without it hashing still works.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority takes plain integers; `who = 0` names the calling thread on Linux.
    unsafe {
        let _ = libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn a_hash_is_an_argon2id_phc_string_with_the_owasp_parameters_and_its_own_salt() {
        let first = hash_password("correct horse").expect("hashes");
        let second = hash_password("correct horse").expect("hashes");
        assert!(
            first.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{first}"
        );
        assert_ne!(first, second, "a fresh salt each time");
        assert!(verify_password("correct horse", &first));
        assert!(verify_password("correct horse", &second));
        assert!(!verify_password("correct horsf", &first));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn the_pool_runs_at_most_its_threads_at_once_and_refuses_past_its_queue() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let pool = Arc::new(HashPool::new(NonZeroUsize::MIN));
            let running = Arc::new(AtomicUsize::new(0));
            let most = Arc::new(AtomicUsize::new(0));
            let (release, released) = std::sync::mpsc::channel::<()>();
            let released = Arc::new(std::sync::Mutex::new(released));
            let blocking_job = || {
                let (running, most, released) = (running.clone(), most.clone(), released.clone());
                move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    let _ = released.lock().map(|r| r.recv());
                    running.fetch_sub(1, Ordering::SeqCst);
                }
            };
            // The first job holds the only thread...
            let first = tokio::spawn({
                let (pool, job) = (pool.clone(), blocking_job());
                async move { pool.run(job).await }
            });
            while running.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
            // ...so the next ones wait, up to the queue's room...
            let mut waiting = Vec::new();
            for _ in 0..WAITING_PER_CORE {
                let (pool, job) = (pool.clone(), blocking_job());
                let (queued, is_queued) = tokio::sync::oneshot::channel();
                waiting.push(tokio::spawn(async move {
                    let run = pool.run(job);
                    let _ = queued.send(());
                    run.await
                }));
                is_queued.await.expect("the job was offered");
            }
            // ...and one more is refused at once.
            assert_eq!(pool.run(|| ()).await, Err(PoolBusy), "the queue is full");
            for _ in 0..=WAITING_PER_CORE {
                release.send(()).expect("a job is waiting");
            }
            assert_eq!(first.await.expect("no panic"), Ok(()));
            for job in waiting {
                assert_eq!(job.await.expect("no panic"), Ok(()));
            }
            assert_eq!(most.load(Ordering::SeqCst), 1, "one at a time");
            assert_eq!(pool.run(|| 7).await, Ok(7), "room again");
        });
    }
}
