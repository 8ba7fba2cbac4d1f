"""`lusjax probe WORKDIR`: a quick linear probe of a run's pretrained encoder, next to
the same probe on a random-init twin (frame and clip accuracy on frozen features).

The quickstart's last step (`lusjax.app.quickstart`) is the same probe.
"""

from __future__ import annotations

import time

from lusjax import checkpoint
from lusjax import config as config_lib
from lusjax.app.default_data import ensure_data
from lusjax.encoder import Encoder
from lusjax.eval.protocol import linear_probe_accuracy
from lusjax.eval.splits import read_pretraining


def probe_workdir(
    workdir: str,
    *,
    data_dir: str | None = None,
    train_split: str = "train",
    test_split: str = "test",
    seed: int = 0,
) -> dict:
    """Linear probe of a run's pretrained encoder and of its random-init twin."""
    cfg = config_lib.load_saved(workdir)
    data_dir = data_dir or ensure_data(cfg.data)
    ssl_enc = checkpoint.load_encoder(workdir)
    rand_enc = Encoder.random_init(
        ssl_enc.model_name, ssl_enc.model_kwargs, ssl_enc.image_size, seed=seed
    )
    out = {}
    seen = read_pretraining(workdir)  # the leakage gate: never test on what it saw
    for name, enc in (("ssl", ssl_enc), ("random_init", rand_enc)):
        t0 = time.time()
        res = linear_probe_accuracy(
            enc, data_dir, train_split, test_split, pretraining=seen if name == "ssl" else None
        )
        res["probe_time_s"] = round(time.time() - t0, 1)
        out[name] = res
    out["data_dir"], out["train_split"], out["test_split"] = data_dir, train_split, test_split
    out["method"] = cfg.get("method", "ssl")
    return out


def probe_table(result: dict) -> str:
    """`lusjax probe`'s report of `probe_workdir`'s result: what it trained and tested on,
    then one row per encoder (rounded; `--json` gives the raw numbers)."""
    ssl = result["ssl"]
    lines = [
        f"linear probe on frozen features of {result['data_dir']}",
        (
            f"trained on {result['train_split']!r} ({ssl['n_train_clips']} clips, "
            f"{ssl['n_train_frames']} frames), tested on {result['test_split']!r} "
            f"({ssl['n_test_clips']} clips, {ssl['n_test_frames']} frames)"
        ),
        "",
        "| encoder | frame acc | clip acc | clip balanced acc | train clips | test clips |",
        "|---|---|---|---|---|---|",
    ]
    for name, label in (
        ("ssl", f"{result.get('method', 'ssl')} pretrained"),
        ("random_init", "random init"),
    ):
        r = result[name]
        lines.append(
            f"| {label} | {r['frame_accuracy']:.3f} | {r['clip_accuracy']:.3f} | "
            f"{r['clip_balanced_accuracy']:.3f} | {r['n_train_clips']} | "
            f"{r['n_test_clips']} |"
        )
    lines += [
        "",
        (
            "(`lusjax quickstart` tests on 'val+test', so its table differs; "
            "--test-split val+test gives the same; --json prints the raw numbers)"
        ),
    ]
    return "\n".join(lines)
