#!/usr/bin/env bash
# Build the Beam Flink job-server jar from runners/flink_job_server/pom.xml into the cache:
#   ${FEEDCHECK_CACHE:-$HOME/.cache/feedcheck}/flink/beam-flink-job-server-2.75.0-<pom hash>.jar
# (the hash of the pom is in the name, so editing the pom builds a new jar).
# Idempotent: does nothing when the jar is already there (pass --force to rebuild).
# Needs java (17) and mvn; downloads ~200 MB of jars from Maven Central on the first run.
# Prints the jar path as its last line.
set -euo pipefail

BEAM_VERSION=2.75.0
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec bash "$ROOT/scripts/build_shaded_jar.sh" "$ROOT/runners/flink_job_server/pom.xml" flink \
  "beam-flink-job-server-$BEAM_VERSION" "$@"
