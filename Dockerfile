# costsim-breaker image: docker build -t costsim-breaker .
# (docker-compose.yml builds it as the `processor` and `demo-producer` services.)

FROM rust:1.95-bookworm AS builder
# rdkafka builds librdkafka from source (the C toolchain is in the image) and links Debian's OpenSSL (TLS, SASL
# SCRAM and OAUTHBEARER) and libcurl (OAUTHBEARER's OIDC token fetch); zstd is compiled in.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake pkg-config libssl-dev libcurl4-openssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# migrations/ and schemas/ are embedded at compile time (sqlx::migrate!, include_str!).
RUN cargo build --release --locked \
 && cp target/release/costsim-breaker /usr/local/bin/costsim-breaker

FROM debian:bookworm-slim
# libssl3 and libcurl4: the libraries librdkafka was linked against; ca-certificates: the system CAs TLS to Kafka,
# PostgreSQL (sslrootcert=system) and Alertmanager trust.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 libcurl4 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin costsim
COPY --from=builder /usr/local/bin/costsim-breaker /usr/local/bin/costsim-breaker
USER costsim
# `run`'s metrics, health and API listener, on every interface of the container (outside a container the default
# is 127.0.0.1:9464).
ENV COSTSIM_HTTP_ADDR=0.0.0.0:9464
EXPOSE 9464
ENTRYPOINT ["costsim-breaker"]
CMD ["run"]
