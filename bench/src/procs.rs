//! Child processes (the `dataplane` server, the ClickHouse adapter), CPU pinning and what
//! `/proc` says about them. Every child is killed when its guard drops, also on error or panic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub const TOKEN: &str = "bench-host-shipper-token-0123456789";
pub const SERVER_CORE: usize = 0;
pub const CLIENT_CORE: usize = 1;

/// Kills and reaps the child when dropped.
pub struct Guard {
    pub child: Child,
    pub name: &'static str,
}

impl Guard {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits up to `limit` for a clean exit (SIGKILL after that).
    pub fn terminate(&mut self, limit: Duration) -> anyhow::Result<()> {
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("{} exited with {status} after SIGTERM", self.name);
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        bail!("{} did not stop within {limit:?} of SIGTERM; killed", self.name)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Pins every thread of this process (and so every thread and child it starts later) to `core`.
pub fn pin_process(core: usize) -> anyhow::Result<()> {
    let ok = Command::new("taskset").args(["-a", "-cp", &core.to_string(), &std::process::id().to_string()]).stdout(Stdio::null()).status()?.success();
    if !ok {
        bail!("taskset could not pin the load generator to core {core}");
    }
    Ok(())
}

/// Pins the calling thread only.
pub fn pin_thread(core: usize) -> anyhow::Result<()> {
    let link = std::fs::read_link("/proc/thread-self")?;
    let tid = link.file_name().and_then(|t| t.to_str()).context("thread id")?.to_owned();
    let ok = Command::new("taskset").args(["-cp", &core.to_string(), &tid]).stdout(Stdio::null()).status()?.success();
    if !ok {
        bail!("taskset could not pin thread {tid} to core {core}");
    }
    Ok(())
}

pub fn clock_ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process or thread (`/proc/<pid>/stat`, `/proc/thread-self/stat`), seconds.
pub fn cpu_seconds(stat_path: &str) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string(stat_path).with_context(|| format!("reading {stat_path}"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = text.rsplit_once(')').context("stat format")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).context("utime")?.parse::<u64>()? + f.get(12).context("stime")?.parse::<u64>()?;
    Ok(ticks as f64 / clock_ticks_per_sec())
}

/// Peak resident set (VmHWM), MiB.
pub fn peak_rss_mib(pid: u32) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:")).context("VmHWM")?;
    let kib: f64 = line.split_whitespace().nth(1).context("VmHWM value")?.parse()?;
    Ok(kib / 1024.0)
}

/// A `dataplane serve` pinned to the server core, on a fresh data directory.
pub struct Server {
    pub proc: Guard,
    pub addr: String,
    pub data_dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Server {
    pub fn start(binary: &Path, clickhouse_url: Option<&str>) -> anyhow::Result<Server> {
        Server::start_in(binary, clickhouse_url, tempfile::Builder::new().prefix("bench-").tempdir()?)
    }

    /// Like [`Server::start`], on a data directory prepared beforehand (stored rows in it).
    pub fn start_in(binary: &Path, clickhouse_url: Option<&str>, tmp: tempfile::TempDir) -> anyhow::Result<Server> {
        Server::start_configured(binary, clickhouse_url, tmp, "")
    }

    /// Like [`Server::start_in`], with `extra` TOML tables appended to the configuration.
    pub fn start_configured(binary: &Path, clickhouse_url: Option<&str>, tmp: tempfile::TempDir, extra: &str) -> anyhow::Result<Server> {
        let data_dir = tmp.path().to_owned();
        let storage = match clickhouse_url {
            Some(url) => format!("[storage]\nbackend = \"clickhouse\"\n[storage.clickhouse]\nurl = \"{url}\"\n"),
            None => "[storage]\nbackend = \"embedded\"\n".to_owned(),
        };
        let config = format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nlog_level = \"warn\"\n{storage}\n[[ingest.credentials]]\nname = \"bench\"\ntoken = \"{TOKEN}\"\nworkspaces = [\"*\"]\n{extra}",
            data_dir.display()
        );
        let config_path = data_dir.join("bench-config.toml");
        std::fs::write(&config_path, config)?;
        let child = Command::new("taskset")
            .args(["-c", &SERVER_CORE.to_string()])
            .arg(binary)
            .args(["serve", "--config"])
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting taskset + dataplane")?;
        let mut proc = Guard { child, name: "dataplane" };
        let addrs = data_dir.join("listen-addrs");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read_to_string(&addrs) {
                let map: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
                let addr = map.get("http").context("listen-addrs without http")?.to_string();
                return Ok(Server { proc, addr, data_dir, _tmp: tmp });
            }
            if let Some(status) = proc.child.try_wait()? {
                bail!("dataplane exited during start: {status}");
            }
            if Instant::now() > deadline {
                bail!("dataplane did not write {} within 60 s", addrs.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// A token of the server's development issuer (`dataplane token`).
pub fn dev_token(server: &Server, binary: &Path, org: &str, workspace: &str) -> anyhow::Result<String> {
    dev_token_with(server, binary, &["--org", org, "--workspace", workspace])
}

/// A development-issuer token for user `bench` with `claims` (`--org`, `--workspace`, `--role`…).
pub fn dev_token_with(server: &Server, binary: &Path, claims: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(binary)
        .args(["token", "--config"])
        .arg(server.data_dir.join("bench-config.toml"))
        .args(["--user", "bench", "--ttl", "2h"])
        .args(claims)
        .output()
        .context("dataplane token")?;
    if !out.status.success() {
        bail!("dataplane token: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// The `q` quantile of `v` (sorted in place).
pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

/// The ClickHouse engine (chdb) behind `tests/support/clickhouse_adapter.py`, on the client core.
pub struct Adapter {
    pub proc: Guard,
    pub url: String,
    _tmp: tempfile::TempDir,
}

impl Adapter {
    pub fn start() -> anyhow::Result<Adapter> {
        let tmp = tempfile::Builder::new().prefix("ingest-bench-ch-").tempdir()?;
        let port_file = tmp.path().join("port");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/clickhouse_adapter.py");
        let child = Command::new("taskset")
            .args(["-c", &CLIENT_CORE.to_string(), "python3"])
            .arg(&script)
            .arg("--data")
            .arg(tmp.path().join("chdb"))
            .args(["--exit-with-parent", "--port-file"])
            .arg(&port_file)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting python3 with the ClickHouse adapter")?;
        let mut proc = Guard { child, name: "ClickHouse adapter" };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(port) = std::fs::read_to_string(&port_file).ok().and_then(|p| p.trim().parse::<u16>().ok()) {
                return Ok(Adapter { proc, url: format!("http://127.0.0.1:{port}"), _tmp: tmp });
            }
            if let Some(status) = proc.child.try_wait()? {
                bail!("ClickHouse adapter exited during start ({status}); it needs python3 with chdb-core (pip install chdb-core)");
            }
            if Instant::now() > deadline {
                bail!("ClickHouse adapter did not start within 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs one statement, returns its TabSeparated answer.
    pub async fn sql(&self, client: &reqwest::Client, query: &str) -> anyhow::Result<String> {
        self.sql_with(client, query, &[]).await
    }

    /// `query` with request settings (`?name=value`), as a client sends them.
    pub async fn sql_with(&self, client: &reqwest::Client, query: &str, settings: &[(&str, String)]) -> anyhow::Result<String> {
        let url = if settings.is_empty() { format!("{}/", self.url) } else { format!("{}/?{}", self.url, serde_urlencoded::to_string(settings)?) };
        let r = client.post(url).body(query.to_owned()).send().await?;
        let status = r.status();
        let text = r.text().await?;
        if !status.is_success() || text.contains("DB::Exception") {
            bail!("ClickHouse: {query}: {status} {}", text.trim());
        }
        Ok(text)
    }

    /// `SELECT` of unsigned integers, one row.
    pub async fn numbers(&self, client: &reqwest::Client, query: &str) -> anyhow::Result<Vec<u64>> {
        let text = self.sql(client, query).await?;
        text.split_whitespace().map(|v| v.parse::<u64>().with_context(|| format!("{query}: {v}"))).collect()
    }
}

/// A PostgreSQL server (`initdb` into a temporary directory; run as the `postgres` user when
/// this runs as root, which PostgreSQL refuses) on a free loopback port.
pub struct Postgres {
    pub proc: Guard,
    pub url: String,
    _tmp: tempfile::TempDir,
}

impl Postgres {
    pub fn start() -> anyhow::Result<Postgres> {
        let bin = |name: &str| -> PathBuf {
            let mut v: Vec<PathBuf> =
                std::fs::read_dir("/usr/lib/postgresql").map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default();
            v.sort();
            v.last().map(|p| p.join("bin").join(name)).unwrap_or_else(|| PathBuf::from(name))
        };
        let root = Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false);
        let command = |program: PathBuf| {
            if root {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(program);
                c
            } else {
                Command::new(program)
            }
        };
        let tmp = tempfile::Builder::new().prefix("bench-pg-").tempdir()?;
        Command::new("chown").args(["-R", "postgres"]).arg(tmp.path()).status()?;
        let data = tmp.path().join("data");
        let ok = command(bin("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--no-sync"])
            .stdout(Stdio::null())
            .status()
            .context("initdb (apt-get install postgresql)")?;
        if !ok.success() {
            bail!("initdb failed");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        // Durable like production (fsync on), on the client core beside the load generator.
        let child = command(bin("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(tmp.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let proc = Guard { child, name: "postgres" };
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        loop {
            let ready = command(bin("psql"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres", "-c", "select 1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if ready.map(|s| s.success()).unwrap_or(false) {
                return Ok(Postgres { proc, url, _tmp: tmp });
            }
            if Instant::now() > deadline {
                bail!("postgres did not start");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
