"""Group-CSR encoding of a TFLite fully-connected weight `W[out, in]` (FORMAT.md, "Weights layout").

A group is `g` consecutive input columns of one output row, starting at a multiple of `g` (its
group index, `column // g`, is what `col_idx` stores, as uint8 or uint16, format version 2); the
last group of a row may be ragged (`in % g != 0`) and is zero-padded to `g` values. A group is
stored when any of its weights is nonzero. Pure numpy, no TFLite objects: the rewriter and the
tests both use it, the tests as the reference the exported tensors must equal.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from tfscalpel.targets import GROUP_SIZES

#: Group widths the custom kernel implements (FORMAT.md, meta[3]).
ALLOWED_GROUP_SIZES = GROUP_SIZES
#: Limit on the input dimension (FORMAT.md "Validation"): the kernels' packed copy keeps first
#: columns as uint16.
MAX_IN_FEATURES = 1 << 16
#: `col_idx` holds group indices (column // g), uint8 when every row has at most this many groups.
UINT8_MAX_GROUPS = 256


@dataclasses.dataclass(frozen=True)
class GroupCSR:
    """The three group-CSR arrays of one weight matrix, plus its shape and group width."""

    values: np.ndarray  # [n_groups * g], the weight dtype
    col_idx: np.ndarray  # [n_groups] group index (column // g), uint8 or uint16 (index_dtype)
    row_ptr: np.ndarray  # [out + 1] int32
    g: int
    in_features: int
    out_features: int

    @property
    def n_groups(self) -> int:
        return int(self.col_idx.shape[0])

    @property
    def columns(self) -> np.ndarray:
        """First input column of each stored group (int64)."""
        return self.col_idx.astype(np.int64) * self.g


def index_dtype(in_features: int, g: int) -> np.dtype:
    """The narrowest `col_idx` type for a row of `ceil(in / g)` groups (FORMAT.md version 2)."""
    return np.dtype(np.uint8) if -(-in_features // g) <= UINT8_MAX_GROUPS else np.dtype(np.uint16)


def _group_nonzero(weights: np.ndarray, g: int) -> np.ndarray:
    """Boolean `[out, ceil(in / g)]`: which groups hold at least one nonzero weight."""
    out_features, in_features = weights.shape
    n_col_groups = -(-in_features // g)
    nonzero = weights != 0
    pad = n_col_groups * g - in_features
    if pad:
        nonzero = np.pad(nonzero, ((0, 0), (0, pad)))
    return nonzero.reshape(out_features, n_col_groups, g).any(axis=2)


def _check(weights: np.ndarray, g: int) -> None:
    if weights.ndim != 2:
        raise ValueError(f"weights must be 2-D [out, in], got shape {weights.shape}")
    if g not in ALLOWED_GROUP_SIZES:
        raise ValueError(f"group size g={g!r} is not one of {ALLOWED_GROUP_SIZES}")


def count_groups(weights: np.ndarray, g: int) -> int:
    """Number of groups of width `g` that group-CSR would store for `weights[out, in]`."""
    _check(weights, g)
    return int(_group_nonzero(weights, g).sum())


def encode(weights: np.ndarray, g: int) -> GroupCSR:
    """Encode `weights[out, in]` as group-CSR with group width `g` (rows in order, columns ascending)."""
    _check(weights, g)
    out_features, in_features = weights.shape
    if in_features > MAX_IN_FEATURES:
        raise ValueError(
            f"in={in_features} exceeds {MAX_IN_FEATURES} (the format's limit on the input dimension)"
        )
    stored = _group_nonzero(weights, g)
    n_col_groups = stored.shape[1]
    pad = n_col_groups * g - in_features
    padded = np.pad(weights, ((0, 0), (0, pad))) if pad else weights
    blocks = padded.reshape(out_features, n_col_groups, g)
    # Boolean indexing walks rows first, then columns ascending: exactly CSR order.
    rows, cols = np.nonzero(stored)
    values = np.ascontiguousarray(blocks[rows, cols].reshape(-1), dtype=weights.dtype)
    col_idx = cols.astype(index_dtype(in_features, g))
    row_ptr = np.zeros(out_features + 1, dtype=np.int32)
    np.cumsum(stored.sum(axis=1), out=row_ptr[1:])
    return GroupCSR(values, col_idx, row_ptr, g, in_features, out_features)


def decode(csr: GroupCSR) -> np.ndarray:
    """Inverse of :func:`encode`: the dense `[out, in]` matrix (used by tests and checks)."""
    n_col_groups = -(-csr.in_features // csr.g)
    dense = np.zeros((csr.out_features, n_col_groups * csr.g), dtype=csr.values.dtype)
    groups = csr.values.reshape(-1, csr.g)
    for r in range(csr.out_features):
        for k in range(csr.row_ptr[r], csr.row_ptr[r + 1]):
            c = int(csr.col_idx[k]) * csr.g
            dense[r, c : c + csr.g] = groups[k]
    return dense[:, : csr.in_features]
