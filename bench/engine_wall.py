#!/usr/bin/env python3
"""What the engine-side tenant wall costs ClickHouse, by the way it is set.

    python3 bench/engine_wall.py [--rows 1000000] [--runs 300]

The data plane's second wall in ClickHouse is the `additional_table_filters` setting, sent
with every query. The alternatives are row policies. This compares, on the same data in the
same engine (chdb, ClickHouse in process):

- none: the question alone (the baseline);
- table filter: the question with `additional_table_filters`, as the store sends it;
- fixed policy: a row policy holding the same condition, fixed in users.xml;
- keyed policy: a row policy that reads the scope from a per-request setting, as a policy for
  many tenants must. chdb refuses custom settings (`SQL_*`), so the standard `log_comment`
  carries the scope here (`hexabase|<org>|<workspace>,…`).

Each mode is an engine of its own (a policy needs the engine started with its configuration,
and an engine holds its data directory alone), so each gets a copy of the data and runs in its
own process. The processes stay up and the questions go to them in turn, in a shuffled order in
every run: each mode's time is set against the baseline's of the same run, and the figure is
the median of those per-run differences, which a slow spell of the machine shifts far less
than a difference of medians. Each question is timed as `EXPLAIN` (planning only) and as the
query. Before timing, every mode must see exactly one workspace's rows.
"""

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

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
# The scope as the keyed policy reads it from the request's setting.
SCOPE = f"hexabase|{ORG}|{WS}"
KEYED = ("org_id = splitByChar('|', getSetting('log_comment'))[2] "
         "AND has(splitByChar(',', splitByChar('|', getSetting('log_comment'))[3]), workspace)")
# The store's statement: request text and scope as parameters, computed integers as literals.
WHERE = (f"timestamp >= fromUnixTimestamp64Nano({END - DAY}) AND timestamp < fromUnixTimestamp64Nano({END}) "
         "AND org_id = {org:String} AND workspace = {scope_one:String}")
PARAMS = {"org": ORG, "scope_one": WS}
STEP = 300_000_000_000
LINE = ("timestamp, toInt64(0) AS observed_timestamp, org_id, workspace, project, application, pod, container, node, "
        "stream, severity, message, attributes, trace_id, '' AS span_id")
PAGE = "ORDER BY timestamp DESC, pod, message, trace_id LIMIT 100"
QUESTIONS = {
    "rare word": f"SELECT {LINE} FROM hexabase.logs WHERE {WHERE} AND positionCaseInsensitive(message, {{t0:String}}) > 0 {PAGE}",
    "phrase": f"SELECT {LINE} FROM hexabase.logs WHERE {WHERE} AND positionCaseInsensitive(message, {{t1:String}}) > 0 {PAGE}",
    "LogQL count by level": f"SELECT intDiv(toUnixTimestamp64Nano(timestamp) - {END - DAY}, {STEP}) AS bucket, severity, count() "
    f"FROM hexabase.logs WHERE {WHERE} GROUP BY bucket, severity",
}
TERMS = {"t0": "quokka", "t1": "Received block"}
MODES = ["none", "table filter", "fixed policy", "keyed policy"]


def sql_string(s):
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def xml_text(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


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
    for mode, condition in [("fixed policy", WALL), ("keyed policy", KEYED)]:
        m = os.path.join(d, mode.replace(" ", "-"))
        os.makedirs(m)
        with open(os.path.join(m, "users.xml"), "w") as f:
            f.write(
                "<clickhouse><users><default><password></password><networks><ip>::/0</ip></networks>"
                "<profile>default</profile><quota>default</quota>"
                f"<databases><hexabase><logs><filter>{xml_text(condition)}</filter></logs></hexabase></databases>"
                "</default></users><profiles><default></default></profiles><quotas><default></default></quotas></clickhouse>"
            )
        with open(os.path.join(m, "config.xml"), "w") as f:
            f.write(f"<clickhouse><user_directories><users_xml><path>{m}/users.xml</path></users_xml></user_directories></clickhouse>")


def child(d, mode):
    """One engine in `mode`, on its own copy of the data: answers `<question>|<plan or query>`
    lines with the milliseconds the question took."""
    import chdb

    path = os.path.join(d, "data-" + mode.replace(" ", "-"))
    shutil.copytree(os.path.join(d, "data"), path, symlinks=True)
    config = os.path.join(d, mode.replace(" ", "-"), "config.xml")
    c = chdb.connect(f"{path}?config-file={config}" if mode.endswith("policy") else path)
    if mode == "table filter":
        c.query("SET additional_table_filters = " + sql_string("{'hexabase.logs': " + sql_string(WALL) + "}"))
    c.query("SET log_comment = " + sql_string(SCOPE))
    # The wall must be in force: every row counted is the one workspace's.
    seen = c.query("SELECT count(), uniqExact(workspace) FROM hexabase.logs", "TSV").bytes().decode().split()
    print(f"{seen[0]} {seen[1]}", flush=True)
    params = {**PARAMS, **TERMS}
    for line in sys.stdin:
        name, kind = line.strip().split("|")
        text = ("EXPLAIN " if kind == "plan" else "") + QUESTIONS[name]
        t = time.perf_counter()
        c.query(text, "TSV", params=params)
        print((time.perf_counter() - t) * 1e3, flush=True)
    c.close()


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--rows", type=int, default=1_000_000)
    a.add_argument("--runs", type=int, default=300)
    a.add_argument("--child", nargs=2, metavar=("DIR", "MODE"), help=argparse.SUPPRESS)
    args = a.parse_args()
    if args.child:
        return child(*args.child)
    with tempfile.TemporaryDirectory() as d:
        print(f"loading {args.rows} rows…", file=sys.stderr)
        build(d, args.rows)
        procs = {}
        try:
            for m in MODES:
                procs[m] = subprocess.Popen([sys.executable, __file__, "--child", d, m], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
                rows, workspaces = map(int, procs[m].stdout.readline().split())
                want = (args.rows, 100) if m == "none" else (args.rows // 100, 1)
                if (rows, workspaces) != want:
                    sys.exit(f"{m}: the wall did not hold (rows, workspaces seen: {rows}, {workspaces}; expected {want})")
            steps = [(name, kind) for name in QUESTIONS for kind in ["plan", "query"]]
            times = {(m, s): [] for m in MODES for s in steps}
            for r in range(args.runs + 10):
                if r % 50 == 0:
                    print(f"run {r}/{args.runs + 10}", file=sys.stderr)
                for s in steps:
                    order = MODES[:]
                    random.shuffle(order)
                    for m in order:
                        procs[m].stdin.write(f"{s[0]}|{s[1]}\n")
                        took = float(procs[m].stdout.readline())
                        if r >= 10:  # warm-up
                            times[(m, s)].append(took)
        finally:
            for p in procs.values():
                p.stdin.close()
                p.wait()
    print(f"\n## Engine-side wall: planning and query time, ms ({args.rows} rows, {args.runs} runs, modes taking turns)\n")
    print("Each mode: its median, and in brackets the median of its per-run differences from the baseline.\n")
    print("| question | step | " + " | ".join(MODES) + " |")
    print("|---|---|" + "--:|" * len(MODES))
    for s in steps:
        base = times[("none", s)]
        cells = [f"{statistics.median(base):.3f}"]
        for m in MODES[1:]:
            t = times[(m, s)]
            cells.append(f"{statistics.median(t):.3f} ({statistics.median(x - y for x, y in zip(t, base)):+.3f})")
        print(f"| {s[0]} | {'EXPLAIN' if s[1] == 'plan' else 'query'} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
