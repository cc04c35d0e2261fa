# syntax=docker/dockerfile:1
# enclave-heap-exporter: built with the Rust toolchain, run from a distroless image as non-root.
#
#   docker build -t enclave-heap-exporter .
#   docker run --rm -p 9745:9745 enclave-heap-exporter            # one simulated enclave
#   docker build --target sim-host -t enclave-heap-sim-host .      # the example host (sidecar demo)
#
# The final image holds the binary and glibc (distroless `cc`): no shell, no package manager. It
# runs as 65532:65532 (distroless `nonroot`) and listens on 9745. Set VERSION and REVISION for the
# labels and for enclave_heap_exporter_build_info, e.g.
#   docker build --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse --short=12 HEAD)" .

# The toolchain CI uses (the workspace needs at least Rust 1.85), on bookworm: the binary links
# against glibc, and distroless cc-debian12 carries bookworm's.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
# build.rs cannot ask git inside the build (.git is not in the context): pass the revision in.
ARG REVISION=unknown
ENV ENCLAVE_HEAP_EXPORTER_REVISION=${REVISION} \
    CARGO_TERM_COLOR=never
COPY . .
# Cache mounts keep the registry and the target directory between builds; the binary is copied
# out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p enclave-heap-exporter \
    && mkdir -p /out \
    && cp target/release/enclave-heap-exporter /out/

# The example host process (crates/enclave-heap-host/examples/sim-host.rs) for the Kubernetes
# example in deploy/kubernetes/; built only for `--target sim-host`.
FROM build AS build-sim-host
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p enclave-heap-host --example sim-host \
    && cp target/release/examples/sim-host /out/

FROM gcr.io/distroless/cc-debian12:nonroot AS sim-host
COPY --from=build-sim-host /out/sim-host /usr/local/bin/sim-host
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/sim-host"]

# The default target: the exporter.
FROM gcr.io/distroless/cc-debian12:nonroot AS exporter
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="enclave-heap-exporter" \
      org.opencontainers.image.description="Prometheus exporter for Open Enclave SGX enclave heaps (oe_allocator_mallinfo)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0" \
      org.opencontainers.image.source="https://example.invalid/enclave-heap-exporter" \
      org.opencontainers.image.url="https://example.invalid/enclave-heap-exporter" \
      org.opencontainers.image.documentation="https://example.invalid/enclave-heap-exporter#readme" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=build /out/enclave-heap-exporter /usr/local/bin/enclave-heap-exporter
USER 65532:65532
EXPOSE 9745
ENTRYPOINT ["/usr/local/bin/enclave-heap-exporter"]
