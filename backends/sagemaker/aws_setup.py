"""Everything an experiment needs from AWS before its first job: the clients, a check of the
credentials, the execution role and the bucket (one clear error each, before anything
starts), and the training code uploaded once."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from backends.aws_retry import error_code, error_message
from backends.sagemaker.checkpoints import split_s3
from backends.sagemaker.jobs import ROLE_ARN_PATTERN, digest, package_source, reporter_files

logger = logging.getLogger(__name__)

#: the AWS services the backend talks to
SERVICES: tuple[Literal["sagemaker", "s3", "logs", "sts", "iam"], ...] = (
    "sagemaker", "s3", "logs", "sts", "iam")


class SageMakerSetupError(ValueError):
    """The AWS setup cannot run jobs (credentials, role, bucket, region); nothing was started.
    A user's error (one line naming the option), so a ValueError."""


def make_clients(clients: Mapping[str, Any] | None, boto_session: Any | None,
                 region: str | None, endpoint_url: str | None) -> dict[str, Any]:
    """The clients given, and boto3 clients (of `boto_session`, or a new session) for the
    services left out."""
    given = dict(clients or {})
    if all(name in given for name in SERVICES):
        return given
    import boto3
    from botocore.config import Config
    from botocore.exceptions import NoRegionError

    session = boto_session or boto3.Session(region_name=region)
    config = Config(retries={"mode": "standard", "max_attempts": 3},
                    user_agent_extra="tunesmith")
    try:
        for name in SERVICES:
            if name not in given:
                given[name] = session.client(name, region_name=region,
                                             endpoint_url=endpoint_url, config=config)
    except NoRegionError:
        raise SageMakerSetupError(
            "backend_options.region: no AWS region configured (set region, or AWS_REGION)"
        ) from None
    return given


def check_setup(clients: Mapping[str, Any], call: Callable[..., Any], role: str,
                bucket: str) -> str | None:
    """Check the credentials (STS), the role (IAM) and the bucket (S3); the role's ARN, or
    None when the role cannot be read (no iam:GetRole) but is given as an ARN."""
    sts, iam, s3 = clients["sts"], clients["iam"], clients["s3"]
    try:
        account = call(sts.get_caller_identity)["Account"]
    except NoCredentialsError:
        raise SageMakerSetupError(
            "no AWS credentials found: configure a profile, AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY or an instance role (see docs/sagemaker.md)"
        ) from None
    except ClientError as err:
        raise SageMakerSetupError(
            f"AWS rejected the credentials ({error_code(err)}): {error_message(err)}"
        ) from None
    except BotoCoreError as err:  # no endpoint there: an unknown region, or no network
        raise SageMakerSetupError(
            f"backend_options.region: cannot reach AWS ({err}); check the region (and "
            "endpoint_url) and the network") from None
    role_name = role.rsplit("/", 1)[-1]
    arn = None
    try:
        arn = call(iam.get_role, RoleName=role_name)["Role"]["Arn"]
    except ClientError as err:
        code = error_code(err)
        if code == "NoSuchEntity":
            raise SageMakerSetupError(
                f"backend_options.role: IAM role {role_name!r} does not exist in account "
                f"{account}; create it (see docs/sagemaker.md)"
            ) from None
        if code not in ("AccessDenied", "AccessDeniedException") or \
                not ROLE_ARN_PATTERN.match(role):
            raise SageMakerSetupError(
                f"backend_options.role: cannot read IAM role {role_name!r} "
                f"({code}): {error_message(err)}"
            ) from None
        logger.warning("cannot check IAM role %r (no iam:GetRole permission); going on",
                       role_name)
    try:
        call(s3.head_bucket, Bucket=bucket)
    except ClientError as err:
        code = error_code(err)
        what = "does not exist" if code in ("404", "NoSuchBucket", "NotFound") else \
            f"is not accessible ({code})"
        raise SageMakerSetupError(
            f"backend_options.bucket: S3 bucket {bucket!r} {what}"
        ) from None
    return arn


def source_layout(entry_point: str | None, source_dir: str | None) -> tuple[Path | None, str | None]:
    """(the folder to upload, the entry point relative to it)."""
    if entry_point is None:
        if source_dir is not None:
            raise ValueError("backend_options.source_dir: needs an entry_point")
        return None, None
    if source_dir is None:
        path = Path(entry_point)
        folder, entry = path.parent, path.name
    else:
        folder, entry = Path(source_dir), entry_point
    if not folder.is_dir():
        raise ValueError(f"backend_options.source_dir: {str(folder)!r} is not a folder")
    if not (folder / entry).is_file():
        raise ValueError(f"backend_options.entry_point: {entry!r} is not a file in {str(folder)!r}")
    return folder, Path(entry).as_posix()


def upload_source(s3: Any, call: Callable[..., Any], folder: Path, bundle_reporter: bool,
                  s3_root: str) -> str:
    """Upload `folder` as `<s3_root>/source/<digest>/sourcedir.tar.gz` (with `hpo_core/report.py`
    when `bundle_reporter`); its URI."""
    data = package_source(folder, reporter_files(folder) if bundle_reporter else None)
    uri = f"{s3_root}/source/{digest(data)}/sourcedir.tar.gz"
    bucket, key = split_s3(uri)
    call(s3.put_object, Bucket=bucket, Key=key, Body=data)
    logger.info("uploaded %s (%d bytes) to %s", folder, len(data), uri)
    return uri
