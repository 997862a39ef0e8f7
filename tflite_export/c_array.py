"""Firmware export: a `.tflite` as a 16-byte-aligned C array (`model_data.cc/.h`) for TFLite Micro,
with flash bytes per layer and an estimate of the tensor arena TFLite Micro will need.

    from tflite_export import c_array
    paths = c_array.write(model_bytes, "firmware/src")            # model_data.cc, model_data.h
    print(c_array.arena_estimate(model_bytes))

The array is `alignas(16) const unsigned char g_model_data[]`: TFLite Micro reads tensor data in
place, and every buffer inside an exported model is 64-byte aligned relative to the file start,
so 16-byte alignment of the array keeps each tensor's data aligned for 32-bit (and SIMD) loads.

Arena estimate (TFLite Micro's GreedyMemoryPlanner, re-done here): every non-constant tensor is a
block live from the operator that writes it (or the start, for model inputs) to the last one that
reads it (or the end, for outputs), each custom op's workspace is a block live during that op
(`tfs_gsfc_workspace_size`: batch * in * 2 + 32 bytes for int8), blocks are placed greedily by
size, first fit, 16-byte aligned; plus TFLite Micro's persistent allocations: a fixed part
(allocator, planner and interpreter objects), one eval-tensor record per tensor, per operator its
node record and kernel data, and for an int8 FULLY_CONNECTED with per-channel weight scales the
two int32 arrays (multiplier, shift) its Prepare allocates. The constants were measured with
TFLite Micro's MicroInterpreter::arena_used_bytes on a host (64-bit) build of TFLite Micro from
its public source: five int8 models (LeNet-300-100 at 92 % all-custom 3,920 B and all-dense
5,536 B; a 64-32-10 net all-custom 1,248 B, all-dense 1,376 B, mixed 1,296 B), all within 16
bytes of this estimate (tests/test_c_array.py). A 32-bit Cortex-M has smaller pointer-holding
records, so there the estimate errs high; give the firmware some headroom anyway.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

from tflite_export import flatbuffer, formats, fusion
from tflite_export.atomic import write_atomic

ALIGNMENT = 16
# TFLite Micro's persistent arena use besides the planned tensors, fitted to arena_used_bytes of
# a host TFLite Micro build (see the module docstring); an estimate, not a bound. A custom op's
# numbers (workspace, persistent bytes per node) are its format's (`tflite_export.formats`).
PERSISTENT_FIXED = 456
PERSISTENT_PER_TENSOR = 24  # TfLiteEvalTensor (64-bit)
PERSISTENT_PER_OP = 152  # node record + a builtin kernel's OpData (FULLY_CONNECTED measured)

_ELEM_BYTES = {schema.TensorType.FLOAT32: 4, schema.TensorType.INT32: 4, schema.TensorType.INT8: 1,
               schema.TensorType.UINT8: 1, schema.TensorType.INT16: 2, schema.TensorType.UINT16: 2,
               schema.TensorType.INT64: 8, schema.TensorType.BOOL: 1}


@dataclasses.dataclass(frozen=True)
class ArenaEstimate:
    activations: int  # planned non-constant tensors (peak of the greedy plan)
    scratch: int  # part of `activations` that is custom-op workspace
    persistent: int  # TFLite Micro's bookkeeping (estimate)

    @property
    def total(self) -> int:
        return self.activations + self.persistent

    def __str__(self) -> str:
        return (f"arena estimate {self.total:,} bytes (planned tensors {self.activations:,}, of which "
                f"custom-op scratch {self.scratch:,}; persistent bookkeeping ~{self.persistent:,})")


def _align(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


def _tensor_bytes(t: schema.TensorT) -> int:
    shape = [] if t.shape is None else [max(int(d), 1) for d in t.shape]
    return int(np.prod(shape, dtype=np.int64)) * _ELEM_BYTES.get(t.type, 4)


def _is_constant(model: schema.ModelT, t: schema.TensorT) -> bool:
    buf = model.buffers[t.buffer] if 0 < t.buffer < len(model.buffers) else None
    if buf is None:
        return False
    return (buf.data is not None and len(buf.data) > 0) or int(getattr(buf, "size", 0) or 0) > 0


def _tflm_format(model: schema.ModelT, op: schema.OperatorT):
    """The registered custom-op format of ``op`` (None for a builtin); ValueError when the op
    has no TFLite Micro kernel."""
    name = flatbuffer.custom_code(model, op)
    if name is None:
        return None
    fmt = formats.by_op_name(name)
    if fmt is None or fmt.tflm_registration is None:
        have = [f.op_name for f in formats.custom_ops() if f.tflm_registration]
        raise ValueError(f"custom op {name!r} has no TFLite Micro kernel (those with one: {have})")
    return fmt


def _custom_workspace(model: schema.ModelT, sg: schema.SubGraphT, op: schema.OperatorT) -> int:
    fmt = _tflm_format(model, op)
    return 0 if fmt is None else fmt.tflm_node_workspace_bytes(model, sg, op)


def arena_estimate(model_bytes: bytes) -> ArenaEstimate:
    """Estimate TFLite Micro's arena for the first subgraph (see the module docstring)."""
    model = flatbuffer.load(model_bytes)
    sg = model.subgraphs[0]
    n_ops = len(sg.operators or [])
    blocks = []  # (size, first op, last op)
    first, last = {}, {}
    for i in sg.inputs if sg.inputs is not None else []:
        first[int(i)] = 0
    for k, op in enumerate(sg.operators or []):
        for i in op.inputs if op.inputs is not None else []:
            if i >= 0:
                first.setdefault(int(i), k)
                last[int(i)] = k
        for o in op.outputs if op.outputs is not None else []:
            first.setdefault(int(o), k)
            last.setdefault(int(o), k)
    for o in sg.outputs if sg.outputs is not None else []:
        last[int(o)] = max(n_ops - 1, 0)
    for ti, f in first.items():
        t = sg.tensors[ti]
        if _is_constant(model, t):
            continue
        blocks.append((_align(_tensor_bytes(t)), f, last.get(ti, f)))
    scratch = 0
    for k, op in enumerate(sg.operators or []):
        ws = _custom_workspace(model, sg, op)
        if ws:
            blocks.append((_align(ws), k, k))
            scratch += _align(ws)
    placed = []  # (offset, size, first, last)
    for size, f, l in sorted(blocks, key=lambda b: -b[0]):
        offset = 0
        for o, s, pf, pl in sorted(placed):
            if pl < f or pf > l:  # lifetimes do not overlap
                continue
            if offset + size <= o:
                break
            offset = max(offset, o + s)
        placed.append((offset, size, f, l))
    peak = max((o + s for o, s, _, _ in placed), default=0)
    persistent = PERSISTENT_FIXED + PERSISTENT_PER_TENSOR * len(sg.tensors)
    for op in sg.operators or []:
        code = model.operatorCodes[op.opcodeIndex]
        fmt = _tflm_format(model, op)
        persistent += PERSISTENT_PER_OP if fmt is None else fmt.tflm_persistent_bytes
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        if builtin == schema.BuiltinOperator.FULLY_CONNECTED and len(op.inputs) > 1:
            q = sg.tensors[op.inputs[1]].quantization
            channels = 0 if q is None or q.scale is None else len(q.scale)
            if channels > 1:  # per-channel int8: Prepare allocates multiplier + shift arrays
                persistent += 2 * _align(4 * channels)
    return ArenaEstimate(activations=peak, scratch=min(scratch, peak), persistent=persistent)


def _identifier(name: str) -> str:
    ok = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    if not ok or ok[0].isdigit():
        raise ValueError(f"{name!r} is not usable as a C identifier")
    return ok


def render(model_bytes: bytes, variable: str = "g_model_data", header: str = "model_data.h") -> tuple[str, str]:
    """(`.cc` text, `.h` text) for the model as a 16-byte-aligned C array. A model with fused
    custom-op chains (``tflite_export.fusion``, host runtime only) is refused."""
    fused = fusion.fused_nodes(flatbuffer.load(bytes(model_bytes)))
    if fused:
        raise ValueError(f"c_array: nodes {fused} are fused chains (tflite_export.fusion), which "
                         "only the host runtime runs, not TensorFlow Lite Micro; export for the "
                         "microcontroller with its own target (e.g. target='cortex-m4'), which "
                         "never fuses")
    var = _identifier(variable)
    guard = _identifier(os.path.basename(header)).upper() + "_"
    data = np.frombuffer(bytes(model_bytes), dtype=np.uint8)
    rows = [", ".join(f"0x{b:02x}" for b in data[i:i + 16]) for i in range(0, len(data), 16)]
    h = (f"// Generated by tflite_export (c_array): the model as a C array for TFLite Micro.\n"
         f"#ifndef {guard}\n#define {guard}\n\n"
         f"// {len(data)} bytes, {ALIGNMENT}-byte aligned.\n"
         f"extern const unsigned char {var}[];\nextern const unsigned int {var}_len;\n\n#endif  // {guard}\n")
    cc = (f"// Generated by tflite_export (c_array): the model as a C array for TFLite Micro.\n"
          f"#include \"{os.path.basename(header)}\"\n\n"
          f"alignas({ALIGNMENT}) const unsigned char {var}[] = {{\n    " + ",\n    ".join(rows)
          + f"\n}};\nconst unsigned int {var}_len = {len(data)};\n")
    return cc, h


def write(model_bytes: bytes, directory: str, stem: str = "model_data",
          variable: str = "g_model_data") -> tuple[str, str]:
    """Write `<directory>/<stem>.cc` and `.h` atomically; returns their paths."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"c_array: directory does not exist: {directory}")
    cc_path = os.path.join(directory, f"{stem}.cc")
    h_path = os.path.join(directory, f"{stem}.h")
    cc, h = render(model_bytes, variable, f"{stem}.h")
    write_atomic(h_path, h)
    write_atomic(cc_path, cc)
    return cc_path, h_path


def flash_table(report, model_bytes: bytes) -> str:
    """Flash bytes per FC layer (what its format stores) and for the whole array."""
    lines = [f"{'layer':<16}{'format':>16}{'flash bytes':>13}{'dense bytes':>13}{'ratio':>8}"]
    for lr in report.layers:
        fmt = lr.format + (f" g={lr.g}" if lr.g else "")
        lines.append(f"{lr.layer:<16}{fmt:>16}{lr.bytes_exported:>13,}{lr.bytes_dense:>13,}"
                     f"{lr.bytes_exported / max(lr.bytes_dense, 1):>7.3f}x")
    lines.append(f"{'model (C array)':<16}{'':>16}{len(model_bytes):>13,}{report.dense_model_bytes:>13,}"
                 f"{len(model_bytes) / max(report.dense_model_bytes, 1):>7.3f}x")
    return "\n".join(lines)
