# Build:  docker build -t jobq .
# Run:    docker run -e DATABASE_URL=postgres://user:pass@host:5432/jobq -p 8080:8080 jobq

# ---- build stage ----
FROM rust:1.95-bookworm AS builder
WORKDIR /app
# Also set in .cargo/config.toml: sqlx checks queries against the committed .sqlx/ data,
# never against a live database (there is none during `docker build`).
ENV SQLX_OFFLINE=true

# 1. Dependencies only, built against stub sources: this layer is reused until
#    Cargo.toml, Cargo.lock, .cargo/ or vendor/ change. vendor/ holds the patched sqlx-core
#    that Cargo.toml's [patch.crates-io] points at (see vendor/README.md): without it cargo
#    cannot even read the manifest.
COPY Cargo.toml Cargo.lock ./
COPY .cargo ./.cargo
COPY vendor ./vendor
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src

# 2. jobq itself. sqlx.toml, .sqlx/ and migrations/ are read at compile time
#    (query macros, embedded migrations; build.rs reruns the build when migrations/ changes).
#    `touch` makes the real sources newer than the stub build so that cargo recompiles the
#    jobq crate.
COPY build.rs sqlx.toml ./
COPY .sqlx ./.sqlx
COPY migrations ./migrations
COPY src ./src
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked

# ---- runtime stage ----
FROM debian:bookworm-slim
# TLS uses rustls with bundled webpki roots; ca-certificates is there for anything that reads
# the system store (and for curl). curl serves the compose healthcheck (GET /readyz).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*

# Unprivileged user with a writable home for the .eml outbox (used when no SMTP URL is set).
RUN groupadd --system --gid 10001 jobq \
 && useradd --system --uid 10001 --gid jobq --home-dir /var/lib/jobq --shell /usr/sbin/nologin jobq \
 && install -d -o jobq -g jobq /var/lib/jobq /var/lib/jobq/mail-outbox

COPY --from=builder /app/target/release/jobq /usr/local/bin/jobq

# The default listen address (127.0.0.1) is unreachable from outside a container.
ENV JOBQ_LISTEN=0.0.0.0:8080 \
    JOBQ_MAIL_DIR=/var/lib/jobq/mail-outbox \
    JOBQ_LOG_FORMAT=json

WORKDIR /var/lib/jobq
USER 10001:10001
EXPOSE 8080
# jobq is PID 1 and handles SIGTERM itself: running jobs get JOBQ_SHUTDOWN_GRACE (10 s) to finish.
ENTRYPOINT ["jobq"]
CMD ["serve"]
