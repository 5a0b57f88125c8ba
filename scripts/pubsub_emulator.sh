#!/usr/bin/env bash
# Start, stop or query Google's Pub/Sub emulator on 127.0.0.1 for local runs and tests.
#
#   scripts/pubsub_emulator.sh start  [port]   # default port 8085; prints "export PUBSUB_EMULATOR_HOST=..."
#   scripts/pubsub_emulator.sh stop   [port]
#   scripts/pubsub_emulator.sh status [port]   # exit 0 running, 3 not running
#
#   eval "$(scripts/pubsub_emulator.sh start)"  # start and point the Google clients at it
#
# Every command is idempotent: start on a running emulator and stop on a stopped one succeed.
# State (pid file, log, data dir) lives in $PUBSUB_EMULATOR_STATE_DIR, default
# ${TMPDIR:-/tmp}/feedcheck-pubsub-emulator-<uid>/<port>; one emulator per port. stop removes it.
# The emulator keeps everything in memory: a restart starts with no topics or subscriptions.
#
# Environment:
#   PUBSUB_EMULATOR_STATE_DIR      where the pid file, log and data dir go (see above); one
#                                  directory per emulator, so set it per port
#   PUBSUB_EMULATOR_START_TIMEOUT  seconds to wait for the emulator to answer (default 60)
set -euo pipefail

readonly HOST=127.0.0.1
readonly COMMAND=${1:-}
readonly PORT=${2:-8085}
readonly START_TIMEOUT_S=${PUBSUB_EMULATOR_START_TIMEOUT:-60}
readonly STOP_TIMEOUT_S=15
readonly DEFAULT_STATE_PARENT=${TMPDIR:-/tmp}/feedcheck-pubsub-emulator-$(id -u)
readonly STATE_DIR=${PUBSUB_EMULATOR_STATE_DIR:-$DEFAULT_STATE_PARENT/$PORT}
readonly PID_FILE=$STATE_DIR/emulator.pid
readonly LOG_FILE=$STATE_DIR/emulator.log
readonly DATA_DIR=$STATE_DIR/data
readonly APT_PACKAGE=google-cloud-cli-pubsub-emulator
readonly EMULATOR_REL_PATH=platform/pubsub-emulator/bin/cloud-pubsub-emulator
readonly SERVICE=pubsub_emulator WHAT=emulator
# shellcheck source=lib/service.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/service.sh"

check_port "$PORT" 65536

# The emulator answers "Ok" to a plain HTTP GET on its root; that tells it apart from any other
# program that happens to listen on the port.
answers_as_emulator() {
    local body
    body=$(curl --silent --noproxy "*" --max-time 2 "http://$HOST:$PORT/" 2>/dev/null) || return 1
    [[ $body == Ok* ]]
}

service_is_ours() { recorded_cmdline_has cloud-pubsub-emulator "--port=$PORT"; }
service_is_ready() { answers_as_emulator; }
service_answers_unowned() { answers_as_emulator; }

find_sdk_root() {
    local root=""
    if command -v gcloud >/dev/null 2>&1; then
        root=$(gcloud info --format='value(installation.sdk_root)' 2>/dev/null || true)
    fi
    # Debian's google-cloud-cli package installs here; used when gcloud itself is not on PATH.
    [[ -n $root ]] || root=/usr/lib/google-cloud-sdk
    echo "$root"
}

# Prints the emulator launcher's path; installs the emulator component from Google's apt
# repository first, only when it is missing.
ensure_emulator_installed() {
    local sdk_root
    sdk_root=$(find_sdk_root)  # gcloud info takes ~1 s: ask once
    if [[ -x $sdk_root/$EMULATOR_REL_PATH ]]; then
        echo "$sdk_root/$EMULATOR_REL_PATH"
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 \
        || die "emulator not found at $sdk_root/$EMULATOR_REL_PATH and apt-get is unavailable"
    local sudo=""
    if (( $(id -u) != 0 )); then
        command -v sudo >/dev/null 2>&1 || die "emulator missing; installing $APT_PACKAGE needs root"
        sudo="sudo"
    fi
    if ! dpkg -s "$APT_PACKAGE" >/dev/null 2>&1; then
        log "installing $APT_PACKAGE (apt-get update; apt-get install)"
        $sudo apt-get update >&2
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y "$APT_PACKAGE" >&2
    fi
    sdk_root=$(find_sdk_root)
    [[ -x $sdk_root/$EMULATOR_REL_PATH ]] \
        || die "emulator still missing at $sdk_root/$EMULATOR_REL_PATH after installing $APT_PACKAGE"
    echo "$sdk_root/$EMULATOR_REL_PATH"
}

print_exports() {
    echo "export PUBSUB_EMULATOR_HOST=$HOST:$PORT"
}

cmd_start() {
    if service_is_ours && answers_as_emulator; then
        log "already running on $HOST:$PORT (pid $(recorded_pid))"
        print_exports
        return 0
    fi
    if answers_as_emulator; then
        # Someone else's emulator: usable, but this script will not stop it.
        log "an emulator not started by this script already answers on $HOST:$PORT; reusing it"
        print_exports
        return 0
    fi
    if service_is_ours; then
        # Ours but not answering: still starting (a concurrent start) or wedged; wait for it below.
        log "emulator pid $(recorded_pid) exists but does not answer yet; waiting"
    else
        port_accepts_connections && die "port $PORT on $HOST is in use by something that is not the emulator"
        local emulator
        emulator=$(ensure_emulator_installed)
        command -v java >/dev/null 2>&1 || die "java not found (the emulator needs Java 17+)"
        mkdir -p "$STATE_DIR" "$DATA_DIR"
        rm -f "$PID_FILE"
        log "starting $emulator on $HOST:$PORT (log: $LOG_FILE)"
        # setsid gives the launcher (a shell script that execs java) its own process group, so
        # stop can signal the whole group and leave no java child behind; it also detaches the
        # emulator from the caller's terminal signals (Ctrl-C in a test run).
        setsid "$emulator" --host="$HOST" --port="$PORT" --data-dir="$DATA_DIR" \
            >"$LOG_FILE" 2>&1 </dev/null &
        echo $! >"$PID_FILE"
    fi
    wait_until_ready
}

remove_state() { remove_created_state "${PUBSUB_EMULATOR_STATE_DIR:-}"; }


case $COMMAND in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) usage_lines 6 ;;
esac
