#!/usr/bin/env python3
"""A scripted model server for the assistant's tests: real HTTP speaking the OpenAI chat
completions wire format (POST /v1/chat/completions, `stream: true` as server-sent events, tool
calls as indexed deltas, usage in the last chunk) and Ollama's (POST /api/chat, NDJSON, tool
calls whole, `done` with eval counts). It answers from a script instead of weights.

Each request takes the next reply of the script (the last one repeats):
  {"text": "...", "chunks": 3, "delay_ms": 0}    text in pieces
  {"tool_calls": [{"name": "...", "arguments": {...}}], "text": "..."}
  {"error": 500}                                  an HTTP error with an OpenAI/Ollama error body
  {"hang": true}                                  headers, then nothing (until the client leaves)

Test controls (not part of either API): POST /_control/script [replies],
GET /_control/requests (every request body received), GET /_control/stats
({"requests": n, "cancelled": n}: streams the client closed before their end).
"""

import argparse
import json
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATE = {"script": [{"text": "ok"}], "next": 0, "requests": [], "cancelled": 0}
LOCK = threading.Lock()


def next_reply():
    with LOCK:
        script = STATE["script"]
        i = min(STATE["next"], len(script) - 1)
        STATE["next"] += 1
        return script[i]


def pieces(text, n):
    n = max(1, min(n, len(text) or 1))
    size = -(-len(text) // n) if text else 1
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send_json(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"{}")

    def do_GET(self):
        with LOCK:
            if self.path == "/_control/requests":
                return self.send_json(200, STATE["requests"])
            if self.path == "/_control/stats":
                return self.send_json(200, {"requests": len(STATE["requests"]), "cancelled": STATE["cancelled"]})
        self.send_json(404, {"error": "not found"})

    def do_POST(self):
        if self.path == "/_control/script":
            with LOCK:
                STATE["script"] = self.body()
                STATE["next"] = 0
                STATE["requests"] = []
                STATE["cancelled"] = 0
            return self.send_json(200, {})
        req = self.body()
        with LOCK:
            STATE["requests"].append({"path": self.path, "body": req})
        reply = next_reply()
        if "error" in reply:
            code = reply["error"]
            if self.path.startswith("/api/"):
                return self.send_json(code, {"error": "scripted failure"})
            return self.send_json(code, {"error": {"message": "scripted failure", "type": "server_error" if code >= 500 else "invalid_request_error", "param": None, "code": None}})
        try:
            if self.path == "/v1/chat/completions":
                self.openai(req, reply)
            elif self.path == "/api/chat":
                self.ollama(req, reply)
            else:
                self.send_json(404, {"error": "not found"})
        except (BrokenPipeError, ConnectionResetError):
            with LOCK:
                STATE["cancelled"] += 1

    def start_stream(self, content_type):
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def hang(self):
        # Holds the stream open; writing keep-alive comments notices a client that left.
        for _ in range(600):
            time.sleep(0.1)
            self.chunk(b": waiting\n\n" if self.path.startswith("/v1/") else b"\n")
        raise BrokenPipeError()

    def openai(self, req, reply):
        model = req.get("model", "scripted")
        self.start_stream("text/event-stream")

        def event(obj):
            self.chunk(b"data: " + json.dumps(obj).encode() + b"\n\n")

        def delta(d, finish=None):
            event({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": model,
                   "choices": [{"index": 0, "delta": d, "finish_reason": finish}]})

        if reply.get("hang"):
            delta({"role": "assistant", "content": ""})
            return self.hang()
        delta({"role": "assistant", "content": ""})
        text = reply.get("text", "")
        for p in pieces(text, reply.get("chunks", 3)) if text else []:
            time.sleep(reply.get("delay_ms", 0) / 1000)
            delta({"content": p})
        calls = reply.get("tool_calls", [])
        for i, c in enumerate(calls):
            args = json.dumps(c.get("arguments", {}))
            half = len(args) // 2
            delta({"tool_calls": [{"index": i, "id": "call_%d_%d" % (STATE["next"], i), "type": "function", "function": {"name": c["name"], "arguments": args[:half]}}]})
            delta({"tool_calls": [{"index": i, "function": {"arguments": args[half:]}}]})
        delta({}, "tool_calls" if calls else "stop")
        event({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [],
               "usage": {"prompt_tokens": 100 + len(json.dumps(req.get("messages", []))) // 4, "completion_tokens": 10 + len(text) // 4, "total_tokens": 0}})
        self.chunk(b"data: [DONE]\n\n")
        self.chunk(b"")

    def ollama(self, req, reply):
        model = req.get("model", "scripted")
        self.start_stream("application/x-ndjson")

        def line(obj):
            self.chunk(json.dumps(obj).encode() + b"\n")

        def message(content, calls=None, done=False):
            m = {"role": "assistant", "content": content}
            if calls:
                m["tool_calls"] = calls
            obj = {"model": model, "created_at": "2026-12-01T00:00:00Z", "message": m, "done": done}
            if done:
                obj.update({"done_reason": "stop", "total_duration": 1, "load_duration": 1, "prompt_eval_count": 42, "prompt_eval_duration": 1, "eval_count": 7, "eval_duration": 1})
            line(obj)

        if reply.get("hang"):
            return self.hang()
        text = reply.get("text", "")
        for p in pieces(text, reply.get("chunks", 3)) if text else []:
            time.sleep(reply.get("delay_ms", 0) / 1000)
            message(p)
        calls = [{"function": {"name": c["name"], "arguments": c.get("arguments", {})}} for c in reply.get("tool_calls", [])]
        if calls:
            message("", calls)
        message("", done=True)
        self.chunk(b"")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    args = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(args.port_file + ".tmp", args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
