# costsim-breaker image: docker build -t costsim-breaker .
# (docker-compose.yml builds it as the `processor` and `demo-producer` services.)

FROM rust:1.95-bookworm AS builder
# rdkafka builds librdkafka from source with CMake; the C toolchain is in the image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# migrations/ and schemas/ are embedded at compile time (sqlx::migrate!, include_str!).
RUN cargo build --release --locked \
 && cp target/release/costsim-breaker /usr/local/bin/costsim-breaker

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin costsim
COPY --from=builder /usr/local/bin/costsim-breaker /usr/local/bin/costsim-breaker
USER costsim
# `run`'s metrics and health listener; set COSTSIM_HTTP_ADDR=0.0.0.0:9464 to reach it from outside the container
# (the default, 127.0.0.1:9464, is the container's own loopback).
EXPOSE 9464
ENTRYPOINT ["costsim-breaker"]
CMD ["run"]
