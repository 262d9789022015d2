#!/usr/bin/env python3
"""FastCGI, uwsgi and SCGI backends that answer with the Authorization
they were given (the HTTP_AUTHORIZATION parameter), for
t/018-other-upstreams.t.  Standard library only.

On a path with "/refuse/" (REQUEST_URI), each backend refuses the first
token it sees there, then and ever after, with a 401: a token revoked
while cached; any other token is echoed.

    python3 t/echo_backends.py   prints "READY fastcgi=P uwsgi=P scgi=P",
                                 then serves until killed
"""

import os
import signal
import socket
import struct
import threading


REFUSED = {}
LOCK = threading.Lock()


def reply(auth, uri="", kind=""):
    if "/refuse/" in uri and auth:
        with LOCK:
            first = REFUSED.setdefault(kind, auth)
        if auth == first:
            return (b"Status: 401 Unauthorized\r\nContent-Type: text/plain\r\n"
                    b"WWW-Authenticate: Bearer\r\nContent-Length: 7\r\n\r\n"
                    b"refused")
    body = (auth or "-").encode("latin-1")
    return (b"Status: 200 OK\r\nContent-Type: text/plain\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


def read_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def fcgi_pairs(data):
    params, i = {}, 0
    while i < len(data):
        lens = []
        for _ in range(2):
            b = data[i]
            if b >> 7:
                lens.append(struct.unpack(">I", data[i:i + 4])[0] & 0x7fffffff)
                i += 4
            else:
                lens.append(b)
                i += 1
        k = data[i:i + lens[0]].decode("latin-1")
        i += lens[0]
        params[k] = data[i:i + lens[1]].decode("latin-1")
        i += lens[1]
    return params


def fastcgi(conn):
    params, raw, rid = {}, b"", 1
    while True:
        ver, typ, rid, clen, plen, _ = struct.unpack(">BBHHBB",
                                                    read_exact(conn, 8))
        content = read_exact(conn, clen)
        read_exact(conn, plen)
        if typ == 4 and clen:          # FCGI_PARAMS
            raw += content
        elif typ == 4:
            params = fcgi_pairs(raw)
        elif typ == 5 and clen == 0:   # FCGI_STDIN, end
            break
    out = reply(params.get("HTTP_AUTHORIZATION"), params.get("REQUEST_URI", ""),
                "fastcgi")
    conn.sendall(struct.pack(">BBHHBB", 1, 6, rid, len(out), 0, 0) + out
                 + struct.pack(">BBHHBB", 1, 6, rid, 0, 0, 0)
                 + struct.pack(">BBHHBB", 1, 3, rid, 8, 0, 0) + b"\0" * 8)


def uwsgi(conn):
    _, size, _ = struct.unpack("<BHB", read_exact(conn, 4))
    data, params, i = read_exact(conn, size), {}, 0
    while i < len(data):
        kl = struct.unpack("<H", data[i:i + 2])[0]
        k = data[i + 2:i + 2 + kl].decode("latin-1")
        i += 2 + kl
        vl = struct.unpack("<H", data[i:i + 2])[0]
        params[k] = data[i + 2:i + 2 + vl].decode("latin-1")
        i += 2 + vl
    conn.sendall(b"HTTP/1.0 " + reply(params.get("HTTP_AUTHORIZATION"),
                                      params.get("REQUEST_URI", ""),
                                      "uwsgi")[8:])


def scgi(conn):
    head = b""
    while not head.endswith(b":"):
        head += read_exact(conn, 1)
    data = read_exact(conn, int(head[:-1]) + 1)[:-1].split(b"\0")
    params = dict(zip((k.decode("latin-1") for k in data[0::2]),
                      (v.decode("latin-1") for v in data[1::2])))
    conn.sendall(reply(params.get("HTTP_AUTHORIZATION"),
                       params.get("REQUEST_URI", ""), "scgi"))


def serve(handler):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(64)

    def loop():
        while True:
            conn, _ = s.accept()

            def one(c=conn):
                try:
                    handler(c)
                except (EOFError, OSError, ValueError, struct.error):
                    pass
                finally:
                    c.close()

            threading.Thread(target=one, daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return s.getsockname()[1]


def main():
    # TERM ends it, even if the parent left it ignored
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))

    ports = [serve(h) for h in (fastcgi, uwsgi, scgi)]
    print("READY fastcgi=%d uwsgi=%d scgi=%d" % tuple(ports), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
