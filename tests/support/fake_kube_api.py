#!/usr/bin/env python3
"""A stand-in for one workspace's Kubernetes API server, for the tests: real HTTP, real
Kubernetes JSON (authorization.k8s.io/v1 SubjectAccessReview, v1 NamespaceList, v1 Status
errors), bearer-token authentication of the caller like a real API server.

It answers a SubjectAccessReview from a rule list:
  {"token": "...", "namespaces": ["shop", ...],
   "rules": [{"user": "alice", "groups": [], "namespaces": ["shop"] | ["*"]}]}
A rule matches when its user equals the review's user or one of its groups is among the
review's groups; `*` allows every namespace and the cluster-wide (empty namespace) review.

Reads may impersonate (`Impersonate-User`, `Impersonate-Group`, as the assistant's tools do):
they are allowed where a rule gives that user or group the namespace, else a 403 Status; the
requests log notes `as <user>` (or `as -`).

It also keeps objects like an API server does for server-side apply: PATCH with
`application/apply-patch+yaml` creates or replaces the object at its path (uid,
resourceVersion and creationTimestamp filled in; with `dryRun=All` nothing is stored), GET reads an object or lists a collection,
DELETE removes it (a namespace takes the objects inside it along), and a missing object is a
404 Status.

Test controls (not part of Kubernetes): POST /_control/rules (replace the rules),
POST /_control/mode {"mode": "ok" | "error" | "hang"}, GET /_control/stats,
GET /_control/objects (path -> object), GET /_control/requests (["PATCH /api/v1/…", …]),
POST /_control/pod_log {"path": ".../pods/p/log", "text": …},
POST /_control/status {"path": …, "status": {…}} (what a controller would write, e.g. a Job's),
POST /_control/faults [{"method": "PATCH", "path_contains": "resourcequotas", "code": 500,
"times": 2} | {..., "hang_secs": 30}] (each fault answers `times` matching requests).
"""

import argparse
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

STATE = {"rules": [], "namespaces": [], "token": "", "mode": "ok", "reviews": 0, "lists": 0, "last_review": None,
         "objects": {}, "requests": [], "faults": [], "version": 0, "pod_logs": {}}


def merge(target, patch):
    """JSON merge patch (RFC 7386): null removes, objects merge, anything else replaces."""
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, dict) and isinstance(target.get(k), dict):
            merge(target[k], v)
        else:
            target[k] = v


def namespace_of(path):
    segs = [x for x in path.split("/") if x]
    if "namespaces" in segs:
        i = segs.index("namespaces")
        if i + 2 < len(segs):  # a namespaced resource, not the namespace itself
            return segs[i + 1]
    return ""


def impersonation_allowed(user, groups, path):
    """Reads by an impersonated user: allowed where a rule gives the user (or a group) the
    namespace, like RBAC RoleBindings would."""
    ns = namespace_of(path)
    for rule in STATE["rules"]:
        if rule.get("user") == user or set(groups).intersection(rule.get("groups") or []):
            allowed = rule.get("namespaces") or []
            if "*" in allowed or (ns and ns in allowed):
                return True
    return False
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

    def raw(self):
        """The request body, read once: a request answered early must still have its body
        taken off the connection, or it would be read as the next request."""
        if self._raw is None:
            n = int(self.headers.get("Content-Length") or 0)
            self._raw = self.rfile.read(n) if n else b""
        return self._raw

    def parse_request(self):
        self._raw = None
        return super().parse_request()

    def body(self):
        return json.loads(self.raw() or b"{}")

    def authorised(self):
        self.raw()
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

    def fault(self, method, path):
        """Answers the request from a matching fault, if one is left; True when it did."""
        self.raw()
        with LOCK:
            STATE["requests"].append(method + " " + path)
            # This request's own entry: requests run on threads, so the last one may be another's.
            self.log_index = len(STATE["requests"]) - 1
            hit = None
            for f in STATE["faults"]:
                if f.get("times", 0) > 0 and f.get("method", method) == method and f.get("path_contains", "") in path:
                    f["times"] -= 1
                    hit = dict(f)
                    break
        if hit is None:
            return False
        if hit.get("hang_secs"):
            time.sleep(hit["hang_secs"])
            return True
        code = hit.get("code", 500)
        self.send_json(code, status(code, "InternalError" if code >= 500 else "Invalid", "injected failure"))
        return True

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/_control/stats":
            with LOCK:
                return self.send_json(200, {"reviews": STATE["reviews"], "lists": STATE["lists"], "last_review": STATE["last_review"]})
        if path == "/_control/objects":
            with LOCK:
                return self.send_json(200, STATE["objects"])
        if path == "/_control/requests":
            with LOCK:
                return self.send_json(200, STATE["requests"])
        if not self.authorised() or self.misbehave() or self.fault("GET", path):
            return
        user = self.headers.get("Impersonate-User")
        groups = self.headers.get_all("Impersonate-Group") or []
        with LOCK:
            STATE["requests"][self.log_index] += " as " + (user or "-")
        if user is not None and not impersonation_allowed(user, groups, path):
            return self.send_json(403, status(403, "Forbidden", 'pods is forbidden: User "%s" cannot get resource in the namespace "%s"' % (user, namespace_of(path))))
        if path.endswith("/log"):
            with LOCK:
                text = STATE["pod_logs"].get(path)
            if text is None:
                return self.send_json(404, status(404, "NotFound", "pods not found"))
            q = parse_qs(urlparse(self.path).query)
            lines = text.splitlines()
            if "tailLines" in q:
                lines = lines[-int(q["tailLines"][0]):]
            body = ("\n".join(lines) + "\n").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        with LOCK:
            obj = STATE["objects"].get(path)
            children = [o for p, o in STATE["objects"].items() if p.rsplit("/", 1)[0] == path]
        if obj is not None:
            return self.send_json(200, obj)
        if path == "/api/v1/namespaces":
            with LOCK:
                STATE["lists"] += 1
                items = [{"metadata": {"name": n, "uid": "uid-" + n, "resourceVersion": "1"}, "status": {"phase": "Active"}} for n in STATE["namespaces"]]
            return self.send_json(200, {"kind": "NamespaceList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items + children})
        segs = [x for x in path.split("/") if x]
        collection = (segs[:1] == ["api"] and len(segs) in (3, 5)) or (segs[:1] == ["apis"] and len(segs) in (4, 6))
        if children or collection:
            query = parse_qs(urlparse(self.path).query)
            for sel in ",".join(query.get("labelSelector", [])).split(","):
                if "=" in sel:
                    k, v = sel.split("=", 1)
                    children = [o for o in children if (o.get("metadata", {}).get("labels") or {}).get(k) == v]
            return self.send_json(200, {"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": str(STATE["version"])}, "items": children})
        self.send_json(404, status(404, "NotFound", "the server could not find the requested resource"))

    def do_PATCH(self):
        path = self.path.split("?")[0]
        if not self.authorised() or self.misbehave() or self.fault("PATCH", path):
            return
        user = self.headers.get("Impersonate-User")
        groups = self.headers.get_all("Impersonate-Group") or []
        with LOCK:
            STATE["requests"][self.log_index] += " as " + (user or "-")
        if user is not None and not impersonation_allowed(user, groups, path):
            return self.send_json(403, status(403, "Forbidden", 'User "%s" cannot patch resource in the namespace "%s"' % (user, namespace_of(path))))
        if self.headers.get("Content-Type") == "application/merge-patch+json":
            with LOCK:
                obj = STATE["objects"].get(path)
                if obj is None:
                    return self.send_json(404, status(404, "NotFound", "not found"))
                merge(obj, self.body())
                STATE["version"] += 1
                obj.setdefault("metadata", {})["resourceVersion"] = str(STATE["version"])
            return self.send_json(200, obj)
        if self.headers.get("Content-Type") != "application/apply-patch+yaml":
            return self.send_json(415, status(415, "UnsupportedMediaType", "server-side apply and merge patches are served here"))
        body = self.body()
        name = path.rsplit("/", 1)[-1]
        if body.get("metadata", {}).get("name") != name or not body.get("kind") or not body.get("apiVersion"):
            return self.send_json(422, status(422, "Invalid", "apiVersion, kind and metadata.name (matching the path) are required"))
        dry_run = "All" in parse_qs(urlparse(self.path).query).get("dryRun", [])
        with LOCK:
            old = STATE["objects"].get(path)
            if dry_run:  # admitted and answered, never stored
                STATE["requests"][self.log_index] += " (dry run)"
                return self.send_json(200 if old else 201, body)
            STATE["version"] += 1
            meta = body["metadata"]
            meta["uid"] = (old or {}).get("metadata", {}).get("uid") or "uid-%d" % STATE["version"]
            meta["creationTimestamp"] = (old or {}).get("metadata", {}).get("creationTimestamp") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            meta["resourceVersion"] = str(STATE["version"])
            STATE["objects"][path] = body
        self.send_json(200 if old else 201, body)

    def do_DELETE(self):
        path = self.path.split("?")[0]
        if not self.authorised() or self.misbehave() or self.fault("DELETE", path):
            return
        with LOCK:
            obj = STATE["objects"].pop(path, None)
            if obj is not None and obj.get("kind") == "Namespace":
                for p in [p for p in STATE["objects"] if p.startswith(path + "/")]:
                    del STATE["objects"][p]
        if obj is None:
            return self.send_json(404, status(404, "NotFound", "not found"))
        self.send_json(200, obj)

    def do_POST(self):
        if self.path == "/_control/rules":
            with LOCK:
                STATE["rules"] = self.body()
            return self.send_json(200, {})
        if self.path == "/_control/pod_log":
            req = self.body()
            with LOCK:
                STATE["pod_logs"][req["path"]] = req["text"]
            return self.send_json(200, {})
        if self.path == "/_control/status":
            req = self.body()
            with LOCK:
                obj = STATE["objects"].get(req.get("path"))
                if obj is not None:
                    obj["status"] = req.get("status")
            return self.send_json(200 if obj is not None else 404, {})
        if self.path == "/_control/faults":
            with LOCK:
                STATE["faults"] = self.body()
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
