"""A 4-run CPU sweep of configs/quickstart.py: 2 SSL methods x 2 learning rates.

    lusjax sweep --config configs/quickstart.py --sweep configs/sweeps/quick_sweep.py \
        --root runs/quick_sweep --run
    lusjax sweep-report runs/quick_sweep      # runs/quick_sweep/sweep_report.{md,png}

Each run's workdir is runs/quick_sweep/<its overrides>, e.g.
`method=byol,optim.lr=0.3`; running the command again skips the finished runs
and resumes the unfinished ones. Any `--config.KEY=VALUE` applies to all runs
(`--config.total_steps=4` for a smoke test). On 2 CPU cores the four runs take
about as long as four quickstart pretrainings.
"""

from lusjax.sweep import product


def get_sweep(arg=None):
    return product({"method": ["simclr", "byol"], "optim.lr": [0.1, 0.3]})
