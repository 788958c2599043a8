# Builds the export service. Context: the repository root.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p export --bin cce-export -p admin-cli --bin cce-admin

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/cce-export /src/target/release/cce-admin /usr/local/bin/
USER 65532
EXPOSE 50051 9102
ENTRYPOINT ["/usr/local/bin/cce-export"]
