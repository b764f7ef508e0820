-- Cheaper rows (docs/PERFORMANCE.md, "The store's cost"): the write behind a busy server spent
-- more CPU per message than the whole live path, half of it on the index that history reads,
-- (kind, conversation, id), whose entries carried the conversation's text.
--
-- * Conversations get a table of their own and messages an integer `conversation_id`, so that
--   index holds two integers per message (`kind` moves to the conversation, where it is stored
--   once). The writer remembers the ids it has looked up.
-- * `messages_by_time` goes: retention deletes by id, up to the oldest message that is recent
--   enough (ids increase with time), which needs no index of its own.
-- * `room` and `recipient` go: nothing reads them (the conversation names both parties, folded,
--   and the sender is kept as written).
--
-- `id` keeps AUTOINCREMENT: without it SQLite gives a new row the largest id plus one, so once
-- retention has deleted every message (a server quiet for the whole retention period) ids would
-- start again below the accounts' read positions, and queued messages would be skipped.
-- SQLite has no ALTER for any of this: the table is rebuilt, every message and its id kept, and
-- so is the counter of ids already given out (it may be above the largest id left).
CREATE TABLE conversations (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('room', 'direct')),
    key TEXT NOT NULL,
    UNIQUE (kind, key)
);
INSERT INTO conversations (kind, key)
SELECT DISTINCT kind, conversation FROM messages ORDER BY kind, conversation;

CREATE TABLE messages_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sent_at_ms INTEGER NOT NULL,
    conversation_id INTEGER NOT NULL,
    sender TEXT NOT NULL,
    body TEXT NOT NULL,
    recipient_key TEXT
);
INSERT INTO messages_new (id, sent_at_ms, conversation_id, sender, body, recipient_key)
SELECT m.id, m.sent_at_ms, c.id, m.sender, m.body, m.recipient_key
FROM messages AS m JOIN conversations AS c ON c.kind = m.kind AND c.key = m.conversation
ORDER BY m.id;
DELETE FROM sqlite_sequence WHERE name = 'messages_new';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'messages_new', max(
    coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'messages'), 0),
    coalesce((SELECT max(id) FROM messages_new), 0)
);
-- Dropping the table drops its indexes and its row of sqlite_sequence; renaming the new one
-- renames its row there.
DROP TABLE messages;
ALTER TABLE messages_new RENAME TO messages;
CREATE INDEX messages_by_conversation ON messages (conversation_id, id);
CREATE INDEX messages_queued ON messages (recipient_key, id) WHERE recipient_key IS NOT NULL;
