# Builds the ingestion service. Context: the repository root.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p ingestion --bin cce-ingestion

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/cce-ingestion /usr/local/bin/cce-ingestion
USER 65532
ENTRYPOINT ["/usr/local/bin/cce-ingestion"]
