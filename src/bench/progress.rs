//! A progress bar on stderr, fed from the run's counters.
//!
//! The hot paths only bump atomic counters they keep anyway; a ticker task samples them ten
//! times a second, so drawing costs nothing per message. When the bar is off (stderr is not a
//! terminal, or `--json`) no ticker runs at all.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;

/// A phase's bar; cleared when dropped.
pub(crate) struct Progress {
    bar: ProgressBar,
    ticker: Option<JoinHandle<()>>,
}

impl Progress {
    /// Shows `label` with a bar up to `total`; every 100 ms `sample` gives the position and a
    /// short message (what has been done so far, in the phase's own unit).
    pub(crate) fn start(
        enabled: bool,
        label: &str,
        total: u64,
        sample: impl Fn() -> (u64, String) + Send + 'static,
    ) -> Progress {
        if !enabled {
            return Progress {
                bar: ProgressBar::hidden(),
                ticker: None,
            };
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{prefix:>11} [{bar:30}] {msg} ({elapsed})")
            .map(|style| style.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(label.to_owned());
        let shown = bar.clone();
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let (position, message) = sample();
                shown.set_message(message);
                shown.set_position(position.min(total));
            }
        });
        Progress {
            bar,
            ticker: Some(ticker),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
        }
        self.bar.finish_and_clear();
    }
}
