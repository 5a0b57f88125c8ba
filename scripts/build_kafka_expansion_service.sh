#!/usr/bin/env bash
# Build the Beam expansion service with Kafka IO from runners/kafka_expansion_service/pom.xml into
# the cache:
#   ${FEEDCHECK_CACHE:-$HOME/.cache/feedcheck}/kafka/beam-kafka-expansion-service-2.70.0-<pom hash>.jar
# Run it as `java -jar <jar> PORT --defaultEnvironmentType=EMBEDDED` (Python's ReadFromKafka starts
# it itself when given the jar path). Idempotent (--force rebuilds); prints the jar path last.
set -euo pipefail

BEAM_JAVA_VERSION=2.70.0
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec bash "$ROOT/scripts/build_shaded_jar.sh" "$ROOT/runners/kafka_expansion_service/pom.xml" kafka \
  "beam-kafka-expansion-service-$BEAM_JAVA_VERSION" "$@"
