#!/usr/bin/env bash
# Standalone Flink 1.19 cluster (one JobManager + one TaskManager with 2 slots) on 127.0.0.1,
# for Beam's FlinkRunner with --flink_master=localhost:8081 (see runners/flink.py).
#
#   scripts/flink_cluster.sh start    install if needed, start, wait for the REST endpoint
#   scripts/flink_cluster.sh stop     stop both processes
#   scripts/flink_cluster.sh status   print the REST /overview (exit 1 when not up)
#
# The Flink distribution comes from PyPI: apache-flink + apache-flink-libraries ship Flink's
# bin/, lib/ and conf/ inside site-packages/pyflink. They go into their own venv under the
# cache dir, installed with --no-deps: only the Java distribution is used, and the full
# dependency set would pull an old apache-beam (<2.49) and friends.
#
# Everything lives under ${FEEDCHECK_CACHE:-$HOME/.cache/feedcheck}/flink: the venv, and
# cluster-<rest port>/{conf,log,pid}. Ports: REST ${FLINK_REST_PORT:-8081}, JobManager RPC
# ${FLINK_RPC_PORT:-6123}; blob server, TaskManager RPC and data ports are picked at random.
# Every address is 127.0.0.1. A second cluster can run beside the first with other
# FLINK_REST_PORT and FLINK_RPC_PORT values (tests/test_flink_cluster.py does that).
set -euo pipefail

FLINK_PY_VERSION="${FLINK_PY_VERSION:-1.19.3}"
CACHE="${FEEDCHECK_CACHE:-$HOME/.cache/feedcheck}/flink"
VENV="$CACHE/apache-flink-$FLINK_PY_VERSION-venv"
REST_PORT="${FLINK_REST_PORT:-8081}"
STATE="$CACHE/cluster-$REST_PORT"   # one conf/log/pid dir per REST port: clusters never mix
RPC_PORT="${FLINK_RPC_PORT:-6123}"
SLOTS="${FLINK_TASK_SLOTS:-2}"
START_TIMEOUT="${FLINK_START_TIMEOUT:-90}"
PYTHON="${PYTHON:-python3}"

log() { echo "flink_cluster: $*" >&2; }

flink_home() {
  local d
  for d in "$VENV"/lib/python3*/site-packages/pyflink; do
    [[ -x "$d/bin/jobmanager.sh" ]] && { echo "$d"; return 0; }
  done
  return 1
}

install() {
  if flink_home >/dev/null; then return 0; fi
  command -v java >/dev/null 2>&1 || { log "java not found"; exit 1; }
  log "installing apache-flink==$FLINK_PY_VERSION (Flink distribution, ~260 MB) into $VENV"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps \
    "apache-flink==$FLINK_PY_VERSION" "apache-flink-libraries==$FLINK_PY_VERSION"
  flink_home >/dev/null || { log "pyflink/bin not found after install"; exit 1; }
}

write_conf() {
  local home="$1"
  mkdir -p "$STATE/conf" "$STATE/log" "$STATE/pid"
  cp "$home"/conf/log4j*.properties "$home"/conf/logback*.xml "$STATE/conf/"
  # Java 17 module flags, as in Flink's own default config.yaml.
  local opens="--add-exports=java.base/sun.net.util=ALL-UNNAMED --add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED --add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED"
  local p
  for p in java.lang java.net java.io java.nio sun.nio.ch java.lang.reflect java.text java.time \
           java.util java.util.concurrent java.util.concurrent.atomic java.util.concurrent.locks; do
    opens="$opens --add-opens=java.base/$p=ALL-UNNAMED"
  done
  cat >"$STATE/conf/config.yaml" <<EOF
env:
  java:
    opts:
      all: $opens
jobmanager:
  bind-host: 127.0.0.1
  rpc:
    address: 127.0.0.1
    port: $RPC_PORT
  memory:
    process:
      size: 1024m
  execution:
    failover-strategy: region
taskmanager:
  bind-host: 127.0.0.1
  host: 127.0.0.1
  numberOfTaskSlots: $SLOTS
  memory:
    process:
      size: 1728m
  # Batch jobs shuffle through sort-merge partitions, each taking at least
  # sort-shuffle.min-buffers (Flink's default: 512) of the TaskManager's network buffers
  # (4096 x 32 KiB of the 128 MiB network memory). Our batch graph had opened 8 when it failed:
  # with the default, one batch job of ours failed at start ("Insufficient number of network
  # buffers: required 512, but only 488 available"), and so did two at once. With 64 two
  # concurrent jobs finished (docs/running/flink.md).
  network:
    sort-shuffle:
      min-buffers: 64
parallelism:
  default: $SLOTS
rest:
  address: 127.0.0.1
  bind-address: 127.0.0.1
  port: $REST_PORT
blob:
  server:
    port: "0"
EOF
  echo "127.0.0.1:$REST_PORT" >"$STATE/conf/masters"
  echo "127.0.0.1" >"$STATE/conf/workers"
}

flink_env() {
  export FLINK_CONF_DIR="$STATE/conf" FLINK_LOG_DIR="$STATE/log" FLINK_PID_DIR="$STATE/pid"
}

overview() {
  curl -sf --max-time 2 "http://127.0.0.1:$REST_PORT/overview"
}

start() {
  install
  local home
  home="$(flink_home)"
  if overview >/dev/null 2>&1; then
    log "something already answers on 127.0.0.1:$REST_PORT; not starting another cluster"
    overview; echo
    return 0
  fi
  write_conf "$home"
  flink_env
  "$home/bin/jobmanager.sh" start >&2
  "$home/bin/taskmanager.sh" start >&2
  local deadline=$((SECONDS + START_TIMEOUT)) body=""
  while ((SECONDS < deadline)); do
    body="$(overview 2>/dev/null || true)"
    # Ready when the TaskManager has registered its slots.
    if [[ "$body" =~ \"slots-total\":([0-9]+) ]] && ((BASH_REMATCH[1] >= SLOTS)); then
      log "up: http://127.0.0.1:$REST_PORT (logs: $STATE/log)"
      echo "$body"
      return 0
    fi
    sleep 1
  done
  log "cluster did not come up within ${START_TIMEOUT}s; last /overview: ${body:-none}; logs in $STATE/log"
  stop || true
  return 1
}

stop() {
  local home
  home="$(flink_home)" || { log "not installed; nothing to stop"; return 0; }
  [[ -d "$STATE/conf" ]] || { log "never started; nothing to stop"; return 0; }
  flink_env
  "$home/bin/taskmanager.sh" stop >&2 || true
  "$home/bin/jobmanager.sh" stop >&2 || true
  local deadline=$((SECONDS + 30))
  while overview >/dev/null 2>&1 && ((SECONDS < deadline)); do sleep 1; done
  log "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) overview && echo ;;
  install) install && flink_home ;;
  *) echo "usage: $0 start|stop|status|install" >&2; exit 2 ;;
esac
