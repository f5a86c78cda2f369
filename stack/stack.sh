#!/usr/bin/env bash
# Eventfold's local stack without Docker: real Kafka (KRaft, Maven Central jars),
# FerretDB (built from the Go module proxy, SQLite backend) and Redis (Debian),
# provisioned into a git-ignored folder. Every process runs under supervisord (one per
# stack folder), which restarts one that dies, with a growing delay when it dies
# during start-up; this script starts them in order, each once the one before is ready.
#
#   stack/stack.sh provision   fetch/build what is missing (idempotent, cached)
#   stack/stack.sh up          provision, then start the servers (detached, supervised)
#   stack/stack.sh down        stop everything this folder started, then its supervisord
#   stack/stack.sh status      each process's state, from supervisord
#   stack/stack.sh stop NAME   stop one process (fault injection; 'up' starts it again)
#   stack/stack.sh up-all      servers plus the processor and both APIs (detached)
#   stack/stack.sh run         the same in the foreground; Ctrl-C stops everything
#
# Ports and folders come from the environment (defaults in parentheses):
#   EVENTFOLD_STACK_DIR (.stack/dev)    EVENTFOLD_KAFKA_PORT (9092)
#   EVENTFOLD_KAFKA_BROKERS (1; 3 makes a KRaft cluster of three brokers on one machine:
#     replication factor 3, min.insync.replicas 2; broker N listens on the three Kafka
#     ports + 10*(N-1), e.g. 9102/9103/9104 for broker 2)
#   EVENTFOLD_KAFKA_CONTROLLER_PORT (9093)  EVENTFOLD_MONGO_PORT (27017)
#   EVENTFOLD_KAFKA_SASL_PORT (9094: SASL_SSL, SCRAM-SHA-512 user "eventfold", the
#     broker's certificate in $EVENTFOLD_STACK_DIR/kafka/tls/ca.pem; for trying the
#     clients' security settings: EVENTFOLD_KAFKA_SECURITY_PROTOCOL and friends)
#   EVENTFOLD_FERRETDB_DEBUG_PORT (8088)    EVENTFOLD_REDIS_PORT (6379)
#   EVENTFOLD_REDIS_APPENDFSYNC (everysec: always | everysec | no)
#   EVENTFOLD_PRODUCER_PORT (8001)      EVENTFOLD_QUERY_PORT (8002)
#   EVENTFOLD_CACHE_DIR (~/.cache/eventfold: downloaded/built servers, shared by clones)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KAFKA_VERSION="3.9.1"
FERRETDB_VERSION="v1.24.2"

CACHE_DIR="${EVENTFOLD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/eventfold}"
STACK_DIR="${EVENTFOLD_STACK_DIR:-$ROOT/.stack/dev}"
KAFKA_PORT="${EVENTFOLD_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${EVENTFOLD_KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_SASL_PORT="${EVENTFOLD_KAFKA_SASL_PORT:-9094}"
KAFKA_BROKERS="${EVENTFOLD_KAFKA_BROKERS:-1}"
case "$KAFKA_BROKERS" in [1-9]) ;; *) echo "[stack] error: EVENTFOLD_KAFKA_BROKERS must be 1 to 9, not '$KAFKA_BROKERS'" >&2; exit 2 ;; esac
KAFKA_SCRAM_USER="eventfold"
KAFKA_SCRAM_PASSWORD="eventfold-local-secret"
MONGO_PORT="${EVENTFOLD_MONGO_PORT:-27017}"
FERRETDB_DEBUG_PORT="${EVENTFOLD_FERRETDB_DEBUG_PORT:-8088}"
REDIS_PORT="${EVENTFOLD_REDIS_PORT:-6379}"
PRODUCER_PORT="${EVENTFOLD_PRODUCER_PORT:-8001}"
QUERY_PORT="${EVENTFOLD_QUERY_PORT:-8002}"
START_TIMEOUT="${EVENTFOLD_START_TIMEOUT:-90}"
VENV_BIN="$ROOT/.venv/bin"
RUN_DIR="$STACK_DIR/run"
SUPERVISOR_CONF="$RUN_DIR/supervisord.conf"
# A unix socket's path has at most 107 bytes: one per stack folder, named by the hash of
# its physical path, so that a checkout reaching the same folder through a symlink talks
# to the same supervisord instead of finding its pid alive and no socket.
SUPERVISOR_SOCK="${TMPDIR:-/tmp}/eventfold-supervisor-$(realpath -m "$STACK_DIR" | tr -d '\n' | md5sum | cut -c1-16).sock"

KAFKA_LIBS="$CACHE_DIR/kafka-$KAFKA_VERSION/libs"
# "-idindex-updclose-idin-updbatch-exactnoop-idand-unreadrepl": built with the _id
# lookup, update-command, _id $in, batched-update, exact no-op, _id-with-other-
# conditions and unread-replacement fixes of stack/ferretdb_patches.py (a separate cache entry per set
# of fixes, so a binary built before a fix is not reused).
FERRETDB_BIN="$CACHE_DIR/ferretdb-$FERRETDB_VERSION-idindex-updclose-idin-updbatch-exactnoop-idand-unreadrepl/ferretdb"

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

# --- provisioning -----------------------------------------------------------

provision_kafka() {
  [ -f "$KAFKA_LIBS/.complete" ] && return 0
  command -v java >/dev/null || die "java not found: Kafka needs a Java 17 runtime"
  command -v mvn >/dev/null || die "mvn not found: Kafka's jars are fetched with Maven"
  log "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central"
  rm -rf "$KAFKA_LIBS" && mkdir -p "$KAFKA_LIBS"
  mvn -q -B -f "$ROOT/stack/kafka-pom.xml" -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS" \
    > "$CACHE_DIR/kafka-provision.log" 2>&1 \
    || die "Maven could not fetch Kafka; see $CACHE_DIR/kafka-provision.log"
  touch "$KAFKA_LIBS/.complete"
}

provision_ferretdb() {
  [ -x "$FERRETDB_BIN" ] && return 0
  command -v go >/dev/null || die "go not found: FerretDB is built from the Go module proxy"
  log "building FerretDB $FERRETDB_VERSION with $(go version | cut -d' ' -f3)"
  local out="$CACHE_DIR/ferretdb-provision.log" src="$CACHE_DIR/ferretdb-src" mod
  {
    # The module zip lacks build/version/version.txt (generated by their release
    # tooling), and the binary refuses to start without it: copy the module
    # source, write the file with the exact version, build cmd/ferretdb.
    mod="$(go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" \
           | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')" &&
    rm -rf "$src" && cp -r "$mod" "$src" && chmod -R u+w "$src" &&
    echo "$FERRETDB_VERSION" > "$src/build/version/version.txt" &&
    # changes to the source, each explained and checked there
    python3 "$ROOT/stack/ferretdb_patches.py" "$src" &&
    mkdir -p "$(dirname "$FERRETDB_BIN")" &&
    (cd "$src" && GOFLAGS="-trimpath -mod=mod" go build -o "$FERRETDB_BIN.tmp" ./cmd/ferretdb) &&
    mv "$FERRETDB_BIN.tmp" "$FERRETDB_BIN" && rm -rf "$src"
  } > "$out" 2>&1 || { tail -n 5 "$out" >&2; die "FerretDB build failed; see $out"; }
}

provision_redis() {
  command -v redis-server >/dev/null && return 0
  [ "$(id -u)" = 0 ] || die "redis-server missing: run 'sudo apt-get install -y redis-server'"
  log "installing redis-server from Debian"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; } \
    > "$CACHE_DIR/redis-provision.log" 2>&1 \
    || die "apt-get could not install redis-server; see $CACHE_DIR/redis-provision.log"
}

provision_jemalloc() {  # the processor's allocator (stream_processors/worker.py); optional
  ldconfig -p 2>/dev/null | grep -q 'libjemalloc\.so\.2' && return 0
  if [ "$(id -u)" != 0 ]; then
    log "libjemalloc2 missing (sudo apt-get install -y libjemalloc2): the processor runs on glibc's malloc"
    return 0
  fi
  log "installing libjemalloc2 from Debian"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libjemalloc2 \
    > "$CACHE_DIR/jemalloc-provision.log" 2>&1 \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libjemalloc2; } \
    >> "$CACHE_DIR/jemalloc-provision.log" 2>&1 \
    || log "apt-get could not install libjemalloc2 (see $CACHE_DIR/jemalloc-provision.log): the processor runs on glibc's malloc"
}

cmd_provision() {
  mkdir -p "$CACHE_DIR"
  local pids=() failed=0
  provision_kafka & pids+=($!)
  provision_ferretdb & pids+=($!)
  { provision_redis && provision_jemalloc; } & pids+=($!)  # one apt-get at a time
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  [ "$failed" = 0 ] || die "provisioning failed (see messages above)"
}

# --- process helpers --------------------------------------------------------

pidfile() { echo "$RUN_DIR/$1.pid"; }

running() {  # running NAME -> 0 when its recorded pid is alive (stack/launch.sh records it)
  local f; f="$(pidfile "$1")"
  [ -f "$f" ] && alive "$(cat "$f")"
}

alive() {  # alive PID -> 0 when it runs: kill -0 alone succeeds on a zombie (exited, not reaped)
  kill -0 "$1" 2>/dev/null || return 1
  local state
  state="$(sed -n 's/^[^)]*) \([A-Z]\).*/\1/p' "/proc/$1/stat" 2>/dev/null)"
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

require_free_port() {  # require_free_port PORT VARNAME
  if port_open "$1"; then
    die "port $1 is already in use by another process; stop it or choose another port with $2=<port>"
  fi
}

ctl() { "$VENV_BIN/supervisorctl" -c "$SUPERVISOR_CONF" "$@"; }

supervised_state() {  # supervised_state NAME -> RUNNING, BACKOFF, FATAL, ... ('' without supervisord)
  running supervisord || return 0
  { ctl status "$1" 2>/dev/null || true; } | awk '{print $2}'
}

wait_until() {  # wait_until NAME CHECK...: poll CHECK until it succeeds, the timeout, or FATAL
  local name="$1"; shift
  local deadline=$((SECONDS + START_TIMEOUT))
  until "$@"; do
    # Between attempts the process may be down (BACKOFF): supervisord starts it again
    # after a growing delay, and gives up (FATAL) after its start retries.
    if ! running "$name" && [ "$(supervised_state "$name")" = FATAL ]; then
      die "$name exited during start-up (supervisord gave up); see $STACK_DIR/logs/$name.log"
    fi
    [ "$SECONDS" -lt "$deadline" ] || die "$name not healthy after ${START_TIMEOUT}s; see $STACK_DIR/logs/$name.log"
    sleep 0.2
  done
}

# Each program of supervisord.conf: started only by this script (in dependency order),
# restarted by supervisord whenever it exits. One that exits within STARTSECS of a start
# counts as a failed start: supervisord waits 1 s, 2 s, 3 s ... before the next one and
# gives up (FATAL, shown by 'status') after START_RETRIES. A stop (by 'stop', 'down' or
# Ctrl-C) sends SIGTERM to the process group, then SIGKILL after 30 s.
START_RETRIES=10
program_conf() {  # program_conf NAME PRIORITY STARTSECS
  cat <<CONF

[program:$1]
command=$ROOT/stack/launch.sh $RUN_DIR $1
priority=$2
autostart=false
autorestart=true
startsecs=$3
startretries=$START_RETRIES
stopsignal=TERM
stopwaitsecs=30
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile=$STACK_DIR/logs/$1.log
stdout_logfile_maxbytes=50MB
stdout_logfile_backups=3
CONF
}

kafka_names() {  # broker 1 is "kafka" (single-broker stacks and their tests), then kafka-2 ...
  local i
  for ((i = 1; i <= KAFKA_BROKERS; i++)); do
    if [ "$i" = 1 ]; then echo kafka; else echo "kafka-$i"; fi
  done
}

write_supervisor_conf() {
  mkdir -p "$RUN_DIR" "$STACK_DIR/logs"
  local name
  {
    cat <<CONF
; Written by stack/stack.sh for $STACK_DIR; rewritten at every start.
[unix_http_server]
file=$SUPERVISOR_SOCK
chmod=0700

[supervisord]
logfile=$STACK_DIR/logs/supervisord.log
logfile_maxbytes=10MB
logfile_backups=2
pidfile=$RUN_DIR/supervisord.pid
nodaemon=true
silent=true
directory=$ROOT

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://$SUPERVISOR_SOCK
CONF
    program_conf redis 10 3
    program_conf ferretdb 20 3
    while read -r name; do program_conf "$name" 30 10; done < <(kafka_names)
    program_conf processor 40 15
    program_conf producer-api 50 5
    program_conf query-api 50 5
  } > "$SUPERVISOR_CONF.tmp"
  mv "$SUPERVISOR_CONF.tmp" "$SUPERVISOR_CONF"
}

ensure_supervisor() {
  [ -x "$VENV_BIN/supervisord" ] ||
    die "supervisord is missing from .venv (the stack runs its processes under it): run 'make venv'"
  write_supervisor_conf
  if running supervisord; then
    ctl update >/dev/null  # programs added or removed (EVENTFOLD_KAFKA_BROKERS), none restarted
    return 0
  fi
  setsid "$VENV_BIN/supervisord" -c "$SUPERVISOR_CONF" >>"$STACK_DIR/logs/supervisord.out" 2>&1 < /dev/null &
  echo $! > "$(pidfile supervisord)"
  local deadline=$((SECONDS + 30))
  until ctl pid >/dev/null 2>&1; do
    running supervisord || die "supervisord exited during start-up; see $STACK_DIR/logs/supervisord.out"
    [ "$SECONDS" -lt "$deadline" ] || die "supervisord did not answer in 30s; see $STACK_DIR/logs/supervisord.log"
    sleep 0.1
  done
}

spawn() {  # spawn NAME CMD...: run CMD as supervisord's program NAME, with this environment
  local name="$1"; shift
  ensure_supervisor
  # stack/launch.sh runs exactly this command line and environment at every (re)start.
  printf '%s\0' "$@" > "$RUN_DIR/$name.argv"
  (umask 077 && env -0 > "$RUN_DIR/$name.env")  # it may hold keys and passwords
  rm -f "$(pidfile "$name")"
  # supervisorctl start returns once the process outlived its startsecs; the caller
  # waits for readiness instead (wait_until), so it runs in the background.
  ctl start "$name" >/dev/null 2>&1 &
  local deadline=$((SECONDS + 10))
  until [ -f "$(pidfile "$name")" ]; do
    [ "$SECONDS" -lt "$deadline" ] || die "supervisord did not start $name; see $STACK_DIR/logs/supervisord.log"
    sleep 0.05
  done
}

stop_pid() {  # stop_pid NAME: TERM, then KILL after a grace period, by its pid file
  local f; f="$(pidfile "$1")"
  [ -f "$f" ] || return 0
  local pid; pid="$(cat "$f")"
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    if alive "$pid"; then
      log "$1 ignored SIGTERM for 30s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      # gone only once the kernel reaped it and released its ports
      deadline=$((SECONDS + 10))
      while alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    fi
    log "stopped $1 (pid $pid)"
  fi
  rm -f "$f"
}

stop() {  # stop NAME: through supervisord (which then leaves it stopped), else by pid
  if running supervisord; then
    ctl stop "$1" >/dev/null 2>&1 || true
  fi
  stop_pid "$1"
}

# --- servers ----------------------------------------------------------------

start_redis() {
  if running redis; then return 0; fi
  require_free_port "$REDIS_PORT" EVENTFOLD_REDIS_PORT
  mkdir -p "$STACK_DIR/redis"
  spawn redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$STACK_DIR/redis" \
    --appendonly yes --appendfsync "${EVENTFOLD_REDIS_APPENDFSYNC:-everysec}" --save "" --protected-mode yes
  wait_until redis redis_ready
  log "redis     redis://127.0.0.1:$REDIS_PORT"
}
redis_ready() { [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }

start_ferretdb() {
  if running ferretdb; then return 0; fi
  require_free_port "$MONGO_PORT" EVENTFOLD_MONGO_PORT
  require_free_port "$FERRETDB_DEBUG_PORT" EVENTFOLD_FERRETDB_DEBUG_PORT
  mkdir -p "$STACK_DIR/ferretdb"
  # FerretDB adds journal_mode(wal) (and busy_timeout) to the URL itself; in WAL
  # mode synchronous(normal) syncs at checkpoints instead of at every commit (a
  # crash of the machine, not of the process, can lose the last commits; the
  # database stays consistent). Measured A/B on the same run, ratio of medians:
  # insert_one x1.9-2.2 per second, replace_one x1.2-1.3, a bulk_write of 500
  # ReplaceOne x2.1 faster.
  spawn ferretdb "$FERRETDB_BIN" --handler=sqlite \
    --sqlite-url="file:$STACK_DIR/ferretdb/?_pragma=synchronous(normal)" \
    --listen-addr="127.0.0.1:$MONGO_PORT" --debug-addr="127.0.0.1:$FERRETDB_DEBUG_PORT" \
    --telemetry=disable --log-level=warn --state-dir="$STACK_DIR/ferretdb"
  wait_until ferretdb port_open "$MONGO_PORT"
  log "ferretdb  mongodb://127.0.0.1:$MONGO_PORT"
}

kafka_port_of() {  # kafka_port_of BASE_PORT BROKER -> that broker's port (broker N: +10*(N-1))
  echo $(($1 + 10 * ($2 - 1)))
}
kafka_dir_of() { if [ "$1" = 1 ]; then echo "$STACK_DIR/kafka"; else echo "$STACK_DIR/kafka-$1"; fi; }
kafka_name_of() { if [ "$1" = 1 ]; then echo kafka; else echo "kafka-$1"; fi; }

# host:port of every broker's PLAINTEXT listener, for the clients
kafka_bootstrap() {
  local i out=""
  for ((i = 1; i <= KAFKA_BROKERS; i++)); do
    out+="${out:+,}127.0.0.1:$(kafka_port_of "$KAFKA_PORT" "$i")"
  done
  echo "$out"
}

start_kafka() {
  local i pending=()
  # A stack folder keeps the cluster it was formatted as: its brokers share the
  # metadata quorum, so their number cannot change under existing data.
  local formatted="$STACK_DIR/kafka/data/.brokers"
  if [ -f "$STACK_DIR/kafka/data/meta.properties" ]; then
    local was=1; [ -f "$formatted" ] && was="$(cat "$formatted")"
    [ "$was" = "$KAFKA_BROKERS" ] || die "$STACK_DIR holds a Kafka of $was broker(s), not $KAFKA_BROKERS: set EVENTFOLD_KAFKA_BROKERS=$was, or use another EVENTFOLD_STACK_DIR (or 'make clean')"
  fi
  kafka_tls "$STACK_DIR/kafka/tls"
  local cluster_id=""
  for ((i = 1; i <= KAFKA_BROKERS; i++)); do
    running "$(kafka_name_of "$i")" && continue
    require_free_port "$(kafka_port_of "$KAFKA_PORT" "$i")" EVENTFOLD_KAFKA_PORT
    require_free_port "$(kafka_port_of "$KAFKA_CONTROLLER_PORT" "$i")" EVENTFOLD_KAFKA_CONTROLLER_PORT
    require_free_port "$(kafka_port_of "$KAFKA_SASL_PORT" "$i")" EVENTFOLD_KAFKA_SASL_PORT
    kafka_configure "$i"
    if [ ! -f "$(kafka_dir_of "$i")/data/meta.properties" ]; then
      # (--cluster-id=: a random id may begin with "-", which would read as an option)
      # one cluster: a broker formatted later (a start that failed part-way) takes
      # the id the others have
      [ -n "$cluster_id" ] || cluster_id="$(sed -n 's/^cluster\.id=//p' "$STACK_DIR/kafka/data/meta.properties" 2>/dev/null || true)"
      [ -n "$cluster_id" ] || cluster_id="$(python3 -c 'import base64,uuid;print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')"
      kafka_format "$i" "$cluster_id"
    fi
    # ready once this start logged it: the log keeps the line of every earlier start
    KAFKA_LOG_FROM[i]="$(stat -c %s "$STACK_DIR/logs/$(kafka_name_of "$i").log" 2>/dev/null || echo 0)"
    spawn "$(kafka_name_of "$i")" "${KAFKA_JAVA[@]}" kafka.Kafka "$(kafka_dir_of "$i")/server.properties"
    pending+=("$i")
  done
  # Started together: a cluster's brokers need a quorum of controllers to start at all.
  for i in "${pending[@]}"; do wait_until "$(kafka_name_of "$i")" kafka_ready "$i"; done
  if [ ! -f "$STACK_DIR/kafka/data/.scram-user" ]; then  # a stack formatted before the user existed
    kafka_configure 1
    "${KAFKA_JAVA[@]}" kafka.admin.ConfigCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
      --alter --entity-type users --entity-name "$KAFKA_SCRAM_USER" \
      --add-config "SCRAM-SHA-512=[iterations=4096,password=$KAFKA_SCRAM_PASSWORD]" \
      >> "$STACK_DIR/logs/kafka-scram.log" 2>&1 \
      || die "adding Kafka's SCRAM user failed; see $STACK_DIR/logs/kafka-scram.log"
    sleep 2  # the broker takes the new credential from the metadata log shortly after
    touch "$STACK_DIR/kafka/data/.scram-user"
  fi
  if [ "$KAFKA_BROKERS" = 1 ]; then
    log "kafka     127.0.0.1:$KAFKA_PORT (KRaft, Kafka $KAFKA_VERSION; SASL_SSL on $KAFKA_SASL_PORT)"
  else
    log "kafka     $(kafka_bootstrap) (KRaft cluster of $KAFKA_BROKERS, Kafka $KAFKA_VERSION; replication factor 3, min.insync.replicas 2)"
  fi
}

KAFKA_JAVA=()
kafka_configure() {  # kafka_configure BROKER: its server.properties and logging
  local i="$1" dir voters="" n replicas=1 min_isr=1
  dir="$(kafka_dir_of "$i")"
  mkdir -p "$dir"
  for ((n = 1; n <= KAFKA_BROKERS; n++)); do
    voters+="${voters:+,}$n@127.0.0.1:$(kafka_port_of "$KAFKA_CONTROLLER_PORT" "$n")"
  done
  if [ "$KAFKA_BROKERS" -ge 3 ]; then replicas=3; min_isr=2; fi
  local port controller sasl tls="$STACK_DIR/kafka/tls"
  port="$(kafka_port_of "$KAFKA_PORT" "$i")"
  controller="$(kafka_port_of "$KAFKA_CONTROLLER_PORT" "$i")"
  sasl="$(kafka_port_of "$KAFKA_SASL_PORT" "$i")"
  cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=$i
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller,SASL_SSL://127.0.0.1:$sasl
advertised.listeners=PLAINTEXT://127.0.0.1:$port,SASL_SSL://127.0.0.1:$sasl
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
inter.broker.listener.name=PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PKCS12
ssl.keystore.location=$tls/broker.p12
ssl.keystore.password=$KAFKA_SCRAM_PASSWORD
log.dirs=$dir/data
num.partitions=6
default.replication.factor=$replicas
offsets.topic.replication.factor=$replicas
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=$replicas
transaction.state.log.min.isr=$min_isr
min.insync.replicas=$min_isr
unclean.leader.election.enable=false
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=-1
PROPS
  cat > "$dir/log4j.properties" <<'PROPS'
log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
PROPS
  KAFKA_JAVA=(java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true
              "-Dlog4j.configuration=file:$dir/log4j.properties" -cp "$KAFKA_LIBS/*")
}

kafka_format() {  # kafka_format BROKER CLUSTER_ID
  local dir; dir="$(kafka_dir_of "$1")"
  log "formatting Kafka KRaft storage (broker $1)"
  "${KAFKA_JAVA[@]}" kafka.tools.StorageTool format --ignore-formatted \
    --cluster-id="$2" \
    --add-scram "SCRAM-SHA-512=[name=$KAFKA_SCRAM_USER,iterations=4096,password=$KAFKA_SCRAM_PASSWORD]" \
    -c "$dir/server.properties" >> "$STACK_DIR/logs/kafka-format.log" 2>&1 \
    || die "Kafka storage format failed; see $STACK_DIR/logs/kafka-format.log"
  if [ "$1" = 1 ]; then
    touch "$dir/data/.scram-user"  # in the metadata from the first start
    echo "$KAFKA_BROKERS" > "$dir/data/.brokers"
  fi
}

# A self-signed certificate for the SASL_SSL listener (127.0.0.1 and localhost), and
# the same certificate in PEM for clients to trust (ca.pem).
kafka_tls() {
  local tls="$1"
  [ -f "$tls/ca.pem" ] && return 0
  mkdir -p "$tls"
  keytool -genkeypair -alias broker -keyalg RSA -keysize 2048 -validity 3650 \
    -dname "CN=localhost" -ext "SAN=ip:127.0.0.1,dns:localhost" \
    -storetype PKCS12 -keystore "$tls/broker.p12" \
    -storepass "$KAFKA_SCRAM_PASSWORD" -keypass "$KAFKA_SCRAM_PASSWORD" >/dev/null 2>&1 \
    || die "keytool could not make Kafka's TLS certificate"
  keytool -exportcert -rfc -alias broker -keystore "$tls/broker.p12" \
    -storepass "$KAFKA_SCRAM_PASSWORD" -file "$tls/ca.pem" >/dev/null 2>&1 \
    || die "keytool could not export Kafka's TLS certificate"
}
KAFKA_LOG_FROM=()
kafka_ready() {  # kafka_ready BROKER
  local name log from
  name="$(kafka_name_of "$1")"
  log="$STACK_DIR/logs/$name.log"
  from="${KAFKA_LOG_FROM[$1]:-0}"
  [ "$(stat -c %s "$log" 2>/dev/null || echo 0)" -ge "$from" ] || from=0  # rotated meanwhile
  port_open "$(kafka_port_of "$KAFKA_PORT" "$1")" &&
    grep -q "\[BrokerServer id=$1\] Transition from STARTING to STARTED" \
      <(tail -c "+$((from + 1))" "$log" 2>/dev/null)
}

cmd_up() {
  cmd_provision
  start_redis
  start_ferretdb
  start_kafka
}

# --- the platform's own processes ---------------------------------------------

# Local use: API keys are off unless the caller configured them.
if [ -z "${EVENTFOLD_API_KEYS:-}" ]; then export EVENTFOLD_AUTH_DISABLED="${EVENTFOLD_AUTH_DISABLED:-true}"; fi

# The Python processes get every server address from the same variables.
export EVENTFOLD_KAFKA_PORT="$KAFKA_PORT" EVENTFOLD_MONGO_PORT="$MONGO_PORT" \
  EVENTFOLD_REDIS_PORT="$REDIS_PORT" EVENTFOLD_PRODUCER_PORT="$PRODUCER_PORT" \
  EVENTFOLD_QUERY_PORT="$QUERY_PORT"
# The processor's tables (RocksDB) belong to this stack's Kafka: their offsets are the
# changelogs' offsets there, so state from another stack folder would not match it.
export EVENTFOLD_PROCESSOR_DATA_DIR="${EVENTFOLD_PROCESSOR_DATA_DIR:-$STACK_DIR/processor-data}"
if [ "$KAFKA_BROKERS" != 1 ]; then  # every broker to bootstrap from, topics on three of them
  EVENTFOLD_KAFKA_BOOTSTRAP="${EVENTFOLD_KAFKA_BOOTSTRAP:-$(kafka_bootstrap)}"
  EVENTFOLD_TOPIC_REPLICATION_FACTOR="${EVENTFOLD_TOPIC_REPLICATION_FACTOR:-$([ "$KAFKA_BROKERS" -ge 3 ] && echo 3 || echo 1)}"
  export EVENTFOLD_KAFKA_BOOTSTRAP EVENTFOLD_TOPIC_REPLICATION_FACTOR
fi

http_ok() { python3 -c "import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" "$1" 2>/dev/null; }
processor_ready() { grep -q "Worker\]: Ready" "$STACK_DIR/logs/processor.log" 2>/dev/null; }

start_services() {
  [ -x "$VENV_BIN/faust" ] || die "the virtual environment is missing: run 'make run' (it creates .venv)"
  "$VENV_BIN/eventfold" topics >&2
  if ! running processor; then
    : > "$STACK_DIR/logs/processor.log"
    spawn processor "$VENV_BIN/python" -m stream_processors.worker -l info
    wait_until processor processor_ready
  fi
  log "processor running (faust worker, logs in $STACK_DIR/logs/processor.log)"
  if ! running producer-api; then
    require_free_port "$PRODUCER_PORT" EVENTFOLD_PRODUCER_PORT
    spawn producer-api "$VENV_BIN/uvicorn" --factory producers.api:create_app \
      --host 127.0.0.1 --port "$PRODUCER_PORT" --no-access-log
    wait_until producer-api http_ok "http://127.0.0.1:$PRODUCER_PORT/healthz"
  fi
  if ! running query-api; then
    require_free_port "$QUERY_PORT" EVENTFOLD_QUERY_PORT
    spawn query-api "$VENV_BIN/uvicorn" --factory query_api.api:create_app \
      --host 127.0.0.1 --port "$QUERY_PORT" --no-access-log
    wait_until query-api http_ok "http://127.0.0.1:$QUERY_PORT/healthz"
  fi
  [ "${EVENTFOLD_AUTH_DISABLED:-false}" = true ] && \
    log "API keys are disabled for local use (set EVENTFOLD_API_KEYS to require them)"
  cat >&2 <<MSG
[stack] ready:
  producer API  http://127.0.0.1:$PRODUCER_PORT   (POST /v1/events, docs at /docs)
  query API     http://127.0.0.1:$QUERY_PORT   (GET /v1/orders/{id}, docs at /docs)
  kafka         $(kafka_bootstrap)    mongodb  mongodb://127.0.0.1:$MONGO_PORT    redis  redis://127.0.0.1:$REDIS_PORT
  logs          $STACK_DIR/logs/   (supervisord.log: every exit and restart)
MSG
}

cmd_run() {
  local follower=""
  # (a background job ignores the terminal's SIGINT: stopped here, explicitly)
  trap 'echo >&2; log "stopping"; [ -z "$follower" ] || kill "$follower" 2>/dev/null || true; cmd_down; exit 0' INT TERM
  cmd_up
  start_services
  log "running in the foreground; a process that dies is restarted (status: make status); Ctrl-C stops everything"
  # supervisord's own log says when a process exited and when it was started again.
  tail -n 0 -F "$STACK_DIR/logs/supervisord.log" >&2 2>/dev/null &
  follower=$!
  while running supervisord; do sleep 1 & wait $!; done
  log "supervisord exited; see $STACK_DIR/logs/supervisord.log"
  kill "$follower" 2>/dev/null || true
  cmd_down
  exit 1
}

ALL_NAMES=(query-api producer-api processor kafka kafka-2 kafka-3 kafka-4 kafka-5 kafka-6 kafka-7 kafka-8 kafka-9 ferretdb redis)

cmd_down() {
  if running supervisord; then
    local pid deadline=$((SECONDS + 60)) brokers name
    pid="$(cat "$(pidfile supervisord)")"  # (supervisord deletes the file as it exits)
    # Clients before the servers they use, then the brokers before FerretDB and Redis
    # ('stop all' would signal every program at once).
    ctl stop query-api producer-api >/dev/null 2>&1 || true
    ctl stop processor >/dev/null 2>&1 || true
    brokers="$(ctl avail 2>/dev/null | awk '$1 ~ /^kafka/ {print $1}' || true)"
    # All brokers at once: one stopped after the others would wait for a controller
    # quorum that is gone, until it is killed.
    # (waited for by pid: in 'run', supervisord itself is a child of this shell)
    local stopping=()
    for name in $brokers; do ctl stop "$name" >/dev/null 2>&1 & stopping+=($!); done
    [ "${#stopping[@]}" = 0 ] || wait "${stopping[@]}" || true
    ctl stop ferretdb redis >/dev/null 2>&1 || true
    ctl shutdown >/dev/null 2>&1 || true
    while alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    log "stopped supervisord and its programs"
  fi
  stop_pid supervisord
  # anything left over by pid: a process whose supervisord was killed, or a stack
  # folder started before the supervisor
  for name in "${ALL_NAMES[@]}"; do stop_pid "$name"; done
  return 0
}

cmd_status() {
  if running supervisord; then
    # Lines like "processor  RUNNING   pid 4242, uptime 0:03:10" or
    # "processor  BACKOFF   Exited too quickly (process log may have details)"
    local name state rest
    while read -r name state rest; do
      case "$state" in
        RUNNING) echo "$name: running ($rest)" ;;
        STARTING)  # up, and not yet past its startsecs
          if running "$name"; then echo "$name: running (pid $(cat "$(pidfile "$name")"), starting)"
          else echo "$name: starting"; fi ;;
        STOPPED | EXITED) echo "$name: stopped" ;;
        *) echo "$name: ${state,,}${rest:+ ($rest)}" ;;  # backoff, fatal, stopping
      esac
    done < <(ctl status 2>/dev/null || true)
    return 0
  fi
  for name in redis ferretdb $(kafka_names) processor producer-api query-api; do
    if running "$name"; then echo "$name: running (pid $(cat "$(pidfile "$name")"))"
    else echo "$name: stopped"; fi
  done
}

case "${1:-}" in
  provision) cmd_provision ;;
  up) cmd_up ;;
  up-all) cmd_up; start_services ;;
  run) cmd_run ;;
  down) cmd_down ;;
  stop) [ -n "${2:-}" ] || die "usage: $0 stop redis|ferretdb|kafka|kafka-N|processor|producer-api|query-api"
        stop "$2" ;;
  status) cmd_status ;;
  *) echo "usage: $0 provision|up|up-all|run|down|stop NAME|status" >&2; exit 2 ;;
esac
