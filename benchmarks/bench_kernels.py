"""Group-sparse FC kernel benchmark: one table, batch 1, one thread.

Per layer (1024x1024, LeNet's 784x300 and 300x100) and group sparsity (50/75/90/95 %), float32
and int8, microseconds per inference of:
  dense    - the converted dense Keras Dense on LiteRT's CPU path (XNNPACK), our runtime
  builtin  - TFLite's own block-sparse FC (converter EXPERIMENTAL_SPARSITY; Keras blocks (4, 1)
             float32 / (16, 1) int8), same runtime
  gN rt    - TFS_GROUP_SPARSE_FC with group width N through the runtime (a one-node model)
  gN k     - the same kernel called directly (no runtime), timed in C
  node     - what the custom node costs LiteRT beyond its kernel: the time of a model running
             the node twice (the copy writes an internal tensor) minus the one-node model's time
             minus the kernel's; rt - k also holds LiteRT's fixed cost per run, which dense pays
             too (benchmarks/bench_node_overhead.py gives the same cost as a slope over N nodes)
Speedups are dense / x. Every time is the best of several C-timed loops. The header names the
CPU, its ISA features and the kernel path; each row names the C kernel (from the manifest,
tflite_export/kernels/tfs_kernels.inc) that ran for each g. The converter's and LiteRT's log
lines are filtered out of the table (tflite_export/quiet.py); anything else they print comes
after it.

    python benchmarks/bench_kernels.py [--quick] [--impl NAME]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import numpy as np  # noqa: E402

LAYERS = [(1024, 1024), (784, 300), (300, 100)]
SPARSITIES = [0.5, 0.75, 0.9, 0.95]


def _noise(line: bytes) -> bool:
    """Converter / LiteRT chatter, and TensorFlow's start-up lines (absl's banner, the CUDA
    probe on a machine without a GPU, the sparse-model load warning)."""
    from tflite_export.quiet import converter_noise, litert_noise

    return (converter_noise(line) or litert_noise(line)
            or line.startswith(b"WARNING: All log messages before absl::InitializeLog()")
            or (line[:1] == b"E" and b"cuInit" in line)
            or b"Sparsity tensors may not yet be fully supported" in line)


@contextlib.contextmanager
def _quiet():
    """Everything in the block with its log lines filtered (fd 2) and Python warnings off; what
    is not noise is written back after the block, so rows never interleave with logs."""
    from tflite_export.quiet import filtered_stderr

    with filtered_stderr(_noise), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _best_runtime_time(rt, x, target_s=0.15, reps=7):
    rt.run(x)
    t = rt.time_run(20)
    iters = max(20, int(target_s / reps / max(t, 1e-7)))
    return min(rt.time_run(iters) for _ in range(reps))


def _best_kernel_time(layer, x, target_s=0.15, reps=7):
    from tflite_export import kernels

    impl = kernels.get_runtime_impl()  # the path the runtime rows use
    t = layer.time(x, 20, impl)
    iters = max(20, int(target_s / reps / max(t, 1e-7)))
    return min(layer.time(x, iters, impl) for _ in range(reps))


def _doubled(model_bytes):
    """The one-node model with its custom node run twice: the copy reads the same activations
    and blob and writes a new internal tensor (LiteRT runs every node of the plan)."""
    from tensorflow.lite.python import schema_py_generated as schema

    from tflite_export import flatbuffer

    model = flatbuffer.load(model_bytes)
    sg = model.subgraphs[0]
    (op,) = sg.operators
    y = sg.tensors[int(op.outputs[0])]
    t = schema.TensorT()
    t.name, t.shape, t.type, t.quantization = b"y_copy", list(y.shape), y.type, y.quantization
    t.buffer = 0
    sg.tensors.append(t)
    copy = schema.OperatorT()
    copy.opcodeIndex, copy.inputs = op.opcodeIndex, op.inputs
    copy.outputs = [len(sg.tensors) - 1]
    sg.operators = [op, copy]
    return flatbuffer.save(model)


def _weights(rng, in_f, out_f, g, sparsity):
    """Keras-style group pruning: exactly round(sparsity * groups) groups of g zeroed, per layer."""
    import custom_op_testlib as tl

    return tl.random_group_sparse(rng, out_f, in_f, g, 1.0 - sparsity)


def _convert(w, bias, int8, sparse_builtin=False):
    with _quiet():  # Keras' first model also probes for accelerators on fd 2
        return _convert_quietly(w, bias, int8, sparse_builtin)


def _convert_quietly(w, bias, int8, sparse_builtin):
    import keras
    import tensorflow as tf

    out_f, in_f = w.shape
    m = keras.Sequential([keras.Input((in_f,)), keras.layers.Dense(out_f)])
    m.layers[0].kernel.assign(w.T)
    m.layers[0].bias.assign(bias)
    c = tf.lite.TFLiteConverter.from_keras_model(m)
    opts = []
    if int8:
        rng = np.random.default_rng(0)
        opts.append(tf.lite.Optimize.DEFAULT)
        c.representative_dataset = lambda: (
            [rng.normal(size=(1, in_f)).astype(np.float32)] for _ in range(20))
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        c.inference_input_type = c.inference_output_type = tf.int8
    if sparse_builtin:
        opts.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    c.optimizations = opts
    # The export archive prints its endpoints on stdout.
    with contextlib.redirect_stdout(io.StringIO()):
        return c.convert()


def _custom_model(data_int8, w, bias, g):
    """A custom-op model for float weights w, or for the int8 FC inside data_int8 (same quant)."""
    import custom_op_testlib as tl
    from tflite_export import flatbuffer
    from tensorflow.lite.python import schema_py_generated as schema

    if data_int8 is None:
        arrays = tl.layer_arrays(w, bias, g)
        return tl.custom_op_model(arrays), arrays
    m = flatbuffer.load(data_int8)
    sg = m.subgraphs[0]
    (op,) = [o for o in sg.operators
             if m.operatorCodes[o.opcodeIndex].builtinCode == schema.BuiltinOperator.FULLY_CONNECTED]
    t = sg.tensors
    wq = flatbuffer.tensor_data(m, t[op.inputs[1]], np.int8)
    bq = flatbuffer.tensor_data(m, t[op.inputs[2]], np.int32)
    qx, qw, qy = (t[i].quantization for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    out_f = wq.shape[0]
    scale = (np.float32(qx.scale[0]) * np.asarray(qw.scale, np.float32)) / np.float32(qy.scale[0])
    p = dict(in_zp=int(qx.zeroPoint[0]), out_zp=int(qy.zeroPoint[0]), act_min=-128, act_max=127,
             multiplier=np.full(out_f, 1 << 30), shift=np.zeros(out_f), scale=scale)
    arrays = tl.layer_arrays(wq, bq, g, int8=p)
    return tl.custom_op_model(arrays, tl._quant(qx.scale[0], p["in_zp"]),
                              tl._quant(qy.scale[0], p["out_zp"])), arrays


def bench(layers, sparsities, gs_f32=(4, 8), gs_i8=(4, 16)):
    from tflite_export import kernels, runtime

    rows = []
    for in_f, out_f in layers:
        for sp in sparsities:
            for dtype in ("float32", "int8"):
                int8 = dtype == "int8"
                rng = np.random.default_rng(in_f * 100 + int(sp * 100))
                block = 16 if int8 else 4
                bias = rng.normal(size=out_f).astype(np.float32) * 0.1
                x = (rng.integers(-128, 128, (1, in_f)).astype(np.int8) if int8
                     else rng.normal(size=(1, in_f)).astype(np.float32))
                res = {"layer": f"{in_f}x{out_f}", "sparsity": sp, "dtype": dtype}
                wb = _weights(rng, in_f, out_f, block, sp)
                dense_data = _convert(wb, bias, int8)
                with _quiet(), runtime.load(dense_data) as rt:
                    res["dense"] = _best_runtime_time(rt, x)
                with _quiet(), runtime.load(_convert(wb, bias, int8, sparse_builtin=True)) as rt:
                    res["builtin"] = _best_runtime_time(rt, x)
                for g in (gs_i8 if int8 else gs_f32):
                    w = wb if g == block else _weights(rng, in_f, out_f, g, sp)
                    data_i8 = (dense_data if g == block else _convert(w, bias, True)) if int8 else None
                    model, arrays = _custom_model(data_i8, w, bias, g)
                    layer = kernels.GroupSparseFC(*arrays.values())
                    with _quiet(), runtime.load(model) as rt, runtime.load(_doubled(model)) as rt2:
                        # Interleaved, so that the difference sees the same machine load.
                        times = [(_best_runtime_time(rt, x, reps=3), _best_runtime_time(rt2, x, reps=3),
                                  _best_kernel_time(layer, x, reps=3)) for _ in range(3)]
                    res[f"g{g} rt"], twice, res[f"g{g} k"] = (min(t[i] for t in times) for i in range(3))
                    res[f"g{g} node"] = twice - res[f"g{g} rt"] - res[f"g{g} k"]
                    res[f"g{g} kernel"] = layer.kernel(kernels.get_runtime_impl())
                rows.append(res)
                print(_fmt_row(res), flush=True)
    return rows


def _fmt_row(r):
    d = r["dense"]
    parts = [f"{r['layer']:>9} {int(r['sparsity'] * 100):>3}% {r['dtype']:>7} | dense {d * 1e6:7.2f}"
             f" | builtin {r['builtin'] * 1e6:7.2f} ({d / r['builtin']:5.2f}x)"]
    for k in r:
        if k.startswith("g") and k.endswith(" rt"):
            g = k.split()[0]
            parts.append(f"{g} rt {r[k] * 1e6:6.2f} ({d / r[k]:5.2f}x) k {r[g + ' k'] * 1e6:6.2f}"
                         f" ({d / r[g + ' k']:5.2f}x) rt-k {(r[k] - r[g + ' k']) * 1e6:5.2f}"
                         f" node {r[g + ' node'] * 1e6:5.2f} [{r[g + ' kernel'].replace('tfs_gsfc_', '')}]")
    return " | ".join(parts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only 1024x1024 at 90 and 95 %%")
    ap.add_argument("--impl", default="auto",
                    help="kernel path for the custom op (a name of kernels.available_impls(); "
                         "default: auto, the best this CPU has)")
    args = ap.parse_args(argv)
    with _quiet():  # TensorFlow's start-up lines
        import tensorflow  # noqa: F401
    from tflite_export import host_info, kernels

    kernels.set_runtime_impl(args.impl)
    path = kernels.best_impl() if args.impl == "auto" else args.impl
    print(host_info.describe(f"{path} (available: {', '.join(kernels.available_impls())})"))
    print("times in microseconds, batch 1, 1 thread; speedup = dense / time; [kernel] = the C "
          "kernel that ran", flush=True)
    layers, sps = (LAYERS[:1], [0.9, 0.95]) if args.quick else (LAYERS, SPARSITIES)
    bench(layers, sps)


if __name__ == "__main__":
    main()
