"""A pretraining sweep for a GPU cluster or TPU pod: methods x backbones x lr x seeds.

    # SLURM: one array task per run, 2 nodes x 8 GPUs each
    lusjax sweep --config configs/quickstart.py --sweep configs/sweeps/pod_sweep.py \
        --root /shared/runs/pod_sweep --emit slurm
    bash launch/slurm.sh --nodes=2 --gpus-per-node=8 /shared/runs/pod_sweep/runs.txt

    # TPU VM pod: the runs one after another, each on every host
    lusjax sweep --config configs/quickstart.py --sweep configs/sweeps/pod_sweep.py:small \
        --root gs://BUCKET/pod_sweep --emit tpu
    bash launch/tpu_vm.sh --name $TPU_NAME --zone $ZONE pod_sweep-runs.txt

`:small` keeps one seed and one backbone (7 runs); the full sweep is
7 methods x 2 backbones x 2 learning rates x 2 seeds = 56 runs.
Set the real dataset and duration on the command line, e.g.
`--config.data.data_dir=/shared/lus --config.total_steps=20000 --config.batch_size=1024`.
"""

from lusjax.sweep import product

METHODS = ["simclr", "mocov2", "byol", "simsiam", "barlow", "vicreg", "swav"]


def get_sweep(arg=None):
    if arg == "small":
        return product({"method": METHODS, "model.name": ["resnet18"]})
    return product({"method": METHODS, "model.name": ["resnet18", "resnet50"],
                    "optim.lr": [0.3, 1.0], "seed": [0, 1]})
