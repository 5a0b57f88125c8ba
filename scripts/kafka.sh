#!/usr/bin/env bash
# Start, stop or query a single-node Kafka broker (KRaft mode, no ZooKeeper) on 127.0.0.1.
#
#   scripts/kafka.sh start  [port]   # default 9092; prints "export KAFKA_BOOTSTRAP_SERVERS=..."
#   scripts/kafka.sh stop   [port]
#   scripts/kafka.sh status [port]   # exit 0 running, 3 not running
#   scripts/kafka.sh fetch           # only fetch the broker's jars into the cache
#
#   eval "$(scripts/kafka.sh start 9092)"
#
# The broker runs from the jars of org.apache.kafka:kafka_2.13 (version pinned in
# runners/kafka_broker/pom.xml), fetched once by Maven into
# ${FEEDCHECK_CACHE:-~/.cache/feedcheck}/kafka/broker-<version>/ (~46 MB; no PyPI or Debian
# package ships a broker). Its controller listens on port+1. Topics are created on first use
# (2 partitions). Every command is idempotent. State (pid file, log, data) lives in
# $KAFKA_STATE_DIR, default ${TMPDIR:-/tmp}/feedcheck-kafka-<uid>/<port>; stop removes it, so a
# restart starts empty.
#
# Environment:
#   KAFKA_STATE_DIR       where the pid file, log and data go (see above)
#   KAFKA_START_TIMEOUT   seconds to wait for the broker (default 60)
#   KAFKA_HEAP            the broker JVM's -Xmx (default 512m)
set -euo pipefail

readonly HOST=127.0.0.1
readonly COMMAND=${1:-}
readonly PORT=${2:-9092}
readonly CONTROLLER_PORT=$((PORT + 1))
readonly ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly POM=$ROOT/runners/kafka_broker/pom.xml
readonly KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")
readonly CACHE=${FEEDCHECK_CACHE:-$HOME/.cache/feedcheck}/kafka
readonly LIB_DIR=$CACHE/broker-$KAFKA_VERSION
readonly START_TIMEOUT_S=${KAFKA_START_TIMEOUT:-60}
readonly STOP_TIMEOUT_S=15
readonly DEFAULT_STATE_PARENT=${TMPDIR:-/tmp}/feedcheck-kafka-$(id -u)
readonly STATE_DIR=${KAFKA_STATE_DIR:-$DEFAULT_STATE_PARENT/$PORT}
readonly PID_FILE=$STATE_DIR/broker.pid
readonly LOG_FILE=$STATE_DIR/broker.log
readonly DATA_DIR=$STATE_DIR/data
readonly CONFIG=$STATE_DIR/server.properties
readonly SERVICE=kafka WHAT="the broker"
# shellcheck source=lib/service.sh
source "$ROOT/scripts/lib/service.sh"

check_port "$PORT" 65535

# Fetches the broker's jars once (a directory published atomically, under a lock).
fetch_jars() {
    mkdir -p "$CACHE"
    exec 8>"$CACHE/.fetch.lock"
    if command -v flock >/dev/null 2>&1; then flock 8; fi
    if [[ -s $LIB_DIR/kafka_2.13-$KAFKA_VERSION.jar ]]; then return 0; fi
    command -v mvn >/dev/null 2>&1 || die "mvn not found (needed once to fetch the broker's jars)"
    log "fetching kafka_2.13 $KAFKA_VERSION and its dependencies into $LIB_DIR"
    local tmp=$LIB_DIR.tmp start=$SECONDS
    rm -rf "$tmp"
    mvn -B -q -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$tmp" >&2
    rm -rf "$LIB_DIR"
    mv "$tmp" "$LIB_DIR"
    log "fetched in $((SECONDS - start)) s"
}

# A broker started by this script with this state dir.
service_is_ours() { recorded_cmdline_has kafka.Kafka "$CONFIG"; }

# The broker logs this once it serves clients (KafkaRaftServer).
broker_started() { grep -q "Kafka Server started" "$LOG_FILE" 2>/dev/null; }
service_is_ready() { broker_started && port_accepts_connections "$PORT"; }
service_answers_unowned() { false; }      # no probe tells a foreign broker apart

print_exports() { echo "export KAFKA_BOOTSTRAP_SERVERS=$HOST:$PORT"; }

write_config() {
    cat >"$CONFIG" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$DATA_DIR
num.partitions=2
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=2
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=168
PROPS
}

cmd_start() {
    if service_is_ours && broker_started; then
        log "already running on $HOST:$PORT (pid $(recorded_pid))"
        print_exports
        return 0
    fi
    if ! service_is_ours; then
        for p in "$PORT" "$CONTROLLER_PORT"; do
            port_accepts_connections "$p" && die "port $p on $HOST is in use by something else"
        done
        command -v java >/dev/null 2>&1 || die "java not found"
        fetch_jars
        exec 8>&-     # the fetch lock: a broker that inherited it would block every other start
        rm -rf "$DATA_DIR"
        mkdir -p "$STATE_DIR" "$DATA_DIR"
        write_config
        local cluster_id
        # A cluster id that starts with "-" is read as an option by the storage tool (1 in 32 ids
        # failed so); Kafka's own Uuid.randomUuid() draws again in that case, and so do we.
        cluster_id=$(python3 -c 'import base64, uuid
while True:
    cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    if not cid.startswith("-"):
        print(cid)
        break')
        java -cp "$LIB_DIR/*" kafka.tools.StorageTool format -t "$cluster_id" -c "$CONFIG" \
            >"$LOG_FILE" 2>&1 || { tail -n 20 "$LOG_FILE" >&2; die "formatting the storage failed"; }
        log "starting kafka $KAFKA_VERSION on $HOST:$PORT (log: $LOG_FILE)"
        # setsid: its own process group, detached from the caller's terminal signals.
        setsid java "-Xmx${KAFKA_HEAP:-512m}" -XX:+UseG1GC -Djava.awt.headless=true \
            -Dorg.slf4j.simpleLogger.defaultLogLevel=info \
            -cp "$LIB_DIR/*" kafka.Kafka "$CONFIG" >>"$LOG_FILE" 2>&1 </dev/null &
        echo $! >"$PID_FILE"
    fi
    wait_until_ready
}

remove_state() { remove_created_state "${KAFKA_STATE_DIR:-}" "$CONFIG"; }


case $COMMAND in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    fetch) fetch_jars; echo "$LIB_DIR" ;;
    *) usage_lines 9 ;;
esac
