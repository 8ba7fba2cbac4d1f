"""Evaluation of frozen or fine-tuned encoders on labelled LUS clips.

Core (numpy arrays in, numbers out): `splits` (grouped stratified k-fold, label
fractions by clip, leakage gate), the evaluators behind one contract and found
by name (`evaluators`: `fit(train, cfg, seed)`, `score(fitted, test)`):
`linear` / `mlp` / `knn` (probes on features), `finetune` (backbone + task
heads), `pixels` (the raw-pixel baseline), `online` (`lusjax train`'s online
probe); `metrics` (sklearn, frame and clip level), `stats` (patient-bootstrap
CIs, paired tests; `lusjax study`), `plots`. Glue: `features` (datasets and
encoders -> arrays), `protocol` (`run(config)`: plan, fit, score;
`linear_probe_accuracy`), `predict` (`lusjax predict`).
"""


def run(config) -> dict:
    """The full protocol of configs/eval.py (see `protocol.run`)."""
    from lusjax.eval import protocol

    return protocol.run(config)


def linear_probe_accuracy(
    encoder, data_dir, train_split: str = "train", test_split: str = "test", **kwargs
) -> dict:
    """Frame- and clip-level accuracy of a quick linear probe (see `protocol`)."""
    from lusjax.eval import protocol

    return protocol.linear_probe_accuracy(encoder, data_dir, train_split, test_split, **kwargs)
