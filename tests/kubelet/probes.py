"""Probes of a pod's containers (mixin of pod.PodWorker)."""

import http.server
import socket
import ssl
import subprocess
import time

from util import log


class PodProbes:
    """Liveness, readiness and startup probes of one pod's containers.

    Part of PodWorker; uses its attributes."""

    # ---- probes
    def run_probes(self, pod, c):
        now = time.time()
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            p = c.spec.get(kind)
            st = c.probe.get(kind)
            if not p or not st:
                continue
            if kind != "startupProbe" and c.spec.get("startupProbe") and not c.started_probe_ok:
                continue
            if kind == "startupProbe" and c.started_probe_ok:
                continue
            if now < st["next"]:
                continue
            st["next"] = now + p.get("periodSeconds", 10)
            ok, why = self.probe(c, p)
            if ok:
                st["ok"] += 1
                st["fail"] = 0
            else:
                st["fail"] += 1
                st["ok"] = 0
            success_threshold = p.get("successThreshold", 1)
            failure_threshold = p.get("failureThreshold", 3)
            if kind == "readinessProbe":
                if ok and st["ok"] >= success_threshold and not c.ready:
                    c.ready = True
                    log("pod %s/%s: container %s is ready" % (self.ns, self.name, c.name))
                elif not ok and st["fail"] >= failure_threshold and c.ready:
                    c.ready = False
                    log("pod %s/%s: container %s is not ready: %s" % (self.ns, self.name, c.name, why))
                    self.event("Warning", "Unhealthy", "Readiness probe failed: %s" % why, c.name)
            elif kind == "startupProbe":
                if ok:
                    c.started_probe_ok = True
                elif st["fail"] >= failure_threshold:
                    self.event("Warning", "Unhealthy", "Startup probe failed: %s" % why, c.name)
                    self.restart_unhealthy(pod, c, "startup probe failed: %s" % why)
                    return
            elif kind == "livenessProbe" and not ok:
                log("pod %s/%s: container %s liveness probe failed (%d/%d): %s" % (self.ns, self.name, c.name, st["fail"], failure_threshold, why))
                if st["fail"] >= failure_threshold:
                    self.event("Warning", "Unhealthy", "Liveness probe failed: %s" % why, c.name)
                    self.restart_unhealthy(pod, c, "liveness probe failed: %s" % why)
                    return

    def restart_unhealthy(self, pod, c, why):
        grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
        log("pod %s/%s: killing container %s (%s), grace %ss" % (self.ns, self.name, c.name, why, grace))
        self.event("Normal", "Killing", "Container %s failed %s, will be restarted" % (c.name, why.split(":")[0]), c.name)
        self.stop_containers([c], grace)
        t = self.read_exit(c)
        c.proc = None
        c.ready = False
        policy = pod["spec"].get("restartPolicy", "Always")
        log("pod %s/%s: container %s killed, exit code %s" % (self.ns, self.name, c.name, t["exitCode"]))
        if self.should_restart(c, policy) or policy == "Always":
            c.backoff_until = 0
        self.save()

    def probe(self, c, p):
        timeout = p.get("timeoutSeconds", 1)
        try:
            if "httpGet" in p:
                h = p["httpGet"]
                port = self.resolve_port(c, h.get("port"))
                host = h.get("host") or self.ip
                cls = http.client.HTTPSConnection if h.get("scheme", "HTTP").upper() == "HTTPS" else http.client.HTTPConnection
                kw = {"context": ssl._create_unverified_context()} if cls is http.client.HTTPSConnection else {}
                conn = cls(host, port, timeout=timeout, **kw)
                try:
                    headers = {x["name"]: x["value"] for x in h.get("httpHeaders") or []}
                    headers.setdefault("User-Agent", "kube-probe/1.20")
                    conn.request("GET", h.get("path", "/"), headers=headers)
                    r = conn.getresponse()
                    body = r.read(200)
                finally:
                    conn.close()
                if 200 <= r.status < 400:
                    return True, ""
                return False, "HTTP probe failed with statuscode: %d %s" % (r.status, body.decode(errors="replace").strip()[:100])
            if "tcpSocket" in p:
                port = self.resolve_port(c, p["tcpSocket"].get("port"))
                with socket.create_connection((p["tcpSocket"].get("host") or self.ip, port), timeout=timeout):
                    return True, ""
            if "exec" in p:
                cmd = ["nsenter", "-t", str(c.pid), "-n", "-m", "-u", "--"] + p["exec"]["command"]
                r = subprocess.run(cmd, capture_output=True, timeout=timeout, env=c.env)
                if r.returncode == 0:
                    return True, ""
                return False, "command %s exited with %d: %s" % (p["exec"]["command"], r.returncode, r.stdout[-200:].decode(errors="replace"))
            return True, ""
        except Exception as e:
            return False, str(e) or e.__class__.__name__

    def resolve_port(self, c, port):
        if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
            return int(port)
        for cs in self.pod["spec"]["containers"]:
            for p in cs.get("ports") or []:
                if p.get("name") == port:
                    return p["containerPort"]
        raise ValueError("unknown port name %r" % port)
