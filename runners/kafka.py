"""Kafka on Flink: the expansion service that expands Beam Java's KafkaIO for the Python graph.

Maven Central as reached here serves no ``beam-sdks-java-io-expansion-service`` jar, so
``scripts/build_kafka_expansion_service.sh`` assembles one (runners/kafka_expansion_service/pom.xml,
Beam Java 2.70.0 as in the job server) into ``<cache>/kafka/``. The transforms it expands run in the
job server's JVM (environment EMBEDDED: the job-server jar carries the same Kafka IO classes), as
the default Java environment is a Docker image.
"""
from __future__ import annotations

from pathlib import Path

from runners.flink import KAFKA_READ_EXPERIMENT, cached_jar

#: Beam Java version of the expansion service: the job server's (runners/flink.BEAM_JAVA_VERSION).
EXPANSION_BEAM_VERSION = "2.70.0"
_ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = _ROOT / "scripts" / "build_kafka_expansion_service.sh"
POM = _ROOT / "runners" / "kafka_expansion_service" / "pom.xml"
#: Arguments the expansion service is started with after its port: Java transforms run embedded
#: in the job server (no Docker here), and KafkaIO expands to its UnboundedSource reader
#: (runners/flink.KAFKA_READ_EXPERIMENT).
EXPANSION_ARGS = ("--defaultEnvironmentType=EMBEDDED", f"--experiments={KAFKA_READ_EXPERIMENT}")


def expansion_service_jar(build: bool = True) -> str:
    """Path of the cached expansion-service jar; builds it first (mvn, ~1.5 min) if missing."""
    return cached_jar("kafka", f"beam-kafka-expansion-service-{EXPANSION_BEAM_VERSION}", POM,
                      BUILD_SCRIPT, build)


def expansion_service(address: str | None = None):
    """What ReadFromKafka's `expansion_service` takes: `address` (host:port of a running expansion
    service, or a jar path), by default the cached jar, started by Beam for the expansion and
    stopped after it."""
    from apache_beam.transforms.external import JavaJarExpansionService

    if address and not address.endswith(".jar"):
        return address
    return JavaJarExpansionService(address or expansion_service_jar(),
                                   append_args=list(EXPANSION_ARGS))
