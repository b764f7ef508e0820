-- The same tables and columns as migrations/sqlite (which says why): conversations in a table
-- of their own, messages pointing at them by an integer; no index on the time, and no `room`
-- or `recipient` columns. The ids of messages come from their sequence as before, and every
-- message keeps its own.
CREATE TABLE conversations (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('room', 'direct')),
    key TEXT NOT NULL,
    UNIQUE (kind, key)
);
INSERT INTO conversations (kind, key)
SELECT DISTINCT kind, conversation FROM messages ORDER BY kind, conversation;

ALTER TABLE messages ADD COLUMN conversation_id BIGINT;
UPDATE messages AS m SET conversation_id = c.id
FROM conversations AS c WHERE c.kind = m.kind AND c.key = m.conversation;
ALTER TABLE messages ALTER COLUMN conversation_id SET NOT NULL;
DROP INDEX messages_by_conversation;
DROP INDEX messages_by_time;
ALTER TABLE messages DROP COLUMN kind, DROP COLUMN conversation, DROP COLUMN room,
    DROP COLUMN recipient;
CREATE INDEX messages_by_conversation ON messages (conversation_id, id);
