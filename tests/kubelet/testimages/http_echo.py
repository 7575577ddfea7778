#!/usr/bin/env python3
"""Test image `test/http-echo` of the process kubelet.

A tiny HTTP server for the environment's own smoke test. Env: PORT (8080),
DATA_DIR (/data), POD_NAME. On start it appends a line to DATA_DIR/boots.
GET /healthz, /readyz -> 200 (500 / 503 while DATA_DIR/unhealthy / notready exist);
GET /exit?code=N -> the process exits with N;
GET /boots -> the boots file; GET /whoami -> pod name, hostname, boot count;
GET /fetch?url=U -> fetches U from inside the pod (name resolution test);
PUT /file/NAME stores the body in DATA_DIR/NAME, GET /file/NAME returns it.
"""
import http.server
import os
import signal
import socket
import sys
import time
import urllib.parse
import urllib.request

DATA = os.environ.get("DATA_DIR", "/data")
PORT = int(os.environ.get("PORT", "8080"))


class H(http.server.BaseHTTPRequestHandler):
    def reply(self, code, body):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        u = urllib.parse.urlparse(self.path)
        if u.path == "/healthz":
            if os.path.exists(os.path.join(DATA, "unhealthy")):
                return self.reply(500, "unhealthy\n")
            return self.reply(200, "ok\n")
        if u.path == "/exit":
            code = int(urllib.parse.parse_qs(u.query).get("code", ["1"])[0])
            self.reply(200, "exiting with %d\n" % code)
            self.wfile.flush()
            os._exit(code)
        if u.path == "/readyz":
            if os.path.exists(os.path.join(DATA, "notready")):
                return self.reply(503, "not ready\n")
            return self.reply(200, "ok\n")
        if u.path == "/boots":
            with open(os.path.join(DATA, "boots")) as f:
                return self.reply(200, f.read())
        if u.path == "/whoami":
            with open(os.path.join(DATA, "boots")) as f:
                n = len(f.read().splitlines())
            return self.reply(200, "%s %s %d\n" % (os.environ.get("POD_NAME", "?"), socket.gethostname(), n))
        if u.path == "/fetch":
            url = urllib.parse.parse_qs(u.query)["url"][0]
            try:
                with urllib.request.urlopen(url, timeout=3) as r:
                    return self.reply(200, r.read())
            except Exception as e:  # report, don't crash
                return self.reply(502, "fetch %s: %s\n" % (url, e))
        if u.path.startswith("/file/"):
            p = os.path.join(DATA, os.path.basename(u.path))
            if not os.path.exists(p):
                return self.reply(404, "absent\n")
            with open(p, "rb") as f:
                return self.reply(200, f.read())
        self.reply(404, "no such path\n")

    def do_PUT(self):
        u = urllib.parse.urlparse(self.path)
        if not u.path.startswith("/file/"):
            return self.reply(404, "no such path\n")
        n = int(self.headers.get("Content-Length", "0"))
        with open(os.path.join(DATA, os.path.basename(u.path)), "wb") as f:
            f.write(self.rfile.read(n))
        self.reply(200, "stored\n")

    def log_message(self, fmt, *args):
        sys.stdout.write("%s %s\n" % (time.strftime("%H:%M:%S"), fmt % args))
        sys.stdout.flush()


def main():
    os.makedirs(DATA, exist_ok=True)
    with open(os.path.join(DATA, "boots"), "a") as f:
        f.write("%s %s %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), os.environ.get("POD_NAME", "?"), socket.gethostname()))
    signal.signal(signal.SIGTERM, lambda *_: (print("SIGTERM, exiting", flush=True), os._exit(0)))
    srv = http.server.ThreadingHTTPServer(("0.0.0.0", PORT), H)
    print("http-echo %s listening on %d, data dir %s" % (os.environ.get("POD_NAME", "?"), PORT, DATA), flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
