# syntax=docker/dockerfile:1
# The operator image: a static (musl) binary on distroless/static, non-root.
#   docker build -t lockkeeper:0.1.0 .

FROM rust:1-alpine AS build
# ring and the vendored C dependencies need a C toolchain; alpine's is musl.
RUN apk add --no-cache musl-dev
WORKDIR /src
# Dependencies first, so a source-only change reuses their layer.
COPY Cargo.toml Cargo.lock ./
# Cargo.toml names the integration test's path; an empty stand-in satisfies
# it (tests are not part of the image build).
RUN mkdir -p src tests/integration && touch src/main.rs src/lib.rs tests/integration/main.rs \
    && cargo fetch --locked \
    && rm src/main.rs src/lib.rs
COPY src ./src
RUN cargo build --release --locked --bin lockkeeper \
    && cp target/release/lockkeeper /lockkeeper \
    && /lockkeeper --version

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /lockkeeper /usr/local/bin/lockkeeper
# 65532 is distroless's nonroot user; the chart runs as it too.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/lockkeeper"]
CMD ["run"]
