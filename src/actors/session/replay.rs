//! The replay of missed messages at login: `missed|ID|TIME|FROM|TEXT` lines, oldest first, then
//! `end|missed|COUNT`, and the account's read position moved forward as far as what the socket
//! has actually taken.
//!
//! How it goes (docs/ARCHITECTURE.md has the whole design):
//!
//! * A page of at most [`PAGE_ROWS`] messages is read from the store (through the writer's
//!   queue, so it sees every message already answered `queued`), after the read position and
//!   after the last id already sent.
//! * The page is queued to the outbox in slices of at most a quarter of
//!   `limits.max_outbound_bytes` ([`Replay::slice_bytes`]), each with its *mark* (see
//!   [`Outbox::send_line_marked`]); the next slice waits until the socket has taken the
//!   previous one ([`Outbox::written_past`]). So a 10,000-message replay holds one page in
//!   memory and never makes the client owe more than its share of the cap.
//! * Each time the socket has taken bytes, the ids whose lines are wholly written are
//!   confirmed and the read position moves forward to the last of them (one `UPDATE` per
//!   slice, queued to the writer). When the connection ends — however it ends — the same is
//!   done one last time with the final count of written bytes, *before* the `ChatServer` is
//!   told the user is gone, so a new login by the same name, which can only follow that,
//!   starts after everything the old connection wrote.
//!
//! Live messages are not held back: a `talk` or `say` that arrives during the replay is
//! written as soon as it comes, between two slices of the replay. Every `missed` line is older
//! than any live line (it was stored before the login), so a client that shows them under
//! their own heading loses no order that matters.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix::{fut::wrap_future, prelude::*};
use bytes::BytesMut;
use log::debug;

use super::Session;
use crate::{
    codec::{ErrorKind, Event, EventVerb},
    store::{StoreError, StoredMessage},
};

/// Messages read from the store at a time.
pub(super) const PAGE_ROWS: u32 = 500;
/// Longest a page of the replay may take to read.
const PAGE_TIMEOUT: Duration = Duration::from_secs(5);

/// A replay in progress (see the module docs).
pub(super) struct Replay {
    account: Arc<str>,
    /// Fetched and not yet queued to the outbox, oldest first.
    pending: VecDeque<StoredMessage>,
    /// Queued to the outbox and not yet known to be written: each line's mark and id.
    unconfirmed: VecDeque<(u64, i64)>,
    /// The highest id queued to the outbox: the next page starts after it.
    last_queued: i64,
    /// The highest id known written and handed to the store as the read position.
    confirmed: i64,
    /// `missed` lines queued so far.
    count: u64,
    /// Whether the last page was full, so that another may follow.
    more: bool,
    /// Most bytes one slice queues.
    slice_bytes: usize,
}

impl Replay {
    fn new(account: Arc<str>, max_outbound_bytes: usize) -> Replay {
        Replay {
            account,
            pending: VecDeque::new(),
            unconfirmed: VecDeque::new(),
            last_queued: 0,
            confirmed: 0,
            count: 0,
            more: true,
            slice_bytes: (max_outbound_bytes / 4).max(1),
        }
    }

    /// Encodes the next slice: pending lines up to [`Replay::slice_bytes`] (at least one), and
    /// `end|missed|COUNT` if that was the last of them. Returns the bytes and, for each
    /// `missed` line, its end within them and its id.
    fn next_slice(&mut self) -> (BytesMut, Vec<(usize, i64)>) {
        let mut lines = BytesMut::new();
        let mut ends = Vec::new();
        while lines.len() < self.slice_bytes {
            let Some(message) = self.pending.pop_front() else {
                break;
            };
            Event::Missed {
                id: u64::try_from(message.id).unwrap_or_default(),
                time: &message.time(),
                from: &message.sender,
                text: &message.text,
            }
            .encode(&mut lines);
            ends.push((lines.len(), message.id));
            self.last_queued = message.id;
            self.count += 1;
        }
        if self.pending.is_empty() && !self.more {
            Event::EndMissed { count: self.count }.encode(&mut lines);
        }
        (lines, ends)
    }

    /// The socket has taken `written` bytes: the lines wholly among them are confirmed.
    /// Returns the new read position, if it moved.
    fn confirm(&mut self, written: u64) -> Option<i64> {
        let before = self.confirmed;
        while let Some(&(mark, id)) = self.unconfirmed.front() {
            if mark > written {
                break;
            }
            self.confirmed = id;
            self.unconfirmed.pop_front();
        }
        (self.confirmed > before).then_some(self.confirmed)
    }

    /// Whether everything, `end|missed` included, has been queued.
    fn is_done(&self) -> bool {
        self.pending.is_empty() && !self.more
    }
}

impl Session {
    /// Starts the replay of what `account` missed, if there is a store. Nothing is sent if
    /// there is no account by that name (the first page's query says so).
    pub(super) fn start_replay(&mut self, account: Arc<str>, ctx: &mut Context<Self>) {
        if self.context.store.is_none() {
            return;
        }
        let cap = self.context.settings.limits.max_outbound_bytes;
        self.replay = Some(Box::new(Replay::new(account, cap)));
        self.fetch_missed(ctx);
    }

    /// Reads the next page.
    fn fetch_missed(&mut self, ctx: &mut Context<Self>) {
        let (Some(store), Some(replay)) = (self.context.store.clone(), self.replay.as_ref()) else {
            return;
        };
        let account = replay.account.clone();
        let after = replay.last_queued;
        let page = async move { store.missed(&account, after, PAGE_ROWS, PAGE_TIMEOUT).await };
        ctx.spawn(
            wrap_future(page).map(|page, session: &mut Self, ctx| session.missed_page(page, ctx)),
        );
    }

    fn missed_page(
        &mut self,
        page: Result<Option<Vec<StoredMessage>>, StoreError>,
        ctx: &mut Context<Self>,
    ) {
        if !self.phase.is_open() {
            return;
        }
        let Some(replay) = self.replay.as_mut() else {
            return;
        };
        match page {
            Ok(Some(messages)) => {
                replay.more = messages.len() >= PAGE_ROWS as usize;
                replay.pending.extend(messages);
                self.send_slice(ctx);
            }
            // No account by that name: nothing to replay, nothing said.
            Ok(None) => self.replay = None,
            Err(error) => {
                // What is left stays queued, for the next login.
                debug!("conn {}: replay of missed messages: {error}", self.conn);
                self.replay = None;
                self.reply(&Event::Error(
                    ErrorKind::StoreUnavailable,
                    EventVerb::Missed.as_str(),
                ));
            }
        }
    }

    /// Queues the next slice and waits for the socket to take it.
    fn send_slice(&mut self, ctx: &mut Context<Self>) {
        let Some(replay) = self.replay.as_mut() else {
            return;
        };
        let (lines, ends) = replay.next_slice();
        let Ok(mark) = self.connection.outbox().send_line_marked(&lines) else {
            // Closing: what was written is settled when the connection ends.
            return;
        };
        // Counted once queued, as every other event is (see `Outbox::send`).
        let metrics = &self.context.metrics;
        metrics.events_sent(EventVerb::Missed, ends.len());
        if replay.is_done() {
            metrics.events_sent(EventVerb::End, 1);
        }
        let start = mark - lines.len() as u64;
        replay
            .unconfirmed
            .extend(ends.into_iter().map(|(end, id)| (start + end as u64, id)));
        let written = self.connection.outbox().written_past(mark);
        ctx.spawn(
            wrap_future(written).map(move |written, session: &mut Self, ctx| {
                session.settle_replay(written);
                if !session.phase.is_open() || written < mark {
                    return; // the connection is going; settled again when it ends
                }
                match session.replay.as_ref() {
                    Some(replay) if replay.is_done() => session.replay = None,
                    Some(replay) if !replay.pending.is_empty() => session.send_slice(ctx),
                    Some(_) => session.fetch_missed(ctx),
                    None => {}
                }
            }),
        );
    }

    /// Moves the read position forward to the last line wholly within the first `written`
    /// bytes of the connection.
    pub(super) fn settle_replay(&mut self, written: u64) {
        let (Some(store), Some(replay)) = (&self.context.store, self.replay.as_mut()) else {
            return;
        };
        if let Some(read) = replay.confirm(written) {
            store.mark_read(&replay.account, read);
        }
    }

    /// The connection is ending: settles with what its socket took, and ends the replay once
    /// nothing more can be written (`finished`).
    pub(super) fn end_replay(&mut self, finished: bool) {
        if self.replay.is_none() {
            return;
        }
        let written = self.connection.outbox().written();
        self.settle_replay(written);
        if finished {
            self.replay = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: i64) -> StoredMessage {
        StoredMessage {
            id,
            sent_at_ms: 1_764_000_000_000 + id,
            sender: "bob".to_owned(),
            text: format!("message {id}"),
        }
    }

    #[test]
    fn slices_are_bounded_and_the_last_one_ends_the_replay() {
        let mut replay = Replay::new("alice".into(), 400);
        replay.pending.extend((1..=5).map(message));
        replay.more = false;
        let (first, ends) = replay.next_slice();
        // A quarter of 400 bytes: the third line of about 48 bytes passes it.
        assert_eq!(ends.len(), 3, "{first:?}");
        assert_eq!(ends.last().map(|&(end, _)| end), Some(first.len()));
        assert!(first.starts_with(b"missed|1|2025-"));
        assert!(!first.ends_with(b"end|missed|3\n"));
        let (last, ends) = replay.next_slice();
        assert_eq!(ends.iter().map(|&(_, id)| id).collect::<Vec<_>>(), [4, 5]);
        assert!(
            last.ends_with(b"|bob|message 5\nend|missed|5\n"),
            "{last:?}"
        );
        assert!(replay.is_done());
    }

    #[test]
    fn only_lines_wholly_written_are_confirmed() {
        let mut replay = Replay::new("alice".into(), 1 << 20);
        replay.unconfirmed.extend([(10, 1), (20, 2), (30, 3)]);
        assert_eq!(replay.confirm(9), None);
        assert_eq!(replay.confirm(25), Some(2));
        assert_eq!(replay.confirm(29), None);
        assert_eq!(replay.confirm(30), Some(3));
        assert!(replay.unconfirmed.is_empty());
    }

    #[test]
    fn an_empty_replay_is_just_its_end() {
        let mut replay = Replay::new("alice".into(), 1 << 20);
        replay.more = false;
        let (lines, ends) = replay.next_slice();
        assert!(ends.is_empty());
        assert_eq!(&lines[..], b"end|missed|0\n");
    }
}
