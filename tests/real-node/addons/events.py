"""Rate-limited log lines and Kubernetes Events (mixin; needs self.api and self.noted)."""

import random
import time

from config import NODE
from util import log, meta, now_iso


class Reporter:
    # the source.component of the Events it writes
    component = "raftkv-node-addons"

    def note(self, k, msg, every=30):
        """Logs msg unless the same key was logged less than `every` seconds ago; True when it logged."""
        t = self.noted.get(k)
        if t is None or time.time() - t > every:
            self.noted[k] = time.time()
            log(msg)
            return True
        return False

    def event(self, obj, etype, reason, msg, field=None):
        md = meta(obj)
        ns = md.get("namespace") or "default"
        ref = {"kind": obj.get("kind", "Pod"), "namespace": md.get("namespace"), "name": md["name"], "uid": md.get("uid"),
               "apiVersion": obj.get("apiVersion", "v1")}
        if field:
            ref["fieldPath"] = field
        t = now_iso()
        body = {"apiVersion": "v1", "kind": "Event",
                "metadata": {"name": "%s.%x%04x" % (md["name"], int(time.time() * 1e6), random.randrange(65536)), "namespace": ns},
                "involvedObject": ref, "reason": reason, "message": msg, "type": etype,
                "source": {"component": self.component, "host": NODE}, "firstTimestamp": t, "lastTimestamp": t, "count": 1}
        try:
            self.api.post("/api/v1/namespaces/%s/events" % ns, body)
        except Exception:
            pass
