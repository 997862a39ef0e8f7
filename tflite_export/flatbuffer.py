"""Reading and writing `.tflite` flatbuffers through the schema's object API, 64-byte aligned.

LiteRT refuses host buffers that are not 64-byte aligned ("Unaligned host memory pointer"), and
constant tensors reach a custom op as buffers pointing into the model, so every buffer's data
must start at a multiple of 64 in the file. The converter does not align them; `save` does,
using only the flatbuffers Builder's own alignment (`Prep`) before each buffer vector.
"""
from __future__ import annotations

import flatbuffers
import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

BUFFER_ALIGNMENT = 64
FILE_IDENTIFIER = b"TFL3"


class _AlignedBufferT(schema.BufferT):
    """A BufferT whose data vector starts on a BUFFER_ALIGNMENT boundary of the output."""

    def Pack(self, builder):
        if self.data is not None and len(self.data):
            # Prep pads so that after the next len(data) bytes the offset is a multiple of the
            # alignment; the vector's data is exactly those bytes (its length prefix goes
            # before them), and Finish aligns the whole file to the largest alignment used.
            builder.Prep(BUFFER_ALIGNMENT, len(self.data))
        return super().Pack(builder)


def load(model_bytes: bytes) -> schema.ModelT:
    """Unpack `.tflite` bytes into a mutable ModelT."""
    if len(model_bytes) < 8 or bytes(model_bytes[4:8]) != FILE_IDENTIFIER:
        raise ValueError("not a TFLite flatbuffer (missing the 'TFL3' file identifier)")
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(model_bytes, 0))
    if any(b.offset for b in model.buffers):
        # >2 GB models keep buffer data after the flatbuffer; repacking would drop it.
        raise ValueError("models with buffers stored outside the flatbuffer are not supported")
    return model


def save(model: schema.ModelT) -> bytes:
    """Pack a ModelT into `.tflite` bytes with every buffer's data 64-byte aligned."""
    for i, buf in enumerate(model.buffers):
        if not isinstance(buf, _AlignedBufferT):
            aligned = _AlignedBufferT()
            aligned.data = None if buf.data is None else np.asarray(buf.data, dtype=np.uint8)
            aligned.offset, aligned.size = buf.offset, buf.size
            model.buffers[i] = aligned
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
    out = bytes(builder.Output())
    misaligned = [i for i, off in buffer_data_offsets(out).items() if off % BUFFER_ALIGNMENT]
    if misaligned:  # a flatbuffers behaviour change would break the runtime: fail loudly here
        raise AssertionError(f"buffers {misaligned} are not {BUFFER_ALIGNMENT}-byte aligned")
    return out


def buffer_data_offsets(model_bytes: bytes) -> dict[int, int]:
    """File offset of each non-empty buffer's data, by buffer index (reads the bytes back)."""
    root = schema.Model.GetRootAs(model_bytes, 0)
    offsets = {}
    for i in range(root.BuffersLength()):
        buf = root.Buffers(i)
        if buf.DataLength():
            # Table.Vector gives the absolute position of a vector's first element.
            field = buf._tab.Offset(4)  # Buffer.data is the table's first field (vtable slot 4)
            offsets[i] = buf._tab.Vector(field)
    return offsets


def operator_constant_bytes(model_bytes: bytes) -> list[tuple[str, int]]:
    """``(first constant input's name, bytes)`` per operator of subgraph 0 with constant inputs:
    what its constants take in the file. Each constant tensor counts its buffer from the data's
    (64-byte aligned) start to the next buffer's (the next one's 4-byte length and the padding;
    the last buffer: data and length rounded up to 64), plus its quantization parameters
    (float32 scale and int64 zero point per channel). What ``tfscalpel.layer_costs`` predicts
    per layer for a flash budget."""
    model = load(model_bytes)
    starts = buffer_data_offsets(model_bytes)
    ordered = sorted(starts.values())
    sg, out = model.subgraphs[0], []
    for op in sg.operators:
        name, total = None, 0
        for t in [] if op.inputs is None else _ints(op.inputs)[1:]:
            if t < 0 or sg.tensors[t].buffer not in starts:
                continue
            tensor = sg.tensors[t]
            start, n = starts[tensor.buffer], len(model.buffers[tensor.buffer].data)
            later = [o for o in ordered if o > start]
            end = -(-(n + 4) // BUFFER_ALIGNMENT) * BUFFER_ALIGNMENT  # the last buffer
            total += later[0] - start if later else end
            q = tensor.quantization
            total += 0 if q is None or q.scale is None else 12 * len(q.scale)
            name = name or text(tensor.name)
        if name is not None:
            out.append((name, total))
    return out


def add_buffer(model: schema.ModelT, data: np.ndarray) -> int:
    """Append a buffer holding `data`'s bytes (little-endian, C order); returns its index."""
    buf = _AlignedBufferT()
    buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
    buf.offset, buf.size = 0, 0
    model.buffers.append(buf)
    return len(model.buffers) - 1


def opcode_index(model: schema.ModelT, builtin: int, version: int, custom_code: str | None = None) -> int:
    """Index of the operator code (builtin, version, custom code), appended when missing."""
    for i, oc in enumerate(model.operatorCodes):
        code = max(int(oc.builtinCode), int(oc.deprecatedBuiltinCode))
        if code == builtin and int(oc.version) == version and text(oc.customCode) == custom_code:
            return i
    oc = schema.OperatorCodeT()
    oc.builtinCode = builtin
    # Codes below 127 must also be in the deprecated int8 field for older readers.
    oc.deprecatedBuiltinCode = min(builtin, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
    oc.version = version
    oc.customCode = custom_code
    model.operatorCodes.append(oc)
    return len(model.operatorCodes) - 1


def custom_code(model: schema.ModelT, op: schema.OperatorT) -> str | None:
    """The custom op name of ``op`` (None for a builtin operator)."""
    return text(model.operatorCodes[op.opcodeIndex].customCode)


def text(raw) -> str | None:
    """A flatbuffer string field as str (the object API gives bytes)."""
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


def tensor_data(model: schema.ModelT, tensor: schema.TensorT, dtype) -> np.ndarray | None:
    """A constant tensor's data as a numpy array of `tensor.shape`, or None if it has no data."""
    buf = model.buffers[tensor.buffer]
    if buf.data is None or len(buf.data) == 0:
        return None
    arr = np.frombuffer(np.asarray(buf.data, dtype=np.uint8).tobytes(), dtype=dtype)
    return arr.reshape([int(d) for d in tensor.shape])


def compact(model: schema.ModelT) -> None:
    """Drop tensors no operator, subgraph or signature uses, then buffers no tensor uses.

    Rewriting an FC leaves its dense weight tensor and buffer orphaned; keeping them would keep
    the dense bytes in the file. Indices are remapped everywhere they appear.
    """
    for sg_index, sg in enumerate(model.subgraphs):
        used = set(_ints(sg.inputs)) | set(_ints(sg.outputs))
        for op in sg.operators:
            used |= {t for t in _ints(op.inputs) if t >= 0}
            used |= set(_ints(op.outputs)) | set(_ints(op.intermediates))
        for sig in model.signatureDefs or []:
            if sig.subgraphIndex == sg_index:
                used |= {tm.tensorIndex for tm in (sig.inputs or []) + (sig.outputs or [])}
        keep = sorted(used)
        remap = {old: new for new, old in enumerate(keep)}
        sg.tensors = [sg.tensors[i] for i in keep]

        def m(xs):
            return None if xs is None else [remap[t] if t >= 0 else t for t in _ints(xs)]

        sg.inputs, sg.outputs = m(sg.inputs), m(sg.outputs)
        for op in sg.operators:
            op.inputs, op.outputs = m(op.inputs), m(op.outputs)
            if op.intermediates is not None:
                op.intermediates = m(op.intermediates)
        for sig in model.signatureDefs or []:
            if sig.subgraphIndex == sg_index:
                for tm in (sig.inputs or []) + (sig.outputs or []):
                    tm.tensorIndex = remap[tm.tensorIndex]

    # Buffer 0 is the schema's empty sentinel and stays first.
    used_buffers = {0}
    for sg in model.subgraphs:
        used_buffers |= {t.buffer for t in sg.tensors}
    used_buffers |= {md.buffer for md in model.metadata or []}
    used_buffers |= set(_ints(model.metadataBuffer))
    keep = sorted(used_buffers)
    remap = {old: new for new, old in enumerate(keep)}
    model.buffers = [model.buffers[i] for i in keep]
    for sg in model.subgraphs:
        for t in sg.tensors:
            t.buffer = remap[t.buffer]
    for md in model.metadata or []:
        md.buffer = remap[md.buffer]
    if model.metadataBuffer is not None:
        model.metadataBuffer = [remap[b] for b in _ints(model.metadataBuffer)]


def _ints(xs) -> list[int]:
    return [] if xs is None else [int(x) for x in xs]
