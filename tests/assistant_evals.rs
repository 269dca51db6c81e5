//! The assistant's evaluations (`tests/evals/*.toml`, see its README): each scenario's
//! question and paraphrases against the scripted model (the system's guarantees must hold
//! whatever the model does), and, on demand, against a real model with a pass rate.

use std::collections::BTreeMap;

use regex::Regex;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::ingest_api::post_logs;
use crate::query_api::token;
use crate::support::fixtures::{Source, ndjson, now_ns, vector_event, vector_events};
use crate::support::llm::ScriptedModel;
use crate::support::{Server, ServerOptions, TOKEN_ALL, client, eventually};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    name: String,
    question: String,
    #[serde(default)]
    paraphrases: Vec<String>,
    workspace: Option<String>,
    project: Option<String>,
    user: User,
    #[serde(default)]
    logs: Vec<Logs>,
    #[serde(default)]
    script: Vec<Value>,
    #[serde(default)]
    budgets: BTreeMap<String, toml::Value>,
    #[serde(default)]
    checks: Checks,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct User {
    name: String,
    org: String,
    workspaces: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Logs {
    workspace: String,
    project: String,
    count: usize,
    text: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Checks {
    #[serde(default)]
    answer_matches: Vec<String>,
    #[serde(default)]
    tools_must: Vec<String>,
    #[serde(default)]
    tools_must_not: Vec<String>,
    #[serde(default)]
    tools_at_most: BTreeMap<String, usize>,
    #[serde(default)]
    statuses: BTreeMap<String, String>,
    #[serde(default)]
    never_seen: Vec<String>,
    /// Facts the answer must state: judged by a model when one is configured, else by regex.
    #[serde(default)]
    facts: Vec<Fact>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fact {
    fact: String,
    regex: String,
}

/// Who decides whether an answer states a fact: a model (OpenAI-compatible chat completions,
/// its reply held to a JSON verdict), or, without one, the fact's regex.
enum Judge<'a> {
    Regex,
    Model { http: &'a reqwest::Client, url: &'a str, model: &'a str },
}

impl Judge<'_> {
    async fn holds(&self, question: &str, answer: &str, f: &Fact) -> Result<bool, String> {
        let Judge::Model { http, url, model } = self else { return Ok(Regex::new(&f.regex).expect("regex").is_match(answer)) };
        let schema = json!({ "type": "object", "required": ["holds", "reason"], "additionalProperties": false,
            "properties": { "holds": { "type": "boolean" }, "reason": { "type": "string", "maxLength": 200 } } });
        let body = json!({
            "model": model, "temperature": 0, "max_tokens": 120,
            "messages": [
                { "role": "system", "content": "You grade an assistant's answer. Say whether the answer states the given fact (the same meaning in any words). Reply with JSON only." },
                { "role": "user", "content": format!("Question: {question}\nAnswer: {answer}\nFact: {}\nDoes the answer state the fact?", f.fact) },
            ],
            "response_format": { "type": "json_schema", "json_schema": { "name": "verdict", "strict": true, "schema": schema } },
        });
        let r = http.post(format!("{url}/chat/completions")).json(&body).send().await.map_err(|e| format!("judge: {e}"))?;
        let status = r.status();
        let v: Value = r.json().await.map_err(|e| format!("judge: {e}"))?;
        if !status.is_success() {
            return Err(format!("judge answered {status}: {v}"));
        }
        let text = v["choices"][0]["message"]["content"].as_str().unwrap_or("");
        let verdict: Value = serde_json::from_str(text).map_err(|e| format!("judge's verdict is not JSON ({e}): {text}"))?;
        let holds = verdict["holds"].as_bool().ok_or_else(|| format!("judge's verdict has no `holds`: {text}"))?;
        eprintln!("judge {model}: «{}» {} ({})", f.fact, if holds { "holds" } else { "does not hold" }, verdict["reason"].as_str().unwrap_or(""));
        Ok(holds)
    }
}

fn scenarios() -> Vec<(String, Scenario)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/evals");
    let mut files: Vec<_> =
        std::fs::read_dir(dir).expect("tests/evals").filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "toml")).collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read");
            let s: Scenario = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), s)
        })
        .collect()
}

fn provider_toml(url: &str, model: &str, s: &Scenario) -> String {
    let mut budgets = String::from("[assistant.budgets]\n");
    for (k, v) in &s.budgets {
        budgets.push_str(&format!("{k} = {v}\n"));
    }
    format!(
        "[assistant]\nretries = 1\ntimeout_ms = 180000\ntools_offered = 4\n{budgets}[assistant.provider]\nkind = \"openai\"\nurl = \"{url}\"\nmodel = \"{model}\"\n"
    )
}

async fn fixtures(server: &Server, s: &Scenario) {
    let mut events = Vec::new();
    for (i, l) in s.logs.iter().enumerate() {
        let src = Source::new("acme", &l.workspace, &l.project);
        match &l.text {
            Some(t) => events.extend((0..l.count).map(|k| vector_event(&src, &format!("f{i}-{k}"), t, now_ns() - 120_000_000_000 + k as i64 * 1000))),
            None => events.extend(vector_events(&src, &format!("f{i}"), l.count)),
        }
    }
    if events.is_empty() {
        return;
    }
    let (status, body) = post_logs(server, TOKEN_ALL, ndjson(&events), None).await;
    assert_eq!(status, 200, "{body}");
    let all = token(server, "fixture-reader", "acme", &["ws-a", "ws-b", "ws-c"], &[]);
    let want = events.len();
    eventually(20, "the fixtures to be searchable", || async {
        let r: Value =
            client().get(server.url("/api/v1/logs/search?since=1d&limit=1000")).bearer_auth(&all).send().await.expect("search").json().await.expect("json");
        r["lines"].as_array().is_some_and(|l| l.len() >= want)
    })
    .await;
}

/// One question: the events of the turn.
async fn ask(server: &Server, token: &str, s: &Scenario, question: &str) -> Vec<(String, Value)> {
    ask_with(&client(), server, token, s, question).await
}

async fn ask_with(http: &reqwest::Client, server: &Server, token: &str, s: &Scenario, question: &str) -> Vec<(String, Value)> {
    let mut body = json!({ "message": question });
    if let Some(w) = &s.workspace {
        body["workspace"] = json!(w);
    }
    if let Some(p) = &s.project {
        body["project"] = json!(p);
    }
    let text = http.post(server.url("/api/v1/ai/chat")).bearer_auth(token).json(&body).send().await.expect("chat").text().await.expect("body");
    text.split("\n\n")
        .filter_map(|b| {
            let name = b.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data: String = b.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
            Some((name.to_owned(), serde_json::from_str(&data).unwrap_or(Value::Null)))
        })
        .collect()
}

/// The checks of `s` on one turn; `model_saw` is every request the model got (scripted runs).
async fn check(s: &Scenario, question: &str, events: &[(String, Value)], model_saw: Option<&str>, judge: &Judge<'_>) -> Vec<String> {
    let mut failed = Vec::new();
    let calls: Vec<&str> = events.iter().filter(|(n, _)| n == "tool_call").filter_map(|(_, v)| v["name"].as_str()).collect();
    let answer = events.iter().find(|(n, _)| n == "answer").map(|(_, v)| v["text"].as_str().unwrap_or("").to_owned());
    let Some(answer) = answer else { return vec![format!("no answer: {events:?}")] };
    for re in &s.checks.answer_matches {
        if !Regex::new(re).expect("regex").is_match(&answer) {
            failed.push(format!("the answer does not match {re}: {answer}"));
        }
    }
    for f in &s.checks.facts {
        match judge.holds(question, &answer, f).await {
            Ok(true) => {}
            Ok(false) => failed.push(format!("the answer does not state «{}»: {answer}", f.fact)),
            Err(e) => failed.push(e),
        }
    }
    for t in &s.checks.tools_must {
        if !calls.contains(&t.as_str()) {
            failed.push(format!("{t} was not called ({calls:?})"));
        }
    }
    for t in &s.checks.tools_must_not {
        if calls.contains(&t.as_str()) {
            failed.push(format!("{t} was called"));
        }
    }
    for (t, n) in &s.checks.tools_at_most {
        let got = calls.iter().filter(|c| *c == t).count();
        if got > *n {
            failed.push(format!("{t} was called {got} times (at most {n})"));
        }
    }
    for (t, want) in &s.checks.statuses {
        let got = events.iter().find(|(n, v)| n == "tool_result" && v["name"] == t.as_str()).map(|(_, v)| v["status"].as_str().unwrap_or("").to_owned());
        if got.as_deref() != Some(want.as_str()) {
            failed.push(format!("{t}: status {got:?}, expected {want}"));
        }
    }
    for secret in &s.checks.never_seen {
        if answer.contains(secret.as_str()) || model_saw.is_some_and(|m| m.contains(secret.as_str())) {
            failed.push(format!("{secret} was seen"));
        }
    }
    failed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evals_hold_against_the_scripted_model() {
    let model = ScriptedModel::start();
    let mut failures = Vec::new();
    for (file, s) in scenarios() {
        let server = Server::start(ServerOptions { extra_toml: provider_toml(&format!("{}/v1", model.url), "scripted", &s), ..Default::default() });
        fixtures(&server, &s).await;
        let tok = token(&server, &s.user.name, &s.user.org, &s.user.workspaces.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
        let mut tool_calls = 0;
        for q in std::iter::once(&s.question).chain(&s.paraphrases) {
            model.script(Value::Array(s.script.clone())).await;
            let events = ask(&server, &tok, &s, q).await;
            tool_calls += events.iter().filter(|(n, _)| n == "tool_call").count();
            let saw = serde_json::to_string(&model.requests().await).unwrap_or_default();
            for f in check(&s, q, &events, Some(&saw), &Judge::Regex).await {
                failures.push(format!("{file} ({}) «{q}»: {f}", s.name));
            }
        }
        // Identity: every tool call is in the audit log, as the agent acting for this user.
        if tool_calls > 0 {
            let auditor = token(&server, "auditor", &s.user.org, &[], &["auditor"]);
            eventually(20, "the agent's audit records", || async {
                let recs = crate::assistant_api::agent_audit(&server, &auditor).await;
                let tools: Vec<&Value> = recs.iter().filter(|x| x["action"].as_str().is_some_and(|a| a.starts_with("tool."))).collect();
                tools.len() == tool_calls && tools.iter().all(|x| x["actor"] == s.user.name.as_str())
            })
            .await;
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The scenarios against a real model, k times each, with the pass rate per scenario. By
/// default the small real model CI has (SmolLM2-135M-Instruct in llama.cpp's server; one
/// scenario, its question only, k = 1 — a turn takes about a minute there); point it elsewhere
/// with `EVAL_PROVIDER_URL`, `EVAL_MODEL`, `EVAL_NATIVE_TOOLS`, `EVAL_K`, `EVAL_SCENARIOS`
/// (file names, comma-separated, or `all`), `EVAL_PARAPHRASES=1` and `EVAL_MIN_PASS_RATE`;
/// facts are judged by `EVAL_JUDGE_URL`/`EVAL_JUDGE_MODEL` (default the model under test).
/// Every run must give an answer; the pass rate is printed and held to the minimum (default 0:
/// a small model's answers are measured, not required).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evals_against_a_real_model() {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let local = if env("EVAL_PROVIDER_URL").is_none() { Some(crate::support::llm::RealModel::start()) } else { None };
    let url = env("EVAL_PROVIDER_URL").unwrap_or_else(|| format!("{}/v1", local.as_ref().map(|m| m.url.clone()).unwrap_or_default()));
    let model = env("EVAL_MODEL").unwrap_or_else(|| "smollm2".into());
    let native = env("EVAL_NATIVE_TOOLS").map_or(local.is_none(), |v| v == "1" || v == "true");
    let k: usize = env("EVAL_K").and_then(|v| v.parse().ok()).unwrap_or(1);
    let min: f64 = env("EVAL_MIN_PASS_RATE").and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let wanted = env("EVAL_SCENARIOS").unwrap_or_else(|| "checkout_crash.toml".into());
    let paraphrases = env("EVAL_PARAPHRASES").is_some_and(|v| v == "1");
    let http = crate::support::client_with_timeout(std::time::Duration::from_secs(900));
    // Facts are judged by a model: `EVAL_JUDGE_URL`/`EVAL_JUDGE_MODEL`, else the model under test.
    let judge_url = env("EVAL_JUDGE_URL").unwrap_or_else(|| url.clone());
    let judge_model = env("EVAL_JUDGE_MODEL").unwrap_or_else(|| model.clone());
    let judge = Judge::Model { http: &http, url: &judge_url, model: &judge_model };
    let mut rates = Vec::new();
    for (file, s) in scenarios().into_iter().filter(|(f, _)| wanted == "all" || wanted.split(',').any(|w| w.trim() == f)) {
        let weak = if native { String::new() } else { "max_output_tokens = 96\ntools_offered = 2\n".into() };
        let mut extra = provider_toml(&url, &model, &s).replace("tools_offered = 4\n", &weak);
        extra.push_str(&format!("native_tools = {native}\nrequire_tool_first = {}\nlocal = true\n", !native));
        if !native {
            // A small context: tool results are cut to fit it.
            extra = extra.replace("[assistant.budgets]\n", "[assistant.budgets]\nmax_steps = 2\nturn_timeout_ms = 900000\nmax_output_bytes = 3000\n");
        }
        let server = Server::start(ServerOptions { extra_toml: extra, ..Default::default() });
        fixtures(&server, &s).await;
        let tok = token(&server, &s.user.name, &s.user.org, &s.user.workspaces.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
        let (mut passed, mut runs) = (0, 0);
        let questions: Vec<&String> = if paraphrases { std::iter::once(&s.question).chain(&s.paraphrases).collect() } else { vec![&s.question] };
        for _ in 0..k {
            for q in &questions {
                let events = ask_with(&http, &server, &tok, &s, q).await;
                assert!(events.iter().any(|(n, _)| n == "answer"), "{file} «{q}»: no answer from the real model: {events:?}");
                let failed = check(&s, q, &events, None, &judge).await;
                runs += 1;
                if failed.is_empty() {
                    passed += 1;
                } else {
                    eprintln!("{file} «{q}»: {failed:?}");
                }
            }
        }
        let rate = passed as f64 / runs as f64;
        eprintln!("eval {file} against {model}: {passed}/{runs} passed ({:.0} %)", rate * 100.0);
        rates.push((file, rate));
    }
    assert!(!rates.is_empty(), "no scenario matched EVAL_SCENARIOS={wanted}");
    assert!(rates.iter().all(|(_, r)| *r >= min), "{rates:?}");
}
