"""Verify a ``.tflite`` model before LiteRT sees it, so that no file can crash the process.

LiteRT trusts its input (tflite_export/RUNTIME.md, "What LiteRT trusts"): a truncated file, an
out-of-range index or an int8 zero point of 128 kills the process instead of raising. So
``verify(data)`` first walks the whole flatbuffer, checking every table, vtable, vector, string
and union LiteRT reads against the bytes (what flatbuffers' C++ ``Verifier`` does; the Python
package has none), then checks the facts LiteRT relies on without checking:

- operator code, tensor, buffer and subgraph indices are in range; an operator input may be -1
  (absent) only where the builtin op documents an optional input (never on a custom op);
- shapes and shape signatures are sane: rank <= 8, dimensions >= 0 (a signature's may be -1),
  no tensor needs more than ``MAX_TENSOR_BYTES`` and a subgraph's non-constant tensors no more
  than ``MAX_ACTIVATION_BYTES`` together;
- quantization: scales finite and > 0, one zero point per scale, zero points inside the type's
  range, a per-channel dimension that exists and matches the scale count;
- a constant tensor's buffer holds exactly the bytes its shape and type need, external data
  lies inside the file, and no operator writes into a constant tensor.

Every refusal is an ``InvalidModelError`` naming the place (subgraph, operator, tensor, field),
the value found and what is allowed. Pure Python over ``struct``: no TensorFlow import.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

__all__ = ["InvalidModelError", "verify", "ModelSummary", "CustomNode",
           "MAX_MODEL_BYTES", "MAX_TENSOR_BYTES", "MAX_ACTIVATION_BYTES", "MAX_RANK"]

#: Flatbuffers address at most 2 GiB; larger models keep their buffers outside (not supported).
MAX_MODEL_BYTES = (1 << 31) - 1
#: No tensor, constant or activation, may need more (a flipped shape byte once asked for 5.7 GB).
MAX_TENSOR_BYTES = 1 << 30
#: The non-constant tensors of a subgraph (what LiteRT plans in its arena), at their declared
#: shapes (dynamic dimensions as 1), may need at most this together.
MAX_ACTIVATION_BYTES = 512 << 20
#: LiteRtLayout holds 8 dimensions.
MAX_RANK = 8
#: flatbuffers' own Verifier default: bounds the walk on hostile files that share tables.
MAX_TABLES = 1_000_000

_BUILTIN_CUSTOM = 32

# TensorType -> bits per element (None: variable size, no fixed buffer size to check).
_TYPE_BITS = {0: 32, 1: 16, 2: 32, 3: 8, 4: 64, 5: None, 6: 8, 7: 16, 8: 64, 9: 8, 10: 64,
              11: 128, 12: 64, 13: None, 14: None, 15: 32, 16: 16, 17: 4, 18: 16, 19: 2, 20: 4,
              21: 8, 22: 8}
_TYPE_NAMES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string",
               6: "bool", 7: "int16", 8: "complex64", 9: "int8", 10: "float64", 11: "complex128",
               12: "uint64", 13: "resource", 14: "variant", 15: "uint32", 16: "uint16", 17: "int4",
               18: "bfloat16", 19: "int2", 20: "uint4", 21: "float8_e4m3fn", 22: "float8_e5m2"}
# Zero-point range of the integer types quantized kernels index tables with.
_ZERO_POINT_RANGE = {3: (0, 255), 9: (-128, 127), 7: (-32768, 32767), 17: (-8, 7), 19: (-2, 1),
                     20: (0, 15)}

# Builtin ops whose kernels accept an absent (-1) input, and at which positions. Every other op
# (and every custom op) gets a tensor at every input: a -1 there is dereferenced.
_LSTM_OPTIONAL = frozenset({1, 5, 9, 10, 11, 12, 16, 17, 18, 19, 20, 21, 22, 23})
_OPTIONAL_INPUTS = {
    3: frozenset({2}),    # CONV_2D: bias
    4: frozenset({2}),    # DEPTHWISE_CONV_2D: bias
    9: frozenset({2}),    # FULLY_CONNECTED: bias
    27: frozenset({3}),   # SVDF: bias
    67: frozenset({3}),   # TRANSPOSE_CONV: bias
    132: frozenset({2}),  # CONV_3D: bias
    141: frozenset({3}),  # CONV_3D_TRANSPOSE: bias
    16: _LSTM_OPTIONAL,   # LSTM: CIFG, peephole, projection and layer-norm weights
    44: _LSTM_OPTIONAL,   # UNIDIRECTIONAL_SEQUENCE_LSTM: the same
    46: frozenset(range(5, 12)),   # BIDIRECTIONAL_SEQUENCE_RNN: auxiliary input and weights
    52: frozenset(range(1, 48)),   # BIDIRECTIONAL_SEQUENCE_LSTM: optional weights of both sides
}

# Input and output counts of common builtin ops: (least inputs, most inputs, least outputs, most
# outputs), None = no bound. LiteRT's delegates read a node's inputs before its kernel checks the
# count (a QUANTIZE turned STRIDED_SLICE with one input crashed LiteRtCreateCompiledModel), so
# these are checked here. Ops not listed are left to LiteRT.
_U, _B = (1, 1, 1, 1), (2, 2, 1, 1)  # unary, binary
_ARITY = {
    0: _B, 1: _U, 2: (1, None, 1, 1), 3: (2, 3, 1, 1), 4: (2, 3, 1, 1), 5: _U, 6: _U, 7: _B,
    8: _U, 9: (2, 3, 1, 2), 11: _U, 12: _U, 13: _U, 14: _U, 17: _U, 18: _B, 19: _U, 20: _U,
    21: _U, 22: (1, 2, 1, 1), 23: _B, 25: _U, 26: _U, 28: _U, 34: (2, 3, 1, 1), 36: _B,
    37: (3, 3, 1, 1), 38: (3, 3, 1, 1), 39: _B, 40: _B, 41: _B, 42: _B, 43: _U, 45: (4, 4, 1, 1),
    47: _U, 48: (2, 2, 2, 2), 49: (2, 2, 1, None), 50: _U, 53: _U, 54: _B, 55: _B, 56: _B, 57: _B,
    58: _B, 59: _U, 60: (3, 3, 1, 1), 61: _B, 62: _B, 63: _B, 64: (3, 3, 1, 1), 65: (3, 3, 1, 1),
    66: _U, 67: (3, 4, 1, 1), 69: _B, 70: _B, 71: _B, 72: _B, 73: _U, 74: _B, 75: _U, 76: _U,
    77: _U, 78: _B, 79: _B, 81: _B, 82: _B, 83: (1, None, 1, 1), 84: _B, 86: _B, 87: _U,
    88: (1, 1, 1, None), 89: _B, 90: _B, 91: _B, 92: _U, 93: _U, 94: _B, 95: _B, 96: (3, 3, 1, 1),
    97: _B, 98: _U, 99: _B, 100: _B, 101: _U, 102: (3, 3, 1, None), 104: _U, 105: _B,
    106: (1, None, 1, 1), 107: _B, 108: _U, 110: _U, 111: _U, 114: _U, 116: _U, 117: _U,
    123: (3, 3, 1, 1), 124: _U, 126: _B,
}


class InvalidModelError(ValueError):
    """The model breaks a rule LiteRT relies on; the message names where and which rule."""


@dataclass(frozen=True)
class CustomNode:
    """One custom-op operator: where it is, its name, version and custom options length."""

    subgraph: int
    index: int
    name: str
    version: int
    options_bytes: int


@dataclass
class ModelSummary:
    """What the runtime needs from a verified model."""

    custom_nodes: List[CustomNode] = field(default_factory=list)
    #: Byte size of each input of the first signature's subgraph (dynamic dims counted as 1).
    input_bytes: List[int] = field(default_factory=list)
    #: File offset of each constant custom-op input's data, by (subgraph, op, input position).
    constant_offsets: Dict[Tuple[int, int, int], int] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------
# The bounds walk


class _Reader:
    """Bounds-checked reads of flatbuffer primitives; every failure names the path being read."""

    def __init__(self, data: bytes):
        self.buf = data
        self.n = len(data)
        self.tables = 0

    def fail(self, path: str, what: str):
        raise InvalidModelError(f"invalid flatbuffer at {path}: {what}")

    def need(self, pos: int, size: int, align: int, path: str, what: str) -> None:
        if pos < 0 or pos + size > self.n:
            self.fail(path, f"{what} at byte {pos} (+{size}) lies outside the {self.n}-byte model")
        if pos % align:
            self.fail(path, f"{what} at byte {pos} is not {align}-byte aligned")

    def scalar(self, fmt: str, pos: int):
        return struct.unpack_from("<" + fmt, self.buf, pos)[0]

    def deref(self, pos: int, path: str) -> int:
        """Follow the uoffset stored at pos (already bounds-checked) to its target."""
        off = self.scalar("I", pos)
        if off == 0 or off >= 1 << 31:
            self.fail(path, f"offset {off} at byte {pos} is zero or negative")
        target = pos + off
        if target >= self.n:
            self.fail(path, f"offset at byte {pos} points to byte {target}, past the end "
                            f"of the {self.n}-byte model")
        return target

    def table(self, pos: int, path: str) -> "_Table":
        self.tables += 1
        if self.tables > MAX_TABLES:
            self.fail(path, f"more than {MAX_TABLES} tables")
        self.need(pos, 4, 4, path, "table")
        vt = pos - self.scalar("i", pos)
        self.need(vt, 4, 2, path, "vtable")
        vsize, tsize = self.scalar("H", vt), self.scalar("H", vt + 2)
        if vsize < 4 or vsize % 2:
            self.fail(path, f"vtable size {vsize} is not an even number >= 4")
        self.need(vt, vsize, 2, path, "vtable")
        if tsize < 4:
            self.fail(path, f"table size {tsize} is below 4")
        self.need(pos, tsize, 4, path, "table")
        return _Table(self, pos, vt, vsize, path)

    def vector(self, pos: int, elem: int, path: str) -> Tuple[int, int]:
        """(start of the elements, element count) of the vector at pos."""
        self.need(pos, 4, 4, path, "vector length")
        count = self.scalar("I", pos)
        start = pos + 4
        if count * elem > self.n - start:
            self.fail(path, f"vector of {count} x {elem}-byte elements at byte {pos} runs past "
                            f"the end of the {self.n}-byte model")
        if elem > 1 and start % min(elem, 8):
            self.fail(path, f"vector of {elem}-byte elements at byte {pos} is misaligned")
        return start, count

    def string(self, pos: int, path: str) -> str:
        start, count = self.vector(pos, 1, path)
        if start + count >= self.n:
            self.fail(path, f"string at byte {pos} has no terminating zero inside the model")
        return bytes(self.buf[start:start + count]).decode("utf-8", errors="replace")


class _Table:
    def __init__(self, r: _Reader, pos: int, vt: int, vsize: int, path: str):
        self.r, self.pos, self.vt, self.vsize, self.path = r, pos, vt, vsize, path

    def _field(self, slot: int, size: int, name: str) -> Optional[int]:
        entry = 4 + 2 * slot
        if entry + 2 > self.vsize:
            return None
        off = self.r.scalar("H", self.vt + entry)
        if off == 0:
            return None
        pos = self.pos + off
        self.r.need(pos, size, min(size, 8), f"{self.path}.{name}", "field")
        return pos

    def scalar(self, slot: int, fmt: str, default, name: str):
        pos = self._field(slot, struct.calcsize("<" + fmt), name)
        return default if pos is None else self.r.scalar(fmt, pos)

    def offset(self, slot: int, name: str) -> Optional[int]:
        pos = self._field(slot, 4, name)
        return None if pos is None else self.r.deref(pos, f"{self.path}.{name}")

    def table(self, slot: int, name: str) -> Optional["_Table"]:
        pos = self.offset(slot, name)
        return None if pos is None else self.r.table(pos, f"{self.path}.{name}")

    def string(self, slot: int, name: str) -> Optional[str]:
        pos = self.offset(slot, name)
        return None if pos is None else self.r.string(pos, f"{self.path}.{name}")

    def raw_vector(self, slot: int, elem: int, name: str) -> Optional[Tuple[int, int]]:
        pos = self.offset(slot, name)
        return None if pos is None else self.r.vector(pos, elem, f"{self.path}.{name}")

    def scalars(self, slot: int, fmt: str, name: str) -> Optional[Tuple]:
        size = struct.calcsize("<" + fmt)
        vec = self.raw_vector(slot, size, name)
        if vec is None:
            return None
        start, count = vec
        return struct.unpack_from(f"<{count}{fmt}", self.r.buf, start)

    def tables(self, slot: int, name: str) -> List["_Table"]:
        vec = self.raw_vector(slot, 4, name)
        if vec is None:
            return []
        start, count = vec
        return [self.r.table(self.r.deref(start + 4 * i, f"{self.path}.{name}[{i}]"),
                             f"{self.path}.{name}[{i}]") for i in range(count)]



# Union member tables (builtin options, quantization details, sparse index vectors) are walked
# from a description read off the generated schema module of the pinned LiteRT wheel, so each of
# its ~150 option tables is checked field by field without being listed here.
_SLOT_SIZES = {"Bool": 1, "Int8": 1, "Uint8": 1, "Int16": 2, "Uint16": 2, "Int32": 4,
               "Uint32": 4, "Float32": 4, "Int64": 8, "Uint64": 8, "Float64": 8}
_UNIONS: Optional[Dict[str, Dict[int, Tuple[str, list]]]] = None


class _Recorder:
    """Stands in for a flatbuffers Builder to record what a generated `...Add<Field>` does."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *args: self.calls.append((name, args))


def _describe_table(schema, name: str) -> Optional[list]:
    """[(slot, field name, kind, size)] of a generated table class: kind is "scalar" (size in
    bytes), "vector" (element size) or "string"; None if it has a field of another kind."""
    prefix = name + "Add"
    fields = []
    for attr in dir(schema):
        if not attr.startswith(prefix):
            continue
        rec = _Recorder()
        getattr(schema, attr)(rec, 0)
        kind, args = rec.calls[0]
        fname = attr[len(prefix):]
        if kind == "PrependUOffsetTRelativeSlot":
            start = getattr(schema, f"{name}Start{fname}Vector", None)
            if start is not None:
                rec = _Recorder()
                start(rec, 0)
                elem = rec.calls[0][1][0]
                if fname in ("Subgraphs", "Tensors", "Operators"):
                    return None
                fields.append((args[0], fname, "vector", elem))
            else:
                # An offset field without a vector builder: a string or a table. The option
                # tables have strings only; a table-valued field makes the table unsupported.
                reader = getattr(getattr(schema, name), fname, None)
                code = getattr(reader, "__code__", None)
                if code is None or "String" not in code.co_names:
                    return None
                fields.append((args[0], fname, "string", 0))
        else:
            size = _SLOT_SIZES.get(kind[len("Prepend"):-len("Slot")])
            if size is None:
                return None
            fields.append((args[0], fname, "scalar", size))
    return sorted(fields)


def _unions() -> Dict[str, Dict[int, Tuple[str, list]]]:
    global _UNIONS
    if _UNIONS is None:
        from ai_edge_litert import schema_py_generated as schema

        unions = {}
        for union in ("BuiltinOptions", "BuiltinOptions2", "QuantizationDetails",
                      "SparseIndexVector"):
            members = {}
            for member, code in vars(getattr(schema, union)).items():
                if member.startswith("_") or code == 0:
                    continue
                members[code] = (member, _describe_table(schema, member))
            unions[union] = members
        _UNIONS = unions
    return _UNIONS


@dataclass
class _UnionValue:
    name: str
    scalars: Dict[str, object]
    vectors: Dict[str, Tuple]


def _walk_union(t: _Table, type_slot: int, value_slot: int, union: str, name: str
                ) -> Optional[_UnionValue]:
    """Walk a union field whose type byte is at type_slot; the member's scalars and the int32
    vectors are returned (the semantic checks read subgraph indices and sparse index vectors)."""
    code = t.scalar(type_slot, "B", 0, name + "_type")
    if code == 0:
        if t.offset(value_slot, name) is not None:
            t.r.fail(f"{t.path}.{name}", "a value is present but its union type is NONE")
        return None
    member = _unions()[union].get(code)
    if member is None:
        t.r.fail(f"{t.path}.{name}_type", f"{code} is not a {union} type this LiteRT knows")
    member_name, fields = member
    if fields is None:
        t.r.fail(f"{t.path}.{name}", f"{member_name} is not supported by this verifier")
    sub = t.table(value_slot, name)
    if sub is None:
        return _UnionValue(member_name, {}, {})
    sub.path = f"{t.path}.{name}<{member_name}>"
    value = _UnionValue(member_name, {}, {})
    for slot, fname, kind, size in fields:
        if kind == "scalar":
            fmt = {1: "b", 2: "h", 4: "i", 8: "q"}[size]
            value.scalars[fname] = sub.scalar(slot, fmt, 0, fname)
        elif kind == "string":
            sub.string(slot, fname)
        elif size == 4:
            value.vectors[fname] = sub.scalars(slot, "i", fname)
        else:
            sub.raw_vector(slot, size, fname)
    return value


# ------------------------------------------------------------------------------------------------
# Reading the model into plain records (walk) and checking them (semantic rules)


@dataclass
class _Quant:
    scale: Tuple[float, ...]
    zero_point: Tuple[int, ...]
    dim: int
    has_details: bool


@dataclass
class _Tensor:
    name: str
    shape: Tuple[int, ...]
    signature: Optional[Tuple[int, ...]]
    type: int
    buffer: int
    quant: Optional[_Quant]
    sparse: bool


@dataclass
class _Op:
    opcode: int
    inputs: Tuple[int, ...]
    outputs: Tuple[int, ...]
    intermediates: Tuple[int, ...]
    custom_options: int
    large_options: Tuple[int, int]
    subgraph_refs: List[Tuple[str, int]]


def _walk_tensor(t: _Table) -> _Tensor:
    quant = None
    q = t.table(4, "quantization")
    if q is not None:
        q.scalars(0, "f", "min")
        q.scalars(1, "f", "max")
        details = _walk_union(q, 4, 5, "QuantizationDetails", "details")
        quant = _Quant(q.scalars(2, "f", "scale") or (), q.scalars(3, "q", "zero_point") or (),
                       q.scalar(6, "i", 0, "quantized_dimension"), details is not None)
    sparsity = t.table(6, "sparsity")
    if sparsity is not None:
        sparsity.scalars(0, "i", "traversal_order")
        sparsity.scalars(1, "i", "block_map")
        for dm in sparsity.tables(2, "dim_metadata"):
            dm.scalar(0, "b", 0, "format")
            dm.scalar(1, "i", 0, "dense_size")
            _walk_union(dm, 2, 3, "SparseIndexVector", "array_segments")
            _walk_union(dm, 4, 5, "SparseIndexVector", "array_indices")
    for v in t.tables(9, "variant_tensors"):
        v.scalars(0, "i", "shape")
        v.scalar(1, "b", 0, "type")
        v.scalar(2, "B", 0, "has_rank")
    if t.scalar(10, "I", 0, "external_buffer"):
        t.r.fail(t.path, "tensors in external buffers are not supported")
    t.scalar(5, "B", 0, "is_variable")
    t.scalar(8, "B", 0, "has_rank")
    return _Tensor(name=t.string(3, "name") or "", shape=tuple(t.scalars(0, "i", "shape") or ()),
                   signature=t.scalars(7, "i", "shape_signature"),
                   type=t.scalar(1, "b", 0, "type"), buffer=t.scalar(2, "I", 0, "buffer"),
                   quant=quant, sparse=sparsity is not None)


def _walk_operator(t: _Table) -> _Op:
    refs = []
    for type_slot, value_slot, union, name in ((3, 4, "BuiltinOptions", "builtin_options"),
                                               (11, 12, "BuiltinOptions2", "builtin_options2")):
        value = _walk_union(t, type_slot, value_slot, union, name)
        if value is not None:
            refs += [(f"{value.name}.{k}", int(v)) for k, v in value.scalars.items()
                     if "Subgraph" in k]
            refs += [(f"{value.name}.{k}[{j}]", int(x)) for k, vec in value.vectors.items()
                     if "Subgraph" in k for j, x in enumerate(vec or ())]
    custom = t.raw_vector(5, 1, "custom_options")
    t.scalar(6, "b", 0, "custom_options_format")
    t.raw_vector(7, 1, "mutating_variable_inputs")
    t.scalar(13, "i", -1, "debug_metadata_index")
    return _Op(opcode=t.scalar(0, "I", 0, "opcode_index"),
               inputs=tuple(t.scalars(1, "i", "inputs") or ()),
               outputs=tuple(t.scalars(2, "i", "outputs") or ()),
               intermediates=tuple(t.scalars(8, "i", "intermediates") or ()),
               custom_options=0 if custom is None else custom[1],
               large_options=(t.scalar(9, "Q", 0, "large_custom_options_offset"),
                              t.scalar(10, "Q", 0, "large_custom_options_size")),
               subgraph_refs=refs)


def _builtin_name(code: int) -> str:
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    return names.get(code, f"builtin {code}")


def _rules(path: str, what: str) -> InvalidModelError:
    return InvalidModelError(f"{path}: {what}")


def _tensor_label(sg: int, i: int, t: _Tensor) -> str:
    return f"subgraph {sg} tensor {i} ({t.name!r})" if t.name else f"subgraph {sg} tensor {i}"


def _tensor_bytes(t: _Tensor, dims) -> Optional[int]:
    bits = _TYPE_BITS.get(t.type)
    if bits is None:
        return None
    return (math.prod(max(d, 1) if d < 0 else d for d in dims) * bits + 7) // 8


def _check_tensor(sg: int, i: int, t: _Tensor, sizes: List[int]) -> None:
    label = _tensor_label(sg, i, t)
    if t.type not in _TYPE_NAMES:
        raise _rules(label, f"type {t.type} is not a TensorType this LiteRT knows")
    if len(t.shape) > MAX_RANK:
        raise _rules(label, f"rank {len(t.shape)} > {MAX_RANK} (LiteRT's layouts hold 8 dims)")
    if any(d < 0 for d in t.shape):
        raise _rules(label, f"shape {list(t.shape)} has a negative dimension")
    if t.signature is not None:
        if len(t.signature) != len(t.shape):
            raise _rules(label, f"shape_signature {list(t.signature)} and shape {list(t.shape)} "
                                "differ in rank")
        bad = [(s, d) for s, d in zip(t.signature, t.shape) if s != d and s != -1]
        if bad:
            raise _rules(label, f"shape_signature {list(t.signature)} disagrees with shape "
                                f"{list(t.shape)}: each dimension must equal the shape's or be -1")
    need = _tensor_bytes(t, t.shape)
    if need is not None and need > MAX_TENSOR_BYTES:
        raise _rules(label, f"shape {list(t.shape)} of {_TYPE_NAMES[t.type]} needs {need} bytes, "
                            f"over the cap of {MAX_TENSOR_BYTES}")
    if t.buffer >= len(sizes):
        raise _rules(label, f"buffer index {t.buffer} >= the model's {len(sizes)} buffers")
    data = sizes[t.buffer]
    if data and need is not None and not t.sparse and data != need:
        raise _rules(label, f"buffer {t.buffer} holds {data} bytes but shape {list(t.shape)} of "
                            f"{_TYPE_NAMES[t.type]} needs exactly {need}")
    q = t.quant
    if q is None or not q.scale and not q.zero_point:
        return
    if len(q.zero_point) != len(q.scale):
        raise _rules(label, f"quantization has {len(q.scale)} scales and {len(q.zero_point)} "
                            "zero points; they must pair up")
    for j, s in enumerate(q.scale):
        if not (math.isfinite(s) and s > 0):
            raise _rules(label, f"quantization scale[{j}] = {s}: scales must be finite and > 0")
    lo, hi = _ZERO_POINT_RANGE.get(t.type, (-(1 << 63), (1 << 63) - 1))
    for j, z in enumerate(q.zero_point):
        if not lo <= z <= hi:
            raise _rules(label, f"quantization zero_point[{j}] = {z}: a {_TYPE_NAMES[t.type]} "
                                f"zero point must lie in [{lo}, {hi}]")
    if len(q.scale) > 1:
        if not 0 <= q.dim < len(t.shape):
            raise _rules(label, f"quantized_dimension {q.dim} is not a dimension of shape "
                                f"{list(t.shape)}")
        if t.shape[q.dim] != len(q.scale):
            raise _rules(label, f"{len(q.scale)} per-channel scales but dimension {q.dim} of "
                                f"shape {list(t.shape)} has {t.shape[q.dim]} channels")


def _check_index_list(where: str, what: str, xs, n: int, optional=frozenset()) -> None:
    for j, x in enumerate(xs):
        if x == -1 and j in optional:
            continue
        if not 0 <= x < n:
            allowed = f"[0, {n})" + (f", or -1 at positions {sorted(optional)}" if optional else "")
            raise _rules(where, f"{what}[{j}] = {x}: a tensor index must lie in {allowed}")


def verify(data: bytes) -> ModelSummary:
    """Check ``.tflite`` bytes against the rules above; raise ``InvalidModelError`` or return
    the facts the runtime needs (custom-op nodes, input sizes)."""
    n = len(data)
    if n > MAX_MODEL_BYTES:
        raise InvalidModelError(f"model is {n} bytes; flatbuffers hold at most {MAX_MODEL_BYTES}")
    if n < 8 or bytes(data[4:8]) != b"TFL3":
        raise InvalidModelError("not a TFLite model: the 'TFL3' file identifier is missing at "
                                "bytes 4..8")
    r = _Reader(data)
    r.need(0, 4, 4, "root", "root offset")
    model = r.table(r.deref(0, "root"), "model")
    model.scalar(0, "I", 0, "version")
    model.string(3, "description")
    opcodes = []
    for t in model.tables(1, "operator_codes"):
        code = max(t.scalar(0, "b", 0, "deprecated_builtin_code"), t.scalar(3, "i", 0, "builtin_code"))
        opcodes.append((code, t.string(1, "custom_code"), t.scalar(2, "i", 1, "version")))
    buffers = []
    for t in model.tables(4, "buffers"):
        vec = t.raw_vector(0, 1, "data")
        buffers.append((vec[0] if vec else 0, vec[1] if vec else 0,
                        t.scalar(1, "Q", 0, "offset"), t.scalar(2, "Q", 0, "size")))
    model.scalars(5, "i", "metadata_buffer")
    metadata = [(t.string(0, "name"), t.scalar(1, "I", 0, "buffer"))
                for t in model.tables(6, "metadata")]
    signatures = []
    for t in model.tables(7, "signature_defs"):
        maps = [[(m.string(0, "name"), m.scalar(1, "I", 0, "tensor_index")) for m in t.tables(s, k)]
                for s, k in ((0, "inputs"), (1, "outputs"))]
        t.string(2, "signature_key")
        signatures.append((t.scalar(4, "I", 0, "subgraph_index"), maps))
    if model.raw_vector(8, 4, "external_buffer_groups") or model.raw_vector(9, 4, "external_buffers"):
        raise InvalidModelError("models with external buffers are not supported")
    subgraphs = []
    for t in model.tables(2, "subgraphs"):
        tensors = []
        for i, tt in enumerate(t.tables(0, "tensors")):
            tt.path = f"{t.path}.tensors[{i}]"
            tensors.append(_walk_tensor(tt))
        ops = []
        for i, ot in enumerate(t.tables(3, "operators")):
            ot.path = f"{t.path}.operators[{i}]"
            ops.append(_walk_operator(ot))
        t.string(4, "name")
        subgraphs.append((tensors, t.scalars(1, "i", "inputs") or (),
                          t.scalars(2, "i", "outputs") or (), ops))
    return _check(data, opcodes, buffers, metadata, signatures, subgraphs)


def _check(data, opcodes, buffers, metadata, signatures, subgraphs) -> ModelSummary:
    n = len(data)
    if not subgraphs:
        raise InvalidModelError("the model has no subgraph")
    for i, (code, custom, version) in enumerate(opcodes):
        if not 0 <= code <= 255:
            raise _rules(f"operator code {i}", f"builtin code {code} is not a BuiltinOperator")
        if code == _BUILTIN_CUSTOM and not custom:
            raise _rules(f"operator code {i}", "a CUSTOM operator code needs a custom_code name")
        if version < 1:
            raise _rules(f"operator code {i}", f"version {version} < 1")
    for i, (start, size, offset, ext_size) in enumerate(buffers):
        if offset or ext_size:
            if size:
                raise _rules(f"buffer {i}", "has both inline data and an external offset")
            if offset <= 1 or offset + ext_size > n:
                raise _rules(f"buffer {i}", f"external data [{offset}, {offset + ext_size}) lies "
                                            f"outside the {n}-byte file")
    for name, b in metadata:
        if b >= len(buffers):
            raise _rules(f"metadata {name!r}", f"buffer index {b} >= {len(buffers)} buffers")
    sizes = [(b[1] or b[3]) for b in buffers]
    summary = ModelSummary()
    for sg, (tensors, inputs, outputs, ops) in enumerate(subgraphs):
        nt = len(tensors)
        for i, t in enumerate(tensors):
            _check_tensor(sg, i, t, sizes)
        activations = sum(_tensor_bytes(t, t.shape) or 0 for t in tensors if not sizes[t.buffer])
        if activations > MAX_ACTIVATION_BYTES:
            biggest = max((i for i, t in enumerate(tensors) if not sizes[t.buffer]),
                          key=lambda i: _tensor_bytes(tensors[i], tensors[i].shape) or 0)
            raise _rules(f"subgraph {sg}", f"its non-constant tensors need {activations} bytes "
                                           f"together, over the cap of {MAX_ACTIVATION_BYTES} "
                                           f"(the largest: {_tensor_label(sg, biggest, tensors[biggest])}, "
                                           f"shape {list(tensors[biggest].shape)})")
        _check_index_list(f"subgraph {sg}", "inputs", inputs, nt)
        _check_index_list(f"subgraph {sg}", "outputs", outputs, nt)
        # Each tensor has one writer: an operator or the caller (two FULLY_CONNECTEDs writing
        # one tensor crashed LiteRtCreateCompiledModel).
        writer = {t: "the subgraph's inputs" for t in inputs}
        for k, op in enumerate(ops):
            where = f"subgraph {sg} operator {k}"
            if op.opcode >= len(opcodes):
                raise _rules(where, f"opcode_index {op.opcode} >= the model's {len(opcodes)} "
                                    "operator codes")
            code, custom, version = opcodes[op.opcode]
            where += f" ({custom if code == _BUILTIN_CUSTOM else _builtin_name(code)})"
            arity = _ARITY.get(code)
            if arity is not None:
                lo_in, hi_in, lo_out, hi_out = arity
                for what, count, lo, hi in (("inputs", len(op.inputs), lo_in, hi_in),
                                            ("outputs", len(op.outputs), lo_out, hi_out)):
                    if count < lo or (hi is not None and count > hi):
                        allowed = str(lo) if lo == hi else f"{lo}..{hi if hi is not None else ''}"
                        raise _rules(where, f"{count} {what}; {_builtin_name(code)} takes {allowed}")
            optional = frozenset() if code == _BUILTIN_CUSTOM else _OPTIONAL_INPUTS.get(code, frozenset())
            _check_index_list(where, "inputs", op.inputs, nt, optional)
            _check_index_list(where, "outputs", op.outputs, nt)
            _check_index_list(where, "intermediates", op.intermediates, nt)
            for j, o in enumerate(op.outputs):
                if o in writer:
                    raise _rules(where, f"outputs[{j}] = tensor {o} is already written by "
                                        f"{writer[o]}; a tensor has one writer")
                writer[o] = f"operator {k}"
                if sizes[tensors[o].buffer]:
                    raise _rules(where, f"outputs[{j}] = tensor {o} is a constant (buffer "
                                        f"{tensors[o].buffer} has data); an operator cannot write it")
            off, size = op.large_options
            if (off or size) and (off <= 1 or off + size > n):
                raise _rules(where, f"large custom options [{off}, {off + size}) lie outside the "
                                    f"{n}-byte file")
            for what, idx in op.subgraph_refs:
                if not 0 <= idx < len(subgraphs) or idx == sg:
                    raise _rules(where, f"{what} = {idx}: must name another of the model's "
                                        f"{len(subgraphs)} subgraphs")
            if code == _BUILTIN_CUSTOM:
                summary.custom_nodes.append(CustomNode(sg, k, custom, version, op.custom_options))
                for j, x in enumerate(op.inputs):
                    b = tensors[x].buffer
                    if sizes[b] and buffers[b][1]:
                        summary.constant_offsets[(sg, k, j)] = buffers[b][0]
    for s, (sg, maps) in enumerate(signatures):
        if sg >= len(subgraphs):
            raise _rules(f"signature {s}", f"subgraph_index {sg} >= {len(subgraphs)} subgraphs")
        nt = len(subgraphs[sg][0])
        for kind, entries in zip(("inputs", "outputs"), maps):
            _check_index_list(f"signature {s}", kind, [i for _, i in entries], nt)
            for j, (name, _) in enumerate(entries):
                if name is None:  # LiteRT makes a std::string of it: a null aborts the process
                    raise _rules(f"signature {s}", f"{kind}[{j}] has no name; every signature "
                                                   "input and output needs one")
            # LiteRT names each subgraph input/output by its signature entry (a tensor without
            # one aborts the process): the two lists must hold the same tensors.
            listed = subgraphs[sg][1 if kind == "inputs" else 2]
            mapped = [i for _, i in entries]
            if sorted(mapped) != sorted(listed):
                raise _rules(f"signature {s}", f"{kind} name tensors {mapped}, but subgraph {sg}'s "
                                               f"{kind} are {list(listed)}; they must be the same")
    sg = signatures[0][0] if signatures else 0
    tensors, inputs = subgraphs[sg][0], subgraphs[sg][1]
    summary.input_bytes = [_tensor_bytes(tensors[i], tensors[i].signature or tensors[i].shape) or 0
                           for i in inputs]
    return summary
