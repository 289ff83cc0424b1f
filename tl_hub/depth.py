"""Model inspection: where the classification head is, the depth of every parameter (0 = stem, then the
blocks in execution order, then the neck, the maximum depth = the head), and the one dummy forward
pass both read (neck = the final norm/pooler/conv).

Depths, architecture-agnostic (no per-model tables):
1. A parameter's *unit* is its module path cut after the 2nd "block boundary", where a boundary is a
   numbered child of a `ModuleList`/`Sequential` that itself has submodules (`stages.2.layers.1`,
   `layers.7`, `blocks.3`). Parameters with no boundary take the base-model prefix + first component
   (`vit.embeddings`, `timm_model.conv_stem`). Models with fewer than 2 such blocks (VGG's flat
   `features` Sequential) also count numbered leaf layers that hold parameters as boundaries.
2. Units are ordered by *execution*: forward-pre-hooks on every module during one dummy forward at the
   model's native input size (registration order is wrong for some models, e.g. PoolFormer). A unit is
   "seen" when a module inside it that contains no other unit starts running. Units that never run
   (e.g. a `cls_token` held directly by the model) take the place of the next unit in parameter order.
3. The head is the unit holding the head's parameters (`head_parameter_names`: the names `load_backbone`
   recorded, else the module whose output is the logits).
4. Units before the first block -> depth 0 (stem); each block -> its own depth in execution order;
   non-block units between blocks join the next block; everything after the last block -> one "neck"
   depth; the head -> the maximum depth.

Example:
    >>> from tl_hub import load_backbone, depth_map
    >>> model = load_backbone("bundled:efficientnet_lite0", ["cat", "dog"])  # doctest: +SKIP
    >>> depths = depth_map(model)  # doctest: +SKIP
    >>> depths["timm_model.conv_stem.weight"], depths["timm_model.classifier.weight"]  # doctest: +SKIP
    (0, 18)
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

from tl_hub.errors import CheckpointError

STEM, BLOCK, NECK, HEAD = "stem", "block", "neck", "head"


@dataclass
class DepthInfo:
    """The depth map plus what each depth holds.

    Attributes:
        depth_of: parameter name -> depth.
        kinds: kind of each depth ("stem", "block", "neck", "head"), index = depth.
        units: unit names (module paths) at each depth, in execution order.
        unit_of: parameter name -> unit name.
    """

    depth_of: dict[str, int]
    kinds: list[str]
    units: list[list[str]]
    unit_of: dict[str, str] = field(default_factory=dict)

    @property
    def max_depth(self) -> int:
        return len(self.kinds) - 1

    def depth_of_module(self, path: str) -> int | None:
        """Depth of the unit that contains module `path` (None when the path spans several units)."""
        unit_depth = {u: d for d, us in enumerate(self.units) for u in us}
        probe = path
        while True:
            if probe in unit_depth:
                return unit_depth[probe]
            if not probe:
                return None
            probe = probe.rpartition(".")[0]


_CACHE: weakref.WeakKeyDictionary[Any, tuple[tuple[Any, ...], DepthInfo]] = weakref.WeakKeyDictionary()


def depth_map(model: Any) -> dict[str, int]:
    """Map every named parameter of `model` to its depth (0 = stem ... max = head).

    Example:
        >>> depth_map(model)["classifier.weight"] == max(depth_map(model).values())  # doctest: +SKIP
        True
    """
    return dict(depth_info(model).depth_of)


def unwrap_model(model: Any) -> Any:
    """The model inside DistributedDataParallel / DataParallel / torch.compile wrappers (else `model`).

    Example:
        >>> import torch
        >>> inner = torch.nn.Linear(2, 2)
        >>> unwrap_model(torch.nn.DataParallel(inner)) is inner
        True
    """
    import torch.nn as nn

    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def depth_info(model: Any) -> DepthInfo:
    """`DepthInfo` of `model`, computed once per model instance (recomputed if its parameters change).

    Example:
        >>> info = depth_info(model)  # doctest: +SKIP
        >>> info.kinds[0], info.kinds[-1]  # doctest: +SKIP
        ('stem', 'head')
    """
    model = unwrap_model(model)
    head = head_parameter_names(model)
    signature = (tuple(n for n, _ in model.named_parameters()), tuple(head))
    cached = _CACHE.get(model)
    if cached is not None and cached[0] == signature:
        return cached[1]
    info = _compute(model, head)
    _CACHE[model] = (signature, info)
    return info


# ---------------------------------------------------------------------------------------------------
# Units
# ---------------------------------------------------------------------------------------------------


def _unit_of(model: Any, name: str, base_prefix: str, leaf_boundaries: bool) -> tuple[str, int]:
    """(unit, number of boundaries crossed) of parameter `name`."""
    import torch.nn as nn

    parts = name.split(".")[:-1]
    module = model
    boundaries = 0
    cut = 0
    for i, comp in enumerate(parts):
        child = module._modules.get(comp)
        if child is None:
            break
        if comp.isdigit() and isinstance(module, (nn.ModuleList, nn.Sequential)):
            has_sub = len(child._modules) > 0
            has_params = any(True for _ in child.parameters(recurse=False))
            if has_sub or (leaf_boundaries and has_params):
                if not has_sub and _is_norm(child):
                    # a flat conv, bn, relu, conv, bn ... list: the norm belongs to the layer before it
                    owner = _previous_weighted_sibling(module, comp)
                    if owner is not None:
                        return ".".join(parts[:i] + [owner]), boundaries + 1
                boundaries += 1
                cut = i + 1
                if boundaries == 2:
                    break
        module = child
    if boundaries:
        return ".".join(parts[:cut]), boundaries
    full = name.split(".")
    if len(full) == 1:
        return name, 0
    if base_prefix and full[0] == base_prefix:
        return ".".join(full[:2]), 0
    return full[0], 0


def _is_norm(module: Any) -> bool:
    import torch.nn as nn

    return isinstance(module, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm))


def _previous_weighted_sibling(parent: Any, key: str) -> str | None:
    """Key of the nearest earlier sibling of `parent[key]` that holds parameters and is not a norm."""
    keys = list(parent._modules)
    for k in reversed(keys[: keys.index(key)]):
        sibling = parent._modules[k]
        if sibling is not None and not _is_norm(sibling) and any(True for _ in sibling.parameters()):
            return k
    return None


def _units(model: Any) -> tuple[dict[str, str], set[str]]:
    """parameter -> unit, and the set of block units (>= 1 boundary)."""
    names = [n for n, _ in model.named_parameters()]
    base_prefix = getattr(model, "base_model_prefix", "") or ""
    for leaf_boundaries in (False, True):
        unit_of: dict[str, str] = {}
        blocks: set[str] = set()
        for n in names:
            unit, b = _unit_of(model, n, base_prefix, leaf_boundaries)
            unit_of[n] = unit
            if b:
                blocks.add(unit)
        if len(blocks) >= 2:
            break
    return unit_of, blocks


# ---------------------------------------------------------------------------------------------------
# Execution order
# ---------------------------------------------------------------------------------------------------


def native_input_size(model: Any) -> tuple[int, int, int]:
    """(channels, height, width) the model expects: timm pretrained_cfg, else config.image_size, else 224.

    Example:
        >>> native_input_size(model)  # doctest: +SKIP
        (3, 224, 224)
    """
    config = getattr(model, "config", None)
    for holder in (getattr(config, "pretrained_cfg", None), getattr(getattr(model, "timm_model", None), "pretrained_cfg", None)):
        if isinstance(holder, dict) and holder.get("input_size"):
            c, h, w = holder["input_size"]
            return int(c), int(h), int(w)
    channels = int(getattr(config, "num_channels", 3) or 3)
    size = getattr(config, "image_size", None) or 224
    if isinstance(size, (list, tuple)):
        h, w = (int(size[0]), int(size[-1]))
    elif isinstance(size, dict):
        h, w = int(size.get("height", 224)), int(size.get("width", 224))
    else:
        h = w = int(size)
    return channels, h, w


def example_input(model: Any, batch_size: int = 1) -> Any:
    """A random `pixel_values` batch at the model's native size, dtype and device.

    Example:
        >>> example_input(model).shape  # doctest: +SKIP
        torch.Size([1, 3, 224, 224])
    """
    import torch

    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((batch_size, *native_input_size(model)), generator=generator)
    return x.to(device=device, dtype=dtype)


@dataclass
class ForwardTrace:
    """What one dummy forward pass showed about a model's structure.

    Attributes:
        call_order: module paths in the order they first started running (forward-pre-hooks).
        logits_producers: paths of modules holding parameters whose output *is* the logits tensor
            (same storage), innermost first.
    """

    call_order: list[str]
    logits_producers: list[str]


_TRACES: weakref.WeakKeyDictionary[Any, tuple[tuple[str, ...], ForwardTrace]] = weakref.WeakKeyDictionary()


def trace_forward(model: Any) -> ForwardTrace:
    """Run one dummy forward (eval mode, no grad, batch 1, native size) and record the module call order
    and which modules produce the logits; cached per model instance while its parameter names stay the same.

    `load_backbone` (head detection) and `depth_map` (execution order) share this one pass.

    Example:
        >>> trace_forward(model).call_order[:2]  # doctest: +SKIP
        ['vit', 'vit.embeddings']
    """
    import torch

    signature = tuple(n for n, _ in model.named_parameters())
    cached = _TRACES.get(model)
    if cached is not None and cached[0] == signature:
        return cached[1]

    order: list[str] = []
    seen: set[str] = set()
    finished: list[tuple[str, Any]] = []
    # logits of a batch of 1 have num_labels elements: keep only outputs of that size alive (holding a
    # reference also stops a freed activation's memory being reused by the logits, a false match)
    num_labels = getattr(getattr(model, "config", None), "num_labels", None)
    handles = []
    for path, module in model.named_modules():
        if not path:
            continue

        def pre_hook(mod: Any, args: Any, path: str = path) -> None:
            if path not in seen:
                seen.add(path)
                order.append(path)

        handles.append(module.register_forward_pre_hook(pre_hook))
        if any(True for _ in module.parameters(recurse=False)):

            def post_hook(mod: Any, args: Any, out: Any, path: str = path) -> None:
                if isinstance(out, torch.Tensor) and (num_labels is None or out.numel() == num_labels):
                    finished.append((path, out))

            handles.append(module.register_forward_hook(post_hook))
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            result = model(example_input(model))
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    logits = getattr(result, "logits", result)
    producers: list[str] = []
    if isinstance(logits, torch.Tensor):
        ptr = logits.untyped_storage().data_ptr()
        for path, out in finished:  # forward hooks fire innermost-first
            if out.numel() == logits.numel() and out.untyped_storage().data_ptr() == ptr and path not in producers:
                producers.append(path)
    trace = ForwardTrace(call_order=order, logits_producers=producers)
    _TRACES[model] = (signature, trace)
    return trace


def _execution_order(model: Any, units: set[str]) -> dict[str, int]:
    """unit -> index of first execution. A unit counts as running when a module inside it that contains
    no other unit starts (so a stage's own downsample layer is placed after the stage's blocks)."""

    def containing_unit(path: str) -> str | None:
        probe = path
        while probe:
            if probe in units:
                return probe
            probe = probe.rpartition(".")[0]
        return None

    order: dict[str, int] = {}
    for path in trace_forward(model).call_order:
        unit = containing_unit(path)
        if unit is None or unit in order or any(u.startswith(path + ".") for u in units if u != unit):
            continue
        order[unit] = len(order)
    return order


# ---------------------------------------------------------------------------------------------------
# The head
# ---------------------------------------------------------------------------------------------------

#: attribute where `load_backbone` records the head's parameter names (`mark_head`)
HEAD_NAMES_ATTR = "tl_hub_head_names"


def head_parameter_names(model: Any) -> list[str]:
    """Names of the classification head's parameters (the layer that produces the logits).

    Uses the names `load_backbone` recorded (`mark_head`) when present, else `find_head`.

    Example:
        >>> head_parameter_names(model)  # doctest: +SKIP
        ['classifier.weight', 'classifier.bias']
    """
    names = getattr(model, HEAD_NAMES_ATTR, None)
    if names:
        return list(names)
    return find_head(model)


def mark_head(model: Any, names: list[str]) -> None:
    """Record the head's parameter names on `model` (what `head_parameter_names` returns from then on)."""
    setattr(model, HEAD_NAMES_ATTR, list(names))


def find_head(model: Any) -> list[str]:
    """Detect the head: for timm models the classifier that `timm_model.get_classifier()` returns;
    otherwise the innermost module with parameters whose output *is* the logits tensor in one dummy
    forward pass (`trace_forward`). Raises CheckpointError when there is none.

    Example:
        >>> find_head(model)  # doctest: +SKIP
        ['classifier.weight', 'classifier.bias']
    """
    timm_model = getattr(model, "timm_model", None)
    if timm_model is not None and hasattr(timm_model, "get_classifier"):
        classifier = timm_model.get_classifier()
        ids = {id(p) for p in classifier.parameters()}
        names = [n for n, p in model.named_parameters() if id(p) in ids]
        if names:
            return names
    producers = trace_forward(model).logits_producers
    if not producers:
        raise CheckpointError(
            f"model: cannot find the classification head of {type(model).__name__} (no layer with parameters "
            f"produces the logits); set model.{HEAD_NAMES_ATTR} to the head's parameter names"
        )
    name = producers[0]
    module = model.get_submodule(name)
    return [f"{name}.{n}" for n, _ in module.named_parameters(recurse=False)]


# ---------------------------------------------------------------------------------------------------
# Depths
# ---------------------------------------------------------------------------------------------------


def _compute(model: Any, head_names: list[str]) -> DepthInfo:
    names = [n for n, _ in model.named_parameters()]
    unit_of, blocks = _units(model)
    head_set = set(head_names)
    head_units = {unit_of[n] for n in names if n in head_set}

    # units in parameter-registration order
    reg_units: list[str] = []
    for n in names:
        if unit_of[n] not in reg_units:
            reg_units.append(unit_of[n])
    executed = _execution_order(model, set(reg_units))

    # units that never ran take the place of the next executed unit in registration order
    keys: dict[str, tuple[float, int]] = {}
    for i, unit in enumerate(reg_units):
        if unit in executed:
            keys[unit] = (executed[unit], 0)
            continue
        nxt = next((executed[u] for u in reg_units[i + 1:] if u in executed), None)
        if nxt is not None:
            keys[unit] = (nxt - 0.5, i)
        else:
            prev = max((executed[u] for u in reg_units[:i] if u in executed), default=-1)
            keys[unit] = (prev + 0.5, i)
    ordered = sorted((u for u in reg_units if u not in head_units), key=lambda u: keys[u])

    block_positions = [i for i, u in enumerate(ordered) if u in blocks]
    levels: list[tuple[str, list[str]]] = []
    if not block_positions:
        if ordered:
            levels.append((STEM, list(ordered)))
    else:
        first, last = block_positions[0], block_positions[-1]
        if first > 0:
            levels.append((STEM, ordered[:first]))
        pending: list[str] = []
        for u in ordered[first:last + 1]:
            pending.append(u)
            if u in blocks:
                levels.append((BLOCK, pending))
                pending = []
        if ordered[last + 1:]:
            levels.append((NECK, ordered[last + 1:]))
    head_order = sorted(head_units, key=lambda u: keys[u])
    levels.append((HEAD, head_order))

    unit_depth = {u: d for d, (_, us) in enumerate(levels) for u in us}
    depth_of = {n: unit_depth[unit_of[n]] for n in names}
    return DepthInfo(
        depth_of=depth_of,
        kinds=[kind for kind, _ in levels],
        units=[us for _, us in levels],
        unit_of=unit_of,
    )
