"""A 4-run CPU sweep of configs/quickstart.py: temporal positive pairs or not x 2 lrs.

    lusjax sweep --config configs/quickstart.py --sweep configs/sweeps/quick_sweep.py \
        --root runs/quick_sweep --run
    lusjax sweep-report runs/quick_sweep      # runs/quick_sweep/sweep_report.{md,png}

`data.max_dt=0` makes the two views of a pair the same frame (classic SimCLR);
`data.max_dt=4` pairs frames up to 4 apart in the clip (temporal positives).
Each run's workdir is runs/quick_sweep/<its overrides>, e.g.
`data.max_dt=4,optim.lr=0.5`; running the command again skips the finished runs
and resumes the unfinished ones. Any `--config.KEY=VALUE` applies to all runs
(`--config.total_steps=4` for a smoke test). On 2 CPU cores the four runs take
about four times as long as one quickstart pretraining.
"""

from lusjax.sweep_plan import product


def get_sweep(arg=None):
    return product({"data.max_dt": [0, 4], "optim.lr": [0.5, 1.0]})
