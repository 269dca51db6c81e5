//! The control API's part of the OpenAPI document: workspaces, projects and tasks.

use serde_json::{Value, json};

fn path_param(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" }, "description": description })
}

fn query(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "query", "required": false, "schema": { "type": "string" }, "description": description })
}

fn header(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "header", "required": false, "schema": { "type": "string" }, "description": description })
}

fn err() -> Value {
    json!({ "$ref": "#/components/responses/Error" })
}

/// `{data, meta}` with `data` of `schema`.
fn envelope(description: &str, data: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "type": "object", "required": ["data", "meta"],
        "properties": { "data": data, "meta": { "type": "object", "properties": {
            "task": { "$ref": "#/components/schemas/TaskRef" }, "limit": { "type": "integer" }, "next_cursor": { "type": ["string", "null"] } } } } } } } })
}

fn op(summary: &str, params: Vec<Value>, body: Option<Value>, ok: (&str, Value), errors: &[&str]) -> Value {
    let mut responses = serde_json::Map::new();
    responses.insert(ok.0.to_owned(), ok.1);
    for code in errors {
        responses.insert((*code).to_owned(), err());
    }
    let mut o = json!({ "summary": summary, "security": [{ "bearer": [] }], "parameters": params, "responses": responses });
    if let Some(schema) = body {
        o["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": schema } } });
    }
    o
}

fn fn_params() -> Vec<Value> {
    vec![path_param("ws", "Workspace name."), path_param("project", "Project name."), path_param("function", "Function name.")]
}

pub(crate) fn paths() -> Vec<(&'static str, Value)> {
    let ws = || path_param("ws", "Workspace name.");
    let page = || vec![query("limit", "1–200, default 50."), query("cursor", "`meta.next_cursor` of the previous page.")];
    let idem = || header("Idempotency-Key", "The same key and body answer the first response again (`Idempotent-Replayed: true`); another body is 409.");
    let workspace = json!({ "$ref": "#/components/schemas/Workspace" });
    let project = json!({ "$ref": "#/components/schemas/Project" });
    let list = |s: &Value| json!({ "type": "array", "items": s });
    vec![
        (
            "/api/v1/workspaces",
            json!({
                "get": op("Workspaces the caller may see (organisation admins: all of the organisation's)", page(), None, ("200", envelope("A page.", list(&workspace))), &["400", "401"]),
                "post": op("Create a workspace (organisation admins); provisioning is `meta.task`", vec![idem()],
                    Some(json!({ "type": "object", "required": ["name"], "additionalProperties": false, "properties": { "name": { "type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$" }, "plan": { "enum": ["shared", "dedicated"], "default": "shared" } } })),
                    ("201", envelope("Created; status pending.", workspace.clone())), &["400", "401", "403", "409", "413"]),
            }),
        ),
        (
            "/api/v1/workspaces/{ws}",
            json!({
                "get": op("A workspace (ETag: its version)", vec![ws()], None, ("200", envelope("The workspace.", workspace.clone())), &["401", "404"]),
                "patch": op("Change the plan (organisation admins); needs the version read (If-Match or `version`)", vec![ws(), header("If-Match", "The ETag read.")],
                    Some(json!({ "type": "object", "required": ["plan"], "additionalProperties": false, "properties": { "plan": { "enum": ["shared", "dedicated"] }, "version": { "type": "integer" } } })),
                    ("202", envelope("Updating; follow `meta.task`.", workspace.clone())), &["400", "401", "403", "404", "409"]),
                "delete": op("Delete the workspace and everything provisioned for it (organisation admins)", vec![ws()], None, ("202", envelope("Deleting; follow `meta.task`.", workspace.clone())), &["401", "403", "404", "409"]),
            }),
        ),
        (
            "/api/v1/workspaces/{ws}/groups/mine",
            json!({ "get": op("The caller's groups in the workspace, flattened upwards (`claim`: as the OIDC groups claim carries them)", vec![ws()], None,
                ("200", envelope("Groups.", json!({ "type": "object", "properties": { "groups": { "type": "array", "items": { "type": "string" } }, "claim": { "type": "array", "items": { "type": "string" } } } }))), &["401", "404"]) }),
        ),
        (
            "/api/v1/workspaces/{ws}/groups",
            json!({
                "get": op("Groups of the workspace with parents and direct members", vec![ws()], None, ("200", envelope("Groups.", json!({ "type": "array" }))), &["401", "404"]),
                "post": op("Create a group (workspace admins); its members are in its parent too", vec![ws()],
                    Some(json!({ "type": "object", "required": ["name"], "additionalProperties": false, "properties": { "name": { "type": "string" }, "parent": { "type": "string", "default": "WSUsers" } } })),
                    ("201", envelope("Created.", json!({ "type": "object" }))), &["400", "401", "403", "404", "409"]),
            }),
        ),
        (
            "/api/v1/workspaces/{ws}/groups/{group}",
            json!({ "delete": op("Delete a group without subgroups (not WSAdmins or WSUsers)", vec![ws(), path_param("group", "Group name.")], None, ("204", json!({ "description": "Deleted." })), &["401", "403", "404", "409"]) }),
        ),
        (
            "/api/v1/workspaces/{ws}/groups/{group}/members/{user}",
            json!({
                "put": op("Add a member", vec![ws(), path_param("group", "Group name."), path_param("user", "User (`sub`).")], None, ("204", json!({ "description": "Member." })), &["400", "401", "403", "404"]),
                "delete": op("Remove a member (WSAdmins keeps at least one)", vec![ws(), path_param("group", "Group name."), path_param("user", "User (`sub`).")], None, ("204", json!({ "description": "Not a member." })), &["401", "403", "404", "409"]),
            }),
        ),
        (
            "/api/v1/workspaces/{ws}/projects",
            json!({
                "get": op("Projects of a workspace", { let mut p = page(); p.insert(0, ws()); p }, None, ("200", envelope("A page.", list(&project))), &["400", "401", "404"]),
                "post": op("Create a project (a namespace in the workspace's vCluster with the plan's quota)", vec![ws(), idem()],
                    Some(json!({ "type": "object", "required": ["name"], "additionalProperties": false, "properties": { "name": { "type": "string" } } })),
                    ("201", envelope("Created; status pending.", project.clone())), &["400", "401", "404", "409", "413"]),
            }),
        ),
        (
            "/api/v1/workspaces/{ws}/projects/{project}",
            json!({
                "get": op("A project", vec![ws(), path_param("project", "Project name.")], None, ("200", envelope("The project.", project.clone())), &["401", "404"]),
                "delete": op("Delete a project (workspace admins)", vec![ws(), path_param("project", "Project name.")], None, ("202", envelope("Deleting.", project)), &["401", "403", "404", "409"]),
            }),
        ),
        (
            "/api/v1/workspaces/{ws}/backup-storages",
            json!({
                "get": op("Backup storages of a Dedicated workspace (workspace admins)", vec![ws()], None, ("200", envelope("Storages.", list(&json!({ "$ref": "#/components/schemas/BackupStorage" })))), &["401", "403", "404"]),
                "post": op("Add a backup storage; credentials stay in the named Secret", vec![ws()],
                    Some(json!({ "type": "object", "required": ["name", "bucket", "credentials_secret"], "additionalProperties": false, "properties": { "name": { "type": "string" }, "kind": { "enum": ["s3", "gcs"] }, "bucket": { "type": "string" }, "endpoint": { "type": "string" }, "region": { "type": "string" }, "credentials_secret": { "type": "string" } } })),
                    ("201", envelope("Created.", json!({ "$ref": "#/components/schemas/BackupStorage" }))), &["400", "401", "403", "404", "409"]),
            }),
        ),
        (
            "/api/v1/workspaces/{ws}/backup-policies",
            json!({
                "get": op("Backup policies (403 plan_not_allowed on Shared)", vec![ws()], None, ("200", envelope("Policies.", list(&json!({ "$ref": "#/components/schemas/BackupPolicy" })))), &["401", "403", "404"]),
                "post": op("Create a policy: a CronJob in the workspace's namespace", vec![ws(), idem()],
                    Some(json!({ "type": "object", "required": ["name", "storage", "schedule"], "additionalProperties": false, "properties": { "name": { "type": "string" }, "storage": { "type": "string" }, "schedule": { "type": "string", "description": "CronJob schedule: five fields or @daily-style." }, "kind": { "enum": ["full", "incremental", "application"] }, "retention_count": { "type": "integer", "minimum": 1, "maximum": 1000 }, "encrypted": { "type": "boolean", "default": true } } })),
                    ("201", envelope("Created; applying is `meta.task`.", json!({ "$ref": "#/components/schemas/BackupPolicy" }))), &["400", "401", "403", "404", "409"]),
            }),
        ),
        (
            "/api/v1/workspaces/{ws}/backup-policies/{policy}",
            json!({
                "get": op("A backup policy", vec![ws(), path_param("policy", "Policy name.")], None, ("200", envelope("The policy.", json!({ "$ref": "#/components/schemas/BackupPolicy" }))), &["401", "403", "404"]),
                "delete": op("Delete a policy and its CronJob (its runs are kept)", vec![ws(), path_param("policy", "Policy name.")], None, ("202", envelope("Deleting.", json!({ "$ref": "#/components/schemas/BackupPolicy" }))), &["401", "403", "404", "409"]),
            }),
        ),
        (
            "/api/v1/workspaces/{ws}/backup-policies/{policy}/runs",
            json!({
                "get": op("Runs of a policy, newest first (200 at most)", vec![ws(), path_param("policy", "Policy name.")], None, ("200", envelope("Runs.", list(&json!({ "$ref": "#/components/schemas/BackupRun" })))), &["401", "403", "404"]),
                "post": op("Back up now: a Job followed to its end, then retention applied", vec![ws(), path_param("policy", "Policy name.")], None, ("202", envelope("Running; follow `meta.task`.", json!({ "$ref": "#/components/schemas/BackupRun" }))), &["401", "403", "404"]),
            }),
        ),
        (
            "/api/v1/workspaces/{ws}/backup-runs/{run}/restore",
            json!({ "post": op("Restore from a succeeded backup (a long operation)", vec![ws(), path_param("run", "Backup run id.")], None, ("202", envelope("Restoring; follow `meta.task`.", json!({ "$ref": "#/components/schemas/BackupRun" }))), &["401", "403", "404", "409"]) }),
        ),
        (
            "/api/v1/workspaces/{ws}/projects/{project}/functions",
            json!({
                "get": op("Functions of a project", vec![ws(), path_param("project", "Project name.")], None, ("200", envelope("Functions.", list(&json!({ "$ref": "#/components/schemas/Function" })))), &["401", "404"]),
                "post": op("Create a function (version 1 and its triggers) on Fission (code) or Knative (an image)", vec![ws(), path_param("project", "Project name."), idem()],
                    Some(json!({ "type": "object", "required": ["name", "runtime"], "additionalProperties": false, "properties": {
                        "name": { "type": "string" }, "runtime": { "enum": ["python", "nodejs", "go", "container"] }, "provider": { "enum": ["fission", "knative"], "default": "fission" },
                        "code": { "type": "string", "maxLength": 262144 }, "image": { "type": "string" }, "entrypoint": { "type": "string", "default": "main" },
                        "env": { "type": "object", "additionalProperties": { "type": "string" }, "description": "Values are never returned." },
                        "triggers": { "type": "array", "items": { "$ref": "#/components/schemas/Trigger" } } } })),
                    ("201", envelope("Created; deploying is `meta.task`.", json!({ "$ref": "#/components/schemas/Function" }))), &["400", "401", "404", "409", "413"]),
            }),
        ),
        (
            "/api/v1/workspaces/{ws}/projects/{project}/functions/{function}",
            json!({
                "get": op("A function with its versions (env names only) and triggers", fn_params(), None, ("200", envelope("The function.", json!({ "$ref": "#/components/schemas/Function" }))), &["401", "404"]),
                "delete": op("Delete a function and all of its objects", fn_params(), None, ("202", envelope("Deleting.", json!({ "$ref": "#/components/schemas/Function" }))), &["401", "404", "409"]),
            }),
        ),
        (
            "/api/v1/workspaces/{ws}/projects/{project}/functions/{function}/versions",
            json!({ "post": op("Deploy a new version (code or image, entrypoint, env)", fn_params(), Some(json!({ "type": "object", "additionalProperties": false, "properties": { "code": { "type": "string" }, "image": { "type": "string" }, "entrypoint": { "type": "string" }, "env": { "type": "object" } } })),
                ("202", envelope("Deploying.", json!({ "$ref": "#/components/schemas/Function" }))), &["400", "401", "404", "409"]) }),
        ),
        (
            "/api/v1/workspaces/{ws}/projects/{project}/functions/{function}/rollback",
            json!({ "post": op("Make an earlier version live again", fn_params(), Some(json!({ "type": "object", "required": ["version"], "additionalProperties": false, "properties": { "version": { "type": "integer" } } })),
                ("202", envelope("Deploying.", json!({ "$ref": "#/components/schemas/Function" }))), &["400", "401", "404", "409"]) }),
        ),
        (
            "/api/v1/workspaces/{ws}/projects/{project}/functions/{function}/invoke",
            json!({ "post": op("Call the function with the body (≤ 1 MiB); the call is recorded", fn_params(), None,
                ("200", envelope("`invocation` (status ok | error | unreachable, http_status, duration_ms), `content_type`, `body`.", json!({ "type": "object" }))), &["401", "404", "409", "413"]) }),
        ),
        (
            "/api/v1/workspaces/{ws}/projects/{project}/functions/{function}/invocations",
            json!({ "get": op("Recent calls, newest first", { let mut p = fn_params(); p.push(query("limit", "1–200, default 50.")); p }, None, ("200", envelope("Invocations.", json!({ "type": "array" }))), &["400", "401", "404"]) }),
        ),
        (
            "/api/v1/workspaces/{ws}/projects/{project}/cronjobs",
            json!({ "get": op("The project's CronJobs, read from the workspace's vCluster", vec![ws(), path_param("project", "Project name.")], None,
                ("200", envelope("CronJobs: name, schedule, suspend, last_schedule_time, active.", json!({ "type": "array" }))), &["401", "404", "503"]) }),
        ),
        (
            "/api/v1/workspaces/{ws}/projects/{project}/cronjobs/{cronjob}/executions",
            json!({ "get": op("What the CronJob ran, newest first: each Job seen is recorded, so the history outlives the Jobs", vec![ws(), path_param("project", "Project name."), path_param("cronjob", "CronJob name.")], None,
                ("200", envelope("Executions: job, status (running | succeeded | failed), started, finished, message.", json!({ "type": "array" }))), &["401", "404", "503"]) }),
        ),
        (
            "/api/v1/ai/chat",
            json!({ "post": op("Ask the assistant: the turn streams as server-sent events (`conversation`, `text`, `tool_call`, `tool_result`, `answer` with citations and notes, `error`); closing the stream cancels it", vec![],
                Some(json!({ "type": "object", "required": ["message"], "additionalProperties": false, "properties": {
                    "message": { "type": "string", "maxLength": 8000 }, "conversation_id": { "type": "string" },
                    "workspace": { "type": "string", "description": "What the user is looking at (a default for the tools, not a grant)." }, "project": { "type": "string" } } })),
                ("200", json!({ "description": "text/event-stream.", "content": { "text/event-stream": { "schema": { "type": "string" } } } })), &["400", "401", "403", "404", "413", "503"]) }),
        ),
        (
            "/api/v1/ai/conversations",
            json!({ "get": op("The caller's conversations, newest first", vec![], None, ("200", envelope("Conversations.", json!({ "type": "array" }))), &["401"]) }),
        ),
        (
            "/api/v1/ai/conversations/{id}",
            json!({
                "get": op("A conversation's messages (tool results shown by size only)", vec![path_param("id", "Conversation id.")], None, ("200", envelope("The conversation.", json!({ "type": "object" }))), &["401", "404"]),
                "delete": op("Delete a conversation", vec![path_param("id", "Conversation id.")], None, ("204", json!({ "description": "Deleted." })), &["401", "404"]),
            }),
        ),
        (
            "/api/v1/ai/approvals/{id}",
            json!({
                "get": op("A write action the assistant proposed: the exact action, its status (pending, approved, executed, failed, denied, expired)", vec![path_param("id", "Approval id.")], None, ("200", envelope("The approval.", json!({ "type": "object" }))), &["401", "404"]),
                "post": op("Decide on it: approving runs exactly the stored action as the caller; deny, or a late decision, runs nothing", vec![path_param("id", "Approval id.")],
                    Some(json!({ "type": "object", "required": ["decision"], "additionalProperties": false, "properties": { "decision": { "enum": ["approve", "deny"] } } })),
                    ("200", envelope("The approval as decided (and its result).", json!({ "type": "object" }))), &["400", "401", "404", "409"]),
            }),
        ),
        (
            "/api/v1/tasks/{id}",
            json!({ "get": op("A long operation: status, attempts, steps done, last error", vec![path_param("id", "Task id.")], None, ("200", envelope("The task.", json!({ "$ref": "#/components/schemas/Task" }))), &["401", "404"]) }),
        ),
        (
            "/api/v1/tasks/{id}/events",
            json!({ "get": op("The task as server-sent events: `task` at each change, `end` when finished", vec![path_param("id", "Task id.")], None,
                ("200", json!({ "description": "text/event-stream.", "content": { "text/event-stream": { "schema": { "type": "string" } } } })), &["401", "404"]) }),
        ),
    ]
}

pub(crate) fn schemas() -> Vec<(&'static str, Value)> {
    let status = json!({ "enum": ["pending", "provisioning", "running", "updating", "deleting", "deleted", "error"] });
    let common = |extra: Value| {
        let mut props = json!({ "id": { "type": "string" }, "name": { "type": "string" }, "status": status, "status_reason": { "type": "string" },
            "version": { "type": "integer", "description": "Bumped by each change asked for; send it back to update." },
            "created_by": { "type": "string" }, "created_at": { "type": "integer", "description": "Unix ms." }, "updated_at": { "type": "integer" } });
        if let (Some(p), Some(e)) = (props.as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        json!({ "type": "object", "properties": props })
    };
    vec![
        ("Workspace", common(json!({ "org_id": { "type": "string" }, "plan": { "enum": ["shared", "dedicated"] } }))),
        ("Project", common(json!({ "workspace": { "type": "string" } }))),
        (
            "TaskRef",
            json!({ "type": "object", "properties": { "id": { "type": "string" }, "kind": { "type": "string" }, "status": { "type": "string" }, "url": { "type": "string" } } }),
        ),
        (
            "Task",
            json!({ "type": "object", "properties": { "id": { "type": "string" }, "kind": { "type": "string" }, "target_id": { "type": "string" },
                "status": { "enum": ["queued", "running", "succeeded", "failed"] }, "attempts": { "type": "integer" }, "max_attempts": { "type": "integer" },
                "last_error": { "type": "string" }, "steps_done": { "type": "array", "items": { "type": "string" } }, "requested_by": { "type": "string" },
                "created_at": { "type": "integer" }, "updated_at": { "type": "integer" } } }),
        ),
    ]
}
