#!/usr/bin/env python3
"""Mock of DQE Software's OAuth2 token endpoint plus a protected API.

Used by the ngx_http_dqe_oauth_module Test::Nginx suite; reusable in other
suites.  Python 3.11 standard library only.  See t/dqe_mock.md.

    python3 t/dqe_mock.py --listen 127.0.0.1:0 [--tls-cert C --tls-key K]
        [--control 127.0.0.1:0] [--ttl 300] [--refresh-ttl 600]
        [--licences FILE] [--pid-file F] [--quiet]

Prints one line "READY port=<main> control=<control or 0>" when listening.
"""

import argparse
import hashlib
import hmac
import json
import math
import os
import secrets
import signal
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

TOKEN_PATH = "/oauth/access_token/"
FORM_TYPE = "application/x-www-form-urlencoded"
KNOWN_SCOPES = (
    "client_address", "client_email", "client_phone", "client_idcheck",
    "client_general", "client_b2b", "client_civility",
)
REFRESH_SCOPE = "refresh_token"
ALLOWED_PARAMS = frozenset(
    ("client_id", "client_secret", "scope", "access_token", "refresh_token"))
ERROR_CODES = ("invalid_request", "unsupported_grant_type", "invalid_client",
               "unauthorized_client", "invalid_grant")
# Fixed descriptions: they never echo a secret, a token or any value.
ERROR_DESCRIPTIONS = {
    "invalid_request": "Missing or empty required parameter",
    "unsupported_grant_type": "Unsupported scope",
    "invalid_client": "Client authentication failed",
    "unauthorized_client": "The licence is not allowed this scope",
    "invalid_grant": "Invalid, expired or already used refresh token",
    "server_error": "Injected fault",
}
EXPIRES_IN_STYLES = ("string", "number", "missing")
ERROR_STYLES = ("json", "text", "html", "empty")
FAULT_MODES = ("close", "reset", "garbage", "truncate")
MAX_BODY = 4 << 20
HANDSHAKE_TIMEOUT = 10.0
IDLE_TIMEOUT = 75.0
PRUNE_EVERY = 1024

DEFAULT_LICENCES = [
    {"id": "123456", "secret": "s3cr3t-pass", "scopes": list(KNOWN_SCOPES),
     "expired": False},
    {"id": "654321", "secret": "other-pass", "scopes": list(KNOWN_SCOPES),
     "expired": False},
    {"id": "222222", "secret": "s3cr3t-pass", "scopes": ["client_email"],
     "expired": False},
    {"id": "999999", "secret": "s3cr3t-pass", "scopes": list(KNOWN_SCOPES),
     "expired": True},
    # a secret being rotated: the old one and the new one both valid
    {"id": "333333", "secret": ["s3cr3t-pass", "s3cr3t-pass-new"],
     "scopes": list(KNOWN_SCOPES), "expired": False},
] + [
    # many credential sets, for cache-size tests: 100000 .. 100999
    {"id": str(100000 + i), "secret": "bulk-pass",
     "scopes": list(KNOWN_SCOPES), "expired": False}
    for i in range(1000)
]


def dumps(obj):
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def parse_uint(value):
    """Non-negative decimal integer made of ASCII digits, else ValueError."""
    value = value.strip()
    if not value or not value.isascii() or not value.isdigit():
        raise ValueError(value)
    return int(value)


class BadRequest(Exception):
    pass


class TooLarge(Exception):
    pass


class Licence:
    __slots__ = ("id", "secrets", "scopes", "expired")

    def __init__(self, item):
        if not isinstance(item, dict):
            raise ValueError("each licence must be a JSON object")
        if "id" not in item or "secret" not in item:
            raise ValueError("each licence needs \"id\" and \"secret\"")
        self.id = str(item["id"])
        # one secret, or a list of those valid at once (a rotation)
        given = item["secret"]
        if not isinstance(given, list):
            given = [given]
        if not given:
            raise ValueError("\"secret\" must not be an empty list")
        self.secrets = tuple(str(s).encode("utf-8") for s in given)
        scopes = item.get("scopes", [])
        if not isinstance(scopes, list):
            raise ValueError("\"scopes\" must be a list")
        self.scopes = frozenset(str(s) for s in scopes)
        self.expired = bool(item.get("expired", False))


def load_licences(items):
    if not isinstance(items, list):
        raise ValueError("licences file must hold a JSON list")
    out = {}
    for item in items:
        lic = Licence(item)
        out[lic.id] = lic
    return out


class State:
    """All shared state; every access goes through self.lock."""

    def __init__(self, ttl, refresh_ttl, licences):
        self.lock = threading.Lock()
        self.defaults = {"ttl": ttl, "refresh_ttl": refresh_ttl,
                         "expires_in": "string", "error_style": "json"}
        self.licences = licences
        self.in_flight = 0
        self.reset_locked()

    def reset_locked(self):
        self.config = dict(self.defaults)
        # access token -> (licence id, scope, expiry on the monotonic clock)
        self.tokens = {}
        # refresh token -> {"at", "licence", "scope", "issued", "used"}
        self.refresh = {}
        self.fault = None
        # the API answers 401 to live tokens: {"n": left, "licence": id or None}
        self.reject = None
        self.reset_counters_locked()

    def reset_counters_locked(self):
        """Zero the counters only: tokens, config and fault stay."""
        self.token_requests = {"GET": 0, "POST": 0}
        self.token_status = {"200": 0, "400": 0, "500": 0}
        self.token_errors = {c: 0 for c in ERROR_CODES}
        self.tokens_issued = 0
        self.refresh_requests = 0
        self.refresh_ok = 0
        self.token_faults = 0
        self.api = {"200": 0, "401": 0}
        self.api_rejected = 0
        self.api_auth_last = 0
        self.api_auth_max = 0
        self.workers = set()
        self.last_params = []
        self.last_ct = ""
        self.last_method = ""
        self.last_headers = []
        self.last_version = ""
        self.in_flight_max = 0
        self.issues_since_prune = 0

    # -- tokens -------------------------------------------------------------

    def live_count_locked(self, now):
        return sum(1 for e in self.tokens.values() if e[2] > now)

    def prune_locked(self, now):
        self.issues_since_prune = 0
        for tok in [t for t, e in self.tokens.items() if e[2] <= now]:
            del self.tokens[tok]
        rttl = self.config["refresh_ttl"]
        for tok in [t for t, e in self.refresh.items()
                    if e["used"] or now - e["issued"] >= rttl]:
            del self.refresh[tok]

    def issue_locked(self, licence_id, scope):
        now = time.monotonic()
        self.issues_since_prune += 1
        if self.issues_since_prune >= PRUNE_EVERY:
            self.prune_locked(now)
        ttl = self.config["ttl"]
        access = "TK" + secrets.token_hex(20)
        refresh = "*TK" + secrets.token_hex(20)
        self.tokens[access] = (licence_id, scope, now + ttl)
        self.refresh[refresh] = {"at": access, "licence": licence_id,
                                 "scope": scope, "issued": now, "used": False}
        self.tokens_issued += 1
        reply = {"access_token": access, "token_type": "Bearer"}
        style = self.config["expires_in"]
        if style == "string":
            reply["expires_in"] = str(ttl)
        elif style == "number":
            reply["expires_in"] = ttl
        reply["refresh_token"] = refresh
        return reply

    def token_scope_locked(self, token):
        e = self.tokens.get(token)
        if e is None or e[2] <= time.monotonic():
            return None
        rj = self.reject
        if rj is not None and rj["licence"] in (None, e[0]):
            rj["n"] -= 1
            if rj["n"] <= 0:
                self.reject = None
            self.api_rejected += 1
            return None
        return e[1]

    def revoke_locked(self, token=None, licence=None, scope=None):
        """Kill live tokens: one, a set's (licence, scope) or all."""
        now = time.monotonic()
        n = 0
        for tok, e in list(self.tokens.items()):
            if e[2] <= now:
                continue
            if token is not None and tok != token:
                continue
            if licence is not None and e[0] != licence:
                continue
            if scope is not None and e[1] != scope:
                continue
            del self.tokens[tok]
            n += 1
        return n

    # -- fault --------------------------------------------------------------

    def take_fault_locked(self):
        f = self.fault
        if f is None:
            return None
        taken = dict(f)
        if f.get("count") is not None:
            f["count"] -= 1
            if f["count"] <= 0:
                self.fault = None
        self.token_faults += 1
        return taken

    # -- views --------------------------------------------------------------

    def stats_locked(self):
        return {
            "token_requests": dict(self.token_requests),
            "token_status": dict(self.token_status),
            "token_errors": dict(self.token_errors),
            "tokens_issued": self.tokens_issued,
            "refresh_requests": self.refresh_requests,
            "refresh_ok": self.refresh_ok,
            "api": dict(self.api),
            "api_auth_headers_last": self.api_auth_last,
            "api_auth_headers_max": self.api_auth_max,
            "workers_seen": len(self.workers),
            "last_token_params": list(self.last_params),
            "last_token_content_type": self.last_ct,
            "last_token_method": self.last_method,
            "last_token_headers": list(self.last_headers),
            "last_token_version": self.last_version,
            "token_in_flight_max": self.in_flight_max,
            "live_tokens": self.live_count_locked(time.monotonic()),
            "token_faults": self.token_faults,
            "api_rejected": self.api_rejected,
        }


def fault_view(f):
    if f is None:
        return None
    out = {}
    for k in ("status", "delay", "mode", "count"):
        if f.get(k) is not None:
            out[k] = f[k]
    if f.get("headers"):
        out["headers"] = ["%s: %s" % h for h in f["headers"]]
    if "body" in f:
        out["body"] = f["body"].decode("utf-8", "replace")
    return out


def error_body(style, code):
    """(body bytes, content type or None) for an OAuth error in a style."""
    if style == "json":
        return dumps({"error": code,
                      "error_description": ERROR_DESCRIPTIONS[code]}), \
            "application/json"
    phrase = code.replace("_", " ").title()
    if style == "text":
        return phrase.encode(), "text/plain"
    if style == "html":
        return ("<html><head><title>%s</title></head><body><h1>%s</h1>"
                "</body></html>\n" % (phrase, phrase)).encode(), "text/html"
    return b"", None


def safe_path(raw):
    """Request path for the log: no query string, no fragment, printable."""
    path = (raw or "").split("?", 1)[0].split("#", 1)[0]
    out = "".join(c if 32 < ord(c) < 127 else "\\x%02x" % (ord(c) & 0xff)
                  for c in path[:200])
    return out or "-"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "dqe-mock/1.0"
    timeout = IDLE_TIMEOUT
    disable_nagle_algorithm = True

    # Any method name is dispatched to _dispatch.
    def __getattr__(self, name):
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def version_string(self):
        return self.server_version

    @property
    def state(self):
        return self.server.state

    # -- logging (never the query string, never a body) ---------------------

    def handle_one_request(self):
        self.path = ""  # so a bad request line never logs an older path
        self.command = None
        return super().handle_one_request()

    def access_log(self, status):
        if self.server.quiet:
            return
        try:
            sys.stderr.write("%s dqe_mock %s %s %s %s\n" % (
                time.strftime("%Y-%m-%dT%H:%M:%S"), self.client_address[0],
                self.command or "-", safe_path(self.path), status))
            sys.stderr.flush()
        except (OSError, ValueError):
            pass

    def log_request(self, code="-", size="-"):
        self.access_log(int(code) if isinstance(code, int) else code)

    def log_error(self, *args):
        pass

    def log_message(self, *args):
        pass

    def send_error(self, code, message=None, explain=None):
        phrase = self.responses.get(code, ("Error",))[0]
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.1"  # always answer with headers
        self.send(code, ("%d %s\n" % (code, phrase)).encode(), "text/plain",
                  close=True)

    # -- I/O helpers --------------------------------------------------------

    def send(self, code, body=b"", ctype=None, headers=(), close=False):
        self.send_response(code)
        if ctype:
            self.send_header("Content-Type", ctype)
        for k, v in headers:
            self.send_header(k, v)
        no_body = code in (204, 304) or code < 200
        if not no_body:
            self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
        elif self.request_version == "HTTP/1.0" and not self.close_connection:
            self.send_header("Connection", "keep-alive")
        self.end_headers()
        if body and not no_body and self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, code, obj, headers=()):
        self.send(code, dumps(obj), "application/json", headers)

    def read_body(self):
        te = self.headers.get_all("Transfer-Encoding") or []
        if te:
            if "chunked" not in ",".join(te).lower():
                raise BadRequest()
            return self.read_chunked()
        cl = self.headers.get_all("Content-Length") or []
        if not cl:
            return b""
        try:
            lengths = {parse_uint(v) for v in ",".join(cl).split(",")}
        except ValueError:
            raise BadRequest() from None
        if len(lengths) != 1:
            raise BadRequest()
        n = lengths.pop()
        if n > MAX_BODY:
            raise TooLarge()
        data = self.rfile.read(n) if n else b""
        if len(data) < n:
            raise EOFError()
        return data

    def read_chunked(self):
        chunks, total = [], 0
        while True:
            line = self.rfile.readline(1024)
            if not line:
                raise EOFError()
            size_s = line.split(b";", 1)[0].strip()
            try:
                if not size_s or size_s.startswith((b"-", b"+")):
                    raise ValueError
                size = int(size_s, 16)
            except ValueError:
                raise BadRequest() from None
            if size == 0:
                while True:  # trailers
                    t = self.rfile.readline(8192)
                    if not t:
                        raise EOFError()
                    if t in (b"\r\n", b"\n"):
                        return b"".join(chunks)
            total += size
            if total > MAX_BODY:
                raise TooLarge()
            data = self.rfile.read(size)
            if len(data) < size:
                raise EOFError()
            chunks.append(data)
            if self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise BadRequest()

    # -- dispatch -----------------------------------------------------------

    def _dispatch(self):
        raw = self.path
        if raw.startswith(("http://", "https://")):
            parts = urlsplit(raw)
            path, query = parts.path or "/", parts.query
        else:
            path, _, query = raw.partition("?")
            path = path.partition("#")[0]
            query = query.partition("#")[0]

        if path.startswith("/__mock/"):
            route = "control"
        elif self.server.control_only:
            route = "notfound"
        elif path == TOKEN_PATH:
            route = "token"
        elif path.startswith("/oauth/"):
            route = "notfound"
        else:
            route = "api"

        st = self.state
        if route == "token":
            with st.lock:
                st.token_requests[self.command] = \
                    st.token_requests.get(self.command, 0) + 1
        try:
            body = self.read_body()
        except (BadRequest, TooLarge) as e:
            code = 413 if isinstance(e, TooLarge) else 400
            if route == "token":
                with st.lock:
                    k = str(code)
                    st.token_status[k] = st.token_status.get(k, 0) + 1
            self.send_error(code)
            return
        except EOFError:
            self.close_connection = True
            self.access_log("- (client closed)")
            return

        if route == "control":
            self.handle_control(path[len("/__mock/"):].rstrip("/"), query)
        elif route == "token":
            self.handle_token(body, query)
        elif route == "api":
            self.handle_api(path, body)
        else:
            self.send(404, b"Not Found\n", "text/plain")

    # -- token endpoint -----------------------------------------------------

    def handle_token(self, body, query):
        st = self.state
        method = self.command
        ctype = self.headers.get("Content-Type", "")
        if method == "POST":
            media = ctype.split(";", 1)[0].strip().lower()
            pairs = parse_qsl(body.decode("utf-8", "replace"),
                              keep_blank_values=True) \
                if media == FORM_TYPE else []
        elif method == "GET":
            pairs = parse_qsl(query, keep_blank_values=True)
        else:
            pairs = []
        names = [k for k, _ in pairs]
        params = {}
        for k, v in pairs:
            params.setdefault(k, v)

        with st.lock:
            st.in_flight += 1
            st.in_flight_max = max(st.in_flight_max, st.in_flight)
            st.last_params = names
            st.last_ct = ctype
            st.last_method = method
            st.last_headers = [k.lower() for k in self.headers.keys()]
            st.last_version = self.request_version
            if params.get("scope") == REFRESH_SCOPE:
                st.refresh_requests += 1
            fault = self.server.fixed_fault
            if fault is not None:
                st.token_faults += 1
            else:
                fault = st.take_fault_locked()
        try:
            if fault is not None:
                if fault.get("delay"):
                    time.sleep(fault["delay"])
                if any(k in fault for k in ("mode", "status", "body")):
                    self.serve_fault(fault)
                    return
            if method not in ("GET", "POST"):
                with st.lock:
                    st.token_status["405"] = st.token_status.get("405", 0) + 1
                self.send(405, b"Method Not Allowed\n", "text/plain",
                          headers=[("Allow", "GET, POST")])
                return
            # a fault of headers alone: DQE's own answer, with them
            extra = fault.get("headers", []) if fault else []
            with st.lock:
                code, payload, error = self.token_logic_locked(names, params)
                k = str(code)
                st.token_status[k] = st.token_status.get(k, 0) + 1
                if error:
                    st.token_errors[error] += 1
                style = st.config["error_style"]
            if code == 200:
                self.send_json(200, payload, extra)
            elif code == 500:
                self.send(500, b"Internal Server Error", "text/plain", extra)
            else:
                ebody, ect = error_body(style, error)
                self.send(code, ebody, ect, extra)
        finally:
            with st.lock:
                st.in_flight -= 1

    def token_logic_locked(self, names, params):
        """Returns (status, reply object or None, oauth error or None)."""
        st = self.state
        for n in names:
            if n not in ALLOWED_PARAMS:
                return 500, None, None
        scope = params.get("scope", "")
        if not scope:
            return 400, None, "invalid_request"
        if scope == REFRESH_SCOPE:
            access = params.get("access_token", "")
            refresh = params.get("refresh_token", "")
            e = st.refresh.get(refresh) if refresh else None
            if (e is None or e["used"] or not access
                    or not hmac.compare_digest(e["at"], access)
                    or time.monotonic() - e["issued"]
                    >= st.config["refresh_ttl"]):
                return 400, None, "invalid_grant"
            e["used"] = True
            st.refresh_ok += 1
            return 200, st.issue_locked(e["licence"], e["scope"]), None
        cid = params.get("client_id", "")
        secret = params.get("client_secret", "")
        if not cid or not secret:
            return 400, None, "invalid_request"
        if scope not in KNOWN_SCOPES:
            return 400, None, "unsupported_grant_type"
        lic = st.licences.get(cid)
        given = secret.encode("utf-8")
        if (lic is None or lic.expired
                or not any([hmac.compare_digest(s, given)
                            for s in lic.secrets])):
            return 400, None, "invalid_client"
        if scope not in lic.scopes:
            return 400, None, "unauthorized_client"
        return 200, st.issue_locked(lic.id, scope), None

    def serve_fault(self, fault):
        st = self.state
        mode = fault.get("mode")
        if mode is not None:
            self.close_connection = True
        if mode == "close":
            self.access_log("- (fault close)")
            return
        if mode == "reset":
            self.access_log("- (fault reset)")
            try:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
            except OSError:
                pass
            try:
                self.rfile.close()
            except (OSError, ValueError):
                pass
            self.connection.close()  # linger 0: the kernel sends RST
            return
        if mode == "garbage":
            self.access_log("- (fault garbage)")
            self.wfile.write(b"not http at all\r\n\r\n")
            return
        if mode == "truncate":
            with st.lock:
                st.token_status["200"] += 1
            self.access_log("200 (fault truncate)")
            self.wfile.write(b"HTTP/1.1 200 OK\r\n"
                             b"Content-Type: application/json\r\n"
                             b"Content-Length: 200\r\n"
                             b"Connection: close\r\n\r\n"
                             b'{"access_token":"TK0')
            return
        code = fault.get("status", 200)
        with st.lock:
            k = str(code)
            st.token_status[k] = st.token_status.get(k, 0) + 1
            style = st.config["error_style"]
        headers = fault.get("headers", ())
        if "body" in fault:
            self.send(code, fault["body"], "application/json", headers)
        else:
            body, ctype = error_body(style, "server_error")
            self.send(code, body, ctype, headers)

    # -- protected API ------------------------------------------------------

    def handle_api(self, path, body=b""):
        st = self.state
        auths = self.headers.get_all("Authorization") or []
        workers = self.headers.get_all("X-Worker") or []
        scope = None
        with st.lock:
            st.api_auth_last = len(auths)
            st.api_auth_max = max(st.api_auth_max, len(auths))
            st.workers.update(workers)
            if len(auths) == 1:
                v = auths[0]
                if len(v) > 7 and v[:7].lower() == "bearer ":
                    scope = st.token_scope_locked(v[7:])
            code = 200 if scope is not None else 401
            st.api[str(code)] = st.api.get(str(code), 0) + 1
        if code == 200:
            reply = {"ok": True, "path": path, "scope": scope}
            if body or self.command in ("POST", "PUT", "PATCH"):
                reply["method"] = self.command
                reply["body_length"] = len(body)
                reply["body_sha256"] = hashlib.sha256(body).hexdigest()
            self.send_json(200, reply)
        else:
            self.send_json(401, {"error": "invalid_token"},
                           headers=[("WWW-Authenticate", "Bearer")])

    # -- controls -----------------------------------------------------------

    def handle_control(self, name, query):
        st = self.state
        # latin-1 keeps fault bodies byte-exact (request line is latin-1)
        params = parse_qsl(query, keep_blank_values=True, encoding="latin-1")
        if name == "health":
            self.send(200, b"ok", "text/plain")
        elif name == "stats":
            # stats?reset=1: the counts so far, then a reset, in one step;
            # stats?reset=counters: the same, but issued tokens stay live
            with st.lock:
                obj = st.stats_locked()
                reset = dict(params).get("reset")
                if reset == "1":
                    st.reset_locked()
                elif reset == "counters":
                    st.reset_counters_locked()
            self.send_json(200, obj)
        elif name == "reset":
            with st.lock:
                st.reset_locked()
            self.send_json(200, {"reset": True})
        elif name == "revoke":
            # revoke: all; revoke?token=T: one; revoke?licence=L[&scope=S]:
            # a credential set's (the API answers 401 to them)
            p = dict(params)
            unknown = set(p) - {"token", "licence", "scope"}
            if unknown:
                return self.bad_control("unknown parameter: "
                                        + safe_path(sorted(unknown)[0]))
            with st.lock:
                n = st.revoke_locked(p.get("token"), p.get("licence"),
                                     p.get("scope"))
            self.send_json(200, {"revoked": n})
        elif name == "reject":
            # reject?n=N[&licence=L]: the API answers 401 to the next N
            # requests carrying a live token (of that licence), which stays
            # live: a token refused although DQE issued it; n=0 clears
            p = dict(params)
            try:
                n = parse_uint(p.get("n", "1"))
            except ValueError:
                return self.bad_control("n must be a non-negative integer")
            with st.lock:
                st.reject = ({"n": n, "licence": p.get("licence")}
                             if n else None)
                obj = dict(st.reject) if st.reject else None
            self.send_json(200, {"reject": obj})
        elif name == "sleep":
            # lets a sequence of test requests wait, e.g. for a token to expire
            try:
                secs = min(float(dict(params).get("s", "1")), 30.0)
            except ValueError:
                return self.bad_control("s must be a number of seconds")
            time.sleep(max(secs, 0.0))
            self.send_json(200, {"slept": secs})
        elif name == "config":
            self.control_config(params)
        elif name == "fault":
            self.control_fault(params)
        else:
            self.send(404, b"Not Found\n", "text/plain")

    def bad_control(self, msg):
        self.send_json(400, {"error": msg})

    def control_config(self, params):
        st = self.state
        new = {}
        for k, v in params:
            if k in ("ttl", "refresh_ttl"):
                try:
                    new[k] = parse_uint(v)
                except ValueError:
                    return self.bad_control("%s must be a non-negative integer"
                                            % k)
            elif k == "expires_in":
                if v not in EXPIRES_IN_STYLES:
                    return self.bad_control("expires_in must be one of "
                                            + "|".join(EXPIRES_IN_STYLES))
                new[k] = v
            elif k == "error_style":
                if v not in ERROR_STYLES:
                    return self.bad_control("error_style must be one of "
                                            + "|".join(ERROR_STYLES))
                new[k] = v
            else:
                return self.bad_control("unknown parameter: " + safe_path(k))
        with st.lock:
            st.config.update(new)
            obj = dict(st.config)
        self.send_json(200, obj)

    def control_fault(self, params):
        st = self.state
        p = dict(params)
        if "clear" in p:
            with st.lock:
                st.fault = None
            return self.send_json(200, {"fault": None})
        if not p:
            with st.lock:
                obj = fault_view(st.fault)
            return self.send_json(200, {"fault": obj})
        try:
            f = parse_fault(params)
        except ValueError as e:
            return self.bad_control(str(e))
        with st.lock:
            st.fault = f
            obj = fault_view(f)
        self.send_json(200, {"fault": obj})


def parse_fault(params):
    """A fault from query-string pairs; ValueError says what is wrong."""
    for k, _ in params:
        if k not in ("status", "body", "delay", "mode", "count", "clear",
                     "header"):
            raise ValueError("unknown parameter: " + safe_path(k))
    p = dict(params)
    f = {}
    headers = []
    for k, v in params:
        if k != "header":
            continue
        name, sep, value = v.partition(":")
        if (not sep or not name or not all(33 <= ord(c) <= 126 and c != ":"
                                           for c in name)
                or any(c in value for c in "\r\n")):
            raise ValueError("header must be Name:value")
        headers.append((name, value.strip()))
    if headers:
        f["headers"] = headers
    if "status" in p:
        try:
            f["status"] = parse_uint(p["status"])
        except ValueError:
            f["status"] = -1
        if not 200 <= f["status"] <= 599:
            raise ValueError("status must be 200..599")
    if "body" in p:
        f["body"] = p["body"].encode("latin-1")
    if "delay" in p:
        try:
            d = float(p["delay"])
        except ValueError:
            d = -1.0
        if not math.isfinite(d) or not 0 <= d <= 3600:
            raise ValueError("delay must be 0..3600 seconds")
        f["delay"] = d
    if "mode" in p:
        if p["mode"] not in FAULT_MODES:
            raise ValueError("mode must be one of " + "|".join(FAULT_MODES))
        f["mode"] = p["mode"]
    if "count" in p:
        try:
            c = parse_uint(p["count"])
        except ValueError:
            c = 0
        if c < 1:
            raise ValueError("count must be a positive integer")
        f["count"] = c
    else:
        f["count"] = None
    if not any(k in f for k in ("status", "body", "delay", "mode",
                                "headers")):
        raise ValueError("give status, body, delay, mode or header")
    return f


class MockServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, addr, family, state, ssl_ctx=None, control_only=False,
                 quiet=False, fixed_fault=None):
        self.fixed_fault = fixed_fault
        self.address_family = family
        self.state = state
        self.ssl_ctx = ssl_ctx
        self.control_only = control_only
        self.quiet = quiet
        super().__init__(addr, Handler)

    def server_bind(self):
        # skip HTTPServer's getfqdn(): no DNS look-ups
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = host
        self.server_port = port

    def finish_request(self, request, client_address):
        if self.ssl_ctx is None:
            return super().finish_request(request, client_address)
        # TLS handshake in the connection's own thread, never in accept()
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:
            conn = self.ssl_ctx.wrap_socket(request, server_side=True)
        except (OSError, ValueError):
            return
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            try:
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            conn.close()

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (OSError, EOFError)):
            return  # resets, timeouts, TLS garbage: not our problem
        if not self.quiet:
            super().handle_error(request, client_address)


def parse_addr(text):
    host, sep, port = text.rpartition(":")
    if not sep:
        raise argparse.ArgumentTypeError("expected HOST:PORT, got %r" % text)
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError("bad port in %r" % text) from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError("bad port in %r" % text)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return (host, port), family


def non_negative(text):
    try:
        return parse_uint(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "expected a non-negative integer, got %r" % text) from None


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Mock of the DQE OAuth2 token endpoint and a protected API")
    ap.add_argument("--listen", required=True, type=parse_addr,
                    help="HOST:PORT of the main listener (PORT 0 = any free)")
    ap.add_argument("--tls-cert", help="PEM certificate: main listener is HTTPS")
    ap.add_argument("--tls-key", help="PEM private key for --tls-cert")
    ap.add_argument("--control", type=parse_addr,
                    help="HOST:PORT of a plain-HTTP listener for /__mock/ only")
    ap.add_argument("--ttl", type=non_negative, default=300,
                    help="access token lifetime in seconds (default 300)")
    ap.add_argument("--refresh-ttl", type=non_negative, default=600,
                    help="refresh token lifetime in seconds (default 600)")
    ap.add_argument("--licences", help="JSON list of {id,secret,scopes,expired}")
    ap.add_argument("--pid-file", help="write the pid here; removed on exit")
    ap.add_argument("--quiet", action="store_true", help="no access log")
    ap.add_argument("--fault-listen", action="append", default=[],
                    metavar="HOST:PORT=FAULT",
                    help="an extra listener (TLS like --listen) whose token "
                         "requests all get FAULT, e.g. "
                         "127.0.0.1:0=mode=close or 127.0.0.1:0=delay=3; "
                         "repeatable")
    args = ap.parse_args(argv)

    if bool(args.tls_cert) != bool(args.tls_key):
        ap.error("--tls-cert and --tls-key go together")
    try:
        if args.licences:
            with open(args.licences, encoding="utf-8") as fh:
                licences = load_licences(json.load(fh))
        else:
            licences = load_licences(DEFAULT_LICENCES)
    except (OSError, ValueError) as e:
        ap.error("--licences: %s" % e)

    ssl_ctx = None
    if args.tls_cert:
        ssl_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ssl_ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ssl_ctx.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as e:
            ap.error("cannot load TLS certificate/key: %s" % e)
        ssl_ctx.set_alpn_protocols(["http/1.1"])

    state = State(args.ttl, args.refresh_ttl, licences)
    servers = []
    try:
        addr, family = args.listen
        servers.append(MockServer(addr, family, state, ssl_ctx=ssl_ctx,
                                  quiet=args.quiet))
        if args.control:
            addr, family = args.control
            servers.append(MockServer(addr, family, state, control_only=True,
                                      quiet=args.quiet))
        for spec in args.fault_listen:
            addr_text, _, fault_text = spec.partition("=")
            try:
                fault = parse_fault(parse_qsl(fault_text,
                                              keep_blank_values=True,
                                              encoding="latin-1"))
                addr, family = parse_addr(addr_text)
            except (ValueError, argparse.ArgumentTypeError) as e:
                ap.error("--fault-listen %s: %s" % (spec, e))
            servers.append(MockServer(addr, family, state, ssl_ctx=ssl_ctx,
                                      quiet=args.quiet, fixed_fault=fault))
    except OSError as e:
        sys.stderr.write("dqe_mock: cannot listen: %s\n" % e)
        return 1

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    for srv in servers:
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2},
                         daemon=True).start()
    if args.pid_file:
        with open(args.pid_file, "w") as fh:
            fh.write("%d\n" % os.getpid())
    main_port = servers[0].server_address[1]
    ctl_port = servers[1].server_address[1] if args.control else 0
    fault_ports = [srv.server_address[1] for srv in servers
                   if srv.fixed_fault is not None]
    sys.stdout.write("READY port=%d control=%d%s\n" % (
        main_port, ctl_port,
        " faults=" + ",".join(map(str, fault_ports)) if fault_ports else ""))
    sys.stdout.flush()

    while not stop.wait(0.5):
        pass

    for srv in servers:
        srv.shutdown()
        srv.server_close()
    if args.pid_file:
        try:
            os.unlink(args.pid_file)
        except OSError:
            pass
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
