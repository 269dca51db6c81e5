#!/usr/bin/env python3
"""A stand-in for one workspace's Kubernetes API server, for the tests: real HTTP, real
Kubernetes JSON (authorization.k8s.io/v1 SubjectAccessReview, v1 NamespaceList, v1 Status
errors), bearer-token authentication of the caller like a real API server.

It answers a SubjectAccessReview from a rule list:
  {"token": "...", "namespaces": ["shop", ...],
   "rules": [{"user": "alice", "groups": [], "namespaces": ["shop"] | ["*"]}]}
A rule matches when its user equals the review's user or one of its groups is among the
review's groups; `*` allows every namespace and the cluster-wide (empty namespace) review.

Test controls (not part of Kubernetes): POST /_control/rules (replace the rules),
POST /_control/mode {"mode": "ok" | "error" | "hang"}, GET /_control/stats.
"""

import argparse
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATE = {"rules": [], "namespaces": [], "token": "", "mode": "ok", "reviews": 0, "lists": 0, "last_review": None}
LOCK = threading.Lock()


def status(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code}


def decide(spec):
    user = spec.get("user", "")
    groups = set(spec.get("groups") or [])
    attrs = spec.get("resourceAttributes") or {}
    ns = attrs.get("namespace", "")
    if (attrs.get("verb"), attrs.get("resource"), attrs.get("subresource")) != ("get", "pods", "log"):
        return False, "only get pods/log is served here"
    for rule in STATE["rules"]:
        if rule.get("user") == user or groups.intersection(rule.get("groups") or []):
            allowed = rule.get("namespaces") or []
            if "*" in allowed or (ns and ns in allowed):
                return True, "RBAC: allowed by test rule"
    return False, ""


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

    def authorised(self):
        if self.headers.get("Authorization") != "Bearer " + STATE["token"]:
            self.send_json(401, status(401, "Unauthorized", "Unauthorized"))
            return False
        return True

    def misbehave(self):
        mode = STATE["mode"]
        if mode == "error":
            self.send_json(500, status(500, "InternalError", "etcdserver: request timed out"))
            return True
        if mode == "hang":
            time.sleep(30)
            return True
        return False

    def do_GET(self):
        if self.path == "/_control/stats":
            with LOCK:
                return self.send_json(200, {"reviews": STATE["reviews"], "lists": STATE["lists"], "last_review": STATE["last_review"]})
        if not self.authorised() or self.misbehave():
            return
        if self.path.split("?")[0] == "/api/v1/namespaces":
            with LOCK:
                STATE["lists"] += 1
                items = [{"metadata": {"name": n, "uid": "uid-" + n, "resourceVersion": "1"}, "status": {"phase": "Active"}} for n in STATE["namespaces"]]
            return self.send_json(200, {"kind": "NamespaceList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items})
        self.send_json(404, status(404, "NotFound", "the server could not find the requested resource"))

    def do_POST(self):
        if self.path == "/_control/rules":
            with LOCK:
                STATE["rules"] = self.body()
            return self.send_json(200, {})
        if self.path == "/_control/mode":
            with LOCK:
                STATE["mode"] = self.body().get("mode", "ok")
            return self.send_json(200, {})
        if not self.authorised():
            return
        if self.path.split("?")[0] == "/apis/authorization.k8s.io/v1/subjectaccessreviews":
            review = self.body()
            with LOCK:
                STATE["reviews"] += 1
                STATE["last_review"] = review.get("spec")
            if self.misbehave():
                return
            if review.get("kind") != "SubjectAccessReview" or review.get("apiVersion") != "authorization.k8s.io/v1":
                return self.send_json(400, status(400, "BadRequest", "not a SubjectAccessReview"))
            with LOCK:
                allowed, reason = decide(review.get("spec") or {})
            review.setdefault("metadata", {})
            review["status"] = {"allowed": allowed, "reason": reason}
            return self.send_json(201, review)
        self.send_json(404, status(404, "NotFound", "the server could not find the requested resource"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--port-file", required=True)
    args = ap.parse_args()
    with open(args.config) as f:
        cfg = json.load(f)
    STATE.update({"rules": cfg.get("rules", []), "namespaces": cfg.get("namespaces", []), "token": cfg["token"]})
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    import os
    os.replace(args.port_file + ".tmp", args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
