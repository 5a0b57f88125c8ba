#!/usr/bin/env bash
# Prints the path of a headless-capable Chromium, installing Debian's `chromium` package with apt
# when the machine has none (the report tests render the data-quality report with it).
#
#   scripts/ensure_chromium.sh        # -> /usr/bin/chromium
#
# Environment:
#   CHROMIUM   use this binary instead of looking one up (it must exist)
set -euo pipefail

readonly APT_PACKAGE=chromium

log() { echo "ensure_chromium: $*" >&2; }
die() { log "$*"; exit 1; }

find_chromium() {
    local name
    for name in chromium chromium-browser; do
        if command -v "$name" >/dev/null 2>&1; then
            command -v "$name"
            return 0
        fi
    done
    return 1
}

if [[ -n ${CHROMIUM:-} ]]; then
    [[ -x $CHROMIUM ]] || die "CHROMIUM=$CHROMIUM is not an executable"
    echo "$CHROMIUM"
    exit 0
fi

if path=$(find_chromium); then
    echo "$path"
    exit 0
fi

command -v apt-get >/dev/null 2>&1 || die "no chromium on PATH and apt-get is unavailable"
sudo=""
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "no chromium on PATH; installing it needs root or sudo"
    sudo="sudo"
fi
log "installing $APT_PACKAGE (apt-get update; apt-get install)"
$sudo apt-get update >&2
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y "$APT_PACKAGE" >&2
path=$(find_chromium) || die "apt-get installed $APT_PACKAGE but no chromium is on PATH"
echo "$path"
