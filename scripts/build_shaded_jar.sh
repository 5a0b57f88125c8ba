#!/usr/bin/env bash
# Shared by build_flink_job_server.sh and build_kafka_expansion_service.sh:
#   build_shaded_jar.sh POM CACHE_SUBDIR JAR_STEM [--force]
# Builds the pom's shaded jar (finalName JAR_STEM) with Maven and publishes it atomically as
#   ${FEEDCHECK_CACHE:-$HOME/.cache/feedcheck}/CACHE_SUBDIR/JAR_STEM-<first 8 hex of sha256(POM)>.jar
# Does nothing when that jar exists. Prints the jar path as its last line.
set -euo pipefail

POM="$1"; SUBDIR="$2"; STEM="$3"; shift 3
force=0
if [[ "${1:-}" == "--force" ]]; then force=1; fi

CACHE="${FEEDCHECK_CACHE:-$HOME/.cache/feedcheck}/$SUBDIR"
HASH="$(sha256sum "$POM" | cut -c1-8)"
JAR="$CACHE/$STEM-$HASH.jar"

mkdir -p "$CACHE"
# One build at a time (parallel test sessions may ask for the jar together).
exec 9>"$CACHE/.build-$STEM.lock"
if command -v flock >/dev/null 2>&1; then flock 9; fi

if [[ $force -eq 0 && -s "$JAR" ]]; then
  echo "$JAR"
  exit 0
fi

for tool in java mvn; do
  command -v "$tool" >/dev/null 2>&1 || { echo "build: '$tool' not found" >&2; exit 1; }
done

BUILD_DIR="$CACHE/build-$STEM"
rm -rf "$BUILD_DIR"
echo "build: $JAR (the first run downloads its jars from Maven Central)" >&2
start=$SECONDS
mvn -B -q -Dstyle.color=never -f "$POM" package -Dbuild.dir="$BUILD_DIR" >&2
# Publish atomically so a reader never sees a half-written jar.
cp "$BUILD_DIR/$STEM.jar" "$JAR.tmp"
mv -f "$JAR.tmp" "$JAR"
rm -rf "$BUILD_DIR"
echo "build: $JAR built in $((SECONDS - start)) s" >&2
echo "$JAR"
