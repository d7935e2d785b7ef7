# shellcheck shell=bash disable=SC2034  # (variables here are used by the scripts sourcing this)
# dev/lib.sh — shared settings and helpers for the local-development stack scripts in dev/.
# Sourced (not run) by dev/install, dev/up, dev/down, dev/status and dev/kafka-tool.
#
# Everything runs as plain processes on 127.0.0.1 (no Docker). Overridable environment:
#   MAILSTREAM_CACHE   installs kept across runs     (default $HOME/.cache/mailstream)
#   MAILSTREAM_STATE   runtime data, logs, pid files (default $HOME/.local/state/mailstream)
#   MAILSTREAM_KAFKA_PORT 9092, MAILSTREAM_KAFKA_CONTROLLER_PORT 9093,
#   MAILSTREAM_KAFKA_SASL_PORT 9094 (the same broker's SASL_SSL listener),
#   MAILSTREAM_REGISTRY_PORT 8081, MAILSTREAM_REGISTRY_SECURE_PORT 8082 (a second registry
#   process over the same schemas: HTTPS and basic auth), MAILSTREAM_PG_PORT 5433,
#   MAILSTREAM_TRYTON_PORT 8000, MAILSTREAM_CLAMD_PORT 3310, MAILSTREAM_MINIO_PORT 9000
#   MAILSTREAM_CLUSTER_KAFKA_PORT 19092, MAILSTREAM_CLUSTER_CONTROLLER_PORT 19192 (the
#     three-broker cluster of `dev/up --cluster`: node N listens on these + N - 1)
#   MAILSTREAM_REGISTRY_VERSION   AxonOps schema-registry module version (default v0.2.1)
#   MAILSTREAM_PG_BIN             PostgreSQL bin dir (default: newest /usr/lib/postgresql/*/bin)
# The Kafka version is the <kafka.version> in dev/kafka/pom.xml.

DEV_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO_DIR=$(dirname "$DEV_DIR")

: "${HOME:=/root}"
MAILSTREAM_CACHE=${MAILSTREAM_CACHE:-$HOME/.cache/mailstream}
MAILSTREAM_STATE=${MAILSTREAM_STATE:-$HOME/.local/state/mailstream}
MAILSTREAM_KAFKA_PORT=${MAILSTREAM_KAFKA_PORT:-9092}
MAILSTREAM_KAFKA_CONTROLLER_PORT=${MAILSTREAM_KAFKA_CONTROLLER_PORT:-9093}
MAILSTREAM_KAFKA_SASL_PORT=${MAILSTREAM_KAFKA_SASL_PORT:-9094}
MAILSTREAM_REGISTRY_PORT=${MAILSTREAM_REGISTRY_PORT:-8081}
MAILSTREAM_REGISTRY_SECURE_PORT=${MAILSTREAM_REGISTRY_SECURE_PORT:-8082}
MAILSTREAM_PG_PORT=${MAILSTREAM_PG_PORT:-5433}
MAILSTREAM_TRYTON_PORT=${MAILSTREAM_TRYTON_PORT:-8000}
MAILSTREAM_CLAMD_PORT=${MAILSTREAM_CLAMD_PORT:-3310}
MAILSTREAM_MINIO_PORT=${MAILSTREAM_MINIO_PORT:-9000}
# MinIO has no Go-version tags: this is the pseudo-version of its commit 7aac2a2c5b7c (2026-02-12).
MAILSTREAM_MINIO_VERSION=${MAILSTREAM_MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}
MAILSTREAM_REGISTRY_VERSION=${MAILSTREAM_REGISTRY_VERSION:-v0.2.1}
MAILSTREAM_CLUSTER_KAFKA_PORT=${MAILSTREAM_CLUSTER_KAFKA_PORT:-19092}
MAILSTREAM_CLUSTER_CONTROLLER_PORT=${MAILSTREAM_CLUSTER_CONTROLLER_PORT:-19192}

HOST=127.0.0.1

# --- Kafka -------------------------------------------------------------------------------------
KAFKA_POM="$DEV_DIR/kafka/pom.xml"
KAFKA_VERSION=$(sed -n 's:.*<kafka\.version>\([^<]*\)</kafka\.version>.*:\1:p' "$KAFKA_POM" | head -n1)
KAFKA_HOME="$MAILSTREAM_CACHE/kafka-$KAFKA_VERSION"
KAFKA_LIBS="$KAFKA_HOME/libs"
KAFKA_LOG4J="$DEV_DIR/kafka/log4j2.properties"
KAFKA_TOOLS_LOG4J="$DEV_DIR/kafka/log4j2-tools.properties"
KAFKA_DIR="$MAILSTREAM_STATE/kafka"
KAFKA_DATA="$KAFKA_DIR/data"
KAFKA_CONFIG="$KAFKA_DIR/server.properties"
KAFKA_BOOTSTRAP="$HOST:$MAILSTREAM_KAFKA_PORT"
# The same broker's SASL_SSL listener: TLS with a dev CA (KAFKA_TLS_DIR/ca.crt) and SCRAM-SHA-512
# for user KAFKA_SASL_USER, whose password dev/up makes once (KAFKA_SASL_PASSWORD_FILE) and
# registers with the broker (kafka-configs), so clients can be tested as they run in production.
KAFKA_SASL_BOOTSTRAP="$HOST:$MAILSTREAM_KAFKA_SASL_PORT"
KAFKA_TLS_DIR="$KAFKA_DIR/tls"
KAFKA_SASL_USER=mailstream
KAFKA_SASL_PASSWORD_FILE="$KAFKA_DIR/sasl.password"

# --- Three-broker cluster (dev/up --cluster) --------------------------------------------------
# An additional stack next to the single broker: three combined broker+controller KRaft nodes
# (node ids 1-3), components cluster-1..3, with their own state dir, logs, pids and env file.
# It shares the schema registry and PostgreSQL above (the registry keeps schemas in PostgreSQL,
# subjects are per topic and tests prefix their topics).
CLUSTER_NODES=(1 2 3)
CLUSTER_COMPONENTS=(cluster-1 cluster-2 cluster-3)
CLUSTER_DIR="$MAILSTREAM_STATE/cluster"
CLUSTER_LOG_DIR="$CLUSTER_DIR/logs"
CLUSTER_PID_DIR="$CLUSTER_DIR/pids"
CLUSTER_ENV_FILE="$CLUSTER_DIR/env"
CLUSTER_ID_FILE="$CLUSTER_DIR/cluster.id"
CLUSTER_BOOTSTRAP=$(
  for n in "${CLUSTER_NODES[@]}"; do printf '%s:%s,' "$HOST" $((MAILSTREAM_CLUSTER_KAFKA_PORT + n - 1)); done |
    sed 's/,$//'
)

cluster_port() { echo $((MAILSTREAM_CLUSTER_KAFKA_PORT + $1 - 1)); }
cluster_controller_port() { echo $((MAILSTREAM_CLUSTER_CONTROLLER_PORT + $1 - 1)); }
cluster_node_dir() { echo "$CLUSTER_DIR/node-$1"; }
cluster_config() { echo "$CLUSTER_DIR/node-$1/server.properties"; }
# The node number of a component name cluster-N (fails for other names).
cluster_node_of() { [[ $1 =~ ^cluster-([0-9]+)$ ]] && echo "${BASH_REMATCH[1]}"; }

# --- Schema registry ---------------------------------------------------------------------------
REGISTRY_MODULE=github.com/axonops/axonops-schema-registry
REGISTRY_PKG="$REGISTRY_MODULE/cmd/schema-registry"
REGISTRY_BIN="$MAILSTREAM_CACHE/bin/schema-registry"
REGISTRY_URL="http://$HOST:$MAILSTREAM_REGISTRY_PORT"
# registry-secure: the same binary and schema database (AxonOps registry instances are
# stateless over their storage), served as production secures it: TLS with a dev CA and HTTP
# basic auth for user mailstream (the registry's bootstrap admin, password made once).
REGISTRY_SECURE_DIR="$MAILSTREAM_STATE/registry-secure"
REGISTRY_SECURE_CONFIG="$REGISTRY_SECURE_DIR/config.yaml"
REGISTRY_SECURE_TLS_DIR="$REGISTRY_SECURE_DIR/tls"
REGISTRY_SECURE_USER=mailstream
REGISTRY_SECURE_PASSWORD_FILE="$REGISTRY_SECURE_DIR/password"
REGISTRY_SECURE_URL="https://$HOST:$MAILSTREAM_REGISTRY_SECURE_PORT"

# --- MinIO (S3-compatible blob store) --------------------------------------------------------
MINIO_MODULE=github.com/minio/minio
MINIO_BIN="$MAILSTREAM_CACHE/bin/minio"
MINIO_DIR="$MAILSTREAM_STATE/minio"
MINIO_DATA="$MINIO_DIR/data"
MINIO_USER=mailstream
MINIO_PASSWORD_FILE="$MINIO_DIR/password"
MINIO_BUCKET=mailstream
MINIO_URL="http://$HOST:$MAILSTREAM_MINIO_PORT"

# --- PostgreSQL --------------------------------------------------------------------------------
PG_DIR="$MAILSTREAM_STATE/postgres"
PG_DATA="$PG_DIR/data"
PG_RUN="$PG_DIR/run"
PG_OS_USER=postgres
PG_DB=mailstream
REGISTRY_DB=schema_registry
PG_ROLE=mailstream
DATABASE_URL="postgres://$PG_ROLE@$HOST:$MAILSTREAM_PG_PORT/$PG_DB"
# TLS (ssl = on, plain connections still accepted): a dev CA and a server certificate for
# 127.0.0.1 and localhost signed by it, generated once by dev/up; clients verify with PG_CA_FILE
# (exported as MAILSTREAM_PG_CA_FILE).
PG_TLS_DIR="$PG_DIR/tls"
PG_CA_FILE="$PG_TLS_DIR/ca.crt"

# --- Tryton (an open-source CRM/ERP, GPL; the crm-sink's `tryton` backend is tested on it) ------
# trytond and the party, company and sale_opportunity modules from PyPI in a venv. dev/install
# also builds an initialised SQLite database once (modules activated, a company with its
# currency and employee, the admin user in it, a REST user-application key): activation takes
# about a minute, so dev/up copies that template into the state dir instead of redoing it.
TRYTON_SERIES=8.2
TRYTON_REQUIREMENTS="trytond==$TRYTON_SERIES.* trytond-party==$TRYTON_SERIES.* trytond-company==$TRYTON_SERIES.* trytond-sale-opportunity==$TRYTON_SERIES.*"
TRYTON_VENV="$MAILSTREAM_CACHE/tryton-$TRYTON_SERIES"
TRYTON_TEMPLATE="$TRYTON_VENV/template"
TRYTON_DB=mailstream
TRYTON_DIR="$MAILSTREAM_STATE/tryton"
TRYTON_CONFIG="$TRYTON_DIR/trytond.conf"
TRYTON_URL="http://$HOST:$MAILSTREAM_TRYTON_PORT"
# the REST user-application key (Authorization: Bearer ...), exported as MAILSTREAM_TRYTON_KEY
TRYTON_KEY_FILE="$TRYTON_DIR/rest.key"

# write_tryton_config DIR PORT FILE — trytond's configuration: SQLite databases in DIR, the web
# listener (JSON-RPC and REST) on 127.0.0.1:PORT.
write_tryton_config() {
  printf '%s\n' "# Generated by dev/ — do not edit (regenerated on every start)." \
    "[database]" "uri = sqlite://" "path = $1" "[web]" "listen = $HOST:$2" >"$3.tmp"
  mv -f "$3.tmp" "$3"
}

# --- ClamAV (clamd, the virus scanner; Debian's clamav-daemon package) ---------------------------
# clamd on 127.0.0.1:PORT (its TCP protocol: zPING, zINSTREAM, ...) with ONE database,
# dev/clamav/test.ndb: a single body signature, Eicar-Test-Signature, matching the 68-byte EICAR
# anti-virus test string at offset 0 (in hex: no file in the repo holds the string itself).
# clamd reports it as "Eicar-Test-Signature.UNOFFICIAL" (ClamAV appends .UNOFFICIAL to every
# name from a database that is not a signed official one; no setting turns that off). It loads
# in well under a second, ~19 MB resident. A test double: production runs freshclam, which keeps
# ClamAV's official signed databases (main, daily, bytecode; clamd then needs far more memory:
# size it by ClamAV's own guidance) up to date; freshclam cannot reach its mirrors here, so dev/
# never runs it. dev/up copies test.ndb into CLAMAV_DB_DIR and writes CLAMAV_CONFIG
# (write_clamav_config in dev/up) on every start.
CLAMAV_TEST_DB="$DEV_DIR/clamav/test.ndb"
CLAMAV_DIR="$MAILSTREAM_STATE/clamav"
CLAMAV_DB_DIR="$CLAMAV_DIR/db"
CLAMAV_CONFIG="$CLAMAV_DIR/clamd.conf"
CLAMD_ADDRESS="tcp://$HOST:$MAILSTREAM_CLAMD_PORT"

# Print clamd's path (on PATH, else Debian's /usr/sbin/clamd, which a non-root PATH often lacks);
# returns 1 if it is not installed.
clamd_bin() {
  command -v clamd 2>/dev/null && return 0
  [[ -x /usr/sbin/clamd ]] && echo /usr/sbin/clamd
}

# --- runtime layout ----------------------------------------------------------------------------
LOG_DIR="$MAILSTREAM_STATE/logs"
PID_DIR="$MAILSTREAM_STATE/pids"
ENV_FILE="$MAILSTREAM_STATE/env"

COMPONENTS=(kafka registry registry-secure postgres tryton clamav minio)

# --- logging -----------------------------------------------------------------------------------
log() { printf '[dev %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[dev] ERROR: %s\n' "$*" >&2; exit 1; }

log_file() {
  case $1 in
    cluster-*) echo "$CLUSTER_LOG_DIR/$1.log" ;;
    *) echo "$LOG_DIR/$1.log" ;;
  esac
}

# Move the previous log aside (one generation kept as NAME.log.1) and start an empty one.
rotate_log() {
  local f; f=$(log_file "$1")
  mkdir -p "$(dirname "$f")"
  [[ -s $f ]] && mv -f "$f" "$f.1"
  : >"$f"
}

ensure_state_dirs() {
  mkdir -p "$MAILSTREAM_STATE" "$LOG_DIR" "$PID_DIR" "$KAFKA_DIR"
}

# Serialise up/down/status-changing scripts. fd 9 must not leak into daemons (see spawn).
take_state_lock() {
  ensure_state_dirs
  exec 9>"$MAILSTREAM_STATE/.lock"
  flock -w 600 9 || die "another dev/up or dev/down holds $MAILSTREAM_STATE/.lock"
}

# --- processes and pid files -------------------------------------------------------------------
pid_file() {
  case $1 in
    cluster-*) echo "$CLUSTER_PID_DIR/$1.pid" ;;
    *) echo "$PID_DIR/$1.pid" ;;
  esac
}

# True if PID exists and is not a zombie.
pid_alive() {
  local st
  [[ $1 =~ ^[0-9]+$ ]] || return 1
  st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [[ -n $st && $st != Z ]]
}

# What a component's process must have on its command line (guards against pid reuse).
pid_marker() {
  case $1 in
    kafka) echo "$KAFKA_CONFIG" ;;
    registry) echo "$REGISTRY_BIN" ;;
    registry-secure) echo "$REGISTRY_SECURE_CONFIG" ;;
    minio) echo "$MINIO_DATA" ;;
    postgres) echo "$PG_DATA" ;;
    tryton) echo "$TRYTON_CONFIG" ;;
    clamav) echo "$CLAMAV_CONFIG" ;;
    cluster-*) cluster_config "$(cluster_node_of "$1")" ;;
  esac
}

# Print the component's pid if it is running (alive + command line matches), else return 1.
component_pid() {
  local name=$1 pid="" f
  if [[ $name == postgres ]]; then
    # the postmaster's own pid file is authoritative; mirror it to pids/postgres.pid
    if [[ -r $PG_DATA/postmaster.pid ]]; then read -r pid <"$PG_DATA/postmaster.pid" || true; fi
  else
    f=$(pid_file "$name")
    if [[ -r $f ]]; then read -r pid <"$f" || true; fi
  fi
  [[ -n $pid ]] && pid_alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$(pid_marker "$name")" || return 1
  echo "$pid"
}

# spawn NAME CMD... — start CMD detached (own session, stdin from /dev/null, stdout+stderr
# appended to logs/NAME.log) and record its pid in pids/NAME.pid.
spawn() {
  local name=$1; shift
  local pidf logf i
  pidf=$(pid_file "$name"); logf=$(log_file "$name")
  mkdir -p "$(dirname "$pidf")"
  rm -f "$pidf"
  # bash -c 'echo $$; exec ...' makes the recorded pid the daemon's own; fds 8/9 (locks) closed.
  # shellcheck disable=SC2016
  setsid bash -c 'echo $$ >"$0.tmp" && mv -f "$0.tmp" "$0" && exec "$@"' "$pidf" "$@" \
    </dev/null >>"$logf" 2>&1 8>&- 9>&- &
  for ((i = 0; i < 50; i++)); do
    [[ -s $pidf ]] && return 0
    sleep 0.1
  done
  die "$name: process did not start (see $logf)"
}

# stop_pid NAME PID TIMEOUT_S [SIGNAL] — send SIGNAL (default TERM), wait, then SIGKILL.
stop_pid() {
  local name=$1 pid=$2 timeout=$3 sig=${4:-TERM} i
  pid_alive "$pid" || return 0
  log "$name: stopping pid $pid (SIG$sig)"
  kill -"$sig" "$pid" 2>/dev/null || true
  for ((i = 0; i < timeout * 10; i++)); do
    pid_alive "$pid" || return 0
    sleep 0.1
  done
  log "$name: still running after ${timeout}s, sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    pid_alive "$pid" || return 0
    sleep 0.1
  done
  die "$name: pid $pid survived SIGKILL"
}

# --- readiness ---------------------------------------------------------------------------------
# True if something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
  # shellcheck disable=SC2016
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$HOST" "$1" 2>/dev/null
}

# Print the pid listening on 127.0.0.1:PORT (empty if unknown).
port_owner() {
  ss -ltnpH "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2 || true
}

# wait_for COMPONENT TIMEOUT_S PID CMD... — run CMD every 0.5 s until it succeeds. Fails (exit 1)
# with a message naming the component and its log file, with the log's tail, if PID (when
# non-empty) dies first, or if TIMEOUT_S pass without the component writing to its log. A
# component still logging is still starting (a broker recovering thousands of partitions after
# an unclean stop takes minutes): each write to its log moves the deadline, up to
# MAILSTREAM_START_MAX_WAIT seconds (900) in all.
wait_for() {
  local name=$1 timeout=$2 pid=$3; shift 3
  local logf deadline started=$SECONDS size last_size=-1
  local max_wait=${MAILSTREAM_START_MAX_WAIT:-900}
  logf=$(log_file "$name")
  deadline=$((SECONDS + timeout))
  while :; do
    "$@" >/dev/null 2>&1 && return 0
    if [[ -n $pid ]] && ! pid_alive "$pid"; then
      show_log_tail "$logf"
      die "$name exited while starting (pid $pid); see its log: $logf"
    fi
    size=$(stat -c %s "$logf" 2>/dev/null || echo 0)
    if ((size != last_size)); then
      last_size=$size
      deadline=$((SECONDS + timeout))
    fi
    if ((SECONDS >= deadline || SECONDS - started >= max_wait)); then
      show_log_tail "$logf"
      if ((SECONDS - started >= max_wait)); then
        die "$name not ready after $((SECONDS - started))s (the most dev/up waits, MAILSTREAM_START_MAX_WAIT); see its log: $logf"
      fi
      die "$name not ready: nothing logged for ${timeout}s; see its log: $logf"
    fi
    sleep 0.5
  done
}

show_log_tail() {
  [[ -s $1 ]] || return 0
  printf -- '----- last lines of %s -----\n' "$1" >&2
  tail -n 25 "$1" >&2
  printf -- '-----\n' >&2
}

# --- tools -------------------------------------------------------------------------------------
# Newest installed PostgreSQL bin dir (or $MAILSTREAM_PG_BIN); returns 1 if none.
pg_bindir() {
  if [[ -n ${MAILSTREAM_PG_BIN:-} ]]; then
    [[ -x $MAILSTREAM_PG_BIN/initdb ]] && { echo "$MAILSTREAM_PG_BIN"; return 0; }
    return 1
  fi
  local d best
  # the highest numeric major version wins (glob order is lexical)
  best=$(for d in /usr/lib/postgresql/*/bin; do if [[ -x $d/initdb ]]; then echo "$d"; fi; done | sort -t/ -k5,5n | tail -n1)
  [[ -n $best ]] && echo "$best"
}

# Run a command as the postgres OS user, from a directory it can read.
as_postgres() {
  (cd / && runuser -u "$PG_OS_USER" -- "$@")
}

kafka_installed() { [[ -f $KAFKA_HOME/.installed && -d $KAFKA_LIBS ]]; }

# --- status ------------------------------------------------------------------------------------
component_address() {
  case $1 in
    kafka) echo "$KAFKA_BOOTSTRAP (controller $HOST:$MAILSTREAM_KAFKA_CONTROLLER_PORT)" ;;
    registry) echo "$REGISTRY_URL" ;;
    registry-secure) echo "$REGISTRY_SECURE_URL (basic auth: $REGISTRY_SECURE_USER)" ;;
    minio) echo "$MINIO_URL (S3, bucket $MINIO_BUCKET, user $MINIO_USER)" ;;
    postgres) echo "$DATABASE_URL" ;;
    tryton) echo "$TRYTON_URL/$TRYTON_DB/rest" ;;
    clamav) echo "$CLAMD_ADDRESS" ;;
    cluster-*)
      local n; n=$(cluster_node_of "$1")
      echo "$HOST:$(cluster_port "$n") (node $n, controller $HOST:$(cluster_controller_port "$n"))"
      ;;
  esac
}

component_port() {
  case $1 in
    kafka) echo "$MAILSTREAM_KAFKA_PORT" ;;
    registry) echo "$MAILSTREAM_REGISTRY_PORT" ;;
    registry-secure) echo "$MAILSTREAM_REGISTRY_SECURE_PORT" ;;
    minio) echo "$MAILSTREAM_MINIO_PORT" ;;
    postgres) echo "$MAILSTREAM_PG_PORT" ;;
    tryton) echo "$MAILSTREAM_TRYTON_PORT" ;;
    clamav) echo "$MAILSTREAM_CLAMD_PORT" ;;
    cluster-*) cluster_port "$(cluster_node_of "$1")" ;;
  esac
}

# True if the three-broker cluster is meant to run: `dev/up --cluster` writes its env file,
# `dev/down` (of the whole stack or of `cluster`) removes it.
cluster_enabled() { [[ -f $CLUSTER_ENV_FILE ]]; }

# Print one status line per component (the cluster's nodes too while it is enabled, else one
# line saying it is not started); return the number of components not up.
print_status() {
  local name pid port state note down=0 owner names=("${COMPONENTS[@]}")
  if cluster_enabled; then names+=("${CLUSTER_COMPONENTS[@]}"); fi
  for name in "${names[@]}"; do
    port=$(component_port "$name")
    note=""
    if pid=$(component_pid "$name"); then
      if port_open "$port"; then
        state=running
      else
        state=starting; note="port $port not open yet"; down=$((down + 1))
      fi
    else
      pid=-
      state=stopped
      if port_open "$port"; then
        owner=$(port_owner "$port")
        note="port $port taken by another process${owner:+ (pid $owner)}"
      fi
      down=$((down + 1))
    fi
    printf '%-15s %-8s pid %-7s %s%s\n' "$name" "$state" "$pid" "$(component_address "$name")" \
      "${note:+  [$note]}"
  done
  if ! cluster_enabled; then
    printf '%-15s %-8s %s\n' cluster off "three-broker cluster not started (dev/up --cluster)"
  fi
  return "$down"
}

# live_prefixes — the topic prefixes (MAILSTREAM_TOPIC_PREFIX) of the mailstream processes
# running now: a benchmark or a test still using its topics.
live_prefixes() {
  local environ
  for environ in /proc/[0-9]*/environ; do
    { tr '\0' '\n' <"$environ"; } 2>/dev/null | sed -n 's/^MAILSTREAM_TOPIC_PREFIX=\(..*\)$/\1/p' || true
  done | sort -u
}

# delete_topics REGEX [BOOTSTRAP] — delete every topic whose name matches REGEX (quietly; none is
# fine) on the single broker, or on BOOTSTRAP (e.g. "$CLUSTER_BOOTSTRAP"), but those of a
# prefix a running process still uses (a benchmark beside the tests keeps its topics).
delete_topics() {
  local names live pattern bootstrap=${2:-$HOST:$MAILSTREAM_KAFKA_PORT}
  names=$("$DEV_DIR/kafka-tool" org.apache.kafka.tools.TopicCommand \
    --bootstrap-server "$bootstrap" --list 2>/dev/null | grep -E "^($1)$" || true)
  live=$(live_prefixes)
  if [[ -n $names && -n $live ]]; then
    names=$(grep -vF -f <(printf '%s\n' "$live") <<<"$names" || true)
  fi
  [[ -n $names ]] || return 0
  log "deleting $(wc -l <<<"$names") leftover topics matching $1 on $bootstrap"
  # Their exact names, dots escaped, as one regular expression.
  pattern=${names//./\\.}
  pattern=${pattern//$'\n'/|}
  "$DEV_DIR/kafka-tool" org.apache.kafka.tools.TopicCommand \
    --bootstrap-server "$bootstrap" --delete --topic "($pattern)" >/dev/null 2>&1 ||
    log "could not delete topics matching $1 on $bootstrap (continuing)"
}
