"""The producer: streams a CSV, types it against the table, packs and sends it to SQS."""

from producer.app import ProduceReport, produce

__all__ = ["ProduceReport", "produce"]
