//! Assembling and running the server, and the shutdown sequence:
//! signal → stop accepting → finish in-flight requests (grace period) → store buffered rows
//! (same grace period) → sync and close the write-ahead log → exit. Each step is logged.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use ingest::config::CredentialConfig;
use ingest::http::{ApiError, IngestState};
use ingest::metrics::IngestMetrics;
use ingest::pipeline::Pipeline;
use ingest::wal::WalConfig;
use prometheus_client::registry::Registry;
use schemas::ErrorCode;
use storage::Store;
use storage::clickhouse::{ClickHouseConfig, ClickHouseStore};
use storage::embedded::{EmbeddedConfig, EmbeddedStore};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::config::{Backend, Config};

pub fn run(config: Config) -> anyhow::Result<()> {
    init_tracing(&config.log_level);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(serve(config))
}

pub fn migrate(config: Config) -> anyhow::Result<()> {
    init_tracing(&config.log_level);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        match config.storage.backend {
            Backend::Embedded => println!("the embedded store needs no migration"),
            Backend::ClickHouse => {
                build_store(&config).await?.migrate().await.context("applying the ClickHouse schema")?;
                println!("schema is up to date in {}", config.storage.clickhouse.database);
            }
        }
        let db = control::db::Db::connect(&config.control.database_url(&config.data_dir), 2).await?;
        db.migrate().await.context("applying the control database's migrations")?;
        println!("control database ({}) is up to date", db.kind());
        Ok(())
    })
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}

async fn build_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let s = &config.storage;
    Ok(match s.backend {
        Backend::Embedded => {
            let mut c = EmbeddedConfig::new(config.data_dir.join("store"));
            c.retention = s.retention.to_retention();
            c.compact_min_files = s.compact_min_files;
            Arc::new(Arc::new(EmbeddedStore::open(c).context("opening the embedded store")?))
        }
        Backend::ClickHouse => {
            let ch = &s.clickhouse;
            Arc::new(
                ClickHouseStore::new(ClickHouseConfig {
                    url: ch.url.clone(),
                    user: ch.user.clone(),
                    password: ch.password.clone(),
                    database: ch.database.clone(),
                    cluster: ch.cluster.clone(),
                    retention: s.retention.to_retention(),
                    insert_timeout: Duration::from_secs(ch.insert_timeout_secs),
                })
                .context("storage.clickhouse")?,
            )
        }
    })
}

/// A token of the development issuer for `config`'s data directory.
pub fn development_token(config: &Config, claims: &auth::DevClaims) -> anyhow::Result<String> {
    let settings = config.auth.validate(&config.data_dir).map_err(anyhow::Error::msg)?;
    let auth::IssuerMode::Development { secret_file } = &settings.mode else {
        bail!("auth.issuer is set: tokens come from that identity provider, not from `dataplane token`");
    };
    if claims.user.is_empty() || claims.org.is_empty() {
        bail!("--user and --org must not be empty");
    }
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("data_dir: cannot create {}", config.data_dir.display()))?;
    let issuer = auth::DevIssuer::load_or_create(secret_file, &settings.audience).context("reading the development issuer's secret")?;
    Ok(issuer.mint(claims)?)
}

/// The query side's state: token verification, authorisation, storage, limits, audit.
fn query_state(config: &Config, listen: SocketAddr, store: Arc<dyn Store>, audit: Arc<dyn query::audit::AuditSink>) -> anyhow::Result<query::QueryState> {
    let settings = config.auth.validate(&config.data_dir).map_err(anyhow::Error::msg)?;
    if matches!(settings.mode, auth::IssuerMode::Development { .. }) && !listen.ip().is_loopback() {
        bail!("auth.issuer: not set, so the development issuer would be used; a server listening beyond loopback needs an OIDC issuer");
    }
    let authorizer: Arc<dyn auth::Authorizer> = match config.auth.authorizer {
        auth::AuthorizerKind::Kubernetes => Arc::new(auth::SubjectAccessReviewer::new(&config.auth.kubernetes).map_err(anyhow::Error::msg)?),
        auth::AuthorizerKind::Static => Arc::new(match &settings.policy_file {
            Some(path) => auth::StaticPolicy::load(path).map_err(anyhow::Error::msg)?,
            None => auth::StaticPolicy::members_read_all(),
        }),
    };
    let gate = auth::Gate::new(authorizer, settings.operator_role.clone(), settings.audit_roles.clone());
    let verifier = auth::TokenVerifier::new(settings).map_err(|e| anyhow::anyhow!("auth: {e}"))?;
    let prometheus = query::prom::Upstream::new(&config.prometheus).map_err(anyhow::Error::msg)?;
    Ok(query::QueryState::new(verifier, gate, store, config.query.clone()).with_audit(audit).with_prometheus(prometheus))
}

/// The control plane: its database (migrated here), REST API, task worker and audit relay.
async fn control_plane(
    config: &Config,
    listen: SocketAddr,
    pipeline: Pipeline,
    verifier: auth::TokenVerifier,
) -> anyhow::Result<(Router, control::repo::Repo, watch::Sender<bool>, Vec<tokio::task::JoinHandle<()>>)> {
    let c = &config.control;
    c.validate().map_err(anyhow::Error::msg)?;
    let url = c.database_url(&config.data_dir);
    let db = control::db::Db::connect(&url, c.max_connections).await?;
    db.migrate().await?;
    tracing::info!(database = db.kind(), "control database ready");
    let repo = control::repo::Repo::new(db, c.worker.max_attempts);
    let issuer = if config.auth.issuer.is_empty() { auth::DEV_ISSUER.to_owned() } else { config.auth.issuer.clone() };
    let provisioner = control::provider::from_config(&c.kubernetes).map_err(anyhow::Error::msg)?;
    if c.kubernetes.host_url.is_empty() && !listen.ip().is_loopback() {
        tracing::warn!("control.kubernetes.host_url is not set: workspaces are planned, not provisioned");
    }
    let (wake_worker, wake_audit) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let worker = control::worker::Worker {
        repo: repo.clone(),
        provisioner: provisioner.clone(),
        oidc: control::manifests::Oidc { issuer, client_id: c.oidc_client_id.clone() },
        config: c.worker.clone(),
        wake: wake_worker.clone(),
        master_key: control::backups::MasterKey::load_or_create(&c.master_key_path(&config.data_dir))
            .map_err(|e| anyhow::anyhow!("control.master_key_file: {e}"))?,
        backup_image: c.backup_image.clone(),
    };
    let tasks = vec![
        tokio::spawn(worker.clone().sync_scheduled_runs(stop_rx.clone())),
        tokio::spawn(worker.run(stop_rx.clone())),
        tokio::spawn(control::worker::relay_audit(repo.clone(), Arc::new(PipelineDelivery(pipeline)), wake_audit.clone(), stop_rx)),
    ];
    let http = control::function_providers::http_client(&c.functions).map_err(anyhow::Error::msg)?;
    let state = control::api::ControlState {
        repo,
        verifier,
        admin_role: c.admin_role.clone(),
        wake_worker,
        wake_audit,
        provisioner,
        http,
        functions: c.functions.clone(),
    };
    let repo = state.repo.clone();
    Ok((control::api::router(state), repo, stop_tx, tasks))
}

/// The assistant: its models, the sandbox's gate (audited into the same pipeline) and the chat
/// API; tools read through the query service as the asking user.
fn assistant_router(config: &Config, queries: query::QueryState, repo: control::repo::Repo, audit: Arc<dyn schemas::AuditSink>) -> anyhow::Result<Router> {
    let a = &config.assistant;
    let models = aiops::Models::from_config(a).map_err(anyhow::Error::msg)?;
    // One verifier (one key set, one token cache) for every API of the server.
    let verifier = queries.verifier.clone();
    let gate = Arc::new(sandbox::ToolGate::new(sandbox::Redactor::new(a.redaction), Some(audit)));
    let state = aiops::api::AssistantState {
        verifier,
        models,
        gate,
        queries: query::agent::AgentQueries::new(queries),
        control: Some(repo),
        admin_role: config.control.admin_role.clone(),
        config: Arc::new(a.clone()),
        registry: aiops::catalog::registry(&aiops::k8s::WorkspaceClusters::new(&config.auth.kubernetes), a.write_tools, validator(a)),
    };
    Ok(aiops::api::router(state))
}

/// The jailed manifest checker: this binary's `manifest validate`, in the sandbox's jail. None
/// (and no `manifest.validate` tool) where the jail cannot be built.
fn validator(a: &aiops::AssistantConfig) -> Option<Arc<aiops::manifest_tools::Validator>> {
    let exe = std::env::current_exe().map_err(|e| tracing::warn!("manifest.validate is off: this binary's path: {e}")).ok()?;
    match sandbox::jail::Jail::new(a.jail.clone()) {
        Ok(jail) => Some(Arc::new(aiops::manifest_tools::Validator::new(jail, exe))),
        Err(e) => {
            tracing::warn!("manifest.validate is off: {e}");
            None
        }
    }
}

/// The control plane's audit outbox is relayed into the same pipeline; a record leaves the
/// outbox once the write-ahead log holds it.
struct PipelineDelivery(Pipeline);

impl control::worker::AuditDelivery for PipelineDelivery {
    fn deliver(&self, records: Vec<schemas::AuditRecord>) -> futures_util::future::BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.0.submit(schemas::Rows::AuditLogs(records)).await.map(|_| ()).map_err(|e| e.to_string()) })
    }
}

/// Audit records of queries go through the ingest pipeline: durable in the write-ahead log,
/// then stored like any other row. Submitting runs beside the answer, never in front of it, and
/// in batches: a record per query submitted alone cost each query a write-ahead-log commit
/// (its fsync's wake-ups took about 0.25 ms from an answer on two cores), and a busy server one
/// commit per query.
#[derive(Clone)]
struct PipelineAudit(tokio::sync::mpsc::Sender<schemas::AuditRecord>);

/// How long a batch of audit records waits for more, and the most it holds.
const AUDIT_LINGER: Duration = Duration::from_millis(50);
const AUDIT_BATCH: usize = 1_000;
/// Records waiting for the pipeline before new ones are dropped (with a warning): a pipeline
/// stalled by a storage outage must not grow memory without bound.
const AUDIT_QUEUE: usize = 100_000;

impl query::audit::AuditSink for PipelineAudit {
    fn record(&self, record: schemas::AuditRecord) {
        if self.0.try_send(record).is_err() {
            tracing::warn!("an audit record could not be logged: {AUDIT_QUEUE} are waiting for the pipeline");
        }
    }
}

impl PipelineAudit {
    /// The sink, and the task that submits its batches until `stop`, then what is queued.
    fn start(pipeline: Pipeline, stop: Arc<Notify>) -> (PipelineAudit, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = tokio::sync::mpsc::channel(AUDIT_QUEUE);
        let task = tokio::spawn(async move {
            let submit = |batch: Vec<schemas::AuditRecord>| {
                let pipeline = pipeline.clone();
                async move {
                    if let Err(e) = pipeline.submit(schemas::Rows::AuditLogs(batch)).await {
                        tracing::warn!(error = %e, "audit records could not be logged");
                    }
                }
            };
            loop {
                let first = tokio::select! {
                    r = rx.recv() => match r { Some(r) => r, None => return },
                    _ = stop.notified() => break,
                };
                let mut batch = vec![first];
                let deadline = tokio::time::Instant::now() + AUDIT_LINGER;
                while batch.len() < AUDIT_BATCH {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(r)) => batch.push(r),
                        _ => break,
                    }
                }
                submit(batch).await;
            }
            // Stopping: what is queued goes in as it is.
            let mut batch = Vec::new();
            while let Ok(r) = rx.try_recv() {
                batch.push(r);
            }
            if !batch.is_empty() {
                submit(batch).await;
            }
        });
        (PipelineAudit(tx), task)
    }
}

/// A development credential for a loopback server with none configured: allowed every
/// workspace, its token kept in the data directory so restarts reuse it.
fn development_credential(data_dir: &Path) -> anyhow::Result<CredentialConfig> {
    let path = data_dir.join("dev-ingest-token");
    let token = match std::fs::read_to_string(&path) {
        Ok(t) if t.trim().len() >= 16 => t.trim().to_owned(),
        _ => {
            let mut bytes = [0u8; 24];
            std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
            let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            std::fs::write(&path, &token).with_context(|| format!("writing {}", path.display()))?;
            token
        }
    };
    Ok(CredentialConfig { name: "development".into(), token, org: None, workspaces: vec!["*".into()], limits: Default::default() })
}

async fn serve(mut config: Config) -> anyhow::Result<()> {
    let listen: SocketAddr = config.listen.parse().with_context(|| format!("listen: `{}` is not an address like 127.0.0.1:8080", config.listen))?;
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("data_dir: cannot create {}", config.data_dir.display()))?;
    let mut dev_token = None;
    if config.ingest.credentials.is_empty() {
        if !listen.ip().is_loopback() {
            bail!("ingest.credentials: none configured; a server listening beyond loopback needs at least one");
        }
        let c = development_credential(&config.data_dir)?;
        dev_token = Some(c.token.clone());
        config.ingest.credentials.push(c);
    }
    let mut settings = config.ingest.validate()?;
    settings.pipeline.dead_letter_dir = config.data_dir.join("dead-letter");
    let store = build_store(&config).await?;
    // The schema must be in place before anything is written. A storage that refuses it is a
    // configuration error (stop here); one that cannot be reached is an outage: start anyway,
    // accept into the write-ahead log, and write once the schema could be applied.
    let schema_pending = match store.migrate().await {
        Ok(()) => false,
        Err(e) if e.is_transient() => {
            tracing::warn!(error = %e, url = %config.storage.clickhouse.url, "storage not reachable at start; accepting into the write-ahead log until it is");
            true
        }
        Err(e) => return Err(e).with_context(|| format!("applying the schema at storage.clickhouse.url = {}", config.storage.clickhouse.url)),
    };

    let mut registry = Registry::default();
    let metrics = Arc::new(IngestMetrics::new(&mut registry));
    let wal = WalConfig {
        dir: config.data_dir.join("wal"),
        segment_bytes: settings.wal_segment_bytes,
        // The pipeline refuses new rows at its cap; the log's own hard cap leaves room above it
        // for batch markers and done notes, which must never be refused.
        max_disk_bytes: settings.pipeline.wal_max_disk_bytes.saturating_mul(2).max(1 << 30),
        max_batch_bytes: 8 << 20,
        replay_budget: None,
    };
    let (pipeline, report) = Pipeline::open(wal, store.clone(), settings.pipeline.clone(), metrics.clone()).context("opening the write-ahead log")?;
    tracing::info!(
        segments = report.segments,
        records = report.records,
        corrupt_regions = report.corrupt_regions,
        bytes_skipped = report.bytes_skipped,
        truncated_tail_bytes = report.truncated_tail_bytes,
        "write-ahead log recovered"
    );

    let state = IngestState {
        pipeline: pipeline.clone(),
        credentials: Arc::new(settings.credentials.clone()),
        tenancy: settings.tenancy.clone(),
        metrics,
        body_timeout: settings.body_timeout,
    };
    let registry = Arc::new(registry);
    let ops = Router::new()
        .route("/healthz", get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(|| async { axum::Json(schemas::openapi::document()) }))
        .with_state(Ops { pipeline: pipeline.clone(), registry });
    let stop_audit = Arc::new(Notify::new());
    let (audit, audit_task) = PipelineAudit::start(pipeline.clone(), stop_audit.clone());
    let queries = query_state(&config, listen, store.clone(), Arc::new(audit.clone()))?;
    let (control_router, control_repo, control_stop, control_tasks) = control_plane(&config, listen, pipeline.clone(), queries.verifier.clone()).await?;
    let assistant = assistant_router(&config, queries.clone(), control_repo, Arc::new(audit))?;
    let app = ingest::http::router(state.clone()).merge(query::router(queries)).merge(control_router).merge(assistant).merge(ops).fallback(not_found);

    let main_listener = TcpListener::bind(listen).await.with_context(|| format!("listen: cannot bind {listen}"))?;
    let main_addr = main_listener.local_addr()?;
    let mut listeners = vec![(main_listener, app)];
    let mut addrs = format!("http={main_addr}\n");
    if let Some(ch) = &settings.clickhouse_listen {
        let l = TcpListener::bind(ch).await.with_context(|| format!("ingest.clickhouse_listen: cannot bind {ch}"))?;
        addrs.push_str(&format!("clickhouse={}\n", l.local_addr()?));
        listeners.push((l, ingest::http::clickhouse_router(state).fallback(not_found)));
    }
    write_atomically(&config.data_dir.join("listen-addrs"), addrs.as_bytes())?;
    tracing::info!(addr = %main_addr, backend = ?config.storage.backend, "listening");
    println!("dataplane listening on http://{main_addr} ({:?} store, data in {})", config.storage.backend, config.data_dir.display());
    if let Some(token) = dev_token {
        println!("development ingest token (kept in {}): {token}", config.data_dir.join("dev-ingest-token").display());
    }
    if config.auth.issuer.is_empty() {
        println!("development query tokens: dataplane token --data-dir {} --user alice --org acme --workspace ws-a", config.data_dir.display());
    }

    let stop_flusher = Arc::new(Notify::new());
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let flusher = {
        let (p, stop, store) = (pipeline.clone(), stop_flusher.clone(), store.clone());
        tokio::spawn(async move {
            if schema_pending {
                tokio::select! {
                    () = migrate_until_applied(store.as_ref()) => {}
                    () = stop.notified() => return,
                }
            }
            p.run_flusher(stop, grace).await
        })
    };
    let maintenance = {
        let (store, every) = (store.clone(), Duration::from_secs(config.storage.maintenance_interval_secs.max(1)));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = store.maintain().await {
                    tracing::warn!(error = %e, "storage maintenance failed");
                }
            }
        })
    };

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // Every connection task holds a clone; when the last is gone, every connection has ended.
    let (open_tx, mut open_rx) = tokio::sync::mpsc::channel::<()>(1);
    let header_timeout = Duration::from_secs(config.header_timeout_secs.max(1));
    let mut accept_loops = Vec::new();
    for (listener, router) in listeners {
        accept_loops.push(tokio::spawn(accept_loop(listener, router, header_timeout, shutdown_rx.clone(), open_tx.clone())));
    }

    shutdown_signal().await;
    tracing::info!("shutdown: no longer accepting connections");
    let _ = shutdown_tx.send(true);
    for l in accept_loops {
        let _ = l.await;
    }
    drop(open_tx);
    if tokio::time::timeout(grace, open_rx.recv()).await.is_err() {
        tracing::warn!("shutdown: in-flight requests did not finish within the grace period");
    }
    let _ = control_stop.send(true);
    for t in control_tasks {
        if tokio::time::timeout(grace, t).await.is_err() {
            tracing::warn!("shutdown: the control worker did not stop within the grace period");
        }
    }
    // Audit records of the finished requests into the pipeline before it is drained.
    stop_audit.notify_one();
    if tokio::time::timeout(grace, audit_task).await.is_err() {
        tracing::warn!("shutdown: audit records were still being logged at the end of the grace period");
    }
    tracing::info!(unstored = pipeline.unstored_records(), "shutdown: storing buffered rows");
    stop_flusher.notify_one();
    let _ = flusher.await;
    maintenance.abort();
    pipeline.wal().close().await;
    tracing::info!(unstored = pipeline.unstored_records(), "shutdown complete");
    Ok(())
}

/// Retries the schema migration until it succeeds (storage was unreachable at start).
async fn migrate_until_applied(store: &dyn Store) {
    let mut wait = Duration::from_millis(200);
    loop {
        match store.migrate().await {
            Ok(()) => {
                tracing::info!("storage reachable; schema applied, writing buffered rows");
                return;
            }
            Err(e) => tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "schema migration failed; retrying"),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(10));
    }
}

/// Serves each accepted connection in its own task until shutdown, then lets in-flight
/// requests finish (`open` is held by every connection task).
async fn accept_loop(
    listener: TcpListener,
    router: Router,
    header_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
    open: tokio::sync::mpsc::Sender<()>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router.clone()))
                    // WebSocket (Loki's live tail) takes the connection over after the handshake.
                    .with_upgrades();
                let (mut stop, open) = (shutdown.clone(), open.clone());
                tokio::spawn(async move {
                    let _open = open;
                    let mut connection = std::pin::pin!(connection);
                    let ended = tokio::select! {
                        r = connection.as_mut() => r,
                        _ = async { let _ = stop.wait_for(|s| *s).await.map(|_| ()); } => {
                            connection.as_mut().graceful_shutdown();
                            connection.as_mut().await
                        }
                    };
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = shutdown.changed() => return,
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[derive(Clone)]
struct Ops {
    pipeline: Pipeline,
    registry: Arc<Registry>,
}

async fn readyz(State(ops): State<Ops>) -> Response {
    match ops.pipeline.ready() {
        Ok(()) => axum::Json(serde_json::json!({ "status": "ready" })).into_response(),
        Err(reason) => ApiError::new(ErrorCode::Unavailable, reason).into_response(),
    }
}

async fn metrics_text(State(ops): State<Ops>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &ops.registry) {
        Ok(()) => ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response(),
        Err(e) => ApiError::new(ErrorCode::Internal, format!("encoding metrics: {e}")).into_response(),
    }
}

async fn not_found() -> Response {
    ApiError::new(ErrorCode::NotFound, "no such endpoint; see the API reference in the README").into_response()
}
