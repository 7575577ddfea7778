"""Settings of the process kubelet: paths under the state directory and the environment (see kubelet.py)."""

import os
import sys

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
# Termination messages, with the real kubelet's limits: the last 4 KiB of the
# file at terminationMessagePath; for FallbackToLogsOnError the last 80 lines of
# the log, at most their last 2 KiB.
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
TERMINATION_MESSAGE_MAX = 4096
TERMINATION_LOG_LINES = 80
TERMINATION_LOG_MAX = 2048
CLUSTER_DOMAIN = "cluster.local"
