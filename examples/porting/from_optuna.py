"""optuna_original.py ported to tunesmith (see README.md in this folder for the diff)."""

from tunesmith import randint, tune, uniform


def objective(trial):
    x = trial["x"]
    y = trial["y"]
    return (x - 2) ** 2 + y


if __name__ == "__main__":
    space = {"x": uniform(-10, 10), "y": randint(1, 5)}
    study = tune(objective, space, metric="value", method="tpe", stop={"max_trials_completed": 30}, n_workers=2)
    print(study.best_config, study.best_value)
