"""Shared fixtures of the engine's tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from hpo_core.models.gp import GaussianProcess


@pytest.fixture
def gp_fits(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any], list[int]]:
    """`gp_fits(searcher)`: a list that gets the searcher's model-fit count at each fit of GP
    hyperparameters (fits still run)."""

    def watch(searcher: Any) -> list[int]:
        fits: list[int] = []
        fit = GaussianProcess.fit

        def counting_fit(gp: GaussianProcess, *args: Any, **kwargs: Any) -> Any:
            fits.append(searcher._num_fits)
            return fit(gp, *args, **kwargs)

        monkeypatch.setattr(GaussianProcess, "fit", counting_fit)
        return fits

    return watch
