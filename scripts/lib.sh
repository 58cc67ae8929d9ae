# Shared by scripts/test and bench/run: find, start or install what they need, and be quick
# when it is present. Source it from the repository root, with `set -euo pipefail` in effect.
# See scripts/test for what each need_* function provides.

step() { printf '\n==> %s\n' "$*"; }

need_cargo() {
  if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
      export PATH="$HOME/.cargo/bin:$PATH"
    else
      echo "scripts/test: cargo is not installed; install a Rust toolchain (rustup) first" >&2
      exit 1
    fi
  fi
  # rustfmt and clippy ship as rustup components; add them when missing.
  if command -v rustup >/dev/null 2>&1; then
    cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
    cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
  fi
}

TANSU_VERSION=0.6.0
TOOL_CACHE=${FEEDGATE_TOOL_CACHE:-$HOME/.cache/feedgate}
export FEEDGATE_TANSU_BIN=$TOOL_CACHE/tansu-$TANSU_VERSION/bin/tansu

PG_URL=${FEEDGATE_TEST_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
export FEEDGATE_TEST_ADMIN_URL=$PG_URL

pg_up() { pg_isready -q -d "$PG_URL" 2>/dev/null && psql "$PG_URL" -qAtc 'select 1' >/dev/null 2>&1; }

need_postgres() {
  pg_up && return 0
  step "starting PostgreSQL"
  local installed_now=0
  if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    installed_now=1
  fi
  command -v pg_isready >/dev/null || apt-get install -y -qq postgresql-client >/dev/null
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  if [ "$installed_now" = 1 ]; then
    # A cluster this script installed, on a test machine: trust loopback connections.
    local hba=/etc/postgresql/$version/main/pg_hba.conf
    sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
    sed -i -E 's/^(local\s+all\s+postgres\s+)\S+/\1trust/' "$hba"
  fi
  mkdir -p "$TOOL_CACHE/run"
  start_daemon "$TOOL_CACHE/run/postgres-start.log" \
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 60); do pg_up && return 0; sleep 0.5; done
  echo "scripts/test: PostgreSQL did not come up at $PG_URL" >&2
  exit 1
}

# A private PostgreSQL cluster with wal_level = logical, for the logical-capture tests: never the
# machine's own server. initdb from the machine's newest PostgreSQL binaries into
# $FEEDGATE_LOGICAL_PGDATA (as the postgres user when run as root: initdb refuses root, and
# root's home is closed to other users), port 55432 on 127.0.0.1, trust auth. Reused between
# runs; `bash -c 'source scripts/lib.sh && stop_logical_postgres'` stops it.
LOGICAL_PORT=55432
export FEEDGATE_TEST_LOGICAL_URL=${FEEDGATE_TEST_LOGICAL_URL:-postgres://postgres@127.0.0.1:$LOGICAL_PORT/postgres}

logical_pg_bin() { ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1; }

# Where a private cluster keeps its data: $1 when set (an override variable's value), else
# /var/lib/postgresql/$2 as root (the postgres user must reach it), else $TOOL_CACHE/$3.
private_pgdata() {
  if [ -n "$1" ]; then echo "$1"
  elif [ "$(id -u)" = 0 ]; then echo "/var/lib/postgresql/$2"
  else echo "$TOOL_CACHE/$3"; fi
}

logical_pgdata() { private_pgdata "${FEEDGATE_LOGICAL_PGDATA:-}" feedgate-logical pg-logical; }
bench_logical_pgdata() {
  private_pgdata "${FEEDGATE_BENCH_LOGICAL_PGDATA:-}" feedgate-bench-logical pg-bench-logical
}

answers() { psql "$1" -qAtc 'select 1' >/dev/null 2>&1; }

as_pg_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Starts the private cluster $2 (data directory) answering at $3 (URL), described as $1 in
# messages; made first with initdb and the postgresql.conf lines of $4 when it does not exist.
need_private_postgres() {
  local what=$1 data=$2 url=$3 conf=$4 bin
  answers "$url" && return 0
  need_postgres
  bin=$(logical_pg_bin)
  if [ ! -f "$data/PG_VERSION" ]; then
    step "creating $what in $data"
    mkdir -p "$data"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$data"
    as_pg_owner "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --no-instructions >/dev/null
    printf "listen_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\n%s\n" "$data" "$conf" \
      >>"$data/postgresql.conf"
  fi
  step "starting $what"
  as_pg_owner "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 start >/dev/null
  for _ in $(seq 1 60); do answers "$url" && return 0; sleep 0.5; done
  echo "$what did not come up at $url" >&2
  exit 1
}

stop_private_postgres() {
  local data=$1
  [ -f "$data/postmaster.pid" ] || return 0
  as_pg_owner "$(logical_pg_bin)/pg_ctl" -D "$data" -m fast -w stop >/dev/null
}

need_logical_postgres() {
  # For the test that restarts the cluster (tests/capture.rs).
  export FEEDGATE_TEST_LOGICAL_PGDATA FEEDGATE_TEST_PG_BIN
  FEEDGATE_TEST_LOGICAL_PGDATA=$(logical_pgdata)
  FEEDGATE_TEST_PG_BIN=$(logical_pg_bin)
  # Logical decoding, many slots, a small WAL reserve so that slot invalidation is quick to
  # provoke, no fsync (test data only).
  need_private_postgres "the tests' private PostgreSQL cluster (wal_level = logical)" \
    "$FEEDGATE_TEST_LOGICAL_PGDATA" "$FEEDGATE_TEST_LOGICAL_URL" "port = $LOGICAL_PORT
wal_level = logical
max_replication_slots = 40
max_wal_senders = 40
max_slot_wal_keep_size = 64MB
max_connections = 300
fsync = off
synchronous_commit = on
track_commit_timestamp = on"
}

stop_logical_postgres() { stop_private_postgres "$(logical_pgdata)"; }

# The benchmark's PostgreSQL cluster with wal_level = logical (bench/run, cost and commit
# scenarios): like the tests' private cluster above, but durable as a production database is
# (fsync and synchronous_commit on), so that the cost to writers is not flattered, and with
# nothing else running on it, so that WAL volume per transaction can be read off
# pg_current_wal_lsn(). Port 55433, data in $FEEDGATE_BENCH_LOGICAL_PGDATA; reused between runs;
# `bash -c 'source scripts/lib.sh && stop_bench_logical_postgres'` stops it.
BENCH_LOGICAL_PORT=55433
export FEEDGATE_BENCH_LOGICAL_URL=${FEEDGATE_BENCH_LOGICAL_URL:-postgres://postgres@127.0.0.1:$BENCH_LOGICAL_PORT/postgres}

need_bench_logical_postgres() {
  need_private_postgres "the benchmark's PostgreSQL cluster (wal_level = logical, fsync on)" \
    "$(bench_logical_pgdata)" "$FEEDGATE_BENCH_LOGICAL_URL" "port = $BENCH_LOGICAL_PORT
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
max_connections = 300
shared_buffers = 256MB
fsync = on
synchronous_commit = on"
}

stop_bench_logical_postgres() { stop_private_postgres "$(bench_logical_pgdata)"; }

# pgbench from the machine's PostgreSQL (PATH, else the newest installed); exports
# FEEDGATE_BENCH_PGBENCH.
need_pgbench() {
  local found
  found=$(command -v pgbench || echo "$(logical_pg_bin)/pgbench")
  if [ ! -x "$found" ]; then
    echo "bench/run: pgbench not found (it ships with PostgreSQL's packages)" >&2
    exit 1
  fi
  export FEEDGATE_BENCH_PGBENCH=$found
}

# Databases left behind by tests that panicked (on the private logical cluster too, when it
# runs: their replication slots first, which would otherwise keep WAL and block the drop).
sweep_test_databases() {
  local url
  for url in "$PG_URL" "$FEEDGATE_TEST_LOGICAL_URL"; do
    psql "$url" -qAtc 'select 1' >/dev/null 2>&1 || continue
    # A slot still streamed (by a server a failed test left running) is freed first.
    for _ in 1 2 3; do
      psql "$url" -qAtc "select pg_terminate_backend(active_pid) from pg_replication_slots
                         where database like 'feedgate\_test\_%' and active_pid is not null" >/dev/null
      psql "$url" -qAtc "select pg_drop_replication_slot(slot_name) from pg_replication_slots
                         where database like 'feedgate\_test\_%' and not active" >/dev/null 2>&1 || true
    done
    psql "$url" -qAtc "select datname from pg_database where datname like 'feedgate\_test\_%'" |
      while read -r db; do psql "$url" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null; done
  done
}

rabbit_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && rabbitmqctl -q await_startup >/dev/null 2>&1; }

need_rabbitmq() {
  [ -n "${FEEDGATE_TEST_AMQP_URL:-}" ] && return 0
  rabbit_up && return 0
  step "starting RabbitMQ"
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
  fi
  # A node stopped with stop_app is started with start_app; a stopped server with -detached.
  mkdir -p "$TOOL_CACHE/run"
  start_daemon "$TOOL_CACHE/run/rabbitmq-start.log" rabbitmqctl -q start_app ||
    start_daemon "$TOOL_CACHE/run/rabbitmq-start.log" rabbitmq-server -detached
  for _ in $(seq 1 120); do rabbit_up && return 0; sleep 0.5; done
  echo "scripts/test: RabbitMQ did not come up on 127.0.0.1:5672" >&2
  exit 1
}


CARGO_FUZZ_VERSION=0.13.2

# cargo-fuzz (crates.io), installed once with `cargo install` into $TOOL_CACHE; puts it on PATH.
need_cargo_fuzz() {
  local root=$TOOL_CACHE/cargo-fuzz-$CARGO_FUZZ_VERSION
  if [ ! -x "$root/bin/cargo-fuzz" ]; then
    step "installing cargo-fuzz $CARGO_FUZZ_VERSION (cached in $TOOL_CACHE)"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$root"
  fi
  export PATH="$root/bin:$PATH"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Daemons must not keep a descriptor of this script's: one holding its output pipe would keep a
# reader of our output (CI's log) waiting for EOF forever. close_fds closes all but 0-2.
close_fds() {
  local fd n
  for fd in /proc/$BASHPID/fd/*; do
    n=${fd##*/}
    if [ "$n" -gt 2 ] 2>/dev/null; then eval "exec $n>&-" 2>/dev/null; fi
  done
}

# Runs a command that starts a daemon and returns, with only /dev/null and a log as its stdio.
start_daemon() {
  local log=$1
  shift
  (close_fds; exec "$@" </dev/null >>"$log" 2>&1)
}

# Starts "$@" as a daemon of its own: the subshell becomes the process (exec), in a new session.
spawn_daemon() {
  local dir=$1 log=$2
  shift 2
  (close_fds; cd "$dir" && exec setsid "$@" </dev/null >>"$log" 2>&1) &
}

need_kafka() {
  if [ -n "${FEEDGATE_TEST_KAFKA:-}" ]; then return 0; fi
  export FEEDGATE_TEST_KAFKA=127.0.0.1:9092
  if [ ! -x "$FEEDGATE_TANSU_BIN" ]; then
    step "building tansu $TANSU_VERSION (Kafka-protocol broker; cached in $TOOL_CACHE)"
    cargo install tansu --version "$TANSU_VERSION" --features dynostore --locked \
      --root "$TOOL_CACHE/tansu-$TANSU_VERSION"
  fi
  port_open 9092 && return 0
  step "starting tansu on 127.0.0.1:9092"
  mkdir -p "$TOOL_CACHE/run"
  spawn_daemon "$TOOL_CACHE/run" "$TOOL_CACHE/run/tansu.log" "$FEEDGATE_TANSU_BIN" broker \
    --listener-url tcp://127.0.0.1:9092 --advertised-listener-url tcp://127.0.0.1:9092 \
    --storage-engine memory://tansu/
  for _ in $(seq 1 60); do port_open 9092 && return 0; sleep 0.5; done
  echo "scripts/test: tansu did not start; see $TOOL_CACHE/run/tansu.log" >&2
  exit 1
}

# A virtualenv under $TOOL_CACHE named NAME-<hash of KEY_FILE>, made once with `pip install
# PIP_ARGS...`; sets VENV to its path. A virtualenv cannot be moved (its scripts name their
# interpreter's path): it is made in place, and a marker says it was completed.
# Usage: cached_venv NAME KEY_FILE DESCRIPTION PIP_ARGS...
cached_venv() {
  local name=$1 key_file=$2 what=$3
  shift 3
  VENV=$TOOL_CACHE/$name-$(sha256sum "$key_file" | cut -c1-16)
  [ -e "$VENV/.complete" ] && return 0
  step "creating $what (cached in $VENV)"
  command -v python3 >/dev/null || apt-get install -y -qq python3 python3-venv >/dev/null
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q "$@"
  touch "$VENV/.complete"
}

# The Python client's test environment; sets PY_ENV.
need_python_env() {
  cached_venv python clients/python/pyproject.toml "the Python client's test environment" \
    hatchling './clients/python[test]'
  PY_ENV=$VENV
  # The package itself, from this checkout, as a user would install it.
  "$PY_ENV/bin/pip" install -q --no-deps --no-build-isolation --force-reinstall ./clients/python
}

need_chromium() {
  [ -n "${CHROMIUM_PATH:-}" ] && return 0
  [ -x /usr/bin/chromium ] && return 0
  step "installing Chromium (Debian's package) for the TypeScript client's browser test"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
}

need_node_modules() {
  if ! command -v npm >/dev/null 2>&1; then
    step "installing Node.js and npm"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  fi
  local stamp=clients/typescript/node_modules/.feedgate-lock
  local hash
  hash=$(sha256sum clients/typescript/package-lock.json | cut -c1-16)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$hash" ]; then
    step "installing the TypeScript client's dependencies (npm install, as locked)"
    (cd clients/typescript && npm install --no-save --no-audit --no-fund --ignore-scripts)
    echo "$hash" >"$stamp"
  fi
}

need_nats_server() {
  command -v nats-server >/dev/null 2>&1 && return 0
  step "installing nats-server (Debian's package) for the benchmark"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null
}

# The Python benchmark peer's virtualenv (bench/peers/python); exports FEEDGATE_BENCH_PYTHON.
need_bench_python() {
  cached_venv bench-python bench/peers/python/requirements.txt "the Python peer's virtualenv" \
    -r bench/peers/python/requirements.txt
  export FEEDGATE_BENCH_PYTHON=$VENV/bin/python
}

need_fonts() {
  [ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] && return 0
  step "installing fonts-dejavu-core (the charts' text)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-dejavu-core >/dev/null
}
