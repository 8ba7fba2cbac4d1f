"""Evaluation protocol: frozen-feature probes, kNN, fine-tuning, label efficiency, k-fold CV.

    lusjax eval --config configs/eval.py --config.encoder=runs/simclr \
        --config.data_dir=data/pocus_dev --config.out_dir=runs/simclr/eval

The encoder's SSL pretraining must not have seen the test clips or patients
(its pretrain_clips.json): k-fold CV over a dataset it pretrained on is refused
unless `--config.allow_pretrain_overlap=True`; `--config.test_split=test` tests
on a split it did not see.

Writes OUT_DIR/results.json (every number: per fold and pooled, config,
hardware), OUT_DIR/results.md (the table) and PNG plots, plus heads.msgpack +
heads.json for `lusjax predict`. The pretrained encoder is always compared with
a random-init encoder of the same architecture (`baseline`).

Arguments (`configs/eval.py:ARG`):
  (none)  the full protocol: linear + MLP + kNN + fine-tuning, 5 folds,
          label fractions 1% / 10% / 100% by clip, 3 seeds.
  quick   linear probe and kNN only, 1 seed, fractions 10% / 100%: a smoke
          test (on the 36 pocus_dev clips at 64 px with resnet_tiny: ~1 min on
          2 CPU cores; see the README for measured numbers).

Every key the protocol reads is here; the config is locked, so a mistyped
override is an error.
"""

import ml_collections


def get_config(arg=None):
    c = ml_collections.ConfigDict()

    # What to evaluate.
    c.encoder = "random"  # a `lusjax train` workdir (its encoder/ export) or "random"
    c.baseline = True  # also evaluate a random-init encoder of the same architecture
    c.init_seed = 0  # seed of the random-init weights
    # Architecture when encoder == "random" (a workdir brings its own).
    c.model = ml_collections.ConfigDict(
        {"name": "resnet18", "num_channels": 1, "width": 1.0, "dtype": "float32"}
    )
    c.image_size = 224

    # Data: a dataset folder written by `lusjax prep` (empty: the encoder's own dataset).
    c.data_dir = ""
    c.splits = ""  # splits pooled for k-fold CV, "a,b"; empty = every split
    c.test_split = ""  # if set: no CV; train on `splits` (empty: the others), test here
    # Leakage gate: evaluation refuses to test on clips, or patients, that the encoder's
    # SSL pretraining saw (its workdir's pretrain_clips.json), naming them. True accepts
    # it (the numbers for those clips are then transductive, and results say so).
    c.allow_pretrain_overlap = False
    c.frames_per_clip = 32  # evenly spaced frames per clip (0 = all frames)
    c.batch_size = 256  # frames per forward pass (features, prediction)

    # Protocol.
    c.protocol = "all"  # linear | mlp | knn | finetune | all, or a list "linear,knn"
    c.tasks = "label,b_lines,a_lines,effusion,consolidation"  # "label" + binary findings
    c.min_clips_per_class = 2  # a task needs >= 2 classes with this many clips, else skipped
    c.folds = 5  # k of the clip/patient-grouped stratified k-fold
    c.fold_seed = 0
    c.label_fractions = (0.01, 0.1, 1.0)  # of the training clips, by clip (>= 1 per class)
    c.seeds = 3  # repeats (label subsets, head init) for mean ± std

    # Linear probe on standardized features: Adam, class-balanced CE + l2/2 |W|^2
    # (= sklearn LogisticRegression(C=1/(l2*N), class_weight="balanced")).
    # batch_size: rows per step (0 = full batch, what matches sklearn's optimum).
    c.linear = ml_collections.ConfigDict(
        {"steps": 500, "lr": 0.05, "l2": 1e-2, "batch_size": 0, "sklearn_check": True}
    )
    # MLP head: same trainer with hidden ReLU layers and dropout.
    c.mlp = ml_collections.ConfigDict(
        {"hidden": (256,), "dropout": 0.2, "steps": 500, "lr": 0.01, "l2": 1e-3, "batch_size": 256}
    )
    # Weighted kNN: cosine similarity, votes exp(sim / temperature).
    c.knn = ml_collections.ConfigDict({"k": 20, "temperature": 0.07})
    # Full fine-tuning (backbone + one head per task); the grid is searched on an inner
    # grouped split of the training clips. The random-init encoder fine-tuned with the
    # same budget is the supervised baseline.
    c.finetune = ml_collections.ConfigDict(
        {
            "steps": 300,
            "batch_size": 32,
            "optimizer": "adamw",  # adamw | sgd
            "lrs": (1e-3, 3e-4),
            "wds": (1e-4,),
            "warmup_frac": 0.1,
            "val_fraction": 0.2,
            "seeds": 1,  # repeats for fine-tuning (<= seeds; it is the costly one)
        }
    )

    # Outputs.
    c.out_dir = "runs/eval"
    c.save_heads = True  # linear heads on all labelled clips, for `lusjax predict`
    c.progress = True
    c.plots = ml_collections.ConfigDict(
        {
            "metric": "clip_balanced_accuracy",  # y axis of the label-efficiency curves
            "embeddings": True,  # t-SNE of clip embeddings
            "umap": True,
        }
    )  # ... and UMAP, when umap-learn is installed

    # `lusjax predict` (see lusjax/app/predict.py): ingest a folder, all heads, one pass.
    c.predict = ml_collections.ConfigDict(
        {
            "input": "",  # folder (or CSV manifest) of clips
            "metadata_csv": "",  # optional per-clip metadata joined on file name
            "heads": "",  # an eval out_dir with heads.json (default: out_dir)
            "out": "",  # predictions.csv/.json go here (default: heads dir)
            "size": 0,  # ingest frame size (0 = the encoder's image size)
            "frames_per_clip": 0,  # 0 = every ingested frame
            "benchmark": 0,  # N > 0: time one backbone + N heads vs N separate models
        }
    )

    if arg == "quick":
        c.protocol = "linear,knn"
        c.label_fractions = (0.1, 1.0)
        c.seeds = 1
    elif arg:
        raise ValueError(f"unknown argument {arg!r} for configs/eval.py (use 'quick')")
    return c
