"""A fake AWS environment, an in-process moto endpoint on 127.0.0.1 and queue helpers.

Used by the tests (a moto server thread per session) and by the benchmark (a moto server
process of its own, :mod:`bench.motoserver`, with the same fake credentials and queues).

Defaults of a queue created by moto 5.2.5 without attributes (moto/sqs/models.py):
VisibilityTimeout=30, MessageRetentionPeriod=345600 (4 days), DelaySeconds=0,
ReceiveMessageWaitTimeSeconds=0 and MaximumMessageSize=1048576 (1 MiB,
``moto.sqs.constants.MAXIMUM_MESSAGE_LENGTH``; AWS raised its own default and maximum
from 256 KiB to 1 MiB in 2025). Allowed range for the attribute: 1024..1048576.

How moto 5.2.5 enforces the size (less exactly than AWS, keep it in mind when a test is
about oversized messages):
* SendMessage: ``len(MessageBody) > queue.MaximumMessageSize``, counting *characters*,
  not UTF-8 bytes, and ignoring message attributes.
* SendMessageBatch: the sum of the bodies' lengths against the fixed 1 MiB, whatever the
  queue's MaximumMessageSize says (error ``BatchRequestTooLong``).

moto keeps its state per process in module globals, so every test should use fresh,
randomly named queues (:func:`create_queue_pair`); nothing is reset between tests.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

from aiobotocore.session import get_session
from moto.server import ThreadedMotoServer

if TYPE_CHECKING:
    from types_aiobotocore_sqs.literals import QueueAttributeNameType

__all__ = [
    "AWS_VARS_TO_UNSET",
    "FAKE_ACCESS_KEY",
    "FAKE_SECRET_KEY",
    "REGION",
    "QueuePair",
    "create_queue_pair",
    "fake_aws_env",
    "start_moto",
]

# Variables that could point boto at real accounts, other endpoints or slow metadata
# lookups if they leak in from a developer's shell or CI: tests and the benchmark drop them.
AWS_VARS_TO_UNSET = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_SQS",
    "AWS_ENDPOINT_URL_S3",
)
REGION = "us-east-1"
FAKE_ACCESS_KEY = "testing"
FAKE_SECRET_KEY = "testing"  # moto accepts any credentials
DLQ_RETENTION_S = 14 * 24 * 3600  # the SQS maximum, as for a real DLQ
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_-]{1,50}$")


def fake_aws_env(
    config_file: str = os.devnull, credentials_file: str = os.devnull
) -> dict[str, str]:
    """Variables for fake credentials in :data:`REGION`, no config files, no instance metadata.

    Set them and drop :data:`AWS_VARS_TO_UNSET` too: a leftover profile or endpoint would win.
    """
    return {
        "AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_CONFIG_FILE": config_file,
        "AWS_SHARED_CREDENTIALS_FILE": credentials_file,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


class QueuePair(NamedTuple):
    """Main queue and its dead-letter queue (unpacks as ``queue_url, dlq_url``)."""

    queue_url: str
    dlq_url: str


def start_moto() -> tuple[ThreadedMotoServer, str]:
    """Start a threaded moto server on 127.0.0.1 with a kernel-assigned port.

    Returns the server (call ``.stop()`` when done) and its endpoint URL.
    """
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()  # returns once the socket is bound and listening
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


async def create_queue_pair(
    endpoint_url: str,
    name_prefix: str,
    *,
    visibility_timeout_s: int,
    max_receive_count: int,
    extra_attributes: Mapping[QueueAttributeNameType, str] | None = None,
) -> QueuePair:
    """Create a fresh ``<prefix>-<random>-dlq`` and ``<prefix>-<random>`` with a RedrivePolicy.

    ``extra_attributes`` go to the main queue only (e.g. ``{"MaximumMessageSize": "2048"}``).
    """
    if not _PREFIX_RE.match(name_prefix):
        raise ValueError(f"queue name prefix must match {_PREFIX_RE.pattern}: {name_prefix!r}")
    name = f"{name_prefix}-{uuid.uuid4().hex[:16]}"
    session = get_session()
    async with session.create_client(
        "sqs",
        region_name=REGION,
        endpoint_url=endpoint_url,
        aws_access_key_id=FAKE_ACCESS_KEY,
        aws_secret_access_key=FAKE_SECRET_KEY,
    ) as sqs:
        dlq = await sqs.create_queue(
            QueueName=f"{name}-dlq",
            Attributes={"MessageRetentionPeriod": str(DLQ_RETENTION_S)},
        )
        dlq_url = dlq["QueueUrl"]
        dlq_attrs = await sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])
        redrive = {
            "deadLetterTargetArn": dlq_attrs["Attributes"]["QueueArn"],
            "maxReceiveCount": str(max_receive_count),
        }
        attributes: dict[QueueAttributeNameType, str] = {
            "VisibilityTimeout": str(visibility_timeout_s),
            "RedrivePolicy": json.dumps(redrive),
            **(extra_attributes or {}),
        }
        main = await sqs.create_queue(QueueName=name, Attributes=attributes)
        return QueuePair(queue_url=main["QueueUrl"], dlq_url=dlq_url)
