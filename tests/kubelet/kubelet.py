#!/usr/bin/env python3
"""Process kubelet for raftkv's local Kubernetes test environment (stdlib only).

One process plays kubelet, scheduler and volume provisioner for a single Node:
  * registers the Node and keeps it Ready (status heartbeat);
  * binds pending pods to it once their PVCs are bound (like the scheduler's
    volume-binding check), provisions a directory-backed PersistentVolume for
    every pending PVC and deletes directory + PV once the PV is Released;
  * runs each pod's containers as local processes (image table images.json),
    each pod in its own network namespace with an IP on a bridge, a hosts file
    with the cluster's Service / pod DNS names, volumes bind-mounted in a private
    mount namespace (runner.py), env incl. downward API, probes, restarts,
    graceful deletion;
  * serves `kubectl logs` on <host-ip>:10250.
Everything it does is logged, one line per action, on stdout (local-k8s.sh sends
that to $RAFTKV_STATE/logs/kubelet.log). See docs/testing.md.

Configuration (environment, set by tests/local-k8s.sh):
  RKV_API_SERVER  https://IP:PORT     RKV_TOKEN_FILE  bearer token file
  RKV_CA_FILE     cluster CA          RKV_STATE       state dir
  RKV_NODE_NAME   node name           RKV_HOST_IP     host address on the bridge
  RKV_POD_NET     first 3 octets of the pod /24       RKV_BRIDGE  bridge name
  RKV_API_PORT    port pods use for the API           RKV_TLS_CERT/RKV_TLS_KEY  for :10250
  RAFTKV_BIN_DIR  binaries for the image table        RAFTKV_IMAGES  extra image table
  RKV_BACKOFF_BASE / RKV_BACKOFF_MAX  restart backoff seconds (default 1 / 30)
  RKV_VOLUME_SYNC  seconds between refreshes of Secret/ConfigMap volumes (default 3)
"""

import http.server
import json
import os
import shutil
import signal
import ssl
import threading
import time
import traceback
import urllib.parse

from api import Api
from config import HEARTBEAT_PERIOD, HOST_IP, LOG_DIR, MOUNTPOINTS_FILE, NETNS_PREFIX, NODE, PODS_DIR, PV_DIR, SYNC_PERIOD
from dns import ServiceDns
from events import Reporter
from images import load_image_table
from pod import PodWorker
from provisioner import Provisioner
from util import key, log, meta, now_iso, run


class Kubelet(Reporter, Provisioner, ServiceDns):
    def __init__(self):
        with open(os.environ["RKV_TOKEN_FILE"]) as f:
            token = f.read().strip()
        self.api = Api(os.environ["RKV_API_SERVER"], token, os.environ["RKV_CA_FILE"])
        self.images, self.bin_dir = load_image_table()
        self.workers = {}
        self.world = {"pods": {}, "pvcs": {}, "pvs": {}, "services": {}, "endpoints": {}}
        self.idx_lock = threading.Lock()
        self.alloc = {}           # uid -> idx
        self.next_idx = 2
        self.dirs_lock = threading.Lock()
        self.last_heartbeat = 0
        self.noted = {}           # rate-limit repeated log lines
        self.hosts_written = {}
        self.allocatable = {"cpu": str(os.cpu_count() or 2), "memory": "%dKi" % self.mem_kib(), "pods": "110",
                            "ephemeral-storage": "100Gi"}
        for d in (PODS_DIR, PV_DIR, LOG_DIR):
            os.makedirs(d, exist_ok=True)

    @staticmethod
    def mem_kib():
        try:
            with open("/proc/meminfo") as f:
                return int(f.readline().split()[1])
        except (OSError, ValueError, IndexError):
            return 8 * 2 ** 20

    # ---- ip allocation
    def alloc_idx(self, uid):
        with self.idx_lock:
            if uid in self.alloc:
                return self.alloc[uid]
            used = set(self.alloc.values())
            for i in range(253):
                cand = 2 + (self.next_idx - 2 + i) % 253
                if cand not in used:
                    self.alloc[uid] = cand
                    self.next_idx = cand + 1
                    return cand
            raise RuntimeError("pod network is full")

    def free_idx(self, uid):
        with self.idx_lock:
            self.alloc.pop(uid, None)

    def ensure_mountpoint(self, path, is_dir):
        """Mount points must exist on the shared filesystem; record what we create for `down`."""
        path = os.path.normpath(path)
        if os.path.lexists(path):
            return
        with self.dirs_lock:
            missing, p = [], path if is_dir else os.path.dirname(path)
            while p != "/" and not os.path.lexists(p):
                missing.append(p)
                p = os.path.dirname(p)
            with open(MOUNTPOINTS_FILE, "a") as f:
                for m in reversed(missing):
                    f.write(m + "\n")
                if not is_dir:
                    f.write(path + "\n")
            if missing:
                os.makedirs(missing[0], exist_ok=True)
            if not is_dir:
                open(path, "a").close()
            log("created mount point %s on the host (removed by local-k8s.sh down)" % path)

    # ---- node
    def node_status(self):
        t = now_iso()
        conds = [{"type": ty, "status": st, "reason": rs, "message": msg, "lastHeartbeatTime": t,
                  "lastTransitionTime": self.node_since}
                 for ty, st, rs, msg in (("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
                                         ("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
                                         ("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
                                         ("Ready", "True", "KubeletReady", "process kubelet is posting ready status"))]
        return {"conditions": conds,
                "addresses": [{"type": "InternalIP", "address": HOST_IP}, {"type": "Hostname", "address": NODE}],
                "capacity": self.allocatable, "allocatable": self.allocatable,
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": os.uname().release,
                             "osImage": "raftkv process kubelet", "containerRuntimeVersion": "process://1",
                             "kubeletVersion": "v1.20.2", "kubeProxyVersion": "v1.20.2", "operatingSystem": "linux",
                             "architecture": "amd64"}}

    def ensure_node(self):
        self.node_since = now_iso()
        if self.api.get_or_none("/api/v1/nodes/" + NODE) is None:
            self.api.post("/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {
                "name": NODE, "labels": {"kubernetes.io/hostname": NODE, "kubernetes.io/os": "linux",
                                         "kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
                                         "beta.kubernetes.io/arch": "amd64", "node-role.kubernetes.io/control-plane": ""}}})
            log("registered node %s" % NODE)
        # The TaintNodesByCondition admission plugin taints new nodes not-ready; without the
        # node lifecycle controller nobody would remove the taint again.
        node = self.api.get("/api/v1/nodes/" + NODE)
        taints = node["spec"].get("taints") or []
        keep = [t for t in taints if not t["key"].startswith("node.kubernetes.io/")]
        if keep != taints:
            self.api.patch("/api/v1/nodes/" + NODE, {"spec": {"taints": keep or None}})
            log("removed node taints %s" % [t["key"] for t in taints if t not in keep])
        self.heartbeat()

    def heartbeat(self):
        self.api.patch("/api/v1/nodes/%s/status" % NODE, {"status": self.node_status()})
        self.last_heartbeat = time.time()

    # ---- recovery after a restart
    def recover(self):
        for uid in os.listdir(PODS_DIR):
            p = os.path.join(PODS_DIR, uid, "state.json")
            try:
                with open(p) as f:
                    saved = json.load(f)
            except (OSError, ValueError):
                shutil.rmtree(os.path.join(PODS_DIR, uid), ignore_errors=True)
                continue
            if saved.get("idx"):
                self.alloc[uid] = saved["idx"]
                self.next_idx = max(self.next_idx, saved["idx"] + 1)
            self.recovered = getattr(self, "recovered", {})
            self.recovered[uid] = saved
            log("found state of pod %s/%s (uid %s) from an earlier run" % (saved["namespace"], saved["name"], uid))
        # network namespaces of ours that no state file knows: leftovers, remove them
        known = {s.get("netns") for s in getattr(self, "recovered", {}).values()}
        for line in run(["ip", "netns", "list"], check=False).stdout.splitlines():
            ns = line.split()[0] if line.split() else ""
            if ns.startswith(NETNS_PREFIX) and ns not in known:
                for pid in run(["ip", "netns", "pids", ns], check=False).stdout.split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except (ProcessLookupError, ValueError):
                        pass
                run(["ip", "netns", "del", ns], check=False)
                shutil.rmtree("/etc/netns/" + ns, ignore_errors=True)
                log("removed leftover network namespace %s" % ns)

    # ---- main loop
    def loop(self):
        self.ensure_node()
        self.recover()
        threading.Thread(target=self.serve_logs, daemon=True, name="logs").start()
        log("process kubelet running: node %s, host ip %s, bin dir %s, images %s" % (NODE, HOST_IP, self.bin_dir, ", ".join(sorted(self.images))))
        while True:
            t0 = time.time()
            try:
                self.sync()
            except Exception as e:
                self.note("sync-error", "sync error: %s\n%s" % (e, traceback.format_exc()), every=10)
            time.sleep(max(0.05, SYNC_PERIOD - (time.time() - t0)))

    def sync(self):
        api = self.api
        world = {
            "pods": {key(p): p for p in api.list("/api/v1/pods")},
            "pvcs": {key(p): p for p in api.list("/api/v1/persistentvolumeclaims")},
            "pvs": {meta(p)["name"]: p for p in api.list("/api/v1/persistentvolumes")},
            "services": {key(p): p for p in api.list("/api/v1/services")},
            "endpoints": {key(p): p for p in api.list("/api/v1/endpoints")},
        }
        self.world = world
        if time.time() - self.last_heartbeat > HEARTBEAT_PERIOD:
            self.heartbeat()
        self.provision(world)
        self.resize(world)
        self.reclaim(world)
        self.schedule(world)
        self.run_pods(world)
        self.update_hosts(world)

    # ---- pods
    def run_pods(self, world):
        seen = set()
        for pod in world["pods"].values():
            md = meta(pod)
            if pod["spec"].get("nodeName") != NODE:
                continue
            uid = md["uid"]
            seen.add(uid)
            w = self.workers.get(uid)
            if w is None:
                phase = (pod.get("status") or {}).get("phase")
                saved = getattr(self, "recovered", {}).pop(uid, None)
                if phase in ("Succeeded", "Failed") and not saved and not md.get("deletionTimestamp"):
                    continue
                w = PodWorker(self, pod, saved)
                if saved:
                    for cst in (pod.get("status") or {}).get("containerStatuses") or []:
                        c = w.containers.get(cst["name"])
                        if c:
                            c.restart_count = max(c.restart_count, cst.get("restartCount", 0))
                self.workers[uid] = w
                log("pod %s: picked up (uid %s)%s" % (key(pod), uid, " with state from an earlier run" if saved else ""))
                w.start()
            else:
                w.pod = pod
                if md.get("deletionTimestamp"):
                    w.wake.set()
        for uid, w in list(self.workers.items()):
            if w.done:
                del self.workers[uid]
            elif uid not in seen and not w.gone:
                log("pod %s/%s: gone from the API (force-deleted?)" % (w.ns, w.name))
                w.gone = True
                w.wake.set()
        # state of pods from an earlier run that no longer exist
        for uid, saved in list(getattr(self, "recovered", {}).items()):
            if uid in seen:
                continue
            del self.recovered[uid]
            fake = {"metadata": {"uid": uid, "namespace": saved["namespace"], "name": saved["name"]}, "spec": {"containers": [
                {"name": n} for n in saved.get("containers", {})]}}
            w = PodWorker(self, fake, saved)
            w.gone = True
            self.workers[uid] = w
            log("pod %s/%s: gone while the kubelet was down, cleaning up" % (saved["namespace"], saved["name"]))
            w.start()

    # ---- kubectl logs: the API server proxies GET /containerLogs/NS/POD/CONTAINER to us
    def serve_logs(self):
        cert, keyf = os.environ.get("RKV_TLS_CERT"), os.environ.get("RKV_TLS_KEY")
        if not cert:
            return
        kubelet = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *a):
                pass

            def do_GET(self):
                u = urllib.parse.urlparse(self.path)
                q = urllib.parse.parse_qs(u.query)
                parts = u.path.strip("/").split("/")
                if u.path == "/healthz":
                    return self.send_text(200, b"ok")
                if len(parts) != 4 or parts[0] != "containerLogs":
                    return self.send_text(404, b"not supported by the process kubelet")
                _, ns, pod, container = parts
                cands = [os.path.join(LOG_DIR, d, container + ".log") for d in os.listdir(LOG_DIR)
                         if d.startswith("%s_%s_" % (ns, pod))]
                cands = [c for c in cands if os.path.exists(c)]
                if not cands:
                    return self.send_text(404, b"no logs")
                path = max(cands, key=os.path.getmtime)
                with open(path, "rb") as f:
                    data = f.read()
                if "tailLines" in q:
                    n = int(q["tailLines"][0])
                    data = b"".join(data.splitlines(True)[-n:]) if n > 0 else b""
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(data)
                if q.get("follow", ["false"])[0] == "true":
                    pos = os.path.getsize(path)
                    while True:
                        time.sleep(0.5)
                        try:
                            size = os.path.getsize(path)
                        except OSError:
                            return
                        if size > pos:
                            with open(path, "rb") as f:
                                f.seek(pos)
                                chunk = f.read()
                            pos += len(chunk)
                            try:
                                self.wfile.write(chunk)
                                self.wfile.flush()
                            except OSError:
                                return
                        if not any(w.ns == ns and w.name == pod and not w.done and
                                   getattr(w.containers.get(container), "running", False)
                                   for w in list(kubelet.workers.values())):
                            return  # the container stopped: end the stream as the kubelet does

            def send_text(self, code, body):
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        try:
            srv = http.server.ThreadingHTTPServer((HOST_IP, 10250), H)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, keyf)
            srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
            srv.daemon_threads = True
            srv.serve_forever()
        except Exception as e:
            log("logs server (kubectl logs) not available: %s" % e)


def main():
    signal.signal(signal.SIGTERM, lambda *_: (log("SIGTERM: kubelet exits, pods keep running (they are re-adopted on restart)"), os._exit(0)))
    k = Kubelet()
    k.loop()


if __name__ == "__main__":
    main()
