"""Kill-and-resume on whatever devices this host has: SIGKILL mid-run, restart, compare.

    python benchmarks/kill_resume.py --workdir /tmp/kr [--steps 60 --kill-after 45] \
        [--config configs/simclr_resnet.py:r18 --config.image_size=64 ...]

Runs `lusjax train` three times with the same config: a reference run of
--steps steps; a second run SIGKILLed as soon as its metrics show step
--kill-after (checkpoints every --ckpt-every steps, async); the same command
again, which resumes from the newest committed checkpoint. Prints one JSON line:
the step it resumed from, how many logged losses match the reference exactly,
the largest loss difference, and the largest difference of the exported
encoder's parameters. On GPU set XLA_FLAGS=--xla_gpu_deterministic_ops=true
for bitwise comparisons (the run itself is deterministic given the seed, but
some GPU reductions are not).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from lusjax.layout import METRICS_FILE

ROOT = Path(__file__).resolve().parent.parent


def _losses(workdir: Path) -> dict[int, float]:
    out = {}
    path = workdir / METRICS_FILE
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut by the kill
            continue
        out[rec["step"]] = rec["loss"]  # a resumed run re-logs steps: the last one wins
    return out


def _encoder(workdir: Path):
    import jax

    from lusjax import checkpoint

    return jax.tree.leaves(checkpoint.load_encoder(str(workdir)).variables)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True, help="folder for the runs (ref/, run/)")
    p.add_argument("--config", default=str(ROOT / "configs/simclr_resnet.py:r18"))
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--kill-after", type=int, default=45)
    p.add_argument("--ckpt-every", type=int, default=20)
    args, extra = p.parse_known_args()
    base = Path(args.workdir)

    def cmd(name):
        return [
            sys.executable,
            "-m",
            "lusjax.cli",
            "train",
            "--quiet",
            "--config",
            args.config,
            f"--config.workdir={base / name}",
            f"--config.total_steps={args.steps}",
            f"--config.ckpt_every={args.ckpt_every}",
            "--config.log_every=1",
            *extra,
        ]

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.time()
    subprocess.run(cmd("ref"), check=True, env=env)
    t_ref = time.time() - t0
    proc = subprocess.Popen(cmd("run"), env=env)
    while proc.poll() is None and max(_losses(base / "run"), default=0) < args.kill_after:
        time.sleep(0.02)
    killed_at = max(_losses(base / "run"), default=0)
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if not alive:
        raise SystemExit("the run ended before it could be killed: raise --steps")
    res = subprocess.run(cmd("run"), check=True, env=env, capture_output=True, text=True)
    resumed = next(
        (
            int(w)
            for line in res.stdout.splitlines()
            if line.startswith("resumed from")
            for w in line.split()[3:4]
        ),
        None,
    )
    ref, run = _losses(base / "ref"), _losses(base / "run")
    same = [s for s in ref if s in run and ref[s] == run[s]]
    diffs = [abs(ref[s] - run[s]) for s in ref if s in run]
    enc_ref, enc_run = _encoder(base / "ref"), _encoder(base / "run")
    import jax

    print(
        json.dumps(
            {
                "devices": jax.device_count(),
                "device": jax.devices()[0].device_kind,
                "steps": args.steps,
                "killed_at_logged_step": killed_at,
                "resumed_from": resumed,
                "logged_steps": len(run),
                "losses_equal": len(same),
                "losses_compared": len(diffs),
                "max_loss_diff": max(diffs) if diffs else None,
                "max_encoder_param_diff": max(
                    float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                    for a, b in zip(enc_ref, enc_run)
                ),
                "ref_run_s": round(t_ref, 1),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
