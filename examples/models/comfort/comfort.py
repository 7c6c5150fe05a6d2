"""Comfort model: temperature (°C) and light (lx) -> fan / AC / lamp on or off.

A scikit-learn decision tree trained by `train.py` (deterministic, synthetic data) and shipped as
`comfort.joblib` in the package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np

MODEL_FILE = Path(__file__).with_name("comfort.joblib")
ACTIONS = ("fan", "ac", "lamp")


class ComfortModel:
    """`load()` reads the trained tree; `predict({"temperature": 30, "light": 120})` returns the actions."""

    def __init__(self, path: Path = MODEL_FILE) -> None:
        self.path = path
        self.tree: Any = None

    def load(self) -> None:
        self.tree = joblib.load(self.path)

    def predict(self, inputs: dict[str, Any]) -> dict[str, str]:
        if self.tree is None:
            self.load()
        try:
            temperature = float(inputs["temperature"])
            light = float(inputs["light"])
        except KeyError as exc:
            raise ValueError(f"missing input {exc.args[0]!r}") from None
        row = np.asarray(self.tree.predict(np.array([[temperature, light]]))).reshape(-1)
        return {action: ("on" if int(flag) else "off") for action, flag in zip(ACTIONS, row, strict=True)}
