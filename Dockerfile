# syntax=docker/dockerfile:1
# enclave-heap-exporter: build with the Rust toolchain, run from a distroless image as non-root.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p enclave-heap-exporter

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/enclave-heap-exporter /usr/local/bin/enclave-heap-exporter
EXPOSE 9745
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/enclave-heap-exporter"]
