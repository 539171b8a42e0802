"""Train a small neural network on scikit-learn's digits data set, reporting once per epoch.

A tunesmith training script: hyperparameters come from `get_config()` (`--name value`
arguments or the TUNESMITH_CONFIG file), each epoch is checkpointed before it is reported, so a
trial paused by ASHA (promotion variant) continues from its last epoch when resumed.

    python examples/train_digits.py --epochs 5 --lr 0.003 --hidden 64   # runs on its own too

Hyperparameters: epochs (last epoch), lr (Adam's learning rate), hidden (units of the one hidden
layer), alpha (L2 penalty), batch_size, seed.
Reports: epoch, val_accuracy, val_loss (log loss on a held-out quarter of the data).
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from sklearn.metrics import log_loss
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

from hpo_core.report import get_config, load_checkpoint, report, save_checkpoint

DEFAULTS = {"epochs": 10, "lr": 1e-3, "hidden": 64, "alpha": 1e-4, "batch_size": 64, "seed": 0}
CLASSES = np.arange(10)


def data(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.25, random_state=seed,
                                                      stratify=y)
    scaler = StandardScaler().fit(x_train)
    return scaler.transform(x_train), scaler.transform(x_val), y_train, y_val


def main() -> None:
    config = {**DEFAULTS, **get_config()}
    x_train, x_val, y_train, y_val = data(int(config["seed"]))
    state = load_checkpoint("model.pkl")  # None on a first start
    if state is None:
        model = MLPClassifier(
            hidden_layer_sizes=(int(config["hidden"]),), alpha=float(config["alpha"]),
            learning_rate_init=float(config["lr"]), batch_size=int(config["batch_size"]),
            random_state=int(config["seed"]),
        )
        state = {"epoch": 0, "model": model}
    model = state["model"]
    for epoch in range(state["epoch"] + 1, int(config["epochs"]) + 1):
        model.partial_fit(x_train, y_train, classes=CLASSES)  # one pass over the data
        proba = model.predict_proba(x_val)
        accuracy = float(np.mean(CLASSES[proba.argmax(axis=1)] == y_val))
        loss = float(log_loss(y_val, proba, labels=CLASSES))
        save_checkpoint({"epoch": epoch, "model": model}, "model.pkl")
        report(epoch=epoch, val_accuracy=accuracy, val_loss=loss)


if __name__ == "__main__":
    main()
