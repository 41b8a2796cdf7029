# syntax=docker/dockerfile:1
# The production service in a container: `mintgate serve`, nothing else (no simulator, no demo, no
# benchmarks: those live in the mintgate-lab crate and are not built here).
#
#   docker build -t mintgate .
#   docker run -d --name mintgate -p 8080:8080 -v mintgate-state:/var/lib/mintgate \
#     --env-file mintgate.env mintgate
#
# State (the SQLite database and the local archive) lives in the volume /var/lib/mintgate; secrets
# come from the environment (README, "Deployment").

# --- build: the Rust toolchain, discarded after the build -------------------------------------------
FROM rust:1.95-bookworm AS build
WORKDIR /src
# The whole workspace: cargo reads every member's manifest, even to build one package.
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
# Caches keep the registry and the build folder between builds; the binary is copied out of the
# cached target folder in the same step, since a cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p mintgate --bin mintgate \
    && install -D -m 0755 target/release/mintgate /out/mintgate \
    && install -d -m 0700 /out/state

# --- runtime: glibc, libgcc, CA certificates and a non-root user; no shell, no package manager ------
# Debian 12 like the build stage, so the binary finds the glibc it was linked against.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/mintgate /usr/local/bin/mintgate
# The state folder, owned by the image's non-root user (65532, "nonroot").
COPY --from=build --chown=65532:65532 /out/state /var/lib/mintgate
USER 65532:65532
WORKDIR /var/lib/mintgate
# The default database (sqlite://mintgate.db) and archive folder (archive) are relative paths: they
# land in the volume. Inside a container the listeners must listen on every interface to be reached
# through a published port (this overrides the addresses of a mounted configuration file): 8080 is
# the public listener (webhooks), 8081 the operator listener (own API, status page, metrics): publish
# 8081 on a private network only.
ENV MINTGATE_LISTENERS__PUBLIC__ADDRESS=0.0.0.0:8080 MINTGATE_LISTENERS__OPERATOR__ADDRESS=0.0.0.0:8081
VOLUME ["/var/lib/mintgate"]
EXPOSE 8080 8081
# No HEALTHCHECK: the image holds no HTTP client to call /healthz with. Probe GET /healthz (alive)
# and GET /readyz (database reachable, workers running) from the orchestrator instead.
ENTRYPOINT ["/usr/local/bin/mintgate"]
CMD ["serve"]
