# bosun's container image: a distroless, non-root image holding only the binary.
# Build: docker build -t ghcr.io/bosun-dev/bosun:0.1.0 .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The operator only: no simulators, no default token, no crash points (see Cargo.toml features).
RUN cargo build --release --locked --no-default-features --bin bosun

# distroless/cc has glibc and CA certificates, and runs as uid 65532 ("nonroot").
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/bosun /usr/local/bin/bosun
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/bosun"]
CMD ["run"]
