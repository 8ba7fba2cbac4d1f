"""The names of the files and folders lusjax writes and reads, in one place.

A writer and its readers (train and resume, report, sweep-report, the model
card, export, eval's leakage gate, study) take the name from here, so they
cannot drift apart. It imports nothing: every layer may use it. Only names at
the top of a folder that other code or people look for are here; a figure's
file name stays with the code that draws it.
"""

# ---------------------------------------------------------------------------
# A run's workdir (`lusjax train`).
# ---------------------------------------------------------------------------

CONFIG_JSON = "config.json"  # the resolved config; resume compares against it
METRICS_FILE = "metrics.jsonl"  # one JSON line per log step
METRICS_DISCARDED = METRICS_FILE + ".discarded"  # lines past the checkpoint a resume went back to
TB_DIR = "tensorboard"  # the same scalars as TensorBoard events
# Beside TB_DIR, not in it (TensorBoard shows every subfolder as a run), with "tfevents"
# out of the names (TensorBoard reads any file whose name holds it).
TB_DISCARDED_DIR = TB_DIR + ".discarded"
CARBON_JSON = "carbon.json"  # the energy/CO2e ledger of every command run on this folder
PRETRAIN_CLIPS = "pretrain_clips.json"  # the clips pretraining saw (eval's leakage gate)
CHECKPOINTS_DIR = "checkpoints"  # orbax steps: state + grain iterator state
ENCODER_DIR = "encoder"  # the final encoder's params ...
ENCODER_JSON = "encoder.json"  # ... and how to rebuild it; its presence means "done"
TRAINER_LOCK = "trainer.lock"  # one trainer per workdir
PLOTS_DIR = "plots"  # `lusjax report`
EXPORT_DIR = "export"  # `lusjax export` (export/torch, export/flax)
FLAX_ENCODER = "encoder.msgpack"  # `lusjax export --format flax`
MODEL_CARD = "MODEL_CARD.md"  # beside an export
QUICKSTART_JSON, QUICKSTART_MD = "quickstart.json", "quickstart.md"

# ---------------------------------------------------------------------------
# A sweep's root (`lusjax sweep`); each run's workdir is ROOT/<name>.
# ---------------------------------------------------------------------------

SWEEP_JSON = "sweep.json"  # the config, common overrides and every run's overrides
RUNS_TXT = "runs.txt"  # NAME <tab> WORKDIR <tab> train args, read by launch/*.sh
RUN_LOG = "run.log"  # in a run's workdir: stdout + stderr of every attempt
RUN_RC = "run.rc"  # in a run's workdir: exit status of the last finished attempt
SWEEP_REPORT_MD, SWEEP_REPORT_PNG = "sweep_report.md", "sweep_report.png"

# ---------------------------------------------------------------------------
# An evaluation's out_dir (`lusjax eval`, `lusjax predict`).
# ---------------------------------------------------------------------------

RESULTS_JSON, RESULTS_MD = "results.json", "results.md"
HEADS_FILE, HEADS_JSON = "heads.msgpack", "heads.json"  # the heads `lusjax predict` reads
PREDICTIONS_CSV, PREDICTIONS_JSON = "predictions.csv", "predictions.json"

# ---------------------------------------------------------------------------
# A study's out_dir (`lusjax study`): OUT/fold<k>/{pretrain/, result.*}.
# ---------------------------------------------------------------------------

STUDY_JSON, STUDY_MD = "study.json", "study.md"
STUDY_PRETRAIN_DIR = "pretrain"  # the fold's pretraining workdir
FOLD_JSON, FOLD_NPZ = "result.json", "result.npz"  # one fold's results
PRETRAIN_JSON = "pretrain.json"  # one fold's pretraining summary
CLIPS_JSON = "pretrain_clip_ids.json"  # the fold's data.clips_file


def study_fold(k: int) -> str:
    """The folder of a study's fold `k`."""
    return f"fold{k}"


# ---------------------------------------------------------------------------
# A dataset (`lusjax prep`): TFDS shards + dataset.json, and the clip store.
# ---------------------------------------------------------------------------

DATASET_JSON = "dataset.json"  # beside the TFDS folder: classes, splits, skipped clips
PREVIEW_PNG = "preview.png"  # `lusjax prep --preview`
CLIP_STORE_DIR = "clips"  # default place of the processed-clip store under --out
STORE_INDEX = "clips.jsonl"  # the store's one line per clip
STORE_PREVIEWS = "previews"  # the store's per-clip preview tiles
