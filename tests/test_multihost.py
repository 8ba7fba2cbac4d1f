"""Multi-host correctness on CPU: N local processes agree with one process.

Each test starts real JAX processes (this file run as a script is the child),
joined through `lusjax.distributed.initialize()` from the LUSJAX_* variables
that `launch/local.sh --procs N` also sets, and compares what they compute
with one process that holds all the devices.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent
STEPS, GLOBAL_BATCH, FEATURES, LR = 3, 16, 5, 0.1


# ----------------------------------------------------------------------------
# Launching children.
# ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def child_env(procs: int, process_id: int, port: int, cpu_devices: int, **extra) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LUSJAX_", "SLURM_", "TPU_")) and k != "XLA_FLAGS"
    }
    env.update(
        JAX_PLATFORMS="cpu",
        LUSJAX_CPU_DEVICES=str(cpu_devices),
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        **extra,
    )
    if procs > 1:
        env.update(
            LUSJAX_COORDINATOR=f"localhost:{port}",
            LUSJAX_NUM_PROCESSES=str(procs),
            LUSJAX_PROCESS_ID=str(process_id),
        )
    return env


def run_procs(
    args: list[str], procs: int, cpu_devices: int, timeout: float, script: Path = HERE, **extra_env
) -> list[str]:
    """Runs `python SCRIPT *args` (default: this file) as `procs` joined processes;
    returns their stdouts."""
    port = free_port()
    children = [
        subprocess.Popen(
            [sys.executable, str(script), *args, str(i)],
            env=child_env(procs, i, port, cpu_devices, **extra_env),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(procs)
    ]
    deadline = time.time() + timeout
    outs = []
    try:
        for p in children:
            out, err = p.communicate(timeout=max(1.0, deadline - time.time()))
            assert p.returncode == 0, f"child failed ({p.returncode}):\n{err[-3000:]}"
            outs.append(out)
    finally:
        for p in children:  # a failed or hung peer would block the others forever
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    return outs


def last_json(stdout: str) -> dict:
    return json.loads([ln for ln in stdout.splitlines() if ln.startswith("{")][-1])


# ----------------------------------------------------------------------------
# The pattern: a jitted shard_map data-parallel step with psum'd gradients.
# ----------------------------------------------------------------------------


def make_data(path: Path) -> np.ndarray:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(STEPS, GLOBAL_BATCH, FEATURES + 1)).astype(np.float32)
    np.save(path, data)
    return data


def numpy_reference(data: np.ndarray) -> tuple[np.ndarray, list[float]]:
    w, losses = np.zeros(FEATURES, np.float64), []
    for batch in data.astype(np.float64):
        x, y = batch[:, :FEATURES], batch[:, FEATURES]
        err = x @ w - y
        losses.append(float((err**2).mean()))
        w = w - LR * 2 * x.T @ err / len(y)
    return w, losses


def pattern_child(data_path: str, _index: str) -> None:
    from lusjax import distributed, sharding

    distributed.initialize()
    import jax
    import jax.numpy as jnp
    from jax.experimental import multihost_utils
    from jax.sharding import PartitionSpec as P

    mesh = sharding.make_mesh()
    batch_sharding = sharding.batch_sharding(mesh)
    data = np.load(data_path, mmap_mode="r")  # [steps, global batch, features + 1]
    n_steps, global_batch = data.shape[:2]
    # The rows this process's devices hold: the only rows it reads.
    index_map = batch_sharding.addressable_devices_indices_map((global_batch,))
    rows = sorted({r for (sl,) in index_map.values() for r in range(global_batch)[sl]})

    def step(w, batch):
        x, y = batch[:, :FEATURES], batch[:, FEATURES]

        def local_loss(w):  # this device's share of the global mean
            return jnp.sum((x @ w - y) ** 2) / global_batch

        loss, grad = jax.value_and_grad(local_loss)(w)
        loss, grad = jax.lax.psum((loss, grad), sharding.AXIS)
        return w - LR * grad, loss

    # check_vma=False as in lusjax.train: grads stay per-device and the explicit
    # psum sums them (with vma checking, grad of a replicated input is psum'd already).
    step = jax.jit(
        jax.shard_map(
            step, mesh=mesh, in_specs=(P(), P(sharding.AXIS)), out_specs=(P(), P()), check_vma=False
        )
    )
    w = jax.device_put(jnp.zeros(FEATURES, jnp.float32), sharding.replicated(mesh))
    losses = []
    for s in range(n_steps):
        local = np.asarray(data[s, rows])  # host-local shard only
        batch = jax.make_array_from_process_local_data(batch_sharding, local)
        w, loss = step(w, batch)
        losses.append(float(loss.addressable_data(0)))
    gathered = multihost_utils.process_allgather(np.asarray(rows, np.int32))
    print(
        json.dumps(
            {
                "process": jax.process_index(),
                "processes": jax.process_count(),
                "devices": jax.device_count(),
                "local_devices": jax.local_device_count(),
                "rows": rows,
                "all_rows": np.asarray(gathered).reshape(-1).tolist(),
                "w": np.asarray(w.addressable_data(0)).tolist(),
                "losses": losses,
            }
        ),
        flush=True,
    )


def test_two_processes_match_one_process(tmp_path):
    data = make_data(tmp_path / "data.npy")
    w_np, losses_np = numpy_reference(data)
    (one,) = run_procs(["pattern", str(tmp_path / "data.npy")], procs=1, cpu_devices=4, timeout=90)
    two = run_procs(["pattern", str(tmp_path / "data.npy")], procs=2, cpu_devices=2, timeout=90)
    ref = last_json(one)
    assert (ref["processes"], ref["devices"]) == (1, 4)
    np.testing.assert_allclose(ref["w"], w_np, atol=1e-5)
    np.testing.assert_allclose(ref["losses"], losses_np, rtol=1e-5)
    results = [last_json(o) for o in two]
    assert [r["process"] for r in results] == [0, 1]
    half = GLOBAL_BATCH // 2
    for r in results:
        assert (r["processes"], r["devices"], r["local_devices"]) == (2, 4, 2)
        # Each host read only its own contiguous half of every global batch ...
        assert r["rows"] == list(range(r["process"] * half, (r["process"] + 1) * half))
        # ... the halves cover the batch once ...
        assert sorted(r["all_rows"]) == list(range(GLOBAL_BATCH))
        # ... and the result is the single-process one.
        np.testing.assert_allclose(r["w"], ref["w"], atol=1e-5)
        np.testing.assert_allclose(r["losses"], ref["losses"], rtol=1e-5)


# ----------------------------------------------------------------------------
# lusjax.distributed.plan: where the process ids come from.
# ----------------------------------------------------------------------------


def test_plan_single_process_by_default():
    from lusjax import distributed

    assert distributed.plan({}).source == "single"
    assert not distributed.plan({"PATH": "/bin"}).multi_process
    assert (
        distributed.plan(
            {
                "SLURM_NTASKS": "1",
                "SLURM_PROCID": "0",
                "SLURM_STEP_NODELIST": "n1",
                "SLURM_JOB_ID": "5",
            }
        ).source
        == "single"
    )


def test_plan_explicit_env():
    from lusjax import distributed

    p = distributed.plan(
        {
            "LUSJAX_COORDINATOR": "10.0.0.1:1234",
            "LUSJAX_NUM_PROCESSES": "4",
            "LUSJAX_PROCESS_ID": "3",
            "LUSJAX_CPU_DEVICES": "2",
        }
    )
    assert (p.source, p.coordinator_address, p.num_processes, p.process_id) == (
        "env",
        "10.0.0.1:1234",
        4,
        3,
    )
    assert p.cpu_devices == 2
    assert p.kwargs() == {
        "coordinator_address": "10.0.0.1:1234",
        "num_processes": 4,
        "process_id": 3,
        "cluster_detection_method": "deactivate",
    }
    off = distributed.plan(
        {
            "LUSJAX_DISTRIBUTED": "off",
            "LUSJAX_COORDINATOR": "h:1",
            "LUSJAX_NUM_PROCESSES": "2",
            "LUSJAX_PROCESS_ID": "0",
        }
    )
    assert off.source == "single"


def test_plan_bad_env_is_a_user_error():
    from lusjax import distributed
    from lusjax.errors import UserError

    with pytest.raises(UserError, match="LUSJAX_PROCESS_ID"):
        distributed.plan(
            {"LUSJAX_COORDINATOR": "h:1", "LUSJAX_NUM_PROCESSES": "2", "LUSJAX_PROCESS_ID": "2"}
        )
    with pytest.raises(UserError, match="LUSJAX_NUM_PROCESSES"):
        distributed.plan({"LUSJAX_COORDINATOR": "h:1", "LUSJAX_PROCESS_ID": "0"})


@pytest.mark.parametrize(
    "nodelist,host",
    [
        ("node001", "node001"),
        ("node001,host2", "node001"),
        ("node[001-015],host2", "node001"),
        ("node[007,001-003]", "node007"),
        ("rack[2-3]-gpu[04-05]", "rack2-gpu04"),
        ("a[1-2],b[3-4]", "a1"),
    ],
)
def test_first_host_of_slurm_nodelist(nodelist, host):
    from lusjax import distributed

    assert distributed.first_host(nodelist) == host


def test_plan_slurm_one_task_per_node():
    from lusjax import distributed

    env = {
        "SLURM_JOB_ID": "123456",
        "SLURM_NTASKS": "2",
        "SLURM_PROCID": "1",
        "SLURM_LOCALID": "0",
        "SLURM_STEP_NODELIST": "gpu[017-018]",
        "SLURM_STEP_NUM_NODES": "2",
    }
    p = distributed.plan(env)
    port = 123456 % 4096 + 61440
    assert (p.source, p.coordinator_address, p.num_processes, p.process_id) == (
        "slurm",
        f"gpu017:{port}",
        2,
        1,
    )
    # One task per node sees all the node's GPUs: no local_device_ids, no re-detection.
    assert "local_device_ids" not in p.kwargs()
    assert p.kwargs()["cluster_detection_method"] == "deactivate"
    assert (
        distributed.plan({**env, "LUSJAX_COORDINATOR_PORT": "7777"}).coordinator_address
        == "gpu017:7777"
    )


def test_plan_slurm_one_task_per_gpu():
    from lusjax import distributed

    p = distributed.plan(
        {
            "SLURM_JOB_ID": "9",
            "SLURM_NTASKS": "16",
            "SLURM_PROCID": "11",
            "SLURM_LOCALID": "3",
            "SLURM_STEP_NODELIST": "n[1-2]",
            "SLURM_STEP_NUM_NODES": "2",
        }
    )
    assert p.local_device_ids == (3,)
    assert p.kwargs()["local_device_ids"] == [3]


def test_plan_tpu_pod_auto():
    from lusjax import distributed

    assert distributed.plan({"LUSJAX_DISTRIBUTED": "auto"}).source == "auto"
    assert distributed.plan({"LUSJAX_DISTRIBUTED": "auto"}).kwargs() == {}
    assert distributed.plan({"TPU_WORKER_HOSTNAMES": "t-0,t-1,t-2,t-3"}).source == "auto"
    assert distributed.plan({"TPU_WORKER_HOSTNAMES": "t-0"}).source == "single"


def test_initialize_single_process_is_a_noop_and_idempotent(monkeypatch):
    from lusjax import distributed

    monkeypatch.setitem(distributed._STATE, "plan", None)
    first = distributed.initialize({})
    assert first.source == "single"
    assert distributed.initialize({"LUSJAX_DISTRIBUTED": "auto"}) is first


# ----------------------------------------------------------------------------
# The real loop: lusjax.train.train with 2 processes x 2 devices vs 1 x 4.
# ----------------------------------------------------------------------------

TRAIN_CONFIG = "configs/quickstart.py"
TRAIN_OVERRIDES = [
    "--config.total_steps=3",
    "--config.log_every=1",
    "--config.ckpt_every=0",
    "--config.batch_size=8",
    "--config.probe.eval_every=0",
]


class _HostsConcat:
    """One process emulating N hosts' input: batch k = host 0's rows, host 1's, ...

    This is the global batch a multi-process run assembles with
    make_array_from_process_local_data, so a 1-process run given it must match."""

    def __init__(self, its):
        self.its = its

    def __next__(self):
        parts = [next(it) for it in self.its]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def get_state(self):
        return {str(i): it.get_state() for i, it in enumerate(self.its)}

    def set_state(self, state):
        for i, it in enumerate(self.its):
            it.set_state(state[str(i)])


def train_child(config: str, workdir: str, out: str, emulate_hosts: str, _index: str) -> None:
    from lusjax import distributed

    distributed.initialize()
    import jax

    from lusjax import checkpoint, train
    from lusjax import config as config_lib
    from lusjax.data import pipeline

    hosts = int(emulate_hosts)
    if hosts > 1:  # the reference: one process reading what `hosts` hosts would read
        make = pipeline.train_iterator

        def concat_iterator(*args, global_batch_size, **kw):
            kw.pop("process_index", None), kw.pop("process_count", None)
            return _HostsConcat(
                [
                    make(
                        *args,
                        global_batch_size=global_batch_size,
                        process_index=i,
                        process_count=hosts,
                        **kw,
                    )
                    for i in range(hosts)
                ]
            )

        pipeline.train_iterator = concat_iterator
    overrides, _ = config_lib.split_overrides(TRAIN_OVERRIDES + [f"--config.workdir={workdir}"])
    cfg = config_lib.load(config, overrides)
    summary = train.train(cfg, progress=False)
    enc = checkpoint.load_encoder(workdir)  # every process: orbax restores are collective
    if jax.process_index() == 0:
        leaves = jax.tree_util.tree_leaves_with_path(enc.variables)
        np.savez(out, **{jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves})
    print(
        json.dumps(
            {
                "process": jax.process_index(),
                "devices": jax.device_count(),
                "step": summary["step"],
                "loss": summary["final"].get("loss"),
            }
        ),
        flush=True,
    )


@pytest.mark.slow
def test_train_two_processes_match_one_process(tmp_path):
    """2 processes x 2 CPU devices == 1 process x 4 devices fed the same global batches."""
    if not (REPO / TRAIN_CONFIG).exists():
        pytest.skip(f"{TRAIN_CONFIG} not there yet")
    env = {"LUSJAX_CACHE": str(tmp_path / "cache")}  # generated once, by the first run
    config = str(REPO / TRAIN_CONFIG)
    (one,) = run_procs(
        ["train", config, str(tmp_path / "one"), str(tmp_path / "one.npz"), "2"],
        procs=1,
        cpu_devices=4,
        timeout=600,
        **env,
    )
    two = run_procs(
        ["train", config, str(tmp_path / "two"), str(tmp_path / "two.npz"), "1"],
        procs=2,
        cpu_devices=2,
        timeout=600,
        **env,
    )
    ref, results = last_json(one), [last_json(o) for o in two]
    assert ref["devices"] == 4 and ref["step"] == 3
    for r in results:
        assert r["devices"] == 4 and r["step"] == 3
    np.testing.assert_allclose(results[0]["loss"], ref["loss"], rtol=1e-5)
    a, b = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    assert sorted(a.files) == sorted(b.files) and a.files
    for k in a.files:
        np.testing.assert_allclose(b[k], a[k], atol=1e-5, rtol=1e-5, err_msg=k)
    # metrics.jsonl is written by process 0 only, once per step.
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "two/metrics.jsonl").open()]
    assert steps == [1, 2, 3]


# ----------------------------------------------------------------------------
# Child entry point.
# ----------------------------------------------------------------------------

CHILDREN = {"pattern": pattern_child, "train": train_child}

if __name__ == "__main__":
    CHILDREN[sys.argv[1]](*sys.argv[2:])
