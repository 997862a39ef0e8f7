"""Importance from data: first-order Taylor and Optimal Brain Damage saliency.

Magnitude says how big a weight is; these criteria say how much the *loss* would change if it
were removed, measured on a calibration set:

- ``Taylor`` (Molchanov et al. 2017): ``|w| * E_batches |dL/dw|``, the first-order estimate
  of the loss change, averaged in absolute value over calibration batches (the full-data
  gradient of a trained model is nearly zero; per-batch gradients are not).
- ``OBD`` (LeCun et al. 1990): ``w^2 * H_ii / 2``, the second-order loss increase at a
  minimum, with the Hessian diagonal ``H_ii`` estimated by the empirical Fisher
  (``E_examples (dL_n/dw)^2``, from per-example gradients) or by Hutchinson's estimator
  (``E_v v * (H v)`` with Rademacher probes ``v`` and Hessian-vector products). The
  derivatives come from the active backend's autodiff, TensorFlow's or JAX's
  (:mod:`tfscalpel.gradients`).

How they plug into the existing machinery: :func:`calibrate` runs the data once and stores,
on every pruned layer, per-weight *statistics* (``E|g|``, ``H_ii``) shaped like the kernel.
The criteria are ordinary :class:`~tfscalpel.Importance` objects; when a layer scores its
blocks it asks its criterion for a version bound to itself (``Importance.for_layer``), which
combines the layer's statistics with the *current* masked weights per weight and sums them
over the pattern's block view. So unstructured, group and N:M patterns, every schedule,
global ranking, ``update_pruning`` and ``UpdatePruningStep`` work unchanged, and a pruned
weight (masked to 0) always scores 0. For node (unit) pruning, :func:`unit_saliency` sums the
same per-weight saliency over each output unit.

Statistics are a calibration result, not model state: they are not saved with the model. A
reloaded model whose schedule still has to recompute masks needs :func:`calibrate` again.
"""
import dataclasses

import keras
import numpy as np
from keras import ops

from tfscalpel.checks import is_integer
from tfscalpel.gradients import for_backend
from tfscalpel.importance import Importance, _register
from tfscalpel.layers import kernel_matrix, pruned_layers

HESSIAN_ESTIMATORS = ("fisher", "hutchinson")


@dataclasses.dataclass
class SaliencyStats:
    """Per-weight calibration statistics of one layer, each shaped like its kernel.

    Attributes:
        grad_abs: ``E_batches |dL/dw|`` (first-order Taylor).
        hessian_diag: the Hessian diagonal estimate, or None if not computed.
        hessian: which estimator produced ``hessian_diag`` (``"fisher"``/``"hutchinson"``).
        batches: number of calibration batches seen.
    """

    grad_abs: np.ndarray
    hessian_diag: np.ndarray = None
    hessian: str = None
    batches: int = 0


def _batches(data, batch_size):
    """Yield ``(x, y)`` batches from an iterable of batches or from an ``(x, y)`` array pair."""
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], np.ndarray):
        x, y = data
        for i in range(0, len(x), batch_size):
            yield x[i:i + batch_size], y[i:i + batch_size]
        return
    for batch in data:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError(
                "calibration data must yield (x, y) batches (a tf.data.Dataset of pairs, a list "
                f"of (x, y) tuples, or one (x, y) pair of NumPy arrays); got {type(batch).__name__}"
            )
        yield batch[0], batch[1]


def _per_example_loss_fn(loss):
    """A function ``(y_true, y_pred) -> (batch,)`` of per-example losses."""
    if loss is None:
        raise ValueError("calibrate() needs a loss (a Keras loss object, its name, or a callable)")
    if isinstance(loss, keras.losses.Loss):
        fn = loss.call  # the unreduced per-example loss of a Keras loss object
    elif isinstance(loss, str):
        fn = keras.losses.get(loss)
    elif callable(loss):
        fn = loss
    else:
        raise ValueError(f"loss must be a Keras loss, its name or a callable, got {loss!r}")

    def per_example(y_true, y_pred):
        values = ops.convert_to_tensor(fn(y_true, y_pred))
        rank = len(values.shape)
        if rank == 0:
            raise ValueError(
                "the loss returned a scalar; Fisher needs per-example losses: pass a Keras loss "
                "object or a function returning one loss per example"
            )
        if rank > 1:
            values = ops.mean(values, axis=list(range(1, rank)))
        return values

    return per_example


def calibrate(model, data, loss=None, *, hessian="fisher", probes=4, max_batches=None,
              batch_size=128, fisher_chunk=32, seed=0):
    """Measure the per-weight statistics that data-driven criteria need; store them on every
    pruned layer of ``model`` (``layer.saliency_stats``) and return ``{layer name: stats}``.

    Call it after :func:`tfscalpel.prune` and before the step at which masks are computed (for
    ``sparsity=``/``ConstantSparsity``, before ``fit``). Weights are not changed.

    Args:
        model: a model with pruned layers (``GroupPrunedDense``/``GroupPrunedConv2D``).
        data: calibration batches: a ``tf.data.Dataset`` or any iterable of ``(x, y)``, or one
            ``(x, y)`` pair of NumPy arrays (cut into ``batch_size`` batches).
        loss: a Keras loss object (e.g. ``SparseCategoricalCrossentropy(from_logits=True)``),
            its name, or ``fn(y_true, y_pred)`` returning per-example losses; default the
            compiled model's loss.
        hessian: ``"fisher"`` (empirical Fisher from per-example gradients), ``"hutchinson"``
            (Hessian-vector products), or None (first-order Taylor statistics only).
        probes: Rademacher probes per batch for Hutchinson.
        max_batches: stop after this many batches (default: all).
        fisher_chunk: examples per Jacobian call for Fisher (bounds memory: chunk x weights).
        seed: seeds the Hutchinson probes (results are deterministic for equal inputs).

    Raises:
        ValueError: no pruned layers, unbuilt layers, an unknown estimator, or empty data.
    """
    if hessian not in HESSIAN_ESTIMATORS + (None,):
        raise ValueError(f"hessian={hessian!r}: allowed values are {HESSIAN_ESTIMATORS} or None")
    for arg, v in (("probes", probes), ("batch_size", batch_size), ("fisher_chunk", fisher_chunk)):
        if not is_integer(v) or v < 1:
            raise ValueError(f"{arg} must be an integer >= 1, got {v!r}")
    layers = pruned_layers(model)
    if not layers:
        raise ValueError("calibrate(): the model has no pruned layers; call tfscalpel.prune() first")
    if not all(layer.built for layer in layers):
        raise ValueError("calibrate(): build the model (call it on a batch) before calibrating")
    if loss is None:
        loss = getattr(model, "loss", None)
    per_example = _per_example_loss_fn(loss)
    kernels = [layer.kernel for layer in layers]
    derivatives = for_backend(model, kernels, per_example)
    rng = np.random.default_rng(seed)

    grad_abs = [np.zeros(k.shape, np.float64) for k in kernels]
    hdiag = [np.zeros(k.shape, np.float64) for k in kernels]
    n_batches = n_examples = 0
    for x, y in _batches(data, batch_size):
        if max_batches is not None and n_batches >= max_batches:
            break
        x, y = ops.convert_to_tensor(x), ops.convert_to_tensor(y)
        if hessian == "hutchinson":
            grads, sums = _hutchinson_batch(derivatives, x, y, kernels, probes, rng)
            for h, vhv in zip(hdiag, sums):
                h += vhv / probes
        else:
            grads = derivatives.gradient(x, y)
        if hessian == "fisher":
            n = int(x.shape[0])
            for start in range(0, n, fisher_chunk):
                sq = derivatives.squared_example_gradients(x[start:start + fisher_chunk],
                                                           y[start:start + fisher_chunk])
                for h, s in zip(hdiag, sq):
                    h += s
            n_examples += n
        for acc, g in zip(grad_abs, grads):
            acc += np.abs(g)
        n_batches += 1
    if n_batches == 0:
        raise ValueError("calibrate(): the calibration data yielded no batches")

    results = {}
    for layer, ga, h in zip(layers, grad_abs, hdiag):
        if hessian == "fisher":
            h = h / n_examples
        elif hessian == "hutchinson":
            h = h / n_batches
        stats = SaliencyStats(
            grad_abs=(ga / n_batches).astype(np.float32),
            hessian_diag=None if hessian is None else h.astype(np.float32),
            hessian=hessian, batches=n_batches,
        )
        layer.saliency_stats = stats
        results[layer.name] = stats
    return results


def _hutchinson_batch(derivatives, x, y, kernels, probes, rng):
    """The batch gradient and, per kernel, ``sum over probes of v * (H v)`` (NumPy), with
    Rademacher ``v``: ``E[v * Hv]`` is the Hessian diagonal."""
    sums = [np.zeros(k.shape, np.float64) for k in kernels]
    grads = None
    for _ in range(probes):
        vs = [rng.choice(np.array([-1.0, 1.0], np.float32), size=k.shape) for k in kernels]
        g, hv = derivatives.gradient_and_hvp(x, y, vs)
        for acc, v, h in zip(sums, vs, hv):
            acc += v * h
        if grads is None:
            grads = g
    return grads, sums


def weight_saliency(layer, importance=None):
    """Per-weight saliency of ``layer``'s masked kernel (kernel-shaped, NumPy) under a
    data-driven criterion (default: the layer's own). Raises ValueError if uncalibrated."""
    importance = layer.importance if importance is None else importance
    if not isinstance(importance, DataImportance):
        raise ValueError(
            f"layer {layer.name!r}: weight_saliency needs a data-driven criterion (taylor, obd), "
            f"got {importance!r}"
        )
    kernel = keras.ops.convert_to_numpy(layer.masked_kernel())
    return importance.per_weight(kernel, importance.stat_arrays(importance.stats_of(layer), layer))


def unit_saliency(layer, importance=None):
    """Saliency of each output unit (neuron or filter) of ``layer``: the per-weight saliency
    summed over its whole fan-in, shape ``(units,)``. The score node pruning ranks by."""
    return kernel_matrix(weight_saliency(layer, importance), layer.fan_in_ndim).sum(axis=0)


class DataImportance(Importance):
    """Base of criteria computed from calibration statistics (see :func:`calibrate`).

    Subclasses define ``per_weight(weights, stats)``; block scores are its sum over each block.
    Unbound (without a layer) a data criterion cannot score, and says so.
    """

    def stat_arrays(self, stats, layer):
        """``{name: kernel-shaped array}``: the statistics ``per_weight`` uses."""
        raise NotImplementedError

    def per_weight(self, weights, stats):
        """Per-weight saliency from ``weights`` and ``stats`` (arrays shaped alike)."""
        raise NotImplementedError

    def stats_of(self, layer):
        """The layer's :class:`SaliencyStats`; ValueError if it was never calibrated."""
        stats = getattr(layer, "saliency_stats", None)
        if stats is None:
            raise ValueError(
                f"layer {layer.name!r} uses the data-driven importance "
                f"{self.importance_name!r}, which needs calibration statistics: call "
                "tfscalpel.calibrate(model, data, loss) before masks are computed"
            )
        if tuple(stats.grad_abs.shape) != tuple(layer.kernel.shape):
            raise ValueError(
                f"layer {layer.name!r}: calibration statistics have shape "
                f"{stats.grad_abs.shape}, the kernel {tuple(layer.kernel.shape)}; recalibrate"
            )
        return stats

    def __call__(self, blocks, counts):
        raise ValueError(
            f"importance {self.importance_name!r} is computed from data and scores a layer's "
            "blocks only through that layer (layer.block_scores() after tfscalpel.calibrate)"
        )

    def for_layer(self, layer):
        """A ``score(blocks, counts)`` bound to ``layer``'s statistics."""
        # The statistics in the pattern's block view, ready to meet the weight blocks.
        stat_blocks = {
            name: layer.pattern.block_view(kernel_matrix(value, layer.fan_in_ndim))[0]
            for name, value in self.stat_arrays(self.stats_of(layer), layer).items()
        }

        def score(blocks, counts):
            totals = self.per_weight(blocks, stat_blocks).sum(axis=1)
            return _live_floor(totals, np.abs(blocks).sum(axis=1))

        return score


def _live_floor(scores, magnitude):
    """Keep a live block (any nonzero weight) strictly above every pruned block (score 0).

    Weights whose inputs are always zero on the calibration data (MNIST's border pixels) have
    zero saliency, as do pruned ones; without this, a tie at zero could resurrect a pruned
    block instead of removing a dead live one. A live block gets at least a tiny positive
    score, ordered by magnitude, below every block with real saliency.
    """
    scores = np.maximum(np.asarray(scores, np.float64), 0.0)
    live = magnitude > 0
    positive = scores[scores > 0]
    eps = (positive.min() if positive.size else 1.0) * 1e-6
    top = magnitude.max() if magnitude.size and magnitude.max() > 0 else 1.0
    floor = eps * (0.5 + 0.5 * magnitude / top)
    return np.where(live & (scores < floor), floor, scores).astype(np.float32)


@_register("taylor")
class Taylor(DataImportance):
    """First-order Taylor saliency ``|w| * E|dL/dw|`` (Molchanov et al. 2017), summed per
    block. Needs :func:`calibrate` (any ``hessian`` setting)."""

    def stat_arrays(self, stats, layer):
        return {"grad_abs": stats.grad_abs}

    def per_weight(self, weights, stats):
        return np.abs(weights) * stats["grad_abs"]


@_register("obd")
class OBD(DataImportance):
    """Optimal Brain Damage saliency ``w^2 * H_ii / 2`` (LeCun et al. 1990), summed per block
    (OBD's diagonal approximation makes the saliencies of a group add up). Needs
    :func:`calibrate` with ``hessian="fisher"`` or ``"hutchinson"``. A negative curvature
    estimate (noise, or a saddle) counts as zero: removing a weight never gains loss here."""

    def stat_arrays(self, stats, layer):
        if stats.hessian_diag is None:
            raise ValueError(
                f"layer {layer.name!r}: importance 'obd' needs a Hessian diagonal; calibrate "
                "with hessian='fisher' or hessian='hutchinson'"
            )
        return {"hessian_diag": stats.hessian_diag}

    def per_weight(self, weights, stats):
        return 0.5 * np.square(weights) * np.maximum(stats["hessian_diag"], 0.0)
