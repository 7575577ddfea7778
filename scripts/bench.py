#!/usr/bin/env python3
"""raftkv against etcd on the same machine, in one run (scripts/bench.sh).

Starts a 3-node raftkv cluster (release kvnode) and a 3-member etcd cluster
on loopback, drives both with wrk (the same load generator, the same
connection count and value size), alternates the two systems round by round
so that drift on a shared machine hits both alike, and prints one table with
the ratios raftkv / etcd. Writes every figure as JSON.

Workloads (each for --duration seconds per round):
  writes        PUT to the leader (etcd: /v3/kv/put, always fsynced)
  writes-fwd    PUT to a follower, which forwards it to the leader
  lin-reads     linearizable GET on the leader (etcd: /v3/kv/range)
  ser-reads     serializable GET on a follower
  value-<size>  writes of 64 B, 4 KiB, 64 KiB and 1 MiB values (MB/s)
Then, unless --skip-failover: kill -9 the leader N times under a steady
writer and measure how long writes stop (kill to first acknowledged write).

Nothing here asserts a speed: it prints figures (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

KEYS = 10_000


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def http_json(url: str, body: dict | None = None, timeout: float = 2.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    if data is not None:
        req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"null")


def wait_until(what: str, check, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as e:  # any failure means "not yet"
            last = e
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what} (last error: {last})")


@dataclass
class Proc:
    args: list[str]
    log: Path
    popen: subprocess.Popen | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.log, "ab")  # the child owns it
        self.popen = subprocess.Popen(self.args, stdout=f, stderr=f, stdin=subprocess.DEVNULL)

    def kill9(self) -> None:
        if self.popen and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait()

    def stop(self) -> None:
        if self.popen and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill9()

    def pid(self) -> int:
        assert self.popen
        return self.popen.pid


@dataclass
class Cluster:
    """Three members on loopback; `client[i]` is member i's client URL."""

    name: str
    work: Path
    procs: list[Proc] = field(default_factory=list)
    client: list[str] = field(default_factory=list)

    def stop(self) -> None:
        for p in self.procs:
            p.stop()

    def rss_mib(self) -> list[float]:
        out = []
        for p in self.procs:
            try:
                for line in Path(f"/proc/{p.pid()}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        out.append(int(line.split()[1]) / 1024)
            except OSError:
                out.append(float("nan"))
        return out


class Raftkv(Cluster):
    def __init__(self, work: Path, kvnode: str, kvctl: str, extra: list[str]):
        super().__init__("raftkv", work)
        self.kvctl = kvctl
        for i in range(3):
            cport = 17379 + i * 10
            d = work / f"node{i + 1}"
            d.mkdir(parents=True, exist_ok=True)
            self.procs.append(
                Proc(
                    [kvnode, "--id", str(i + 1), "--name", f"node{i + 1}", "--data-dir", str(d),
                     "--client-addr", f"127.0.0.1:{cport}", "--peer-addr", f"127.0.0.1:{cport + 1}", *extra],
                    work / f"node{i + 1}.log",
                )
            )
            self.client.append(f"http://127.0.0.1:{cport}")

    def start(self) -> None:
        for p in self.procs:
            p.start()
        for c in self.client:
            wait_until(f"{c}/healthz", lambda c=c: urllib.request.urlopen(f"{c}/healthz", timeout=1).status == 200)
        subprocess.run([self.kvctl, "--endpoints", ",".join(self.client), "init"], check=True,
                       stdout=subprocess.DEVNULL)
        for c in self.client:
            wait_until(f"{c}/readyz", lambda c=c: urllib.request.urlopen(f"{c}/readyz", timeout=1).status == 200)

    def leader(self) -> int | None:
        for c in self.client:
            try:
                st = http_json(f"{c}/v1/cluster/status", timeout=1)
            except Exception:  # a dead member
                continue
            if st.get("leader"):
                return int(st["leader"]["id"]) - 1
        return None

    def revision(self) -> int:
        return int(http_json(f"{self.client[self.leader() or 0]}/v1/cluster/status")["revision"])

    def restart(self, i: int) -> None:
        self.procs[i].start()
        c = self.client[i]
        wait_until(f"{c}/readyz", lambda: urllib.request.urlopen(f"{c}/readyz", timeout=1).status == 200)

    # -- requests, as (method, path, body) for wrk and for the probe writer
    def put(self, key: str, value: bytes):
        return "PUT", f"/v1/kv/{key.replace('/', '%2F')}", value

    def wrk_write(self, value_size: int) -> str:
        return WRK_COMMON + f"""
local value = string.rep("v", {value_size})
request = function()
  return wrk.format("PUT", "/v1/kv/bench%2F" .. math.random(0, {KEYS - 1}), nil, value)
end
"""

    def wrk_read(self, serializable: bool) -> str:
        q = "?consistency=serializable" if serializable else ""
        return WRK_COMMON + f"""
request = function()
  return wrk.format("GET", "/v1/kv/bench%2F" .. math.random(0, {KEYS - 1}) .. "{q}")
end
"""


    def wrk_load(self, n: int, value_size: int, threads: int) -> str:
        return WRK_COMMON + WRK_LOAD.format(n=n, threads=threads) + f"""
local value = string.rep("v", {value_size})
request = function()
  return wrk.format("PUT", "/v1/kv/scale%2F" .. string.format("%08d", load_key()), nil, value)
end
"""

    def wrk_write_scaled(self, n: int, value_size: int) -> str:
        return WRK_COMMON + f"""
local value = string.rep("v", {value_size})
request = function()
  return wrk.format("PUT", "/v1/kv/scale%2F" .. string.format("%08d", math.random(0, {n - 1})), nil, value)
end
"""

    def wrk_scan(self, n: int, count: int) -> str:
        return WRK_COMMON + f"""
request = function()
  local start = string.format("scale%%2F%08d", math.random(0, {max(n - count, 1) - 1}))
  return wrk.format("GET", "/v1/kv?prefix=scale%2F&start=" .. start .. "&limit={count}")
end
"""

    def add_learner_and_wait(self, kvnode: str, work: Path) -> tuple[float, int]:
        """A fourth, empty node joins as a learner; returns the seconds until
        it has applied the leader's index, and the leader's snapshot bytes."""
        d = work / "node4"
        p = Proc([kvnode, "--id", "4", "--name", "node4", "--data-dir", str(d),
                  "--client-addr", "127.0.0.1:17409", "--peer-addr", "127.0.0.1:17410"], work / "node4.log")
        p.start()
        self.procs.append(p)
        wait_until("node4 /healthz", lambda: urllib.request.urlopen("http://127.0.0.1:17409/healthz", timeout=1).status == 200)
        leader = self.client[self.leader() or 0]
        want = http_json(f"{leader}/v1/cluster/status")["applied_index"]
        t0 = time.monotonic()
        subprocess.run([self.kvctl, "--endpoints", leader, "add-learner", "4", "http://127.0.0.1:17410",
                        "http://127.0.0.1:17409", "--name", "node4"], check=True, stdout=subprocess.DEVNULL)
        wait_until("the learner to catch up",
                   lambda: (http_json("http://127.0.0.1:17409/v1/cluster/status", timeout=1).get("applied_index") or 0) >= want,
                   timeout=1800)
        secs = time.monotonic() - t0
        snap = sum(f.stat().st_size for f in (work / "node1").rglob("*") if f.is_file() and "snapshot" in str(f))
        return secs, snap


class Etcd(Cluster):
    def __init__(self, work: Path, etcd: str):
        super().__init__("etcd", work)
        peers = ",".join(f"e{i + 1}=http://127.0.0.1:{12380 + i * 10}" for i in range(3))
        for i in range(3):
            cport, pport = 12379 + i * 10, 12380 + i * 10
            self.procs.append(
                Proc(
                    [etcd, "--name", f"e{i + 1}", "--data-dir", str(work / f"e{i + 1}"),
                     "--listen-client-urls", f"http://127.0.0.1:{cport}",
                     "--advertise-client-urls", f"http://127.0.0.1:{cport}",
                     "--listen-peer-urls", f"http://127.0.0.1:{pport}",
                     "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
                     "--initial-cluster", peers, "--initial-cluster-state", "new",
                     "--initial-cluster-token", "bench", "--logger", "zap", "--log-level", "warn",
                     # etcd's default quota (2 GiB) is below the scale run's data.
                     "--quota-backend-bytes", str(8 << 30)],
                    work / f"e{i + 1}.log",
                )
            )
            self.client.append(f"http://127.0.0.1:{cport}")

    def start(self) -> None:
        for p in self.procs:
            p.start()
        wait_until("an etcd leader", lambda: self.leader() is not None)

    def leader(self) -> int | None:
        for c in self.client:
            try:
                st = http_json(f"{c}/v3/maintenance/status", {}, timeout=1)
            except Exception:  # a dead member
                continue
            if st.get("leader"):
                ids = {}
                for j, cc in enumerate(self.client):
                    try:
                        ids[http_json(f"{cc}/v3/maintenance/status", {}, timeout=1)["header"]["member_id"]] = j
                    except Exception:
                        pass
                if st["leader"] in ids:
                    return ids[st["leader"]]
        return None

    def revision(self) -> int:
        return int(http_json(f"{self.client[self.leader() or 0]}/v3/maintenance/status", {})["header"]["revision"])

    def restart(self, i: int) -> None:
        self.procs[i].start()
        c = self.client[i]
        wait_until(f"{c}/health", lambda: http_json(f"{c}/health", timeout=1).get("health") == "true")

    def put(self, key: str, value: bytes):
        body = json.dumps({"key": b64(key.encode()), "value": b64(value)}).encode()
        return "POST", "/v3/kv/put", body

    def wrk_write(self, value_size: int) -> str:
        return WRK_COMMON + WRK_B64 + f"""
local value = b64(string.rep("v", {value_size}))
wrk.headers["content-type"] = "application/json"
request = function()
  local key = keys[math.random(0, {KEYS - 1})]
  return wrk.format("POST", "/v3/kv/put", nil, '{{"key":"' .. key .. '","value":"' .. value .. '"}}')
end
"""

    def wrk_read(self, serializable: bool) -> str:
        extra = ',"serializable":true' if serializable else ""
        return WRK_COMMON + WRK_B64 + f"""
wrk.headers["content-type"] = "application/json"
request = function()
  local key = keys[math.random(0, {KEYS - 1})]
  return wrk.format("POST", "/v3/kv/range", nil, '{{"key":"' .. key .. '"{extra}}}')
end
"""


    def wrk_load(self, n: int, value_size: int, threads: int) -> str:
        return WRK_COMMON + WRK_B64 + WRK_LOAD.format(n=n, threads=threads) + f"""
local value = b64(string.rep("v", {value_size}))
wrk.headers["content-type"] = "application/json"
request = function()
  local key = b64("scale/" .. string.format("%08d", load_key()))
  return wrk.format("POST", "/v3/kv/put", nil, '{{"key":"' .. key .. '","value":"' .. value .. '"}}')
end
"""

    def wrk_write_scaled(self, n: int, value_size: int) -> str:
        return WRK_COMMON + WRK_B64 + f"""
local value = b64(string.rep("v", {value_size}))
wrk.headers["content-type"] = "application/json"
request = function()
  local key = b64("scale/" .. string.format("%08d", math.random(0, {n - 1})))
  return wrk.format("POST", "/v3/kv/put", nil, '{{"key":"' .. key .. '","value":"' .. value .. '"}}')
end
"""

    def wrk_scan(self, n: int, count: int) -> str:
        # range_end "scale0" = the end of prefix "scale/" ('/' + 1 = '0').
        return WRK_COMMON + WRK_B64 + f"""
wrk.headers["content-type"] = "application/json"
local range_end = b64("scale0")
request = function()
  local key = b64("scale/" .. string.format("%08d", math.random(0, {max(n - count, 1) - 1})))
  return wrk.format("POST", "/v3/kv/range", nil,
    '{{"key":"' .. key .. '","range_end":"' .. range_end .. '","limit":{count}}}')
end
"""


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


# Shared by every wrk script: a per-thread random seed, and a done() that
# prints the figures as one JSON line (latencies in microseconds).
WRK_COMMON = """
local threads = {}
setup = function(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end
init = function(args)
  math.randomseed(os.time() * 1000 + id)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"errors":%d,"status_errors":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""

# The loader: each wrk thread writes its share of the keys 0..n-1 once (a
# thread's connections take turns), then stops; a request issued after the
# last key overwrites a random one.
WRK_LOAD = """
local next_key, answered = nil, 0
function load_key()
  if next_key == nil then next_key = id - 1 end
  local k = next_key
  next_key = next_key + {threads}
  if k >= {n} then k = math.random(0, {n} - 1) end
  return k
end
response = function(status, headers, body)
  answered = answered + 1
  if answered >= math.ceil({n} / {threads}) then wrk.thread:stop() end
end
"""

# Base64 for etcd's JSON gateway. Keys are encoded once per thread in
# init(), so that etcd's requests cost the load generator no more than
# raftkv's do.
WRK_B64 = """
local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function sextet(n) return alphabet:sub(n + 1, n + 1) end
function b64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    out[#out + 1] = sextet(math.floor(n / 262144) % 64) .. sextet(math.floor(n / 4096) % 64) ..
      (b and sextet(math.floor(n / 64) % 64) or "=") .. (c and sextet(n % 64) or "=")
  end
  return table.concat(out)
end
keys = {}
local base_init = init
init = function(args)
  base_init(args)
  for k = 0, LAST_KEY do keys[k] = b64("bench/" .. k) end
end
""".replace("LAST_KEY", str(KEYS - 1))


def run_wrk(url: str, script: str, args, work: Path, duration: int, until=None) -> dict:
    """One wrk run. With `until`, wrk runs until that returns true (polled
    every 0.2 s), then is stopped with SIGINT, on which it reports as usual:
    wrk's threads can stop early, but its main thread waits out -d."""
    path = work / "wrk.lua"
    path.write_text(script)
    cmd = ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{int(duration)}s",
           "--timeout", "10s", "-s", str(path), url]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if until is not None:
        while proc.poll() is None and not until():
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate()
    line = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not line:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err.strip() or out.strip()}")
    r = json.loads(line[-1])
    r["ops_s"] = r["requests"] / (r["duration_us"] / 1e6)
    return r


def prefill(cluster: Cluster, value_size: int) -> None:
    """Every key of the read workloads exists (a miss is cheaper than a hit)."""
    value = b"v" * value_size
    conn_url = cluster.client[cluster.leader() or 0]
    host = conn_url.removeprefix("http://")
    conn = http.client.HTTPConnection(host, timeout=10)
    for k in range(KEYS):
        method, path, body = cluster.put(f"bench/{k}", value)
        conn.request(method, path, body=body)
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            raise RuntimeError(f"{cluster.name} prefill: HTTP {r.status}")


def failover(cluster: Cluster, kills: int, settle: float) -> list[float]:
    """Kill -9 the leader `kills` times under a steady writer; each sample is
    the time from the kill to the acknowledgement of the first write that
    was sent after it (a write in flight at the kill may still be answered
    by the dying leader and says nothing about recovery)."""
    acked: list[tuple[float, float]] = []
    stop = threading.Event()
    lock = threading.Lock()

    def writer(i: int) -> None:
        n = 0
        conns: dict[int, http.client.HTTPConnection] = {}
        while not stop.is_set():
            target = (i + n) % 3
            n += 1
            try:
                conn = conns.get(target) or http.client.HTTPConnection(
                    cluster.client[target].removeprefix("http://"), timeout=0.5)
                conns[target] = conn
                method, path, body = cluster.put(f"failover/{i}", b"x" * 64)
                sent = time.monotonic()
                conn.request(method, path, body=body)
                r = conn.getresponse()
                r.read()
                if r.status == 200:
                    with lock:
                        acked.append((sent, time.monotonic()))
            except (OSError, http.client.HTTPException):
                conns.pop(target, None)
                time.sleep(0.01)

    threads = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    samples = []
    try:
        for k in range(kills):
            time.sleep(settle)
            leader = cluster.leader()
            if leader is None:
                raise RuntimeError(f"{cluster.name}: no leader before kill {k + 1}")
            t_kill = time.monotonic()
            cluster.procs[leader].kill9()
            deadline = t_kill + 30
            resumed = None
            while time.monotonic() < deadline:
                with lock:
                    after = [done for sent, done in acked if sent > t_kill]
                if after:
                    resumed = min(after)
                    break
                time.sleep(0.01)
            if resumed is None:
                raise RuntimeError(f"{cluster.name}: writes did not resume within 30 s of kill {k + 1}")
            samples.append(resumed - t_kill)
            log(f"{cluster.name} kill {k + 1}/{kills}: writes resumed after {samples[-1]:.2f} s")
            with lock:
                acked.clear()
            cluster.restart(leader)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)
    return samples


def start_perf(pid: int, work: Path, duration: int) -> subprocess.Popen:
    """Samples the leader's stacks while it serves writes (perf's software
    clock: this machine has no hardware counters)."""
    return subprocess.Popen(["perf", "record", "-F", "499", "-g", "-p", str(pid), "-o", str(work / "perf.data"),
                             "--", "sleep", str(duration)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def finish_perf(perf: subprocess.Popen, work: Path) -> str:
    perf.wait()
    report = subprocess.run(["perf", "report", "-i", str(work / "perf.data"), "--stdio", "--no-children",
                             "--sort", "dso,symbol", "--percent-limit", "0.7", "-g", "none"],
                            capture_output=True, text=True).stdout
    path = work / "perf-writes.txt"
    path.write_text(report)
    log(f"leader profile under writes: {path}")
    return str(path)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kvnode", required=True)
    ap.add_argument("--kvctl", required=True)
    ap.add_argument("--etcd", default=shutil.which("etcd") or "/usr/bin/etcd")
    ap.add_argument("--duration", type=int, default=10, help="seconds per run")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--value-size", type=int, default=256)
    ap.add_argument("--value-sizes", default="64,4096,65536,1048576",
                    help="comma-separated value sizes for the size matrix ('' to skip)")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--scale-keys", type=int, default=1_000_000, help="keys for the scale run (0 skips it)")
    ap.add_argument("--scale-value-size", type=int, default=1024)
    ap.add_argument("--skip-failover", action="store_true")
    ap.add_argument("--systems", default="raftkv,etcd", help="which systems to run (the ratios need both)")
    ap.add_argument("--only", default="", help="comma-separated workloads to run (default: all)")
    ap.add_argument("--json", default="bench-results.json")
    ap.add_argument("--perf", action="store_true", help="profile the raftkv leader during the last writes run (perf)")
    ap.add_argument("--work", default="")
    ap.add_argument("--kvnode-arg", action="append", default=[], help="extra kvnode flag (repeatable)")
    args = ap.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="raftkv-bench."))
    work.mkdir(parents=True, exist_ok=True)
    log(f"work dir {work}")
    raftkv = Raftkv(work / "raftkv", args.kvnode, args.kvctl, args.kvnode_arg)
    etcd = Etcd(work / "etcd", args.etcd)
    systems: list[Cluster] = [s for s in (raftkv, etcd) if s.name in args.systems.split(",")]
    try:
        for s in systems:
            log(f"starting {s.name}")
            s.start()
            log(f"{s.name}: prefilling {KEYS} keys")
            prefill(s, args.value_size)
        return run(args, work, systems)
    finally:
        for s in systems:
            s.stop()


def run(args, work: Path, systems: list[Cluster]) -> int:
    sizes = [int(x) for x in args.value_sizes.split(",") if x]
    workloads = {
        "writes": lambda s: (s.client[s.leader()], s.wrk_write(args.value_size)),
        "writes-fwd": lambda s: (s.client[(s.leader() + 1) % 3], s.wrk_write(args.value_size)),
        "lin-reads": lambda s: (s.client[s.leader()], s.wrk_read(False)),
        "ser-reads": lambda s: (s.client[(s.leader() + 1) % 3], s.wrk_read(True)),
    }
    by_size = {f"value-{size}": (lambda s, size=size: (s.client[s.leader()], s.wrk_write(size)))
               for size in sizes}
    only = [w for w in args.only.split(",") if w]
    if only:
        workloads = {k: v for k, v in workloads.items() if k in only}
        by_size = {k: v for k, v in by_size.items() if k in only}
    results: dict = {"settings": vars(args), "machine": machine(), "runs": [], "failover": {}, "rss_mib": {}}
    # The value sizes go after every round of the 256-byte workloads: their
    # hundreds of MiB leave compaction work behind that would slow whatever
    # ran next.
    phases = [(rnd, name, make) for rnd in range(args.rounds) for name, make in workloads.items()]
    phases += [(rnd, name, make) for rnd in range(args.rounds) for name, make in by_size.items()]
    for rnd, name, make in phases:
        order = systems if rnd % 2 == 0 else systems[::-1]
        for s in order:
            url, script = make(s)
            perf = None
            if args.perf and name == "writes" and s.name == "raftkv" and rnd == args.rounds - 1:
                perf = start_perf(s.procs[s.leader()].pid(), work, args.duration)
            r = run_wrk(url, script, args, work, args.duration)
            if perf:
                results["profile"] = finish_perf(perf, work)
            r.update(system=s.name, workload=name, round=rnd + 1)
            size = int(name.split("-")[1]) if name.startswith("value-") else args.value_size
            r["mb_s"] = r["ops_s"] * size / 1e6 if "read" not in name else None
            results["runs"].append(r)
            log(f"round {rnd + 1} {name:<14} {s.name:<6} {r['ops_s']:>9,.0f} ops/s  "
                f"p99 {r['p99_us'] / 1000:6.1f} ms  errors {r['errors'] + r['status_errors']}")
    for s in systems:
        results["rss_mib"][s.name] = s.rss_mib()
    if args.scale_keys:
        results["scale"] = {s.name: scale(s, args, work) for s in systems}
    if not args.skip_failover:
        for s in systems:
            samples = failover(s, args.kills, settle=2.0)
            results["failover"][s.name] = samples
    Path(args.json).write_text(json.dumps(results, indent=2))
    print_table(results, [s.name for s in systems])
    log(f"figures written to {args.json}")
    return 0


def scale(s: Cluster, args, work: Path) -> dict:
    """Write throughput on a small store, then after loading --scale-keys
    keys of --scale-value-size bytes; 10k-key range scans; RSS; for raftkv
    a new learner catching up by snapshot."""
    n, size = args.scale_keys, args.scale_value_size
    leader = s.client[s.leader()]
    out: dict = {"keys": n, "value_size": size}
    out["writes_small_store"] = run_wrk(leader, s.wrk_write_scaled(KEYS, size), args, work, args.duration)
    log(f"{s.name} scale: {out['writes_small_store']['ops_s']:,.0f} writes/s of {size} B on a {KEYS}-key store; "
        f"loading {n:,} keys")
    t0 = time.monotonic()
    target = s.revision() + n
    seen = {"revision": 0, "since": time.monotonic()}

    def loaded() -> bool:
        # wrk's threads stop after n answers, errors included; its main
        # thread waits out -d. So the load is done at the target revision,
        # or once the revision stops moving (a write that failed is missing).
        try:
            rev = s.revision()
        except Exception:  # ask again
            return False
        if rev != seen["revision"]:
            seen.update(revision=rev, since=time.monotonic())
        return rev >= target or time.monotonic() - seen["since"] > 10

    out["load"] = run_wrk(leader, s.wrk_load(n, size, args.threads), args, work, 3600, until=loaded)
    out["load"]["secs"] = time.monotonic() - t0
    log(f"{s.name} scale: loaded in {out['load']['secs']:.0f} s ({n / out['load']['secs']:,.0f} keys/s, "
        f"{out['load']['errors'] + out['load']['status_errors']} errors)")
    leader = s.client[s.leader()]
    out["writes_large_store"] = run_wrk(leader, s.wrk_write_scaled(n, size), args, work, args.duration)
    scan_args = argparse.Namespace(**{**vars(args), "connections": 4})
    out["scans"] = run_wrk(leader, s.wrk_scan(n, 10_000), scan_args, work, args.duration)
    out["rss_mib"] = s.rss_mib()
    out["disk_mib"] = sum(f.stat().st_size for f in s.work.rglob("*") if f.is_file()) / 3 / 2**20
    log(f"{s.name} scale: {out['writes_large_store']['ops_s']:,.0f} writes/s on {n:,} keys, "
        f"scans p99 {out['scans']['p99_us'] / 1000:.0f} ms, RSS {', '.join(f'{x:.0f}' for x in out['rss_mib'])} MiB")
    if isinstance(s, Raftkv):
        secs, snap = s.add_learner_and_wait(args.kvnode, s.work)
        out["learner_catch_up_s"] = secs
        out["snapshot_bytes"] = snap
        log(f"raftkv scale: a new learner caught up in {secs:.1f} s ({snap / 2**20 / secs:,.0f} MiB/s of snapshot)")
    return out


def print_table(results: dict, names: list[str]) -> None:
    runs = results["runs"]
    print("| workload | " + " | ".join(f"{n} ops/s | {n} p99 ms" for n in names) + " | ratio ops/s | ratio p99 |")
    print("|---" * (2 * len(names) + 3) + "|")
    for w in dict.fromkeys(r["workload"] for r in runs):
        cells, ops, p99 = [], {}, {}
        for n in names:
            rs = [r for r in runs if r["workload"] == w and r["system"] == n]
            ops[n] = statistics.median(r["ops_s"] for r in rs)
            p99[n] = statistics.median(r["p99_us"] for r in rs) / 1000
            mb = rs[0].get("mb_s")
            extra = f" ({statistics.median(r['mb_s'] for r in rs):,.1f} MB/s)" if mb else ""
            cells.append(f"{ops[n]:,.0f}{extra} | {p99[n]:.1f}")
        ratio = " | |"
        if len(names) == 2:
            a, b = names
            ratio = f" | ×{ops[a] / ops[b]:.2f} | ×{p99[a] / p99[b]:.2f} |"
        print(f"| {w} | " + " | ".join(cells) + ratio)
    for n, samples in results["failover"].items():
        print(f"\nfailover {n}: {len(samples)} kills, writes resumed after p50 {pct(samples, 50):.2f} s, "
              f"p90 {pct(samples, 90):.2f} s, max {max(samples):.2f} s")
    for n, sc in results.get("scale", {}).items():
        small, large = sc["writes_small_store"]["ops_s"], sc["writes_large_store"]["ops_s"]
        line = (f"\nscale {n}: {sc['keys']:,} keys x {sc['value_size']} B loaded at {sc['keys'] / sc['load']['secs']:,.0f} keys/s; "
                f"writes {small:,.0f}/s on {KEYS:,} keys -> {large:,.0f}/s on {sc['keys']:,} ({large / small - 1:+.0%}); "
                f"10k-key scans {sc['scans']['ops_s']:.1f}/s p99 {sc['scans']['p99_us'] / 1000:.0f} ms; "
                f"RSS {', '.join(f'{x:.0f}' for x in sc['rss_mib'])} MiB; disk {sc['disk_mib']:,.0f} MiB per member")
        if "learner_catch_up_s" in sc:
            line += (f"; new learner caught up in {sc['learner_catch_up_s']:.1f} s "
                     f"({sc['snapshot_bytes'] / 2**20 / sc['learner_catch_up_s']:,.0f} MiB/s)")
        print(line)
    for n, rss in results["rss_mib"].items():
        print(f"RSS {n} after the runs: " + ", ".join(f"{x:.0f} MiB" for x in rss))


def machine() -> dict:
    load = os.getloadavg()
    return {"cpus": os.cpu_count(), "loadavg_before": load, "kernel": os.uname().release}


if __name__ == "__main__":
    sys.exit(main())
