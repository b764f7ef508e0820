//! Guessing passwords is throttled: after [`STRIKES`] wrong passwords for one account, or from
//! one address, within [`WINDOW`], further attempts are refused (`error|rate-limited|login`)
//! for a back-off that doubles with every further wrong password — 1 s, 2 s, 4 s … up to
//! [`MAX_BACKOFF`] — and is logged once, at info, when it starts. A right password clears the
//! account's record (not the address's: one success proves nothing about the other names an
//! address is trying).
//!
//! Once a back-off has started, every further wrong password starts the next, longer one, until
//! the account or address has been quiet for [`FORGET_AFTER`] (twice the longest back-off, so
//! that sitting one out does not wipe the slate).
//!
//! Memory is bounded: each map holds at most [`MAX_TRACKED`] records; a record is forgotten once
//! it has been quiet for [`FORGET_AFTER`], and when a map is full the records quiet longest make
//! room.
//!
//! Time is tokio's [`Instant`], so the tests run it under a paused clock.

use std::{
    collections::HashMap,
    hash::Hash,
    net::IpAddr,
    sync::{Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use log::info;
use tokio::time::Instant;

/// Wrong passwords within [`WINDOW`] that start a back-off.
pub(crate) const STRIKES: u32 = 5;
/// The window the strikes are counted in.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);
/// The first back-off; each further wrong password doubles it.
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest back-off.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long a record is remembered after its last wrong password: longer than the longest
/// back-off, so that waiting one out does not wipe the slate.
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Records per map (accounts, addresses).
const MAX_TRACKED: usize = 100_000;

/// One account's or one address's recent wrong passwords.
#[derive(Debug, Clone, Copy)]
struct Record {
    /// Wrong passwords since `window_start`.
    strikes: u32,
    window_start: Instant,
    /// Back-offs served in a row: the next one lasts `FIRST_BACKOFF * 2^level`.
    level: u32,
    /// Refused until then.
    until: Option<Instant>,
    last_failure: Instant,
}

impl Record {
    fn new(now: Instant) -> Record {
        Record {
            strikes: 0,
            window_start: now,
            level: 0,
            until: None,
            last_failure: now,
        }
    }

    fn blocked(&self, now: Instant) -> Option<Duration> {
        self.until
            .filter(|until| *until > now)
            .map(|until| until - now)
    }

    /// Counts a wrong password; the back-off it starts, if it starts one.
    fn strike(&mut self, now: Instant) -> Option<Duration> {
        if now.duration_since(self.last_failure) >= FORGET_AFTER {
            *self = Record::new(now);
        } else if self.level == 0 && now.duration_since(self.window_start) >= WINDOW {
            self.strikes = 0;
            self.window_start = now;
        }
        self.last_failure = now;
        self.strikes = self.strikes.saturating_add(1);
        // Once a back-off has started, every further wrong password (until the record is
        // forgotten) starts the next, longer one.
        if self.strikes < STRIKES && self.level == 0 {
            return None;
        }
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << self.level.min(16))
            .min(MAX_BACKOFF);
        self.level = self.level.saturating_add(1);
        self.until = Some(now + backoff);
        Some(backoff)
    }

    /// Whether the record can be forgotten: nothing it says still matters.
    fn expired(&self, now: Instant) -> bool {
        self.blocked(now).is_none() && now.duration_since(self.last_failure) >= FORGET_AFTER
    }
}

/// The records of one kind (accounts by folded name, or addresses), bounded.
struct Records<K> {
    map: HashMap<K, Record>,
}

impl<K: Eq + Hash + Clone> Records<K> {
    fn new() -> Self {
        Records {
            map: HashMap::new(),
        }
    }

    fn blocked(&self, key: &K, now: Instant) -> Option<Duration> {
        self.map.get(key).and_then(|record| record.blocked(now))
    }

    fn strike(&mut self, key: &K, now: Instant) -> Option<Duration> {
        if !self.map.contains_key(key) && self.map.len() >= MAX_TRACKED {
            self.map.retain(|_, record| !record.expired(now));
            if self.map.len() >= MAX_TRACKED {
                let quietest = self
                    .map
                    .iter()
                    .min_by_key(|(_, record)| record.last_failure)
                    .map(|(key, _)| key.clone());
                if let Some(quietest) = quietest {
                    self.map.remove(&quietest);
                }
            }
        }
        self.map
            .entry(key.clone())
            .or_insert_with(|| Record::new(now))
            .strike(now)
    }
}

/// The throttle every session shares.
pub(crate) struct Throttle {
    state: Mutex<State>,
}

struct State {
    accounts: Records<Box<str>>,
    addresses: Records<IpAddr>,
}

impl Throttle {
    pub(crate) fn new() -> Throttle {
        Throttle {
            state: Mutex::new(State {
                accounts: Records::new(),
                addresses: Records::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update leaves the maps consistent: a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How long attempts for the account `key` (a folded name) from `ip` are still refused, if
    /// they are.
    pub(crate) fn blocked(&self, ip: IpAddr, key: &str) -> Option<Duration> {
        let now = Instant::now();
        let state = self.state();
        let account = state.accounts.blocked(&Box::from(key), now);
        let address = state.addresses.blocked(&ip.to_canonical(), now);
        account.max(address)
    }

    /// Counts a wrong password for `name` (shown in the log; `key` is its folded form) from
    /// `ip`, and logs a back-off that starts.
    pub(crate) fn failed(&self, ip: IpAddr, key: &str, name: &str) {
        let now = Instant::now();
        let ip = ip.to_canonical();
        let (account, address) = {
            let mut state = self.state();
            (
                state.accounts.strike(&Box::from(key), now),
                state.addresses.strike(&ip, now),
            )
        };
        if let Some(backoff) = account {
            info!(
                "{STRIKES} or more wrong passwords for {name} within {} s (the last from {ip}): \
                 logins to it refused for {} s",
                WINDOW.as_secs(),
                backoff.as_secs()
            );
        }
        if let Some(backoff) = address {
            info!(
                "{STRIKES} or more wrong passwords from {ip} within {} s (the last for {name}): \
                 logins from it refused for {} s",
                WINDOW.as_secs(),
                backoff.as_secs()
            );
        }
    }

    /// The right password for `key`: its record is cleared.
    pub(crate) fn succeeded(&self, key: &str) {
        self.state().accounts.map.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a runtime")
    }

    const ONE: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));
    const TWO: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 2));
    const THREE: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 3));

    #[test]
    fn five_wrong_passwords_start_a_backoff_that_doubles_up_to_five_minutes() {
        runtime().block_on(async {
            let throttle = Throttle::new();
            for _ in 0..STRIKES - 1 {
                throttle.failed(ONE, "bob", "bob");
                assert_eq!(throttle.blocked(ONE, "bob"), None);
            }
            throttle.failed(ONE, "bob", "bob");
            assert_eq!(throttle.blocked(ONE, "bob"), Some(Duration::from_secs(1)));
            // From another address too: the account is throttled.
            assert_eq!(throttle.blocked(TWO, "bob"), Some(Duration::from_secs(1)));
            tokio::time::advance(Duration::from_millis(1000)).await;
            assert_eq!(throttle.blocked(ONE, "bob"), None);
            let mut expected = Vec::new();
            let mut seen = Vec::new();
            for step in 1..12u32 {
                throttle.failed(TWO, "bob", "bob");
                let backoff = throttle.blocked(TWO, "bob").expect("refused");
                seen.push(backoff.as_secs());
                expected.push((1u64 << step).min(300));
                tokio::time::advance(backoff).await;
            }
            assert_eq!(seen, expected);
            assert_eq!(seen.last(), Some(&300));
        });
    }

    #[test]
    fn one_address_guessing_many_names_is_throttled_and_a_right_password_clears_the_account() {
        runtime().block_on(async {
            let throttle = Throttle::new();
            for name in ["a", "b", "c", "d", "e"] {
                throttle.failed(ONE, name, name);
            }
            assert_eq!(throttle.blocked(ONE, "f"), Some(Duration::from_secs(1)));
            assert_eq!(throttle.blocked(TWO, "f"), None, "other addresses go on");

            for _ in 0..4 {
                throttle.failed(TWO, "carol", "carol");
            }
            throttle.succeeded("carol");
            // (From a third address: TWO has four strikes of its own.)
            throttle.failed(THREE, "carol", "carol");
            assert_eq!(
                throttle.blocked(THREE, "carol"),
                None,
                "counting starts over"
            );
            throttle.failed(TWO, "dave", "dave");
            assert!(
                throttle.blocked(TWO, "erin").is_some(),
                "the address still counts"
            );
        });
    }

    #[test]
    fn strikes_older_than_the_window_do_not_count() {
        runtime().block_on(async {
            let throttle = Throttle::new();
            for _ in 0..4 {
                throttle.failed(ONE, "bob", "bob");
            }
            tokio::time::advance(WINDOW).await;
            throttle.failed(ONE, "bob", "bob");
            assert_eq!(throttle.blocked(ONE, "bob"), None);
        });
    }

    #[test]
    fn the_maps_stay_bounded() {
        runtime().block_on(async {
            let throttle = Throttle::new();
            for n in 0..MAX_TRACKED + 10 {
                let name = n.to_string();
                throttle.failed(ONE, &name, &name);
            }
            let state = throttle.state();
            assert!(state.accounts.map.len() <= MAX_TRACKED);
            assert_eq!(state.addresses.map.len(), 1);
        });
    }
}
