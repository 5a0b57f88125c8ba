#!/usr/bin/env bash
# Build the Beam Flink job-server jar from runners/flink_job_server/pom.xml into the cache:
#   ${FEEDCHECK_CACHE:-$HOME/.cache/feedcheck}/flink/beam-flink-job-server-2.75.0.jar
# Idempotent: does nothing when the jar is already there (pass --force to rebuild).
# Needs java (17) and mvn; downloads ~200 MB of jars from Maven Central on the first run.
# Prints the jar path as its last line.
set -euo pipefail

BEAM_VERSION=2.75.0
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
POM="$ROOT/runners/flink_job_server/pom.xml"
CACHE="${FEEDCHECK_CACHE:-$HOME/.cache/feedcheck}/flink"
JAR="$CACHE/beam-flink-job-server-$BEAM_VERSION.jar"

force=0
if [[ "${1:-}" == "--force" ]]; then force=1; fi

mkdir -p "$CACHE"
# One build at a time (parallel test sessions may ask for the jar together).
exec 9>"$CACHE/.build.lock"
if command -v flock >/dev/null 2>&1; then flock 9; fi

if [[ $force -eq 0 && -s "$JAR" ]]; then
  echo "$JAR"
  exit 0
fi

for tool in java mvn; do
  command -v "$tool" >/dev/null 2>&1 || { echo "build_flink_job_server: '$tool' not found" >&2; exit 1; }
done

BUILD_DIR="$CACHE/build"
rm -rf "$BUILD_DIR"
echo "build_flink_job_server: building $JAR (first run downloads ~200 MB from Maven Central)" >&2
mvn -B -q -Dstyle.color=never -f "$POM" package -Dbuild.dir="$BUILD_DIR" >&2
# Publish atomically so a reader never sees a half-written jar.
cp "$BUILD_DIR/beam-flink-job-server-$BEAM_VERSION.jar" "$JAR.tmp"
mv -f "$JAR.tmp" "$JAR"
rm -rf "$BUILD_DIR"
echo "$JAR"
