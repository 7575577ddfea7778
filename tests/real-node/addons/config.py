"""Settings of the node add-ons: paths under the state directory and the environment (see addons.py)."""

import os

STATE = os.environ.get("RKV_STATE", "/tmp/raftkv-k8s")
# the directories behind the local class's PersistentVolumes
PV_DIR = os.path.join(STATE, "pv")
NODE = os.environ.get("RKV_NODE_NAME", "local-node")
PROVISIONER = "raftkv.io/local-dir"
SYNC_PERIOD = 0.5
CLUSTER_DOMAIN = "cluster.local"
