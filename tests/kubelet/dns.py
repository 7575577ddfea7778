"""Service and pod DNS names through hosts files (mixin of kubelet.Kubelet)."""

import os

from config import CLUSTER_DOMAIN, HOST_IP, STATE
from util import meta


class ServiceDns:
    """Service and pod names: the hosts file of every pod and the Docker-style service link variables.

    Part of Kubelet; uses its attributes."""

    # ---- names (hosts files)
    def service_records(self, world):
        """(namespace, ip, names-in-every-namespace, short-names-only-in-own-namespace) for Services and their pods."""
        recs = [("", HOST_IP, ["kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc." + CLUSTER_DOMAIN],
                 ["kubernetes"])]
        for k, svc in sorted(world["services"].items()):
            ns, name = k.split("/", 1)
            spec = svc.get("spec") or {}
            if spec.get("type") == "ExternalName" or k == "default/kubernetes":
                continue
            headless = spec.get("clusterIP") in ("None", None, "")
            ep = world["endpoints"].get(k) or {}
            addrs = []
            for sub in ep.get("subsets") or []:
                addrs.extend(sub.get("addresses") or [])
            addrs.sort(key=lambda a: ((a.get("targetRef") or {}).get("name", ""), a["ip"]))
            svc_names = ["%s.%s" % (name, ns), "%s.%s.svc" % (name, ns), "%s.%s.svc.%s" % (name, ns, CLUSTER_DOMAIN)]
            if headless:
                seen = set()
                for a in addrs:
                    if a["ip"] not in seen:
                        seen.add(a["ip"])
                        recs.append((ns, a["ip"], list(svc_names), [name]))
                    if a.get("hostname"):
                        h = a["hostname"]
                        recs.append((ns, a["ip"], ["%s.%s.%s" % (h, name, ns), "%s.%s.%s.svc" % (h, name, ns),
                                                   "%s.%s.%s.svc.%s" % (h, name, ns, CLUSTER_DOMAIN)],
                                     ["%s.%s" % (h, name)]))
            elif addrs:
                # no kube-proxy: a ClusterIP Service name points at one ready endpoint
                recs.append((ns, addrs[0]["ip"], svc_names, [name]))
        return recs

    def hosts_for(self, pod, ip, recs=None):
        if recs is None:
            recs = self.service_records(self.world)
        md, spec = meta(pod), pod.get("spec") or {}
        ns = md.get("namespace")
        lines = ["# managed by the raftkv process kubelet (tests/kubelet)",
                 "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        hostname = spec.get("hostname") or md.get("name")
        if spec.get("subdomain"):
            lines.append("%s\t%s.%s.%s.svc.%s %s" % (ip, hostname, spec["subdomain"], ns, CLUSTER_DOMAIN, hostname))
        else:
            lines.append("%s\t%s" % (ip, hostname))
        for rns, rip, names, short in recs:
            all_names = names + (short if rns in ("", ns) else [])
            lines.append("%s\t%s" % (rip, " ".join(all_names)))
        return "\n".join(lines) + "\n"

    def update_hosts(self, world):
        recs = self.service_records(world)
        for uid, w in list(self.workers.items()):
            if not w.netns or w.done:
                continue
            content = self.hosts_for(w.pod, w.ip, recs)
            if self.hosts_written.get(uid) == content:
                continue
            path = "/etc/netns/%s/hosts" % w.netns
            try:
                # in place: `ip netns exec` bind-mounted this very inode over /etc/hosts
                with open(path, "r+" if os.path.exists(path) else "w") as f:
                    f.seek(0)
                    f.write(content)
                    f.truncate()
                self.hosts_written[uid] = content
            except OSError as e:
                self.note("hosts" + uid, "hosts file %s: %s" % (path, e))
        for uid in list(self.hosts_written):
            if uid not in self.workers:
                del self.hosts_written[uid]
        # the same names for people and tests on the host (informational)
        lines = ["%s\t%s" % (ip, " ".join(names)) for _, ip, names, _ in recs]
        content = "\n".join(lines) + "\n"
        if getattr(self, "_global_hosts", None) != content:
            with open(os.path.join(STATE, "hosts"), "w") as f:
                f.write(content)
            self._global_hosts = content

    def service_links(self, ns):
        env = {}
        for k, svc in self.world["services"].items():
            sns, name = k.split("/", 1)
            spec = svc.get("spec") or {}
            ip = spec.get("clusterIP")
            if sns != ns or ip in (None, "", "None") or spec.get("type") == "ExternalName":
                continue
            n = name.upper().replace("-", "_")
            ports = spec.get("ports") or []
            if not ports:
                continue
            env[n + "_SERVICE_HOST"] = ip
            env[n + "_SERVICE_PORT"] = str(ports[0]["port"])
            for p in ports:
                if p.get("name"):
                    env["%s_SERVICE_PORT_%s" % (n, p["name"].upper().replace("-", "_"))] = str(p["port"])
            proto = ports[0].get("protocol", "TCP")
            env[n + "_PORT"] = "%s://%s:%s" % (proto.lower(), ip, ports[0]["port"])
            for p in ports:
                pr = p.get("protocol", "TCP")
                pre = "%s_PORT_%s_%s" % (n, p["port"], pr)
                env[pre] = "%s://%s:%s" % (pr.lower(), ip, p["port"])
                env[pre + "_PROTO"] = pr.lower()
                env[pre + "_PORT"] = str(p["port"])
                env[pre + "_ADDR"] = ip
        return env
