"""Volume provisioning and scheduling (mixin of kubelet.Kubelet)."""

import os
import shutil
import time

from api import ApiError
from config import NODE, PROVISIONER, PV_DIR
from podspec import parse_quantity
from util import key, log, meta, now_iso


class Provisioner:
    """The volume provisioner and the scheduler: PVs for pending PVCs, growing them, reclaiming released ones,
    binding pods.

    Part of Kubelet; uses its attributes."""

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
                    why = "0/1 nodes are available: %s." % problem
                    self.event(pod, "Warning", "FailedScheduling", why)
                    # As kube-scheduler: the pod's status says why it waits (controllers read it there).
                    cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": why,
                            "lastProbeTime": None, "lastTransitionTime": now_iso()}
                    try:
                        self.api.patch("/api/v1/namespaces/%s/pods/%s/status" % (md["namespace"], md["name"]),
                                       {"status": {"phase": "Pending", "conditions": [cond]}})
                    except ApiError as e:
                        if e.status not in (404, 409):
                            raise
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
