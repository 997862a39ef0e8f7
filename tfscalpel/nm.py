"""2:4 structured sparsity for GPUs: NVIDIA's recipe, and the N:M validator ``check_nm``.

The recipe (NVIDIA ASP: Mishra et al. 2021, "Accelerating Sparse Deep Neural Networks")::

    pruned, report = tfscalpel.prune_2_4(trained_model)   # masks applied now, then fixed
    print(report)                                         # which layers are 2:4, which skipped, why
    compile + fit(pruned, ..., callbacks=[tfscalpel.UpdatePruningStep()])  # the original schedule
    sparse = tfscalpel.strip(pruned)
    tfscalpel.check_nm(sparse)                            # .tflite: tflite_export.check_nm

1. Optionally permute input channels (:func:`permute_channels`) so that each 4-window keeps
   more magnitude. Permuting the input channels of a layer means permuting the output units of
   the layer feeding it (and everything elementwise in between), so the network computes the
   same function before pruning.
2. Prune every eligible layer to 2:4 by magnitude along the input dimension: in each window of
   4 consecutive inputs of one output unit, the 2 largest |w| survive. The mask is computed once
   and never changes afterwards (the layers record step 0, and their schedule ends at step 0).
3. Fine-tune with the mask fixed, with the optimizer and learning-rate schedule of the original
   training (NVIDIA's advice: retrain as long as, and like, the original).

**Skip rule.** A sparse tensor core multiplies ``A[M, K] * B[K, N]`` where ``K`` is the reduction
dimension, and the 2:4 windows run along ``K``. A layer is 2:4-eligible when

- it is a ``Dense``, or a ``Conv2D`` with ``groups == 1`` (depthwise and grouped convolutions
  are not one GEMM);
- ``K % 4 == 0`` where ``K`` is the Dense input dimension, and for Conv2D the *input channels*
  ``cin``. A Conv2D kernel ``(kh, kw, cin, cout)`` is flattened row-major to ``kh*kw*cin``
  (tfscalpel's im2col order, :mod:`tfscalpel.patterns`), so windows of 4 run along ``cin``
  within one ``(kh, kw)`` position exactly when ``cin % 4 == 0``; with any other ``cin`` a
  window would straddle two kernel positions, which sparse tensor cores cannot run. Such layers
  (typically the first convolution, ``cin`` = 1 or 3) stay dense;
- optionally (``k_multiple=16, out_multiple=8``, apex ASP's rule for fp16) stricter multiples
  that avoid padding inside the GPU libraries. The default pads nothing away: TensorRT and
  cuSPARSELt pad ``M`` and ``N`` themselves.

Skipped layers stay dense (not pruned at all) and are listed with their reason in the report.
The rule is :func:`tfscalpel.nm_rule.nm_shape_reason`, shared with the planner and the exporter.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from tfscalpel.nm_rule import keras_nm_reason
from tfscalpel.patterns import NMPattern

__all__ = ["NMLayerPlan", "NMPlan", "plan_2_4", "prune_2_4", "permute_channels",
           "NMLayerCheck", "NMCheckReport", "check_nm", "check_nm_weights"]


# ---------------------------------------------------------------------------------------------
# Eligibility (the skip rule)
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class NMLayerPlan:
    """One Dense / Conv2D layer and whether the recipe prunes it to N:M."""

    name: str
    kind: str  # "Dense" | "Conv2D"
    k: int  # reduction dimension the windows run along (Dense in, Conv2D cin)
    out: int
    eligible: bool
    reason: str  # why it is skipped ("" when eligible)


@dataclasses.dataclass(frozen=True)
class NMPlan:
    """The recipe's per-layer decisions; ``print()`` it for a table."""

    n: int
    m: int
    layers: tuple
    permutation_gain: dict = dataclasses.field(default_factory=dict)  # layer -> (before, after)

    @property
    def pruned(self):
        return [p.name for p in self.layers if p.eligible]

    @property
    def skipped(self):
        return {p.name: p.reason for p in self.layers if not p.eligible}

    def __str__(self):
        head = f"{'layer':<14}{'kind':<8}{'K':>7}{'out':>7}  {self.n}:{self.m}"
        lines = [head, "-" * max(len(head), 60)]
        for p in self.layers:
            what = "pruned" if p.eligible else f"skipped: {p.reason}"
            if p.name in self.permutation_gain:
                before, after = self.permutation_gain[p.name]
                what += f" (channel permutation: kept magnitude {before:.1%} -> {after:.1%})"
            lines.append(f"{p.name:<14}{p.kind:<8}{p.k:>7}{p.out:>7}  {what}")
        return "\n".join(lines)


def _kind(layer):
    """``"Dense"`` or ``"Conv2D"`` for a layer (stock or pruned twin) that converts to one
    FULLY_CONNECTED / CONV_2D GEMM over a ``(..., in, out)`` kernel (its handler says), else
    None."""
    import keras

    from tfscalpel.layer_handlers import EinsumWeighted, get_handler

    handler = get_handler(layer)
    if handler.role != "weighted" or handler.kernel_attr != "kernel" or (
            handler.in_axis, handler.out_axis) != (-2, -1):
        return None
    if isinstance(handler, EinsumWeighted) and not handler.creates_channels(layer):
        return None
    rank = len(layer.kernel.shape) if layer.built else None
    if handler.export_op == "FULLY_CONNECTED" and rank in (2, None):
        return "Dense"
    if handler.export_op == "CONV_2D" and rank in (4, None) and not isinstance(
            layer, keras.layers.Conv1D):
        return "Conv2D"
    return None


def layer_plan(layer, n=2, m=4, k_multiple=None, out_multiple=1):
    """Eligibility of one built Dense / Conv2D layer under the skip rule
    (:func:`tfscalpel.nm_rule.nm_shape_reason`, the rule the planner and the exporter use too)."""
    kind = _kind(layer)
    if kind is None:
        raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) is not Dense or Conv2D")
    shape = tuple(layer.kernel.shape)
    k, out = int(shape[-2]), int(shape[-1])
    reason = keras_nm_reason(layer, m, k_multiple, out_multiple) or ""
    return NMLayerPlan(layer.name, kind, k, out, not reason, reason)


def plan_2_4(model, layers=None, n=2, m=4, k_multiple=None, out_multiple=1):
    """The recipe's decisions for every Dense / Conv2D of ``model`` (``layers``: names to
    consider; default all)."""
    plans = []
    for layer in model.layers:
        if _kind(layer) is None or (layers is not None and layer.name not in layers):
            continue
        plans.append(layer_plan(layer, n, m, k_multiple, out_multiple))
    if layers is not None:
        unknown = sorted(set(layers) - {p.name for p in plans})
        if unknown:
            raise ValueError(f"layers {unknown} are not Dense/Conv2D layers of the model")
    return NMPlan(n, m, tuple(plans))


# ---------------------------------------------------------------------------------------------
# Input-channel permutation
# ---------------------------------------------------------------------------------------------

def kept_magnitude(kernel, n=2, m=4):
    """Fraction of ``sum |w|`` that magnitude N:M pruning keeps, windows along axis -2."""
    w = np.abs(np.asarray(kernel, np.float64))
    k = w.shape[-2]
    w = np.moveaxis(w, -2, 0).reshape(k // m, m, -1)
    top = np.sort(w, axis=1)[:, m - n:, :].sum()
    total = w.sum()
    return float(top / total) if total > 0 else 1.0


def _search_permutation(kernel, n, m, rng, rounds):
    """A channel order (along axis -2) that raises the kept magnitude: greedy pairwise swaps
    between windows (the channel-swap search of NVIDIA's ASP), on |w| summed per channel pair."""
    w = np.abs(np.asarray(kernel, np.float64))
    k = w.shape[-2]
    w = np.moveaxis(w, -2, 0).reshape(k, -1)  # [k channels, everything else]
    perm = np.arange(k)

    def window_score(chans):
        block = w[chans]
        return np.sort(block, axis=0)[m - n:].sum()

    n_win = k // m
    scores = np.array([window_score(perm[i * m:(i + 1) * m]) for i in range(n_win)])
    for _ in range(rounds):
        improved = False
        for a in rng.permutation(n_win):
            b = rng.integers(n_win)
            if a == b:
                continue
            wa, wb = perm[a * m:(a + 1) * m].copy(), perm[b * m:(b + 1) * m].copy()
            best = (0.0, None)
            for i in range(m):
                for j in range(m):
                    na, nb = wa.copy(), wb.copy()
                    na[i], nb[j] = wb[j], wa[i]
                    gain = window_score(na) + window_score(nb) - scores[a] - scores[b]
                    if gain > best[0] + 1e-12:
                        best = (gain, (na, nb))
            if best[1] is not None:
                na, nb = best[1]
                perm[a * m:(a + 1) * m], perm[b * m:(b + 1) * m] = na, nb
                scores[a], scores[b] = window_score(na), window_score(nb)
                improved = True
        if not improved:
            break
    return perm


_ELEMENTWISE = ("Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax", "Dropout",
                "MaxPooling2D", "AveragePooling2D", "GaussianNoise", "GaussianDropout",
                "SpatialDropout2D", "Identity")


def _producer(model, layer):
    """The Dense/Conv2D whose output units are ``layer``'s input channels, through only
    channel-wise layers (activations, dropout, pooling), each used once; or None."""
    node_layer = layer
    while True:
        inbound = node_layer._inbound_nodes
        if len(inbound) != 1 or len(inbound[0].parent_nodes) != 1:
            return None
        prev = inbound[0].parent_nodes[0].operation
        if len(prev._outbound_nodes) != 1:
            return None  # its output feeds other layers too: they would need the permutation
        if _kind(prev) is not None:
            return prev
        if type(prev).__name__ not in _ELEMENTWISE:
            return None
        node_layer = prev


def permute_channels(model, layer_names, n=2, m=4, rounds=8, seed=0):
    """Reorder ``model``'s channels in place so that N:M pruning of ``layer_names`` keeps more
    magnitude; the model's function is unchanged.

    For each named layer, its input channels are permuted together with the output units of
    the Dense/Conv2D that produces them (when only channel-wise layers sit in between).
    Layers without such a producer (e.g. fed by the model input or a Flatten) are left alone.
    Returns ``{layer name: (kept magnitude before, after)}`` for the layers permuted.
    """
    rng = np.random.default_rng(seed)
    by_name = {layer.name: layer for layer in model.layers}
    gains = {}
    for name in layer_names:
        layer = by_name[name]
        prev = _producer(model, layer)
        if prev is None or getattr(prev, "groups", 1) != 1:
            continue
        kernel = np.asarray(layer.kernel)
        before = kept_magnitude(kernel, n, m)
        perm = _search_permutation(kernel, n, m, rng, rounds)
        after = kept_magnitude(np.take(kernel, perm, axis=-2), n, m)
        if after <= before + 1e-9:
            continue
        layer.kernel.assign(np.take(kernel, perm, axis=-2))
        prev.kernel.assign(np.take(np.asarray(prev.kernel), perm, axis=-1))
        if prev.bias is not None:
            prev.bias.assign(np.asarray(prev.bias)[perm])
        gains[name] = (before, after)
    return gains


# ---------------------------------------------------------------------------------------------
# The recipe
# ---------------------------------------------------------------------------------------------

def prune_2_4(model, layers=None, permute=False, n=2, m=4, k_multiple=None, out_multiple=1,
              seed=0):
    """NVIDIA's 2:4 recipe, step 1-2: returns ``(pruned, plan)``.

    ``pruned`` is a copy of ``model`` (``model`` is untouched) whose eligible layers are
    ``GroupPrunedDense`` / ``GroupPrunedConv2D`` with the N:M mask already applied by
    magnitude along the input dimension, and fixed: fine-tune it with
    :class:`~tfscalpel.UpdatePruningStep` and the original training schedule, then
    :func:`~tfscalpel.strip` it. ``plan`` (:class:`NMPlan`) lists every Dense/Conv2D layer as
    pruned or skipped, with the reason (the skip rule is in this module's docstring).

    Args:
        layers: names of layers to consider (default every Dense / Conv2D).
        permute: first reorder channels so each window keeps more magnitude
            (:func:`permute_channels`); the function is unchanged before pruning.
        n, m: the pattern (2:4 is what sparse tensor cores run).
        k_multiple, out_multiple: stricter shape multiples (e.g. 16 and 8 for apex ASP's rule).
    """
    import keras

    from tfscalpel.layers import pruned_layers
    from tfscalpel.mask_update import record_step
    from tfscalpel.prune_model import prune
    from tfscalpel.schedules import ConstantSparsity

    plan = plan_2_4(model, layers, n, m, k_multiple, out_multiple)
    if not plan.pruned:
        raise ValueError("prune_2_4: no layer is N:M-eligible:\n" + str(plan))
    source = model
    gains = {}
    if permute:
        source = keras.models.clone_model(model)
        source.set_weights(model.get_weights())
        gains = permute_channels(source, plan.pruned, n, m, seed=seed)
    # Mask computed once at step 0 and never again (end_step=0): the mask stays fixed.
    schedule = ConstantSparsity(1.0 - n / m, begin_step=0, end_step=0, frequency=1)
    pruned = prune(source, schedule=schedule, pattern=NMPattern(n, m), importance="magnitude",
                   layers=plan.pruned)
    nm_layers = pruned_layers(pruned)
    for layer in nm_layers:
        layer.prune_to(sparsity=1.0 - n / m)
    record_step(nm_layers, 0)
    return pruned, dataclasses.replace(plan, permutation_gain=gains)


# ---------------------------------------------------------------------------------------------
# The validator
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class NMLayerCheck:
    """N:M status of one layer's weights.

    ``status``: ``"n:m"`` (every window holds at most n nonzeros), ``"not n:m"`` (see
    ``bad_windows`` and the first offender), ``"invalid"`` (a custom-op node its format's
    validator rejects; ``reason`` says why), or ``"skipped"`` (``reason``: e.g. the window axis
    is not a multiple of m, so the layer cannot be N:M in the hardware's sense).
    ``first_offender``: ``(output unit, first input index of the window, nonzeros)``; for a
    convolution the input index is ``(kh, kw, cin)``.
    """

    name: str
    kind: str
    shape: tuple  # (out, K) for FC; (out, kh, kw, cin) for conv
    status: str
    windows: int = 0
    bad_windows: int = 0
    first_offender: tuple | None = None
    reason: str = ""
    density: float = 1.0

    @property
    def ok(self):
        return self.status == "n:m"


@dataclasses.dataclass(frozen=True)
class NMCheckReport:
    """Result of :func:`check_nm`; ``ok`` when no checked layer breaks the pattern."""

    source: str
    n: int
    m: int
    layers: tuple

    @property
    def ok(self):
        return bool(self.layers) and all(c.status in ("n:m", "skipped") for c in self.layers) and any(
            c.ok for c in self.layers)

    def __str__(self):
        lines = [f"{self.source}: {self.n}:{self.m} check",
                 f"{'layer':<28}{'kind':<18}{'shape':<20}{'density':>8}  status"]
        for c in self.layers:
            status = c.status
            if c.status == "not n:m":
                unit, where, nnz = c.first_offender
                status += (f": {c.bad_windows}/{c.windows} windows; first: output {unit}, "
                           f"window at input {where} has {nnz} nonzeros")
            elif c.status in ("skipped", "invalid"):
                status += f": {c.reason}"
            lines.append(f"{c.name[:27]:<28}{c.kind:<18}{str(c.shape):<20}{c.density:>8.2%}  {status}")
        verdict = "OK: every eligible layer is" if self.ok else "FAIL: not every layer is"
        lines.append(f"{verdict} {self.n}:{self.m}")
        return "\n".join(lines)


def check_nm_weights(w, n=2, m=4, name="", kind="FC"):
    """Check weights ``w[out, ..., K]`` (TFLite order: windows along the last axis)."""
    w = np.asarray(w)
    shape = tuple(int(d) for d in w.shape)
    density = float(np.count_nonzero(w)) / max(w.size, 1)
    k = shape[-1]
    if k % m:
        return NMLayerCheck(name, kind, shape, "skipped",
                            reason=f"window axis {k} not a multiple of {m}", density=density)
    nnz = np.count_nonzero(w.reshape(-1, k // m, m), axis=2)  # [out * positions, windows]
    bad = nnz > n
    if not bad.any():
        return NMLayerCheck(name, kind, shape, "n:m", nnz.size, 0, None, "", density)
    flat = int(np.flatnonzero(bad.ravel())[0])
    row, win = divmod(flat, k // m)
    pos = np.unravel_index(row, shape[:-1])  # (out, kh, kw) or (out,)
    unit = int(pos[0])
    where = tuple(int(p) for p in pos[1:]) + (win * m,)
    where = where[0] if len(where) == 1 else where
    return NMLayerCheck(name, kind, shape, "not n:m", int(nnz.size), int(bad.sum()),
                        (unit, where, int(nnz.ravel()[flat])), "", density)


def _check_keras(model, n, m):
    from tfscalpel.layers import PrunableMixin

    checks = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        kind = _kind(layer)
        if kind is None or not layer.built:
            continue
        kernel = (layer.masked_kernel() if isinstance(layer, PrunableMixin) else layer.kernel)
        kernel = np.asarray(kernel)
        w = np.moveaxis(kernel, -1, 0)  # (out, K) or (out, kh, kw, cin): TFLite order
        if kind == "Conv2D" and getattr(layer, "groups", 1) != 1:
            checks.append(NMLayerCheck(layer.name, kind, tuple(w.shape), "skipped",
                                       reason=f"grouped convolution (groups={layer.groups})",
                                       density=float(np.count_nonzero(w)) / w.size))
            continue
        checks.append(check_nm_weights(w, n, m, layer.name, kind))
    return checks


def check_n_m(n, m):
    """``(n, m)`` as ints, or ValueError unless ``1 <= n <= m``."""
    if isinstance(n, bool) or isinstance(m, bool) or not (1 <= int(n) <= int(m)):
        raise ValueError(f"need 1 <= n <= m, got n={n!r}, m={m!r}")
    return int(n), int(m)


def check_nm(model_or_path, n=2, m=4):
    """Check that a Keras model's weights follow N:M sparsity along the input dimension.

    ``model_or_path``: a Keras model or a ``.keras`` path (Dense and Conv2D layers, pruned twins
    included; a Conv2D kernel is checked along ``cin`` at each ``(kh, kw)``). Returns
    :class:`NMCheckReport`: per layer N:M or not, and where not the first offending window.
    ``.tflite`` files are the deployment side's: ``tflite_export.check_nm`` checks those (and
    Keras models, through this function); its command line is ``python -m tflite_export.check``.
    """
    n, m = check_n_m(n, m)
    if isinstance(model_or_path, (str, os.PathLike)) and os.fspath(model_or_path).endswith(".keras"):
        import keras

        path = os.fspath(model_or_path)
        return NMCheckReport(path, n, m, tuple(_check_keras(keras.models.load_model(path), n, m)))
    if hasattr(model_or_path, "layers"):
        return NMCheckReport(getattr(model_or_path, "name", "model"), n, m,
                             tuple(_check_keras(model_or_path, n, m)))
    raise TypeError(f"tfscalpel.check_nm takes a Keras model or a .keras path, got "
                    f"{type(model_or_path).__name__} {model_or_path!r:.60}; check .tflite files "
                    "with tflite_export.check_nm (python -m tflite_export.check FILE)")
