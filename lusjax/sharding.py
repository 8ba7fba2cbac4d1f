"""Mesh and cross-device helpers: the one place that knows about devices.

Training runs the per-device step under `shard_map` over a 1-D mesh whose axis
is `AXIS`. Code that needs global-batch quantities (SimCLR negatives, BN
statistics, MoCo queue, SwAV Sinkhorn) calls these helpers with the axis name
it was given; `axis_name=None` means a single device and makes them no-ops.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    """A 1-D data-parallel mesh over `devices` (default: all devices of all hosts)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the data axis."""
    return NamedSharding(mesh, P(AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def all_gather(x, axis_name: str | None):
    """Concatenates `x` over devices along axis 0 (identity on one device)."""
    if axis_name is None:
        return x
    return jax.lax.all_gather(x, axis_name, tiled=True)


def pmean(x, axis_name: str | None):
    """Mean over devices (identity on one device)."""
    return x if axis_name is None else jax.lax.pmean(x, axis_name)


def psum(x, axis_name: str | None):
    """Sum over devices (identity on one device)."""
    return x if axis_name is None else jax.lax.psum(x, axis_name)


def device_index(axis_name: str | None):
    """This device's position on the data axis (0 on one device)."""
    return 0 if axis_name is None else jax.lax.axis_index(axis_name)


def num_devices(axis_name: str | None) -> int:
    return 1 if axis_name is None else jax.lax.axis_size(axis_name)
