"""SSL methods as plug-ins of the one training loop (`lusjax/train.py`).

Each method is one module `lusjax/ssl/<name>.py` that defines a module-level
`METHOD = Method(name="<name>", ...)`. The registry is this package: every module
here with a `METHOD` is registered under its name (`heads.py` and other helpers
have none), so adding a method edits no list. A method defined elsewhere (your
own package, a notebook) joins with `register(METHOD)`. The loop finds a method
with `get(name)` and never branches on its name. What the loop does with it, per
step:

  1. online = head.apply(backbone features of view1 and view2)  -> two dicts
  2. target = the same forward with `method_state["target"]` variables, under
     stop_gradient, only when `Method.needs_target` (BYOL, MoCo v2)
  3. loss, metrics, state_updates = method.loss(online, target, method_state,
                                               cfg=config.ssl, axis_name=AXIS)
  4. optimizer step on params (backbone, head, online probe)
  5. method_state = method.update_state(method_state | state_updates,
                                        online_variables, step, total_steps, cfg)
     (EMA target); `step` is the 0-based index of the step just taken.

A method's defaults live in its module and nowhere else; `configs/common.py`
reads them through its `Method`:
  - `default_config() -> ml_collections.ConfigDict`: every hyper-parameter its
    head and loss read (the config's `ssl` section), each with a comment;
  - `default_optim() -> dict`: its optimiser as the paper / solo-learn train it,
    the keys `name`, `lr` (for a batch of `optim.lr_base_batch`, 256),
    `weight_decay`, `momentum` of the config's `optim` section (`lusjax.optim`;
    the other optim keys are shared, in `configs/common.py`).
Shared heads and helpers (EMA, queues, global statistics): `lusjax.ssl.heads`.
README.md, "Adding a method", walks through a new one (module, config, test).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

from lusjax.errors import UserError

# The order `names()` lists the methods in (error messages, test ids): these first,
# any other method after them, alphabetically. A new method needs no entry here.
_ORDER = ("simclr", "mocov2", "byol", "simsiam", "barlow", "vicreg", "swav")


@dataclasses.dataclass(frozen=True)
class Method:
    """What an SSL method adds to the shared loop.

    Attributes:
      name: registry name (for a module of this package, the module's name).
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
      default_config: `() -> ml_collections.ConfigDict`, the method's `ssl`
        section defaults (its module's `default_config`).
      default_optim: `() -> dict`, the method's `optim` name, lr, weight_decay
        and momentum (its module's `default_optim`).
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
    default_config: Callable[[], Any]
    default_optim: Callable[[], dict]
    init_state: Callable[[Any, Any], Any] = lambda variables, cfg: {}
    update_state: Callable[..., Any] = lambda state, variables, step, total, cfg: state
    needs_target: bool = False
    freeze: Callable[[Any, Any, Any], Any] = lambda tree, step, cfg: tree
    global_outputs: tuple[str, ...] = ()
    paper: str = ""


_REGISTRY: dict[str, Method] = {}
_DISCOVERED = False


def _discover() -> None:
    """Registers every module of this package that defines `METHOD` (once)."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    for info in pkgutil.iter_modules(__path__):
        method = getattr(importlib.import_module(f"{__name__}.{info.name}"), "METHOD", None)
        if method is None:
            continue  # a helper module (heads.py)
        if method.name != info.name:
            raise ValueError(f"lusjax/ssl/{info.name}.py: METHOD.name is {method.name!r}")
        _REGISTRY.setdefault(method.name, method)
    _DISCOVERED = True


def register(method: Method) -> Method:
    """Adds a method defined outside this package (e.g. in your own module, imported
    by your config file) to the registry; returns it. Modules of `lusjax/ssl/` are
    registered without this. A name already taken by another method is an error."""
    _discover()
    if _REGISTRY.get(method.name, method) is not method:
        raise ValueError(f"an SSL method named {method.name!r} is already registered")
    _REGISTRY[method.name] = method
    return method


def names() -> tuple[str, ...]:
    """The registered methods' names: the built-ins in `_ORDER`, then the others
    alphabetically."""
    _discover()
    first = [n for n in _ORDER if n in _REGISTRY]
    return (*first, *sorted(set(_REGISTRY) - set(first)))


def __getattr__(attr: str):
    if attr == "NAMES":  # `names()` as a constant, for existing users
        return names()
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def get(name: str) -> Method:
    """Returns the method registered as `name` (module `lusjax.ssl.<name>`, or one
    given to `register`)."""
    _discover()
    if name not in _REGISTRY:
        raise UserError(f"unknown SSL method {name!r}; choose one of {', '.join(names())}")
    return _REGISTRY[name]
