"""On-demand prices of SageMaker training instances, for per-trial cost accounting.

Source: the "Training" tab of https://aws.amazon.com/sagemaker/pricing/ (on-demand, region
US East (N. Virginia), us-east-1), USD per instance-hour, as published in 2024-2025. AWS changes
prices (the P4d/P5 cuts of mid-2025, for instance) and other regions differ: check the page
and pass `price_per_hour` to the SageMaker backend when it matters. Managed spot jobs need no
spot table: their `BillableTimeInSeconds` already reflects the spot savings.
"""

from __future__ import annotations

PRICING_SOURCE = "https://aws.amazon.com/sagemaker/pricing/ (Training, on-demand, us-east-1)"

#: USD per instance-hour, SageMaker training, us-east-1, on demand.
TRAINING_PRICES_US_EAST_1: dict[str, float] = {
    # general purpose
    "ml.m5.large": 0.115,
    "ml.m5.xlarge": 0.23,
    "ml.m5.2xlarge": 0.461,
    "ml.m5.4xlarge": 0.922,
    "ml.m5.12xlarge": 2.765,
    "ml.m5.24xlarge": 5.53,
    "ml.m6i.large": 0.115,
    "ml.m6i.xlarge": 0.23,
    "ml.m6i.2xlarge": 0.461,
    "ml.m6i.4xlarge": 0.922,
    # compute optimized
    "ml.c5.xlarge": 0.204,
    "ml.c5.2xlarge": 0.408,
    "ml.c5.4xlarge": 0.816,
    "ml.c5.9xlarge": 1.836,
    "ml.c5.18xlarge": 3.672,
    # accelerated (GPU)
    "ml.g4dn.xlarge": 0.736,
    "ml.g4dn.2xlarge": 0.94,
    "ml.g4dn.4xlarge": 1.505,
    "ml.g4dn.8xlarge": 2.72,
    "ml.g4dn.12xlarge": 4.89,
    "ml.g4dn.16xlarge": 5.44,
    "ml.g5.xlarge": 1.408,
    "ml.g5.2xlarge": 1.515,
    "ml.g5.4xlarge": 2.03,
    "ml.g5.8xlarge": 3.06,
    "ml.g5.12xlarge": 7.09,
    "ml.g5.16xlarge": 4.096,
    "ml.g5.24xlarge": 10.18,
    "ml.g5.48xlarge": 20.36,
    "ml.p3.2xlarge": 3.825,
    "ml.p3.8xlarge": 14.688,
    "ml.p3.16xlarge": 28.152,
    "ml.p4d.24xlarge": 37.688,
    "ml.p5.48xlarge": 113.068,
    # AWS Trainium
    "ml.trn1.2xlarge": 1.5435,
    "ml.trn1.32xlarge": 24.725,
}


def price_per_hour(instance_type: str) -> float | None:
    """On-demand USD per instance-hour of a training instance type in us-east-1 (None if unknown)."""
    return TRAINING_PRICES_US_EAST_1.get(instance_type)


def job_cost(billable_seconds: float, instance_count: int, hourly_price: float) -> float:
    """USD of a job: billable wall seconds x instances x the hourly price of one instance."""
    return max(0.0, float(billable_seconds)) * int(instance_count) * float(hourly_price) / 3600.0
