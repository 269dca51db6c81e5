//! The scripted model server (`scripted_llm.py`): the OpenAI and Ollama wire formats, replies
//! from a script the test sets, and a record of every request it was sent.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct ScriptedModel {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl ScriptedModel {
    pub fn start() -> ScriptedModel {
        let dir = tempfile::tempdir().expect("tempdir");
        let port_file = dir.path().join("port");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/scripted_llm.py");
        let mut child = Command::new("python3").arg(script).arg("--port-file").arg(&port_file).stdout(Stdio::null()).spawn().expect("python3");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(port) = std::fs::read_to_string(&port_file).ok().and_then(|p| p.trim().parse::<u16>().ok()) {
                return ScriptedModel { child, url: format!("http://127.0.0.1:{port}"), _dir: dir };
            }
            assert!(child.try_wait().expect("wait").is_none(), "scripted model server exited");
            assert!(Instant::now() < deadline, "scripted model server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub async fn script(&self, replies: Value) {
        let r = super::client().post(format!("{}/_control/script", self.url)).json(&replies).send().await.expect("script");
        assert!(r.status().is_success());
    }

    /// Every request body, in order.
    pub async fn requests(&self) -> Vec<Value> {
        let v: Vec<Value> = super::client().get(format!("{}/_control/requests", self.url)).send().await.expect("requests").json().await.expect("json");
        v.into_iter().map(|r| r["body"].clone()).collect()
    }

    pub async fn stats(&self) -> Value {
        super::client().get(format!("{}/_control/stats", self.url)).send().await.expect("stats").json().await.expect("json")
    }
}

impl Drop for ScriptedModel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// llama.cpp's OpenAI-compatible server with SmolLM2-135M-Instruct, a real model: paths from
/// `LLAMA_SERVER` and `SMOLLM2_GGUF` (`./scripts/real-model` prepares both and `./scripts/test`
/// sets them).
pub struct RealModel {
    child: Child,
    pub url: String,
}

impl RealModel {
    pub fn start() -> RealModel {
        RealModel::start_with(&[])
    }

    /// With more llama-server flags (`--metrics`, `--ignore-eos`, …).
    pub fn start_with(flags: &[&str]) -> RealModel {
        let (Some(server), Some(model)) = (std::env::var_os("LLAMA_SERVER"), std::env::var_os("SMOLLM2_GGUF")) else {
            panic!(
                "the real-model test needs LLAMA_SERVER and SMOLLM2_GGUF: run ./scripts/test (it runs ./scripts/real-model) or set them from ./scripts/real-model's output"
            );
        };
        let port = super::free_port();
        let child = Command::new(server)
            .arg("-m")
            .arg(model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--jinja", "-c", "8192", "-t", "1", "-np", "1", "--temp", "0"])
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("llama-server");
        let mut m = RealModel { child, url: format!("http://127.0.0.1:{port}") };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let ok = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && Command::new("python3")
                    .args([
                        "-c",
                        &format!(
                            "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:{port}/health', timeout=2).status == 200 else 1)"
                        ),
                    ])
                    .stderr(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
            if ok {
                return m;
            }
            assert!(m.child.try_wait().expect("wait").is_none(), "llama-server exited during start");
            assert!(Instant::now() < deadline, "llama-server did not load the model");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl RealModel {
    /// One of llama-server's `/metrics` (with `--metrics`), like `llamacpp:n_decode_total`.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.url)).await.expect("metrics").text().await.expect("text");
        text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok())).unwrap_or_else(|| panic!("no {name} in {text}"))
    }
}

impl Drop for RealModel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
