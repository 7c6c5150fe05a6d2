"""Train the comfort model deterministically and write `comfort.joblib` beside this file.

Run `python train.py` when building the package. The data is synthetic (no data set is downloaded): random
readings labelled by the comfort rules below, with a fixed seed, so every run yields the same tree.

Rules the tree learns: above 28 °C the AC is on; above 25 °C the fan is on (so a hot room gets both);
below 300 lx the lamp is on.
"""

from __future__ import annotations

import sys
from pathlib import Path

import joblib
import numpy as np
from sklearn.tree import DecisionTreeClassifier

SEED = 42
ACTIONS = ("fan", "ac", "lamp")
MODEL_FILE = Path(__file__).with_name("comfort.joblib")

AC_ABOVE_C = 28.0
FAN_ABOVE_C = 25.0
LAMP_BELOW_LX = 300.0


def label(temperature: np.ndarray, light: np.ndarray) -> np.ndarray:
    """The comfort rules: one row of 0/1 per reading, columns in ACTIONS order."""
    return np.column_stack([temperature > FAN_ABOVE_C, temperature > AC_ABOVE_C, light < LAMP_BELOW_LX]).astype(
        np.int64
    )


def synthetic_readings(seed: int = SEED, n: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    """Readings spread over a realistic range, denser near the rule thresholds so the splits land on them."""
    rng = np.random.default_rng(seed)
    temperature = np.concatenate([rng.uniform(0.0, 45.0, n // 2), rng.normal(26.5, 2.5, n // 2)])
    light = np.concatenate([rng.uniform(0.0, 2000.0, n // 2), rng.normal(LAMP_BELOW_LX, 60.0, n // 2).clip(0)])
    rng.shuffle(light)
    features = np.column_stack([temperature, light])
    return features, label(temperature, light)


def train(seed: int = SEED) -> DecisionTreeClassifier:
    features, targets = synthetic_readings(seed)
    model = DecisionTreeClassifier(max_depth=4, random_state=seed)
    model.fit(features, targets)
    return model


def main(dest: Path = MODEL_FILE) -> Path:
    joblib.dump(train(), dest)
    return dest


if __name__ == "__main__":
    print(main(Path(sys.argv[1]) if len(sys.argv) > 1 else MODEL_FILE))
