"""A pretraining sweep for a GPU cluster or a TPU pod: backbones x learning rates x seeds.

    # SLURM: one array task per run, each on 2 nodes x 8 GPUs
    lusjax sweep --config configs/quickstart.py --sweep configs/sweeps/pod_sweep.py \
        --root /shared/runs/pod_sweep --emit slurm \
        --config.data.data_dir=/shared/lus --config.total_steps=20000 \
        --config.batch_size=1024 --config.model.dtype=bfloat16
    bash launch/slurm.sh --nodes=2 --gpus-per-node=8 /shared/runs/pod_sweep/runs.txt

    # TPU VM pod: the runs one after another, each on every host
    lusjax sweep --config configs/quickstart.py --sweep configs/sweeps/pod_sweep.py:small \
        --root gs://BUCKET/runs/pod_sweep --emit tpu
    bash launch/tpu_vm.sh --name $TPU_NAME --zone $ZONE pod_sweep-runs.txt

Full: 2 backbones x 2 learning rates x 2 seeds = 8 runs; `:small` = 2 runs.
SSL methods differ in their `ssl` section, so a method sweep gives each run its
own config with the "config" key instead of overriding `method`, e.g.
`product({"config": ["configs/simclr_resnet.py:r18", "configs/byol_resnet.py:r18"],
"seed": [0, 1]})`.
"""

from lusjax.sweep_plan import product


def get_sweep(arg=None):
    if arg == "small":
        return product({"model.name": ["resnet18", "resnet50"]})
    return product({"model.name": ["resnet18", "resnet50"], "optim.lr": [0.3, 1.0], "seed": [0, 1]})
