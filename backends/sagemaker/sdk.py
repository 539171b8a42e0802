"""SageMaker backend options from a `sagemaker` SDK v3 `ModelTrainer` (optional extra).

Install with `pip install 'tunesmith[sagemaker]'`. The SDK is imported only here, and only when
`SageMakerBackend.from_model_trainer` is called.
"""

from __future__ import annotations

from typing import Any


def _value(obj: Any, name: str) -> Any:
    """An attribute of an SDK object, None for missing or `Unassigned` ones."""
    value = getattr(obj, name, None) if obj is not None else None
    return None if type(value).__name__ == "Unassigned" else value


def options_from_model_trainer(trainer: Any) -> dict[str, Any]:
    """The backend options a ModelTrainer's settings amount to (those it sets)."""
    try:
        from sagemaker.train import ModelTrainer
    except ImportError as err:
        raise ImportError(
            "SageMakerBackend.from_model_trainer needs the sagemaker SDK v3: "
            "pip install 'tunesmith[sagemaker]'"
        ) from err
    if not isinstance(trainer, ModelTrainer):
        raise TypeError(f"expected a sagemaker.train.ModelTrainer, got {type(trainer).__name__}")
    options: dict[str, Any] = {
        "image_uri": _value(trainer, "training_image"),
        "role": _value(trainer, "role"),
        "input_mode": _value(trainer, "training_input_mode"),
    }
    compute = _value(trainer, "compute")
    options.update({
        "instance_type": _value(compute, "instance_type"),
        "instance_count": _value(compute, "instance_count"),
        "volume_size_gb": _value(compute, "volume_size_in_gb"),
        "keep_alive": _value(compute, "keep_alive_period_in_seconds"),
        "use_spot": _value(compute, "enable_managed_spot_training"),
    })
    stopping = _value(trainer, "stopping_condition")
    options["max_run"] = _value(stopping, "max_runtime_in_seconds")
    options["max_wait"] = _value(stopping, "max_wait_time_in_seconds")
    source = _value(trainer, "source_code")
    options["source_dir"] = _value(source, "source_dir")
    options["entry_point"] = _value(source, "entry_script")
    hyperparameters = _value(trainer, "hyperparameters")
    if isinstance(hyperparameters, dict) and hyperparameters:
        options["hyperparameters"] = dict(hyperparameters)
    environment = _value(trainer, "environment")
    if environment:
        options["environment"] = {str(k): str(v) for k, v in environment.items()}
    inputs = {}
    for channel in _value(trainer, "input_data_config") or []:
        source_uri = _value(channel, "data_source")
        if isinstance(source_uri, str):
            inputs[_value(channel, "channel_name")] = source_uri
    if inputs:
        options["inputs"] = inputs
    tags = _value(trainer, "tags")
    if tags:
        options["tags"] = {_value(t, "key"): _value(t, "value") for t in tags}
    session = _value(trainer, "sagemaker_session")
    if session is not None:
        boto_session = _value(session, "boto_session")
        options["boto_session"] = boto_session
        options["region"] = _value(boto_session, "region_name")
        bucket = getattr(session, "_default_bucket", None) or \
            getattr(session, "_default_bucket_name_override", None)
        if bucket:
            options["bucket"] = bucket
    return {k: v for k, v in options.items() if v is not None}
