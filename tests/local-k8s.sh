#!/usr/bin/env bash
# Local Kubernetes cluster for raftkv end-to-end tests: one real node, no registry.
#
#   tests/local-k8s.sh up       start (or reuse) etcd, kube-apiserver, kube-controller-manager
#                               and the node: kubelet + containerd + kube-proxy + kube-scheduler +
#                               DNS running the images built from docker/ (tests/real-node/);
#                               prints the kubeconfig path
#   tests/local-k8s.sh load-images   real node: rebuild the images from the current binaries
#                               and import what changed
#   tests/local-k8s.sh down     stop everything and remove namespaces, veth, cgroups, mounts
#   tests/local-k8s.sh status   show what is running
#   tests/local-k8s.sh env      print `export KUBECONFIG=...` etc. (eval "$(tests/local-k8s.sh env)")
#   tests/local-k8s.sh build    only build (or reuse) the control plane's binaries (build-node: the node's)
#   tests/local-k8s.sh packages install the Debian packages of everything here (apt, in the foreground)
#   tests/local-k8s.sh prepare  everything up needs that does not depend on raftkv's binaries:
#                               packages, all five Kubernetes binaries, the base images
#
# See docs/testing.md for how it works. Environment variables:
#   RAFTKV_CACHE    cache dir for the Kubernetes build      (default ~/.cache/raftkv)
#   RAFTKV_STATE    state dir: pids, certs, etcd, logs, PVs (default /tmp/raftkv-k8s)
#   RAFTKV_BIN_DIR  the kvnode / kvctl / raftkv-operator binaries the images are built around
#                   (default $CARGO_TARGET_DIR/debug or ~/.cache/raftkv/target/debug)
#   RAFTKV_NET      host <-> node link, a /24 (default 10.244.0): the host is .1, the node .2;
#                   pods get the next /24 (10.244.1.0/24)
#   RAFTKV_K8S_SKIP_APT=1  do not call apt-get (packages already installed)
set -euo pipefail

K8S_VERSION=1.20.2
K8S_DEB_VERSION=1.20.5+really1.20.2-1.1+deb12u1
K8S_ORIG_TARBALL=kubernetes_1.20.5+really1.20.2.orig.tar.gz
# Bump when the build recipe changes, so that cached binaries of an older recipe are not reused.
# r2: vendored modern-go/reflect2 1.0.1 replaced by Debian's 1.0.2 (1.0.1 makes the API server
#     segfault under Go >= 1.18 when it encodes maps, e.g. on the first custom resource).
K8S_BUILD_REV=r2

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${RAFTKV_CACHE:-$HOME/.cache/raftkv}
STATE=${RAFTKV_STATE:-/tmp/raftkv-k8s}
K8S_BIN=$CACHE/k8s-$K8S_VERSION-$K8S_BUILD_REV/bin
NET=${RAFTKV_NET:-10.244.0}
HOST_IP=$NET.1
# Everything the environment may route to is in these ranges. They get an
# "unreachable" route on the host so that nothing ever leaves the machine, even
# for a Service ClusterIP (kube-proxy runs in the node only) or a pod IP that no longer exists.
POD_SUPERNET=${NET%.*}.0.0/16
SERVICE_CIDR=${RAFTKV_SERVICE_CIDR:-10.97.0.0/16}
API_PORT=${RAFTKV_API_PORT:-443}
ETCD_CLIENT_PORT=23790
ETCD_PEER_PORT=23800
PYTHON=${PYTHON:-python3}
if [ -x /usr/bin/python3 ]; then PYTHON=${PYTHON_OVERRIDE:-/usr/bin/python3}; fi

log() { printf '[local-k8s %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (network namespaces, mounts)"; }

# ---------------------------------------------------------------- packages
APT_PKGS=(golang-go golang-github-modern-go-reflect2-dev rsync make etcd-server etcd-client openssl iproute2 util-linux procps curl ca-certificates)

ensure_packages() { # [package...]: these (default APT_PKGS), installed if missing
  local missing=() p
  [ $# -gt 0 ] || set -- "${APT_PKGS[@]}"
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "${RAFTKV_K8S_SKIP_APT:-0}" = 1 ] && die "missing packages: ${missing[*]}"
  log "installing apt packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

ensure_deb_src() {
  local f=/etc/apt/sources.list.d/debian-src.sources
  if [ ! -f "$f" ] && ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ && ! grep -qs '^deb-src' /etc/apt/sources.list; then
    log "adding deb-src entry $f"
    awk 'BEGIN{RS="";ORS="\n\n"} NR==1' /etc/apt/sources.list.d/debian.sources \
      | sed -e 's/^Types: deb$/Types: deb-src/' -e 's/^Suites: .*/Suites: bookworm/' > "$f"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
}

# ---------------------------------------------------------------- build
K8S_NODE_BIN=$CACHE/k8s-$K8S_VERSION-node-$K8S_BUILD_REV/bin

build_kube() { build_k8s "$K8S_BIN" kube-apiserver kube-controller-manager; }
# The node's parts: kubelet, kube-proxy, kube-scheduler. A separate cache
# entry, so that machines with the control plane cached only build these.
build_node_kube() { build_k8s "$K8S_NODE_BIN" kubelet kube-proxy kube-scheduler; }
# Both, in one make when neither is cached: one unpack, one code generation and
# one Go build cache for the packages all five share (saves minutes on a cold machine).
build_all_kube() {
  build_k8s "$K8S_BIN" kube-apiserver kube-controller-manager -- "$K8S_NODE_BIN" kubelet kube-proxy kube-scheduler
}

have_bins() { # dir name...
  local d=$1 b; shift
  for b in "$@"; do [ -x "$d/$b" ] || return 1; done
}

# missing_groups GROUP...: the groups ("DEST COMPONENT...") whose DEST lacks a component, one per line
missing_groups() {
  local g
  for g in "$@"; do
    # shellcheck disable=SC2086 # a group is words: a dest dir and component names
    if ! have_bins $g; then echo "$g"; fi
  done
}

build_k8s() { # DEST COMPONENT... [-- DEST COMPONENT...]
  local groups=() g="" a
  for a in "$@"; do
    if [ "$a" = -- ]; then groups+=("$g"); g=""; else g="${g:+$g }$a"; fi
  done
  groups+=("$g")
  [ -n "$(missing_groups "${groups[@]}")" ] || return 0
  need_root
  ensure_packages
  local t0=$SECONDS work what="" b todo=() dest comps
  work=$CACHE/k8s-$K8S_VERSION-src
  mkdir -p "$work"
  # one build at a time (e.g. a CI run and a developer)
  exec 9>"$work/.build.lock"
  flock 9
  mapfile -t todo < <(missing_groups "${groups[@]}")
  if [ ${#todo[@]} -eq 0 ]; then
    exec 9>&-; return 0
  fi
  for g in "${todo[@]}"; do
    for b in ${g#* }; do what="$what cmd/$b"; done
  done
  log "building${what//cmd\//} $K8S_VERSION from Debian's source (all five: ~15 min on 2 cores)"
  if [ ! -f "$work/$K8S_ORIG_TARBALL" ]; then
    ensure_deb_src
    (cd "$work" && apt-get source --download-only "kubernetes=$K8S_DEB_VERSION" >/dev/null)
  fi
  rm -rf "$work/kubernetes-$K8S_VERSION"
  tar -C "$work" -xzf "$work/$K8S_ORIG_TARBALL"
  local src=$work/kubernetes-$K8S_VERSION home
  local r2=/usr/share/gocode/src/github.com/modern-go/reflect2
  [ -f "$r2/go_above_118.go" ] || die "$r2 (Debian's golang-github-modern-go-reflect2-dev) is missing"
  rm -rf "$src/vendor/github.com/modern-go/reflect2"
  cp -r "$r2" "$src/vendor/github.com/modern-go/reflect2"
  rm -f "$src/vendor/github.com/modern-go/reflect2/go.mod"
  mkdir -p "$src/.go/src/k8s.io"
  ln -sfn ../../.. "$src/.go/src/k8s.io/kubernetes"
  home=$(mktemp -d)
  (cd "$src" && GOPATH=$src/.go CGO_ENABLED=0 GOPROXY=off GOFLAGS=-mod=vendor HOME=$home \
      make WHAT="${what# }") > "$work/build.log" 2>&1 \
    || { tail -30 "$work/build.log" >&2; die "kubernetes build failed, log: $work/build.log"; }
  for g in "${todo[@]}"; do
    dest=${g%% *} comps=${g#* }
    mkdir -p "$dest.tmp"
    for b in $comps; do cp "$src/_output/bin/$b" "$dest.tmp/"; done
    rm -rf "$dest"; mv "$dest.tmp" "$dest"
  done
  # the unpacked tree and Go's build cache are ~2 GB; keep only the tarball. Removing
  # them takes a minute or more on a busy disk: do it in the background (it ends by itself).
  mv "$src" "$src.old.$$"
  (exec 9>&-; nice rm -rf "$src.old.$$" "$home" >/dev/null 2>&1 &)
  log "kubernetes $K8S_VERSION${what//cmd\//} built in $((SECONDS - t0))s"
  exec 9>&-
}

# ---------------------------------------------------------------- processes
# pid files hold "PID STARTTIME" (STARTTIME from /proc/PID/stat guards against pid reuse)
# (a zombie counts as gone: prints nothing)
starttime() { awk '{sub(/.*\) /, ""); if ($1 != "Z" && $1 != "X") print $20}' "/proc/$1/stat" 2>/dev/null || true; }

pid_alive() { # pidfile -> 0 if that very process is alive
  local f=$1 pid st
  [ -f "$f" ] || return 1
  read -r pid st < "$f" || return 1
  [ -n "$pid" ] && [ -d "/proc/$pid" ] && [ "$(starttime "$pid")" = "$st" ]
}

start_daemon() { # name logfile cmd...
  local name=$1 logf=$2; shift 2
  # own session and process group; not a child of the caller's terminal
  setsid "$@" >>"$logf" 2>&1 </dev/null &
  local pid=$!
  # record at once (start time is fixed at fork), so an interrupted up still leaves a pid file
  echo "$pid $(starttime "$pid")" > "$STATE/pids/$name.pid"
  log "started $name (pid $pid, log $logf)"
}

stop_pidfile() { # pidfile [grace-seconds]
  local f=$1 grace=${2:-10} pid st i
  [ -f "$f" ] || return 0
  if pid_alive "$f"; then
    read -r pid st < "$f"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
      pid_alive "$f" || break
      sleep 0.1
    done
    if pid_alive "$f"; then
      log "$(basename "$f" .pid) did not stop within ${grace}s: SIGKILL"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    log "stopped $(basename "$f" .pid) (pid $pid)"
  fi
  rm -f "$f"
}

# ---------------------------------------------------------------- certs, tokens, kubeconfigs
gen_certs() {
  local d=$STATE/pki
  [ -f "$d/done" ] && return 0
  mkdir -p "$d"
  log "generating CA, serving certificates, service-account key pair and tokens in $d"
  (
    cd "$d"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=raftkv-local-ca" 2>/dev/null
    local_cert() { # name subject san
      openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
      printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n' "$3" > "$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 3650 -extfile "$1.ext" 2>/dev/null
      rm -f "$1.csr" "$1.ext"
    }
    local svc_ip
    svc_ip=$(echo "$SERVICE_CIDR" | awk -F'[./]' '{print $1"."$2"."$3"."$4+1}')
    local_cert apiserver "/CN=kube-apiserver" \
      "IP:$HOST_IP,IP:127.0.0.1,IP:$svc_ip,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost"
    local_cert apiserver-kubelet-client "/CN=kube-apiserver-kubelet-client/O=system:masters" "DNS:kube-apiserver-kubelet-client"
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    for t in admin controller-manager kubelet kube-proxy kube-scheduler node-addons; do openssl rand -hex 24 > "token-$t"; done
    {
      echo "$(cat token-admin),admin,admin,\"system:masters\""
      echo "$(cat token-controller-manager),system:kube-controller-manager,kcm,"
      echo "$(cat token-kubelet),system:node:local-node,kubelet,\"system:nodes,system:masters\""
      # the real node's parts, with the users the API server's default RBAC binds roles to
      echo "$(cat token-kube-proxy),system:kube-proxy,kube-proxy,"
      echo "$(cat token-kube-scheduler),system:kube-scheduler,kube-scheduler,"
      echo "$(cat token-node-addons),system:raftkv-node-addons,node-addons,\"system:masters\""
    } > tokens.csv
    chmod 600 ./*.key token-* tokens.csv
    touch ./done
  )
}

write_kubeconfig() { # file token-file
  cat > "$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: raftkv-local
  cluster:
    server: https://$HOST_IP:$API_PORT
    certificate-authority: $STATE/pki/ca.crt
users:
- name: $(basename "$2")
  user:
    token: $(cat "$2")
contexts:
- name: raftkv-local
  context: {cluster: raftkv-local, user: $(basename "$2"), namespace: default}
current-context: raftkv-local
KC
  chmod 600 "$1"
}

# ---------------------------------------------------------------- up
api_ready() {
  curl -sf --max-time 3 --cacert "$STATE/pki/ca.crt" -H "Authorization: Bearer $(cat "$STATE/pki/token-admin")" \
    "https://$HOST_IP:$API_PORT/readyz" >/dev/null 2>&1
}

wait_for() { # description timeout-seconds command...
  local what=$1 timeout=$2 t0=$SECONDS; shift 2
  until "$@"; do
    if ((SECONDS - t0 > timeout)); then
      local f
      for f in "$STATE"/logs/*.log; do log "---- last lines of $f"; tail -15 "$f" >&2 || true; done
      die "timed out after ${timeout}s waiting for $what (run '$0 down' to clean up)"
    fi
    sleep 0.5
  done
  log "$what ($((SECONDS - t0))s)"
}

kc() { kubectl --kubeconfig "$STATE/kubeconfig" "$@" 2>/dev/null; }

default_sa_ready() {
  [ -n "$(kc -n default get serviceaccount default -o 'jsonpath={.secrets[0].name}')" ]
}

node_ready() {
  [ "$(kc get node local-node -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

etcd_ready() { curl -sf --max-time 2 "http://127.0.0.1:$ETCD_CLIENT_PORT/health" | grep -q '"health":"true"'; }

bin_dir() {
  if [ -n "${RAFTKV_BIN_DIR:-}" ]; then echo "$RAFTKV_BIN_DIR"
  elif [ -n "${CARGO_TARGET_DIR:-}" ]; then echo "$CARGO_TARGET_DIR/debug"
  else echo "$HOME/.cache/raftkv/target/debug"; fi
}

cmd_up() {
  need_root
  local t0=$SECONDS
  [ $# -eq 0 ] || die "up: unknown argument $1"
  ensure_packages
  ensure_node_packages
  build_all_kube
  mkdir -p "$STATE/pids" "$STATE/logs"
  if ! pid_alive "$STATE/pids/etcd.pid" && [ -d "$STATE/logs" ] && [ -n "$(ls -A "$STATE/logs" 2>/dev/null)" ] \
     && [ ! -d "$STATE/etcd" ]; then
    rm -rf "$STATE/logs.prev"; mv "$STATE/logs" "$STATE/logs.prev"; mkdir -p "$STATE/logs"
  fi
  gen_certs
  write_kubeconfig "$STATE/kubeconfig" "$STATE/pki/token-admin"
  write_kubeconfig "$STATE/controller-manager.kubeconfig" "$STATE/pki/token-controller-manager"
  node_namespaces   # the API server binds HOST_IP, the host's end of the node's veth

  if ! pid_alive "$STATE/pids/etcd.pid"; then
    mkdir -p "$STATE/etcd"; chmod 700 "$STATE/etcd"
    start_daemon etcd "$STATE/logs/etcd.log" etcd --name raftkv-local --data-dir "$STATE/etcd" \
      --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
      --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
      --initial-cluster "raftkv-local=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls "" --log-level warn
  fi
  wait_for "etcd is healthy" 60 etcd_ready

  if ! pid_alive "$STATE/pids/kube-apiserver.pid"; then
    start_daemon kube-apiserver "$STATE/logs/kube-apiserver.log" "$K8S_BIN/kube-apiserver" \
      --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
      --bind-address="$HOST_IP" --advertise-address="$HOST_IP" --secure-port="$API_PORT" --insecure-port=0 \
      --tls-cert-file="$STATE/pki/apiserver.crt" --tls-private-key-file="$STATE/pki/apiserver.key" \
      --client-ca-file="$STATE/pki/ca.crt" --token-auth-file="$STATE/pki/tokens.csv" \
      --authorization-mode=RBAC --allow-privileged=true \
      --service-account-key-file="$STATE/pki/sa.pub" --service-account-signing-key-file="$STATE/pki/sa.key" \
      --service-account-issuer=https://kubernetes.default.svc.cluster.local \
      --service-cluster-ip-range="$SERVICE_CIDR" \
      --kubelet-preferred-address-types=InternalIP \
      --kubelet-client-certificate="$STATE/pki/apiserver-kubelet-client.crt" --kubelet-client-key="$STATE/pki/apiserver-kubelet-client.key" \
      --enable-priority-and-fairness=false --profiling=false --event-ttl=1h --v=1
  fi
  wait_for "kube-apiserver answers on https://$HOST_IP:$API_PORT" 120 api_ready

  if ! pid_alive "$STATE/pids/kube-controller-manager.pid"; then
    start_daemon kube-controller-manager "$STATE/logs/kube-controller-manager.log" "$K8S_BIN/kube-controller-manager" \
      --kubeconfig="$STATE/controller-manager.kubeconfig" \
      --use-service-account-credentials \
      --root-ca-file="$STATE/pki/ca.crt" --service-account-private-key-file="$STATE/pki/sa.key" \
      --cluster-signing-cert-file="$STATE/pki/ca.crt" --cluster-signing-key-file="$STATE/pki/ca.key" \
      --leader-elect=false --port=0 --secure-port=0 --pvclaimbinder-sync-period=5s \
      --kube-api-qps=100 --kube-api-burst=200 --v=1
  fi
  node_up
  wait_for "the default ServiceAccount and its token exist" 120 default_sa_ready
  wait_for "node local-node is Ready" 120 node_ready
  kc apply -f - >/dev/null <<SC || die "could not create the StorageClass"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: raftkv.io/local-dir
reclaimPolicy: Delete
volumeBindingMode: Immediate
allowVolumeExpansion: true
SC
  log "cluster is up in $((SECONDS - t0))s; pods get IPs in $POD_CIDR, API at https://$HOST_IP:$API_PORT"
  log "kubectl: export KUBECONFIG=$STATE/kubeconfig    (or: eval \"\$($0 env)\")"
  echo "$STATE/kubeconfig"
}

# ---------------------------------------------------------------- down
cmd_down() {
  need_root
  mkdir -p "$STATE/pids"
  # 1. the node: kubelet, every container, the node's namespaces, cgroups, veth
  node_down
  # 2. control plane
  stop_pidfile "$STATE/pids/kube-controller-manager.pid" 10
  stop_pidfile "$STATE/pids/kube-apiserver.pid" 15
  stop_pidfile "$STATE/pids/etcd.pid" 10
  # 2b. last resort for a run whose pid files were lost: our daemons all name the state
  # dir on their command line; kill exactly those (by pid).
  local p pid cmd
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    [ "$pid" = $$ ] && continue
    cmd=$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null) || continue
    case " $cmd" in *" $STATE "*|*"=$STATE/"*|*" $STATE/"*) ;; *) continue ;; esac
    case "${cmd%% *}" in etcd|*/etcd|*/kube-apiserver|*/kube-controller-manager|*/kube-scheduler|*/kubelet|*/kube-proxy|containerd|dnsmasq|*python3*) ;; *) continue ;; esac
    log "killing leftover ${cmd:0:70} (pid $pid, no pid file)"
    kill -KILL "$pid" 2>/dev/null || true
  done
  # 3. routes
  ip route del unreachable "$POD_SUPERNET" 2>/dev/null || true
  ip route del unreachable "$SERVICE_CIDR" 2>/dev/null || true
  # 4. state: everything except the logs (kept for debugging until the next up)
  if [ -d "$STATE" ]; then
    find "$STATE" -mindepth 1 -maxdepth 1 ! -name logs ! -name logs.prev -exec rm -rf {} +
  fi
  log "down: nothing of the local cluster is left (logs kept in $STATE/logs)"
}

# ---------------------------------------------------------------- status / env
cmd_status() {
  local c rc=0
  for c in etcd kube-apiserver kube-controller-manager; do
    if pid_alive "$STATE/pids/$c.pid"; then printf '%-24s running (pid %s)\n' "$c" "$(cut -d' ' -f1 "$STATE/pids/$c.pid")"
    else printf '%-24s not running\n' "$c"; rc=1; fi
  done
  node_status || rc=1
  if [ -f "$STATE/pki/token-admin" ] && api_ready; then
    echo "API: https://$HOST_IP:$API_PORT ready; KUBECONFIG=$STATE/kubeconfig"
    kc get nodes -o wide || true
    kc get pods -A -o wide || true
  else
    echo "API: not reachable"; rc=1
  fi
  return $rc
}

cmd_env() {
  echo "export KUBECONFIG=$STATE/kubeconfig"
  echo "export RAFTKV_STATE=$STATE"
  echo "export RAFTKV_BIN_DIR=$(bin_dir)"
  echo "export RAFTKV_NET=$NET"
}

# Everything `up` needs that does not depend on raftkv's binaries: packages, the five
# Kubernetes binaries, the pause and debian base images. scripts/test.sh runs it in the
# background while the workspace compiles, after `packages` in the foreground:
# apt must never be killed half-way (a dpkg left unconfigured breaks every later
# install), and a background job is killed when the test command stops early.
cmd_packages() {
  need_root
  ensure_packages
  ensure_node_packages
  "$HERE/real-node/images.sh" packages || die "installing the image tools failed"
}

cmd_prepare() {
  local t0=$SECONDS
  cmd_packages
  build_all_kube
  "$HERE/real-node/images.sh" base "$CACHE/images/archives" || die "building the base images failed"
  log "prepared in $((SECONDS - t0))s"
}

# shellcheck source-path=SCRIPTDIR source=real-node/node.sh
. "$HERE/real-node/node.sh"

main() {
  local cmd=${1:-}
  [ $# -gt 0 ] && shift
  case "$cmd" in
    up) cmd_up "$@" ;;
    load-images) need_root; pid_alive "$STATE/pids/containerd.pid" || die "load-images: the node is not up"; node_load_images ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
    build) need_root; build_kube; echo "$K8S_BIN" ;;
    build-node) need_root; build_node_kube; echo "$K8S_NODE_BIN" ;;
    packages) cmd_packages ;;
    prepare) cmd_prepare ;;
    *) echo "usage: $0 up|down|status|env|load-images|build|build-node|packages|prepare" >&2; exit 2 ;;
  esac
}

main "$@"
