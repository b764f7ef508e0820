-- Every delivered `say` and `talk`; the same columns as migrations/sqlite. `conversation` is the
-- folded key a history query looks up: a room's folded name, or the two parties' folded names
-- sorted and joined by '|' (which no name can contain). Accounts and read positions come later,
-- in migrations of their own.
CREATE TABLE messages (
    id BIGSERIAL PRIMARY KEY,
    sent_at_ms BIGINT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('room', 'direct')),
    conversation TEXT NOT NULL,
    room TEXT,
    sender TEXT NOT NULL,
    recipient TEXT,
    body TEXT NOT NULL
);
CREATE INDEX messages_by_conversation ON messages (kind, conversation, id);
CREATE INDEX messages_by_time ON messages (sent_at_ms);
