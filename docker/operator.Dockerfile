# raftkv/operator: the KvCluster operator.
# Build from the repository root (the whole workspace is the build context):
#   docker build -f docker/operator.Dockerfile -t raftkv/operator:0.1.0 .
# Or only the runtime stage, with raftkv-operator built elsewhere for
# bookworm's glibc (CI, tests/real-node/images.sh), DIR holding just it:
#   docker build -f docker/operator.Dockerfile --build-arg BIN_FROM=prebuilt -t raftkv/operator:0.1.0 DIR
# (No "# syntax=" line: it makes BuildKit pull a frontend image.)

# Where the runtime stage gets /out/raftkv-operator: "build" compiles it;
# "prebuilt" copies it from the context. The unused stage is skipped.
ARG BIN_FROM=build

FROM rust:1.95-bookworm AS build
# The operator does not link RocksDB (it talks to nodes over HTTP through
# kvclient) and uses rustls, so the plain rust image has all it needs.
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p raftkv-operator \
 && install -D -m 0755 target/release/raftkv-operator /out/raftkv-operator

FROM scratch AS prebuilt
COPY raftkv-operator /out/

FROM ${BIN_FROM} AS bin

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 raftkv \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin raftkv
COPY --from=bin /out/raftkv-operator /usr/local/bin/raftkv-operator
# Fails the build here, not at run time, if a shared library is missing.
RUN raftkv-operator --help > /dev/null
LABEL org.opencontainers.image.title="raftkv operator" \
      org.opencontainers.image.description="Kubernetes operator for raftkv KvClusters" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 65532:65532
# Metrics and /healthz (the chart passes --metrics-addr 0.0.0.0:8080).
EXPOSE 8080
ENTRYPOINT ["raftkv-operator"]
CMD ["run"]
