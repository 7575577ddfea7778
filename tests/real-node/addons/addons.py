#!/usr/bin/env python3
"""Cluster add-ons of the local node (tests/local-k8s.sh), stdlib only.

A real kubelet, kube-scheduler and kube-proxy do the node's work; what a cluster
also needs and this machine has no package for is done here, in one process:
  * the volume provisioner and resizer of the `standard` class (provisioner
    raftkv.io/local-dir, provisioner.py), an external provisioner as a CSI
    driver's sidecars would be;
  * cluster DNS data: a hosts file for dnsmasq with the names CoreDNS would
    answer (Service ClusterIPs, headless Services' endpoints and their
    hostname.subdomain names), rewritten on change; dnsmasq is sent SIGHUP so it
    drops the old entries.

Environment: RKV_API_SERVER, RKV_TOKEN_FILE, RKV_CA_FILE, RKV_STATE, RKV_DNS_HOSTS (the file to write), RKV_DNSMASQ_PIDFILE.
"""

import os
import signal
import time
import traceback

from api import Api
from config import CLUSTER_DOMAIN, PV_DIR, SYNC_PERIOD
from events import Reporter
from provisioner import Provisioner
from util import key, log, meta


def dns_records(world):
    """(ip, fqdn) pairs as CoreDNS's kubernetes plugin answers them."""
    recs = []
    for k, svc in sorted(world["services"].items()):
        ns, name = k.split("/", 1)
        spec = svc.get("spec") or {}
        if spec.get("type") == "ExternalName":
            continue
        fqdn = "%s.%s.svc.%s" % (name, ns, CLUSTER_DOMAIN)
        if spec.get("clusterIP") not in ("None", None, ""):
            recs.append((spec["clusterIP"], fqdn))
            continue
        ep = world["endpoints"].get(k) or {}
        for sub in ep.get("subsets") or []:
            for a in sub.get("addresses") or []:
                recs.append((a["ip"], fqdn))
                if a.get("hostname"):
                    recs.append((a["ip"], "%s.%s" % (a["hostname"], fqdn)))
    return sorted(set(recs))


def hosts_file(recs):
    return "# written by tests/real-node/addons/addons.py\n" + "".join("%s\t%s\n" % r for r in recs)


class Addons(Reporter, Provisioner):

    def __init__(self):
        with open(os.environ["RKV_TOKEN_FILE"]) as f:
            token = f.read().strip()
        self.api = Api(os.environ["RKV_API_SERVER"], token, os.environ["RKV_CA_FILE"])
        self.hosts_path = os.environ["RKV_DNS_HOSTS"]
        self.dnsmasq_pidfile = os.environ.get("RKV_DNSMASQ_PIDFILE", "")
        self.noted = {}
        self.written = None
        os.makedirs(PV_DIR, exist_ok=True)

    def sync(self):
        api = self.api
        world = {
            "pvcs": {key(p): p for p in api.list("/api/v1/persistentvolumeclaims")},
            "pvs": {meta(p)["name"]: p for p in api.list("/api/v1/persistentvolumes")},
            "services": {key(p): p for p in api.list("/api/v1/services")},
            "endpoints": {key(p): p for p in api.list("/api/v1/endpoints")},
        }
        self.provision(world)
        self.resize(world)
        self.reclaim(world)
        self.write_dns(world)

    def write_dns(self, world):
        content = hosts_file(dns_records(world))
        if content == self.written:
            return
        tmp = self.hosts_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(content)
        os.rename(tmp, self.hosts_path)
        self.written = content
        self.reload_dnsmasq()

    def reload_dnsmasq(self):
        try:
            with open(self.dnsmasq_pidfile) as f:
                os.kill(int(f.read().split()[0]), signal.SIGHUP)
        except (OSError, ValueError, IndexError) as e:
            self.note("dnsmasq", "cannot signal dnsmasq (%s): it will read the hosts file when it starts" % e)

    def loop(self):
        log("node add-ons running: provisioner for the local class, DNS hosts file %s" % self.hosts_path)
        while True:
            t0 = time.time()
            try:
                self.sync()
            except Exception as e:
                self.note("sync-error", "sync error: %s\n%s" % (e, traceback.format_exc()), every=10)
            time.sleep(max(0.05, SYNC_PERIOD - (time.time() - t0)))


if __name__ == "__main__":
    Addons().loop()
