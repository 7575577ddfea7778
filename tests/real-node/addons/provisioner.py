"""The local StorageClass's provisioner and resizer: a directory per PersistentVolume (mixin of addons.Addons)."""

import os
import shutil
import time

from api import ApiError
from config import NODE, PROVISIONER, PV_DIR
from util import key, log, meta


class Provisioner:
    """PVs for pending PVCs, growing them, reclaiming released ones. Uses self.api, self.event."""

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
            # Writable by any uid, as rancher's local-path provisioner makes them: the kubelet
            # applies no fsGroup to hostPath volumes, and kvnode runs as 65532.
            os.chmod(path, 0o777)
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

    def resize(self, world):
        """The external resizer of the local class (volume expansion). A directory has no size: growing one is
        recording the new size in the PV and in the PVC's status.capacity, which is what a CSI resizer does
        once the disk has grown. The API server only lets a PVC ask for more when its class allows it."""
        for pvc in world["pvcs"].values():
            md, status = meta(pvc), pvc.get("status") or {}
            if md.get("deletionTimestamp") or status.get("phase") != "Bound":
                continue
            want = ((pvc["spec"].get("resources") or {}).get("requests") or {}).get("storage")
            have = (status.get("capacity") or {}).get("storage")
            pv = world["pvs"].get(pvc["spec"].get("volumeName") or "")
            if not want or not have or pv is None:
                continue
            if (meta(pv).get("annotations") or {}).get("pv.kubernetes.io/provisioned-by") != PROVISIONER:
                continue
            if parse_quantity(want) <= parse_quantity(have):
                continue
            try:
                self.api.patch("/api/v1/persistentvolumes/" + meta(pv)["name"], {"spec": {"capacity": {"storage": want}}})
                self.api.patch("/api/v1/namespaces/%s/persistentvolumeclaims/%s/status" % (md["namespace"], md["name"]),
                               {"status": {"capacity": {"storage": want}}})
            except ApiError as e:
                if e.status not in (404, 409):
                    raise
                continue
            log("pvc %s: resized %s -> %s" % (key(pvc), have, want))
            self.event(dict(pvc, kind="PersistentVolumeClaim"), "Normal", "VolumeResizeSuccessful",
                       "resize volume %s from %s to %s" % (meta(pv)["name"], have, want))

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


def parse_quantity(q):
    """A Kubernetes quantity as a float in base units ("2Gi" -> 2147483648.0)."""
    q = str(q)
    suffixes = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60,
                "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
    for s in sorted(suffixes, key=len, reverse=True):
        if q.endswith(s):
            return float(q[: -len(s)]) * suffixes[s]
    return float(q)
