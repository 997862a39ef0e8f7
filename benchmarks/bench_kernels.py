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

With `--seq N` (a Transformer's rows: batch * sequence length = N) it times the layers of a
d = 256 FFN (256x1024, 1024x256) and a 1024x1024 layer at 90 % on N rows instead: dense XNNPACK,
the custom op through the runtime and its kernel (the SpMM kernel from the manifest's GSMM lines
when N reaches kernels.batched_min_rows()), and "1-row": the one-row kernel run on the N rows
8 at a time (what ran before the SpMM kernels).

With `--conv` it times a LeNet-5-like model (Conv2D 20 5x5 -> pool -> Conv2D 50 5x5 -> pool ->
Dense 500 -> Dense 10 on 28x28x1) whose conv filters are group-pruned at 90 % (g per target:
the x86-avx512 target's when the kernel path is an AVX-512 one, else x86-avx2's), float32 and int8, batch 1,
interleaved in one process: each conv alone (a one-op model: dense XNNPACK vs
TFS_GROUP_SPARSE_CONV2D through the runtime, and its kernel alone), the whole model dense vs
both convs sparse, and the model `export(target="host")` makes (which convs it kept sparse; the
unpruned FCs pinned dense). float32 convs run the host adapter's direct (im2col-free) path;
"k im2col" times the same layer on the im2col path. `--conv-layers` times LeNet-5's conv1 and
the ConvNet's conv2 alone at 90 and 95 % the same way.

    python benchmarks/bench_kernels.py [--quick] [--impl NAME] [--seq N] [--conv] [--conv-layers]
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
SEQ_LAYERS = [(256, 1024), (1024, 256), (1024, 1024)]  # a d = 256 FFN, and the 1024x1024 layer
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


def _interleaved_best(timers, loop_s=3e-4, rounds=150):
    """Best seconds per call of each of ``timers`` (name -> fn(iterations) -> seconds per call),
    over many short loops (~loop_s each) interleaved round by round: on a shared machine a short
    loop often runs undisturbed, and a busy spell slows every candidate alike."""
    iters = {k: max(1, int(loop_s / max(fn(3), 1e-7))) for k, fn in timers.items()}
    best = {k: float("inf") for k in timers}
    for _ in range(rounds):
        for k, fn in timers.items():
            best[k] = min(best[k], fn(iters[k]))
    return best


def bench_seq(rows_n, layers=SEQ_LAYERS, sparsity=0.9, gs_f32=(4, 8), gs_i8=(4, 16)):
    """Each layer on `rows_n` rows (batch * sequence length): dense vs the custom op, timed
    interleaved (_interleaved_best)."""
    from tflite_export import kernels, runtime

    out = []
    impl = kernels.get_runtime_impl()
    for in_f, out_f in layers:
        for dtype in ("float32", "int8"):
            int8 = dtype == "int8"
            rng = np.random.default_rng(in_f * 100 + out_f)
            bias = rng.normal(size=out_f).astype(np.float32) * 0.1
            x = (rng.integers(-128, 128, (rows_n, in_f)).astype(np.int8) if int8
                 else rng.normal(size=(rows_n, in_f)).astype(np.float32))
            res = {"layer": f"{in_f}x{out_f}", "dtype": dtype}
            for g in (gs_i8 if int8 else gs_f32):
                w = _weights(rng, in_f, out_f, g, sparsity)
                dense_data = _convert(w, bias, int8)
                model, arrays = _custom_model(dense_data if int8 else None, w, bias, g)
                layer = kernels.GroupSparseFC(*arrays.values())
                with _quiet(), runtime.load(dense_data) as rd, runtime.load(model) as rs:
                    rd.run(x), rs.run(x)
                    best = _interleaved_best({
                        "dense": rd.time_run, "rt": rs.time_run,
                        "k": lambda n: layer.time(x, n, impl),
                        "1row": lambda n: layer.time(x[:8], n, impl) * rows_n / 8})
                res[f"g{g} dense"] = best["dense"]
                for k in ("rt", "k", "1row"):
                    res[f"g{g} {k}"] = best[k]
                res[f"g{g} kernel"] = layer.kernel(impl, rows_n)
            out.append(res)
            print(_fmt_seq_row(res), flush=True)
    return out


def bench_ffn(seq, d=256, hidden=1024, sparsity=0.9, g=4):
    """A Transformer FFN as Keras builds it (Dense(hidden, relu) -> Dense(d) on [1, seq, d]),
    exported by tflite_export twice from the same weights: every layer dense (XNNPACK) and
    every layer the custom op; both run through the runtime on [1, seq, d]."""
    import keras
    from tflite_export import exporter, runtime

    out = []
    rng = np.random.default_rng(7)
    keras.utils.set_random_seed(7)
    inp = keras.Input((seq, d))
    h = keras.layers.Dense(hidden, activation="relu", name="ff1")(inp)
    model = keras.Model(inp, keras.layers.Dense(d, name="ff2")(h))
    for layer in model.layers[1:]:
        w = _weights(rng, *layer.kernel.shape, g, sparsity).T  # [out, in] -> Keras (in, out)
        layer.kernel.assign(w.reshape(layer.kernel.shape))
        layer.bias.assign(rng.normal(size=layer.bias.shape).astype(np.float32) * 0.1)
    calib = rng.normal(size=(8, seq, d)).astype(np.float32)
    for dtype in ("float32", "int8"):
        quant = dict(quantize="int8", representative_data=calib) if dtype == "int8" else {}
        data = {}
        for fmt in ("dense", "custom"):
            with _quiet():
                data[fmt] = exporter.export(
                    model, target="x86-avx512", formats={"ff1": fmt, "ff2": fmt},
                    group_sizes=None if fmt == "dense" else {"ff1": g, "ff2": g}, **quant).model_bytes
        x = rng.normal(size=(1, seq, d)).astype(np.float32)
        with _quiet(), runtime.load(data["dense"]) as rd, runtime.load(data["custom"]) as rs:
            rd.run(x), rs.run(x)
            times = _interleaved_best({"dense": rd.time_run, "custom": rs.time_run})
        row = {"layer": f"FFN {d}-{hidden}-{d}", "dtype": dtype, **times}
        out.append(row)
        print(f"{row['layer']:>17} {dtype:>7} | dense {times['dense'] * 1e6:8.1f} | g{g} model "
              f"{times['custom'] * 1e6:8.1f} ({times['dense'] / times['custom']:5.2f}x)", flush=True)
    return out


def lenet5_like(g, sparsity=0.9, seed=0):
    """The --conv model: Caffe's LeNet-5 shape, each conv's filters with groups of g along
    kh*kw*cin (GroupPrunedConv2D's order) zeroed, exactly round(sparsity * groups) per conv."""
    import keras

    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(20, 5, activation="relu", name="conv1"), keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(50, 5, activation="relu", name="conv2"), keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(), keras.layers.Dense(500, activation="relu", name="fc1"),
        keras.layers.Dense(10, name="fc2")])
    for name in ("conv1", "conv2"):
        layer = model.get_layer(name)
        k, b = layer.get_weights()
        w = _weights(rng, int(np.prod(k.shape[:3])), k.shape[-1], g, sparsity)  # [cout, K]
        layer.set_weights([w.T.reshape(k.shape), b])
    return model, rng


def _conv_alone_row(what, dense, conv, g, dtype, impl):
    """One conv alone, interleaved: dense XNNPACK, the conv op through the runtime (the host
    adapter's path: float32 direct), its kernel alone on that path (k) and, float32, on the
    im2col path (k im2col: im2col + the FC core's SpMM kernel on 32-position tiles)."""
    from tflite_export import flatbuffer, host, kernels, runtime
    from tflite_export.conv_layers import find_conv2d
    from tflite_export.formats import group_sparse_conv

    conv_fmt = group_sparse_conv.FORMAT
    alone = flatbuffer.save(host.layer_model(dense, conv))
    sparse = host.with_layer_rewritten(alone, find_conv2d, 0, conv_fmt, g)
    arrays = [conv_fmt.arrays(flatbuffer.load(dense), conv, g)[n] for n in conv_fmt.sections]
    layer = kernels.GroupSparseConv2D(*arrays, tile="host")
    timers = {"k": lambda n: layer.time(xa, n, impl)}
    if layer.direct:
        im2col = kernels.GroupSparseConv2D(*arrays, tile="host", direct=False)
        timers["k im2col"] = lambda n: im2col.time(xa, n, impl)
    xa = host.model_input(alone) + (1 if dtype == "int8" else 0.5)
    with _quiet(), runtime.load(alone) as rd, runtime.load(sparse) as rs:
        rd.run(xa), rs.run(xa)
        best = _interleaved_best({"dense": rd.time_run, "rt": rs.time_run, **timers})
    row = {"what": what, "dtype": dtype, "g": g, **best,
           "kernel": layer.kernel(impl),
           "shape": f"K={conv.in_features} cout={conv.out_features} pos={conv.positions}"}
    extra = (f" | k im2col {best['k im2col'] * 1e6:7.1f} ({best['dense'] / best['k im2col']:5.2f}x)"
             if "k im2col" in best else "")
    print(f"{row['what']:>14} {dtype:>7} g={g:<2} {row['shape']:>25} | dense "
          f"{best['dense'] * 1e6:7.1f} | rt {best['rt'] * 1e6:7.1f} "
          f"({best['dense'] / best['rt']:5.2f}x) | k {best['k'] * 1e6:7.1f} "
          f"({best['dense'] / best['k']:5.2f}x){extra} [{row['kernel'].replace('tfs_', '')}]",
          flush=True)
    return row


def bench_conv_layers(sparsities=(0.9, 0.95)):
    """--conv-layers: LeNet-5's conv1 and the ConvNet's conv2 (tfscalpel.models) alone, float32,
    group-pruned at each sparsity (random weights, exactly round(sparsity * groups) groups
    zeroed): dense vs the direct path vs the im2col path, interleaved (_conv_alone_row)."""
    import keras

    from tflite_export import converter, flatbuffer, kernels
    from tflite_export.conv_layers import find_conv2d
    from tfscalpel import models, targets

    impl = kernels.get_runtime_impl()
    path = kernels.best_impl() if impl == "auto" else impl
    g = targets.get_target("x86-avx512" if path.startswith("avx512") else "x86-avx2").group_size(
        "float32")
    out = []
    for model_name, layer_name in (("lenet5", "conv1"), ("convnet", "conv2")):
        for sparsity in sparsities:
            rng = np.random.default_rng(0)
            keras.utils.set_random_seed(0)
            model = getattr(models, model_name)()
            layer = model.get_layer(layer_name)
            k, b = layer.get_weights()
            w = _weights(rng, int(np.prod(k.shape[:3])), k.shape[-1], g, sparsity)  # [cout, K]
            layer.set_weights([w.T.reshape(k.shape), b])
            with _quiet():
                dense = converter.convert_keras(model)
            convs = find_conv2d(flatbuffer.load(dense))
            conv = next(c for c in convs if layer_name in c.name)
            out.append(_conv_alone_row(f"{model_name} {layer_name} {sparsity:.0%}", dense, conv, g,
                                       "float32", impl))
    return out


def bench_conv(sparsity=0.9):
    """The --conv table (module docstring)."""
    import tempfile

    from tflite_export import converter, exporter, flatbuffer, host, kernels, runtime
    from tflite_export.conv_layers import find_conv2d
    from tflite_export.formats import group_sparse_conv
    from tfscalpel import targets

    conv_fmt = group_sparse_conv.FORMAT
    impl = kernels.get_runtime_impl()
    path = kernels.best_impl() if impl == "auto" else impl
    target = targets.get_target("x86-avx512" if path.startswith("avx512") else "x86-avx2")
    out = []
    for dtype in ("float32", "int8"):
        g = target.group_size(dtype)
        model, rng = lenet5_like(g, sparsity)
        calib = rng.random((32, 28, 28, 1), dtype=np.float32)
        with _quiet():
            dense = converter.convert_keras(model, "int8" if dtype == "int8" else None,
                                            calib if dtype == "int8" else None)
        convs = find_conv2d(flatbuffer.load(dense))
        x = rng.random((1, 28, 28, 1), dtype=np.float32)
        for conv, name in zip(convs, ("conv1", "conv2")):
            row = _conv_alone_row(f"{name} alone", dense, conv, g, dtype, impl)
            out.append(row)
        both = dense
        for _ in convs:  # a rewritten conv is no CONV_2D any more: the next one is first
            both = host.with_layer_rewritten(both, find_conv2d, 0, conv_fmt, g)
        with _quiet():
            # The FCs are unpruned: pinned dense, so the row shows the conv decisions alone.
            chosen = exporter.rewrite_tflite(
                dense, target=host.HostMeasurement(cache_dir=tempfile.mkdtemp()), keras_model=model,
                formats={"fc1": "dense", "fc2": "dense"})
        kept = {r.layer: (r.format, r.g, r.expected_speedup) for r in chosen.layers
                if r.layer.startswith("conv")}
        with _quiet(), runtime.load(dense) as rd, runtime.load(both) as rb, \
                runtime.load(chosen.model_bytes) as rh:
            rd.run(x), rb.run(x), rh.run(x)
            best = _interleaved_best({"dense": rd.time_run, "both": rb.time_run,
                                      "host": rh.time_run})
        row = {"what": "whole model", "dtype": dtype, "g": g, **best, "host_choice": kept}
        out.append(row)
        print(f"{'whole model':>14} {dtype:>7} g={g:<2} | dense {best['dense'] * 1e6:7.1f} | "
              f"both convs sparse {best['both'] * 1e6:7.1f} ({best['dense'] / best['both']:5.2f}x)"
              f" | host export {best['host'] * 1e6:7.1f} ({best['dense'] / best['host']:5.2f}x): "
              + ", ".join(f"{k} {f}{' g=' + str(w) if w else ''} (measured {s:.2f}x)"
                          for k, (f, w, s) in kept.items()), flush=True)
    return out


def _fmt_seq_row(r):
    parts = [f"{r['layer']:>9} {r['dtype']:>7}"]
    for k in r:
        if k.startswith("g") and k.endswith(" rt"):
            g = k.split()[0]
            d = r[g + " dense"]
            parts.append(f"{g}: dense {d * 1e6:7.1f} rt {r[k] * 1e6:7.1f} ({d / r[k]:5.2f}x) k "
                         f"{r[g + ' k'] * 1e6:7.1f} ({d / r[g + ' k']:5.2f}x) 1-row "
                         f"{r[g + ' 1row'] * 1e6:7.1f} ({d / r[g + ' 1row']:5.2f}x) "
                         f"[{r[g + ' kernel'].replace('tfs_', '')}]")
    return " | ".join(parts)


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
    ap.add_argument("--seq", type=int, default=0,
                    help="rows per run (batch * sequence length, e.g. 64): time the Transformer "
                         "layers at 90 %% on that many rows instead of the batch-1 table")
    ap.add_argument("--conv", action="store_true",
                    help="time the LeNet-5-like model's convs (90 %% group-sparse) and the whole "
                         "model instead of the batch-1 FC table")
    ap.add_argument("--conv-layers", action="store_true",
                    help="with --conv: LeNet-5's conv1 and the ConvNet's conv2 alone at 90 and "
                         "95 %%, float32: dense vs the direct and the im2col conv paths")
    args = ap.parse_args(argv)
    with _quiet():  # TensorFlow's start-up lines
        import tensorflow  # noqa: F401
    from tflite_export import host_info, kernels

    kernels.set_runtime_impl(args.impl)
    path = kernels.best_impl() if args.impl == "auto" else args.impl
    print(host_info.describe(f"{path} (available: {', '.join(kernels.available_impls())})"))
    if args.conv or args.conv_layers:
        import subprocess

        load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        print(f"load: {load}\ntimes in microseconds, batch 1, 1 thread, best of 150 short "
              f"interleaved loops; speedup = dense (XNNPACK) / time; rt: the conv op through the "
              f"runtime; k: its kernel alone on the host adapter's path (float32: direct; int8: "
              f"im2col, host tile); k im2col: the float32 im2col path; [kernel] = the FC kernel on "
              f"the tiles, or the direct path's (gscd)",
              flush=True)
        if args.conv_layers:
            bench_conv_layers()
        else:
            bench_conv()
        return
    if args.seq:
        print(f"times in microseconds for {args.seq} rows, 90 % group sparsity, 1 thread, best of "
              f"150 short interleaved loops; speedup = dense / time (dense: XNNPACK through the "
              f"runtime; rt: the custom op through the runtime; k: its kernel alone; 1-row: the "
              f"one-row kernel 8 rows at a time); [kernel] = the C kernel that ran", flush=True)
        bench_seq(args.seq)
        print(f"whole exported models on [1, {args.seq}, 256] (float32 in/out; int8: QUANTIZE, "
              f"the two FCs (bias folded in), DEQUANTIZE), through the runtime:", flush=True)
        bench_ffn(args.seq)
        return
    print("times in microseconds, batch 1, 1 thread; speedup = dense / time; [kernel] = the C "
          "kernel that ran", flush=True)
    layers, sps = (LAYERS[:1], [0.9, 0.95]) if args.quick else (LAYERS, SPARSITIES)
    bench(layers, sps)


if __name__ == "__main__":
    main()
