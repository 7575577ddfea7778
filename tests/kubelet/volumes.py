"""Volumes of a pod (mixin of pod.PodWorker)."""

import base64
import os
import shutil

from podspec import Waiting, field_value, is_projection, write_projection
from util import log, meta


class PodVolumes:
    """Volumes of one pod: Secret, ConfigMap, projected and downward-API files, refreshed while it runs.

    Part of PodWorker; uses its attributes."""

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
