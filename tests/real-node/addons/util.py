"""Small helpers: the log line, timestamps, object keys."""

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


def meta(o):
    return o.get("metadata", {})


def key(o):
    return "%s/%s" % (meta(o).get("namespace", ""), meta(o)["name"])
