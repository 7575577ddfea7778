"""The Kubernetes API client of the node add-ons (stdlib http.client, bearer token)."""

import http.server
import json
import ssl
import threading
import time
import urllib.parse


class ApiError(Exception):
    def __init__(self, status, body):
        super().__init__("HTTP %s: %s" % (status, str(body)[:300]))
        self.status = status
        self.body = body


class Api:
    def __init__(self, server, token, cafile):
        u = urllib.parse.urlparse(server)
        self.host, self.port = u.hostname, u.port or 443
        self.token = token
        self.ctx = ssl.create_default_context(cafile=cafile)
        self.tls = threading.local()

    def _conn(self):
        c = getattr(self.tls, "conn", None)
        if c is None:
            c = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=30)
            self.tls.conn = c
        return c

    def req(self, method, path, body=None, ctype="application/json"):
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": "Bearer " + self.token, "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = ctype
        for attempt in range(3):
            c = self._conn()
            try:
                c.request(method, path, body=data, headers=headers)
                r = c.getresponse()
                raw = r.read()
                break
            except (OSError, http.client.HTTPException):
                c.close()
                self.tls.conn = None
                if attempt == 2:
                    raise
                time.sleep(0.2)
        try:
            obj = json.loads(raw) if raw else None
        except ValueError:
            obj = raw.decode(errors="replace")
        if r.status >= 300:
            raise ApiError(r.status, obj)
        return obj

    def get(self, path):
        return self.req("GET", path)

    def get_or_none(self, path):
        try:
            return self.get(path)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def list(self, path):
        sep = "&" if "?" in path else "?"
        return self.get(path + sep + "resourceVersion=0")["items"]

    def post(self, path, body):
        return self.req("POST", path, body)

    def patch(self, path, body):
        return self.req("PATCH", path, body, "application/merge-patch+json")

    def delete(self, path, body=None):
        return self.req("DELETE", path, body)
