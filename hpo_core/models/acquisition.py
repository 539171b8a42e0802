"""Acquisition functions (for minimization), in log form with gradients for optimization.

Expected improvement below `best`: EI = s * h(z), z = (best - m) / s, h(z) = z Phi(z) + phi(z).
Its log is computed stably far into the tail (z << 0), where EI itself underflows to zero and
would give an optimizer no signal (the "LogEI" idea of Ament et al., 2023).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erfcx, log_ndtr, ndtr

_SQRT_HALF_PI = math.sqrt(math.pi / 2.0)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def expected_improvement(mean: np.ndarray, std: np.ndarray, best: float) -> np.ndarray:
    """Plain EI of a Gaussian N(mean, std^2) below `best`."""
    z = (best - mean) / std
    return std * (z * ndtr(z) + np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi))


def _log_h(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log(z Phi(z) + phi(z)) and its derivative Phi(z) / h(z), stable for any z."""
    z = np.asarray(z, dtype=float)
    with np.errstate(over="ignore", invalid="ignore"):  # z >> 0 overflows; handled below
        ratio = _SQRT_HALF_PI * erfcx(-z / math.sqrt(2.0))  # Phi(z) / phi(z)
        core = 1.0 + z * ratio  # h(z) / phi(z)
        tail = z < -25.0  # asymptotic series where `core` loses precision
        zt = np.where(tail, z, -30.0)
        core = np.where(tail, (1.0 - 3.0 / zt**2 + 15.0 / zt**4) / zt**2, core)
    log_phi = -0.5 * z * z - _LOG_SQRT_2PI
    big = z > 30.0  # h(z) ~ z; phi underflows
    with np.errstate(divide="ignore", invalid="ignore"):
        log_h = np.where(big, np.log(np.maximum(z, 1e-300)), log_phi + np.log(core))
        dlog_h = np.where(big, 1.0 / np.maximum(z, 1e-300), ratio / core)
    return log_h, dlog_h


def log_expected_improvement(
    mean: np.ndarray, std: np.ndarray, best: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log EI and its partial derivatives in `mean` and `std`."""
    z = (best - mean) / std
    log_h, dlog_h = _log_h(z)
    value = np.log(std) + log_h
    d_mean = -dlog_h / std
    d_std = (1.0 - z * dlog_h) / std
    return value, d_mean, d_std


def log_probability_below(
    mean: np.ndarray, std: np.ndarray, threshold: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log P(f <= threshold) for f ~ N(mean, std^2), with derivatives in `mean` and `std`."""
    z = (threshold - mean) / std
    value = log_ndtr(z)
    # d log Phi(z) / dz = phi(z) / Phi(z) = 1 / ratio (0 where ratio overflows, z >> 0)
    with np.errstate(over="ignore"):
        inv_ratio = 1.0 / (_SQRT_HALF_PI * erfcx(-z / math.sqrt(2.0)))
    return value, -inv_ratio / std, -z * inv_ratio / std
