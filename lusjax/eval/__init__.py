"""Evaluation of frozen or fine-tuned encoders on labelled LUS clips.

Core (numpy arrays in, numbers out): `splits` (grouped stratified k-fold, label
fractions by clip, leakage gate), the evaluators behind one contract and found
by name (`evaluators`: `fit(train, cfg, seed)`, `score(fitted, test)`):
`linear` / `mlp` / `knn` (probes on features), `finetune` (backbone + task
heads), `pixels` (the raw-pixel baseline), `online` (`lusjax train`'s online
probe); `metrics` (sklearn, frame and clip level), `stats` (patient-bootstrap
CIs, paired tests; `lusjax study`), `plots`. Glue: `features` (datasets and
encoders -> arrays), `predict` (saved heads, one backbone pass for all of them).

`protocol` (`run(config)`: plan, fit, score; `linear_probe_accuracy`) is the
`lusjax eval` driver: it belongs to the application layer (it finds the
dataset, generating the default synthetic one, and writes the results), so
nothing else in this package imports it; `lusjax predict` is `lusjax.app.predict`.
"""
