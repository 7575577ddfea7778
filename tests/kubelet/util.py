"""Small helpers: the log line, subprocess calls, JSON files, object keys."""

import json
import os
import subprocess
import sys
import threading
import time

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
