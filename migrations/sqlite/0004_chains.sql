-- Cheaper writes (docs/PERFORMANCE.md, "The store's cost"): history follows a chain instead of an
-- index.
--
-- The index on (conversation_id, id) was most of what the writer paid for a message. Not for its
-- entries, which are small, but for where they go: a batch of a busy server holds messages of
-- many conversations, each entry lands on its own conversation's page of the index, and a
-- commit writes every page it touched to the WAL, 4 KiB at a time (and again when the WAL is
-- checkpointed): a thousand messages of fifty conversations dirtied some fifty pages for 10 KiB
-- of entries. Rows themselves only ever go at the end of the table.
--
-- * Each message points at the one before it in its conversation (`previous_id`, NULL for the
--   first), and each conversation at its newest message (`last_id`, 0 while it has none). The
--   writer remembers both for the conversations it writes to, so a message still costs no
--   query; `last_id` is written once per conversation and batch, and `conversations` is small.
-- * A history page starts at `last_id` (or at the `previous_id` of the message it pages back
--   from) and follows `previous_id` through the table's own key: N lookups for N messages.
-- * Retention deletes the oldest messages, so a chain simply ends where they were.
--
-- One server writes to a store (it owns who is online); two writing to one database would
-- each extend the chains from what it last wrote.
ALTER TABLE conversations ADD COLUMN last_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN previous_id INTEGER;
UPDATE messages SET previous_id = chained.previous_id
FROM (
    SELECT id, lag(id) OVER (PARTITION BY conversation_id ORDER BY id) AS previous_id
    FROM messages
) AS chained
WHERE messages.id = chained.id AND chained.previous_id IS NOT NULL;
UPDATE conversations SET last_id = coalesce(
    (SELECT max(id) FROM messages WHERE messages.conversation_id = conversations.id), 0
);
DROP INDEX messages_by_conversation;
