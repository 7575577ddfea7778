#!/usr/bin/env bash
# The end-to-end suite on kind (https://kind.sigs.k8s.io), unchanged: build the
# two images, create a kind cluster, load the images into it, then
# tests/e2e/run.sh installs the chart and runs the same scenarios as on the
# local environment. Cannot run on the CI machine (no Docker there); see docs/e2e.md.
#
#   tests/e2e/kind.sh                  everything; the cluster is deleted at the end
#   tests/e2e/kind.sh scale            only tests whose name contains "scale"
#   KIND_KEEP_CLUSTER=1 tests/e2e/kind.sh   keep the cluster (KUBECONFIG is printed)
#
# Needs: docker with BuildKit, kind, kubectl, helm (3.8+ or 4), cargo + cargo-nextest.
# The kvnode image build compiles RocksDB: ~20 minutes the first time on 2 cores.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
CLUSTER=${KIND_CLUSTER:-raftkv-e2e}
VERSION=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/raftkv-operator/Chart.yaml)
for tool in docker kind kubectl helm cargo-nextest; do
  command -v "$tool" >/dev/null || { echo "kind.sh: $tool is needed" >&2; exit 1; }
done

# 1. Images, tagged as the chart and examples/kvcluster.yaml expect.
DOCKER_BUILDKIT=1 docker build -f docker/kvnode.Dockerfile -t "raftkv/kvnode:$VERSION" .
DOCKER_BUILDKIT=1 docker build -f docker/operator.Dockerfile -t "raftkv/operator:$VERSION" .

# 2. A cluster with its own kubeconfig (the user's ~/.kube/config stays untouched).
export KUBECONFIG=${KIND_KUBECONFIG:-$(mktemp -t "kind-$CLUSTER.XXXXXX")}
kind create cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG" --wait 180s
cleanup() {
  if [ "${KIND_KEEP_CLUSTER:-0}" = 1 ]; then
    echo "kind cluster $CLUSTER kept: export KUBECONFIG=$KUBECONFIG; delete with: kind delete cluster --name $CLUSTER"
  else
    kind delete cluster --name "$CLUSTER"
    rm -f "$KUBECONFIG"
  fi
}
trap cleanup EXIT

# 3. The images go straight into the node; the chart and the example use
#    imagePullPolicy IfNotPresent, so nothing is pulled from a registry.
kind load docker-image "raftkv/kvnode:$VERSION" "raftkv/operator:$VERSION" --name "$CLUSTER"

# 4. Install the chart, run the scenarios, uninstall. The images carry the
#    binaries, so run.sh builds only the test crate. kvnode is reached through
#    the API server's proxy (the default), which works on kind as it is.
RAFTKV_E2E_SKIP_BUILD=1 RAFTKV_HELM="$(command -v helm)" tests/e2e/run.sh "$@"
