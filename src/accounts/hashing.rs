//! Password hashing: argon2id with the OWASP parameters, and the bounded pool it runs on.
//!
//! One hash costs tens of milliseconds of one core and 19 MiB of memory, on purpose. Run on an
//! actor's thread, it would stall every connection served there; run without a bound, a storm
//! of logins would take every core and a lot of memory. So hashing runs on tokio's blocking
//! threads, one hash per core but one at a time (at least one: [`HashPool`]), each on a thread
//! of the lowest scheduling priority (so chat goes first whenever both are ready), and only a
//! bounded number of requests may wait for their turn: past that, a login is told
//! `rate-limited|login` at once rather than queued.

use std::{
    num::NonZeroUsize,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, OnceLock,
    },
};

use argon2::{
    password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Algorithm, Argon2, Params, Version,
};
use tokio::sync::Semaphore;

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

/// At most one hash per core at a time, on tokio's blocking threads, and a bounded queue.
pub(crate) struct HashPool {
    /// One permit per hash that may run at once.
    running: Arc<Semaphore>,
    /// Requests waiting or running.
    taken: AtomicUsize,
    /// Most requests waiting or running.
    max_taken: usize,
}

impl HashPool {
    /// A pool of `threads` hashes at once, with room for [`WAITING_PER_CORE`] per thread to
    /// wait.
    pub(crate) fn new(threads: NonZeroUsize) -> HashPool {
        HashPool {
            running: Arc::new(Semaphore::new(threads.get())),
            taken: AtomicUsize::new(0),
            max_taken: threads.get() * (WAITING_PER_CORE + 1),
        }
    }

    /// One hash at a time per core but one (at least one): with a hash on every core, a storm
    /// of wrong passwords that gets past the throttle (many addresses, many accounts) took the
    /// cores from chat — direct-message p99 went from 4.7 ms to 48–76 ms on 2 cores.
    pub(crate) fn per_core() -> HashPool {
        let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        Self::new(NonZeroUsize::new(cores.saturating_sub(1)).unwrap_or(NonZeroUsize::MIN))
    }

    /// Runs `job` (a hash or a verification) when a thread is free, off the caller's thread;
    /// [`PoolBusy`] at once when too many are waiting already. If the caller stops waiting, a
    /// job that has started still finishes (and holds its place until then).
    pub(crate) async fn run<T, F>(&self, job: F) -> Result<T, PoolBusy>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        if self.taken.fetch_add(1, Ordering::AcqRel) >= self.max_taken {
            self.taken.fetch_sub(1, Ordering::AcqRel);
            return Err(PoolBusy);
        }
        // Given back however this future ends: done, or dropped while waiting.
        let _place = Place(&self.taken);
        let permit = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| PoolBusy)?;
        let result = tokio::task::spawn_blocking(move || {
            let result = at_low_priority(job);
            drop(permit);
            result
        })
        .await;
        result.ok().flatten().ok_or(PoolBusy)
    }
}

/// Runs `job` on a thread of its own at the lowest scheduling priority and waits for it
/// (`None` if the thread cannot be made or the job panicked).
///
/// Why the lowest priority (see [`crate::priority::idle_this_thread`]): even one core's worth of hashing, on a machine with few cores,
/// competes with the threads that carry chat; at the lowest priority the scheduler runs chat
/// first whenever both are ready, so a storm of logins costs other users' messages almost no
/// latency, and hashes take the time that chat leaves (on a saturated server a login waits,
/// which is the right way round). Why a thread of its own rather than lowering the blocking
/// thread we are on: that thread goes on to serve other blocking work, and an unprivileged
/// thread cannot raise its priority back. A thread costs tens of microseconds against a hash's
/// tens of milliseconds. And why this blocking thread waits for it rather than handing the job
/// over: a running blocking task is work in progress to tokio, whose paused clock (in tests)
/// must not jump ahead while a hash is being computed.
fn at_low_priority<T, F>(job: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    std::thread::Builder::new()
        .name("hashing".to_owned())
        .spawn(move || {
            // Refused (not Linux, say): the hash runs at normal priority.
            let _ = crate::priority::idle_this_thread();
            let result = job();
            give_back_memory();
            result
        })
        .ok()?
        .join()
        .ok()
}

/// Returns the hash's freed 19 MiB to the system. Each worker runtime has a blocking pool of
/// its own, so hashes run on many threads, and glibc keeps a freed buffer in its thread's arena
/// for the next allocation there: measured 630–810 MB of resident memory after a few hundred
/// logins, never given back. `malloc_trim` releases what the arenas hold free (microseconds,
/// against a hash's tens of milliseconds).
fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only takes a size and works on the allocator's own state.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A place in the pool's count, given back when dropped.
struct Place<'a>(&'a AtomicUsize);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
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
            let mut jobs = Vec::new();
            for _ in 0..=WAITING_PER_CORE {
                let (pool, running, most, released) = (
                    pool.clone(),
                    running.clone(),
                    most.clone(),
                    released.clone(),
                );
                jobs.push(tokio::spawn(async move {
                    pool.run(move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        let _ = released.lock().map(|r| r.recv());
                        running.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
                }));
            }
            // Let every job take its place in the queue.
            while pool.taken.load(Ordering::SeqCst) < WAITING_PER_CORE + 1 {
                tokio::task::yield_now().await;
            }
            assert_eq!(pool.run(|| ()).await, Err(PoolBusy), "the queue is full");
            for _ in 0..=WAITING_PER_CORE {
                release.send(()).expect("a job is waiting");
            }
            for job in jobs {
                assert_eq!(job.await.expect("no panic"), Ok(()));
            }
            assert_eq!(most.load(Ordering::SeqCst), 1, "one at a time");
            assert_eq!(pool.run(|| 7).await, Ok(7), "room again");
        });
    }
}
