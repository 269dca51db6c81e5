//! A real PostgreSQL server for one test: `initdb` into a temporary directory and `postgres`
//! on a free loopback port (run as the `postgres` user when the tests run as root, since
//! PostgreSQL refuses root). Stopped when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Postgres {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

fn bin(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql").map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default();
    versions.sort();
    versions.last().map(|v| v.join("bin").join(name)).filter(|p| p.exists()).unwrap_or_else(|| PathBuf::from(name))
}

fn as_postgres_user(program: PathBuf) -> Command {
    let root = Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false);
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Postgres {
    pub fn start() -> Postgres {
        let dir = tempfile::tempdir().expect("tempdir");
        let _ = Command::new("chown").args(["-R", "postgres"]).arg(dir.path()).status();
        let data = dir.path().join("data");
        let ok = as_postgres_user(bin("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .status()
            .expect("initdb (PostgreSQL 15: apt-get install postgresql)");
        assert!(ok.success(), "initdb failed");
        let port = super::free_port();
        let child = as_postgres_user(bin("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres");
        let mut pg = Postgres { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(pg.child.try_wait().expect("wait").is_none(), "postgres exited during start");
            assert!(Instant::now() < deadline, "postgres did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        // Accepting connections is not yet accepting logins; the first query tells.
        while !as_postgres_user(bin("psql"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres", "-c", "select 1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
        {
            assert!(Instant::now() < deadline, "postgres did not accept logins");
            std::thread::sleep(Duration::from_millis(50));
        }
        pg.child_ok();
        pg
    }

    fn child_ok(&mut self) {
        assert!(self.child.try_wait().expect("wait").is_none(), "postgres exited");
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // runuser passes the signal on to postgres (a fast shutdown on SIGTERM would be
        // nicer, but the data is thrown away anyway).
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
