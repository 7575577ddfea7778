# shellcheck shell=bash
# The real node of tests/local-k8s.sh (`up --node real`): kubelet, containerd (runc),
# kube-proxy and dnsmasq in a network + mount namespace of their own, so nothing they
# change (iptables, bridges, ip_forward, kernel sysctls, netns and log directories) touches
# the host. kube-scheduler and the add-ons (tests/real-node/addons/: volume provisioner,
# DNS records) run on the host beside the control plane. Sourced by tests/local-k8s.sh,
# which defines STATE, CACHE, HOST_IP, NET, log/die/start_daemon/stop_pidfile/pid_alive/...
# See docs/testing.md ("The real node") for the layout and why each piece is there.

NODE_DIR=$STATE/node
NODE_IP=$NET.2                       # the node's end of the veth; HOST_IP ($NET.1) is the host's
POD_CIDR=${RAFTKV_POD_CIDR:-${NET%.*}.$((${NET##*.} + 1)).0/24}   # 10.244.1.0/24 by default
POD_GW=${POD_CIDR%.*}.1              # the CNI bridge in the node; also cluster DNS
HOST_VETH=rkvnode0
CNI_BRIDGE=rkvcni0
CGROUP_ROOT=raftkv-node
CTRD_SOCK=$NODE_DIR/containerd/containerd.sock
NODE_APT_PKGS=(containerd runc containernetworking-plugins dnsmasq-base iptables conntrack)
# The directories kubelet and containerd use whatever their flags say. Each gets a mount of
# its own inside the node, so the host only ever sees an empty mount point (removed by down).
NODE_PRIVATE_DIRS=(/var/log/pods /var/log/containers /var/lib/cni /run/netns)

node_holder() { # pid of the process that holds the node's namespaces
  pid_alive "$STATE/pids/node-holder.pid" && cut -d' ' -f1 "$STATE/pids/node-holder.pid"
}

in_node() { # cmd...: run in the node's network and mount namespaces
  local h
  h=$(node_holder) || die "the node's namespaces are gone (run '$0 down')"
  nsenter -t "$h" -n -m -- "$@"
}

node_daemon() { # name cmd...: start_daemon inside the node
  local name=$1 h; shift
  h=$(node_holder) || die "the node's namespaces are gone"
  start_daemon "$name" "$STATE/logs/$name.log" nsenter -t "$h" -n -m -- "$@"
}

# policy-rc.d keeps the packaged services (containerd) from starting: the node starts its own.
ensure_node_packages() { ensure_packages "${NODE_APT_PKGS[@]}"; }

# ---------------------------------------------------------------- namespaces and network
node_namespaces() {
  pid_alive "$STATE/pids/node-holder.pid" && return 0
  mkdir -p "$NODE_DIR/fake-sysctl"
  local d created=$STATE/node-created-dirs
  for d in "${NODE_PRIVATE_DIRS[@]}"; do
    if [ ! -e "$d" ]; then mkdir -p "$d" && echo "$d" >> "$created"; fi
  done
  setsid unshare --net --mount --propagation slave sleep infinity </dev/null >/dev/null 2>&1 &
  local h=$!
  echo "$h $(starttime "$h")" > "$STATE/pids/node-holder.pid"
  # wait until unshare has exec'd sleep in the new namespaces
  local i
  for ((i = 0; i < 50; i++)); do
    [ "$(readlink "/proc/$h/ns/net")" != "$(readlink /proc/self/ns/net)" ] && break
    sleep 0.1
  done
  readlink "/proc/$h/ns/net" > "$STATE/node-netns"
  mkdir -p "$STATE/logs/node/pods" "$STATE/logs/node/containers"
  # kubelet's container manager sets these global sysctls when they differ from what it
  # wants (there is no flag to only warn): show it its values, leave the host's alone.
  local kv path want
  for kv in vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1 \
            kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000; do
    path=/proc/sys/${kv%=*} want=${kv#*=}
    [ "$(cat "$path")" = "$want" ] && continue
    mkdir -p "$(dirname "$NODE_DIR/fake-sysctl/${kv%=*}")"
    echo "$want" > "$NODE_DIR/fake-sysctl/${kv%=*}"
    in_node mount --bind "$NODE_DIR/fake-sysctl/${kv%=*}" "$path"
  done
  in_node sh -ec "
    mount --bind '$STATE/logs/node/pods' /var/log/pods
    mount --bind '$STATE/logs/node/containers' /var/log/containers
    mount -t tmpfs -o mode=0755 rkv-cni /var/lib/cni
    mount -t tmpfs -o mode=0755 rkv-netns /run/netns
    ip link set lo up
    echo 1 > /proc/sys/net/ipv4/ip_forward"
  # host <-> node: a veth pair; the host keeps HOST_IP (the API server binds there) and
  # routes the pod range to the node.
  ip link del "$HOST_VETH" 2>/dev/null || true
  ip link add "$HOST_VETH" type veth peer name rkvnode1
  ip link set rkvnode1 netns "$h"
  ip addr replace "$HOST_IP/24" dev "$HOST_VETH"
  ip link set "$HOST_VETH" up
  in_node sh -ec "
    ip link set rkvnode1 name eth0
    ip addr add '$NODE_IP/24' dev eth0
    ip link set eth0 up
    ip route add default via '$HOST_IP'
    ip link add '$CNI_BRIDGE' type bridge
    ip addr add '$POD_GW/24' dev '$CNI_BRIDGE'
    ip link set '$CNI_BRIDGE' up"
  ip route replace "$POD_CIDR" via "$NODE_IP"
  ip route replace unreachable "$POD_SUPERNET"
  ip route replace unreachable "$SERVICE_CIDR"
  log "node namespaces ready (holder pid $h): node $NODE_IP, pods $POD_CIDR, host $HOST_IP"
}

# ---------------------------------------------------------------- cgroups
cgroup_dirs() { # every v1 hierarchy's directory of the node
  local c
  for c in /sys/fs/cgroup/*/; do
    case $c in */unified/) continue ;; esac
    echo "${c%/}/$CGROUP_ROOT"
  done
}

node_cgroups() {
  local d
  for d in $(cgroup_dirs); do
    mkdir -p "$d"
    if [ -f "$(dirname "$d")/cpuset.cpus" ]; then
      cat "$(dirname "$d")/cpuset.cpus" > "$d/cpuset.cpus"
      cat "$(dirname "$d")/cpuset.mems" > "$d/cpuset.mems"
    fi
  done
}

# ---------------------------------------------------------------- configuration files
node_configs() {
  mkdir -p "$NODE_DIR/containerd" "$NODE_DIR/cni" "$NODE_DIR/kubelet" "$NODE_DIR/dns"
  cat > "$NODE_DIR/containerd/config.toml" <<EOF
version = 2
root = "$NODE_DIR/containerd/root"
state = "$NODE_DIR/containerd/state"
[grpc]
  address = "$CTRD_SOCK"
[ttrpc]
  address = "$NODE_DIR/containerd/ttrpc.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "k8s.gcr.io/pause:3.2"
  disable_apparmor = true
  # root here lacks CAP_SYS_RESOURCE and cannot lower oom_score_adj, which kubelet asks for
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$NODE_DIR/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE_DIR/cni"
[plugins."io.containerd.internal.v1.opt"]
  path = "$NODE_DIR/containerd/opt"
EOF
  cat > "$NODE_DIR/cni/10-raftkv.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "raftkv-pods", "plugins": [
  {"type": "bridge", "bridge": "$CNI_BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GW"}]],
            "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$NODE_DIR/cni-ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF
  printf 'nameserver %s\n' "$POD_GW" > "$NODE_DIR/resolv.conf"
  cat > "$NODE_DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $STATE/pki/ca.crt}
authorization: {mode: AlwaysAllow}
tlsCertFile: $STATE/pki/node.crt
tlsPrivateKeyFile: $STATE/pki/node.key
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_ROOT
failSwapOn: false
makeIPTablesUtilChains: false
enforceNodeAllocatable: []
evictionHard: {memory.available: 100Mi, nodefs.available: "1%", nodefs.inodesFree: "1%", imagefs.available: "1%"}
# the images were imported, there is no registry to pull them again from
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
clusterDNS: [$POD_GW]
clusterDomain: cluster.local
resolvConf: $NODE_DIR/resolv.conf
volumePluginDir: $NODE_DIR/kubelet-plugins
# how often Secret/ConfigMap volumes are refreshed, among others (default 1m)
syncFrequency: 10s
EOF
  write_kubeconfig "$STATE/kubelet.kubeconfig" "$STATE/pki/token-kubelet"
  write_kubeconfig "$STATE/kube-proxy.kubeconfig" "$STATE/pki/token-kube-proxy"
  write_kubeconfig "$STATE/kube-scheduler.kubeconfig" "$STATE/pki/token-kube-scheduler"
}

node_cert() { # the kubelet's serving certificate, for the node's address
  [ -f "$STATE/pki/node.crt" ] && return 0
  (
    cd "$STATE/pki" || exit 1
    openssl req -newkey rsa:2048 -nodes -keyout node.key -out node.csr -subj "/CN=local-node" 2>/dev/null
    printf 'subjectAltName=IP:%s,DNS:local-node\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n' "$NODE_IP" > node.ext
    openssl x509 -req -in node.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out node.crt -days 3650 -extfile node.ext 2>/dev/null
    rm -f node.csr node.ext; chmod 600 node.key
  )
}

# ---------------------------------------------------------------- images
ctr_node() { in_node ctr -a "$CTRD_SOCK" -n k8s.io "$@"; }

# Builds the images from docker/*.Dockerfile with the current binaries (tests/real-node/images.sh)
# and imports into containerd those it does not have yet.
node_load_images() {
  local out=$CACHE/images/archives t0=$SECONDS f id
  "$HERE/real-node/images.sh" archives "$out" >/dev/null || die "building the images failed"
  for f in "$out"/*.tar; do
    # images.sh rewrites an archive only when its inputs changed
    id="$(basename "$f") $(stat -c '%s %Y' "$f")"
    grep -qxF "$id" "$NODE_DIR/imported" 2>/dev/null && continue
    ctr_node images import "$f" >/dev/null || die "ctr import $f failed"
    echo "$id" >> "$NODE_DIR/imported"
    log "imported $(basename "$f")"
  done
  log "images ready in containerd ($((SECONDS - t0))s)"
}

# ---------------------------------------------------------------- up
containerd_ready() { in_node ctr -a "$CTRD_SOCK" version >/dev/null 2>&1; }
dns_ready() { in_node bash -c "exec 3<>/dev/tcp/$POD_GW/53" 2>/dev/null; }

node_up() {
  # packages and kubelet & co.: cmd_up installs and builds them first (build_all_kube)
  node_namespaces
  node_cgroups
  node_cert
  node_configs
  if ! pid_alive "$STATE/pids/containerd.pid"; then
    node_daemon containerd containerd --config "$NODE_DIR/containerd/config.toml"
  fi
  wait_for "containerd answers" 60 containerd_ready
  node_load_images
  if ! pid_alive "$STATE/pids/dnsmasq.pid"; then
    touch "$NODE_DIR/dns/hosts"
    node_daemon dnsmasq dnsmasq --keep-in-foreground --log-facility=- --user=root --no-resolv --no-hosts \
      --listen-address="$POD_GW" --bind-interfaces --addn-hosts="$NODE_DIR/dns/hosts" \
      --local=/cluster.local/ --domain-needed --cache-size=0
  fi
  if ! pid_alive "$STATE/pids/node-addons.pid"; then
    RKV_API_SERVER="https://$HOST_IP:$API_PORT" RKV_TOKEN_FILE="$STATE/pki/token-node-addons" \
    RKV_CA_FILE="$STATE/pki/ca.crt" RKV_STATE="$STATE" RKV_DNS_HOSTS="$NODE_DIR/dns/hosts" \
    RKV_DNSMASQ_PIDFILE="$STATE/pids/dnsmasq.pid" PYTHONUNBUFFERED=1 \
      start_daemon node-addons "$STATE/logs/node-addons.log" "$PYTHON" "$HERE/real-node/addons/addons.py"
  fi
  if ! pid_alive "$STATE/pids/kube-scheduler.pid"; then
    start_daemon kube-scheduler "$STATE/logs/kube-scheduler.log" "$K8S_NODE_BIN/kube-scheduler" \
      --kubeconfig="$STATE/kube-scheduler.kubeconfig" --authentication-kubeconfig="$STATE/kube-scheduler.kubeconfig" \
      --authorization-kubeconfig="$STATE/kube-scheduler.kubeconfig" \
      --leader-elect=false --port=0 --bind-address=127.0.0.1 --secure-port=10259 --v=1
  fi
  if ! pid_alive "$STATE/pids/kubelet.pid"; then
    node_daemon kubelet "$K8S_NODE_BIN/kubelet" --config="$NODE_DIR/kubelet.yaml" \
      --kubeconfig="$STATE/kubelet.kubeconfig" --root-dir="$NODE_DIR/kubelet" \
      --cert-dir="$NODE_DIR/kubelet/pki" \
      --container-runtime=remote --container-runtime-endpoint="unix://$CTRD_SOCK" \
      --runtime-request-timeout=5m \
      --hostname-override=local-node --node-ip="$NODE_IP" --pod-infra-container-image=k8s.gcr.io/pause:3.2 --v=1
  fi
  if ! pid_alive "$STATE/pids/kube-proxy.pid"; then
    # --conntrack-*=0: leave the conntrack sysctls as they are (some are not per network namespace);
    # --masquerade-all: a pod reaching a Service whose endpoint is on the same bridge gets its
    # replies back through the node without relying on br_netfilter.
    node_daemon kube-proxy "$K8S_NODE_BIN/kube-proxy" --kubeconfig="$STATE/kube-proxy.kubeconfig" \
      --hostname-override=local-node --bind-address="$NODE_IP" --cluster-cidr="$POD_CIDR" \
      --proxy-mode=iptables --masquerade-all --conntrack-max-per-core=0 \
      --conntrack-tcp-timeout-established=0 --conntrack-tcp-timeout-close-wait=0 \
      --metrics-bind-address=127.0.0.1:10249 --healthz-bind-address=127.0.0.1:10256 --v=1
  fi
  wait_for "cluster DNS answers on $POD_GW:53" 30 dns_ready
}

node_status() {
  local c rc=0
  for c in node-holder containerd dnsmasq node-addons kube-scheduler kubelet kube-proxy; do
    if pid_alive "$STATE/pids/$c.pid"; then printf '%-24s running (pid %s)\n' "$c" "$(cut -d' ' -f1 "$STATE/pids/$c.pid")"
    else printf '%-24s not running\n' "$c"; rc=1; fi
  done
  return $rc
}

# ---------------------------------------------------------------- down
procs_in_cgroups() {
  local d
  for d in $(cgroup_dirs); do
    if [ -d "$d" ]; then find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null; fi
  done | sort -u
}

procs_in_node_netns() {
  local ns p
  [ -f "$STATE/node-netns" ] || return 0
  ns=$(cat "$STATE/node-netns")
  for p in /proc/[0-9]*; do
    if [ "$(readlink "$p/ns/net" 2>/dev/null)" = "$ns" ]; then echo "${p#/proc/}"; fi
  done
}

node_down() {
  local pid i
  # 1. kubelet first, so it restarts nothing
  stop_pidfile "$STATE/pids/kubelet.pid" 10
  # 2. every container: all processes in the node's cgroups
  for i in 1 2 3; do
    pid=$(procs_in_cgroups)
    [ -z "$pid" ] && break
    # shellcheck disable=SC2086
    kill -KILL $pid 2>/dev/null || true
    sleep 0.3
  done
  stop_pidfile "$STATE/pids/kube-proxy.pid" 5
  stop_pidfile "$STATE/pids/dnsmasq.pid" 5
  stop_pidfile "$STATE/pids/containerd.pid" 10
  stop_pidfile "$STATE/pids/kube-scheduler.pid" 5
  stop_pidfile "$STATE/pids/node-addons.pid" 5
  # 3. whatever is left in the node's network namespace (shims, the holder): then the
  #    namespaces, with every mount, netns, bridge and iptables rule in them, are gone
  for i in 1 2 3 4 5; do
    pid=$(procs_in_node_netns)
    [ -z "$pid" ] && break
    # shellcheck disable=SC2086
    kill -KILL $pid 2>/dev/null || true
    sleep 0.2
  done
  rm -f "$STATE/pids/node-holder.pid" "$STATE/node-netns"
  # 4. cgroups, deepest first
  local d
  for d in $(cgroup_dirs); do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
    if [ -d "$d" ]; then log "cgroup $d is still there (busy?)"; fi
  done
  # 5. the host's side of the veth (takes the node's end with it), its routes
  if ip link show "$HOST_VETH" >/dev/null 2>&1; then ip link del "$HOST_VETH"; log "deleted veth $HOST_VETH"; fi
  ip route del "$POD_CIDR" 2>/dev/null || true
  # 6. mount points created on the host for the node's private directories
  if [ -f "$STATE/node-created-dirs" ]; then
    tac "$STATE/node-created-dirs" | while read -r d; do rmdir "$d" 2>/dev/null || true; done
    rm -f "$STATE/node-created-dirs"
  fi
}
