"""An Optuna objective, as Optuna's docs write one (the original of from_optuna.py)."""

import optuna


def objective(trial):
    x = trial.suggest_float("x", -10, 10)
    y = trial.suggest_int("y", 1, 5)
    return (x - 2) ** 2 + y


if __name__ == "__main__":
    study = optuna.create_study(direction="minimize")
    study.optimize(objective, n_trials=30, n_jobs=2)
    print(study.best_params, study.best_value)
