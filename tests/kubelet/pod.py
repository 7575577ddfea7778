"""One pod: its containers as local processes in the pod's network namespace, restarts, status."""

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import traceback

from api import ApiError
from config import (
    API_PORT,
    BACKOFF_BASE,
    BACKOFF_MAX,
    BRIDGE,
    HOST_IP,
    LOG_DIR,
    NETNS_PREFIX,
    POD_NET,
    PODS_DIR,
    PYTHON,
    RUNNER,
    TERMINATION_LOG_LINES,
    TERMINATION_LOG_MAX,
    TERMINATION_MESSAGE_MAX,
    TERMINATION_MESSAGE_PATH,
    VETH_PREFIX,
    VOLUME_SYNC_PERIOD,
)
from images import image_repo, lookup_image
from podspec import Waiting, expand, field_value, resource_value
from probes import PodProbes
from util import log, meta, now_iso, proc_starttime, run, write_json
from volumes import PodVolumes


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
        self.log_offset = 0         # where the current run's output starts in the log file
        self.ever_started = False

    def record(self):
        return {"pid": self.pid, "pid_start": self.pid_start, "started_at": self.started_at,
                "restart_count": self.restart_count, "env": self.env, "ever_started": self.ever_started,
                "last_state": self.last_state, "terminated": self.terminated, "log_offset": self.log_offset}


class PodWorker(PodVolumes, PodProbes, threading.Thread):
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
                c.log_offset = rec.get("log_offset", 0)
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
        tmsg = self.termination_message(c, code, reason)
        if tmsg:  # as the kubelet: the runtime's message, then what the container left
            msg = "%s: %s" % (msg, tmsg) if msg else tmsg
        t = {"exitCode": code, "reason": reason, "startedAt": c.started_at or finished, "finishedAt": finished,
             "containerID": "process://%s" % c.pid}
        if msg:
            t["message"] = msg
        c.terminated = t
        c.running = False
        c.waiting = None
        return t

    def termination_log(self, c):
        """The host file bind-mounted at the container's terminationMessagePath (emptied at every start)."""
        return os.path.join(self.dir, c.name + ".termination-log")

    def termination_message(self, c, code, reason):
        """The container's termination message as the kubelet reads it: the last 4 KiB of the file at
        terminationMessagePath; if that is empty, the policy FallbackToLogsOnError and the container failed
        (but did run), the tail of this run's log."""
        data = b""
        if c.spec.get("terminationMessagePath", TERMINATION_MESSAGE_PATH):
            try:
                with open(self.termination_log(c), "rb") as f:
                    f.seek(max(0, os.fstat(f.fileno()).st_size - TERMINATION_MESSAGE_MAX))
                    data = f.read(TERMINATION_MESSAGE_MAX)
            except OSError:
                pass
        if not data and c.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError" and code != 0 and reason != "StartError":
            data = self.log_tail(c)
        return data.decode(errors="replace")

    def log_tail(self, c):
        """The last 80 lines of this run's log, at most their last 2 KiB (the last 2 KiB of the log suffice for that)."""
        try:
            with open(os.path.join(self.log_dir, c.name + ".log"), "rb") as f:
                f.seek(max(c.log_offset, os.fstat(f.fileno()).st_size - TERMINATION_LOG_MAX))
                data = f.read(TERMINATION_LOG_MAX)
        except OSError:
            return b""
        return b"".join(data.splitlines(True)[-TERMINATION_LOG_LINES:])

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
        for vm in cspec.get("volumeMounts") or []:
            src = self.mounts.get(vm["name"])
            if src is None:
                raise Waiting("CreateContainerConfigError", "volumeMount %s: no such volume" % vm["name"])
            if vm.get("subPath"):
                src = os.path.join(src, expand(vm["subPath"], env))
                if not os.path.exists(src):
                    os.makedirs(src, exist_ok=True)
            dst = os.path.normpath(vm["mountPath"])
            mounts.append({"src": src, "dst": dst, "ro": bool(vm.get("readOnly"))})
        # The termination message file: a fresh empty one per run, world-writable as the kubelet makes it,
        # mounted like a volume after the volumes (a path under a volume lands in it).
        tpath = cspec.get("terminationMessagePath", TERMINATION_MESSAGE_PATH)
        if tpath:
            tlog, tdst = self.termination_log(c), os.path.normpath(os.path.join("/", tpath))
            os.makedirs(self.dir, exist_ok=True)
            with open(tlog, "w"):
                pass
            os.chmod(tlog, 0o666)
            if tdst not in [m["dst"] for m in mounts]:
                mounts.append({"src": tlog, "dst": tdst, "ro": False})
        mounts.sort(key=lambda m: m["dst"].count("/"))  # parents first; stable: equal depths keep their order
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
        log_offset = logf.tell()
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
        c.log_offset = log_offset
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
