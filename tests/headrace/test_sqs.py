"""headrace.sqs: every SQS request and its billed 64 KiB units counted, by operation, in the
process's metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import generate_latest

from headrace.metrics import Metrics
from headrace.settings import Settings
from headrace.sqs import billed_units, dead_letter_arn, open_queue, sqs_client
from testbed.moto import QueuePair

if TYPE_CHECKING:
    from types_aiobotocore_sqs.type_defs import MessageAttributeValueTypeDef, MessageTypeDef


def test_billed_units_are_started_64_kib_chunks_at_least_one() -> None:
    assert billed_units(0) == 1
    assert billed_units(1) == 1
    assert billed_units(65_536) == 1
    assert billed_units(65_537) == 2
    assert billed_units(1_048_576) == 16


def _counted(metrics: Metrics, op: str) -> tuple[float, float]:
    counts = metrics.sqs_counts().get(op, {"requests": 0.0, "billed_units": 0.0})
    return counts["requests"], counts["billed_units"]


async def test_requests_and_units_are_counted_per_operation(
    queue: QueuePair, moto_endpoint: str
) -> None:
    settings = Settings(queue_url=queue.queue_url, sqs_endpoint_url=moto_endpoint)
    body = "x" * 40_000
    attrs: dict[str, MessageAttributeValueTypeDef] = {
        "headrace-enc": {"DataType": "String", "StringValue": "json"}
    }
    metrics = Metrics()
    async with sqs_client(settings, metrics=metrics) as client:
        await client.send_message_batch(
            QueueUrl=queue.queue_url,
            Entries=[
                {"Id": str(i), "MessageBody": body, "MessageAttributes": attrs} for i in range(3)
            ],
        )
        received: list[MessageTypeDef] = []
        while len(received) < 3:
            resp = await client.receive_message(
                QueueUrl=queue.queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
            )
            received += resp.get("Messages", [])
        await client.delete_message_batch(
            QueueUrl=queue.queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(received)
            ],
        )
    # 3 x (40,000 body + 12 + 6 + 4 attribute bytes) = 120,066 bytes: 2 units.
    assert _counted(metrics, "SendMessageBatch") == (1, 2)
    requests, units = _counted(metrics, "ReceiveMessage")
    assert requests >= 1
    assert units >= 2
    assert _counted(metrics, "DeleteMessageBatch") == (1, 1)
    exposed = generate_latest(metrics.registry).decode()
    assert 'headrace_sqs_requests_total{operation="SendMessageBatch"}' in exposed
    assert 'headrace_sqs_billed_units_total{operation="SendMessageBatch"}' in exposed


def test_dead_letter_arn_is_read_from_the_redrive_policy() -> None:
    arn = "arn:aws:sqs:us-east-1:123456789012:jobs-dlq"
    assert dead_letter_arn(f'{{"deadLetterTargetArn": "{arn}", "maxReceiveCount": "3"}}') == arn
    assert dead_letter_arn(None) is None
    assert dead_letter_arn("not json") is None
    assert dead_letter_arn('{"maxReceiveCount": "3"}') is None


async def test_the_dead_letter_queue_is_found_and_its_requests_counted(
    queue: QueuePair, moto_endpoint: str
) -> None:
    settings = Settings(queue_url=queue.queue_url, sqs_endpoint_url=moto_endpoint)
    metrics = Metrics()
    async with open_queue(settings, metrics=metrics) as main:
        dlq = await main.dead_letter()
        assert dlq is not None
        assert dlq.url == queue.dlq_url
        assert await dlq.dead_letter() is None  # the DLQ has no DLQ of its own
        attrs = await dlq.attributes(["ApproximateNumberOfMessages"])
    assert attrs == {"ApproximateNumberOfMessages": "0"}
    assert metrics.value("headrace_sqs_requests_total", operation="GetQueueUrl") == 1
