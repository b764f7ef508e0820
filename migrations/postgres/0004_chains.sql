-- The same as migrations/sqlite/0004_chains.sql (which says why): each message points at the
-- one before it in its conversation, each conversation at its newest message, and the index on
-- (conversation_id, id) goes.
ALTER TABLE conversations ADD COLUMN last_id BIGINT NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN previous_id BIGINT;
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
