"""Train a PyTorch MLP on scikit-learn's digits data set, on the GPU tunesmith gave the trial.

The PyTorch counterpart of `train_digits.py`. It trains on CUDA when it sees a GPU: the local
backend sets `CUDA_VISIBLE_DEVICES` for each trial, so the GPU is always `cuda:0`. Otherwise it
trains on the CPU. After every epoch, the model, the optimizer and the epoch are saved with
`torch.save` in the trial's checkpoint folder, and then reported. A trial that ASHA paused
therefore resumes from its last epoch. It may resume on another GPU (`map_location`).

    python examples/train_digits_torch.py --epochs 5 --lr 0.003   # runs on its own too

Hyperparameters: epochs (last epoch), lr and weight_decay (AdamW), hidden (units of each of the
two hidden layers), dropout, batch_size, seed.
Reports: epoch, val_loss (cross-entropy on a held-out quarter), val_accuracy.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.nn import functional

from hpo_core.report import checkpoint_dir, get_config, report

DEFAULTS = {"epochs": 20, "lr": 1e-3, "weight_decay": 1e-4, "hidden": 128, "dropout": 0.1,
            "batch_size": 64, "seed": 0}
CHECKPOINT = "model.pt"


def data(seed: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Train and validation tensors (pixels scaled to [0, 1]) on `device`."""
    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(x / 16.0, y, test_size=0.25,
                                                      random_state=seed, stratify=y)
    floats = [torch.as_tensor(a, dtype=torch.float32, device=device) for a in (x_train, x_val)]
    labels = [torch.as_tensor(a, dtype=torch.long, device=device) for a in (y_train, y_val)]
    return floats[0], labels[0], floats[1], labels[1]


def save(path: Path, state: dict) -> None:
    """torch.save, atomically: a trial stopped mid-write keeps its previous checkpoint."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def main() -> None:
    config = {**DEFAULTS, **get_config()}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    seed, hidden = int(config["seed"]), int(config["hidden"])
    torch.manual_seed(seed)
    x_train, y_train, x_val, y_val = data(seed, device)
    model = nn.Sequential(
        nn.Linear(64, hidden), nn.ReLU(), nn.Dropout(float(config["dropout"])),
        nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 10),
    ).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(config["lr"]),
                                  weight_decay=float(config["weight_decay"]))
    folder = checkpoint_dir()  # None when run on its own
    path = folder / CHECKPOINT if folder is not None else None
    first = 1
    if path is not None and path.exists():
        state = torch.load(path, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        first = state["epoch"] + 1
    print(f"training on {device} (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')})"
          f" from epoch {first}", flush=True)
    shuffle = torch.Generator().manual_seed(seed)
    for epoch in range(first, int(config["epochs"]) + 1):
        shuffle.manual_seed(seed * 1000 + epoch)  # the same batches whether resumed or not
        model.train()
        for batch in torch.randperm(len(x_train), generator=shuffle).to(device).split(
                int(config["batch_size"])):
            optimizer.zero_grad(set_to_none=True)
            functional.cross_entropy(model(x_train[batch]), y_train[batch]).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            logits = model(x_val)
            val_loss = float(functional.cross_entropy(logits, y_val))
            accuracy = float((logits.argmax(dim=1) == y_val).float().mean())
        if path is not None:
            save(path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "epoch": epoch})
        report(epoch=epoch, val_loss=val_loss, val_accuracy=accuracy)


if __name__ == "__main__":
    main()
