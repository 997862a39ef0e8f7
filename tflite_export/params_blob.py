"""The parameter blob of tfscalpel's custom ops: every constant array of a node in one uint8 tensor.

LiteRT wraps each node input in a fresh tensor buffer on every run (~0.3 us each), so a node's
constant arrays travel as sections of one blob (FORMAT.md "Parameter blob"), for every op
(TFS_GROUP_SPARSE_FC, TFS_NM_SPARSE_FC; each op has its own section list in ``OP_SECTIONS``):

    header   int32 magic "TFSB", int32 number of sections, int32 0, int32 0
    entries  per section: int32 element type (TfLite numbering), int32 count, int32 offset, int32 0
    sections each at a 16-byte aligned offset from the blob's start

The blob is stored as a ``[out, row_bytes]`` uint8 matrix (zero-padded at the end) because shape
inference sees only shapes: its first dimension tells the runtime the layer's output width.
"""
from __future__ import annotations

import numpy as np

MAGIC = 0x42534654  # "TFSB" little-endian
ALIGN = 16  # element alignment and SIMD-friendly; the blob itself is 64-byte aligned in the file
HEADER_BYTES = 16
ENTRY_BYTES = 16
#: Section order per op = the arrays' indices 1.. in FORMAT.md (float32 nodes stop after bias).
_REQUANT = ("out_multiplier", "out_shift", "out_scale")
OP_SECTIONS = {
    "TFS_GROUP_SPARSE_FC": ("values", "col_idx", "row_ptr", "meta", "bias", *_REQUANT),
    "TFS_NM_SPARSE_FC": ("values", "indices", "meta", "bias", *_REQUANT),
    # The FC op's arrays (the filters as group-CSR; float32 nodes keep the requantization
    # sections, empty, so the geometry's index is fixed), then the convolution's geometry.
    "TFS_GROUP_SPARSE_CONV2D": ("values", "col_idx", "row_ptr", "meta", "bias", *_REQUANT,
                                "geometry"),
}
SECTIONS = OP_SECTIONS["TFS_GROUP_SPARSE_FC"]  # the default
ELEMENT_TYPES = {np.dtype(np.float32): 1, np.dtype(np.int32): 2, np.dtype(np.uint8): 3,
                 np.dtype(np.int8): 9, np.dtype(np.uint16): 17}
_DTYPES = {code: dtype for dtype, code in ELEMENT_TYPES.items()}


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def pack_params(arrays: dict, out_features: int, sections: tuple = SECTIONS) -> np.ndarray:
    """Pack ``arrays`` (names from ``sections``, an ``OP_SECTIONS`` entry; float32 nodes stop
    after ``bias``) into the ``[out_features, row_bytes]`` uint8 blob."""
    names = [name for name in sections if name in arrays]
    if names != list(sections[:len(names)]):
        raise ValueError(f"params blob: sections must be a prefix of {sections}, got {names}")
    parts = [np.ascontiguousarray(arrays[name]).ravel() for name in names]
    directory = np.zeros((len(parts), 4), dtype="<i4")
    offset = _align(HEADER_BYTES + ENTRY_BYTES * len(parts))
    for i, (name, part) in enumerate(zip(names, parts)):
        if part.dtype not in ELEMENT_TYPES:
            raise ValueError(f"params blob: section {name} has unsupported dtype {part.dtype}")
        directory[i] = [ELEMENT_TYPES[part.dtype], part.size, offset, 0]
        offset = _align(offset + part.nbytes)
    row_bytes = -(-offset // out_features)
    blob = np.zeros(out_features * row_bytes, dtype=np.uint8)
    blob[:HEADER_BYTES] = np.array([MAGIC, len(parts), 0, 0], dtype="<u4").view(np.uint8)
    blob[HEADER_BYTES:HEADER_BYTES + directory.nbytes] = directory.view(np.uint8).ravel()
    for (_, _, start, _), part in zip(directory, parts):
        blob[start:start + part.nbytes] = part.view(np.uint8)
    return blob.reshape(out_features, row_bytes)


def unpack_params(blob: np.ndarray, sections: tuple = SECTIONS) -> dict:
    """The arrays of a well-formed blob, by name (for tests and reports; the C validator is what
    guards the runtime against malformed ones)."""
    raw = np.ascontiguousarray(blob).view(np.uint8).ravel()
    magic, n, _, _ = raw[:HEADER_BYTES].view("<u4")
    if magic != MAGIC:
        raise ValueError(f"params blob: bad magic 0x{int(magic):08x}")
    directory = raw[HEADER_BYTES:HEADER_BYTES + ENTRY_BYTES * int(n)].view("<i4").reshape(-1, 4)
    arrays = {}
    for name, (code, count, offset, _) in zip(sections, directory):
        dtype = _DTYPES[int(code)]
        arrays[name] = raw[offset:offset + count * dtype.itemsize].view(dtype).copy()
    return arrays


# ---- Fused chains (FORMAT.md "Fused chains"): one node's blob holding several layers' blobs ----
CHAIN_MAGIC = 0x43534654  # "TFSC" little-endian
CHAIN_MAX_LAYERS = 16  # the LiteRT adapter's limit (kernels/tfs_litert_common.h)
CHAIN_ALIGN = 64  # each layer blob starts 64-byte aligned, as a node's own blob does in the file


def is_chain(blob: np.ndarray) -> bool:
    """Whether ``blob`` is a fused chain rather than one layer's blob."""
    raw = np.ascontiguousarray(blob).view(np.uint8).ravel()
    return raw.size >= HEADER_BYTES and int(raw[:4].view("<u4")[0]) == CHAIN_MAGIC


def pack_chain(blobs: list, out_features: int) -> np.ndarray:
    """One node's blob for consecutive layers of one op, run in order: ``blobs`` are the layers'
    own blobs (``pack_params``, any shape); the result is ``[out_features, row_bytes]``, where
    ``out_features`` is the last layer's out."""
    if not 2 <= len(blobs) <= CHAIN_MAX_LAYERS:
        raise ValueError(f"fused chain: {len(blobs)} layers; allowed 2..{CHAIN_MAX_LAYERS}")
    raws = [np.ascontiguousarray(b).view(np.uint8).ravel() for b in blobs]
    offset = -(-(HEADER_BYTES + ENTRY_BYTES * len(raws)) // CHAIN_ALIGN) * CHAIN_ALIGN
    directory = np.zeros((len(raws), 4), dtype="<i4")
    for i, raw in enumerate(raws):
        directory[i] = [offset, raw.size, 0, 0]
        offset = -(-(offset + raw.size) // CHAIN_ALIGN) * CHAIN_ALIGN
    row_bytes = -(-offset // out_features)
    blob = np.zeros(out_features * row_bytes, dtype=np.uint8)
    blob[:HEADER_BYTES] = np.array([CHAIN_MAGIC, len(raws), 0, 0], dtype="<u4").view(np.uint8)
    blob[HEADER_BYTES:HEADER_BYTES + directory.nbytes] = directory.view(np.uint8).ravel()
    for (start, size, _, _), raw in zip(directory, raws):
        blob[start:start + size] = raw
    return blob.reshape(out_features, row_bytes)


def split_chain(blob: np.ndarray) -> list:
    """The layers' blobs (1-D uint8) of a well-formed fused chain, or ``[blob]`` for one layer's
    blob (for the exporter and tests; the C adapter guards the runtime against malformed ones)."""
    raw = np.ascontiguousarray(blob).view(np.uint8).ravel()
    if not is_chain(raw):
        return [raw]
    n = int(raw[4:8].view("<u4")[0])
    if not 2 <= n <= CHAIN_MAX_LAYERS or raw.size < HEADER_BYTES + ENTRY_BYTES * n:
        raise ValueError(f"fused chain: bad layer count {n}")
    directory = raw[HEADER_BYTES:HEADER_BYTES + ENTRY_BYTES * n].view("<i4").reshape(-1, 4)
    return [raw[int(off):int(off) + int(size)].copy() for off, size, _, _ in directory]
