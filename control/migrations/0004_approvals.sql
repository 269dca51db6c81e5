-- Write actions the assistant proposed, waiting for (or decided by) the user. The action is
-- stored whole, so what is approved is exactly what was shown.
CREATE TABLE approvals (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    tool            TEXT NOT NULL,
    arguments       TEXT NOT NULL,
    action          TEXT NOT NULL,
    status          TEXT NOT NULL,
    result          TEXT NOT NULL DEFAULT '',
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    decided_at      BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX approvals_by_user ON approvals (org_id, user_id, created_at);
