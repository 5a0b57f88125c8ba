# A local background service on 127.0.0.1 (the Pub/Sub emulator, a Kafka broker): its pid file,
# port checks, the wait for it to be ready, and stop. Sourced by scripts/pubsub_emulator.sh and
# scripts/kafka.sh, which set before sourcing:
#
#   SERVICE          the log prefix ("kafka")
#   WHAT             what the messages call it ("the broker")
#   HOST PORT        where it listens
#   PID_FILE LOG_FILE DATA_DIR STATE_DIR DEFAULT_STATE_PARENT
#   START_TIMEOUT_S STOP_TIMEOUT_S
#
# and define:
#   service_is_ours          the pid file names a live process that is this service on this port
#   service_is_ready         it serves clients
#   service_answers_unowned  one this script did not start serves clients on the port
#   print_exports            the "export ..." line that points clients at it
#   remove_state             removes what start created (remove_created_state does most of it)

log() { echo "$SERVICE: $*" >&2; }
die() { log "$*"; exit 1; }

# The usage lines of the calling script's header (lines 2 to $1), without their "# ".
usage_lines() { sed -n "2,${1}p" "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# Dies unless $1 is a port number below $2 (a service that also takes port+1 passes 65535).
check_port() {
    [[ $1 =~ ^[0-9]+$ ]] && (( $1 > 0 && $1 < $2 )) || die "invalid port: $1"
}

port_accepts_connections() { (exec 3<>"/dev/tcp/$HOST/${1:-$PORT}") 2>/dev/null; }

recorded_pid() {
    [[ -s $PID_FILE ]] || return 1
    local pid; pid=$(<"$PID_FILE")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    echo "$pid"
}

# True when the pid file names a live process whose command line holds every argument; guards
# against signalling an unrelated process that reused a stale pid.
recorded_cmdline_has() {
    local pid cmdline pattern
    pid=$(recorded_pid) || return 1
    [[ -r /proc/$pid/cmdline ]] || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    for pattern in "$@"; do
        [[ $cmdline == *"$pattern"* ]] || return 1
    done
}

# After a launch that wrote the pid file: waits until the service is ready, or exits 1 when it
# died or did not get ready within START_TIMEOUT_S (then it is stopped).
wait_until_ready() {
    local pid deadline=$((SECONDS + START_TIMEOUT_S))
    pid=$(recorded_pid)
    until service_is_ready; do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "$WHAT exited during start-up; last log lines:"
            tail -n 20 "$LOG_FILE" >&2 || true
            rm -f "$PID_FILE"
            exit 1
        fi
        if (( SECONDS >= deadline )); then
            log "$WHAT did not get ready within ${START_TIMEOUT_S}s; stopping it. Last log lines:"
            tail -n 20 "$LOG_FILE" >&2 || true
            cmd_stop
            exit 1
        fi
        sleep 0.2
    done
    log "ready on $HOST:$PORT (pid $pid)"
    print_exports
}

cmd_stop() {
    if ! service_is_ours; then
        remove_state
        log "not running on port $PORT (nothing started by this script)"
        return 0
    fi
    local pid pgid
    pid=$(recorded_pid)
    pgid=$(ps -o pgid= -p "$pid" | tr -d ' ')
    # Started with setsid, the service leads its own process group: signal the whole group (a
    # launcher script and its java), leaving no child behind; else the pid alone.
    local target=$pid
    [[ $pgid == "$pid" ]] && target=-$pgid
    kill -TERM -- "$target" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT_S))
    while kill -0 "$pid" 2>/dev/null && (( SECONDS < deadline )); do
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$WHAT ignored SIGTERM for ${STOP_TIMEOUT_S}s; sending SIGKILL"
        kill -KILL -- "$target" 2>/dev/null || true
    fi
    remove_state
    log "stopped (pid $pid)"
}

# Removes what start created: the pid file, the log, the data dir, the files given after $1 and
# the state dir once empty; and, unless the user chose the state dir ($1: their choice, or
# empty), its parent once no port uses it.
remove_created_state() {
    local chosen=$1
    shift
    rm -f "$PID_FILE" "$LOG_FILE" "$@"
    rm -rf "$DATA_DIR"
    rmdir "$STATE_DIR" 2>/dev/null || true
    [[ -n $chosen ]] || rmdir "$DEFAULT_STATE_PARENT" 2>/dev/null || true
}

# Exit 0: running (ours, or one this script did not start answers); 1: ours but not serving
# (starting or wedged); 3: not running.
cmd_status() {
    if service_is_ours && service_is_ready; then
        log "running on $HOST:$PORT (pid $(recorded_pid))"
        print_exports
        return 0
    fi
    if service_answers_unowned; then
        log "one not started by this script answers on $HOST:$PORT"
        print_exports
        return 0
    fi
    if service_is_ours; then
        log "process $(recorded_pid) exists but does not answer on $HOST:$PORT (starting or wedged)"
        return 1
    fi
    log "not running on $HOST:$PORT"
    return 3
}
