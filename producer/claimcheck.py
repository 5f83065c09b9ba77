"""The claim check: a row bigger than any message travels in S3 behind a pointer.

Off by default (such a row is rejected). With ``producer.claim_check_bucket`` set, the
packer makes the row a message of its own, over the queue's limit; this module puts that
message's body in S3 at ``<prefix><run id>/<seq>`` (deterministic: a re-run writes the same
object again) and sends instead the Amazon SQS Extended Client pointer
``["software.amazon.payloadoffloading.PayloadS3Pointer", {"s3BucketName", "s3Key"}]`` with
the attribute ``ExtendedPayloadSize`` beside headrace's own, which the worker resolves
(:mod:`worker.payloads`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from headrace.aws import s3_client
from headrace.envelope import EncodedMessage
from headrace.errors import HeadraceError
from headrace.foreign import POINTER_CLASSES
from headrace.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

__all__ = ["ClaimCheck", "ClaimMessage", "open_claim_check"]

POINTER_CLASS = "software.amazon.payloadoffloading.PayloadS3Pointer"
assert POINTER_CLASS in POINTER_CLASSES


@dataclass(frozen=True)
class ClaimMessage(EncodedMessage):
    """A pointer message standing for an envelope stored in S3."""

    payload_bytes: int = 0

    def attributes(self, signing_key: bytes | None = None) -> dict[str, Any]:
        attrs = super().attributes(signing_key)
        attrs["ExtendedPayloadSize"] = {
            "DataType": "Number",
            "StringValue": str(self.payload_bytes),
        }
        return attrs


class ClaimCheck:
    def __init__(self, s3: S3Client, bucket: str, prefix: str) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._prefix = prefix

    async def pointer(self, run_id: str, message: EncodedMessage) -> ClaimMessage:
        """Store ``message``'s body in S3; the pointer message to send in its place."""
        key = f"{self._prefix}{run_id}/{message.seq:010d}"
        payload = message.body.encode("utf-8")
        try:
            await self._s3.put_object(Bucket=self._bucket, Key=key, Body=payload)
        except (ClientError, BotoCoreError) as exc:
            raise HeadraceError(
                f"claim check: cannot write s3://{self._bucket}/{key}: {exc}"[:500]
            ) from exc
        body = orjson.dumps([POINTER_CLASS, {"s3BucketName": self._bucket, "s3Key": key}]).decode()
        return ClaimMessage(
            seq=message.seq,
            body=body,
            encoding=message.encoding,
            size=len(body) + 256,  # with the attributes, as SQS counts them
            row_count=message.row_count,
            reject_count=message.reject_count,
            raw_bytes=message.raw_bytes,
            payload_bytes=len(payload),
        )


@asynccontextmanager
async def open_claim_check(settings: Settings) -> AsyncIterator[ClaimCheck | None]:
    """The claim check when ``producer.claim_check_bucket`` is set, else None."""
    p = settings.producer
    if p.claim_check_bucket is None:
        yield None
        return
    async with s3_client(settings) as s3:
        yield ClaimCheck(s3, p.claim_check_bucket, p.claim_check_prefix)
