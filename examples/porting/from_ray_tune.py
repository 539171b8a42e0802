"""ray_tune_original.py ported to tunesmith (see README.md in this folder for the diff)."""

import tunesmith as tune


def objective(config):
    for step in range(1, 11):
        loss = (config["lr"] - 0.01) ** 2 + config["momentum"] / step
        tune.report({"step": step, "loss": loss})


if __name__ == "__main__":
    results = tune.tune(
        objective,
        {"lr": tune.loguniform(1e-4, 1e-1), "momentum": tune.uniform(0.1, 0.9)},
        metric="loss", mode="min", method="random", stop={"max_trials_completed": 20},
    )
    print(results.best_config)
