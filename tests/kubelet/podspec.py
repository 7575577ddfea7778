"""Pure helpers for pod specs: $(VAR) expansion, quantities, projections, selectors, downward-API values."""

import os
import random
import re
import shutil
import time

from config import HOST_IP, NODE


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
