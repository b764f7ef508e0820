//! Flood control for one connection: a token bucket that decides, line by line, whether a
//! line may run, and a detector for clients that keep sending far over the rate.
//!
//! Time is tokio's [`Instant`], so tests of the whole server can run flood control under
//! `tokio::time::pause()`.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::FloodLimit;

/// A client sending more than this many times the allowed rate…
const FLOOD_FACTOR: f64 = 10.0;
/// …for this many consecutive seconds is disconnected.
const FLOOD_SECONDS: u32 = 5;

/// What to do with one incoming line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within budget: execute it.
    Allow,
    /// Over budget: answer `error|rate-limited|VERB` and drop it.
    Limit,
    /// Flooding: disconnect with `bye|flood`.
    Disconnect,
}

/// Per-connection flood control.
#[derive(Debug, Clone)]
pub(crate) struct FloodControl {
    lines_per_sec: f64,
    burst: f64,
    tokens: f64,
    refilled_at: Instant,
    /// The current one-second window and the lines seen in it.
    window_start: Instant,
    window_lines: u32,
    /// Consecutive windows that ran over `FLOOD_FACTOR` times the rate.
    hot_windows: u32,
}

impl FloodControl {
    /// A full bucket at `now`.
    pub(crate) fn new(limit: FloodLimit, now: Instant) -> Self {
        let burst = f64::from(limit.burst.get());
        Self {
            lines_per_sec: f64::from(limit.lines_per_sec.get()),
            burst,
            tokens: burst,
            refilled_at: now,
            window_start: now,
            window_lines: 0,
            hot_windows: 0,
        }
    }

    /// Accounts for one line arriving at `now`.
    pub(crate) fn check(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= Duration::from_secs(1) {
            let hot = f64::from(self.window_lines) > FLOOD_FACTOR * self.lines_per_sec;
            // A gap of more than one window means the client paused: the streak is over.
            let contiguous = elapsed < Duration::from_secs(2);
            self.hot_windows = if hot && contiguous {
                self.hot_windows + 1
            } else {
                0
            };
            self.window_start = now;
            self.window_lines = 0;
        }
        self.window_lines = self.window_lines.saturating_add(1);
        if self.hot_windows >= FLOOD_SECONDS {
            return Verdict::Disconnect;
        }

        let refill = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + refill * self.lines_per_sec).min(self.burst);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Verdict::Allow
        } else {
            Verdict::Limit
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `count` lines spread evenly over `over`, returning the verdicts.
    fn send(
        control: &mut FloodControl,
        now: &mut Instant,
        count: u32,
        over: Duration,
    ) -> Vec<Verdict> {
        let step = over / count;
        (0..count)
            .map(|_| {
                *now += step;
                control.check(*now)
            })
            .collect()
    }

    fn bucket(lines_per_sec: u32, burst: u32, now: Instant) -> FloodControl {
        let limit = |n| std::num::NonZeroU32::new(n).expect("a positive limit");
        FloodControl::new(
            FloodLimit {
                lines_per_sec: limit(lines_per_sec),
                burst: limit(burst),
            },
            now,
        )
    }

    #[test]
    fn a_burst_is_allowed_then_the_sustained_rate() {
        let mut now = Instant::now();
        let mut control = bucket(10, 20, now);
        let burst = send(&mut control, &mut now, 20, Duration::from_millis(1));
        assert!(burst.iter().all(|v| *v == Verdict::Allow));
        assert_eq!(control.check(now), Verdict::Limit);
        // At exactly the sustained rate, every line passes.
        let steady = send(&mut control, &mut now, 50, Duration::from_secs(5));
        assert!(steady.iter().all(|v| *v == Verdict::Allow), "{steady:?}");
    }

    #[test]
    fn over_budget_lines_are_limited_but_not_disconnected_below_ten_times_the_rate() {
        let mut now = Instant::now();
        let mut control = bucket(10, 10, now);
        // 5x the rate for 30 s: many lines limited, never a disconnect.
        let verdicts = send(&mut control, &mut now, 1500, Duration::from_secs(30));
        assert!(verdicts.contains(&Verdict::Limit));
        assert!(!verdicts.contains(&Verdict::Disconnect));
    }

    #[test]
    fn ten_times_the_rate_for_five_seconds_disconnects() {
        let mut now = Instant::now();
        let mut control = bucket(10, 10, now);
        // 20x the rate: not yet after 4 s, but within the sixth second.
        let first = send(&mut control, &mut now, 800, Duration::from_secs(4));
        assert!(!first.contains(&Verdict::Disconnect));
        let next = send(&mut control, &mut now, 400, Duration::from_secs(2));
        assert!(next.contains(&Verdict::Disconnect));
    }

    #[test]
    fn a_pause_resets_the_flood_streak() {
        let mut now = Instant::now();
        let mut control = bucket(10, 10, now);
        send(&mut control, &mut now, 800, Duration::from_secs(4));
        now += Duration::from_secs(3);
        let after_pause = send(&mut control, &mut now, 800, Duration::from_secs(4));
        assert!(!after_pause.contains(&Verdict::Disconnect));
    }
}
