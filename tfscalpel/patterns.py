"""Sparsity patterns: which weights may be removed together, and how survivors are chosen.

Every pattern works on a *2-D kernel view* ``(fan_in, units)``: a Dense kernel as is, a Conv2D
kernel ``(kh, kw, cin, cout)`` reshaped row-major to ``(kh*kw*cin, cout)``, which is the order in
which an im2col kernel walks a filter. The input dimension is cut into *blocks* of
``group_size`` consecutive weights of one output unit (a Keras block of shape ``(g, 1)``; the
last block may be ragged). A pattern

1. reduces each block to one score with an importance criterion (:mod:`tfscalpel.importance`),
2. chooses which blocks survive (``keep_blocks``), either by a target sparsity or a threshold,
3. expands the block decision back to a per-weight mask (``expand``).

Adding a pattern means subclassing :class:`SparsityPattern`; the layers never change.

Mask computation runs in NumPy on purpose: it happens between training steps (every
``frequency`` steps), where a few vectorised NumPy calls cost far less than dozens of eager
backend ops, and NumPy is the same on every Keras backend. Selection uses ``argpartition``
(linear time), not a sort or ``top_k`` over the whole tensor.
"""
import math

import keras
import numpy as np

from tfscalpel.checks import is_integer
from tfscalpel.config_objects import ConfigObject, registrar

_REGISTRY = {}
_register = registrar(_REGISTRY, "pattern_name")


def _lowest(flat, n):
    """Indices of the ``n`` lowest of ``flat`` (ties broken deterministically).

    Blocks already pruned score exactly 0 (scores are taken on the masked kernel), so late in a
    schedule most scores are tied at 0, the worst case of ``np.argpartition`` (about 10x
    slower there than on distinct values). With non-negative scores the zeros are therefore
    taken first, in index order, and only the positive scores are partitioned."""
    if flat.size == 0 or not flat.min() >= 0:  # negative scores or NaN: the general path
        return np.argpartition(flat, n - 1)[:n]
    zeros = np.flatnonzero(flat == 0)
    if zeros.size >= n:
        return zeros[:n]
    positive = np.flatnonzero(flat > 0)
    rest = n - zeros.size
    return np.concatenate([zeros, positive[np.argpartition(flat[positive], rest - 1)[:rest]]])


class SparsityPattern(ConfigObject):
    """Base class. Subclasses set ``group_size`` and may override ``keep_blocks``."""

    pattern_name = "base"
    group_size = 1
    #: Sparsity imposed by the pattern itself (N:M), or None when the schedule decides.
    fixed_sparsity = None

    # -- block view -------------------------------------------------------------------------
    def num_blocks(self, fan_in):
        """Number of blocks along an input dimension of ``fan_in`` weights."""
        return math.ceil(fan_in / self.group_size)

    def block_view(self, kernel2d):
        """Return ``(blocks, counts)``: ``blocks`` has shape ``(n_blocks, g, units)`` with the
        ragged tail zero-padded; ``counts`` ``(n_blocks, 1)`` holds each block's real length."""
        kernel2d = np.asarray(kernel2d)
        fan_in, units = kernel2d.shape
        g = self.group_size
        n_blocks = self.num_blocks(fan_in)
        pad = n_blocks * g - fan_in
        if pad:
            kernel2d = np.pad(kernel2d, [(0, pad), (0, 0)])
        blocks = kernel2d.reshape(n_blocks, g, units)
        counts = np.full((n_blocks, 1), g, dtype=kernel2d.dtype)
        counts[-1] = g - pad
        return blocks, counts

    def scores(self, kernel2d, importance):
        """One importance score per block: shape ``(n_blocks, units)``."""
        blocks, counts = self.block_view(kernel2d)
        return importance(blocks, counts)

    # -- selection --------------------------------------------------------------------------
    def keep_blocks(self, scores, sparsity=None, threshold=None):
        """Boolean ``(n_blocks, units)``: True for blocks that survive.

        With ``sparsity``, exactly ``round(sparsity * n)`` lowest-scoring blocks are removed
        (deterministic for equal inputs). With ``threshold``, blocks whose score is at or below
        it are removed.
        """
        scores = np.asarray(scores)
        if threshold is not None:
            return scores > threshold
        n_prune = int(round(float(sparsity) * scores.size))
        keep = np.ones(scores.size, dtype=bool)
        if n_prune > 0:
            keep[_lowest(scores.ravel(), n_prune)] = False
        return keep.reshape(scores.shape)

    def expand(self, keep, fan_in):
        """Per-weight float32 mask ``(fan_in, units)`` from the block decision."""
        return np.repeat(np.asarray(keep, dtype=np.float32), self.group_size, axis=0)[:fan_in]

    def describe(self):
        """Short human-readable name, used in reports."""
        return self.pattern_name


@_register("unstructured")
class UnstructuredPattern(SparsityPattern):
    """Classic per-weight pruning (Han et al. 2015): every weight is its own block."""


@_register("group")
class GroupPattern(SparsityPattern):
    """Scalpel's SIMD-aware groups: ``group_size`` consecutive weights along the input
    dimension of one output unit are kept or removed together, so a kernel loads each surviving
    group with one SIMD load and needs one index per group."""

    def __init__(self, group_size=4):
        if not is_integer(group_size) or group_size < 1:
            raise ValueError(f"group_size must be an integer >= 1, got {group_size!r}")
        self.group_size = int(group_size)

    def describe(self):
        return f"group(g={self.group_size})"

    def get_config(self):
        return {"group_size": self.group_size}


@_register("n:m")
class NMPattern(SparsityPattern):
    """N:M structured sparsity: in every window of ``m`` consecutive input weights of one
    output unit, the ``n`` highest-scoring survive (2:4 is what sparse tensor cores run).
    A ragged last window of ``r < m`` weights keeps ``min(n, r)``."""

    def __init__(self, n=2, m=4):
        for arg, v in (("n", n), ("m", m)):
            if not is_integer(v) or v < 1:
                raise ValueError(f"N:M pattern: {arg} must be an integer >= 1, got {v!r}")
        if n > m:
            raise ValueError(f"N:M pattern: n must be <= m, got n={n}, m={m}")
        self.n, self.m = int(n), int(m)
        self.fixed_sparsity = 1.0 - n / m

    def keep_blocks(self, scores, sparsity=None, threshold=None):
        # The pattern itself fixes the sparsity; the schedule only says *when* it applies
        # (a sparsity of 0, e.g. before begin_step, keeps everything).
        if threshold is None and not sparsity:
            return np.ones(np.shape(scores), dtype=bool)
        scores = np.asarray(scores)
        fan_in, units = scores.shape
        n_win = math.ceil(fan_in / self.m)
        pad = n_win * self.m - fan_in
        # Padding scores with -inf puts them last, so a ragged window keeps min(n, r) real ones.
        padded = np.pad(scores, [(0, pad), (0, 0)], constant_values=-np.inf) if pad else scores
        windows = padded.reshape(n_win, self.m, units)
        rank = np.argsort(np.argsort(windows, axis=1, kind="stable"), axis=1, kind="stable")
        keep = rank >= self.m - self.n  # rank 0 = lowest in its window
        return keep.reshape(n_win * self.m, units)[:fan_in]

    def describe(self):
        return f"{self.n}:{self.m}"

    def get_config(self):
        return {"n": self.n, "m": self.m}


def get_pattern(spec):
    """Resolve a pattern from an object, a name (``"unstructured"``, ``"group"``, ``"2:4"``,
    ``"n:m"``) or a Keras config dict."""
    if isinstance(spec, SparsityPattern):
        return spec
    if isinstance(spec, dict):
        return keras.saving.deserialize_keras_object(spec)
    if isinstance(spec, str):
        name = spec.strip().lower()
        if name in _REGISTRY:
            return _REGISTRY[name]()
        if ":" in name:
            n, _, m = name.partition(":")
            if n.isdigit() and m.isdigit():
                return NMPattern(int(n), int(m))
    raise ValueError(
        f"unknown sparsity pattern {spec!r}; allowed: a SparsityPattern object, "
        f"{sorted(_REGISTRY)} or 'N:M' such as '2:4'"
    )


_TFMOT_POOLING = {"AVG": "mean_abs", "MAX": "max_abs"}


def tfmot_block_pattern(block_size=(1, 1), block_pooling_type="AVG", sparsity_m_by_n=None):
    """tfmot's ``block_size`` / ``block_pooling_type`` / ``sparsity_m_by_n`` as a tfscalpel
    ``(pattern, importance)``: tfmot's block is (kernel rows, kernel columns) = (inputs,
    outputs), so ``(g, 1)`` is a SIMD group of ``g`` inputs and ``(1, 1)`` single weights;
    ``"AVG"`` / ``"MAX"`` score a block by its mean / largest absolute weight; ``(m, n)`` is m
    zeros in every n weights, i.e. ``NMPattern(n - m, n)``. Raises ValueError otherwise."""
    if block_pooling_type not in _TFMOT_POOLING:
        raise ValueError(f"block_pooling_type must be one of "
                         f"{sorted(_TFMOT_POOLING)}, got {block_pooling_type!r}")
    if sparsity_m_by_n is not None:
        if tuple(block_size) != (1, 1):
            raise ValueError("sparsity_m_by_n and block_size cannot be "
                             f"combined (got block_size={block_size!r})")
        try:
            zeros, window = (int(v) for v in sparsity_m_by_n)
        except (TypeError, ValueError):
            raise ValueError("sparsity_m_by_n must be a pair (m, n): m zeros "
                             f"in every n weights, got {sparsity_m_by_n!r}") from None
        if not 0 < zeros < window:
            raise ValueError("sparsity_m_by_n=(m, n) needs 0 < m < n, got "
                             f"{sparsity_m_by_n!r}")
        return NMPattern(window - zeros, window), "magnitude"
    try:
        rows, cols = (int(v) for v in block_size)
    except (TypeError, ValueError):
        raise ValueError("block_size must be a pair (rows, cols), got "
                         f"{block_size!r}") from None
    if cols != 1 or rows < 1:
        raise ValueError(
            f"block_size={tuple(block_size)!r} is not supported; blocks run "
            "along the input dimension of one output unit: use (g, 1) for groups of g weights "
            "(tfscalpel's SIMD groups) or (1, 1) for single weights")
    if rows == 1:
        return "unstructured", "magnitude"
    return GroupPattern(rows), _TFMOT_POOLING[block_pooling_type]
