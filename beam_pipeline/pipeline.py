"""The Beam graph, top to bottom: sources, decode, sequence, aggregate, sinks.

The same graph serves batch (files) and streaming (Pub/Sub, Kafka, files); only the sources and sinks
differ.
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.transforms.window import GlobalWindows

from beam_pipeline.options import FeedCheckOptions
from beam_pipeline.settings import effective_settings
from transforms.aggregate import (AlertRules, CountErrorsAndAlert, EnforceBadRecordRate, Summarize,
                                  dead_letter_error)
from transforms.backpressure import MonitorInputLag
from transforms.cursors import cursor_folder, file_progress_folder
from transforms.decode import DecodeRecords
from transforms.read import ReadFeedFiles, ReadFeedMessages
from transforms.read_kafka import ReadFeedKafka
from transforms.sequence import SequenceFeeds
from transforms.sinks import WriteOutputs
from transforms.tables import part_row_times, table_row_times
from transforms.tags import (ALERTS, BOOKS, CLEAN, CORRUPT_PERIODS, DEAD_LETTER, ERROR_COUNTS,
                            GAPS, RECOVERY_REQUESTS, STATUS)


def build_pipeline(pipeline: beam.Pipeline, options: FeedCheckOptions, resume=None,
                   resume_files=None) -> None:
    """`resume`: a restarted streaming job's cursors ({key: SequencerState}); `resume_files`: how
    far its last stop had read each followed file ({path: FileProgress}); transforms/cursors.py."""
    streaming = options.view_as(StandardOptions).streaming
    ops = options.view_as(FeedCheckOptions)
    watches_files = bool(streaming and ops.watch_seconds and not ops.input_subscription
                         and not ops.kafka_topic)

    # Sources
    lag_alerts = []
    if ops.input_subscription or ops.kafka_topic:
        if ops.kafka_topic:
            from runners.kafka import expansion_service

            read = pipeline | "ReadKafka" >> ReadFeedKafka(
                ops.kafka_bootstrap_servers, ops.kafka_topic, ops.kafka_group_id,
                expansion_service(ops.kafka_expansion_service), ops.max_record_bytes,
                ops.max_message_bytes)
        else:
            read = pipeline | "ReadMessages" >> ReadFeedMessages(
                ops.input_subscription, ops.max_record_bytes, ops.max_message_bytes)
        batches, read_failures, read_tallies = read.batches, [read.dead_letter], [read.tally]
        lag = read.input_lag | "InputLag" >> MonitorInputLag(ops.lag_warning, ops.lag_critical)
        lag_alerts, read_tallies = [lag.alerts], read_tallies + [lag.tally]
    else:
        read = pipeline | "ReadFiles" >> ReadFeedFiles(
            ops.input_globs(), ops.input_format, ops.max_record_bytes,
            ops.watch_seconds if streaming else None, ops.skipped_file_names(),
            ops.quiet_seconds, file_progress_folder(ops.output) if watches_files else None,
            resume_files)
        batches, read_failures, read_tallies = read.batches, [read.dead_letter], [read.tally]

    # Decode
    decoded = batches | "Decode" >> DecodeRecords(ops.max_record_bytes, columnar=not streaming)

    # Sequence
    sequenced = decoded.events | "Sequence" >> SequenceFeeds(
        ops.policy(), streaming, work_dir=None if streaming else ops.resolved_work_dir(),
        run_span_ids=ops.run_span_ids, reorder_timeout_s=ops.reorder_timeout,
        stall_timeout_s=ops.stall_timeout, resume=resume,
        cursor_folder=cursor_folder(ops.output) if ops.input_subscription or watches_files
        else None,
        book_checks=ops.book_checks, book_snapshots=ops.book_snapshots,
        status_seconds=ops.output_flush_seconds)

    # Aggregate
    dead_letters = (read_failures + [decoded.dead_letter, sequenced.dead_letter]
                    | "AllDeadLetters" >> beam.Flatten())
    tallies = read_tallies + [decoded.tally, sequenced.tally] | "AllTallies" >> beam.Flatten()
    errors = ((sequenced.errors, dead_letters | "DeadLetterErrors" >> beam.Map(dead_letter_error))
              | "AllErrors" >> beam.Flatten())
    clean_times = sequenced.clean | "CleanRowTimes" >> beam.FlatMap(
        table_row_times if streaming else part_row_times)   # pa.Table / CleanPart -> RowTimes
    counted = (errors, clean_times) | "CountErrors" >> CountErrorsAndAlert(
        ops.error_window, AlertRules(ops.alert_warning_count, ops.alert_critical_count,
                                     ops.alert_gap_rate), ops.allowed_lateness, streaming)
    count_alerts = counted["alerts"]
    if lag_alerts:   # one windowing per Flatten: the count alerts are in event-time windows, the
        # lag alerts in the global one (Flink's coder fails on the mix; the sinks re-window anyway)
        count_alerts = count_alerts | "AlertsGlobally" >> beam.WindowInto(GlobalWindows())
    alerts = [count_alerts] + lag_alerts | "AllAlerts" >> beam.Flatten()
    summary = ((tallies, dead_letters, sequenced.gaps, sequenced.corrupt_periods)
               | "Summarize" >> Summarize(streaming))
    if streaming and ops.max_bad_record_rate is not None:
        summary = summary | "BadRecordLimit" >> beam.ParDo(EnforceBadRecordRate(ops.max_bad_record_rate))

    # Sinks
    _ = {CLEAN: sequenced.clean, DEAD_LETTER: dead_letters, GAPS: sequenced.gaps,
         CORRUPT_PERIODS: sequenced.corrupt_periods,
         RECOVERY_REQUESTS: sequenced.recovery_requests,
         ERROR_COUNTS: counted[ERROR_COUNTS], ALERTS: alerts, STATUS: sequenced[STATUS],
         "summary": summary,
         **({BOOKS: sequenced[BOOKS]} if ops.book_snapshots else {})} | "Write" >> WriteOutputs(
             ops, streaming, settings=effective_settings(options))
