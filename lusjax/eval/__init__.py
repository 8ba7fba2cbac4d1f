"""Evaluation of frozen or fine-tuned encoders on labelled LUS clips.

Core (numpy arrays in, numbers out): `splits` (grouped stratified k-fold, label
fractions by clip, leakage gate), `linear` / `mlp` / `knn` (probes on
features), `finetune` (backbone + task heads), `metrics` (sklearn, frame and
clip level), `stats` (patient-bootstrap CIs, paired tests; `lusjax study`),
`pixels` (the raw-pixel baseline), `plots`. Glue: `features` (datasets and encoders -> arrays),
`protocol` (`run(config)`, `linear_probe_accuracy`), `predict` (`lusjax predict`).
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
