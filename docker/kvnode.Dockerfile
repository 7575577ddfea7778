# raftkv/kvnode: the replicated key-value node, and kvctl (the operator's
# backup Jobs run it from this image against a PVC).
# Build from the repository root (the whole workspace is the build context):
#   docker build -f docker/kvnode.Dockerfile -t raftkv/kvnode:0.1.0 .
# Or only the runtime stage, with kvnode and kvctl built elsewhere for
# bookworm's glibc (CI, tests/real-node/images.sh), DIR holding just them:
#   docker build -f docker/kvnode.Dockerfile --build-arg BIN_FROM=prebuilt -t raftkv/kvnode:0.1.0 DIR
# (No "# syntax=" line: it makes BuildKit pull a frontend image. RUN --mount
# needs BuildKit, whose built-in frontend has it; buildah has it too.)

# Where the runtime stage gets /out/kvnode and /out/kvctl: "build" compiles
# them; "prebuilt" copies them from the context. The unused stage is skipped.
ARG BIN_FROM=build

FROM rust:1.95-bookworm AS build
# The rocksdb crate generates its bindings with bindgen at build time (libclang)
# and compiles RocksDB's C++ sources (g++ is in the rust image).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libclang-dev clang \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The target dir is a cache mount (RocksDB alone takes many minutes to build),
# so the binary is copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p kvnode -p kvctl \
 && install -D -m 0755 target/release/kvnode /out/kvnode \
 && install -D -m 0755 target/release/kvctl /out/kvctl

FROM scratch AS prebuilt
COPY kvnode kvctl /out/

FROM ${BIN_FROM} AS bin

FROM debian:bookworm-slim
# RocksDB is C++: the binary links libstdc++ dynamically.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libstdc++6 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 raftkv \
 && useradd --system --uid 65532 --gid 65532 --home-dir /var/lib/raftkv --no-create-home \
      --shell /usr/sbin/nologin raftkv \
 && install -d -o 65532 -g 65532 -m 0750 /var/lib/raftkv
COPY --from=bin /out/kvnode /out/kvctl /usr/local/bin/
# Fails the build here, not at run time, if a shared library is missing.
RUN kvnode --help > /dev/null && kvctl --help > /dev/null
LABEL org.opencontainers.image.title="raftkv kvnode" \
      org.opencontainers.image.description="raftkv replicated key-value node" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
# Same as --data-dir; the operator passes its own flags and mounts a PVC here.
ENV KVNODE_DATA_DIR=/var/lib/raftkv
USER 65532:65532
WORKDIR /var/lib/raftkv
# 7379: client + admin HTTP (API, /healthz, /readyz, /metrics); 7380: raft peer RPC.
EXPOSE 7379 7380
VOLUME ["/var/lib/raftkv"]
ENTRYPOINT ["kvnode"]
