"""AWS Signature Version 4 for the one S3 request a worker makes most: a small PUT.

A worker on S3 writes one segment per dirty session per flush tick, so that PUT is the storage
request of a busy worker. miniopy-async signs every request from scratch (it derives the
signing key again, four HMACs, and builds the canonical headers through several layers): about
a third of the worker's CPU per PUT (docs/benchmarks.md, "Performance pass 2"). ``Signer``
keeps the day's signing key and signs exactly the headers it is given: the same algorithm
(https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html), cached.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import quote

__all__ = ["Signer", "object_path"]

_ALGORITHM = "AWS4-HMAC-SHA256"


def object_path(bucket: str, key: str) -> str:
    """The path of a path-style object URL, encoded as SigV4's canonical URI wants it."""
    return "/" + quote(bucket, safe="") + "/" + quote(key, safe="/-_.~")


class Signer:
    """Signs requests for one access key in one region; the day's signing key is kept."""

    def __init__(self, access_key: str, secret_key: str, region: str) -> None:
        self.access_key = access_key
        self._secret = secret_key
        self.region = region
        self._day = ""
        self._key = b""

    def _signing_key(self, day: str) -> bytes:
        if day != self._day:
            key = f"AWS4{self._secret}".encode()
            for part in (day, self.region, "s3", "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._day, self._key = day, key
        return self._key

    def sign(
        self,
        method: str,
        host: str,
        path: str,
        payload_sha256: str,
        headers: dict[str, str] | None = None,
        *,
        now: float | None = None,
    ) -> dict[str, str]:
        """The request's headers (``headers``, the payload hash, the date, ``Authorization``),
        every one of them signed, plus ``host``; ``path`` already encoded (``object_path``),
        no query string."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        day = stamp[:8]
        signed = {k.lower(): v.strip() for k, v in (headers or {}).items()}
        signed.update(host=host, **{"x-amz-content-sha256": payload_sha256, "x-amz-date": stamp})
        names = sorted(signed)
        canonical = "\n".join(
            (
                method,
                path,
                "",
                "".join(f"{name}:{signed[name]}\n" for name in names),
                ";".join(names),
                payload_sha256,
            )
        )
        scope = f"{day}/{self.region}/s3/aws4_request"
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        to_sign = f"{_ALGORITHM}\n{stamp}\n{scope}\n{digest}"
        signature = hmac.new(self._signing_key(day), to_sign.encode(), hashlib.sha256).hexdigest()
        signed["authorization"] = (
            f"{_ALGORITHM} Credential={self.access_key}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}"
        )
        del signed["host"]  # aiohttp sends it, from the URL
        return signed
