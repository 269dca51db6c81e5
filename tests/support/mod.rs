//! Test support: the real `dataplane` binary started on a random port with fresh state, the
//! ClickHouse engine behind its HTTP adapter, fixtures from Loghub, and readers of what was
//! stored. Nothing here stands in for the code under test.

#![allow(dead_code)]

pub mod fixtures;
pub mod kube;
pub mod llm;
pub mod postgres;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use schemas::Table;
use storage::{ScanRequest, Store};

pub const TOKEN_ALL: &str = "host-shipper-token-0123456789";
pub const TOKEN_WS_A: &str = "acme-ws-a-token-0123456789ab";
pub const TOKEN_ACME: &str = "acme-a-and-b-token-012345678";

/// How the server under test is configured.
#[derive(Clone, Default)]
pub struct ServerOptions {
    pub clickhouse_url: Option<String>,
    /// Top-level keys added to the config file.
    pub extra_toml: String,
    /// `DATAPLANE_*` overrides for the server process.
    pub env: Vec<(String, String)>,
    pub data_dir: Option<PathBuf>,
}

impl ServerOptions {
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// A running `dataplane serve`.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub clickhouse_addr: String,
    pub data_dir: PathBuf,
    pub options: ServerOptions,
    _tmp: Option<Arc<tempfile::TempDir>>,
}

fn config_toml(o: &ServerOptions, data_dir: &Path) -> String {
    let storage = match &o.clickhouse_url {
        Some(url) => format!("[storage]\nbackend = \"clickhouse\"\n[storage.clickhouse]\nurl = \"{url}\"\ndatabase = \"hexabase\"\ninsert_timeout_secs = 5\n"),
        None => "[storage]\nbackend = \"embedded\"\ncompact_min_files = 1000000\n".into(),
    };
    format!(
        r#"listen = "127.0.0.1:0"
data_dir = "{dir}"
log_level = "warn"
shutdown_grace_secs = 10
{extra}
{storage}
[ingest]
clickhouse_listen = "127.0.0.1:0"
batch_max_age_ms = 50
body_timeout_secs = 2

[[ingest.credentials]]
name = "host"
token = "{TOKEN_ALL}"
workspaces = ["*"]

[[ingest.credentials]]
name = "acme-ws-a"
token = "{TOKEN_WS_A}"
org = "acme"
workspaces = ["ws-a"]

[[ingest.credentials]]
name = "acme"
token = "{TOKEN_ACME}"
org = "acme"
workspaces = ["ws-a", "ws-b"]
limits = {{ max_body_bytes = 262144, max_labels = 8 }}
"#,
        dir = data_dir.display(),
        extra = o.extra_toml,
    )
}

impl Server {
    pub fn start(options: ServerOptions) -> Server {
        let (tmp, data_dir) = match &options.data_dir {
            Some(d) => (None, d.clone()),
            None => {
                let t = Arc::new(tempfile::tempdir().expect("tempdir"));
                let p = t.path().to_owned();
                (Some(t), p)
            }
        };
        Self::start_in(options, data_dir, tmp)
    }

    fn start_in(options: ServerOptions, data_dir: PathBuf, tmp: Option<Arc<tempfile::TempDir>>) -> Server {
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let config = data_dir.join("test-config.toml");
        std::fs::write(&config, config_toml(&options, &data_dir)).expect("config");
        let addrs = data_dir.join("listen-addrs");
        let _ = std::fs::remove_file(&addrs);
        let child = Command::new(env!("CARGO_BIN_EXE_dataplane"))
            .args(["serve", "--config"])
            .arg(&config)
            .envs(options.env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn dataplane");
        let mut server = Server { child, addr: String::new(), clickhouse_addr: String::new(), data_dir, options, _tmp: tmp };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read_to_string(&addrs) {
                let map: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
                server.addr = map.get("http").expect("http addr").to_string();
                server.clickhouse_addr = map.get("clickhouse").map(|s| s.to_string()).unwrap_or_default();
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("dataplane exited during start: {status}");
            }
            assert!(Instant::now() < deadline, "dataplane did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `kill -9`: no shutdown sequence at all.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for the shutdown sequence.
    pub fn stop(&mut self) {
        let pid = self.child.id() as i32;
        // Safety-free: `kill` through the command line keeps this crate free of unsafe code.
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        let _ = self.child.wait();
    }

    /// Starts again on the same data directory (a new port).
    pub fn restart(mut self) -> Server {
        self.kill9();
        let tmp = self._tmp.take();
        let (options, dir) = (self.options.clone(), self.data_dir.clone());
        std::mem::forget(self);
        Server::start_in(options, dir, tmp)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The ClickHouse engine (chdb) behind its HTTP adapter.
pub struct ClickHouse {
    pub child: Child,
    pub port: u16,
    pub data: PathBuf,
    _tmp: Arc<tempfile::TempDir>,
}

impl ClickHouse {
    pub fn start() -> ClickHouse {
        let tmp = Arc::new(tempfile::tempdir().expect("tempdir"));
        Self::start_on(tmp, 0)
    }

    fn start_on(tmp: Arc<tempfile::TempDir>, port: u16) -> ClickHouse {
        let data = tmp.path().join("chdb");
        let port_file = tmp.path().join("port");
        let _ = std::fs::remove_file(&port_file);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/clickhouse_adapter.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--data"])
            .arg(&data)
            .args(["--port", &port.to_string(), "--exit-with-parent", "--port-file"])
            .arg(&port_file)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 with chdb-core is needed: pip install chdb-core");
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || for _ in BufReader::new(stdout).lines() {});
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(port) = std::fs::read_to_string(&port_file).ok().and_then(|p| p.trim().parse().ok()) {
                return ClickHouse { child, port, data, _tmp: tmp };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("ClickHouse adapter exited during start: {status}");
            }
            assert!(Instant::now() < deadline, "ClickHouse adapter did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops the engine (an outage).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port and data.
    pub fn restart(mut self) -> ClickHouse {
        self.kill();
        let (tmp, port) = (self._tmp.clone(), self.port);
        std::mem::forget(self);
        Self::start_on(tmp, port)
    }

    pub fn store(&self) -> storage::clickhouse::ClickHouseStore {
        storage::clickhouse::ClickHouseStore::new(storage::clickhouse::ClickHouseConfig {
            url: self.url(),
            user: "default".into(),
            password: String::new(),
            database: "hexabase".into(),
            cluster: None,
            retention: Default::default(),
            insert_timeout: Duration::from_secs(10),
        })
        .expect("clickhouse store")
    }

    pub async fn fault(&self, mode: &str, count: usize) {
        let r = client().post(format!("{}/__fault?mode={mode}&count={count}", self.url())).send().await.expect("fault");
        assert!(r.status().is_success());
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn client() -> reqwest::Client {
    client_with_timeout(Duration::from_secs(30))
}

/// A client for slow answers (a real model on two CPU threads).
pub fn client_with_timeout(timeout: Duration) -> reqwest::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder().timeout(timeout).build().expect("client")
}

/// A stored log row, as much of it as tests look at.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredLog {
    pub org_id: String,
    pub workspace: String,
    pub project: String,
    pub application: String,
    pub pod: String,
    pub severity: String,
    pub message: String,
    pub attributes: BTreeMap<String, String>,
}

fn string_col<'a>(b: &'a arrow::record_batch::RecordBatch, name: &str) -> &'a arrow::array::StringArray {
    b.column_by_name(name).unwrap_or_else(|| panic!("column {name}")).as_string::<i32>()
}

/// Every stored workload log row, read through the store the server writes to.
pub async fn stored_logs(store: &dyn Store) -> Vec<StoredLog> {
    let req = ScanRequest { table: Table::Logs, org_id: None, workspaces: None, from_ns: 0, to_ns: i64::MAX };
    let batches = store.scan(&req).await.expect("scan");
    let mut out = Vec::new();
    for b in &batches {
        let attrs = b.column_by_name("attributes").expect("attributes").as_map();
        for i in 0..b.num_rows() {
            let entries = attrs.value(i);
            let keys = entries.column(0).as_string::<i32>();
            let values = entries.column(1).as_string::<i32>();
            out.push(StoredLog {
                org_id: string_col(b, "org_id").value(i).into(),
                workspace: string_col(b, "workspace").value(i).into(),
                project: string_col(b, "project").value(i).into(),
                application: string_col(b, "application").value(i).into(),
                pod: string_col(b, "pod").value(i).into(),
                severity: string_col(b, "severity").value(i).into(),
                message: string_col(b, "message").value(i).into(),
                attributes: (0..keys.len()).filter(|j| values.is_valid(*j)).map(|j| (keys.value(j).to_owned(), values.value(j).to_owned())).collect(),
            });
        }
    }
    out
}

/// The embedded store of a server's data directory, opened read-side.
pub fn embedded_store(data_dir: &Path) -> Arc<dyn Store> {
    let config = storage::embedded::EmbeddedConfig::new(data_dir.join("store"));
    Arc::new(Arc::new(storage::embedded::EmbeddedStore::open_for_reading(config)))
}

/// Waits until `f` holds, polling; panics with `what` after `secs`.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A free loopback port (for servers that must be told theirs before they start).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A real Prometheus (Debian's 2.42) on loopback, with its own data directory; killed on drop.
pub struct Prometheus {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus on `port` with `config` (YAML) and `extra` flags.
    pub fn start(port: u16, config: &str, extra: &[&str]) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("prometheus.yml");
        std::fs::write(&file, config).expect("prometheus config");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", file.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus must be installed (apt-get install prometheus); ./scripts/test does it");
        Prometheus { child, addr: format!("127.0.0.1:{port}"), _dir: dir }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
