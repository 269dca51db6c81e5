//! The fake Kubernetes API server (`fake_kube_api.py`): real HTTP and real Kubernetes JSON,
//! with rules the test sets and counts of what it was asked.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const KUBE_TOKEN: &str = "dataplane-service-account-token";

pub struct FakeKube {
    child: Child,
    pub url: String,
    pub token_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl FakeKube {
    pub fn start(namespaces: &[&str], rules: Value) -> FakeKube {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("kube.json");
        std::fs::write(&config, json!({ "token": KUBE_TOKEN, "namespaces": namespaces, "rules": rules }).to_string()).expect("config");
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{KUBE_TOKEN}\n")).expect("token");
        let port_file = dir.path().join("port");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/fake_kube_api.py");
        let mut child =
            Command::new("python3").arg(script).arg("--config").arg(&config).arg("--port-file").arg(&port_file).stdout(Stdio::null()).spawn().expect("python3");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(port) = std::fs::read_to_string(&port_file).ok().and_then(|p| p.trim().parse::<u16>().ok()) {
                return FakeKube { child, url: format!("http://127.0.0.1:{port}"), token_file, _dir: dir };
            }
            assert!(child.try_wait().expect("wait").is_none(), "fake API server exited");
            assert!(Instant::now() < deadline, "fake API server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    async fn post(&self, path: &str, body: Value) {
        let r = super::client().post(format!("{}{path}", self.url)).json(&body).send().await.expect("control");
        assert!(r.status().is_success());
    }

    pub async fn set_rules(&self, rules: Value) {
        self.post("/_control/rules", rules).await;
    }

    pub async fn set_mode(&self, mode: &str) {
        self.post("/_control/mode", json!({ "mode": mode })).await;
    }

    pub async fn stats(&self) -> Value {
        super::client().get(format!("{}/_control/stats", self.url)).send().await.expect("stats").json().await.expect("json")
    }

    /// Every object it holds, by path.
    pub async fn objects(&self) -> serde_json::Map<String, Value> {
        let v: Value = super::client().get(format!("{}/_control/objects", self.url)).send().await.expect("objects").json().await.expect("json");
        v.as_object().cloned().unwrap_or_default()
    }

    /// Every request it was sent, as `METHOD /path`.
    pub async fn requests(&self) -> Vec<String> {
        super::client().get(format!("{}/_control/requests", self.url)).send().await.expect("requests").json().await.expect("json")
    }

    /// Creates an object as a controller in the cluster would (server-side apply).
    pub async fn apply(&self, path: &str, body: Value) {
        let r = super::client()
            .patch(format!("{}{path}?fieldManager=test&force=true", self.url))
            .bearer_auth(KUBE_TOKEN)
            .header("content-type", "application/apply-patch+yaml")
            .body(body.to_string())
            .send()
            .await
            .expect("apply");
        assert!(r.status().is_success(), "{}", r.status());
    }

    /// What `GET <pod path>/log` answers.
    pub async fn set_pod_log(&self, path: &str, text: &str) {
        self.post("/_control/pod_log", json!({ "path": path, "text": text })).await;
    }

    /// Sets an object's `status`, as its controller would.
    pub async fn set_status(&self, path: &str, status: Value) {
        self.post("/_control/status", json!({ "path": path, "status": status })).await;
    }

    /// Replaces the injected failures.
    pub async fn set_faults(&self, faults: Value) {
        self.post("/_control/faults", faults).await;
    }

    /// The `[auth]` configuration that points workspace `ws` at this server.
    pub fn auth_toml(&self, ws: &str, allow_ttl_secs: u64) -> String {
        format!(
            "[auth]\nauthorizer = \"kubernetes\"\n[auth.kubernetes]\nallow_ttl_secs = {allow_ttl_secs}\ndeny_ttl_secs = 1\ntimeout_ms = 1500\n[[auth.kubernetes.workspaces]]\nworkspace = \"{ws}\"\nurl = \"{}\"\ntoken_file = \"{}\"\n",
            self.url,
            self.token_file.display()
        )
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
