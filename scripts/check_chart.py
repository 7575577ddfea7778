"""The chart's schema and policy checks, run by scripts/check-chart.sh.

Reads the JSON config the shell script writes (rendered manifests, schema
locations, cases) and writes "PASSED FAILED" to cfg["result"]."""

import json
import os
import re
import sys
import tomllib

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

cfg = json.load(open(sys.argv[1]))
passed = failed = 0

def ok(msg):
    global passed
    passed += 1
    print("ok   " + msg)

def bad(msg, details=()):
    global failed
    failed += 1
    print("FAIL " + msg)
    for d in list(details)[:10]:
        print("     " + d)

def check(cond, msg, details=()):
    (ok if cond else (lambda m: bad(m, details)))(msg)

# Per rendering, many small policy checks: listed one by one for the first rendering
# and wherever one fails, else summed up in one line.
pending = []
listed = [False]

def sub(cond, msg, details=()):
    pending.append((bool(cond), msg, list(details)))

def flush(cname):
    global passed
    if all(c for c, _, _ in pending) and listed[0]:
        passed += len(pending)
        print("ok   [%s] %d RBAC, ServiceAccount, Deployment and Service checks (as listed above)" % (cname, len(pending)))
    else:
        listed[0] = True
        for c, m, d in pending:
            check(c, m, d)
    pending.clear()

# ---- Kubernetes schemas, for any version, from kubernetes-validate's JSON schema dirs.
# 1.20's files use draft-4 style "_definitions.json#/definitions/X", newer ones
# "/api/_definitions.json#/$defs/X": resolve every reference by file name.
class Schemas:
    def __init__(self, version, path):
        self.version, self.path, self.files = version, path, {}
        self.registry = Registry(retrieve=lambda uri: DRAFT202012.create_resource(
            self.load(uri.split("#")[0].rstrip("/").rsplit("/", 1)[-1])))
        self.defs_key = "$defs" if "$defs" in self.load("_definitions.json") else "definitions"
        self.base = "file://" + path + "/"

    def load(self, name):
        if name not in self.files:
            with open(os.path.join(self.path, name)) as f:
                self.files[name] = json.load(f)
        return self.files[name]

    def errors(self, ref, instance):
        v = Draft202012Validator({"$ref": self.base + ref}, registry=self.registry)
        return ["%s: %s" % (".".join(str(p) for p in e.absolute_path) or "<root>", e.message)
                for e in sorted(v.iter_errors(instance), key=lambda e: list(map(str, e.path)))]

    def object_errors(self, obj):
        group_version = obj.get("apiVersion", "")
        group, _, version = group_version.rpartition("/")
        fname = "%s-%s%s.json" % (obj.get("kind", "").lower(),
                                  (group.split(".")[0] + "-") if group else "", version)
        if not os.path.exists(os.path.join(self.path, fname)):
            return ["%s %s is not served by Kubernetes %s" % (group_version, obj.get("kind"), self.version)]
        return self.errors(fname, obj)

    def def_errors(self, name, instance):
        return self.errors("_definitions.json#/%s/%s" % (self.defs_key, name), instance)

schemas = []
for v in cfg["versions"]:
    path = (os.path.join(cfg["old_schemas"], "v1.20.0-local-strict") if v == "1.20"
            else os.path.join(cfg["new_schemas"], "v%s.0-local-strict" % v))
    if not os.path.isdir(path):
        bad("no strict schemas for Kubernetes %s at %s" % (v, path))
        continue
    schemas.append(Schemas(v, path))

def name_of(o):
    return "%s/%s" % (o.get("kind"), o.get("metadata", {}).get("name"))

def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]

# ---- What the RBAC must be: the rules in the chart's _helpers.tpl, and nothing else.
# Only the verbs the operator sends (server-side apply is patch, plus create when the
# apply creates the object); operator/src/apply.rs and observe.rs are the users.
APPLY = ["create", "patch"]
OPERATOR_RULES = {
    ("raftkv.io", "kvclusters"): ["get", "list", "watch", "patch"],
    ("raftkv.io", "kvclusters/status"): ["patch"],
    ("raftkv.io", "kvclusters/finalizers"): ["update"],
    ("raftkv.io", "kvbackups"): ["get", "list", "watch", "create", "patch", "delete"],
    ("raftkv.io", "kvbackups/status"): ["patch"],
    ("apps", "statefulsets"): ["get", "list", "watch", "delete"] + APPLY,
    ("", "services"): ["list", "watch"] + APPLY,
    ("", "pods"): ["list", "watch", "delete"],
    ("", "persistentvolumeclaims"): ["list", "patch", "delete"],
    ("batch", "jobs"): ["get", "create", "delete"],
    ("", "secrets"): ["get"] + APPLY,
    ("policy", "poddisruptionbudgets"): APPLY,
    ("networking.k8s.io", "networkpolicies"): APPLY + ["delete"],
    ("cert-manager.io", "certificates"): APPLY,
    ("", "events"): ["create", "patch"],
    ("events.k8s.io", "events"): ["create", "patch"],
}
# Cluster-scoped: only the all-namespaces ClusterRole can grant it.
CLUSTER_ONLY_RULES = {("storage.k8s.io", "storageclasses"): ["get"]}
# Reading every Secret in scope (list, watch) or rewriting/deleting Secrets the
# operator did not make: never.
SECRET_VERBS_FORBIDDEN = {"list", "watch", "update", "delete", "deletecollection"}
def lease_rules(lease):
    return {("coordination.k8s.io", "leases"): ["create"],
            ("coordination.k8s.io", "leases:" + lease): ["get", "update", "patch"]}

ESCALATING_VERBS = {"escalate", "bind", "impersonate", "*"}

def grants(role):
    # (group, resource) -> verbs; a rule limited to named objects counts as resource:name.
    out = {}
    for rule in role.get("rules") or []:
        for g in rule.get("apiGroups") or []:
            for r in rule.get("resources") or []:
                for n in rule.get("resourceNames") or [None]:
                    key = (g, r if n is None else "%s:%s" % (r, n))
                    out.setdefault(key, set()).update(rule.get("verbs") or [])
    return out

def rbac_problems(role):
    probs = []
    for i, rule in enumerate(role.get("rules") or []):
        for field in ("verbs", "resources", "apiGroups", "nonResourceURLs", "resourceNames"):
            if any("*" in str(x) for x in rule.get(field) or []):
                probs.append("rule %d: '*' in %s" % (i, field))
        secrets = [r for r in rule.get("resources") or [] if r == "secrets" or r.startswith("secrets/")]
        if secrets and (SECRET_VERBS_FORBIDDEN & set(rule.get("verbs") or []) or secrets != ["secrets"]):
            probs.append("rule %d grants secrets %s %s" % (i, secrets, sorted(SECRET_VERBS_FORBIDDEN & set(rule.get("verbs") or []))))
        if ESCALATING_VERBS & set(rule.get("verbs") or []):
            probs.append("rule %d has verbs %s" % (i, sorted(ESCALATING_VERBS & set(rule["verbs"]))))
        if rule.get("nonResourceURLs"):
            probs.append("rule %d grants nonResourceURLs" % i)
    return probs

def same_grants(role, expected):
    got = grants(role)
    want = {k: set(v) for k, v in expected.items()}
    diff = ["%s/%s: got %s, want %s" % (g or "core", r, sorted(got.get((g, r), [])), sorted(want.get((g, r), [])))
            for (g, r) in sorted(set(got) | set(want)) if got.get((g, r)) != want.get((g, r))]
    return diff

# ---- kvnode monitoring: the names alerts and panels may use are the documented ones.
def documented_metrics():
    """Series name -> type from the metric tables of the docs: rows whose first cell is
    a backticked name (docs/api.md's "Metrics" section, docs/operator.md's table)."""
    out = {}
    for path in cfg["metric_docs"]:
        with open(path) as f:
            text = f.read()
        if "\n### Metrics\n" in text:
            text = text.split("\n### Metrics\n", 1)[1].split("\n### ", 1)[0]
        for m in re.finditer(r"^\| `((?:raftkv|process)_[a-z0-9_]+)` \| (\w+) \|", text, re.M):
            out[m.group(1)] = m.group(2)
    return out

DOCUMENTED = documented_metrics()
# Series Prometheus adds to every target itself.
SYNTHETIC = {"up"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                "and", "or", "unless", "offset", "inf", "nan"}

def metric_names(expr):
    """The metric names a PromQL expression (or a Grafana label_values query) reads."""
    e = re.sub(r"label_values\(([^,()]*(?:\{[^}]*\})?)\s*,\s*\w+\s*\)", r"\1", expr)
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', e)
    e = re.sub(r"\{[^}]*\}", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    names = set()
    for m in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", e):
        if e[m.end():].lstrip().startswith("(") or m.group(0).lower() in PROMQL_WORDS:
            continue
        names.add(m.group(0))
    return names

def undocumented(names):
    def known(n):
        if n in DOCUMENTED or n in SYNTHETIC:
            return True
        base, _, suffix = n.rpartition("_")
        return suffix in ("bucket", "sum", "count") and DOCUMENTED.get(base) == "histogram"
    return sorted(n for n in names if not known(n))

def rust_const(path, name):
    with open(path) as f:
        m = re.search(r'\bconst %s: &str = "([^"]*)"' % name, f.read())
    return m.group(1) if m else None

def anchors(path):
    """GitHub's heading anchors of a markdown file."""
    if not os.path.exists(path):
        return set()
    with open(path) as f:
        heads = re.findall(r"^#+ +(.+?) *$", f.read(), re.M)
    return {re.sub(r"[^a-z0-9 _-]", "", h.lower()).replace(" ", "-") for h in heads}

def kvnode_monitoring_problems(by_kind, on):
    """What is wrong with the kvnode ServiceMonitor, PrometheusRule and dashboard."""
    mons = [m for m in by_kind.get("ServiceMonitor", []) if m["metadata"]["name"].endswith("-kvnode")]
    rules = by_kind.get("PrometheusRule", [])
    boards = [c for c in by_kind.get("ConfigMap", [])
              if (c["metadata"].get("labels") or {}).get("grafana_dashboard") == "1"]
    if not on:
        return ["kvnode monitoring off by default, got %d monitors, %d rules, %d dashboards"
                % (len(mons), len(rules), len(boards))] if mons or rules or boards else []
    probs = []
    if len(mons) != 1 or len(rules) != 1 or len(boards) != 1:
        return ["want one kvnode ServiceMonitor, PrometheusRule and dashboard ConfigMap, got %d, %d, %d"
                % (len(mons), len(rules), len(boards))]
    # The monitor selects what the operator puts on client Services (names.rs, services.rs).
    app, metrics_label = rust_const(cfg["names_rs"], "APP"), rust_const(cfg["names_rs"], "LABEL_METRICS")
    label_name = rust_const(cfg["names_rs"], "LABEL_NAME")
    spec = mons[0]["spec"]
    want = {label_name: app, metrics_label: "true"}
    if None in want or spec.get("selector", {}).get("matchLabels") != want:
        probs.append("kvnode ServiceMonitor selector %s, want %s (operator/src/names.rs)" % (spec.get("selector"), want))
    if spec.get("jobLabel") != label_name:
        probs.append("jobLabel %s: the alerts select job=%r, the value of %s" % (spec.get("jobLabel"), app, label_name))
    eps = spec.get("endpoints") or []
    if [(e.get("port"), e.get("path"), e.get("scheme")) for e in eps] != [("client", "/metrics", "https")]:
        probs.append("endpoints %s, want port client, path /metrics, https (KvClusters default to TLS)" % eps)
    if spec.get("namespaceSelector") != {"any": True}:
        probs.append("namespaceSelector %s, want any by default" % spec.get("namespaceSelector"))
    # Alerts: annotated, with a runbook the operations doc has, on documented series only.
    ops = anchors(cfg["operations_md"])
    for group in rules[0]["spec"].get("groups") or []:
        for r in group.get("rules") or []:
            alert, ann = r.get("alert", "?"), r.get("annotations") or {}
            if not ann.get("summary") or not ann.get("description"):
                probs.append("%s: no summary or description" % alert)
            anchor = (ann.get("runbook_url") or "").rpartition("#")[2]
            if not (ann.get("runbook_url") or "").startswith("docs/operations.md#") or anchor not in ops:
                probs.append("%s: runbook_url %r is not a heading of docs/operations.md" % (alert, ann.get("runbook_url")))
            if 'job="raftkv"' not in r.get("expr", ""):
                probs.append("%s: expr does not select job=\"raftkv\"" % alert)
            missing = undocumented(metric_names(r.get("expr", "")))
            if missing:
                probs.append("%s reads undocumented series %s" % (alert, missing))
    # The dashboard: the chart's file, as JSON, on documented series only.
    with open(cfg["dashboard"]) as f:
        shipped = f.read()
    text = next(iter((boards[0].get("data") or {}).values()), "")
    try:
        board = json.loads(text)
    except ValueError as e:
        return probs + ["dashboard ConfigMap: not JSON: %s" % e]
    if board != json.loads(shipped):
        probs.append("dashboard ConfigMap differs from charts/raftkv-operator/dashboards/raftkv.json")
    exprs = [t.get("expr", "") for p in board.get("panels") or [] for t in p.get("targets") or []]
    exprs += [(v.get("query") or {}).get("query", "") if isinstance(v.get("query"), dict) else ""
              for v in (board.get("templating") or {}).get("list") or []]
    if len(exprs) < 10:
        probs.append("dashboard has only %d queries" % len(exprs))
    for e in exprs:
        missing = undocumented(metric_names(e))
        if missing:
            probs.append("dashboard query %r reads undocumented series %s" % (e[:80], missing))
    return probs

# ---- Rendered chart
release_ns = cfg["release_ns"]
crd_docs = []
for case in cfg["cases"]:
    cname = case["name"]
    docs = load_docs(case["file"])
    crd_docs += [d for d in docs if d.get("kind") == "CustomResourceDefinition"]
    docs = [d for d in docs if d.get("kind") != "CustomResourceDefinition"]
    # Kinds of other projects' CRDs (the Prometheus Operator's ServiceMonitor) are not in
    # the Kubernetes schemas: checked by hand below.
    foreign = [d for d in docs if d.get("apiVersion", "").startswith("monitoring.coreos.com/")]
    docs = [d for d in docs if d not in foreign]
    errs = {s.version: ["%s: %s" % (name_of(d), e) for d in docs for e in s.object_errors(d)] for s in schemas}
    if schemas and not any(errs.values()):
        passed += len(schemas) - 1
        ok("[%s] %d objects (%s) valid against Kubernetes %s (strict)" % (
            cname, len(docs), ", ".join(sorted({d["kind"] for d in docs})), ", ".join(errs)))
    else:
        for v, e in errs.items():
            check(not e, "[%s] %d objects valid against Kubernetes %s (strict)" % (cname, len(docs), v), e)

    by_kind = {}
    for d in docs + foreign:
        by_kind.setdefault(d["kind"], []).append(d)
    roles = by_kind.get("Role", []) + by_kind.get("ClusterRole", [])
    probs = ["%s: %s" % (name_of(r), p) for r in roles for p in rbac_problems(r)]
    sub(roles and not probs, "[%s] RBAC: no '*', no list/watch/update/delete of secrets, no escalate/bind/impersonate, "
        "no nonResourceURLs" % cname, probs)

    watch, le, sa = case["watch_ns"], case["leader_election"], case["sa"]
    lease = cfg["release"]
    lease_roles = [r for r in by_kind.get("Role", []) if grants(r).keys() & lease_rules(lease).keys()]
    op_roles = [r for r in roles if r not in lease_roles]
    if watch:
        sub(not by_kind.get("ClusterRole") and not by_kind.get("ClusterRoleBinding"),
              "[%s] one namespace: no ClusterRole or ClusterRoleBinding" % cname)
        sub(len(op_roles) == 1 and op_roles[0]["kind"] == "Role" and op_roles[0]["metadata"].get("namespace") == watch,
              "[%s] the operator's Role is in the watched namespace %s" % (cname, watch))
    else:
        sub(len(op_roles) == 1 and op_roles[0]["kind"] == "ClusterRole",
              "[%s] all namespaces: the operator's rules are one ClusterRole" % cname)
    if op_roles:
        diff = same_grants(op_roles[0], OPERATOR_RULES if watch else {**OPERATOR_RULES, **CLUSTER_ONLY_RULES})
        sub(not diff, "[%s] %s grants exactly the documented rules" % (cname, name_of(op_roles[0])), diff)
    if le:
        diff = same_grants(lease_roles[0], lease_rules(lease)) if len(lease_roles) == 1 else ["%d lease Roles" % len(lease_roles)]
        sub(not diff and lease_roles[0]["metadata"].get("namespace") == release_ns,
              "[%s] leases: create, and get/update/patch on Lease %s only, in a Role in the release namespace" % (cname, lease), diff)
    else:
        sub(not lease_roles, "[%s] leader election off: no lease Role" % cname)

    bindings = by_kind.get("RoleBinding", []) + by_kind.get("ClusterRoleBinding", [])
    role_names = {(r["kind"], r["metadata"]["name"], r["metadata"].get("namespace")) for r in roles}
    bprobs = []
    for b in bindings:
        ns = b["metadata"].get("namespace") if b["roleRef"]["kind"] == "Role" else None
        if (b["roleRef"]["kind"], b["roleRef"]["name"], ns) not in role_names:
            bprobs.append("%s refers to a missing %s %s" % (name_of(b), b["roleRef"]["kind"], b["roleRef"]["name"]))
        if b.get("subjects") != [{"kind": "ServiceAccount", "name": sa, "namespace": release_ns}]:
            bprobs.append("%s subjects are %s" % (name_of(b), b.get("subjects")))
    sub(len(bindings) == len(roles) and not bprobs,
          "[%s] one binding per role, each to ServiceAccount %s/%s" % (cname, release_ns, sa), bprobs)
    sas = by_kind.get("ServiceAccount", [])
    if case["sa_create"]:
        sub([s["metadata"]["name"] for s in sas] == [sa], "[%s] ServiceAccount %s is created" % (cname, sa))
    else:
        sub(not sas, "[%s] no ServiceAccount created, the existing one is used" % cname)

    deps = by_kind.get("Deployment", [])
    if len(deps) != 1:
        sub(False, "[%s] exactly one Deployment (got %d)" % (cname, len(deps)))
        flush(cname)
        continue
    dep = deps[0]
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    psc, csc = pod.get("securityContext") or {}, c.get("securityContext") or {}
    sec = []
    if not (csc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
        sec.append("runAsNonRoot is not set")
    if (csc.get("runAsUser", psc.get("runAsUser")) or 0) == 0:
        sec.append("runAsUser is 0 or unset")
    if csc.get("readOnlyRootFilesystem") is not True:
        sec.append("readOnlyRootFilesystem is not true")
    if csc.get("allowPrivilegeEscalation") is not False:
        sec.append("allowPrivilegeEscalation is not false")
    if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []) or (csc.get("capabilities") or {}).get("add"):
        sec.append("capabilities: drop must hold ALL and add must be empty")
    if csc.get("privileged"):
        sec.append("privileged")
    if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
        sec.append("host namespaces")
    sub(not sec, "[%s] operator container: non-root, read-only root fs, no capabilities, no escalation" % cname, sec)

    args = c.get("args") or []
    want_args = ["--metrics-addr=0.0.0.0:8080", "--leader-election=%s" % str(le).lower(),
                 "--lease-name=%s" % lease, "--lease-namespace=%s" % release_ns,
                 "--log-level=info", "--log-format=json", "--operator-namespace=%s" % release_ns,
                 "--operator-pod-labels=app.kubernetes.io/name=raftkv-operator,app.kubernetes.io/instance=%s" % lease]
    want_args += ["--watch-namespace=%s" % watch] if watch else []
    missing = [a for a in want_args if a not in args]
    stray_ns = [a for a in args if a.startswith("--watch-namespace") and not watch]
    sub(args[:1] == ["run"] and not missing and not stray_ns,
          "[%s] args: run %s" % (cname, " ".join(want_args)), ["args: %s" % args] + missing + stray_ns)
    env = {e["name"]: e for e in c.get("env") or []}
    sub(env.get("POD_NAMESPACE", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace",
          "[%s] POD_NAMESPACE comes from the downward API" % cname)
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
    probes_ok = all((c.get(p) or {}).get("httpGet", {}).get("path") == "/healthz"
                    and c[p]["httpGet"]["port"] in ("metrics", ports.get("metrics"))
                    for p in ("livenessProbe", "readinessProbe"))
    sub(ports.get("metrics") == 8080 and probes_ok,
          "[%s] liveness and readiness probe /healthz on the metrics port 8080" % cname)
    sub(c["image"] == "raftkv/operator:%s" % cfg["version"], "[%s] image raftkv/operator:%s" % (cname, cfg["version"]),
          ["image: " + c["image"]])
    sub(dep["spec"]["replicas"] == case["replicas"], "[%s] %d replica(s)" % (cname, case["replicas"]))
    sub(pod.get("serviceAccountName") == sa, "[%s] the pod runs as ServiceAccount %s" % (cname, sa))
    strategy = (dep["spec"].get("strategy") or {}).get("type", "RollingUpdate")
    sub(strategy == ("RollingUpdate" if le else "Recreate"),
          "[%s] rollout strategy %s" % (cname, strategy))
    svcs = by_kind.get("Service", [])
    sel = dep["spec"]["selector"]["matchLabels"]
    sub(len(svcs) == 1 and svcs[0]["spec"]["selector"] == sel
          and svcs[0]["spec"]["ports"][0]["targetPort"] in ("metrics", 8080),
          "[%s] the metrics Service selects the operator pods, port metrics" % cname)
    labels = dep["spec"]["template"]["metadata"]["labels"]
    sub(all(labels.get(k) == v for k, v in sel.items()), "[%s] the pod template carries the selector labels" % cname)

    pols = by_kind.get("NetworkPolicy", [])
    if case.get("network_policy"):
        probs = []
        if len(pols) != 1:
            probs.append("%d NetworkPolicies" % len(pols))
        else:
            ps = pols[0]["spec"]
            if ps["podSelector"].get("matchLabels") != sel:
                probs.append("podSelector %s" % ps["podSelector"])
            if sorted(ps.get("policyTypes") or []) != ["Egress", "Ingress"]:
                probs.append("policyTypes %s" % ps.get("policyTypes"))
            in_ports = sorted(p["port"] for r in ps.get("ingress") or [] for p in r.get("ports") or [])
            if in_ports != [8080]:
                probs.append("ingress ports %s, want the metrics port only" % in_ports)
            eg = ps.get("egress") or []
            kv = [r for r in eg if any(p["port"] == 7379 for p in r.get("ports") or [])]
            if not kv or any(t.get("podSelector", {}).get("matchLabels") != {"app.kubernetes.io/name": "raftkv"}
                             for r in kv for t in r.get("to") or [{}]):
                probs.append("no egress to kvnode pods on 7379 only: %s" % kv)
            api = [r for r in eg if any(p["port"] == 6443 for p in r.get("ports") or [])]
            if not api or not all("ipBlock" in t for r in api for t in r.get("to") or [{}]):
                probs.append("no egress to the API server by ipBlock: %s" % api)
            if any(not r.get("ports") for r in eg):
                probs.append("an egress rule without ports allows everything")
        sub(not probs, "[%s] operator NetworkPolicy: ingress metrics 8080, egress API server, kvnode 7379, DNS" % cname, probs)
    else:
        sub(not pols, "[%s] networkPolicy off by default: no NetworkPolicy" % cname)

    probs = kvnode_monitoring_problems(by_kind, case.get("kvnode_monitoring"))
    sub(not probs, "[%s] kvnode monitoring: %s" % (cname, "ServiceMonitor selects the client Services, alerts "
        "annotated with runbooks, alerts and dashboard on documented series only" if case.get("kvnode_monitoring")
        else "off by default"), probs)
    mons = [m for m in by_kind.get("ServiceMonitor", []) if not m["metadata"]["name"].endswith("-kvnode")]
    if case.get("service_monitor"):
        probs = []
        if len(mons) != 1:
            probs.append("%d ServiceMonitors" % len(mons))
        else:
            m = mons[0]
            if m.get("apiVersion") != "monitoring.coreos.com/v1":
                probs.append("apiVersion %s" % m.get("apiVersion"))
            svc_labels = svcs[0]["metadata"].get("labels") or {} if svcs else {}
            if not m["spec"]["selector"].get("matchLabels") or \
                    any(svc_labels.get(k) != v for k, v in m["spec"]["selector"]["matchLabels"].items()):
                probs.append("selector %s does not select the metrics Service" % m["spec"]["selector"])
            if [e.get("port") for e in m["spec"].get("endpoints") or []] != ["metrics"]:
                probs.append("endpoints %s" % m["spec"].get("endpoints"))
            if m["spec"].get("namespaceSelector", {}).get("matchNames") != [release_ns]:
                probs.append("namespaceSelector %s" % m["spec"].get("namespaceSelector"))
        sub(not probs, "[%s] ServiceMonitor monitoring.coreos.com/v1 selects the metrics Service, port metrics" % cname, probs)
    else:
        sub(not mons, "[%s] serviceMonitor off by default: no ServiceMonitor" % cname)
    flush(cname)

# ---- The CRD, as Helm installs it
crd = None
if cfg["have_crd"]:
    by_name = {}
    for d in crd_docs:
        by_name.setdefault(d.get("metadata", {}).get("name"), []).append(d)
    check(sorted(by_name) == ["kvbackups.raftkv.io", "kvclusters.raftkv.io"]
          and all(len(v) == 1 for v in by_name.values()),
          "helm template --include-crds renders the KvCluster and KvBackup CRDs once each (got %s)"
          % {k: len(v) for k, v in by_name.items()})
    crd = (by_name.get("kvclusters.raftkv.io") or [None])[0]
    backup_crd = (by_name.get("kvbackups.raftkv.io") or [None])[0]
    if backup_crd:
        for s in schemas:
            check(not s.object_errors(backup_crd), "KvBackup CRD valid against Kubernetes %s (strict)" % s.version,
                  s.object_errors(backup_crd))
        bnames = backup_crd.get("spec", {}).get("names", {})
        check((bnames.get("kind"), bnames.get("plural"), bnames.get("shortNames")) == ("KvBackup", "kvbackups", ["kvb"])
              and backup_crd["spec"].get("scope") == "Namespaced",
              "KvBackup CRD: namespaced, kind KvBackup, plural kvbackups, short name kvb", [bnames])
if crd:
    for s in schemas:
        errs = s.object_errors(crd)
        if any("x-kubernetes-validations" in e for e in errs):
            errs.append("hint: Kubernetes %s has no CEL rules; kubectl's validation and server-side apply "
                        "reject the field there, so express the rule as schema (enum, minimum, pattern) or "
                        "check it in the operator" % s.version)
        check(not errs, "CRD valid against Kubernetes %s (strict)" % s.version, errs)
    spec = crd.get("spec", {})
    names = spec.get("names", {})
    probs = []
    if crd.get("metadata", {}).get("name") != "kvclusters.raftkv.io":
        probs.append("metadata.name %s" % crd.get("metadata", {}).get("name"))
    if spec.get("group") != "raftkv.io" or spec.get("scope") != "Namespaced":
        probs.append("group %s scope %s" % (spec.get("group"), spec.get("scope")))
    if (names.get("kind"), names.get("plural"), names.get("shortNames")) != ("KvCluster", "kvclusters", ["kvc"]):
        probs.append("names %s" % names)
    vers = {v["name"]: v for v in spec.get("versions", [])}
    v1a1 = vers.get("v1alpha1")
    if not v1a1 or not v1a1.get("served") or not v1a1.get("storage"):
        probs.append("v1alpha1 is not the served storage version")
    else:
        sub = v1a1.get("subresources") or {}
        if "status" not in sub:
            probs.append("no status subresource")
        if (sub.get("scale") or {}).get("specReplicasPath") != ".spec.replicas":
            probs.append("no scale subresource on .spec.replicas")
        cols = [c.get("name") for c in v1a1.get("additionalPrinterColumns") or []]
        for col in ("Replicas", "Ready", "Leader", "Phase", "Age"):
            if col not in cols:
                probs.append("no printer column %s (has %s)" % (col, cols))
    check(not probs, "CRD: raftkv.io/v1alpha1 KvCluster, plural kvclusters, short name kvc, "
          "status + scale subresources, printer columns", probs)

# ---- The example
QUANTITY = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
SPEC_FIELDS = {"replicas", "image", "imagePullPolicy", "storage", "resources", "pvcRetentionPolicy",
               "raft", "pod", "paused", "tls", "networkPolicy"}
ex_docs = load_docs(cfg["example"])
check(len(ex_docs) == 1 and ex_docs[0].get("apiVersion") == "raftkv.io/v1alpha1" and ex_docs[0].get("kind") == "KvCluster",
      "example: one raftkv.io/v1alpha1 KvCluster")
ex = ex_docs[0] if ex_docs else {}
spec = ex.get("spec") or {}
probs = []
if not DNS_LABEL.match(str(ex.get("metadata", {}).get("name", ""))):
    probs.append("metadata.name is not a DNS label")
if set(spec) - SPEC_FIELDS:
    probs.append("fields not in docs/api.md: %s" % sorted(set(spec) - SPEC_FIELDS))
if not (isinstance(spec.get("replicas"), int) and 1 <= spec["replicas"] <= 9):
    probs.append("replicas must be 1..9")
if set(spec.get("storage") or {}) - {"size", "storageClassName"} or not QUANTITY.match(str((spec.get("storage") or {}).get("size", ""))):
    probs.append("storage must be {size: <quantity>, storageClassName}")
prp = spec.get("pvcRetentionPolicy") or {}
if set(prp) - {"whenScaled", "whenDeleted"} or any(v not in ("Retain", "Delete") for v in prp.values()):
    probs.append("pvcRetentionPolicy: whenScaled/whenDeleted must be Retain or Delete")
raft = spec.get("raft") or {}
if set(raft) - {"heartbeatIntervalMs", "electionTimeoutMs", "snapshotLogThreshold"} \
        or any(not isinstance(v, int) or v <= 0 for v in raft.values()):
    probs.append("raft: heartbeatIntervalMs, electionTimeoutMs, snapshotLogThreshold as positive integers")
elif {"electionTimeoutMs", "heartbeatIntervalMs"} <= set(raft) \
        and raft["electionTimeoutMs"] < 3 * raft["heartbeatIntervalMs"]:
    probs.append("raft: electionTimeoutMs must be at least three times heartbeatIntervalMs (operator/src/crd.rs)")
if set(spec.get("pod") or {}) - {"labels", "annotations", "nodeSelector", "tolerations", "affinity",
                                 "securityContext", "containerSecurityContext"}:
    probs.append("pod: only labels, annotations, nodeSelector, tolerations, affinity, securityContext, "
                 "containerSecurityContext")
tls = spec.get("tls") or {}
if tls.get("issuer", "operator") not in ("operator", "certManager") or \
        (tls.get("issuer") == "certManager" and not (tls.get("certManager") or {}).get("issuerRef", {}).get("name")):
    probs.append("tls: issuer operator, or certManager with certManager.issuerRef.name")
if spec.get("image") != "raftkv/kvnode:%s" % cfg["version"]:
    probs.append("image %s, want raftkv/kvnode:%s" % (spec.get("image"), cfg["version"]))
check(not probs, "example: fields and values as docs/api.md specifies", probs)

# The Kubernetes types the KvCluster spec embeds.
string_map = {"type": "object", "additionalProperties": {"type": "string"}}
embedded = [("spec.resources", spec.get("resources"), "io.k8s.api.core.v1.ResourceRequirements")]
pod = spec.get("pod") or {}
for key in ("labels", "annotations", "nodeSelector"):
    embedded.append(("spec.pod." + key, pod.get(key), string_map))
embedded.append(("spec.pod.affinity", pod.get("affinity"), "io.k8s.api.core.v1.Affinity"))
embedded.append(("spec.pod.tolerations", pod.get("tolerations"), "io.k8s.api.core.v1.Toleration[]"))
embedded.append(("spec.imagePullPolicy", spec.get("imagePullPolicy"), {"enum": ["Always", "IfNotPresent", "Never"]}))
for s in schemas:
    errs = []
    for path, value, schema in embedded:
        if value is None:
            continue
        if isinstance(schema, dict):
            es = ["%s" % e.message for e in Draft202012Validator(schema).iter_errors(value)]
        elif schema.endswith("[]"):
            es = ["[%d] %s" % (i, e) for i, item in enumerate(value if isinstance(value, list) else [None])
                  for e in s.def_errors(schema[:-2], item)] if isinstance(value, list) else ["not a list"]
        else:
            es = s.def_errors(schema, value)
        errs += ["%s: %s" % (path, e) for e in es]
    quantities = [q for part in ("requests", "limits") for q in ((spec.get("resources") or {}).get(part) or {}).values()]
    errs += ["spec.resources: %r is not a quantity" % q for q in quantities if not QUANTITY.match(str(q))]
    check(not errs, "example: embedded Kubernetes types valid against Kubernetes %s (strict)" % s.version, errs)

# The whole object against the CRD's own schema. The API server prunes unknown fields
# silently; here they fail, since in an example they are typos.
def to_jsonschema(node):
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        if k == "properties":
            out[k] = {p: to_jsonschema(s) for p, s in v.items()}
        elif k in ("items", "not") or (k == "additionalProperties" and isinstance(v, dict)):
            out[k] = to_jsonschema(v)
        elif k in ("allOf", "anyOf", "oneOf"):
            out[k] = [to_jsonschema(s) for s in v]
        elif k.startswith("x-kubernetes-") or k == "nullable":
            continue
        else:
            out[k] = v
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out = {"allOf": [out, {"type": ["integer", "string"]}]}
    elif node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if node.get("x-kubernetes-embedded-resource"):
        out.setdefault("properties", {}).update({"apiVersion": {}, "kind": {}, "metadata": {}})
    if "properties" in out and "additionalProperties" not in out and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out

if crd:
    v1a1 = next((v for v in crd["spec"].get("versions", []) if v.get("name") == "v1alpha1"), {})
    schema = (v1a1.get("schema") or {}).get("openAPIV3Schema")
    if schema:
        js = to_jsonschema(schema)
        for p in ("apiVersion", "kind", "metadata"):
            js.setdefault("properties", {}).setdefault(p, {})
        errs = ["%s: %s" % (".".join(map(str, e.absolute_path)) or "<root>", e.message)
                for e in Draft202012Validator(js).iter_errors(ex)]
        check(not errs, "example: valid against the CRD's openAPIV3Schema (unknown fields fail)", errs)
    else:
        bad("CRD v1alpha1 has no openAPIV3Schema")

# ---- Versions: one version everywhere
with open(cfg["cargo_toml"], "rb") as f:
    cargo_version = tomllib.load(f)["workspace"]["package"]["version"]
with open(cfg["chart_yaml"]) as f:
    chart = yaml.safe_load(f)
check(chart["version"] == chart["appVersion"] == cargo_version == cfg["version"],
      "Chart version/appVersion %s/%s = workspace crate version %s" % (chart["version"], chart["appVersion"], cargo_version))

# ---- Dockerfiles (no Docker engine here: check what matters on Kubernetes)
for path, crate, ports in cfg["dockerfiles"]:
    with open(path) as f:
        text = f.read()
    probs = []
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    if not users or not re.fullmatch(r"[1-9][0-9]*(:[0-9]+)?", users[-1]):
        probs.append("the last USER must be a numeric non-root uid (runAsNonRoot cannot verify a name): %s" % users)
    if not re.search(r"cargo build --release --locked -p %s\b" % re.escape(crate), text):
        probs.append("no `cargo build --release --locked -p %s`" % crate)
    if len(re.findall(r"^FROM\s", text, re.M)) < 2:
        probs.append("not multi-stage")
    exposed = set(" ".join(re.findall(r"^EXPOSE\s+(.*)$", text, re.M)).split())
    if exposed != set(ports):
        probs.append("EXPOSE %s, want %s" % (sorted(exposed), ports))
    if 'org.opencontainers.image.version="%s"' % cargo_version not in text:
        probs.append("image version label is not %s" % cargo_version)
    check(not probs, "%s: multi-stage, builds -p %s, numeric non-root USER, EXPOSE %s"
          % (os.path.relpath(path, cfg["root"]), crate, " ".join(ports)), probs)

with open(cfg["result"], "w") as f:
    f.write("%d %d\n" % (passed, failed))
