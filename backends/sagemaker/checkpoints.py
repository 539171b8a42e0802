"""Trial checkpoints in S3: SageMaker syncs a job's `/opt/ml/checkpoints` to the trial's
prefix and restores it into the trial's next job; PBT's "start from another trial's
checkpoint" is a copy between two trials' prefixes, done here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MAX_COPY_OBJECT_BYTES = 5 * 1024**3  # CopyObject's limit


def copy_prefix(s3: Any, call: Callable[..., Any], source_uri: str, target_uri: str) -> int:
    """Copy every object under `source_uri` to the same key under `target_uri` (both
    `s3://bucket/prefix/` in one bucket); the number copied. botocore's errors propagate."""
    bucket, src_prefix = split_s3(source_uri)
    _, dst_prefix = split_s3(target_uri)
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": src_prefix}
    copied = 0
    while True:
        page = call(s3.list_objects_v2, **kwargs)
        for obj in page.get("Contents", []):
            key = dst_prefix + obj["Key"][len(src_prefix):]
            source_key = {"Bucket": bucket, "Key": obj["Key"]}
            if obj.get("Size", 0) > MAX_COPY_OBJECT_BYTES:  # multipart, by boto3
                s3.copy(CopySource=source_key, Bucket=bucket, Key=key)
            else:
                call(s3.copy_object, Bucket=bucket, Key=key, CopySource=source_key)
            copied += 1
        if not page.get("IsTruncated"):
            return copied
        kwargs["ContinuationToken"] = page["NextContinuationToken"]


def split_s3(uri: str) -> tuple[str, str]:
    """`s3://bucket/key` as (bucket, key)."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key
