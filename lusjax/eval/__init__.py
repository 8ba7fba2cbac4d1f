"""Evaluation of frozen or fine-tuned encoders on labelled LUS clips.

Core (numpy arrays in, numbers out): `splits` (grouped stratified k-fold, label
fractions by clip, leakage gate), `linear` / `mlp` / `knn` (probes on
features), `finetune` (backbone + task heads), `metrics` (sklearn, frame and
clip level), `stats` (patient-bootstrap CIs, paired tests; `lusjax study`),
`pixels` (the raw-pixel baseline), `plots`, `results`. Glue: `features`
(datasets and encoders -> arrays), `predict` (saved heads, one backbone pass
for all of them).

`protocol` (`run(config)`, `linear_probe_accuracy`) is the `lusjax eval` driver:
it belongs to the application layer (it finds the dataset, generating the
default synthetic one, and writes the results), so nothing else in this
package imports it; `lusjax predict` is `lusjax.app.predict`.
"""
