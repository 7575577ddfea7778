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
import base64
import fnmatch
import http.client
import http.server
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = os.environ.get("RKV_PYTHON", sys.executable)
RUNNER = os.path.join(HERE, "runner.py")
STATE = os.environ.get("RKV_STATE", "/tmp/raftkv-k8s")
KDIR = os.path.join(STATE, "kubelet")
PODS_DIR = os.path.join(KDIR, "pods")
PV_DIR = os.path.join(STATE, "pv")
LOG_DIR = os.path.join(STATE, "logs", "pods")
MOUNTPOINTS_FILE = os.path.join(KDIR, "created-dirs")
NODE = os.environ.get("RKV_NODE_NAME", "local-node")
HOST_IP = os.environ.get("RKV_HOST_IP", "10.244.0.1")
POD_NET = os.environ.get("RKV_POD_NET", "10.244.0")
BRIDGE = os.environ.get("RKV_BRIDGE", "rkvbr0")
API_PORT = os.environ.get("RKV_API_PORT", "443")
NETNS_PREFIX = "rkvp"
VETH_PREFIX = "rkvh"
PROVISIONER = "raftkv.io/local-dir"
BACKOFF_BASE = float(os.environ.get("RKV_BACKOFF_BASE", "1"))
BACKOFF_MAX = float(os.environ.get("RKV_BACKOFF_MAX", "30"))
SYNC_PERIOD = 0.5
# How often a running pod's Secret/ConfigMap volumes are compared with the API
# (the real kubelet: about a minute). Short, so a renewed certificate reaches
# the pods within a scenario.
VOLUME_SYNC_PERIOD = float(os.environ.get("RKV_VOLUME_SYNC", "3"))
HEARTBEAT_PERIOD = 10
CLUSTER_DOMAIN = "cluster.local"

_log_lock = threading.Lock()


def log(msg):
    with _log_lock:
        sys.stdout.write("%s %s\n" % (time.strftime("%H:%M:%S", time.localtime()) + ".%03d" % (time.time() % 1 * 1000), msg))
        sys.stdout.flush()


def now_iso():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def run(cmd, check=True):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(cmd), r.stderr.strip()))
    return r


def proc_starttime(pid):
    """Start time of a process in clock ticks (guards against pid reuse), or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
        fields = data[data.rindex(")") + 2:].split()
        if fields[0] in ("Z", "X"):  # exited, not reaped yet
            return None
        return int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.rename(tmp, path)


def meta(o):
    return o.get("metadata", {})


def key(o):
    return "%s/%s" % (meta(o).get("namespace", ""), meta(o)["name"])


# --------------------------------------------------------------------------- API

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


# --------------------------------------------------------------------------- images

def load_image_table():
    env = dict(os.environ)
    env.setdefault("RAFTKV_BIN_DIR", default_bin_dir())
    env["KUBELET_DIR"] = HERE
    env["PYTHON"] = PYTHON
    table = {}
    files = [os.path.join(HERE, "images.json")]
    if os.environ.get("RAFTKV_IMAGES"):
        files.append(os.environ["RAFTKV_IMAGES"])
    for fn in files:
        with open(fn) as f:
            raw = json.load(f)
        for k, v in raw.items():
            if k.startswith("_"):
                continue
            table[k] = json.loads(re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), json.dumps(v)))
    return table, env["RAFTKV_BIN_DIR"]


def default_bin_dir():
    if os.environ.get("RAFTKV_BIN_DIR"):
        return os.environ["RAFTKV_BIN_DIR"]
    if os.environ.get("CARGO_TARGET_DIR"):
        return os.path.join(os.environ["CARGO_TARGET_DIR"], "debug")
    return os.path.expanduser("~/.cache/raftkv/target/debug")


def image_repo(image):
    """'docker.io/raftkv/kvnode:0.1.0@sha256:..' -> 'docker.io/raftkv/kvnode'"""
    image = image.split("@", 1)[0]
    last = image.rsplit("/", 1)
    if ":" in last[-1]:
        image = image[: image.rindex(":")]
    return image


def lookup_image(table, image):
    repo = image_repo(image)
    for k in sorted(table, key=len, reverse=True):
        if repo == k or repo.endswith("/" + k) or fnmatch.fnmatch(repo, k):
            return table[k]
    return None


# --------------------------------------------------------------------------- helpers

def expand(s, env):
    """Kubernetes $(VAR) expansion: $$ escapes, unknown references stay as they are."""
    out, i, n = [], 0, len(s)
    while i < n:
        c = s[i]
        if c == "$" and i + 1 < n:
            nxt = s[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                j = s.find(")", i + 2)
                if j != -1:
                    name = s[i + 2: j]
                    if name in env:
                        out.append(env[name])
                    else:
                        out.append(s[i: j + 1])
                    i = j + 1
                    continue
        out.append(c)
        i += 1
    return "".join(out)


def parse_quantity(q):
    """Parse a Kubernetes quantity into a float (base units)."""
    q = str(q)
    suffixes = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60,
                "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
    for s in sorted(suffixes, key=len, reverse=True):
        if q.endswith(s):
            return float(q[: -len(s)]) * suffixes[s]
    return float(q)


def is_projection(v):
    return "secret" in v or "configMap" in v or "projected" in v or "downwardAPI" in v


def write_projection(path, files):
    """Writes {relative path: (bytes, mode)} into `path` the way the kubelet's
    atomic writer does: into a fresh hidden directory that the `..data` symlink
    is renamed to, the visible names being symlinks through `..data`. A reader
    never sees old and new files mixed (a new certificate with the old key)."""
    os.makedirs(path, exist_ok=True)
    stamp = "..%s.%08x" % (time.strftime("%Y_%m_%d_%H_%M_%S"), random.getrandbits(32))
    for rel, (data, mode) in files.items():
        fp = os.path.join(path, stamp, rel)
        os.makedirs(os.path.dirname(fp), exist_ok=True)
        with open(fp, "wb") as f:
            f.write(data)
        os.chmod(fp, mode)
    os.makedirs(os.path.join(path, stamp), exist_ok=True)
    data_link, tmp_link = os.path.join(path, "..data"), os.path.join(path, "..data_tmp")
    old = os.readlink(data_link) if os.path.islink(data_link) else None
    if os.path.lexists(tmp_link):
        os.unlink(tmp_link)
    os.symlink(stamp, tmp_link)
    os.rename(tmp_link, data_link)
    tops = {rel.split("/")[0] for rel in files}
    for top in tops:
        link = os.path.join(path, top)
        if not os.path.islink(link):
            if os.path.isdir(link):
                shutil.rmtree(link)
            elif os.path.lexists(link):
                os.unlink(link)
            os.symlink(os.path.join("..data", top), link)
    for entry in os.listdir(path):
        if not entry.startswith("..") and entry not in tops:
            os.unlink(os.path.join(path, entry))
    if old and old != stamp:
        shutil.rmtree(os.path.join(path, old), ignore_errors=True)


def label_match(selector, labels):
    if not selector:
        return False
    return all(labels.get(k) == v for k, v in selector.items())


def field_value(pod, path, worker):
    md, spec = pod["metadata"], pod["spec"]
    m = re.match(r"metadata\.(labels|annotations)\['(.*)'\]$", path)
    if m:
        return (md.get(m.group(1)) or {}).get(m.group(2), "")
    if path in ("metadata.labels", "metadata.annotations"):
        d = md.get(path.split(".")[1]) or {}
        return "\n".join('%s="%s"' % (k, d[k]) for k in sorted(d))
    return {
        "metadata.name": md.get("name", ""),
        "metadata.namespace": md.get("namespace", ""),
        "metadata.uid": md.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", NODE),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": worker.ip,
        "status.podIPs": worker.ip,
        "status.hostIP": HOST_IP,
    }.get(path, "")


def resource_value(container, ref, node_alloc):
    res = ref.get("resource", "")
    kind, _, what = res.partition(".")
    val = ((container.get("resources") or {}).get(kind) or {}).get(what)
    if val is None:
        val = node_alloc.get(what, "0") if kind == "limits" else "0"
    divisor = parse_quantity(ref.get("divisor") or "1") or 1.0  # the API server defaults it to "0"
    v = parse_quantity(val) / divisor
    return str(int(-(-v // 1)))  # ceil, as the kubelet does


class Waiting(Exception):
    """A container cannot start yet (reason, message)."""

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason
        self.message = message


# --------------------------------------------------------------------------- containers

class Container:
    def __init__(self, spec):
        self.name = spec["name"]
        self.spec = spec
        self.proc = None            # Popen when we started it
        self.pid = None             # runner pid (= process group id)
        self.pid_start = None
        self.running = False
        self.started_at = None
        self.restart_count = 0
        self.terminated = None      # dict for state.terminated
        self.last_state = None      # dict for lastState.terminated
        self.waiting = ("ContainerCreating", None)
        self.ready = False
        self.started_probe_ok = False
        self.backoff_until = 0
        self.backoff = 0
        self.env = {}
        self.probe = {}             # kind -> {"next": t, "ok": n, "fail": n}
        self.log_path = None
        self.ever_started = False

    def record(self):
        return {"pid": self.pid, "pid_start": self.pid_start, "started_at": self.started_at,
                "restart_count": self.restart_count, "env": self.env, "ever_started": self.ever_started,
                "last_state": self.last_state, "terminated": self.terminated}


class PodWorker(threading.Thread):
    def __init__(self, kubelet, pod, saved=None):
        super().__init__(daemon=True, name="pod-" + meta(pod)["name"])
        self.k = kubelet
        self.api = kubelet.api
        self.pod = pod
        self.uid = meta(pod)["uid"]
        self.ns = meta(pod)["namespace"]
        self.name = meta(pod)["name"]
        self.dir = os.path.join(PODS_DIR, self.uid)
        self.log_dir = os.path.join(LOG_DIR, "%s_%s_%s" % (self.ns, self.name, self.uid))
        self.gone = False           # pod object disappeared from the API
        self.done = False
        self.last_status = None
        self.conditions_time = {}
        self.start_time = None
        self.containers = {c["name"]: Container(c) for c in pod["spec"]["containers"]}
        self.init_done = False
        self.idx = None
        self.ip = None
        self.netns = None
        self.volumes_ready = False
        self.mounts = {}
        self.projected = {}         # volume name -> files last written
        self.next_volume_sync = 0
        self.wake = threading.Event()
        if saved:
            self.idx = saved["idx"]
            self.ip = saved["ip"]
            self.netns = saved["netns"]
            self.start_time = saved.get("start_time")
            self.init_done = saved.get("init_done", False)
            self.conditions_time = saved.get("conditions_time", {})
            for name, rec in saved.get("containers", {}).items():
                c = self.containers.get(name)
                if not c:
                    continue
                c.restart_count = rec.get("restart_count", 0)
                c.ever_started = rec.get("ever_started", False)
                c.last_state = rec.get("last_state")
                c.env = rec.get("env", {})
                if rec.get("pid") and proc_starttime(rec["pid"]) == rec.get("pid_start"):
                    c.pid, c.pid_start, c.started_at = rec["pid"], rec["pid_start"], rec["started_at"]
                    c.running = True
                    c.waiting = None
                    c.run_t0 = time.time()
                    c.started_probe_ok = not c.spec.get("startupProbe")
                    c.probe = {k: {"next": time.time(), "ok": 0, "fail": 0}
                               for k in ("readinessProbe", "livenessProbe", "startupProbe") if c.spec.get(k)}
                    c.log_path = os.path.join(self.log_dir, name + ".log")
                    self.volumes_ready = True
                    log("pod %s/%s: re-adopted container %s (pid %d)" % (self.ns, self.name, name, c.pid))
                elif rec.get("terminated"):
                    c.terminated = rec["terminated"]
                    c.pid, c.started_at = rec.get("pid"), rec.get("started_at")
                    c.waiting = None
                elif rec.get("pid"):
                    c.pid, c.pid_start, c.started_at = rec["pid"], rec.get("pid_start"), rec.get("started_at")
                    self.read_exit(c)

    # ---- persistence
    def save(self):
        os.makedirs(self.dir, exist_ok=True)
        write_json(os.path.join(self.dir, "state.json"), {
            "uid": self.uid, "namespace": self.ns, "name": self.name, "idx": self.idx, "ip": self.ip,
            "netns": self.netns, "start_time": self.start_time, "init_done": self.init_done,
            "conditions_time": self.conditions_time,
            "containers": {n: c.record() for n, c in self.containers.items()}})

    def event(self, etype, reason, msg, container=None):
        self.k.event(self.pod, etype, reason, msg, field=("spec.containers{%s}" % container) if container else None)

    # ---- main loop
    def run(self):
        try:
            while True:
                pod = self.pod
                if self.gone:
                    self.kill_all(2, "pod object is gone")
                    self.cleanup()
                    return
                if meta(pod).get("deletionTimestamp"):
                    self.terminate(pod)
                    return
                try:
                    self.step(pod)
                except Exception as e:  # keep the worker alive; log what failed
                    log("pod %s/%s: error: %s\n%s" % (self.ns, self.name, e, traceback.format_exc()))
                    time.sleep(1)
                self.wake.wait(0.3)
                self.wake.clear()
        finally:
            self.done = True

    def step(self, pod):
        if self.netns is None:
            self.setup_network()
            self.start_time = self.start_time or now_iso()
            self.save()
        policy = pod["spec"].get("restartPolicy", "Always")
        if not self.init_done and pod["spec"].get("initContainers"):
            self.run_init_containers(pod)
            if not self.init_done:
                self.push_status(pod)
                return
        self.init_done = True
        for c in self.containers.values():
            self.step_container(pod, c, policy)
        if self.volumes_ready and time.time() >= self.next_volume_sync:
            self.next_volume_sync = time.time() + VOLUME_SYNC_PERIOD
            self.refresh_volumes(pod)
        self.push_status(pod)

    def step_container(self, pod, c, policy):
        now = time.time()
        if c.running:
            if not self.alive(c):
                self.on_exit(pod, c, policy)
                return
            self.run_probes(pod, c)
            if c.running and not c.spec.get("readinessProbe"):
                c.ready = not c.spec.get("startupProbe") or c.started_probe_ok
            return
        if c.terminated and not self.should_restart(c, policy):
            return
        if now < c.backoff_until:
            return
        try:
            self.start_container(pod, c)
        except Waiting as w:
            if c.waiting != (w.reason, w.message):
                log("pod %s/%s: container %s waiting: %s: %s" % (self.ns, self.name, c.name, w.reason, w.message))
                if w.reason not in ("ContainerCreating",):
                    self.event("Warning", "Failed", w.message, c.name)
            c.waiting = (w.reason, w.message)
            if w.reason in ("CreateContainerError", "RunContainerError", "ErrImagePull"):
                c.backoff_until = time.time() + 2

    def should_restart(self, c, policy):
        if policy == "Always":
            return True
        if policy == "OnFailure":
            return (c.terminated or {}).get("exitCode", 0) != 0
        return False

    def alive(self, c):
        if c.proc is not None:
            return c.proc.poll() is None
        return proc_starttime(c.pid) == c.pid_start

    def read_exit(self, c):
        code, msg, finished = 137, None, now_iso()
        try:
            with open(os.path.join(self.dir, c.name + ".exit")) as f:
                ex = json.load(f)
            code, msg, finished = ex["exitCode"], ex.get("message"), ex["finishedAt"]
        except (OSError, ValueError, KeyError):
            if c.proc is not None and c.proc.returncode is not None:
                rc = c.proc.returncode
                code = 128 - rc if rc < 0 else rc
        reason = "Completed" if code == 0 else "Error"
        if code == 127 or (msg and msg != "exec failed"):
            reason = "StartError" if code != 0 else reason
        t = {"exitCode": code, "reason": reason, "startedAt": c.started_at or finished, "finishedAt": finished,
             "containerID": "process://%s" % c.pid}
        if msg:
            t["message"] = msg
        c.terminated = t
        c.running = False
        c.waiting = None
        return t

    def on_exit(self, pod, c, policy):
        t = self.read_exit(c)
        c.ready = False
        c.proc = None
        log("pod %s/%s: container %s exited with code %s" % (self.ns, self.name, c.name, t["exitCode"]))
        ran = time.time() - c.run_t0 if getattr(c, "run_t0", None) else 0
        if self.should_restart(c, policy):
            if ran > 60:
                c.backoff = 0
            c.backoff = BACKOFF_BASE if not c.backoff else min(BACKOFF_MAX, c.backoff * 2)
            c.backoff_until = time.time() + c.backoff
            c.waiting = ("CrashLoopBackOff", "back-off %gs restarting failed container=%s pod=%s" % (c.backoff, c.name, self.name))
            self.event("Warning", "BackOff", "Back-off %gs restarting failed container" % c.backoff, c.name)
        self.save()

    # ---- network
    def setup_network(self):
        self.idx = self.k.alloc_idx(self.uid)
        self.ip = "%s.%d" % (POD_NET, self.idx)
        ns = "%s%d" % (NETNS_PREFIX, self.idx)
        veth = "%s%d" % (VETH_PREFIX, self.idx)
        run(["ip", "netns", "del", ns], check=False)
        run(["ip", "link", "del", veth], check=False)
        os.makedirs("/etc/netns/" + ns, exist_ok=True)
        with open("/etc/netns/%s/hosts" % ns, "w") as f:
            f.write(self.k.hosts_for(self.pod, self.ip))
        with open("/etc/netns/%s/resolv.conf" % ns, "w") as f:
            # no DNS server: names come from the hosts file; lookups of anything else fail fast
            f.write("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        run(["ip", "netns", "add", ns])
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
        run(["ip", "link", "set", veth, "master", BRIDGE, "up"])
        run(["ip", "-n", ns, "addr", "add", self.ip + "/24", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        self.netns = ns
        log("pod %s/%s: network namespace %s, ip %s" % (self.ns, self.name, ns, self.ip))

    # ---- volumes
    def prepare_volumes(self, pod):
        vols = {}
        world = self.k.world
        vdir = os.path.join(self.dir, "volumes")
        for v in pod["spec"].get("volumes") or []:
            name = v["name"]
            if "persistentVolumeClaim" in v:
                claim = v["persistentVolumeClaim"]["claimName"]
                pvc = world["pvcs"].get("%s/%s" % (self.ns, claim))
                if pvc is None:
                    raise Waiting("ContainerCreating", 'persistentvolumeclaim "%s" not found' % claim)
                if meta(pvc).get("deletionTimestamp") and name not in self.mounts:
                    raise Waiting("ContainerCreating", 'persistentvolumeclaim "%s" is being deleted' % claim)
                pvname = pvc["spec"].get("volumeName")
                pv = world["pvs"].get(pvname) if pvname else None
                if pv is None or (pvc.get("status") or {}).get("phase") != "Bound":
                    raise Waiting("ContainerCreating", 'persistentvolumeclaim "%s" is not bound' % claim)
                src = (pv["spec"].get("hostPath") or pv["spec"].get("local") or {}).get("path")
                if not src:
                    raise Waiting("CreateContainerError", "PV %s has no hostPath/local path" % pvname)
                os.makedirs(src, exist_ok=True)
                vols[name] = src
            elif "emptyDir" in v:
                p = os.path.join(vdir, name)
                os.makedirs(p, exist_ok=True)
                vols[name] = p
            elif "hostPath" in v:
                p = v["hostPath"]["path"]
                if (v["hostPath"].get("type") or "") == "DirectoryOrCreate":
                    os.makedirs(p, exist_ok=True)
                vols[name] = p
            elif is_projection(v):
                p = os.path.join(vdir, name)
                files = self.volume_files(pod, v)
                shutil.rmtree(p, ignore_errors=True)
                write_projection(p, files)
                self.projected[name] = files
                vols[name] = p
            else:
                raise Waiting("CreateContainerError", "volume %s: type not supported by the process kubelet" % name)
        self.mounts = vols

    def refresh_volumes(self, pod):
        """Brings Secret/ConfigMap volumes of a running pod up to date, as the
        kubelet does: a changed Secret reaches the files without a restart. A
        source that is gone leaves the last content in place."""
        for v in pod["spec"].get("volumes") or []:
            name = v["name"]
            # Service-account tokens are minted per request: refreshing them
            # would rewrite the volume every period (they last a day here).
            if not is_projection(v) or any("serviceAccountToken" in src for src in (v.get("projected") or {}).get("sources") or []):
                continue
            p = os.path.join(self.dir, "volumes", name)
            if not os.path.isdir(p):
                continue
            try:
                files = self.volume_files(pod, v)
            except Waiting:
                continue
            if files == self.projected.get(name):
                continue
            write_projection(p, files)
            self.projected[name] = files
            log("pod %s/%s: volume %s updated (%d files)" % (self.ns, self.name, name, len(files)))

    def _get_keyed(self, kind, name, optional):
        obj = self.api.get_or_none("/api/v1/namespaces/%s/%s/%s" % (self.ns, kind, name))
        if obj is None and not optional:
            raise Waiting("CreateContainerConfigError", '%s "%s" not found' % (kind[:-1], name))
        if obj is None:
            return {}
        out = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()} if kind == "secrets" else \
            {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        for k, v in (obj.get("binaryData") or {}).items():
            out[k] = base64.b64decode(v)
        return out

    def _items(self, data, items, mode):
        if not items:
            return {k: (v, mode) for k, v in data.items()}
        out = {}
        for it in items:
            if it["key"] in data:
                out[it["path"]] = (data[it["key"]], it.get("mode", mode))
        return out

    def volume_files(self, pod, v):
        if "secret" in v:
            s = v["secret"]
            data = self._get_keyed("secrets", s["secretName"], s.get("optional", False))
            return self._items(data, s.get("items"), s.get("defaultMode", 0o644))
        if "configMap" in v:
            s = v["configMap"]
            data = self._get_keyed("configmaps", s["name"], s.get("optional", False))
            return self._items(data, s.get("items"), s.get("defaultMode", 0o644))
        if "downwardAPI" in v:
            s = v["downwardAPI"]
            return {it["path"]: (field_value(pod, it["fieldRef"]["fieldPath"], self).encode(), it.get("mode", s.get("defaultMode", 0o644)))
                    for it in s.get("items", []) if "fieldRef" in it}
        s = v["projected"]
        mode = s.get("defaultMode", 0o644)
        out = {}
        for src in s.get("sources") or []:
            if "secret" in src:
                d = self._get_keyed("secrets", src["secret"]["name"], src["secret"].get("optional", False))
                out.update(self._items(d, src["secret"].get("items"), mode))
            elif "configMap" in src:
                d = self._get_keyed("configmaps", src["configMap"]["name"], src["configMap"].get("optional", False))
                out.update(self._items(d, src["configMap"].get("items"), mode))
            elif "downwardAPI" in src:
                for it in src["downwardAPI"].get("items", []):
                    if "fieldRef" in it:
                        out[it["path"]] = (field_value(pod, it["fieldRef"]["fieldPath"], self).encode(), it.get("mode", mode))
            elif "serviceAccountToken" in src:
                t = src["serviceAccountToken"]
                out[t["path"]] = (self.request_token(pod, t).encode(), mode)
        return out

    def request_token(self, pod, t):
        sa = pod["spec"].get("serviceAccountName") or "default"
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": max(int(t.get("expirationSeconds", 3600)), 86400),
                         "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.name, "uid": self.uid}}}
        if t.get("audience"):
            body["spec"]["audiences"] = [t["audience"]]
        r = self.api.post("/api/v1/namespaces/%s/serviceaccounts/%s/token" % (self.ns, sa), body)
        return r["status"]["token"]

    # ---- env and command line
    def build_env(self, pod, cspec, image):
        env = {"PATH": "%s:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" % self.k.bin_dir,
               "HOSTNAME": pod["spec"].get("hostname") or self.name, "HOME": "/root"}
        env.update(image.get("env") or {})
        if pod["spec"].get("enableServiceLinks", True):
            env.update(self.k.service_links(self.ns))
        env.update({"KUBERNETES_SERVICE_HOST": HOST_IP, "KUBERNETES_SERVICE_PORT": API_PORT,
                    "KUBERNETES_SERVICE_PORT_HTTPS": API_PORT,
                    "KUBERNETES_PORT": "tcp://%s:%s" % (HOST_IP, API_PORT),
                    "KUBERNETES_PORT_%s_TCP" % API_PORT: "tcp://%s:%s" % (HOST_IP, API_PORT),
                    "KUBERNETES_PORT_%s_TCP_PROTO" % API_PORT: "tcp",
                    "KUBERNETES_PORT_%s_TCP_PORT" % API_PORT: API_PORT,
                    "KUBERNETES_PORT_%s_TCP_ADDR" % API_PORT: HOST_IP})
        for ef in cspec.get("envFrom") or []:
            prefix = ef.get("prefix", "")
            if "configMapRef" in ef:
                d = self._get_keyed("configmaps", ef["configMapRef"]["name"], ef["configMapRef"].get("optional", False))
            else:
                d = self._get_keyed("secrets", ef["secretRef"]["name"], ef["secretRef"].get("optional", False))
            for k, v in d.items():
                env[prefix + k] = v.decode(errors="replace")
        for e in cspec.get("env") or []:
            name = e["name"]
            if "value" in e or "valueFrom" not in e:
                env[name] = expand(e.get("value", ""), env)
                continue
            vf = e["valueFrom"]
            if "fieldRef" in vf:
                env[name] = field_value(pod, vf["fieldRef"]["fieldPath"], self)
            elif "resourceFieldRef" in vf:
                env[name] = resource_value(cspec, vf["resourceFieldRef"], self.k.allocatable)
            elif "configMapKeyRef" in vf or "secretKeyRef" in vf:
                kind, ref = ("configmaps", vf["configMapKeyRef"]) if "configMapKeyRef" in vf else ("secrets", vf["secretKeyRef"])
                d = self._get_keyed(kind, ref["name"], ref.get("optional", False))
                if ref["key"] in d:
                    env[name] = d[ref["key"]].decode(errors="replace")
                elif not ref.get("optional", False):
                    raise Waiting("CreateContainerConfigError", "couldn't find key %s in %s %s" % (ref["key"], kind[:-1], ref["name"]))
        return env

    def build_argv(self, cspec, image, env):
        command = cspec.get("command") or []
        args = cspec.get("args") or []
        if not command:
            command = list(image.get("command") or [])
            if not args:
                args = list(image.get("args") or [])
        else:
            command = [expand(x, env) for x in command]
        args = [expand(x, env) for x in args]
        argv = command + args
        if not argv:
            raise Waiting("CreateContainerError", "no command specified")
        base = os.path.basename(argv[0])
        if base in (image.get("binaries") or []):
            argv[0] = os.path.join(self.k.bin_dir, base)
        if "/" in argv[0]:
            if not os.access(argv[0], os.X_OK):
                raise Waiting("RunContainerError", "executable %s not found (RAFTKV_BIN_DIR=%s)" % (argv[0], self.k.bin_dir))
        elif not shutil.which(argv[0], path=env["PATH"]):
            raise Waiting("RunContainerError", "executable %s not found in PATH %s" % (argv[0], env["PATH"]))
        return argv

    # ---- start
    def start_container(self, pod, c, init=False):
        cspec = c.spec
        image = lookup_image(self.k.images, cspec.get("image", ""))
        if image is None:
            raise Waiting("ErrImagePull", "image %s is not in the process kubelet's image table (tests/kubelet/images.json)" % cspec.get("image"))
        if not self.volumes_ready or not c.ever_started:
            self.prepare_volumes(pod)
            self.volumes_ready = True
        env = self.build_env(pod, cspec, image)
        argv = self.build_argv(cspec, image, env)
        mounts = []
        for vm in sorted(cspec.get("volumeMounts") or [], key=lambda m: m["mountPath"].count("/")):
            src = self.mounts.get(vm["name"])
            if src is None:
                raise Waiting("CreateContainerConfigError", "volumeMount %s: no such volume" % vm["name"])
            if vm.get("subPath"):
                src = os.path.join(src, expand(vm["subPath"], env))
                if not os.path.exists(src):
                    os.makedirs(src, exist_ok=True)
            dst = os.path.normpath(vm["mountPath"])
            mounts.append({"src": src, "dst": dst, "ro": bool(vm.get("readOnly"))})
        dsts = [m["dst"] for m in mounts]

        def under_volume(path):
            return any(path.startswith(d.rstrip("/") + "/") for d in dsts)

        for m in mounts:
            # containers share the host's filesystem: a volume must not hide the program
            if argv[0] == m["dst"] or argv[0].startswith(m["dst"].rstrip("/") + "/"):
                raise Waiting("CreateContainerError", "volumeMount %s would hide the program %s (the process kubelet "
                              "runs containers on the host's filesystem)" % (m["dst"], argv[0]))
            if not under_volume(m["dst"]):
                self.k.ensure_mountpoint(m["dst"], os.path.isdir(m["src"]))
        workdir = cspec.get("workingDir") or image.get("workingDir") or "/"
        if not under_volume(workdir):
            self.k.ensure_mountpoint(workdir, True)
        os.makedirs(self.dir, exist_ok=True)
        os.makedirs(self.log_dir, exist_ok=True)
        spec = {"hostname": pod["spec"].get("hostname") or self.name, "mounts": mounts, "workdir": workdir,
                "argv": argv, "env": env, "exit_file": os.path.join(self.dir, c.name + ".exit")}
        spec_file = os.path.join(self.dir, c.name + ".spec.json")
        write_json(spec_file, spec)
        c.log_path = os.path.join(self.log_dir, c.name + ".log")
        logf = open(c.log_path, "ab")
        logf.write(("---- %s kubelet: starting container %s (restart %d): %s\n"
                    % (now_iso(), c.name, c.restart_count + (1 if c.ever_started else 0), " ".join(argv))).encode())
        logf.flush()
        try:
            c.proc = subprocess.Popen(["ip", "netns", "exec", self.netns, "unshare", "--uts", "--", PYTHON, RUNNER, spec_file],
                                      stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True,
                                      env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        finally:
            logf.close()
        if c.ever_started:
            c.restart_count += 1
            if c.terminated:
                c.last_state = c.terminated
        c.ever_started = True
        c.pid = c.proc.pid
        c.pid_start = proc_starttime(c.pid)
        c.started_at = now_iso()
        c.run_t0 = time.time()
        c.running = True
        c.terminated = None
        c.waiting = None
        c.ready = False
        c.started_probe_ok = False
        c.env = env
        t = time.time()
        c.probe = {k: {"next": t + (cspec.get(k) or {}).get("initialDelaySeconds", 0), "ok": 0, "fail": 0}
                   for k in ("readinessProbe", "livenessProbe", "startupProbe") if cspec.get(k)}
        self.save()
        log("pod %s/%s: started container %s pid %d: %s" % (self.ns, self.name, c.name, c.pid, " ".join(argv)))
        self.event("Normal", "Started", "Started container %s" % c.name, c.name)

    def run_init_containers(self, pod):
        for cs in pod["spec"].get("initContainers") or []:
            c = getattr(self, "_init_" + cs["name"], None)
            if c is None:
                c = Container(cs)
                setattr(self, "_init_" + cs["name"], c)
            if c.terminated and c.terminated["exitCode"] == 0:
                continue
            if c.running:
                if self.alive(c):
                    return
                t = self.read_exit(c)
                c.proc = None
                log("pod %s/%s: init container %s exited with %s" % (self.ns, self.name, c.name, t["exitCode"]))
                if t["exitCode"] == 0:
                    continue
                c.backoff = BACKOFF_BASE if not c.backoff else min(BACKOFF_MAX, c.backoff * 2)
                c.backoff_until = time.time() + c.backoff
                return
            if time.time() < c.backoff_until:
                return
            try:
                self.start_container(pod, c)
            except Waiting as w:
                c.waiting = (w.reason, w.message)
                c.backoff_until = time.time() + 2
            return
        self.init_done = True
        self.save()

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

    # ---- stopping
    def stop_containers(self, cs, grace):
        cs = [c for c in cs if c.running and self.alive(c)]
        for c in cs:
            try:
                os.kill(c.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.time() + max(0, grace)
        while time.time() < deadline and any(self.alive(c) for c in cs):
            time.sleep(0.1)
        for c in cs:
            if self.alive(c):
                log("pod %s/%s: container %s did not stop within %ss, SIGKILL" % (self.ns, self.name, c.name, grace))
                try:
                    os.killpg(c.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        for c in cs:
            for _ in range(50):
                if not self.alive(c):
                    break
                time.sleep(0.1)
            # anything left in the container's process group
            try:
                os.killpg(c.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            c.running = False

    def kill_all(self, grace, why):
        cs = [c for c in self.containers.values() if c.running]
        cs += [v for k, v in vars(self).items() if k.startswith("_init_") and v.running]
        if cs:
            log("pod %s/%s: stopping containers (%s), grace %ss" % (self.ns, self.name, why, grace))
        self.stop_containers(cs, grace)

    def terminate(self, pod):
        md = meta(pod)
        grace = md.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
        log("pod %s/%s: deletion requested, SIGTERM with grace period %ss" % (self.ns, self.name, grace))
        self.event("Normal", "Killing", "Stopping container(s) with grace period %ss" % grace)
        t0 = time.time()
        self.kill_all(grace, "pod deleted")
        for c in self.containers.values():
            if c.ever_started and c.terminated is None:
                self.read_exit(c)
            c.ready = False
        try:
            self.push_status(self.pod)
        except Exception:
            pass
        try:
            self.api.delete("/api/v1/namespaces/%s/pods/%s" % (self.ns, self.name),
                            {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}})
            log("pod %s/%s: containers stopped in %.1fs, pod object deleted" % (self.ns, self.name, time.time() - t0))
        except ApiError as e:
            if e.status not in (404, 409):
                log("pod %s/%s: delete failed: %s" % (self.ns, self.name, e))
        self.cleanup()

    def cleanup(self):
        if self.netns:
            for pid in run(["ip", "netns", "pids", self.netns], check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            run(["ip", "netns", "del", self.netns], check=False)
            shutil.rmtree("/etc/netns/" + self.netns, ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.k.free_idx(self.uid)
        log("pod %s/%s: cleaned up (netns %s, ip %s released; logs kept in %s)" % (self.ns, self.name, self.netns, self.ip, self.log_dir))

    # ---- status
    def cond(self, ctype, ok):
        val = "True" if ok else "False"
        prev = self.conditions_time.get(ctype)
        if not prev or prev[0] != val:
            self.conditions_time[ctype] = prev = [val, now_iso()]
        return {"type": ctype, "status": val, "lastProbeTime": None, "lastTransitionTime": prev[1]}

    def cstatus(self, c):
        image = c.spec.get("image", "")
        st = {"name": c.name, "image": image, "imageID": "process://" + image_repo(image), "ready": c.ready,
              "restartCount": c.restart_count, "started": c.running}
        if c.pid:
            st["containerID"] = "process://%d" % c.pid
        if c.running:
            st["state"] = {"running": {"startedAt": c.started_at}}
        elif c.waiting:
            w = {"reason": c.waiting[0]}
            if c.waiting[1]:
                w["message"] = c.waiting[1]
            st["state"] = {"waiting": w}
        elif c.terminated:
            st["state"] = {"terminated": c.terminated}
        else:
            st["state"] = {"waiting": {"reason": "ContainerCreating"}}
        last = c.terminated if (c.waiting and c.terminated) else c.last_state
        st["lastState"] = {"terminated": last} if last else {}
        return st

    def push_status(self, pod):
        cs = list(self.containers.values())
        policy = pod["spec"].get("restartPolicy", "Always")
        all_ready = all(c.ready for c in cs)
        inits = [getattr(self, "_init_" + x["name"]) for x in pod["spec"].get("initContainers") or [] if hasattr(self, "_init_" + x["name"])]
        if any(c.running for c in cs) or (policy == "Always" and any(c.ever_started for c in cs)):
            phase = "Running"
        elif cs and all(c.terminated for c in cs) and policy != "Always":
            ok = all(c.terminated["exitCode"] == 0 for c in cs)
            phase = "Succeeded" if ok else ("Failed" if policy == "Never" else "Running")
        else:
            phase = "Pending"
        status = {
            "phase": phase,
            "conditions": [self.cond("Initialized", self.init_done), self.cond("Ready", all_ready),
                           self.cond("ContainersReady", all_ready), self.cond("PodScheduled", True)],
            "hostIP": HOST_IP,
            "startTime": self.start_time,
            "containerStatuses": [self.cstatus(c) for c in cs],
        }
        if self.ip:
            status["podIP"] = self.ip
            status["podIPs"] = [{"ip": self.ip}]
        if inits:
            status["initContainerStatuses"] = [self.cstatus(c) for c in inits]
        if status == self.last_status:
            return
        try:
            self.api.patch("/api/v1/namespaces/%s/pods/%s/status" % (self.ns, self.name), {"status": status})
        except ApiError as e:
            if e.status == 404:
                return
            raise
        if self.last_status is None or self.last_status["phase"] != phase or \
                self.last_status["conditions"][1]["status"] != status["conditions"][1]["status"]:
            log("pod %s/%s: status phase=%s ready=%s ip=%s" % (self.ns, self.name, phase, all_ready, self.ip))
        self.last_status = status
        self.save()


# --------------------------------------------------------------------------- kubelet

class Kubelet:
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

    def note(self, k, msg, every=30):
        t = self.noted.get(k)
        if t is None or time.time() - t > every:
            self.noted[k] = time.time()
            log(msg)
            return True
        return False

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

    # ---- events
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
                "source": {"component": "kubelet", "host": NODE}, "firstTimestamp": t, "lastTimestamp": t, "count": 1}
        try:
            self.api.post("/api/v1/namespaces/%s/events" % ns, body)
        except Exception:
            pass

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
        self.reclaim(world)
        self.schedule(world)
        self.run_pods(world)
        self.update_hosts(world)

    # ---- volumes
    def provision(self, world):
        for pvc in world["pvcs"].values():
            md = meta(pvc)
            if md.get("deletionTimestamp") or pvc["spec"].get("volumeName") or (pvc.get("status") or {}).get("phase") not in (None, "Pending"):
                continue
            name = "pvc-" + md["uid"]
            if name in world["pvs"]:
                continue
            path = os.path.join(PV_DIR, name)
            os.makedirs(path, exist_ok=True)
            size = ((pvc["spec"].get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
            pv = {"apiVersion": "v1", "kind": "PersistentVolume",
                  "metadata": {"name": name, "labels": {"raftkv.io/local-pv": "true"},
                               "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
                  "spec": {"capacity": {"storage": size},
                           "accessModes": pvc["spec"].get("accessModes") or ["ReadWriteOnce"],
                           "persistentVolumeReclaimPolicy": "Delete",
                           "storageClassName": pvc["spec"].get("storageClassName") or "",
                           "volumeMode": pvc["spec"].get("volumeMode") or "Filesystem",
                           "hostPath": {"path": path, "type": "DirectoryOrCreate"},
                           "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": md["namespace"],
                                        "name": md["name"], "uid": md["uid"]},
                           "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                               {"key": "kubernetes.io/hostname", "operator": "In", "values": [NODE]}]}]}}}}
            try:
                self.api.post("/api/v1/persistentvolumes", pv)
                log("pvc %s: provisioned pv %s (%s) at %s" % (key(pvc), name, size, path))
                self.event(dict(pvc, kind="PersistentVolumeClaim"), "Normal", "ProvisioningSucceeded",
                           "Successfully provisioned volume %s (directory %s)" % (name, path))
            except ApiError as e:
                if e.status != 409:
                    raise

    def reclaim(self, world):
        for pv in world["pvs"].values():
            md = meta(pv)
            if (md.get("annotations") or {}).get("pv.kubernetes.io/provisioned-by") != PROVISIONER:
                continue
            phase = (pv.get("status") or {}).get("phase")
            if phase in ("Released", "Failed") and pv["spec"].get("persistentVolumeReclaimPolicy") == "Delete":
                path = (pv["spec"].get("hostPath") or {}).get("path", "")
                if path.startswith(PV_DIR + "/"):
                    shutil.rmtree(path, ignore_errors=True)
                try:
                    self.api.delete("/api/v1/persistentvolumes/" + md["name"])
                    log("pv %s: %s, deleted it and its directory %s" % (md["name"], phase.lower(), path))
                except ApiError as e:
                    if e.status != 404:
                        raise
        # directories whose PV is gone (deleted by hand, or by an earlier run)
        for d in os.listdir(PV_DIR):
            p = os.path.join(PV_DIR, d)
            if d not in world["pvs"] and time.time() - os.path.getmtime(p) > 30:
                shutil.rmtree(p, ignore_errors=True)
                log("pv dir %s has no PersistentVolume, removed" % p)

    # ---- scheduling
    def schedule(self, world):
        for pod in world["pods"].values():
            md, spec = meta(pod), pod["spec"]
            if spec.get("nodeName") or md.get("deletionTimestamp"):
                continue
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            problem = None
            for v in spec.get("volumes") or []:
                if "persistentVolumeClaim" not in v:
                    continue
                claim = v["persistentVolumeClaim"]["claimName"]
                pvc = world["pvcs"].get("%s/%s" % (md["namespace"], claim))
                if pvc is None:
                    problem = 'persistentvolumeclaim "%s" not found' % claim
                elif meta(pvc).get("deletionTimestamp"):
                    problem = 'persistentvolumeclaim "%s" is being deleted' % claim
                elif (pvc.get("status") or {}).get("phase") != "Bound":
                    problem = "pod has unbound immediate PersistentVolumeClaims"
                if problem:
                    break
            if problem:
                if self.note("sched/" + md["uid"] + problem, "pod %s: not scheduled yet: %s" % (key(pod), problem)):
                    self.event(pod, "Warning", "FailedScheduling", "0/1 nodes are available: %s." % problem)
                continue
            body = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": md["name"], "uid": md["uid"]},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": NODE}}
            try:
                self.api.post("/api/v1/namespaces/%s/pods/%s/binding" % (md["namespace"], md["name"]), body)
                pod["spec"]["nodeName"] = NODE
                log("pod %s: bound to node %s" % (key(pod), NODE))
                self.event(pod, "Normal", "Scheduled", "Successfully assigned %s to %s" % (key(pod), NODE))
            except ApiError as e:
                if e.status not in (404, 409):
                    raise

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

    # ---- names (hosts files)
    def service_records(self, world):
        """(namespace, ip, names-in-every-namespace, short-names-only-in-own-namespace) for Services and their pods."""
        recs = [("", HOST_IP, ["kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc." + CLUSTER_DOMAIN],
                 ["kubernetes"])]
        for k, svc in sorted(world["services"].items()):
            ns, name = k.split("/", 1)
            spec = svc.get("spec") or {}
            if spec.get("type") == "ExternalName" or k == "default/kubernetes":
                continue
            headless = spec.get("clusterIP") in ("None", None, "")
            ep = world["endpoints"].get(k) or {}
            addrs = []
            for sub in ep.get("subsets") or []:
                addrs.extend(sub.get("addresses") or [])
            addrs.sort(key=lambda a: ((a.get("targetRef") or {}).get("name", ""), a["ip"]))
            svc_names = ["%s.%s" % (name, ns), "%s.%s.svc" % (name, ns), "%s.%s.svc.%s" % (name, ns, CLUSTER_DOMAIN)]
            if headless:
                seen = set()
                for a in addrs:
                    if a["ip"] not in seen:
                        seen.add(a["ip"])
                        recs.append((ns, a["ip"], list(svc_names), [name]))
                    if a.get("hostname"):
                        h = a["hostname"]
                        recs.append((ns, a["ip"], ["%s.%s.%s" % (h, name, ns), "%s.%s.%s.svc" % (h, name, ns),
                                                   "%s.%s.%s.svc.%s" % (h, name, ns, CLUSTER_DOMAIN)],
                                     ["%s.%s" % (h, name)]))
            elif addrs:
                # no kube-proxy: a ClusterIP Service name points at one ready endpoint
                recs.append((ns, addrs[0]["ip"], svc_names, [name]))
        return recs

    def hosts_for(self, pod, ip, recs=None):
        if recs is None:
            recs = self.service_records(self.world)
        md, spec = meta(pod), pod.get("spec") or {}
        ns = md.get("namespace")
        lines = ["# managed by the raftkv process kubelet (tests/kubelet)",
                 "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        hostname = spec.get("hostname") or md.get("name")
        if spec.get("subdomain"):
            lines.append("%s\t%s.%s.%s.svc.%s %s" % (ip, hostname, spec["subdomain"], ns, CLUSTER_DOMAIN, hostname))
        else:
            lines.append("%s\t%s" % (ip, hostname))
        for rns, rip, names, short in recs:
            all_names = names + (short if rns in ("", ns) else [])
            lines.append("%s\t%s" % (rip, " ".join(all_names)))
        return "\n".join(lines) + "\n"

    def update_hosts(self, world):
        recs = self.service_records(world)
        for uid, w in list(self.workers.items()):
            if not w.netns or w.done:
                continue
            content = self.hosts_for(w.pod, w.ip, recs)
            if self.hosts_written.get(uid) == content:
                continue
            path = "/etc/netns/%s/hosts" % w.netns
            try:
                # in place: `ip netns exec` bind-mounted this very inode over /etc/hosts
                with open(path, "r+" if os.path.exists(path) else "w") as f:
                    f.seek(0)
                    f.write(content)
                    f.truncate()
                self.hosts_written[uid] = content
            except OSError as e:
                self.note("hosts" + uid, "hosts file %s: %s" % (path, e))
        for uid in list(self.hosts_written):
            if uid not in self.workers:
                del self.hosts_written[uid]
        # the same names for people and tests on the host (informational)
        lines = ["%s\t%s" % (ip, " ".join(names)) for _, ip, names, _ in recs]
        content = "\n".join(lines) + "\n"
        if getattr(self, "_global_hosts", None) != content:
            with open(os.path.join(STATE, "hosts"), "w") as f:
                f.write(content)
            self._global_hosts = content

    def service_links(self, ns):
        env = {}
        for k, svc in self.world["services"].items():
            sns, name = k.split("/", 1)
            spec = svc.get("spec") or {}
            ip = spec.get("clusterIP")
            if sns != ns or ip in (None, "", "None") or spec.get("type") == "ExternalName":
                continue
            n = name.upper().replace("-", "_")
            ports = spec.get("ports") or []
            if not ports:
                continue
            env[n + "_SERVICE_HOST"] = ip
            env[n + "_SERVICE_PORT"] = str(ports[0]["port"])
            for p in ports:
                if p.get("name"):
                    env["%s_SERVICE_PORT_%s" % (n, p["name"].upper().replace("-", "_"))] = str(p["port"])
            proto = ports[0].get("protocol", "TCP")
            env[n + "_PORT"] = "%s://%s:%s" % (proto.lower(), ip, ports[0]["port"])
            for p in ports:
                pr = p.get("protocol", "TCP")
                pre = "%s_PORT_%s_%s" % (n, p["port"], pr)
                env[pre] = "%s://%s:%s" % (pr.lower(), ip, p["port"])
                env[pre + "_PROTO"] = pr.lower()
                env[pre + "_PORT"] = str(p["port"])
                env[pre + "_ADDR"] = ip
        return env

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
