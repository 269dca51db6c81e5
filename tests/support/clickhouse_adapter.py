#!/usr/bin/env python3
"""ClickHouse's HTTP interface over chdb (the ClickHouse engine, in process), for tests.

The project's real ClickHouse client talks to this exactly as it would to a server, so tests
exercise the real wire format, the real SQL engine and real insert deduplication, without a
ClickHouse install. Standard library plus `chdb` only.

    python3 clickhouse_adapter.py --data DIR [--host 127.0.0.1] [--port 0] [--port-file FILE]

Besides ClickHouse's `/`, `/ping`: `POST /__fault?mode=M&count=N` arms a fault for the next N
INSERT requests (`refuse_before`: read the body, then reset the connection without applying;
`reset_after`: apply, then reset without answering; `error_500`: answer a ClickHouse-style 500
without applying; `ok`: clear), and `GET /__stats` returns `{"inserts": n, "queries": n, ...}`
(`inserts` counts applied INSERTs, `queries` other statements run).

Where this differs from a real server (unknown settings ignored, GET not read-only, no users,
no sessions, no compressed-block format), tests must not rely on the difference. Engine
connections are kept per exact database and settings (see `Connections`), so a setting costs
what it costs a server, not a statement per request.
"""

import argparse
import json
import os
import re
import socket
import struct
import sys
import threading
import time
import zlib
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from urllib.parse import parse_qsl, urlsplit

import chdb

VERSION = "26.9"
# URL parameters the HTTP layer consumes; every other one is a setting for the request.
NOT_SETTINGS = {"query", "database", "default_format", "query_id", "session_id", "session_timeout",
                "session_check", "compress", "decompress", "user", "password", "quota_key",
                "buffer_size", "wait_end_of_query", "role", "stacktrace"}
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
INSERT = re.compile(r"^\s*INSERT\b", re.I)
# `INSERT ... FORMAT X<data>`: the statement head, the format, and any inline data.
INSERT_FORMAT = re.compile(r"^(.*?)\bFORMAT\s+([A-Za-z0-9_]+)(.*)$", re.I | re.S)
# Statements that change a connection's own state, after which it is not kept for reuse.
STATEFUL = re.compile(r"^\s*(SET|USE|CREATE\s+TEMPORARY|DROP\s+TEMPORARY)\b", re.I)
TRAILING_FORMAT = re.compile(r"\bFORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.I)
CODE = re.compile(r"Code:\s*(\d+)")
# As real ClickHouse does (HTTPHandler's exceptionCodeToHTTPStatus, abridged): 400 for statements
# or data that can never parse, 404 for unknown objects, 500 for the rest.
BAD_REQUEST = {6, 26, 27, 36, 38, 41, 62, 69, 72, 457}
NOT_FOUND = {46, 47, 60, 73, 81, 115, 456}
INSERT_CHUNK = 1 << 20  # bytes handed to the engine at once while streaming an insert


class Fault:
    def __init__(self):
        self.lock = threading.Lock()
        self.mode, self.count = "ok", 0
        self.stats = {"inserts": 0, "queries": 0, "faults": 0}

    def take(self):
        """The fault for the INSERT being handled now, if one is armed."""
        with self.lock:
            if self.mode == "ok" or self.count <= 0:
                return None
            self.count -= 1
            self.stats["faults"] += 1
            return self.mode

    def bump(self, key):
        with self.lock:
            self.stats[key] += 1


class Connections:
    """Engine connections kept between requests, each for one exact database and settings.

    A server applies a request's URL settings to that query's context at no cost; here each
    setting is a `SET` statement on a fresh connection, which costs as much as a small query.
    So a connection whose settings are applied is kept and reused, but only by a later request
    with exactly the same database and settings: nothing leaks from one request to another."""

    PER_KEY, KEYS = 4, 64

    def __init__(self):
        self.lock = threading.Lock()
        self.idle = OrderedDict()  # (database, settings) -> [connection]

    def take(self, key):
        with self.lock:
            kept = self.idle.get(key)
            return kept.pop() if kept else None

    def give(self, key, conn):
        closing = []
        with self.lock:
            kept = self.idle.setdefault(key, [])
            self.idle.move_to_end(key)
            if len(kept) < self.PER_KEY:
                kept.append(conn)
            else:
                closing.append(conn)
            while len(self.idle) > self.KEYS:
                closing.extend(self.idle.popitem(last=False)[1])
        for c in closing:
            c.close()


class ChError(Exception):
    def __init__(self, text):
        text = str(text)
        # chdb prefixes wrapper text ("Streaming insert finish failed: "); keep ClickHouse's part.
        at = text.find("Code:")
        self.text = text[at:] if at >= 0 else "Code: 1000. DB::Exception: " + text
        m = CODE.search(self.text)
        self.code = int(m.group(1)) if m else 1000


def sql_string(v):
    return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_name(v):
    return "`" + v.replace("\\", "\\\\").replace("`", "\\`") + "`"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    server_version = "ClickHouse-adapter"

    def setup(self):
        super().setup()
        # Without TCP_NODELAY each response waits ~40 ms for the peer's delayed ACK.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("adapter: " + (fmt % args) + "\n")

    # ---- request bodies -------------------------------------------------------------------

    def body_chunks(self):
        """Yields the decoded request body: de-chunked, then decompressed."""
        def raw():
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                while True:
                    if hasattr(socket, "TCP_QUICKACK"):  # ack chunks at once (Linux)
                        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
                    size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return
                    data = self.rfile.read(size)
                    self.rfile.readline(3)
                    yield data
            else:
                left = int(self.headers.get("Content-Length") or 0)
                while left > 0:
                    data = self.rfile.read(min(left, 1 << 16))
                    if not data:
                        raise ConnectionError("body ended early")
                    left -= len(data)
                    yield data
        enc = self.headers.get("Content-Encoding", "").strip().lower()
        if enc in ("", "identity", "none"):
            yield from raw()
            return
        if enc in ("gzip", "deflate"):
            d = zlib.decompressobj(16 + zlib.MAX_WBITS if enc == "gzip" else zlib.MAX_WBITS)
            for c in raw():
                yield d.decompress(c)
            yield d.flush()
            return
        if enc == "zstd":
            try:
                import zstandard  # optional: the standard library has no zstd before 3.14
            except ImportError:
                self.drain(raw())
                raise ChError("Code: 48. DB::Exception: zstd request bodies need the zstandard module")
            d = zstandard.ZstdDecompressor().decompressobj()
            for c in raw():
                yield d.decompress(c)
            return
        self.drain(raw())
        raise ChError(f"Code: 48. DB::Exception: Unsupported Content-Encoding {enc}")

    @staticmethod
    def drain(chunks):
        for _ in chunks:
            pass

    def multipart(self, body):
        """`multipart/form-data` fields, as the client sends `query` with `param_*`."""
        m = re.search(r'boundary="?([^";]+)"?', self.headers.get("Content-Type", ""))
        if not m:
            raise ChError("Code: 36. DB::Exception: multipart body without boundary")
        fields = {}
        for part in body.split(b"--" + m.group(1).encode())[1:]:
            if part.startswith(b"--"):
                break
            head, _, value = part.partition(b"\r\n\r\n")
            name = re.search(rb'name="([^"]*)"', head)
            if name:
                fields[name.group(1).decode()] = value[:-2] if value.endswith(b"\r\n") else value
        return fields

    # ---- HTTP verbs -----------------------------------------------------------------------

    def do_HEAD(self):
        self.reply(200, b"", body=False)

    def do_GET(self):
        self.dispatch()

    def do_POST(self):
        self.dispatch()

    def dispatch(self):
        url = urlsplit(self.path)
        args = dict(parse_qsl(url.query, keep_blank_values=True))
        try:
            if url.path == "/ping" or (url.path == "/" and self.command == "GET" and "query" not in args):
                self.drain(self.body_chunks())
                return self.reply(200, b"Ok.\n")
            if url.path == "/__stats":
                with self.server.fault.lock:
                    return self.reply(200, json.dumps(self.server.fault.stats).encode(), "application/json")
            if url.path == "/__fault":
                self.drain(self.body_chunks())
                f = self.server.fault
                with f.lock:
                    f.mode, f.count = args.get("mode", "ok"), int(args.get("count", "1"))
                return self.reply(200, b"Ok.\n")
            if url.path != "/":
                self.drain(self.body_chunks())
                return self.reply(404, b"There is no handle " + url.path.encode() + b"\n")
            self.run(args)
        except ChError as e:
            self.error(e)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as e:  # a bug here: answer like a server would, then start afresh
            self.close_connection = True
            self.error(ChError(f"Code: 1001. DB::Exception: adapter failure: {e!r}"))

    def run(self, args):
        params = {k[6:]: v for k, v in args.items() if k.startswith("param_")}
        settings = {k: v for k, v in args.items() if k not in NOT_SETTINGS and not k.startswith("param_")}
        query = args.get("query")
        chunks = self.body_chunks()
        if args.get("decompress") == "1" or args.get("compress") == "1":
            # ClickHouse's own compressed-block format (the client's LZ4/ZSTD compression).
            self.drain(chunks)
            raise ChError("Code: 48. DB::Exception: compressed blocks are not supported here; use no compression")
        if "multipart/form-data" in self.headers.get("Content-Type", ""):
            fields = self.multipart(b"".join(chunks))
            params.update({k[6:]: v.decode() for k, v in fields.items() if k.startswith("param_")})
            if "query" in fields:
                query = (query + "\n" if query else "") + fields["query"].decode()
            chunks = iter(())
        elif query is None:
            # No query in the URL: the body is the query (and maybe inline, even binary, data).
            query = b"".join(chunks).decode("utf-8", "surrogateescape")
            chunks = iter(())
        fmt = args.get("default_format", "TabSeparated")
        m = INSERT_FORMAT.match(query) if INSERT.match(query) else None
        if m:
            return self.insert(m, chunks, args, settings, params)
        if INSERT.match(query):
            fault = self.server.fault.take()
            if fault:
                return self.apply_fault(fault, chunks, None)
        rest = b"".join(chunks)  # a body after a URL query continues the statement
        if rest:
            query += "\n" + rest.decode("utf-8", "surrogateescape")
        key = (args.get("database", ""), tuple(sorted(settings.items())))
        conn = self.server.connections.take(key) or self.connect(args, settings, params)
        try:
            # Query parameters go to the engine as parameters (`{name:Type}`), as a server takes them.
            res = conn.query(query, fmt, params=params) if params else conn.query(query, fmt)
        except Exception as e:  # chdb raises its own types; all carry ClickHouse's text
            conn.close()
            raise ChError(e) from None
        if STATEFUL.match(query):
            conn.close()
        else:
            self.server.connections.give(key, conn)
        self.server.fault.bump("inserts" if INSERT.match(query) else "queries")
        t = TRAILING_FORMAT.search(query)
        self.reply(200, res.bytes(), fmt=t.group(1) if t else fmt, summary={
            "read_rows": res.rows_read(), "read_bytes": res.bytes_read(),
            "written_rows": res.rows_written(), "written_bytes": res.bytes_written(),
            "result_bytes": len(res.bytes()), "elapsed_ns": int(res.elapsed() * 1e9)})

    def insert(self, m, chunks, args, settings, params):
        """Streams the body of `INSERT ... FORMAT X` into the engine."""
        head, fmt, inline = m.group(1), m.group(2), m.group(3)
        inline = inline.lstrip(" \t")
        inline = inline[2:] if inline.startswith("\r\n") else inline[1:] if inline.startswith("\n") else inline
        fault = self.server.fault.take()
        if fault:
            return self.apply_fault(fault, chunks, (head, fmt, inline, args, settings, params))
        result = self.stream_insert(head, fmt, inline, chunks, args, settings, params)
        self.server.fault.bump("inserts")
        self.reply(200, b"", summary={"read_rows": 0, "read_bytes": 0, "written_rows": result.rows_written,
                                      "written_bytes": result.bytes_written, "result_rows": 0,
                                      "result_bytes": 0, "elapsed_ns": int(result.elapsed * 1e9)})

    def stream_insert(self, head, fmt, inline, chunks, args, settings, params):
        conn = None
        try:
            conn = self.connect(args, settings, params, as_settings=True)
            ins = conn.send_insert(head, fmt)
            buf = bytearray(inline.encode("utf-8", "surrogateescape"))
            for c in chunks:
                buf += c
                if len(buf) >= INSERT_CHUNK:
                    ins.append(bytes(buf))
                    buf.clear()
            if buf:
                ins.append(bytes(buf))
            return ins.finish()
        except ChError:
            self.drain(chunks)
            raise
        except Exception as e:
            self.drain(chunks)  # the rest of the body, or the kept-alive connection breaks
            raise ChError(e) from None
        finally:
            if conn is not None:
                conn.close()

    def apply_fault(self, fault, chunks, insert):
        if fault == "reset_after":
            if insert:
                self.stream_insert(insert[0], insert[1], insert[2], chunks, *insert[3:])
                self.server.fault.bump("inserts")
            else:
                self.drain(chunks)
            return self.reset()
        self.drain(chunks)
        if fault == "refuse_before":
            return self.reset()
        raise ChError("Code: 999. DB::Exception: injected fault")

    def reset(self):
        """Closes the connection with a TCP RST and no response (SO_LINGER 0)."""
        sock = self.connection
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()
        self.wfile.close()  # the socket closes for real only once its files are closed
        sock.close()
        self.rfile, self.wfile = BytesIO(), BytesIO()  # what the base class flushes afterwards
        self.close_connection = True

    # ---- engine ---------------------------------------------------------------------------

    def connect(self, args, settings, params, as_settings=False):
        """A fresh connection per request so that settings and parameters never leak."""
        conn = chdb.connect(self.server.data)
        try:
            if args.get("database"):
                conn.query("USE " + quote_name(args["database"]), "TabSeparated")
            # Inserts stream through `send_insert`, which takes no parameters: set them instead.
            for name, value in list(settings.items()) + ([("param_" + k, v) for k, v in params.items()] if as_settings else []):
                if not NAME.match(name):
                    continue
                try:
                    conn.query(f"SET {name} = {sql_string(value)}", "TabSeparated")
                except Exception as e:  # noqa: BLE001 - unknown settings are ignored, as documented
                    if ChError(e).code != 115:
                        raise
                    self.log_message("ignored setting %s", name)
        except Exception as e:
            conn.close()
            raise ChError(e) from None
        return conn

    # ---- responses ------------------------------------------------------------------------

    def error(self, e):
        status = 400 if e.code in BAD_REQUEST else 404 if e.code in NOT_FOUND else 500
        text = e.text.rstrip("\n") + "\n"
        self.reply(status, text.encode(), headers={"X-ClickHouse-Exception-Code": str(e.code)})

    def reply(self, status, data, ctype=None, fmt=None, summary=None, headers=None, body=True):
        if ctype is None:
            f = (fmt or "").lower()
            ctype = ("application/json; charset=UTF-8" if f.startswith("json") else
                     "text/tab-separated-values; charset=UTF-8" if f.startswith(("tab", "tsv")) else
                     "text/csv; charset=UTF-8" if f.startswith("csv") else
                     "application/octet-stream" if fmt else "text/plain; charset=UTF-8")
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-ClickHouse-Server-Display-Name", "adapter")
        self.send_header("X-ClickHouse-Timezone", "UTC")
        if fmt:
            self.send_header("X-ClickHouse-Format", fmt)
        if summary is not None:  # ClickHouse sends every value as a string
            self.send_header("X-ClickHouse-Summary", json.dumps({k: str(v) for k, v in summary.items()}))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if body:
            self.wfile.write(data)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="chdb data directory (one adapter per directory)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--port-file", help="written atomically with the bound port")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--exit-with-parent", action="store_true", help="stop when the process that started this one ends")
    a = ap.parse_args()
    os.makedirs(a.data, exist_ok=True)
    server = Server((a.host, a.port), Handler)
    server.data = os.path.abspath(a.data)
    server.verbose = a.verbose
    server.fault = Fault()
    server.connections = Connections()
    # The session: one engine for the process, kept open so per-request connections are cheap.
    session = chdb.connect(server.data)
    session.query("SELECT 1", "TabSeparated")
    port = server.server_address[1]
    if a.port_file:
        tmp = f"{a.port_file}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, a.port_file)
    print(f"listening {a.host}:{port}", flush=True)
    if a.exit_with_parent:
        # A test or benchmark stopped by a signal never drops its guard: leave with it.
        parent = os.getppid()

        def watch():
            while os.getppid() == parent:
                time.sleep(1)
            server.shutdown()

        threading.Thread(target=watch, daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        session.close()


if __name__ == "__main__":
    main()
