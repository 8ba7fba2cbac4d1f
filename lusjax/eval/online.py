"""`lusjax train`'s online probe as an evaluator ("online").

A linear head on the backbone's stop-gradient features, trained by the train step
itself beside the SSL loss (`lusjax.train`: `probe_loss`, `probe_acc` on the
training batches); so it has no `fit`. `score` runs the train state's backbone in
eval mode and the head on held-out frames; `accuracy` is the loop's
`probe_val_acc` on config.data.val_split.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from lusjax.data import preprocess
from lusjax.errors import UserError
from lusjax.eval import evaluators
from lusjax.eval.features import from_arrays

BATCH = 256  # frames per forward pass


@dataclasses.dataclass(frozen=True)
class OnlineProbe:
    """The head the train step fitted, with the backbone it reads: parts of the train state."""

    backbone: nn.Module
    head: nn.Module
    image_size: int
    num_channels: int
    params: Any  # the state's params: {"backbone": ..., "probe": ..., ...}
    batch_stats: Any  # the state's batch_stats


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _probs(backbone, head, size, channels, params, batch_stats, images):
    variables = {"params": params["backbone"], "batch_stats": batch_stats.get("backbone", {})}
    feats = backbone.apply(variables, preprocess.eval_input(images, size, channels), train=False)
    return jax.nn.softmax(head.apply({"params": params["probe"]}, feats), -1)


def _score(probe: OnlineProbe, test: evaluators.Inputs) -> dict[str, np.ndarray]:
    images = test.data.images[test.frames]
    args = (probe.backbone, probe.head, probe.image_size, probe.num_channels)
    probs = np.concatenate(
        [
            np.asarray(_probs(*args, probe.params, probe.batch_stats, images[i : i + BATCH]))
            for i in range(0, len(images), BATCH)
        ]
    )
    out = {}
    for task in test.tasks:
        known = test.data.frame_targets(task)[test.frames] >= 0
        out[task] = probs[known]
    return out


EVALUATOR = evaluators.Evaluator("online", None, _score, reads="images")


def held_out(data_dir: str, split: str, limit: int) -> evaluators.Inputs | None:
    """Up to `limit` evenly spaced frames of `split` to score the online probe on; None
    when the split does not exist or has no labelled frame."""
    from lusjax.data.shards import open_split

    try:
        src = open_split(data_dir, split)
    except UserError:
        return None
    idx = np.linspace(0, len(src) - 1, num=min(limit, len(src))).astype(int)
    examples = [src[int(i)] for i in idx]
    labels = np.array([e["label"] for e in examples], np.int32)
    if not (labels >= 0).any():
        return None
    frames = from_arrays(
        [e["video_id"] for e in examples],
        labels,
        src.class_names,
        images=np.stack([e["image"] for e in examples]),
    )
    return evaluators.Inputs(frames, np.arange(len(frames)), {"label": len(src.class_names)})


def accuracy(probe: OnlineProbe, test: evaluators.Inputs) -> float:
    """Frame accuracy of the online probe on the labelled frames of `test`."""
    probs = EVALUATOR.score(probe, test)["label"]
    y = test.data.frame_targets("label")[test.labelled("label")]
    return float((probs.argmax(-1) == y).mean())
