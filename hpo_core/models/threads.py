"""Single-threaded BLAS for the small linear algebra of model-based searchers.

GP fits are many small Cholesky factorizations. On few cores a multi-threaded OpenBLAS makes
them 10x slower, and 20x slower again when numpy's and scipy's bundled OpenBLAS copies
alternate (each one's idle threads spin and starve the other's). `threadpoolctl` (installed
with scikit-learn, which MLflow brings) limits both pools; without it this is a no-op.
"""

from __future__ import annotations

import contextlib
from typing import Any

try:
    from threadpoolctl import ThreadpoolController
except ImportError:  # pragma: no cover - optional
    ThreadpoolController = None

_controller: Any = None


def single_threaded_blas() -> contextlib.AbstractContextManager[Any]:
    """A context in which BLAS/LAPACK calls use one thread."""
    global _controller
    if ThreadpoolController is None:  # pragma: no cover - optional
        return contextlib.nullcontext()
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")
