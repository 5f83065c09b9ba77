"""Amazon SQS Extended Client payloads: read from S3 (streamed, capped), deleted on request.

A pointer message (:func:`headrace.foreign.parse_pointer`) names an S3 object holding the
real body. The worker reads it before decoding, holding at most ``worker.max_payload_bytes``;
a pointer to nothing (no such bucket or key, access denied) or to something too big is
poison, an S3 that does not answer hands the message back for later. With
``worker.delete_payloads`` the object is deleted once the message's rows committed and the
message was deleted, never before (a redelivery needs it until then).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from headrace.aws import is_transient
from headrace.errors import EnvelopeError, HeadraceError
from headrace.foreign import S3Pointer

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

__all__ = ["PayloadUnavailable", "Payloads"]

log = structlog.get_logger("worker.payloads")

CHUNK_BYTES = 1024 * 1024


class PayloadUnavailable(HeadraceError):
    """S3 did not answer for a payload: the message is handed back and tried later."""

    transient = True


class Payloads:
    def __init__(self, s3: S3Client, *, max_bytes: int, delete: bool) -> None:
        self._s3 = s3
        self._max_bytes = max_bytes
        self._delete = delete

    async def fetch(self, pointer: S3Pointer) -> str:
        """The payload's text; :class:`EnvelopeError` when it cannot be one."""
        cap = self._max_bytes
        if pointer.size is not None and pointer.size > cap:
            raise EnvelopeError(f"Extended Client payload of {pointer.size} bytes, over {cap}")
        try:
            resp = await self._s3.get_object(Bucket=pointer.bucket, Key=pointer.key)
            if int(resp.get("ContentLength", 0)) > cap:
                raise EnvelopeError(f"S3 payload of {resp['ContentLength']} bytes, over {cap}")
            chunks: list[bytes] = []
            total = 0
            async with resp["Body"] as stream:
                while chunk := await stream.read(CHUNK_BYTES):
                    total += len(chunk)
                    if total > cap:
                        raise EnvelopeError(f"S3 payload longer than {cap} bytes")
                    chunks.append(chunk)
        except (ClientError, BotoCoreError) as exc:
            where = f"s3://{pointer.bucket}/{pointer.key}"
            if is_transient(exc):
                raise PayloadUnavailable(f"cannot read {where}: {exc}"[:500]) from exc
            raise EnvelopeError(f"Extended Client payload {where}: {exc}"[:500]) from None
        try:
            return b"".join(chunks).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EnvelopeError(f"S3 payload is not UTF-8: {exc}") from None

    async def committed(self, pointers: Sequence[S3Pointer]) -> None:
        """The messages of ``pointers`` committed and were deleted: drop their objects, if
        asked to. A failure only leaves the object behind (logged)."""
        if not self._delete:
            return
        for pointer in pointers:
            try:
                await self._s3.delete_object(Bucket=pointer.bucket, Key=pointer.key)
            except (ClientError, BotoCoreError) as exc:
                log.warning(
                    "payload_delete_failed",
                    bucket=pointer.bucket,
                    key=pointer.key,
                    error=str(exc)[:300],
                )
