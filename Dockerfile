# cohort-bridge as a container: a builder stage, then the binary alone on a distroless runtime
# (glibc, CA certificates, a non-root user; no shell, no package manager).
#
#   docker build -t cohort-bridge --build-arg COHORT_BRIDGE_COMMIT=$(git rev-parse --short=12 HEAD) .
#   docker run --rm -v "$PWD":/work -e BRAZE_PARTNER_API_KEY -e BRAZE_CLIENT_SECRET \
#       cohort-bridge sync --all
#
# `--build-arg FEATURES=ballista` builds the image a Ballista cluster runs: the client
# (`--engine ballista://…`) and `cohort-bridge cluster scheduler|executor`, one binary for every
# role (deploy/docker-compose.yml, deploy/k8s/). The default builds no optional feature.
#
# The project folder is mounted at /work (the working directory): cohort-bridge.toml, queries/,
# and a local lake or state area if they are folders. Checked by tests/it/packaging.rs.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
# jemalloc (the allocator) is built from source with make.
RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# `--version` names the commit; the build context carries no .git.
ARG COHORT_BRIDGE_COMMIT=unknown
ENV COHORT_BRIDGE_COMMIT=${COHORT_BRIDGE_COMMIT}
# Cargo features, comma-separated (e.g. `ballista`); empty: the default build.
ARG FEATURES=""
RUN cargo build --release --locked --bin cohort-bridge ${FEATURES:+--features "$FEATURES"} \
    && strip target/release/cohort-bridge

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/cohort-bridge /usr/local/bin/cohort-bridge
USER nonroot
WORKDIR /work
ENTRYPOINT ["/usr/local/bin/cohort-bridge"]
CMD ["--help"]
