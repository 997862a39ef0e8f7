"""Give RESHAPEs whose target shape the converter computes at run time a constant shape, and
take the run-time RESHAPEs around a rank-3 Dense out.

A Keras Flatten (or Reshape) with a dynamic batch converts to SHAPE -> STRIDED_SLICE -> PACK ->
RESHAPE: the target shape ``[batch, n]`` is computed by ops, so LiteRT marks the RESHAPE output
and everything after it as dynamic tensors, which it allocates with ``malloc`` at run time.
Those are not 64-byte aligned, and LiteRT refuses to hand an unaligned buffer to a custom op
(tflite_export/RUNTIME.md, "Alignment"): the custom op after a Flatten failed on most batch
sizes, depending on where malloc put the tensor. ``RESHAPE(x, [-1, n])`` with a constant shape
means the same, is planned statically in LiteRT's 64-byte aligned arena, and skips three ops.

A Keras Dense on ``[batch, seq, d]`` converts (TF 2.21, Keras' ``tensordot``) to RESHAPE(x,
``[prod(batch dims), d]`` computed by SHAPE -> GATHER -> REDUCE_PROD -> PACK) -> FULLY_CONNECTED
-> RESHAPE back (shape by GATHER -> CONCATENATION), then the bias as an ADD. The first RESHAPE's
output is dynamic (``[-1, -1]``), so the FC cannot be seen as ``in``-wide, LiteRT mallocs the
tensors, and XNNPACK does not take the node. ``FULLY_CONNECTED(x)`` with ``keep_num_dims`` is
the same product on the rank-3 tensor (what the converter emits for EinsumDense ``abc,cd->abd``);
:func:`unwrap_tensordot` rewrites to it and folds the bias ADD (with its fused activation) into
the FC. In int8 the folded FC is what the converter writes for a 2-D Dense: an int32 bias of scale
input scale * weight scale (the ADD's int8 bias, dequantized and rounded to it) and the ADD's
output quantization; one requantization instead of two (the FC's, then the ADD's), so results
may differ from the converter's graph by one step where its double rounding differed.
"""
from __future__ import annotations

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

from tflite_export import flatbuffer

__all__ = ["freeze_batch_reshapes", "unwrap_tensordot"]

_OP = schema.BuiltinOperator
# Ops the shape computation consists of: dropped once nothing reads their outputs.
_SHAPE_OPS = (_OP.SHAPE, _OP.STRIDED_SLICE, _OP.PACK, _OP.GATHER, _OP.REDUCE_PROD, _OP.CONCATENATION)


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


def _dims(shape) -> list[int]:
    return [] if shape is None else [int(d) for d in shape]


def _same_quantization(a: schema.TensorT, b: schema.TensorT) -> bool:
    def params(t):
        q = t.quantization
        if q is None or q.scale is None:
            return None
        return [float(v) for v in q.scale], [int(v) for v in (q.zeroPoint if q.zeroPoint is not None else [])]
    return a.type == b.type and params(a) == params(b)


def unwrap_tensordot(model: schema.ModelT) -> int:
    """Rewrite each RESHAPE -> FULLY_CONNECTED -> RESHAPE that applies an FC to the last axis of
    a rank >= 3 tensor into one FULLY_CONNECTED with ``keep_num_dims`` (module docstring); fold
    a float32 bias ADD that follows. Returns how many FCs were unwrapped."""
    unwrapped = 0
    for sg in model.subgraphs:
        unwrapped += _unwrap_subgraph(model, sg)
        _drop_unused_shape_ops(model, sg)
    return unwrapped


def _unwrap_subgraph(model: schema.ModelT, sg: schema.SubGraphT) -> int:
    def readers():
        out: dict[int, list] = {}
        for op in sg.operators:
            for i in op.inputs if op.inputs is not None else []:
                out.setdefault(int(i), []).append(op)
        return out

    outputs = {int(t) for t in (sg.outputs if sg.outputs is not None else [])}
    producer = {int(o): op for op in sg.operators for o in op.outputs}
    read = readers()
    dropped, count = [], 0
    for fc in sg.operators:
        if _code(model, fc) != _OP.FULLY_CONNECTED or fc.builtinOptions is None or \
                fc.builtinOptions.keepNumDims or len(fc.outputs) != 1:
            continue
        a, t = int(fc.inputs[0]), int(fc.outputs[0])
        r1 = producer.get(a)
        r2 = read.get(t, [None])[0]
        if r1 is None or r2 is None or _code(model, r1) != _OP.RESHAPE or \
                _code(model, r2) != _OP.RESHAPE or len(read.get(t)) != 1 or \
                len(read.get(a, [])) != 1 or {a, t} & outputs or int(r2.inputs[0]) != t:
            continue
        x, y = int(r1.inputs[0]), int(r2.outputs[0])
        w = sg.tensors[int(fc.inputs[1])]
        if len(_dims(w.shape)) != 2:
            continue
        out_f, in_f = _dims(w.shape)
        xt, yt = sg.tensors[x], sg.tensors[y]
        xs, ys = _dims(xt.shape), _dims(yt.shape)
        xsig = _dims(xt.shapeSignature) or xs
        ysig = _dims(yt.shapeSignature) or ys
        if len(xs) < 3 or xs[-1] != in_f or xsig[-1] != in_f or ys != xs[:-1] + [out_f] or \
                ysig != xsig[:-1] + [out_f]:
            continue
        if not (_same_quantization(xt, sg.tensors[a]) and _same_quantization(sg.tensors[t], yt)):
            continue
        fc.inputs = [x] + [int(i) for i in fc.inputs[1:]]
        fc.outputs = [y]
        fc.builtinOptions.keepNumDims = True
        dropped += [r1, r2]
        count += 1
        add = _foldable_bias_add(model, sg, fc, read.get(y, []), outputs)
        if add is not None:
            bias = [i for i in add.inputs if int(i) != y][0]
            if sg.tensors[y].type == schema.TensorType.INT8:
                bias = _int32_bias(model, sg, fc, sg.tensors[int(bias)])
            fc.inputs = [x, int(fc.inputs[1]), int(bias)]
            fc.builtinOptions.fusedActivationFunction = add.builtinOptions.fusedActivationFunction
            fc.outputs = [int(add.outputs[0])]
            dropped.append(add)
    sg.operators = [op for op in sg.operators if not any(op is d for d in dropped)]
    return count


def _int32_bias(model, sg, fc, b: schema.TensorT) -> int:
    """A new int32 bias tensor for the int8 ``fc`` holding the int8 bias ``b`` (per-tensor
    quantized) at scale input scale * weight scale[r], as the converter writes FC biases;
    returns its index."""
    qx = sg.tensors[int(fc.inputs[0])].quantization
    qw = sg.tensors[int(fc.inputs[1])].quantization
    qb = b.quantization
    values = (flatbuffer.tensor_data(model, b, np.int8).astype(np.float64) - int(qb.zeroPoint[0])) \
        * float(np.float32(qb.scale[0]))
    scale = (np.float32(qx.scale[0]) * np.asarray(qw.scale, np.float32)).astype(np.float32)
    scale = np.broadcast_to(scale, values.shape)
    q = np.clip(np.rint(values / scale.astype(np.float64)), -(2 ** 31), 2 ** 31 - 1).astype(np.int32)
    t = schema.TensorT()
    t.name = f"{flatbuffer.text(b.name)}/folded_int32"
    t.shape, t.type = [len(q)], schema.TensorType.INT32
    t.buffer = flatbuffer.add_buffer(model, q)
    t.quantization = schema.QuantizationParametersT()
    t.quantization.scale = [float(s) for s in scale]
    t.quantization.zeroPoint = [0] * len(q)
    t.quantization.quantizedDimension = 0
    sg.tensors.append(t)
    return len(sg.tensors) - 1


def _foldable_bias_add(model, sg, fc, y_readers, outputs):
    """The ADD(y, bias[out]) after ``fc`` that may become its bias (float32, or int8 with
    per-tensor quantization and symmetric weights), or None."""
    if len(y_readers) != 1 or int(fc.outputs[0]) in outputs:
        return None
    add = y_readers[0]
    y = int(fc.outputs[0])
    if _code(model, add) != _OP.ADD or len(add.inputs) != 2 or add.builtinOptions is None:
        return None
    if len(fc.inputs) > 2 and int(fc.inputs[2]) >= 0:
        return None  # the FC has a bias already
    if fc.builtinOptions.fusedActivationFunction != schema.ActivationFunctionType.NONE:
        return None
    others = [int(i) for i in add.inputs if int(i) != y]
    if len(others) != 1:
        return None
    b = sg.tensors[others[0]]
    out_f = _dims(sg.tensors[int(fc.inputs[1])].shape)[0]
    dtype = {schema.TensorType.FLOAT32: np.float32, schema.TensorType.INT8: np.int8}.get(sg.tensors[y].type)
    if dtype is None or b.type != sg.tensors[y].type or _dims(b.shape) != [out_f] or \
            flatbuffer.tensor_data(model, b, dtype) is None:
        return None
    if dtype is np.int8 and not _int8_foldable(sg, fc, b, sg.tensors[int(add.outputs[0])]):
        return None
    if _dims(sg.tensors[int(add.outputs[0])].shape) != _dims(sg.tensors[y].shape):
        return None
    return add


def _int8_foldable(sg, fc, b, z) -> bool:
    """int8: per-tensor input, bias and output quantization, symmetric weights (per tensor or per
    output channel): what an int8 FC with an int32 bias can express."""
    def per_tensor(t):
        q = t.quantization
        return q is not None and q.scale is not None and len(q.scale) == 1 and \
            q.zeroPoint is not None and len(q.zeroPoint) == 1
    qw = sg.tensors[int(fc.inputs[1])].quantization
    out_f = _dims(sg.tensors[int(fc.inputs[1])].shape)[0]
    return (all(per_tensor(t) for t in (sg.tensors[int(fc.inputs[0])], b, z)) and qw is not None
            and qw.scale is not None and len(qw.scale) in (1, out_f)
            and (qw.zeroPoint is None or not np.any(np.asarray(qw.zeroPoint) != 0)))
