-- The control database: one schema for PostgreSQL and SQLite. Only types both read the same
-- way are used (TEXT, BIGINT; times are Unix milliseconds), so the repositories run the same
-- statements on both.

CREATE TABLE organizations (
    id          TEXT PRIMARY KEY,
    created_at  BIGINT NOT NULL
);

CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    created_at  BIGINT NOT NULL
);

CREATE TABLE members (
    org_id      TEXT NOT NULL REFERENCES organizations (id),
    user_id     TEXT NOT NULL REFERENCES users (id),
    role        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (org_id, user_id)
);

CREATE TABLE workspaces (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES organizations (id),
    name          TEXT NOT NULL,
    plan          TEXT NOT NULL,
    status        TEXT NOT NULL,
    status_reason TEXT NOT NULL DEFAULT '',
    version       BIGINT NOT NULL,
    created_by    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
-- A name is taken until its workspace is deleted.
CREATE UNIQUE INDEX workspaces_live_name ON workspaces (org_id, name) WHERE status <> 'deleted';

CREATE TABLE workspace_groups (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces (id),
    name          TEXT NOT NULL,
    parent_id     TEXT REFERENCES workspace_groups (id),
    created_at    BIGINT NOT NULL,
    UNIQUE (workspace_id, name)
);

CREATE TABLE group_members (
    group_id    TEXT NOT NULL REFERENCES workspace_groups (id),
    user_id     TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (group_id, user_id)
);

CREATE TABLE projects (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces (id),
    name          TEXT NOT NULL,
    status        TEXT NOT NULL,
    status_reason TEXT NOT NULL DEFAULT '',
    version       BIGINT NOT NULL,
    created_by    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE UNIQUE INDEX projects_live_name ON projects (workspace_id, name) WHERE status <> 'deleted';

-- Long operations: written in the same transaction as the change that asks for them (the
-- outbox), claimed by a worker under a lease, retried with backoff.
CREATE TABLE tasks (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL,
    kind          TEXT NOT NULL,
    target_id     TEXT NOT NULL,
    status        TEXT NOT NULL,
    attempts      BIGINT NOT NULL DEFAULT 0,
    max_attempts  BIGINT NOT NULL,
    run_after     BIGINT NOT NULL,
    lease_until   BIGINT NOT NULL DEFAULT 0,
    last_error    TEXT NOT NULL DEFAULT '',
    steps_done    TEXT NOT NULL DEFAULT '',
    requested_by  TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX tasks_runnable ON tasks (status, run_after);
CREATE INDEX tasks_target ON tasks (target_id);

-- A create sent again with the same key gets the first answer back.
CREATE TABLE idempotency_keys (
    org_id        TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    status_code   BIGINT NOT NULL,
    response      TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (org_id, user_id, key)
);

-- Audit records of every change, written with the change and relayed to the audit log.
CREATE TABLE audit_outbox (
    id            TEXT PRIMARY KEY,
    record        TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    sent_at       BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX audit_outbox_unsent ON audit_outbox (sent_at, created_at);
