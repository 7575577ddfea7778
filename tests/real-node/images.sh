#!/usr/bin/env bash
# The project's container images, built with buildah on this machine, with no registry at all:
# the base images are made here too (debootstrap, the Kubernetes source, the host's Rust toolchain).
#
#   tests/real-node/images.sh archives OUTDIR
#       One docker-archive tar per image in OUTDIR, each holding one tagged image, ready for
#       `ctr -n k8s.io images import FILE`:
#         pause.tar                 k8s.gcr.io/pause:3.2            pause.c of Kubernetes 1.20.2
#         debian-bookworm-slim.tar  debian:bookworm-slim            debootstrap --variant=minbase
#         kvnode.tar                raftkv/kvnode:VERSION           docker/kvnode.Dockerfile
#         kvnode-next.tar           raftkv/kvnode-next:VERSION      the same + label io.raftkv.variant=next
#         operator.tar              raftkv/operator:VERSION         docker/operator.Dockerfile
#       The raftkv images are the Dockerfiles' runtime stage (BIN_FROM=prebuilt) around the host's
#       binaries. Prints "FILE NAME" per archive on stdout (NAME as containerd will call it, e.g.
#       docker.io/raftkv/kvnode:0.1.0). An archive whose inputs (FILE.inputs: binary and Dockerfile
#       checksums, base rootfs, recipe) are unchanged is kept, so a warm run takes about a second.
#   tests/real-node/images.sh base OUTDIR
#       Only pause.tar and debian-bookworm-slim.tar: what needs no raftkv binary, so that it can be
#       made while they compile (scripts/test.sh runs it in the background via local-k8s.sh prepare).
#   tests/real-node/images.sh packages
#       Only installs the Debian packages this script uses (buildah, runc, debootstrap, gcc, ...).
#   tests/real-node/images.sh full
#       The build a user runs: both Dockerfiles with their compile stage, FROM a rust:1.95-bookworm
#       made here from the host's rustup toolchain. Tags raftkv/kvnode:VERSION and
#       raftkv/operator:VERSION in the private storage and prints the time of each step.
#   tests/real-node/images.sh clean
#       Removes $RAFTKV_CACHE/images (buildah storage, cached rootfs, cargo cache mounts).
#
# VERSION is appVersion of charts/raftkv-operator/Chart.yaml. Needs root. See docs/images.md.
# Environment variables:
#   RAFTKV_CACHE          cache dir (default ~/.cache/raftkv); images/ in it holds everything of this script
#   RAFTKV_BIN_DIR        prebuilt kvnode, kvctl, raftkv-operator for `archives`
#                         (default $CARGO_TARGET_DIR/debug, else $RAFTKV_CACHE/target/debug)
#   RAFTKV_DEBIAN_MIRROR  mirror for debootstrap (default: URIs of the first stanza of
#                         /etc/apt/sources.list.d/debian.sources)
#   RAFTKV_K8S_SKIP_APT=1 never call apt-get (fail if a package is missing)
# Exit status: 0 done, 1 failed (message on stderr), 2 usage error.
set -euo pipefail

# Bump when a recipe changes, so that cached results of an older recipe are not reused.
DEBIAN_REV=r1   # rootfs: debootstrap + trimming
RUST_REV=r1     # rust:1.95-bookworm
PAUSE_REV=r1    # pause binary + image
IMAGES_REV=r1   # archives: how they are built and named

RUST_IMAGE_VERSION=1.95
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${RAFTKV_CACHE:-$HOME/.cache/raftkv}
IMG_CACHE=$CACHE/images
# Private buildah storage, kept in the cache rather than a per-run state dir: the rust build image
# (1.2 GB), the layer cache and the cargo cache mounts are what make a second build fast. Nothing of
# it touches /var/lib/containers or another engine. Its runroot (locks, mount counts) goes to /run,
# one per storage: two storages must never share one.
STORAGE=$IMG_CACHE/buildah/storage
RUNROOT=/run/raftkv-images/$(printf '%s' "$STORAGE" | sha256sum | cut -c1-16)
# buildah keeps RUN --mount=type=cache directories under $TMPDIR (default /var/tmp).
BUILDAH_TMP=$IMG_CACHE/buildah/tmp
K8S_TARBALL=$CACHE/k8s-1.20.2-src/kubernetes_1.20.5+really1.20.2.orig.tar.gz
PAUSE_SRC=kubernetes-1.20.2/build/pause/linux/pause.c
PAUSE_TAG=k8s.gcr.io/pause:3.2
APT_PKGS=(buildah runc debootstrap gcc libc6-dev binutils rsync ca-certificates)

# Progress goes to fd 3 (the original stderr), so that it still shows while a step's own
# output goes to its log file.
exec 3>&2
log() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&3; }
die() { log "ERROR: $*"; exit 1; }
USAGE=0
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2; USAGE=1; exit 2; }

TIMINGS=()
LOGS=$IMG_CACHE/logs
STEP_NAME="" STEP_LOG="" STEP_BEAT="" STEP_T=0
# step NAME CMD...: runs CMD in this shell, its output in $LOGS/<name>.log, with a start line, a
# heartbeat every minute and its duration. Not under `||`, which would switch off set -e inside
# CMD: a failure ends the script, and the EXIT trap shows the log's tail.
step() {
  local name=$1; shift
  mkdir -p "$LOGS"
  STEP_NAME=$name STEP_T=$SECONDS
  STEP_LOG=$LOGS/$(printf '%s' "$name" | tr -c 'A-Za-z0-9.-' '_').log
  log "$name: start (log $STEP_LOG)"
  # The heartbeat must not hold a lock (fds 7-9) or stdout open after the step: its sleep would.
  ( exec 7>&- 8>&- 9>&- >/dev/null 2>&1; while sleep 60; do log "$name: still running ($(( (SECONDS - STEP_T) / 60 )) min)"; done ) &
  STEP_BEAT=$!
  "$@" > "$STEP_LOG" 2>&1
  stop_beat
  STEP_NAME=""
  log "$name: done in $((SECONDS - STEP_T)) s"
  TIMINGS+=("$(printf '%-48s %5d s' "$name" $((SECONDS - STEP_T)))")
}

stop_beat() {
  [ -n "$STEP_BEAT" ] || return 0
  pkill -P "$STEP_BEAT" 2>/dev/null || true
  kill "$STEP_BEAT" 2>/dev/null || true
  wait "$STEP_BEAT" 2>/dev/null || true
  STEP_BEAT=""
}

sha() { sha256sum "$1" | cut -d' ' -f1; }

ensure_packages() {
  local missing=() p
  for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "${RAFTKV_K8S_SKIP_APT:-0}" = 1 ] && die "missing packages: ${missing[*]}"
  log "installing apt packages: ${missing[*]}"
  # --no-install-recommends: buildah recommends podman-style extras (fuse-overlayfs, crun) that
  # are not needed here; crun cannot run containers on this machine's hybrid cgroups.
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null 2>&1 || {
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  }
}

# ---------------------------------------------------------------- buildah
bh() { TMPDIR=$BUILDAH_TMP buildah --root "$STORAGE" --runroot "$RUNROOT" --storage-driver overlay "$@"; }
# Builds never pull (there is no registry) and run RUN steps with runc in the host's network
# namespace (no CNI setup; apt and cargo reach their mirrors as the host does). Unused stages are
# skipped (buildah's default, spelled out: the prebuilt path relies on it).
bud() {
  bh bud --pull=never --runtime /usr/bin/runc --network host --isolation oci --layers --rm --force-rm \
    --skip-unused-stages=true "$@"
}
have_image() { bh inspect --type image "$1" >/dev/null 2>&1; }
image_label() { bh inspect --type image --format "{{index .OCIv1.Config.Labels \"$2\"}}" "$1" 2>/dev/null; }
image_size() { bh images --format '{{.Size}}' "$1" 2>/dev/null | head -1; }

# The working container of the moment, if any: named after this process, so that cleanup never
# removes another run's container of the same default name.
CTR=""
TMPS=()
LOCKED=0
unmount_under() { # DIR...: lazily unmounts everything below DIR, innermost first
  local d m
  for d in "$@"; do
    while read -r m; do umount -l "$m" 2>/dev/null || true; done \
      < <(findmnt -rn -o TARGET | grep -F "$d/" | sort -r)
  done
}
cleanup() {
  local status=$? d
  stop_beat
  if [ -n "$STEP_NAME" ]; then
    tail -25 "$STEP_LOG" >&3
    log "ERROR: $STEP_NAME failed after $((SECONDS - STEP_T)) s, log: $STEP_LOG"
  fi
  if [ -n "$CTR" ]; then bh rm "$CTR" >/dev/null 2>&1 || true; fi
  for d in ${TMPS[@]+"${TMPS[@]}"}; do
    # debootstrap mounts proc, sys and device files in its target: never rm -rf through a mount
    unmount_under "$d"
    rm -rf "$d"
  done
  # A killed build can leave overlay mounts of the storage behind; look only when no other run
  # uses the storage.
  if [ "$LOCKED" = 1 ] && flock -n -x 9; then unmount_under "$STORAGE" "$RUNROOT"; fi
  # the documented exit status, whatever a failed tool returned
  if [ "$status" -ne 0 ]; then
    if [ "$USAGE" = 1 ]; then exit 2; fi
    exit 1
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# mktmp: a scratch dir in $TMP, removed at exit (not in $(...): the list must be this shell's).
mktmp() { TMP=$(mktemp -d "$IMG_CACHE/tmp.XXXXXX"); TMPS+=("$TMP"); }

# setup ROLE: root, packages, the storage dirs, nice 19 for everything from here on (this is a
# 2-core machine that other builds share), and the locks. Runs of one ROLE (archives, full) take
# turns: they write the same tags and files. Every run holds the storage lock shared; pruning and
# `clean` need it alone.
setup() {
  [ "$(id -u)" = 0 ] || die "must run as root (debootstrap, buildah with runc)"
  renice -n 19 -p $$ >/dev/null
  ensure_packages
  mkdir -p "$STORAGE" "$RUNROOT" "$BUILDAH_TMP"
  exec 7>"$IMG_CACHE/.$1.lock"
  if ! flock -n 7; then log "waiting for another \`images.sh $1\` run (lock $IMG_CACHE/.$1.lock)"; flock 7; fi
  exec 9>"$IMG_CACHE/.storage.lock"
  flock -s 9
  LOCKED=1
}

# with_lock NAME CMD...: CMD while holding $IMG_CACHE/.NAME.lock (fd 8).
with_lock() {
  local name=$1; shift
  exec 8>"$IMG_CACHE/.$name.lock"
  flock 8
  "$@"
  exec 8>&-
}

# prune: removes untagged images (those of older binaries would pile up, about 400 MB per build),
# unless another run is using the storage: it may need its untagged layers.
prune() {
  if flock -n -x 9; then
    bh rmi --prune
    flock -s 9
  else
    echo "another images.sh run uses the storage: not pruning this time"
  fi
}

# ---------------------------------------------------------------- versions and inputs
# The images' version is the chart's appVersion (scripts/check-chart.sh checks that the crates
# and the Dockerfiles' version label agree with it).
chart_version() {
  local v
  v=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$REPO/charts/raftkv-operator/Chart.yaml")
  [ -n "$v" ] || die "no appVersion in charts/raftkv-operator/Chart.yaml"
  printf '%s' "$v"
}

debian_mirror() {
  if [ -n "${RAFTKV_DEBIAN_MIRROR:-}" ]; then printf '%s' "$RAFTKV_DEBIAN_MIRROR"; return; fi
  local m
  m=$(awk 'BEGIN{RS=""} NR==1' /etc/apt/sources.list.d/debian.sources 2>/dev/null | sed -n 's/^URIs: *\([^ ]*\).*/\1/p')
  [ -n "$m" ] || die "no mirror: /etc/apt/sources.list.d/debian.sources has no URIs line (set RAFTKV_DEBIAN_MIRROR)"
  printf '%s' "$m"
}

# ---------------------------------------------------------------- debian:bookworm-slim
DEBIAN_TAG=docker.io/library/debian:bookworm-slim
ROOTFS_TAR=$IMG_CACHE/debian-bookworm-minbase-$DEBIAN_REV.tar

# The rootfs tarball, made once per recipe revision (debootstrap takes 1-2 minutes).
ensure_rootfs() {
  [ -s "$ROOTFS_TAR" ] && [ -s "$ROOTFS_TAR.sha256" ] && return 0
  local mirror work r
  mirror=$(debian_mirror)
  mktmp; work=$TMP
  r=$work/rootfs
  log "debootstrap --variant=minbase bookworm from $mirror"
  mkdir -p "$IMG_CACHE/debootstrap-debs"
  debootstrap --variant=minbase --cache-dir="$IMG_CACHE/debootstrap-debs" bookworm "$r" "$mirror" \
    > "$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
  if findmnt -rn -o TARGET | grep -qF "$r/"; then die "debootstrap left mounts under $r"; fi
  # The same suites as the official image (updates and security too), from the host's sources;
  # debootstrap only knows the release itself. Then the updates, as the official image has them.
  rm -f "$r/etc/apt/sources.list"
  if [ -z "${RAFTKV_DEBIAN_MIRROR:-}" ]; then
    grep -v '^#' /etc/apt/sources.list.d/debian.sources > "$r/etc/apt/sources.list.d/debian.sources"
  else
    printf 'Types: deb\nURIs: %s\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$mirror" > "$r/etc/apt/sources.list.d/debian.sources"
  fi
  cp /etc/resolv.conf "$r/etc/resolv.conf"
  mount -t proc proc "$r/proc"
  chroot "$r" /bin/sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get upgrade -y -qq' \
    >> "$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; die "apt-get upgrade in the rootfs failed"; }
  umount "$r/proc"
  # Trim what an image never needs, like the official slim image: docs (copyright files stay),
  # man/info pages, translations, apt lists and caches, logs; and keep later apt installs from
  # bringing them back.
  find "$r/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$r/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$r"/usr/share/{man,info,groff,lintian,linda}/* "$r"/usr/share/locale/*
  rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/* "$r"/var/cache/debconf/*-old "$r"/var/log/* "${r:?}"/dev/*
  rm -f "$r/etc/resolv.conf" "$r/etc/hostname"
  cat > "$r/etc/dpkg/dpkg.cfg.d/slim-image" <<'EOF'
# Container image: no documentation, manuals or translations (copyright files stay).
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
  tar --numeric-owner -C "$r" -cf "$ROOTFS_TAR.tmp" .
  sha "$ROOTFS_TAR.tmp" > "$ROOTFS_TAR.sha256.tmp"
  mv -f "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
  mv -f "$ROOTFS_TAR.sha256.tmp" "$ROOTFS_TAR.sha256"
  log "rootfs: $(du -sh "$r" | cut -f1) unpacked, tarball $ROOTFS_TAR"
  rm -rf "$work"   # here, not at exit: it takes seconds on a busy disk
}

# debian:bookworm-slim in the private storage, from the cached rootfs (a few seconds).
ensure_debian_image() {
  ensure_rootfs
  local want c
  want=$(cat "$ROOTFS_TAR.sha256")
  if have_image "$DEBIAN_TAG" && [ "$(image_label "$DEBIAN_TAG" io.raftkv.base-rootfs)" = "$want" ]; then return 0; fi
  log "importing the rootfs as $DEBIAN_TAG"
  CTR=rkv-images-$$-base
  c=$(bh from --pull=never --name "$CTR" scratch)
  bh add --quiet "$c" "$ROOTFS_TAR" / >/dev/null
  bh config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd '["bash"]' \
    --label io.raftkv.base-rootfs="$want" "$c"
  bh commit --quiet --rm "$c" "$DEBIAN_TAG" >/dev/null
  CTR=""
}

# ---------------------------------------------------------------- pause
need_k8s_tarball() {
  [ -f "$K8S_TARBALL" ] || die "$K8S_TARBALL is missing: \`tests/local-k8s.sh build\` downloads it (apt-get source kubernetes)"
}
pause_key() {
  printf 'pause %s %s %s' "$PAUSE_REV" "$(basename "$K8S_TARBALL")" "$(stat -c %s "$K8S_TARBALL")"
}

ensure_pause_image() {
  local key ctx
  key=$(pause_key)
  if have_image "$PAUSE_TAG" && [ "$(image_label "$PAUSE_TAG" io.raftkv.recipe)" = "$key" ]; then return 0; fi
  mktmp; ctx=$TMP
  tar -xzf "$K8S_TARBALL" -C "$ctx" --strip-components=4 "$PAUSE_SRC" \
    || die "$PAUSE_SRC not found in $K8S_TARBALL"
  # The upstream Makefile's flags; its TAG is 3.4, kubelet 1.20 asks for pause:3.2 by default.
  gcc -Os -Wall -Werror -static -DVERSION=v3.4-k8s-1.20.2 -o "$ctx/pause" "$ctx/pause.c"
  strip "$ctx/pause"
  cat > "$ctx/Dockerfile" <<'EOF'
FROM scratch
COPY pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]
EOF
  bud --label io.raftkv.recipe="$key" -f "$ctx/Dockerfile" -t "$PAUSE_TAG" "$ctx"
}

# ---------------------------------------------------------------- archives
# archive_fresh NAME INPUTS: OUTDIR/NAME.tar exists and was made from INPUTS (NAME.tar.inputs).
archive_fresh() { [ -s "$OUT/$1.tar" ] && [ -f "$OUT/$1.tar.inputs" ] && [ "$(cat "$OUT/$1.tar.inputs")" = "$2" ]; }
# write_archive NAME IMAGE TAG INPUTS: OUTDIR/NAME.tar with IMAGE (an ID: a `full` run may move
# the tag meanwhile) tagged TAG, then NAME.tar.inputs.
write_archive() {
  local name=$1 image=$2 tag=$3 inputs=$4 f=$OUT/$1.tar
  rm -f "$f.inputs" "$f.tmp"
  # RepoTags gets the full name (docker.io/raftkv/kvnode:0.1.0), as containerd names it anyway.
  bh push --quiet "$image" "docker-archive:$f.tmp:$tag"
  mv -f "$f.tmp" "$f"
  printf '%s\n' "$inputs" > "$f.inputs"
}

# check_image IMAGE PROGRAM NAME: the runtime image's config (user 65532, entrypoint PROGRAM), and
# that PROGRAM runs as that user (the Dockerfile's own check runs as root, before USER).
check_image() {
  local image=$1 prog=$2 name=$3 got want c
  got=$(bh inspect --type image --format '{{.OCIv1.Config.User}} {{.OCIv1.Config.Entrypoint}}' "$image")
  want="65532:65532 [$prog]"
  [ "$got" = "$want" ] || die "$name: user and entrypoint are '$got', expected '$want'"
  CTR=rkv-images-$$-check
  c=$(bh from --pull=never --name "$CTR" "$image")
  bh run --runtime /usr/bin/runc --network none --user 65532:65532 "$c" -- "$prog" --help >/dev/null \
    || die "$name: $prog --help fails as user 65532"
  bh rm "$c" >/dev/null
  CTR=""
  local id=${image#sha256:}
  log "$name (${id:0:12}): user 65532:65532, entrypoint [$prog], runs as that user"
}

# inputs VERSION BINDIR: the inputs of each archive (IN_<name>), everything that changes its
# content. The base rootfs is named by its checksum, computed when it was made.
base_inputs() {
  ROOTFS=none
  if [ -s "$ROOTFS_TAR.sha256" ]; then ROOTFS=$(cat "$ROOTFS_TAR.sha256"); fi
  IN_pause="$IMAGES_REV $PAUSE_TAG $(pause_key)"
  IN_debian="$IMAGES_REV $DEBIAN_TAG rootfs=$ROOTFS"
}
inputs() {
  local version=$1 bin=$2 rootfs kv
  base_inputs
  rootfs=$ROOTFS
  kv=docker.io/raftkv/kvnode:$version
  IN_kvnode="$IMAGES_REV $kv rootfs=$rootfs dockerfile=$(sha "$REPO/docker/kvnode.Dockerfile") kvnode=$(sha "$bin/kvnode") kvctl=$(sha "$bin/kvctl")"
  IN_next="${IN_kvnode/$kv/docker.io/raftkv/kvnode-next:$version} label=io.raftkv.variant=next"
  IN_operator="$IMAGES_REV docker.io/raftkv/operator:$version rootfs=$rootfs dockerfile=$(sha "$REPO/docker/operator.Dockerfile") raftkv-operator=$(sha "$bin/raftkv-operator")"
  [ "$rootfs" != none ]
}

all_fresh() {
  archive_fresh pause "$IN_pause" && archive_fresh debian-bookworm-slim "$IN_debian" \
    && archive_fresh kvnode "$IN_kvnode" && archive_fresh kvnode-next "$IN_next" && archive_fresh operator "$IN_operator"
}

cmd_archives() {
  [ $# -eq 1 ] || usage
  OUT=$1
  mkdir -p "$OUT"
  OUT=$(cd "$OUT" && pwd)
  local version bin b t0=$SECONDS kv next op ctx iid
  version=$(chart_version)
  bin=${RAFTKV_BIN_DIR:-${CARGO_TARGET_DIR:-$CACHE/target}/debug}
  for b in kvnode kvctl raftkv-operator; do
    [ -x "$bin/$b" ] || die "$bin/$b is missing: run scripts/build.sh (or set RAFTKV_BIN_DIR)"
  done
  need_k8s_tarball
  kv=docker.io/raftkv/kvnode:$version
  next=docker.io/raftkv/kvnode-next:$version
  op=docker.io/raftkv/operator:$version

  if inputs "$version" "$bin" && all_fresh; then
    log "all archives in $OUT are up to date"
  else
    setup archives
    base_archives
    inputs "$version" "$bin"   # the rootfs may just have been made
    # The runtime stage only, with the host's binaries: BIN_FROM=prebuilt and a context that holds
    # just them (buildah skips the unused compile stage). Images are used by ID from here on.
    if ! archive_fresh kvnode "$IN_kvnode" || ! archive_fresh kvnode-next "$IN_next"; then
      mktmp; ctx=$TMP; mktmp; iid=$TMP/image.iid
      cp "$bin/kvnode" "$bin/kvctl" "$ctx/"
      step "image $kv (prebuilt)" bud --iidfile "$iid" --build-arg BIN_FROM=prebuilt \
        -f "$REPO/docker/kvnode.Dockerfile" -t "$kv" "$ctx"
      check_image "$(cat "$iid")" kvnode "$kv"
      step "archive kvnode.tar" write_archive kvnode "$(cat "$iid")" "$kv" "$IN_kvnode"
      # Same layers, its own config and so its own image ID: the rolling-upgrade scenario's second image.
      step "image $next (prebuilt)" bud --iidfile "$iid" --build-arg BIN_FROM=prebuilt \
        --label io.raftkv.variant=next -f "$REPO/docker/kvnode.Dockerfile" -t "$next" "$ctx"
      step "archive kvnode-next.tar" write_archive kvnode-next "$(cat "$iid")" "$next" "$IN_next"
    fi
    if ! archive_fresh operator "$IN_operator"; then
      mktmp; ctx=$TMP; mktmp; iid=$TMP/image.iid
      cp "$bin/raftkv-operator" "$ctx/"
      step "image $op (prebuilt)" bud --iidfile "$iid" --build-arg BIN_FROM=prebuilt \
        -f "$REPO/docker/operator.Dockerfile" -t "$op" "$ctx"
      check_image "$(cat "$iid")" raftkv-operator "$op"
      step "archive operator.tar" write_archive operator "$(cat "$iid")" "$op" "$IN_operator"
    fi
    step "prune untagged images" prune
  fi
  local name tag
  for name in pause debian-bookworm-slim kvnode kvnode-next operator; do
    tag=$(cut -d' ' -f2 "$OUT/$name.tar.inputs")
    log "$(printf '%-26s %6s  %s' "$name.tar" "$(du -h "$OUT/$name.tar" | cut -f1)" "$tag")"
    printf '%s %s\n' "$OUT/$name.tar" "$tag"
  done
  log "archives done in $((SECONDS - t0)) s"
}

cmd_base() {
  [ $# -eq 1 ] || usage
  OUT=$1
  mkdir -p "$OUT"
  OUT=$(cd "$OUT" && pwd)
  local t0=$SECONDS
  need_k8s_tarball
  setup archives
  base_archives
  log "base archives done in $((SECONDS - t0)) s"
}

# base_archives: pause.tar and debian-bookworm-slim.tar in OUT, made unless fresh (after setup).
base_archives() {
  step "debian:bookworm-slim (rootfs + import)" with_lock base ensure_debian_image
  base_inputs   # the rootfs may just have been made
  archive_fresh debian-bookworm-slim "$IN_debian" \
    || step "archive debian-bookworm-slim.tar" write_archive debian-bookworm-slim "$DEBIAN_TAG" "$DEBIAN_TAG" "$IN_debian"
  if ! archive_fresh pause "$IN_pause"; then
    step "image $PAUSE_TAG" ensure_pause_image
    step "archive pause.tar" write_archive pause "$PAUSE_TAG" "$PAUSE_TAG" "$IN_pause"
  fi
}

# ---------------------------------------------------------------- full build
RUST_TAG=docker.io/library/rust:$RUST_IMAGE_VERSION-bookworm

# rust:1.95-bookworm: debian:bookworm-slim + build tools + the host's rustup toolchain + the
# machine's CA files (cargo reaches crates.io through a TLS-intercepting proxy here).
ensure_rust_image() {
  local sysroot host ver toolchain key ctx b
  ver=$(rustc --version | cut -d' ' -f2)
  case $ver in "$RUST_IMAGE_VERSION".*) ;; *) die "host rustc is $ver, the Dockerfiles want rust:$RUST_IMAGE_VERSION" ;; esac
  sysroot=$(rustc --print sysroot)
  host=$(rustc -vV | sed -n 's/^host: //p')
  toolchain=$ver-$host
  key="rust $RUST_REV $(rustc -vV | sed -n 's/^commit-hash: //p') rootfs=$(cat "$ROOTFS_TAR.sha256")"
  if have_image "$RUST_TAG" && [ "$(image_label "$RUST_TAG" io.raftkv.recipe)" = "$key" ] \
     && [ "$(image_label "$RUST_TAG" io.raftkv.ca)" = "$(ca_sum)" ]; then
    log "$RUST_TAG is up to date"; return 0
  fi
  mktmp; ctx=$TMP
  mkdir -p "$ctx/rustup/toolchains" "$ctx/cargo/bin" "$ctx/ca"
  rsync -a --exclude share/doc "$sysroot/" "$ctx/rustup/toolchains/$toolchain/"
  printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\nauto_self_update = "disable"\n' \
    "$toolchain" > "$ctx/rustup/settings.toml"
  cp "$(command -v rustup)" "$ctx/cargo/bin/rustup"
  for b in cargo cargo-clippy cargo-fmt clippy-driver rustc rustdoc rustfmt; do ln -s rustup "$ctx/cargo/bin/$b"; done
  cp /usr/local/share/ca-certificates/*.crt "$ctx/ca/" 2>/dev/null || true
  # The CA files last: one of them is written at boot, and a change should only redo that layer.
  cat > "$ctx/Dockerfile" <<EOF
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends build-essential ca-certificates pkg-config git \\
 && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo \\
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin RUST_VERSION=$ver
COPY rustup/ /usr/local/rustup/
COPY cargo/ /usr/local/cargo/
RUN rustc --version && cargo --version
COPY ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
EOF
  bud --label io.raftkv.recipe="$key" --label io.raftkv.ca="$(ca_sum)" -f "$ctx/Dockerfile" -t "$RUST_TAG" "$ctx"
}
ca_sum() { cat /usr/local/share/ca-certificates/*.crt 2>/dev/null | sha256sum | cut -c1-16; }

cmd_full() {
  [ $# -eq 0 ] || usage
  local version t0=$SECONDS l
  version=$(chart_version)
  setup full
  step "debian:bookworm-slim (rootfs + import)" with_lock base ensure_debian_image
  step "$RUST_TAG" ensure_rust_image
  # As a user builds them: the repository root as context, the compile stage included.
  # BIN_FROM=build is the Dockerfiles' default, but buildah 1.28 does not resolve an ARG's default
  # in FROM to a stage name ("build: image not known"): it has to be given.
  mktmp
  step "raftkv/kvnode:$version (compile stage)" bud --iidfile "$TMP/kvnode.iid" --build-arg BIN_FROM=build \
    -f "$REPO/docker/kvnode.Dockerfile" -t "docker.io/raftkv/kvnode:$version" "$REPO"
  check_image "$(cat "$TMP/kvnode.iid")" kvnode "raftkv/kvnode:$version"
  step "raftkv/operator:$version (compile stage)" bud --iidfile "$TMP/operator.iid" --build-arg BIN_FROM=build \
    -f "$REPO/docker/operator.Dockerfile" -t "docker.io/raftkv/operator:$version" "$REPO"
  check_image "$(cat "$TMP/operator.iid")" raftkv-operator "raftkv/operator:$version"
  log "summary (total $((SECONDS - t0)) s):"
  for l in "${TIMINGS[@]}"; do log "  $l"; done
  log "  $(printf '%-48s %s' "$DEBIAN_TAG" "$(image_size "$DEBIAN_TAG")")"
  log "  $(printf '%-48s %s' "$RUST_TAG" "$(image_size "$RUST_TAG")")"
  log "  $(printf '%-48s %s' "raftkv/kvnode:$version" "$(image_size "$(cat "$TMP/kvnode.iid")")")"
  log "  $(printf '%-48s %s' "raftkv/operator:$version" "$(image_size "$(cat "$TMP/operator.iid")")")"
}

cmd_clean() {
  [ $# -eq 0 ] || usage
  [ "$(id -u)" = 0 ] || die "must run as root"
  [ -d "$IMG_CACHE" ] || { log "nothing to remove"; return 0; }
  exec 9>"$IMG_CACHE/.storage.lock"
  flock -n -x 9 || die "another images.sh run is using $STORAGE"
  if findmnt -rn -o TARGET | grep -qE "^($STORAGE|$RUNROOT)/"; then die "something is still mounted under $STORAGE"; fi
  rm -rf "$IMG_CACHE" "$RUNROOT"
  log "removed $IMG_CACHE and $RUNROOT"
}

case ${1:-} in
  archives) shift; cmd_archives "$@" ;;
  base) shift; cmd_base "$@" ;;
  packages) [ "$(id -u)" = 0 ] || die "must run as root"; ensure_packages ;;
  full) shift; cmd_full "$@" ;;
  clean) shift; cmd_clean "$@" ;;
  *) usage ;;
esac
