"""Multi-process JAX start-up: call `initialize()` once, before any JAX computation.

    from lusjax import distributed
    distributed.initialize()   # a no-op on one process; safe to call again

Where the processes learn about each other (first match wins):

1. `LUSJAX_DISTRIBUTED=off` (or 0/false/no): never initialise; one process.
2. Explicit: `LUSJAX_COORDINATOR=host:port`, `LUSJAX_NUM_PROCESSES=N`,
   `LUSJAX_PROCESS_ID=i` (what `launch/local.sh --procs N` sets).
3. SLURM, when the step has more than one task (`srun` sets `SLURM_NTASKS`,
   `SLURM_PROCID`, `SLURM_STEP_NODELIST`): the coordinator is the first host of
   the node list, on port `LUSJAX_COORDINATOR_PORT` or one derived from the
   job id (as JAX does), so that every task computes the same address.
4. `LUSJAX_DISTRIBUTED=auto`, or a TPU VM pod (`TPU_WORKER_HOSTNAMES` lists
   more than one host): `jax.distributed.initialize()` with no arguments, and
   JAX detects the pod itself (`launch/tpu_vm.sh` sets `auto`).
5. Otherwise: one process, nothing to do.

`LUSJAX_CPU_DEVICES=n` also sets `jax_num_cpu_devices` (n CPU devices per
process), for simulating hosts on one machine.

`LUSJAX_HEARTBEAT_TIMEOUT_S=s` (default: JAX's, 100 s): a process that sends no
heartbeat to the coordinator for s seconds (killed, host down) is declared dead
and JAX ends every other process with an error saying so. A process that is
alive but stuck (a hung data loader) keeps sending heartbeats: `lusjax.watchdog`
(`config.watchdog_s`) catches that one. When process 0, which hosts the
coordinator, dies, the others end at once ("the leader task ... died").
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any

from lusjax.errors import UserError

_OFF = ("0", "off", "false", "no")
_STATE: dict[str, Any] = {"plan": None}


@dataclasses.dataclass(frozen=True)
class Plan:
    """How this process joins the job; `source` says where the answer came from."""

    source: str  # "single", "env", "slurm" or "auto"
    coordinator_address: str | None = None
    num_processes: int = 1
    process_id: int = 0
    local_device_ids: tuple[int, ...] | None = None
    cpu_devices: int | None = None
    heartbeat_timeout_s: int | None = None

    @property
    def multi_process(self) -> bool:
        return self.source != "single"

    def kwargs(self) -> dict[str, Any]:
        """Arguments for `jax.distributed.initialize`."""
        out: dict[str, Any] = {}
        if self.source != "auto":
            out.update(
                coordinator_address=self.coordinator_address,
                num_processes=self.num_processes,
                process_id=self.process_id,
            )
            if self.local_device_ids is not None:
                out["local_device_ids"] = list(self.local_device_ids)
            # We already chose every value: keep JAX from re-detecting SLURM, which
            # would restrict a one-task-per-node process to a single GPU.
            out["cluster_detection_method"] = "deactivate"
        if self.heartbeat_timeout_s is not None:
            out["heartbeat_timeout_seconds"] = self.heartbeat_timeout_s
        return out


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: 'gpu[003-004,9],cpu1' -> 'gpu003'."""
    depth, end = 0, len(nodelist)
    for i, ch in enumerate(nodelist):  # the first top-level comma ends the first entry
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            end = i
            break
    entry = nodelist[:end].strip()
    # Each bracket group contributes its first value ('[003-004,9]' -> '003').
    host = re.sub(r"\[([^\]]*)\]", lambda m: re.split(r"[,-]", m.group(1))[0], entry)
    if not host:
        raise UserError(f"cannot read a host from the SLURM node list {nodelist!r}")
    return host


def _int(env: Mapping[str, str], key: str) -> int:
    try:
        return int(env[key])
    except (KeyError, ValueError):
        raise UserError(
            f"environment variable {key} must be an integer, got {env.get(key)!r}"
        ) from None


def _device_ids(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    return tuple(int(t) for t in text.replace(" ", "").split(",") if t)


def plan(env: Mapping[str, str] | None = None) -> Plan:
    """Reads the environment (default `os.environ`) into a `Plan`; starts nothing."""
    env = os.environ if env is None else env
    p = _plan(env)
    if env.get("LUSJAX_HEARTBEAT_TIMEOUT_S"):
        p = dataclasses.replace(p, heartbeat_timeout_s=_int(env, "LUSJAX_HEARTBEAT_TIMEOUT_S"))
    return p


def _plan(env: Mapping[str, str]) -> Plan:
    mode = env.get("LUSJAX_DISTRIBUTED", "").strip().lower()
    cpu = int(env["LUSJAX_CPU_DEVICES"]) if env.get("LUSJAX_CPU_DEVICES") else None
    local_ids = _device_ids(env.get("LUSJAX_LOCAL_DEVICE_IDS"))
    if mode in _OFF:
        return Plan("single", cpu_devices=cpu)

    if env.get("LUSJAX_COORDINATOR"):
        n, i = _int(env, "LUSJAX_NUM_PROCESSES"), _int(env, "LUSJAX_PROCESS_ID")
        if not 0 <= i < n:
            raise UserError(f"LUSJAX_PROCESS_ID={i} is outside 0..{n - 1}")
        return Plan("env", env["LUSJAX_COORDINATOR"], n, i, local_ids, cpu)

    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
    if (
        mode != "auto"
        and nodelist
        and "SLURM_PROCID" in env
        and int(env.get("SLURM_NTASKS", "1") or 1) > 1
    ):
        n, i = _int(env, "SLURM_NTASKS"), _int(env, "SLURM_PROCID")
        port = env.get("LUSJAX_COORDINATOR_PORT") or env.get("JAX_COORDINATOR_PORT")
        if not port:  # the same formula as JAX: every task of the job agrees on it
            port = str(_int(env, "SLURM_JOB_ID") % 2**12 + (65535 - 2**12 + 1))
        nodes = int(env.get("SLURM_STEP_NUM_NODES") or env.get("SLURM_JOB_NUM_NODES") or 1)
        if local_ids is None and n > nodes and "SLURM_LOCALID" in env:
            local_ids = (_int(env, "SLURM_LOCALID"),)  # one task per device
        return Plan("slurm", f"{first_host(nodelist)}:{port}", n, i, local_ids, cpu)

    tpu_hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
    if mode == "auto" or len(tpu_hosts) > 1:
        return Plan("auto", cpu_devices=cpu)
    return Plan("single", cpu_devices=cpu)


def initialize(env: Mapping[str, str] | None = None, *, timeout_s: int = 300) -> Plan:
    """Joins the multi-process job described by `env` (see the module docstring).

    A no-op for a single process; calling it again returns the first plan.
    Must run before anything touches a JAX device.
    """
    if _STATE["plan"] is not None:
        return _STATE["plan"]
    import jax

    p = plan(env)
    if p.cpu_devices:
        jax.config.update("jax_num_cpu_devices", p.cpu_devices)
    if p.multi_process and not jax.distributed.is_initialized():
        from jax._src import xla_bridge

        if xla_bridge.backends_are_initialized():
            raise UserError(
                "lusjax.distributed.initialize() must run before any JAX "
                "computation (a device was already used in this process)"
            )
        jax.distributed.initialize(initialization_timeout=timeout_s, **p.kwargs())
        if jax.devices()[0].platform == "cpu":
            # CPU collectives (gloo) set up their connections at the first collective and
            # give the peers only 30 s to meet there: do it now, while the processes are
            # in step, not after compilations that may end far apart on a loaded machine.
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("lusjax.distributed.initialize")
    _STATE["plan"] = p
    return p


def describe() -> str:
    """One line about this process's place in the job, for logs."""
    import jax

    return (
        f"process {jax.process_index()}/{jax.process_count()}, "
        f"{jax.local_device_count()} local / {jax.device_count()} global devices "
        f"({jax.devices()[0].platform})"
    )
