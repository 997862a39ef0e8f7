"""Give RESHAPEs whose target shape the converter computes at run time a constant shape.

A Keras Flatten (or Reshape) with a dynamic batch converts to SHAPE -> STRIDED_SLICE -> PACK ->
RESHAPE: the target shape ``[batch, n]`` is computed by ops, so LiteRT marks the RESHAPE output
and everything after it as dynamic tensors, which it allocates with ``malloc`` at run time.
Those are not 64-byte aligned, and LiteRT refuses to hand an unaligned buffer to a custom op
(tflite_export/RUNTIME.md, "Alignment"): the custom op after a Flatten failed on most batch
sizes, depending on where malloc put the tensor. ``RESHAPE(x, [-1, n])`` with a constant shape
means the same, is planned statically in LiteRT's 64-byte aligned arena, and skips three ops.
"""
from __future__ import annotations

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

from tflite_export import flatbuffer

__all__ = ["freeze_batch_reshapes"]

_OP = schema.BuiltinOperator
# Ops the shape computation consists of: dropped once nothing reads their outputs.
_SHAPE_OPS = (_OP.SHAPE, _OP.STRIDED_SLICE, _OP.PACK)


def _code(model: schema.ModelT, op: schema.OperatorT) -> int:
    c = model.operatorCodes[op.opcodeIndex]
    return max(c.builtinCode, c.deprecatedBuiltinCode)


def _const_ints(model: schema.ModelT, sg: schema.SubGraphT, index: int):
    """A constant int32 tensor's values as a flat list, or None if it is not one."""
    if index < 0:
        return None
    t = sg.tensors[index]
    if t.type != schema.TensorType.INT32:
        return None
    data = flatbuffer.tensor_data(model, t, np.int32)
    return None if data is None else [int(v) for v in data.reshape(-1)]


def _is_batch_of(model, sg, producer, index: int, x: int) -> bool:
    """True if tensor `index` is STRIDED_SLICE(SHAPE(x), [0], [1], [1]) with the axis shrunk:
    the batch dimension of x as a scalar."""
    ss = producer.get(index)
    if ss is None or _code(model, ss) != _OP.STRIDED_SLICE or len(ss.inputs) != 4:
        return False
    opts = ss.builtinOptions
    if opts is None or opts.shrinkAxisMask != 1 or opts.beginMask or opts.ellipsisMask or \
            opts.newAxisMask or getattr(opts, "offset", False):
        return False
    if [_const_ints(model, sg, i) for i in ss.inputs[1:]] != [[0], [1], [1]]:
        return False
    shape = producer.get(ss.inputs[0])
    return shape is not None and _code(model, shape) == _OP.SHAPE and list(shape.inputs) == [x]


def freeze_batch_reshapes(model: schema.ModelT) -> int:
    """Replace each RESHAPE target shape ``PACK(batch of x, constants...)`` by the constant
    ``[-1, constants...]``; drop the shape ops left unused. Returns how many were replaced."""
    replaced = 0
    for sg in model.subgraphs:
        producer = {o: op for op in sg.operators for o in op.outputs}
        for op in sg.operators:
            if _code(model, op) != _OP.RESHAPE or len(op.inputs) != 2:
                continue
            pack = producer.get(op.inputs[1])
            if pack is None or _code(model, pack) != _OP.PACK or pack.builtinOptions is None or \
                    pack.builtinOptions.axis != 0:
                continue
            dims = []
            for i in pack.inputs:
                const = _const_ints(model, sg, i)
                if const is not None and len(const) == 1:
                    dims.append(const[0])
                elif _is_batch_of(model, sg, producer, i, op.inputs[0]):
                    dims.append(-1)
                else:
                    break
            if len(dims) != len(pack.inputs) or dims.count(-1) != 1:
                continue
            t = schema.TensorT()
            t.name = sg.tensors[op.inputs[1]].name
            t.shape, t.type = [len(dims)], schema.TensorType.INT32
            t.buffer = flatbuffer.add_buffer(model, np.asarray(dims, np.int32))
            sg.tensors.append(t)
            op.inputs = [op.inputs[0], len(sg.tensors) - 1]
            replaced += 1
        _drop_unused_shape_ops(model, sg)
    return replaced


def _drop_unused_shape_ops(model: schema.ModelT, sg: schema.SubGraphT) -> None:
    while True:
        read = {i for op in sg.operators for i in op.inputs} | set(sg.outputs)
        dead = [op for op in sg.operators
                if _code(model, op) in _SHAPE_OPS and not read.intersection(op.outputs)]
        if not dead:
            return
        sg.operators = [op for op in sg.operators if op not in dead]
