-- The same tables and columns as migrations/sqlite.
-- Accounts (issue: accounts and TLS) and offline delivery (issue: history and offline delivery).
--
-- `name_key` is the folded name (`Bob` and `bob` are one account); `name` is the spelling it was
-- registered with. `password_hash` is an argon2id PHC string, never the password. `last_read_id`
-- is the id of the last queued message the account's client has actually taken (written to its
-- socket): a replay of missed messages starts after it.
CREATE TABLE accounts (
    name_key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    last_read_id BIGINT NOT NULL DEFAULT 0
);
-- A direct message stored for a registered user who was offline carries the recipient's folded
-- name here (NULL for every message delivered live), so the replay at login is one index range.
ALTER TABLE messages ADD COLUMN recipient_key TEXT;
CREATE INDEX messages_queued ON messages (recipient_key, id) WHERE recipient_key IS NOT NULL;
