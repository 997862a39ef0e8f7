"""N:M check of a deployed model: ``.tflite`` files (and Keras models, through the training side).

    from tflite_export import check_nm
    print(check_nm("model.tflite"))          # or .keras, .tflite bytes, a Keras model

    python -m tflite_export.check FILE [--n 2 --m 4]

Every ``FULLY_CONNECTED`` / ``CONV_2D`` weight is checked along its last axis (the input
dimension); every custom-op node of a format in the registry (``tflite_export.formats``: the
group-sparse and the 2:4 op alike) is first validated completely by its format's validator (status ``"invalid"`` with the validator's message otherwise), then its
decoded weights are checked. The per-layer rule and report are tfscalpel's
(:func:`tfscalpel.nm.check_nm_weights`, :class:`tfscalpel.nm.NMCheckReport`).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

from tflite_export import flatbuffer, formats
from tflite_export.fc_layers import builtin_code
from tflite_export.kernels import KernelFormatError
from tfscalpel import nm

_KINDS = {schema.BuiltinOperator.FULLY_CONNECTED: "FULLY_CONNECTED",
          schema.BuiltinOperator.CONV_2D: "CONV_2D"}
_NP_TYPES = {schema.TensorType.FLOAT32: np.float32, schema.TensorType.INT8: np.int8,
             schema.TensorType.FLOAT16: np.float16}


def _check_tflite(model_bytes: bytes, n: int, m: int) -> list:
    model = flatbuffer.load(model_bytes)
    checks = []
    for sg in model.subgraphs:
        for op in sg.operators:
            code = builtin_code(model.operatorCodes[op.opcodeIndex])
            fmt = formats.by_op_name(flatbuffer.custom_code(model, op))
            if code == schema.BuiltinOperator.CUSTOM and fmt is not None:
                checks.append(_check_custom_node(fmt, model, sg, op, n, m))
                continue
            if code not in _KINDS:
                continue
            wt = sg.tensors[int(op.inputs[1])]
            name = wt.name.decode() if isinstance(wt.name, bytes) else str(wt.name)
            dtype = _NP_TYPES.get(wt.type)
            data = None if dtype is None or wt.sparsity is not None else flatbuffer.tensor_data(
                model, wt, dtype)
            if data is None:
                checks.append(nm.NMLayerCheck(name, _KINDS[code], tuple(int(d) for d in wt.shape),
                                              "skipped", reason="weights not a plain constant"))
                continue
            checks.append(nm.check_nm_weights(data, n, m, name, _KINDS[code]))
    return checks


def _check_custom_node(fmt, model, sg, op, n: int, m: int):
    """A node of a registered custom-op format: the format's validator checks every field, then
    its decoded weights are checked for ``n:m``."""
    try:
        name, w = fmt.check_node(model, sg, op)
    except KernelFormatError as e:
        return nm.NMLayerCheck(fmt.node_name(sg, op), fmt.op_name, (), "invalid", reason=str(e))
    return nm.check_nm_weights(w, n, m, name, fmt.op_name)


def check_nm(model_or_path, n: int = 2, m: int = 4) -> nm.NMCheckReport:
    """Check N:M sparsity along the input dimension of a ``.tflite`` (path or bytes), a
    ``.keras`` path or a Keras model; returns :class:`tfscalpel.nm.NMCheckReport`."""
    n, m = nm.check_n_m(n, m)
    if isinstance(model_or_path, (bytes, bytearray)):
        return nm.NMCheckReport("<tflite bytes>", n, m, tuple(_check_tflite(bytes(model_or_path), n, m)))
    if isinstance(model_or_path, (str, os.PathLike)) and not os.fspath(model_or_path).endswith(".keras"):
        path = os.fspath(model_or_path)
        with open(path, "rb") as f:
            data = f.read()
        return nm.NMCheckReport(path, n, m, tuple(_check_tflite(data, n, m)))
    return nm.check_nm(model_or_path, n, m)


def main(argv=None) -> int:
    """``python -m tflite_export.check FILE [--n 2 --m 4]``: exit 0 if every eligible layer is
    N:M, 1 if some layer is not, 2 if the file cannot be read."""
    parser = argparse.ArgumentParser(prog="python -m tflite_export.check",
                                     description="Check N:M (2:4) sparsity of a .tflite or .keras model.")
    parser.add_argument("file", help="a .tflite or .keras file")
    parser.add_argument("--n", type=int, default=2)
    parser.add_argument("--m", type=int, default=4)
    args = parser.parse_args(argv)
    try:
        report = check_nm(args.file, args.n, args.m)
    except (OSError, ValueError) as e:
        print(f"check_nm: cannot check {args.file}: {e}", file=sys.stderr)
        return 2
    print(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
