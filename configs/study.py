"""`lusjax study`: does SSL pretraining help on my data, and what does it cost?

    lusjax study --config configs/study.py --config.data_dir=data/lus128
    lusjax study --config configs/study.py:lus_simclr:mnv3s --config.data_dir=DIR \
        --config.train.total_steps=500 --config.run_folds=0,1

One command, per fold k of a clip-level k-fold grouped by patient and stratified
by label: SSL pretraining on the other folds' clips only (OUT/fold{k}/pretrain),
then frozen probes (linear, kNN) and fine-tuning of that encoder at each label
fraction x seed, next to the baselines (a random-init encoder of the same
architecture: frozen probes, and fine-tuned with the same budget = "scratch",
supervised from scratch; raw pixels -> PCA -> logistic regression). Metrics
are pooled over the test folds (every test clip once) with bootstrap CIs over
patients, SSL vs scratch is tested paired, and the energy / CO2e of each phase
gives the break-even number of downstream tasks. Resumable: a rerun skips the
finished folds and phases. Writes OUT/study.json, OUT/study.md and PNG plots.

The argument names the pretraining recipe, a config file of configs/ with its
own argument after a second colon (default lus_simclr: SimCLR, ResNet-18,
128 px). Its whole config is `train`: override any key as
--config.train.KEY=VALUE (--config.train.method=byol brings BYOL's `ssl`
section; set --config.train.optim.* to match). The study sets train.workdir,
train.data.data_dir / train_split / clips_file and turns the online probe off.

Cost: 5 pretrainings (one per fold) of the recipe plus, per fold, 2 x 3
fine-tunes (SSL and scratch at 3 label fractions; 2 grid points + the retrain
each) and cheap frozen probes. Measured on one H100 (pocus_dev at 5 frames/s,
33 clips after the exclusion, --config.label_fractions='(0.1,1.0)'): the default
500-step recipe 373 s for all five folds, pretraining 112 s of it; with
--config.train.total_steps=1500, 76-82 s per fold, pretraining 42-49 s of it.
On 2 shared CPU cores at 64 px with resnet_tiny, 10 pretraining steps, seeds=2,
finetune.steps=20: 4 min.
"""

import importlib

import ml_collections

from configs import eval as eval_config


def get_config(arg=None):
    recipe, _, recipe_arg = (arg or "lus_simclr").partition(":")
    c = ml_collections.ConfigDict()
    c.recipe = arg or "lus_simclr"  # what pretrained (recorded; change it via the argument)
    c.train = importlib.import_module(f"configs.{recipe}").get_config(recipe_arg or None)

    # Data: a dataset written by `lusjax prep`; "" = the cached synthetic default dataset
    # (train.data.synthetic), so the study runs on a fresh machine.
    c.data_dir = ""
    c.splits = ""  # splits pooled into the study, "a,b"; "" = every split
    c.tasks = "label"  # tasks evaluated ("label" and/or binary findings, eval.py)
    c.min_clips_per_class = 2  # a task needs >= 2 classes with this many clips
    # Clips of these label classes leave the study entirely (pretraining included), with a
    # note: pocus_dev's "Viral pneumonia" has 3 clips, too few to test per fold.
    c.exclude_classes = "Viral pneumonia"
    c.frames_per_clip = 32  # evenly spaced frames per clip for evaluation (0 = all)
    c.batch_size = 256  # frames per forward pass (features, prediction)

    # Folds: clip-level k-fold, grouped by patient, stratified by label (splits.kfold).
    c.folds = 5
    c.fold_seed = 0
    c.run_folds = ""  # "" = all; "0,1" runs those folds only (quick ablations:
    # pooled metrics then cover those folds' test clips only)
    c.label_fractions = (0.01, 0.1, 1.0)  # of a fold's training clips, by clip, >= 1/class
    c.seeds = 3  # label-subset (and head init) repeats per fraction
    c.init_seed = 0  # weights of the random-init encoder (frozen baseline, scratch)

    # Protocols on the SSL encoder, and baselines.
    c.protocols = "linear,knn,finetune"  # linear | mlp | knn | finetune
    # scratch: the random-init encoder fine-tuned with the finetune budget (supervised
    #   from scratch), plus its frozen features under the frozen protocols ("random-init").
    # pixels: raw frames downsampled to pixels.size^2 -> PCA(pixels.pca_dim) -> the
    #   linear probe, frame level (clip = mean of frame probabilities).
    c.baselines = "scratch,pixels"
    # The protocols' settings are eval's (configs/eval.py), one place for both commands.
    ev = eval_config.get_config()
    for section in ("linear", "mlp", "knn", "finetune"):
        c[section] = ev[section]
    c.linear.sklearn_check = False  # eval's cross-check of the probe; not run here
    c.pixels = ml_collections.ConfigDict(
        {"size": 32, "pca_dim": 64, "steps": 500, "lr": 0.05, "l2": 1e-2, "batch_size": 0}
    )

    # Extra UNLABELED clips for every fold's pretraining: "" or a second `lusjax prep`
    # dataset. Refused if it holds a clip (video id) or patient of the study's clips.
    c.pretrain_data = ""

    # Statistics: CIs from a bootstrap over patients (clips without one: their own group).
    c.bootstrap = 2000  # resamples
    c.ci = 0.95

    c.out_dir = "runs/study"
    c.carbon = ml_collections.ConfigDict({"country": "WORLD", "measure": True})
    c.plots = ml_collections.ConfigDict({"embeddings": True})  # t-SNE of clip embeddings
    c.progress = True
    return c
