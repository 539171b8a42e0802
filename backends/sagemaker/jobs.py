"""The SageMaker training job of a trial: its name, its S3 layout, its CreateTrainingJob request.

S3 layout under `s3://<bucket>/[<s3_prefix>/]<experiment>/`: `source/<digest>/sourcedir.tar.gz`
(the training code, uploaded once), and per trial `<trial>/checkpoints/` (SageMaker syncs
`/opt/ml/checkpoints` there, and restores it into a resumed job) and `<trial>/output/`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpo_core.report import CHECKPOINT_ENV, TRIAL_ID_ENV
from hpo_core.secrets import is_reference, resolve

JOB_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
MAX_JOB_NAME = 63
PREFIX_MAX = 32
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
ENV_NAME_PATTERN = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,511}$")
INSTANCE_TYPE_PATTERN = re.compile(r"ml\.[a-z0-9]+\.[a-z0-9]+")  # ml.<family>.<size>
ROLE_ARN_PATTERN = re.compile(r"^arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+$")
ROLE_NAME_PATTERN = re.compile(r"^[\w+=,.@-]{1,64}$")
SOURCE_EXCLUDES = {"__pycache__", ".git", ".ipynb_checkpoints", ".venv", ".mypy_cache", ".ruff_cache"}


def name_prefix(experiment: str) -> str:
    """The experiment name as the start of job names: letters, digits and single hyphens."""
    cleaned = re.sub(r"[^a-zA-Z0-9]+", "-", experiment).strip("-")
    return cleaned[:PREFIX_MAX].rstrip("-") or "tunesmith"


def new_token() -> str:
    """A short random token that keeps job names of different sessions apart."""
    return uuid.uuid4().hex[:6]


def job_name(prefix: str, token: str, trial_id: int, attempt: int) -> str:
    """`<prefix>-<token>-<trial>-<attempt>`, at most 63 characters, valid for SageMaker."""
    suffix = f"-{token}-{int(trial_id)}-{int(attempt)}"
    name = prefix[: MAX_JOB_NAME - len(suffix)].rstrip("-") + suffix
    if not JOB_NAME_PATTERN.fullmatch(name):
        raise ValueError(f"job name {name!r} is not a valid SageMaker training job name")
    return name


def encode_hyperparameter(value: Any) -> str:
    """JSON text of a value, as SageMaker framework containers decode hyperparameters."""
    return json.dumps(value)


def package_source(source_dir: Path, extra_files: Mapping[str, bytes] | None = None) -> bytes:
    """A gzipped tar of `source_dir` (caches and VCS folders left out) plus `extra_files`
    (archive name -> content), byte-identical for identical content, so its digest names it."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w") as tar:
            for path in sorted(source_dir.rglob("*")):
                relative = path.relative_to(source_dir)
                if set(relative.parts) & SOURCE_EXCLUDES or path.suffix == ".pyc":
                    continue
                if not path.is_file():
                    continue
                info = tar.gettarinfo(str(path), arcname=relative.as_posix())
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                with path.open("rb") as f:
                    tar.addfile(info, f)
            for name, data in sorted((extra_files or {}).items()):
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def reporter_files(source_dir: Path) -> dict[str, bytes]:
    """`hpo_core/report.py` (standard library only) for the job's code, so scripts written for
    the local backend (`from hpo_core.report import report`) run unchanged in any container;
    nothing if the source dir brings its own `hpo_core`."""
    if (source_dir / "hpo_core").exists():
        return {}
    from hpo_core import report

    return {"hpo_core/__init__.py": b"", "hpo_core/report.py": Path(report.__file__).read_bytes()}


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def resolve_secrets(
    secret_hyperparameters: Iterable[str] | Mapping[str, str] | None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Secret values by name: given directly (a mapping, from Python), or for a list of names
    read from the launcher's environment (`NAME`, or its upper-case form)."""
    if not secret_hyperparameters:
        return {}
    environ = os.environ if environ is None else environ
    field_name = "backend_options.secret_hyperparameters"
    if isinstance(secret_hyperparameters, Mapping):
        secrets = {str(k): v if is_reference(v) else str(v)
                   for k, v in secret_hyperparameters.items()}  # references: resolved at launch
    elif isinstance(secret_hyperparameters, str):
        raise ValueError(f"{field_name}: must be a list of names or a mapping, got a string")
    else:
        secrets = {}
        for name in secret_hyperparameters:
            value = environ.get(str(name), environ.get(str(name).upper()))
            if value is None:
                raise ValueError(
                    f"{field_name}: no value for {name!r}; set the environment variable "
                    f"{name!r} (or {str(name).upper()!r}) where the experiment is launched"
                )
            secrets[str(name)] = value
    for name, value in secrets.items():
        if not ENV_NAME_PATTERN.fullmatch(name):
            raise ValueError(f"{field_name}: {name!r} is not a valid environment variable name")
        if not value:
            raise ValueError(f"{field_name}: the value of {name!r} is empty")
    return secrets


@dataclass
class JobSettings:
    """What every training job of an experiment shares (see `SageMakerBackend` for the fields)."""

    image_uri: str
    role_arn: str
    bucket: str
    s3_prefix: str = ""
    entry_point: str | None = None
    instance_type: str = "ml.m5.xlarge"
    instance_count: int = 1
    volume_size_gb: int = 30
    max_run: int = 3600
    use_spot: bool = False
    max_wait: int | None = None
    keep_alive: int = 0
    input_mode: str = "File"
    inputs: dict[str, str] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        f = "backend_options"
        if not isinstance(self.image_uri, str) or not self.image_uri:
            raise ValueError(f"{f}.image_uri: the training image URI is required")
        if not (ROLE_ARN_PATTERN.match(self.role_arn or "")
                or ROLE_NAME_PATTERN.fullmatch(self.role_arn or "")):
            raise ValueError(f"{f}.role: {self.role_arn!r} is not an IAM role ARN or name")
        if not re.match(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$", self.bucket or ""):
            raise ValueError(f"{f}.bucket: {self.bucket!r} is not a valid S3 bucket name")
        for name, low, high in (("instance_count", 1, 1000), ("volume_size_gb", 1, 16384),
                                ("max_run", 1, 28 * 24 * 3600), ("keep_alive", 0, 3600)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{f}.{name}: must be an integer in [{low}, {high}], got {value!r}")
        if not isinstance(self.instance_type, str) or \
                not INSTANCE_TYPE_PATTERN.fullmatch(self.instance_type):
            raise ValueError(f"{f}.instance_type: expected a type like 'ml.m5.xlarge', got "
                             f"{self.instance_type!r}")
        if not isinstance(self.s3_prefix, str):
            raise ValueError(f"{f}.s3_prefix: must be a key prefix (text), got {self.s3_prefix!r}")
        if self.max_wait is not None:
            if not self.use_spot:
                raise ValueError(f"{f}.max_wait: only applies with use_spot: true")
            if isinstance(self.max_wait, bool) or not isinstance(self.max_wait, int) \
                    or self.max_wait < self.max_run:
                raise ValueError(
                    f"{f}.max_wait: must be an integer >= max_run ({self.max_run}), got {self.max_wait!r}"
                )
        if self.use_spot and self.keep_alive:
            raise ValueError(f"{f}.keep_alive: warm pools are not available with managed spot")
        if self.input_mode not in ("File", "Pipe", "FastFile"):
            raise ValueError(f"{f}.input_mode: must be File, Pipe or FastFile, got {self.input_mode!r}")
        for channel, uri in self.inputs.items():
            if not isinstance(uri, str) or not uri.startswith("s3://"):
                raise ValueError(f"{f}.inputs.{channel}: expected an s3:// URI, got {uri!r}")
        for name in self.environment:
            if not ENV_NAME_PATTERN.fullmatch(name):
                raise ValueError(f"{f}.environment: {name!r} is not a valid variable name")

    def s3_root(self, experiment: str) -> str:
        prefix = self.s3_prefix.strip("/")
        return f"s3://{self.bucket}/{prefix + '/' if prefix else ''}{experiment}"

    def checkpoint_uri(self, experiment: str, trial_id: int) -> str:
        return f"{self.s3_root(experiment)}/{int(trial_id)}/checkpoints/"

    def request(
        self,
        name: str,
        experiment: str,
        trial_id: int,
        config: Mapping[str, Any],
        source_uri: str | None,
        secrets: Mapping[str, Any],
        region: str | None,
    ) -> dict[str, Any]:
        """The CreateTrainingJob request of one job of trial `trial_id`."""
        # references in the config reach the job as environment variables, resolved now
        secrets = {**resolve(dict(secrets), "backend_options.secret_hyperparameters"), **resolve(
            {k: v for k, v in config.items() if is_reference(v)}, "config")}
        config = {k: v for k, v in config.items() if not is_reference(v)}
        clash = sorted(set(secrets) & (set(config) | set(self.hyperparameters)))
        if clash:
            raise ValueError(
                f"backend_options.secret_hyperparameters: {clash} are also plain hyperparameters "
                "(config space or backend_options.hyperparameters); secrets must not be"
            )
        hyperparameters = {
            k: encode_hyperparameter(v) for k, v in {**self.hyperparameters, **config}.items()
        }
        if self.entry_point:
            hyperparameters.update({
                "sagemaker_program": encode_hyperparameter(self.entry_point),
                "sagemaker_submit_directory": encode_hyperparameter(source_uri),
                "sagemaker_job_name": encode_hyperparameter(name),
                "sagemaker_container_log_level": encode_hyperparameter(20),
            })
            if region:
                hyperparameters["sagemaker_region"] = encode_hyperparameter(region)
        environment = {
            **resolve(self.environment, "backend_options.environment"),
            TRIAL_ID_ENV: str(int(trial_id)),
            CHECKPOINT_ENV: CHECKPOINT_LOCAL_PATH,
            **secrets,
        }
        resource: dict[str, Any] = {
            "InstanceType": self.instance_type,
            "InstanceCount": self.instance_count,
            "VolumeSizeInGB": self.volume_size_gb,
        }
        if self.keep_alive:
            resource["KeepAlivePeriodInSeconds"] = self.keep_alive
        stopping: dict[str, Any] = {"MaxRuntimeInSeconds": self.max_run}
        root = self.s3_root(experiment)
        request: dict[str, Any] = {
            "TrainingJobName": name,
            "AlgorithmSpecification": {
                "TrainingImage": self.image_uri,
                "TrainingInputMode": self.input_mode,
            },
            "RoleArn": self.role_arn,
            "HyperParameters": hyperparameters,
            "Environment": environment,
            "OutputDataConfig": {"S3OutputPath": f"{root}/{int(trial_id)}/output"},
            "ResourceConfig": resource,
            "StoppingCondition": stopping,
            "CheckpointConfig": {
                "S3Uri": self.checkpoint_uri(experiment, trial_id),
                "LocalPath": CHECKPOINT_LOCAL_PATH,
            },
            "Tags": [
                {"Key": "tunesmith:experiment", "Value": experiment},
                {"Key": "tunesmith:trial", "Value": str(int(trial_id))},
                {"Key": "tunesmith:job", "Value": name},
                *({"Key": str(k), "Value": str(v)} for k, v in self.tags.items()),
            ],
        }
        if self.inputs:
            request["InputDataConfig"] = [
                {
                    "ChannelName": channel,
                    "DataSource": {"S3DataSource": {
                        "S3DataType": "S3Prefix", "S3Uri": uri,
                        "S3DataDistributionType": "FullyReplicated",
                    }},
                }
                for channel, uri in self.inputs.items()
            ]
        if self.use_spot:
            request["EnableManagedSpotTraining"] = True
            stopping["MaxWaitTimeInSeconds"] = self.max_wait or 2 * self.max_run
        return request
