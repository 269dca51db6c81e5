#!/usr/bin/env python3
"""What the engine-side tenant wall costs ClickHouse, by the way it is set.

    python3 bench/engine_wall.py [--rows 1000000] [--runs 200] [--rounds 3]

The data plane's second wall in ClickHouse is the `additional_table_filters` setting, sent
with every query. The alternative is a row policy. This compares, on the same data in the same
engine (chdb, ClickHouse in process):

- none: the question alone (the baseline);
- table filter: the question with `additional_table_filters`, as the store sends it;
- row policy: the question under a row policy with the same condition (fixed in users.xml:
  chdb cannot hold per-request policies, but a fixed one is planned the same way).

Each question is timed as `EXPLAIN` (planning only) and as the query itself. Each mode runs in
its own process (a policy needs the engine started with its configuration), the modes in a
shuffled order, `--rounds` times; the figure is the median over rounds of each process's
median, and "added" is that minus the baseline's.
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile

END = 1_780_000_000_000_000_000
DAY = 86_400_000_000_000
ORG, WS = "org-7", "ws-007"

# The logs table as schemas/src/migrations.rs creates it (TTL left out: it changes no plan).
DDL = """CREATE TABLE hexabase.logs (
    timestamp DateTime64(9, 'UTC') CODEC(Delta(8), ZSTD(1)),
    observed_timestamp DateTime64(9, 'UTC') CODEC(Delta(8), ZSTD(1)),
    org_id LowCardinality(String), workspace LowCardinality(String), project LowCardinality(String),
    application LowCardinality(String), pod LowCardinality(String), container LowCardinality(String),
    node LowCardinality(String), stream LowCardinality(String), severity LowCardinality(String),
    message String CODEC(ZSTD(3)), attributes Map(LowCardinality(String), String) CODEC(ZSTD(3)),
    trace_id String CODEC(ZSTD(1)), span_id String CODEC(ZSTD(1)),
    INDEX idx_message lower(message) TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 1,
    INDEX idx_trace_id trace_id TYPE bloom_filter(0.01) GRANULARITY 1
) ENGINE = MergeTree PARTITION BY toDate(timestamp) ORDER BY (org_id, workspace, project, timestamp)
SETTINGS index_granularity = 8192"""

WALL = f"org_id = '{ORG}' AND workspace = '{WS}'"
WHERE = f"{WALL} AND timestamp >= fromUnixTimestamp64Nano({END - DAY}) AND timestamp < fromUnixTimestamp64Nano({END})"
STEP = 300_000_000_000
QUESTIONS = {
    "rare word": "SELECT toUnixTimestamp64Nano(timestamp) AS ts, org_id, workspace, project, application, pod, container, node, "
    f"stream, severity, message, attributes, trace_id FROM hexabase.logs WHERE {WHERE} "
    "AND positionCaseInsensitive(message, 'quokka') > 0 ORDER BY timestamp DESC, pod, message, trace_id LIMIT 100",
    "LogQL count by level": f"SELECT intDiv(toUnixTimestamp64Nano(timestamp) - {END - DAY}, {STEP}) AS bucket, severity, count() "
    f"FROM hexabase.logs WHERE {WHERE} GROUP BY bucket, severity",
}


def sql_string(s):
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def build(d, rows):
    import chdb

    c = chdb.connect(os.path.join(d, "data"))
    c.query("CREATE DATABASE hexabase")
    c.query(DDL)
    c.query(
        f"""INSERT INTO hexabase.logs SELECT
        fromUnixTimestamp64Nano(toInt64({END - DAY} + intDiv(number, 100) * {DAY * 100 // rows})),
        fromUnixTimestamp64Nano(toInt64({END})),
        concat('org-', toString(number % 10)), concat('ws-', leftPad(toString(number % 100), 3, '0')),
        ['shop', 'billing', 'web'][intDiv(number, 100) % 3 + 1], 'app', concat('pod-', toString(intDiv(number, 100) % 4)),
        'app', 'node-1', 'stdout', ['info', 'warn', 'error', 'debug'][number % 4 + 1],
        concat('Received block blk_', toString(cityHash64(number)), if(intDiv(number, 100) % 10000 = 1234, ' quokka', '')),
        map('app', 'x'), hex(cityHash64(number)), ''
        FROM numbers({rows})"""
    )
    c.query("OPTIMIZE TABLE hexabase.logs FINAL")
    c.close()
    with open(os.path.join(d, "users.xml"), "w") as f:
        f.write(
            "<clickhouse><users><default><password></password><networks><ip>::/0</ip></networks>"
            "<profile>default</profile><quota>default</quota>"
            f"<databases><hexabase><logs><filter>{WALL}</filter></logs></hexabase></databases>"
            "</default></users><profiles><default></default></profiles><quotas><default></default></quotas></clickhouse>"
        )
    with open(os.path.join(d, "config.xml"), "w") as f:
        f.write(f"<clickhouse><user_directories><users_xml><path>{d}/users.xml</path></users_xml></user_directories></clickhouse>")


def child(d, mode, runs):
    import chdb

    path = os.path.join(d, "data")
    c = chdb.connect(f"{path}?config-file={d}/config.xml" if mode == "row policy" else path)
    if mode == "table filter":
        c.query("SET additional_table_filters = " + sql_string("{'hexabase.logs': " + sql_string(WALL) + "}"))
    # The wall must be in force: every row counted is the one workspace's.
    seen = c.query("SELECT count(), uniqExact(workspace) FROM hexabase.logs", "TSV").bytes().decode().split()
    out = {"rows": int(seen[0]), "workspaces": int(seen[1])}
    for name, q in QUESTIONS.items():
        for kind, text in [("plan", "EXPLAIN " + q), ("query", q)]:
            times = []
            for i in range(runs + 3):
                r = c.query(text, "TSV")
                if i >= 3:
                    times.append(r.elapsed() * 1e3)
            out[f"{name}|{kind}"] = statistics.median(times)
    print(json.dumps(out))


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--rows", type=int, default=1_000_000)
    a.add_argument("--runs", type=int, default=200)
    a.add_argument("--rounds", type=int, default=3)
    a.add_argument("--child", nargs=2, metavar=("DIR", "MODE"), help=argparse.SUPPRESS)
    args = a.parse_args()
    if args.child:
        return child(args.child[0], args.child[1], args.runs)
    modes = ["none", "table filter", "row policy"]
    with tempfile.TemporaryDirectory() as d:
        print(f"loading {args.rows} rows…", file=sys.stderr)
        build(d, args.rows)
        results = {m: [] for m in modes}
        for r in range(args.rounds):
            order = modes[:]
            random.shuffle(order)
            for m in order:
                print(f"round {r + 1}/{args.rounds}: {m}", file=sys.stderr)
                p = subprocess.run([sys.executable, __file__, "--runs", str(args.runs), "--child", d, m], capture_output=True, text=True, check=True)
                results[m].append(json.loads(p.stdout.strip().splitlines()[-1]))
        every = results["none"][0]["rows"]
        for m in ["table filter", "row policy"]:
            got = {(x["rows"], x["workspaces"]) for x in results[m]}
            if got != {(every // 100, 1)}:
                sys.exit(f"{m}: the wall did not hold (rows, workspaces seen: {got})")
        print(f"\n## Engine-side wall: planning and query time, ms ({args.rows} rows, medians of {args.runs} runs, median over {args.rounds} rounds)\n")
        print("| question | step | none (baseline) | table filter | added | row policy | added |")
        print("|---|---|--:|--:|--:|--:|--:|")
        for name in QUESTIONS:
            for kind in ["plan", "query"]:
                key = f"{name}|{kind}"
                base, tf, rp = (statistics.median(x[key] for x in results[m]) for m in modes)
                print(f"| {name} | {'EXPLAIN' if kind == 'plan' else 'query'} | {base:.3f} | {tf:.3f} | {tf - base:+.3f} | {rp:.3f} | {rp - base:+.3f} |")


if __name__ == "__main__":
    main()
