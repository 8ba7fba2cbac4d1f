"""`Encoder`: a backbone with its weights, ready to turn frames into features.

Evaluation, prediction and the online probe all go through this: features of
uint8 frames in eval mode (BatchNorm running statistics), batched and jitted.
`lusjax.checkpoint.load_encoder(workdir)` builds one from a pretraining run;
`Encoder.random_init(...)` builds the random-init baseline.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import numpy as np

from lusjax import models
from lusjax.data import preprocess


@dataclasses.dataclass
class Encoder:
    """A backbone and its variables ({"params", "batch_stats"})."""

    model_name: str
    model_kwargs: dict
    variables: Any
    image_size: int

    @functools.cached_property
    def model(self):
        return models.get(self.model_name, **self.model_kwargs)

    @property
    def num_channels(self) -> int:
        return int(self.model_kwargs.get("num_channels", 1))

    @property
    def num_features(self) -> int:
        return int(self.model.num_features)

    @functools.cached_property
    def _apply(self):
        model, size, ch = self.model, self.image_size, self.num_channels

        @jax.jit
        def apply(variables, images_uint8):
            return model.apply(
                variables, preprocess.eval_input(images_uint8, size, ch), train=False
            )

        return apply

    def features(self, images_uint8: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """uint8 [N, H, W, C] frames -> float32 [N, D] features (eval mode)."""
        out = []
        n = len(images_uint8)
        for i in range(0, n, batch_size):
            chunk = np.asarray(images_uint8[i : i + batch_size])
            pad = batch_size - len(chunk) if n > batch_size else 0
            if pad:  # keep one compiled shape for the last partial batch
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)])
            feats = np.asarray(self._apply(self.variables, chunk))
            out.append(feats[: len(feats) - pad] if pad else feats)
        if not out:
            return np.zeros((0, self.num_features), np.float32)
        return np.concatenate(out).astype(np.float32)

    @classmethod
    def random_init(
        cls, model_name: str, model_kwargs: dict, image_size: int, seed: int = 0
    ) -> Encoder:
        """The random-init baseline: same architecture, untrained weights."""
        model = models.get(model_name, **model_kwargs)
        ch = int(model_kwargs.get("num_channels", 1))
        x = np.zeros((1, image_size, image_size, ch), np.float32)
        variables = model.init(jax.random.PRNGKey(seed), x, train=False)
        return cls(model_name, dict(model_kwargs), dict(variables), image_size)
