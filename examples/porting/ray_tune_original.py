"""A Ray Tune function trainable, as Ray's docs write one (the original of from_ray_tune.py)."""

from ray import tune


def objective(config):
    for step in range(1, 11):
        loss = (config["lr"] - 0.01) ** 2 + config["momentum"] / step
        tune.report({"step": step, "loss": loss})


if __name__ == "__main__":
    tuner = tune.Tuner(
        objective,
        param_space={"lr": tune.loguniform(1e-4, 1e-1), "momentum": tune.uniform(0.1, 0.9)},
        tune_config=tune.TuneConfig(metric="loss", mode="min", num_samples=20),
    )
    results = tuner.fit()
    print(results.get_best_result().config)
