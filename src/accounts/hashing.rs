//! Password hashing: argon2id with the OWASP parameters, and the bounded pool it runs on.
//!
//! One hash costs tens of milliseconds of one core and 19 MiB of memory, on purpose. Run on an
//! actor's thread, it would stall every connection served there; run without a bound, a storm
//! of logins would take every core and a lot of memory. So hashes run on a few threads of their
//! own ([`HashPool`]: one per core but one, at least one), at the lowest scheduling priority (so
//! chat goes first whenever both are ready), each keeping its 19 MiB from one hash to the next
//! ([`Hasher`]); and only a bounded number of requests may wait for their turn: past that, a
//! login is told `rate-limited|login` at once rather than queued.

use std::{
    num::NonZeroUsize,
    panic::{self, AssertUnwindSafe},
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc, Arc, OnceLock,
    },
    time::Duration,
};

use argon2::{
    password_hash::{rand_core::OsRng, Output, ParamsString, PasswordHash, Salt, SaltString},
    Algorithm, Argon2, Block, Params, Version,
};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use tokio::sync::Semaphore;

use crate::priority::{self, Yielding};

/// OWASP's recommendation for argon2id: 19 MiB of memory, 2 passes, 1 lane.
const MEMORY_KIB: u32 = 19_456;
const PASSES: u32 = 2;
const LANES: u32 = 1;

/// The most memory a stored hash may ask for to be checked (a hash made with stronger
/// parameters than today's still verifies; a damaged one cannot make the server take gigabytes).
const MAX_VERIFY_MEMORY_KIB: u32 = 16 * MEMORY_KIB;

/// Requests that may wait for a hashing thread, per thread.
const WAITING_PER_CORE: usize = 32;

/// How often a hashing thread steps aside for chat while it hashes (see
/// [`crate::priority::Yielding`]): a thread that chat is waiting for waits at most about this
/// long, rather than a scheduler tick (4 ms).
const YIELD_EVERY: Duration = Duration::from_micros(100);

/// How long a hashing thread keeps its memory with nothing to do: through a burst of logins it
/// is reused; on a quiet server it is given back.
const RELEASE_AFTER: Duration = Duration::from_secs(60);

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
#[error("cannot hash the password: {0}")]
pub struct HashError(String);

impl From<argon2::password_hash::Error> for HashError {
    fn from(error: argon2::password_hash::Error) -> HashError {
        HashError(error.to_string())
    }
}

/// The hasher, with the OWASP parameters (argon2's own defaults are the same; spelt out so that
/// an upgrade of the crate cannot change them silently).
fn argon2() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, PASSES, LANES, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes and checks passwords in working memory it keeps from one call to the next.
///
/// Why keep it: argon2 fills 19 MiB per hash. Allocated afresh each time, that is 4,864 new
/// pages for the kernel to fault in and zero and, when freed, to unmap (or for glibc to keep in
/// the thread's arena). Kept, the same pages are written again, and the server's resident size
/// after a storm of logins is the same every time (32 MB, where it was 32–71 MB).
/// [`Hasher::release`] gives them back.
#[derive(Default)]
pub(crate) struct Hasher {
    memory: Vec<Block>,
}

impl Hasher {
    /// Hashes `password` with a fresh random salt, into a PHC string
    /// (`$argon2id$v=19$m=19456,t=2,p=1$SALT$HASH`). Slow on purpose: call it on a
    /// [`HashPool`] (or any thread that may block).
    pub(crate) fn hash(&mut self, password: &str) -> Result<String, HashError> {
        let salt = SaltString::generate(&mut OsRng);
        let argon2 = argon2();
        let output_len = argon2
            .params()
            .output_len()
            .unwrap_or(Params::DEFAULT_OUTPUT_LEN);
        let hash = self.compute(&argon2, password, salt.as_salt(), output_len)?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(argon2.params())?,
            salt: Some(salt.as_salt()),
            hash: Some(hash),
        };
        Ok(phc.to_string())
    }

    /// Whether `password` matches the PHC string `phc`, with the algorithm, version and
    /// parameters the hash was made with, compared in constant time (`Output`'s equality). A
    /// string that is not a valid argon2 hash, or asks for more than [`MAX_VERIFY_MEMORY_KIB`],
    /// matches nothing. Slow on purpose, like [`Hasher::hash`].
    pub(crate) fn verify(&mut self, password: &str, phc: &str) -> bool {
        self.try_verify(password, phc).unwrap_or(false)
    }

    fn try_verify(&mut self, password: &str, phc: &str) -> Option<bool> {
        let phc = PasswordHash::new(phc).ok()?;
        let (salt, expected) = (phc.salt?, phc.hash?);
        let algorithm = Algorithm::try_from(phc.algorithm).ok()?;
        let version = match phc.version {
            Some(version) => Version::try_from(version).ok()?,
            None => Version::default(),
        };
        let params = Params::try_from(&phc).ok()?;
        if params.m_cost() > MAX_VERIFY_MEMORY_KIB {
            return None;
        }
        let argon2 = Argon2::new(algorithm, version, params);
        let computed = self.compute(&argon2, password, salt, expected.len());
        // More than today's memory (an older, stronger hash): not kept for the next call.
        if argon2.params().m_cost() > MEMORY_KIB {
            self.release();
        }
        Some(computed.ok()? == expected)
    }

    /// Spends what checking a password against a real account would, for a name that has no
    /// account, so that the time of the answer does not tell the two apart.
    pub(crate) fn verify_nothing(&mut self, password: &str) {
        let dummy = dummy_hash(self);
        let _ = self.verify(password, dummy);
    }

    /// Gives the working memory back to the system (the next hash takes it again).
    pub(crate) fn release(&mut self) {
        if self.memory.capacity() > 0 {
            self.memory = Vec::new();
            give_back_memory();
        }
    }

    /// The `len`-byte hash of `password` with `salt`, computed by `argon2` in the kept memory
    /// (grown first if these parameters need more).
    fn compute(
        &mut self,
        argon2: &Argon2<'_>,
        password: &str,
        salt: Salt<'_>,
        len: usize,
    ) -> Result<Output, argon2::password_hash::Error> {
        let mut salt_bytes = [0; 64];
        let salt = salt.decode_b64(&mut salt_bytes)?;
        let blocks = argon2.params().block_count();
        if self.memory.len() < blocks {
            self.memory.resize(blocks, Block::default());
        }
        Output::init_with(len, |out| {
            Ok(argon2.hash_password_into_with_memory(
                password.as_bytes(),
                salt,
                out,
                &mut self.memory,
            )?)
        })
    }
}

/// [`Hasher::hash`] once, for a caller with no pool (the operator's `account` commands).
pub fn hash_password(password: &str) -> Result<String, HashError> {
    Hasher::default().hash(password)
}

/// The hash an unknown name is checked against, made once (by the first hasher that needs it,
/// normally a pool thread right at start: [`HashPool::warm_up`]).
fn dummy_hash(hasher: &mut Hasher) -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hasher.hash("no account has this").unwrap_or_default())
}

/// Too many hashing requests are waiting: the answer is `rate-limited`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolBusy;

/// Work for a hashing thread.
type Job = Box<dyn FnOnce(&mut Hasher) + Send>;

/// A few hashing threads at the lowest priority, each with its own [`Hasher`], and a bounded
/// queue in front of them.
pub(crate) struct HashPool {
    /// To the hashing threads; they stop when the pool is dropped.
    jobs: Sender<Job>,
    /// One permit per hashing thread: a request waits for one here, where waiting costs
    /// nothing, rather than on a blocking thread.
    running: Arc<Semaphore>,
    /// Requests waiting or running.
    taken: AtomicUsize,
    /// Most requests waiting or running.
    max_taken: usize,
}

impl HashPool {
    /// A pool of `threads` hashing threads, with room for [`WAITING_PER_CORE`] requests per
    /// thread to wait.
    pub(crate) fn new(threads: NonZeroUsize) -> HashPool {
        let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
        for _ in 0..threads.get() {
            let queue = queue.clone();
            // A thread that cannot be made is one fewer; with none at all, `run` finds the
            // queue closed and answers `PoolBusy`.
            let _ = std::thread::Builder::new()
                .name("hashing".to_owned())
                .spawn(move || hash_until_dropped(&queue));
        }
        HashPool {
            jobs,
            running: Arc::new(Semaphore::new(threads.get())),
            taken: AtomicUsize::new(0),
            max_taken: threads.get() * (WAITING_PER_CORE + 1),
        }
    }

    /// One hashing thread per core but one (at least one): with a hash on every core, a storm
    /// of wrong passwords that gets past the throttle (many addresses, many accounts) took the
    /// cores from chat — direct-message p99 went from 4.7 ms to 48–76 ms on 2 cores.
    pub(crate) fn per_core() -> HashPool {
        let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        Self::new(NonZeroUsize::new(cores.saturating_sub(1)).unwrap_or(NonZeroUsize::MIN))
    }

    /// Makes the hash that unknown names are checked against now, in the background, so that
    /// not even the first unknown name takes longer to refuse than a wrong password.
    pub(crate) fn warm_up(&self) {
        let _ = self.jobs.send(Box::new(|hasher: &mut Hasher| {
            dummy_hash(hasher);
            // Nothing may follow for a long time: a server that has not yet seen a login
            // should not hold 19 MiB for one.
            hasher.release();
        }));
    }

    /// Runs `job` (a hash or a verification) on a hashing thread when one is free;
    /// [`PoolBusy`] at once when too many are waiting already. If the caller stops waiting, a
    /// job that has started still finishes (and holds its thread until then).
    pub(crate) async fn run<T, F>(&self, job: F) -> Result<T, PoolBusy>
    where
        T: Send + 'static,
        F: FnOnce(&mut Hasher) -> T + Send + 'static,
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
        let (done, result) = mpsc::sync_channel(1);
        self.jobs
            .send(Box::new(move |hasher: &mut Hasher| {
                let _ = done.send(job(hasher));
            }))
            .map_err(|_| PoolBusy)?;
        // Waited for on a blocking thread rather than with an async channel: to tokio, a
        // running blocking task is work in progress, so its paused clock (in tests) does not
        // jump ahead while a hash is being computed.
        tokio::task::spawn_blocking(move || {
            let result = result.recv().ok();
            drop(permit);
            result
        })
        .await
        .ok()
        .flatten()
        .ok_or(PoolBusy)
    }
}

/// A hashing thread: lowers its own priority, then runs jobs until the pool is dropped, giving
/// its memory back after [`RELEASE_AFTER`] with nothing to do.
///
/// Why the lowest priority (see [`crate::priority::idle_this_thread`]): even one core's worth of
/// hashing, on a machine with few cores, competes with the threads that carry chat; at the
/// lowest priority the scheduler runs chat first whenever both are ready, so a storm of logins
/// costs other users' messages little latency, and hashes take the time that chat leaves (on a
/// saturated server a login waits, which is the right way round).
fn hash_until_dropped(queue: &Receiver<Job>) {
    // Refused (not Linux, say): the hashes run at normal priority, or without stepping aside.
    let _ = priority::idle_this_thread();
    let yielding = Yielding::for_this_thread(YIELD_EVERY).ok();
    let mut hasher = Hasher::default();
    loop {
        match queue.recv_timeout(RELEASE_AFTER) {
            Ok(job) => {
                let _stepping_aside = yielding.as_ref().map(Yielding::arm);
                // A job that panics (none should) loses its answer, which its caller sees as
                // `PoolBusy`, not the thread.
                if panic::catch_unwind(AssertUnwindSafe(|| job(&mut hasher))).is_err() {
                    hasher.release();
                }
            }
            Err(RecvTimeoutError::Timeout) => hasher.release(),
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Returns freed hashing memory to the system: glibc may keep a freed buffer in its thread's
/// arena for the next allocation there (measured: hundreds of MB of resident memory, never given
/// back, when every hash allocated its own). `malloc_trim` releases what the arenas hold free.
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

    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    #[test]
    fn a_hash_is_an_argon2id_phc_string_with_the_owasp_parameters_and_its_own_salt() {
        let mut hasher = Hasher::default();
        let first = hasher.hash("correct horse").expect("hashes");
        let second = hasher.hash("correct horse").expect("hashes");
        assert!(
            first.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{first}"
        );
        assert_ne!(first, second, "a fresh salt each time");
        assert!(hasher.verify("correct horse", &first));
        assert!(hasher.verify("correct horse", &second));
        assert!(!hasher.verify("correct horsf", &first));
        assert!(!hasher.verify("correct horse", "not a hash"));
        // A standard PHC string: the argon2 crate's own verifier agrees.
        let parsed = PasswordHash::new(&first).expect("a PHC string");
        assert!(argon2().verify_password(b"correct horse", &parsed).is_ok());
    }

    #[test]
    fn a_hash_made_with_other_parameters_is_checked_with_its_own() {
        let params = Params::new(8_192, 1, 2, Some(24)).expect("valid parameters");
        let salt = SaltString::generate(&mut OsRng);
        let other = Argon2::new(Algorithm::Argon2i, Version::V0x10, params)
            .hash_password(b"battery staple", &salt)
            .expect("hashes")
            .to_string();
        let mut hasher = Hasher::default();
        assert!(hasher.verify("battery staple", &other), "{other}");
        // Again with more memory kept than these parameters use (after a hash of today's).
        hasher.hash("correct horse").expect("hashes");
        assert!(hasher.memory.len() > 8_192);
        assert!(hasher.verify("battery staple", &other), "{other}");
        assert!(!hasher.verify("battery stapler", &other));
        let greedy = other.replace("m=8192", &format!("m={}", MAX_VERIFY_MEMORY_KIB + 8));
        assert!(
            !hasher.verify("battery staple", &greedy),
            "too much memory asked"
        );
    }

    #[test]
    fn a_hasher_keeps_its_memory_until_released() {
        let mut hasher = Hasher::default();
        let hash = hasher.hash("correct horse").expect("hashes");
        assert_eq!(
            hasher.memory.len(),
            MEMORY_KIB as usize,
            "one block per KiB"
        );
        let kept = hasher.memory.as_ptr();
        assert!(hasher.verify("correct horse", &hash));
        assert_eq!(
            hasher.memory.as_ptr(),
            kept,
            "the same memory, not a new one"
        );
        hasher.release();
        assert_eq!(hasher.memory.capacity(), 0);
        assert!(
            hasher.verify("correct horse", &hash),
            "taken again when needed"
        );
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
                    pool.run(move |_: &mut Hasher| {
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
            assert_eq!(
                pool.run(|_: &mut Hasher| ()).await,
                Err(PoolBusy),
                "the queue is full"
            );
            for _ in 0..=WAITING_PER_CORE {
                release.send(()).expect("a job is waiting");
            }
            for job in jobs {
                assert_eq!(job.await.expect("no panic"), Ok(()));
            }
            assert_eq!(most.load(Ordering::SeqCst), 1, "one at a time");
            assert_eq!(pool.run(|_: &mut Hasher| 7).await, Ok(7), "room again");
        });
    }
}
