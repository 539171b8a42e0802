"""A small multilayer perceptron for binary classification (BORE's classifier).

One hidden tanh layer, a logistic output; trained on the full batch by L-BFGS on the mean
cross-entropy plus L2 weight decay. Small data, no mini-batches, deterministic given the seed.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_expit


class MLPClassifier:
    """Binary classifier with `hidden` tanh units.

    Args:
        hidden: width of the hidden layer.
        weight_decay: L2 penalty on the weights (not the biases).
        maxiter: L-BFGS iterations.
    """

    def __init__(self, hidden: int = 32, weight_decay: float = 1e-2, maxiter: int = 200):
        self.hidden, self.weight_decay, self.maxiter = hidden, weight_decay, maxiter
        self.params: np.ndarray | None = None
        self._dim = 0

    def _unpack(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        d, h = self._dim, self.hidden
        W1 = params[: d * h].reshape(d, h)
        b1 = params[d * h: d * h + h]
        w2 = params[d * h + h: d * h + 2 * h]
        return W1, b1, w2, float(params[-1])

    def _loss(self, params: np.ndarray, X: np.ndarray, z: np.ndarray) -> tuple[float, np.ndarray]:
        W1, b1, w2, b2 = self._unpack(params)
        H = np.tanh(X @ W1 + b1)
        logits = H @ w2 + b2
        n = len(X)
        loss = -np.mean(z * log_expit(logits) + (1 - z) * log_expit(-logits))
        loss += 0.5 * self.weight_decay * (np.sum(W1 * W1) + w2 @ w2)
        dlogits = (expit(logits) - z) / n
        dH = np.outer(dlogits, w2) * (1.0 - H * H)
        grad = np.concatenate([
            (X.T @ dH + self.weight_decay * W1).ravel(),
            dH.sum(0),
            H.T @ dlogits + self.weight_decay * w2,
            [dlogits.sum()],
        ])
        return float(loss), grad

    def fit(self, X: np.ndarray, z: np.ndarray, rng: np.random.Generator) -> MLPClassifier:
        """Fit to inputs `X` (n, d) and labels `z` in {0, 1}."""
        self._dim = X.shape[1]
        d, h = self._dim, self.hidden
        init = np.concatenate([
            rng.standard_normal(d * h) / np.sqrt(max(d, 1)),
            rng.standard_normal(h) * 0.1,
            rng.standard_normal(h) / np.sqrt(h),
            [0.0],
        ])
        res = minimize(self._loss, init, args=(X, z.astype(float)), jac=True, method="L-BFGS-B",
                       options={"maxiter": self.maxiter})
        self.params = res.x
        return self

    def logit(self, X: np.ndarray) -> np.ndarray:
        """Log-odds of class 1 at the rows of `X`."""
        if self.params is None:
            raise RuntimeError("MLPClassifier.logit called before fit")
        W1, b1, w2, b2 = self._unpack(self.params)
        return np.tanh(X @ W1 + b1) @ w2 + b2
