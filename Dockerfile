# syntax=docker/dockerfile:1
# Vision Node container image: a multi-stage build, run as a non-root user with
# the data directory on a volume.
#
#   docker build -t vision-node .
#   docker run -d -p 7070:7070 -p 7072:7072 -v vision-data:/data vision-node --mine
#
# Every setting is an environment variable (VISION_*, see `vision-node --help`) or
# a flag after the image name; a config file can be mounted and named with
# VISION_CONFIG. `docker compose up` (compose.yaml) starts a five-node cluster.

# --- build stage -----------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p vision-node -p vision-ctl \
 && install -m 0755 target/release/vision-node target/release/vision-ctl /usr/local/bin/

# --- runtime stage ---------------------------------------------------------------
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 vision \
 && useradd --system --uid 10001 --gid vision --home-dir /data --shell /usr/sbin/nologin vision \
 && install -d -o vision -g vision -m 0700 /data
COPY --from=build /usr/local/bin/vision-node /usr/local/bin/vision-ctl /usr/local/bin/
USER vision:vision
WORKDIR /data
VOLUME ["/data"]
ENV VISION_DATA_DIR=/data \
    VISION_HTTP_ADDR=0.0.0.0:7070 \
    VISION_P2P_ADDR=0.0.0.0:7072
EXPOSE 7070/tcp 7072/tcp
# Ready = backbone connected and at most one block behind (GET /readyz, 200/503).
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=4 \
  CMD curl -fsS -o /dev/null http://127.0.0.1:7070/readyz || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/vision-node"]
