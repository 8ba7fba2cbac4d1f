"""SSL methods as plug-ins of the one training loop (`lusjax/train.py`).

Each method is one module `lusjax/ssl/<name>.py` that defines a module-level
`METHOD = Method(...)`. The loop finds it with `get(name)` and never branches on
the method's name. What the loop does with a method, per step:

  1. online = head.apply(backbone features of view1 and view2)  -> two dicts
  2. target = the same forward with `method_state["target"]` variables, under
     stop_gradient, only when `Method.needs_target` (BYOL, MoCo v2)
  3. loss, metrics, state_updates = method.loss(online, target, method_state,
                                               cfg=config.ssl, axis_name=AXIS)
  4. optimizer step on params (backbone, head, online probe)
  5. method_state = method.update_state(method_state | state_updates,
                                        online_variables, step, total_steps, cfg)
     (EMA target); `step` is the 0-based index of the step just taken.

Each module also has `default_config() -> ml_collections.ConfigDict` with every
hyper-parameter its head and loss read (what `config.ssl` holds).
Shared heads and helpers (EMA, queues, global statistics): `lusjax.ssl.heads`.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

from lusjax.errors import UserError

NAMES = ("simclr", "mocov2", "byol", "simsiam", "barlow", "vicreg", "swav")


@dataclasses.dataclass(frozen=True)
class Method:
    """What an SSL method adds to the shared loop.

    Attributes:
      name: registry name.
      make_head: `(cfg, *, dtype=jnp.float32, bn_axis_name=None) ->
        nn.Module`; dtype is the compute dtype (params and outputs float32),
        bn_axis_name the mesh axis for synchronised BN in the head (pass the
        backbone's). The module's `__call__(feats, train)` maps backbone
        features [B, D] to a dict of float32 arrays: always "z" (projection);
        "p" (prediction) for BYOL/SimSiam; "scores" (prototype cosine scores)
        and, with its queue on, "prototypes" ([dim, K], the same on every
        device) for SwAV. Its variables: {"params"[, "batch_stats"]}.
      loss: `(online, target, method_state, *, cfg, axis_name) -> (loss,
        metrics, state_updates)`. `online`/`target` are {"view1": head_out,
        "view2": head_out}; `target` is None unless `needs_target`. Called on
        the per-device shard inside `shard_map`: use `lusjax.sharding`
        helpers with `axis_name` for global-batch quantities (negatives,
        Sinkhorn, queues); `axis_name=None` means a single device.
        The loss is the global-batch loss (a mean over the global batch, not
        over this shard) and, like every metric and `state_updates`, is
        already reduced over `axis_name`: the same on every device and typed
        replicated, so shard_map can return it with `out_specs=P()` and
        `jax.grad` of it equals the single-device gradient.
        `metrics` is a dict of scalars (loss terms and "z_std", the collapse
        signal); `state_updates` a dict merged into method_state (e.g. a new
        queue), possibly empty.
      init_state: `(variables, cfg) -> method_state` pytree, where variables
        is {"params": {"backbone", "head", ...}, "batch_stats": {"backbone",
        "head"}} of the online network (extra params such as a probe are
        ignored; a batch_stats entry may be absent). May be {}. The EMA
        target is `method_state["target"]`, the online variables' backbone
        and head in the same structure. Traceable (fixed seeds inside), so
        `jax.eval_shape` works on it.
      update_state: `(method_state, variables, step, total_steps, cfg) ->
        method_state` after the optimizer step (EMA target update).
      needs_target: whether step 2 above runs.
      freeze: `(tree, step, cfg) -> tree`, applied to the gradients and to the
        optimizer's updates of {"backbone", "head", "probe"} params: zeroes
        what must not train yet (SwAV's prototypes early on). Identity by
        default.
      global_outputs: head outputs that are not per example (e.g. SwAV's
        prototype matrix): the loop gives them whole to both views instead of
        splitting them along the batch.
      paper: link to the paper, for the docs.
    """

    name: str
    make_head: Callable[[Any], Any]
    loss: Callable[..., tuple[Any, dict, dict]]
    init_state: Callable[[Any, Any], Any] = lambda variables, cfg: {}
    update_state: Callable[..., Any] = lambda state, variables, step, total, cfg: state
    needs_target: bool = False
    freeze: Callable[[Any, Any, Any], Any] = lambda tree, step, cfg: tree
    global_outputs: tuple[str, ...] = ()
    paper: str = ""


def get(name: str) -> Method:
    """Returns the method registered as `name` (module `lusjax.ssl.<name>`)."""
    if name not in NAMES:
        raise UserError(f"unknown SSL method {name!r}; choose one of {', '.join(NAMES)}")
    return importlib.import_module(f"lusjax.ssl.{name}").METHOD
