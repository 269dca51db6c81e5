-- Serverless functions and backups.

CREATE TABLE functions (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces (id),
    project       TEXT NOT NULL,
    name          TEXT NOT NULL,
    runtime       TEXT NOT NULL,
    provider      TEXT NOT NULL,
    status        TEXT NOT NULL,
    status_reason TEXT NOT NULL DEFAULT '',
    active_version BIGINT NOT NULL DEFAULT 0,
    version       BIGINT NOT NULL,
    created_by    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE UNIQUE INDEX functions_live_name ON functions (workspace_id, project, name) WHERE status <> 'deleted';

CREATE TABLE function_versions (
    function_id   TEXT NOT NULL REFERENCES functions (id),
    number        BIGINT NOT NULL,
    code          TEXT NOT NULL,
    image         TEXT NOT NULL,
    entrypoint    TEXT NOT NULL,
    env           TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (function_id, number)
);

CREATE TABLE function_triggers (
    id            TEXT PRIMARY KEY,
    function_id   TEXT NOT NULL REFERENCES functions (id),
    -- The trigger's place in the function's list: its objects are named after it.
    position      BIGINT NOT NULL,
    kind          TEXT NOT NULL,
    spec          TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE function_invocations (
    id            TEXT PRIMARY KEY,
    function_id   TEXT NOT NULL REFERENCES functions (id),
    version       BIGINT NOT NULL,
    trigger_kind  TEXT NOT NULL,
    status        TEXT NOT NULL,
    duration_ms   BIGINT NOT NULL,
    http_status   BIGINT NOT NULL,
    error         TEXT NOT NULL DEFAULT '',
    invoked_by    TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE INDEX function_invocations_by_function ON function_invocations (function_id, created_at);

CREATE TABLE backup_storages (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces (id),
    name          TEXT NOT NULL,
    kind          TEXT NOT NULL,
    bucket        TEXT NOT NULL,
    endpoint      TEXT NOT NULL,
    region        TEXT NOT NULL,
    -- The name of the Secret holding the storage's credentials; the values are never stored here.
    credentials_secret TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    UNIQUE (workspace_id, name)
);

-- One data key per workspace, itself sealed (AES-256-GCM) by the server's master key.
CREATE TABLE workspace_keys (
    workspace_id  TEXT PRIMARY KEY REFERENCES workspaces (id),
    sealed_key    TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE backup_policies (
    id              TEXT PRIMARY KEY,
    workspace_id    TEXT NOT NULL REFERENCES workspaces (id),
    name            TEXT NOT NULL,
    storage_id      TEXT NOT NULL REFERENCES backup_storages (id),
    schedule        TEXT NOT NULL,
    kind            TEXT NOT NULL,
    retention_count BIGINT NOT NULL,
    encrypted       BIGINT NOT NULL,
    status          TEXT NOT NULL,
    version         BIGINT NOT NULL,
    created_by      TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE UNIQUE INDEX backup_policies_live_name ON backup_policies (workspace_id, name) WHERE status <> 'deleted';

CREATE TABLE backup_runs (
    id            TEXT PRIMARY KEY,
    policy_id     TEXT NOT NULL REFERENCES backup_policies (id),
    workspace_id  TEXT NOT NULL,
    status        TEXT NOT NULL,
    trigger_kind  TEXT NOT NULL,
    size_bytes    BIGINT NOT NULL DEFAULT 0,
    location      TEXT NOT NULL DEFAULT '',
    error         TEXT NOT NULL DEFAULT '',
    started_at    BIGINT NOT NULL,
    finished_at   BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX backup_runs_by_policy ON backup_runs (policy_id, started_at);

-- What the workload CronJobs of a project ran: kept here once seen, so the history outlives
-- the Jobs Kubernetes cleans up.
CREATE TABLE cronjob_executions (
    workspace_id  TEXT NOT NULL,
    project       TEXT NOT NULL,
    cronjob       TEXT NOT NULL,
    job           TEXT NOT NULL,
    status        TEXT NOT NULL,
    started       TEXT NOT NULL DEFAULT '',
    finished      TEXT NOT NULL DEFAULT '',
    message       TEXT NOT NULL DEFAULT '',
    recorded_at   BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, project, job)
);
CREATE INDEX cronjob_executions_by_job ON cronjob_executions (workspace_id, project, cronjob, recorded_at);
