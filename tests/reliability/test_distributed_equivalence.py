"""Distributed equivalence: the train step on 1 device x B == 8 devices x B/8 == 2 processes
x 4 devices, to 1e-5, for SimCLR, MoCo v2, BYOL and SwAV (global negatives, synced BN).

Compared after each of two steps (the second sees the EMA target and the MoCo queue the
first one updated): the loss, the gradients of every parameter, and after the last step
the params, BatchNorm statistics and method state. The gradients come out of the real
step (`lusjax.train.make_train_step`) through an optimizer that stores them in its state
(`_stash_grads`). And the comparison is shown to bite: with the all-gather of SimCLR's
negatives replaced by the local shard, or with BatchNorm not synchronised
(`model.sync_bn=False`), the 8-device step no longer matches and the check says so.

The 2-process case runs this file as a script (the child), like tests/test_multihost.py.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve()
TESTS = HERE.parent.parent
sys.path[:0] = [str(TESTS.parent), str(TESTS)]  # the repo and tests/ (when run as a script)

from test_multihost import run_procs
from test_train import method_config

METHODS = ("simclr", "mocov2", "byol", "swav")
GLOBAL_BATCH, STEPS, LR = 16, 2, 0.1
TOL = {"rtol": 1e-5, "atol": 1e-5}


# ----------------------------------------------------------------------------
# Running the real step, with the gradients kept.
# ----------------------------------------------------------------------------


def _stash_grads(lr: float):
    """SGD whose state is the last gradient: the step's grads come out in the state."""
    import jax
    import jax.numpy as jnp
    import optax

    def init(params):
        return jax.tree.map(jnp.zeros_like, params)

    def update(grads, state, params=None):
        del state, params
        return jax.tree.map(lambda g: -lr * g, grads), grads

    return optax.GradientTransformation(init, update)


def make_batch(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    b = GLOBAL_BATCH
    return {
        "view1": rng.integers(0, 255, (b, 32, 32, 1), dtype=np.uint8),
        "view2": rng.integers(0, 255, (b, 32, 32, 1), dtype=np.uint8),
        "label": rng.integers(-1, 4, (b,)).astype(np.int32),
        "index": np.arange(b, dtype=np.int32),
    }


def _flat(tree, prefix: str) -> dict[str, np.ndarray]:
    import jax

    return {
        prefix + jax.tree_util.keystr(k): np.asarray(v)
        for k, v in jax.tree_util.tree_leaves_with_path(tree)
    }


def run_steps(cfg, mesh, steps: int = STEPS) -> dict[str, np.ndarray]:
    """`steps` train steps of `cfg` on `mesh`: {name: array} of losses, grads and state.

    Each process feeds only its own rows of the global batch (as `lusjax train` does);
    with one process that is the whole batch.
    """
    import flax.linen as nn
    import jax

    from lusjax import sharding, ssl, train

    method = ssl.get(cfg.method)
    net = train.build_network(cfg, method)
    probe = nn.Dense(4, name="probe")
    tx = _stash_grads(LR)
    init = jax.jit(
        functools.partial(train.init_state, cfg, net, method, probe, tx),
        out_shardings=sharding.replicated(mesh),
    )
    step = train.compile_step(
        train.make_train_step(cfg, net, method, probe, tx, cfg.total_steps, sharding.AXIS), mesh
    )
    batch_sharding = sharding.batch_sharding(mesh)
    index_map = batch_sharding.addressable_devices_indices_map((GLOBAL_BATCH,))
    rows = sorted({r for (sl,) in index_map.values() for r in range(GLOBAL_BATCH)[sl]})

    state = init(jax.random.PRNGKey(0))
    out = {}
    for s in range(steps):
        local = {k: v[rows] for k, v in make_batch(s).items()}
        batch = jax.make_array_from_process_local_data(batch_sharding, local)
        state, metrics = step(state, batch)
        host = jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), (state, metrics))
        out[f"step{s}/loss"] = host[1]["loss"]
        out.update(_flat(host[0]["opt_state"], f"step{s}/grad"))
    last = host[0]
    for part in ("params", "batch_stats", "method_state"):
        out.update(_flat(last[part], part))
    return out


def assert_equivalent(ref: dict, got: dict, what: str) -> None:
    """Every array of `got` equals `ref`'s to TOL, in order (losses and gradients step by
    step, then the state); the message names the first that differs."""
    assert sorted(ref) == sorted(got), what
    for k, want in ref.items():
        np.testing.assert_allclose(got[k], want, **TOL, err_msg=f"{what}: {k}")


def config(method: str, tmp_path, *extra):
    return method_config(method, tmp_path, ("total_steps", "4"), *extra)


@functools.cache
def reference(method: str) -> dict:
    """The 1-device result (computed once per test session)."""
    import jax

    from lusjax import sharding

    return run_steps(config(method, "/tmp/unused"), sharding.make_mesh(jax.devices()[:1]))


def eight_devices(cfg) -> dict:
    import jax

    from lusjax import sharding

    assert jax.device_count() == 8
    return run_steps(cfg, sharding.make_mesh(jax.devices()))


# ----------------------------------------------------------------------------
# 1 device vs 8 devices (forced host devices), and the negative checks.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_eight_devices_equal_one_device(method, tmp_path):
    ref = reference(method)
    assert any("grad" in k for k in ref) and np.isfinite(ref["step1/loss"])
    grads = [v for k, v in ref.items() if k.startswith("step1/grad['backbone']")]
    assert max(np.abs(g).max() for g in grads) > 1e-4  # the backbone does get a gradient
    assert_equivalent(ref, eight_devices(config(method, tmp_path)), f"{method}, 8 devices")


def _local_shard_tiled(x, axis_name):
    """What each device would see without the all-gather: its own shard (repeated to the
    global shape, so the rest of the step still runs)."""
    import jax.numpy as jnp

    from lusjax import sharding

    return jnp.tile(x, (sharding.num_devices(axis_name),) + (1,) * (x.ndim - 1))


def test_check_fails_without_the_all_gather(tmp_path, monkeypatch):
    """SimCLR with each device's negatives taken from its own shard only: detected."""
    from lusjax import sharding
    from lusjax.ssl import simclr

    ref = reference("simclr")
    monkeypatch.setattr(sharding, "all_gather", _local_shard_tiled)
    monkeypatch.setattr(simclr, "all_gather", _local_shard_tiled)  # bound at import
    got = eight_devices(config("simclr", tmp_path))
    assert not np.allclose(got["step0/loss"], ref["step0/loss"], **TOL)
    with pytest.raises(AssertionError, match="step0/loss|step0/grad"):
        assert_equivalent(ref, got, "simclr without all-gather")


@pytest.mark.parametrize("method", ["simclr", "byol"])
def test_check_fails_without_the_bn_axis(method, tmp_path):
    """BatchNorm statistics of each device's 2 examples instead of the global 16: detected."""
    ref = reference(method)
    got = eight_devices(config(method, tmp_path, ("model.sync_bn", "False")))
    assert not np.allclose(got["step0/loss"], ref["step0/loss"], **TOL)
    with pytest.raises(AssertionError, match="step0/"):
        assert_equivalent(ref, got, f"{method} without synced BN")


# ----------------------------------------------------------------------------
# 2 processes x 4 devices.
# ----------------------------------------------------------------------------


def child(out_dir: str, methods: str, _index: str) -> None:
    """One of the processes: the steps of `methods` on the 8 devices of both."""
    from lusjax import distributed

    distributed.initialize()
    import jax

    from lusjax import sharding

    mesh = sharding.make_mesh()
    for method in methods.split(","):
        res = run_steps(config(method, "/tmp/unused"), mesh)
        if jax.process_index() == 0:
            np.savez(Path(out_dir) / f"{method}.npz", **res)
    print(
        json.dumps(
            {
                "process": jax.process_index(),
                "devices": jax.device_count(),
                "local_devices": jax.local_device_count(),
            }
        ),
        flush=True,
    )


@pytest.mark.parametrize(
    "methods", ["simclr", pytest.param("mocov2,byol,swav", marks=pytest.mark.slow)]
)
def test_two_processes_x_four_devices_equal_one_device(methods, tmp_path):
    # The children compile like this process (conftest's XLA flags, less the device count).
    outs = run_procs(
        ["child", str(tmp_path), methods],
        procs=2,
        cpu_devices=4,
        timeout=600,
        script=HERE,
        XLA_FLAGS="--xla_backend_optimization_level=0",
    )
    for o in outs:
        info = json.loads([ln for ln in o.splitlines() if ln.startswith("{")][-1])
        assert (info["devices"], info["local_devices"]) == (8, 4)
    for method in methods.split(","):
        got = dict(np.load(tmp_path / f"{method}.npz"))
        assert_equivalent(reference(method), got, f"{method}, 2 processes x 4 devices")


if __name__ == "__main__":
    {"child": child}[sys.argv[1]](*sys.argv[2:])
