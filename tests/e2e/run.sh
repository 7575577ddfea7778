#!/usr/bin/env bash
# Runs the end-to-end suite (tests/e2e, package raftkv-e2e) against the cluster
# $KUBECONFIG points at. See docs/e2e.md.
#
#   tests/e2e/run.sh                 all scenarios
#   tests/e2e/run.sh scale leader    only tests whose name contains "scale" or "leader"
#
# 1. builds kvnode and raftkv-operator (debug, in the shared target dir). On the
#    local environment (tests/local-k8s.sh) the images raftkv/kvnode:*,
#    raftkv/kvnode-next:* and raftkv/operator:* are then rebuilt around these
#    binaries and imported into the node's containerd (`load-images`); on kind the
#    images must be loaded already (tests/e2e/kind.sh) and RAFTKV_E2E_SKIP_BUILD=1
#    skips this;
# 2. installs charts/raftkv-operator into raftkv-system with
#    `helm template --include-crds | kubectl apply --server-side`, image
#    raftkv/operator:<chart appVersion>: the operator runs as a pod with the chart's
#    ServiceAccount and RBAC, so a missing permission fails a scenario;
# 3. cargo nextest run --workspace -E "package(raftkv-e2e)" (profile e2e: one scenario at a time);
# 4. uninstalls: leftover test namespaces, KvClusters, the chart's objects, the CRD.
#
# Env: KUBECONFIG (required)
#      RAFTKV_E2E_THREADS       scenarios at a time (default 1; 2 cores run one well)
#      RAFTKV_E2E_STABILIZATION operator --stabilization (default 5s; the chart's default
#                               is the operator's 30s, which makes each 3-node cluster
#                               take a minute longer to form)
#      RAFTKV_E2E_ACCESS        proxy (default, API server proxy) | pod-ip
#      RAFTKV_E2E_SKIP_BUILD=1  do not build the binaries (kind: images carry them)
#      RAFTKV_HELM              helm binary (default: the one scripts/check-chart.sh caches)
#      RAFTKV_E2E_OPERATOR_IMAGE  operator image REPOSITORY:TAG (default raftkv/operator:<appVersion>)
#      RAFTKV_E2E_KEEP_INSTALL=1  leave the operator installed afterwards
#      RAFTKV_E2E_KEEP=1        keep each scenario's namespace (debugging)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
CACHE=${RAFTKV_CACHE:-$HOME/.cache/raftkv}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
CHART=charts/raftkv-operator
RELEASE=raftkv-operator
RELEASE_NS=raftkv-system
THREADS=${RAFTKV_E2E_THREADS:-1}
STABILIZATION=${RAFTKV_E2E_STABILIZATION:-5s}

log() { printf '[e2e %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ -n "${KUBECONFIG:-}" ] || die "KUBECONFIG is not set (local environment: eval \"\$(tests/local-k8s.sh env)\")"
command -v kubectl >/dev/null || die "kubectl is needed"
command -v cargo-nextest >/dev/null || die "cargo-nextest is needed (cargo install --locked cargo-nextest)"
kubectl get --raw /readyz >/dev/null || die "the API server of $KUBECONFIG does not answer"

# ---------------------------------------------------------------- helm
# $RAFTKV_HELM, else the pinned helm that scripts/check-chart.sh keeps in the cache,
# else helm from PATH, else let scripts/check-chart.sh fetch the pinned one.
HELM_VERSION=$(sed -n 's/^HELM_VERSION="\([^"]*\)".*/\1/p' scripts/check-chart.sh)
HELM=${RAFTKV_HELM:-$CACHE/helm-$HELM_VERSION/helm}
if [ ! -x "$HELM" ] && [ -z "${RAFTKV_HELM:-}" ] && command -v helm >/dev/null; then
  HELM=$(command -v helm)
elif [ ! -x "$HELM" ]; then
  log "no helm at $HELM: running scripts/check-chart.sh, which installs helm $HELM_VERSION"
  scripts/check-chart.sh >/dev/null || true
  [ -x "$HELM" ] || die "helm is still missing at $HELM"
fi
# `helm template` only: no release state, no access to the user's helm config.
export HELM_CONFIG_HOME=$CACHE/helm-home/config HELM_CACHE_HOME=$CACHE/helm-home/cache HELM_DATA_HOME=$CACHE/helm-home/data

# ---------------------------------------------------------------- build
VERSION=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' $CHART/Chart.yaml)
OPERATOR_IMAGE=${RAFTKV_E2E_OPERATOR_IMAGE:-raftkv/operator:$VERSION}
if [ "${RAFTKV_E2E_SKIP_BUILD:-0}" != 1 ]; then
  log "building kvnode, raftkv-operator and the suite (target dir $CARGO_TARGET_DIR)"
  # Same selection as scripts/test.sh (whole workspace, all targets): cargo
  # unifies features per selection, and another selection would mean another
  # 20-minute RocksDB build.
  cargo build -q --workspace --all-targets
  # The local node (tests/local-k8s.sh) runs images: rebuild them around these
  # binaries and import what changed (the rollout scenario's raftkv/kvnode-next is
  # the kvnode image with another name and label).
  if kubectl get node local-node >/dev/null 2>&1 && tests/local-k8s.sh status >/dev/null 2>&1; then
    log "local node: building the images from these binaries and importing them"
    tests/local-k8s.sh load-images
  fi
fi

# ---------------------------------------------------------------- install
WORK=$(mktemp -d)
SERVER_VERSION=$(kubectl get --raw /version | sed -n 's/.*"gitVersion": *"v\{0,1\}\([0-9][0-9.]*\).*/\1/p')
[ -n "$SERVER_VERSION" ] || die "cannot read the server version"
"$HELM" template "$RELEASE" "$CHART" --namespace "$RELEASE_NS" --include-crds \
  --kube-version "$SERVER_VERSION" \
  --set image.repository="${OPERATOR_IMAGE%:*}" --set image.tag="${OPERATOR_IMAGE##*:}" --set logFormat=text \
  --set "extraArgs[0]=--stabilization=$STABILIZATION" > "$WORK/install.yaml"

uninstall() {
  log "uninstalling: test namespaces, KvClusters, the chart, the CRD"
  kubectl delete namespace -l raftkv.io/e2e=true --wait=true --timeout=180s >/dev/null 2>&1 || true
  # While the operator still runs, so that it removes its finalizers.
  if kubectl get crd kvclusters.raftkv.io >/dev/null 2>&1; then
    kubectl delete kvclusters --all --all-namespaces --wait=true --timeout=120s >/dev/null 2>&1 || true
  fi
  kubectl delete -f "$WORK/install.yaml" --ignore-not-found --wait=true --timeout=120s >/dev/null 2>&1 || true
  kubectl delete namespace "$RELEASE_NS" --ignore-not-found --wait=true --timeout=120s >/dev/null 2>&1 || true
}
finish() {
  local rc=$?
  if [ "${RAFTKV_E2E_KEEP_INSTALL:-0}" = 1 ]; then log "RAFTKV_E2E_KEEP_INSTALL=1: the operator stays installed"
  else uninstall; fi
  rm -rf "$WORK"
  exit "$rc"
}
trap finish EXIT

log "installing the chart (release $RELEASE in $RELEASE_NS, image $OPERATOR_IMAGE, --stabilization=$STABILIZATION)"
existed=0
kubectl -n "$RELEASE_NS" get deployment "$RELEASE" >/dev/null 2>&1 && existed=1
kubectl create namespace "$RELEASE_NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl apply --server-side --force-conflicts -f "$WORK/install.yaml" >/dev/null
kubectl wait --for condition=established --timeout=60s crd/kvclusters.raftkv.io >/dev/null
# An operator left from an earlier run would still run the old binary.
[ $existed = 1 ] && kubectl -n "$RELEASE_NS" rollout restart "deployment/$RELEASE" >/dev/null
kubectl -n "$RELEASE_NS" rollout status "deployment/$RELEASE" --timeout=180s >&2
# Namespaces of an earlier, interrupted run.
kubectl delete namespace -l raftkv.io/e2e=true --wait=true --timeout=180s >/dev/null 2>&1 || true

# ---------------------------------------------------------------- run
export RAFTKV_E2E_REPORT=$WORK/report.tsv
export RAFTKV_E2E_OPERATOR_NAMESPACE=$RELEASE_NS
export RAFTKV_E2E_OPERATOR_LEASE=$RELEASE
export RAFTKV_E2E_OPERATOR_SELECTOR="app.kubernetes.io/name=raftkv-operator,app.kubernetes.io/instance=$RELEASE"
log "running the scenarios ($THREADS at a time)"
t0=$SECONDS
rc=0
cargo nextest run --workspace -E "package(raftkv-e2e)" --profile e2e --test-threads "$THREADS" "$@" || rc=$?

echo
echo "== e2e summary ($((SECONDS - t0))s for the suite)"
if [ -f "$RAFTKV_E2E_REPORT" ]; then
  awk -F'\t' '$2 == "total" { printf "  %-18s %-7s %7.1fs\n", $1, $4, $3 }' "$RAFTKV_E2E_REPORT"
  echo "measured:"
  awk -F'\t' '$2 == "step" && $4 ~ /^MEASURED/ { sub(/^MEASURED /, "", $4); printf "  %-18s %7.1fs  %s\n", $1, $3, $4 }' "$RAFTKV_E2E_REPORT"
fi
exit $rc
