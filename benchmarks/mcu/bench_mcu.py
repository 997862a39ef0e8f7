"""int8 models on an emulated Cortex-M4: dense CMSIS-NN-style baseline vs TFS_GROUP_SPARSE_FC.

    python benchmarks/mcu/bench_mcu.py [--model out/main/lenet300_pruned.keras] [--group-size 4]
    python benchmarks/mcu/bench_mcu.py --model lenet5_pruned.keras [--dataset mnist]

Installs its Debian packages if missing (gcc-arm-none-eabi, libnewlib-arm-none-eabi,
qemu-system-arm), converts the pruned model to full int8 with the exporter's own functions
(`convert_keras`, `find_fully_connected`, `rewrite.custom_op_arrays` - the arrays the exported
custom op carries), builds a bare-metal firmware for Cortex-M4 (`-mcpu=cortex-m4`, the kernel core
tflite_export/kernels/tfs_group_sparse_fc.c unchanged), runs it on QEMU `mps2-an386` with the
counting plugin `tfs_cycles_plugin.c`, checks that every layer's output is bit-exact with the
host's, and prints instructions, estimated cycles and flash bytes per layer. See
../../../shared/notes or tflite_export/kernels/TFLM.md for what the cycle estimate is (+-20 %,
for comparisons only). Build outputs go to --build-dir (default out/mcu/build); nothing is
written into the source tree.

On the command line a model with only FC layers (LeNet-300-100) runs as an FC chain on the host
kernel (fixed-point requantization; MNIST test error over 10,000 images), as before. A model with
Conv2D layers (`--model lenet5.keras`) has every CONV_2D measured too: the exporter emits no conv
custom op, so the firmware runs each conv as im2col (im2col.c, one implementation for both paths)
+ the FC kernels over its output positions (`[positions, kh*kw*cin] x [filters, kh*kw*cin]^T`,
the filters as group-CSR along kh*kw*cin, the group order of tfscalpel's GroupPrunedConv2D): a
measurement of what a firmware doing so would cost. Each layer's int8 input comes from TFLite's
reference interpreter; the host result (the same im2col + kernel, fixed-point requantization as
on TFLite Micro) must equal TFLite's reference int8 CONV_2D on every value. TFLite's reference
FULLY_CONNECTED requantizes in double precision in this TFLite version, so for FC layers the
differing values are counted and that double-precision formula is checked to reproduce it; both
are also compared with XNNPACK (fp32 requantization). The ops between (QUANTIZE, pooling,
RESHAPE, DEQUANTIZE) are not measured. `measure_model` does all this for one model and returns
per-layer dicts and totals (for benchmarks/scalpel_table.py).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# ensure_packages, write_header, build, run_qemu and flash_bytes are also imported from here by
# benchmarks/scalpel_table.py.
from mcu_firmware import build, ensure_packages, log, run_qemu, write_header  # noqa: E402
from mcu_layers import _keras_conv_layers, check_layers, flash_bytes, model_layers  # noqa: E402


def int8_layers(model_path, group_size):
    """The pruned model's int8 FC layers: dense weights and the custom op's arrays."""
    import keras

    from tfscalpel import datasets
    from tflite_export import flatbuffer, keras_names, rewrite
    from tflite_export.converter import convert_keras
    from tflite_export.fc_layers import find_fully_connected

    (x, _), (xt, yt) = datasets.load_mnist()
    train = datasets.to_model_inputs(x, flatten=True)
    test = datasets.to_model_inputs(xt, flatten=True)
    model = keras.models.load_model(model_path, compile=False)
    tfl = flatbuffer.load(convert_keras(model, "int8", train[:500]))
    fcs = find_fully_connected(tfl)
    keras_names.assign_names(model, tfl, fcs)
    layers = []
    for fc in fcs:
        arrays = rewrite.custom_op_arrays(tfl, fc, group_size)
        layers.append({"name": fc.name, "weights": np.ascontiguousarray(fc.weights), **arrays})
    qx = tfl.subgraphs[fcs[0].subgraph].tensors[fcs[0].input].quantization
    scale, zp = float(qx.scale[0]), int(qx.zeroPoint[0])
    xq = np.clip(np.round(test / scale) + zp, -128, 127).astype(np.int8)
    return layers, xq, yt


def host_chain(layers, xq):
    """Per-layer int8 outputs of the host kernel (portable, fixed-point requantization)."""
    from tflite_export import kernels

    outs, h = [], xq
    for L in layers:
        k = kernels.GroupSparseFC(L["values"], L["col_idx"], L["row_ptr"], L["meta"], L["bias"],
                                  L["out_multiplier"], L["out_shift"], L["out_scale"],
                                  requant="fixed_point")
        h = k(h, impl="portable")
        outs.append(h)
    return outs


NOTE = ("Conv layers run as im2col + the FC kernels inside the benchmark firmware (the exporter "
        "emits no conv custom op: this measures what a firmware doing so would cost). "
        "im2col (im2col.c, the same code in both paths) writes a tile of output positions "
        "(`tile`) into a patch buffer, padding = the input zero point; dense = im2col + the "
        "CMSIS-NN-style SMLAD FC kernel (2 filters per pass, one position at a time; CMSIS-NN's "
        "own arm_convolve_s8 also pairs 2 positions, so it is somewhat faster than this dense "
        "baseline); sparse = im2col + TFS_GROUP_SPARSE_FC's DSP path on the tile, filters as "
        "group-CSR along kh*kw*cin. Conv cycles include im2col; `im2col cyc` is its share. "
        "Not measured: the ops between (QUANTIZE, pooling, RESHAPE/flatten, DEQUANTIZE).")


def _load(model):
    if isinstance(model, (str, os.PathLike)):
        import keras

        return keras.models.load_model(model, compile=False)
    return model


def measure_model(model, group_size, train_x, images, build_dir, image=0, calibration=500):
    """Emulate every CONV_2D and FULLY_CONNECTED of `model` int8 on the Cortex-M4.

    model: a `.keras` path or a Keras model (stripped / pruned); group_size: g of the group-CSR
    (1 = plain CSR, "traditional" pruning); train_x: inputs for int8 calibration (the first
    `calibration` are used); images: model inputs `[n, ...]` float32 for the host-vs-TFLite
    checks, of which `images[image]` runs on the emulator; build_dir: firmware build directory.

    Returns {"model", "group_size", "layers": [per-layer dict], "totals": dict, "note",
    "firmware_output"}. A layer dict: name, kind ("conv" | "fc"), in (K = kh*kw*cin for conv),
    out, positions (output positions, 1 for FC), tile, g, groups (stored groups), dense_ / sparse_
    instructions and cycles (conv: im2col included), im2col_instructions / im2col_cycles (conv;
    0 for FC), portable_cycles (FC: the portable C kernel; None for conv), dense_bytes /
    sparse_bytes (flash: weights + indices + bias + requant), and the host-vs-TFLite check
    counts of `check_layers`. totals: the sums of dense_/sparse_instructions, _cycles, _bytes,
    and best_cycles / best_bytes (per layer the sparse kernel where it is faster, else dense:
    what the exporter's choice would give). Raises RuntimeError if the host differs from
    TFLite's reference kernels or the firmware from the host.
    """
    ensure_packages()
    name = os.fspath(model) if isinstance(model, (str, os.PathLike)) else getattr(model, "name", "model")
    model = _load(model)
    tfl_bytes, layers = model_layers(model, train_x[:calibration], group_size)
    checks, xs, ys = check_layers(tfl_bytes, layers, np.asarray(images), image)
    bad = [L["name"] for L, c in zip(layers, checks)
           if c["tflite_ref_mismatches" if L["kind"] == "conv" else "tflite_ref_double_mismatches"]]
    if bad:
        raise RuntimeError(f"host results differ from TFLite's reference kernels on {bad}")
    os.makedirs(build_dir, exist_ok=True)
    write_header(os.path.join(build_dir, "layers_data.h"), layers, xs, ys)
    elf, plugin, mark = build(build_dir)
    rc, out, segs = run_qemu(elf, plugin, mark, build_dir)
    kernel_segs = segs[1::2]  # segments alternate: kernel, code between kernels
    if rc != 0 or len(kernel_segs) < 3 * len(layers):
        raise RuntimeError(f"Cortex-M4 firmware failed (exit {rc}, {len(kernel_segs)} segments): "
                           f"{out.strip()[-1000:]}")
    rows = []
    for k, (L, c) in enumerate(zip(layers, checks)):
        (di, dc), (si, sc), (ti, tc) = kernel_segs[3 * k:3 * k + 3]
        conv = L["kind"] == "conv"
        db, sb = flash_bytes(L)
        m = L["meta"]
        rows.append({"name": L["name"], "kind": L["kind"], "in": int(m[1]), "out": int(m[2]),
                     "positions": int(L["positions"]), "tile": int(L["tile"]), "g": int(m[3]),
                     "groups": int(m[4]), "dense_instructions": di, "sparse_instructions": si,
                     "dense_cycles": dc, "sparse_cycles": sc,
                     "im2col_instructions": ti if conv else 0, "im2col_cycles": tc if conv else 0,
                     "portable_cycles": None if conv else tc, "dense_bytes": db, "sparse_bytes": sb,
                     **c})
    totals = {key: sum(r[key] for r in rows) for key in (
        "dense_instructions", "sparse_instructions", "dense_cycles", "sparse_cycles",
        "dense_bytes", "sparse_bytes", "im2col_cycles")}
    faster = [r["sparse_cycles"] < r["dense_cycles"] for r in rows]
    totals["best_cycles"] = sum(r["sparse_cycles" if f else "dense_cycles"] for r, f in zip(rows, faster))
    totals["best_bytes"] = sum(r["sparse_bytes" if f else "dense_bytes"] for r, f in zip(rows, faster))
    return {"model": name, "group_size": group_size, "layers": rows, "totals": totals,
            "note": NOTE, "firmware_output": out.strip()}


def model_table(result):
    """The per-layer table of `measure_model`'s result (conv and FC layers), as text."""
    head = (f"{'layer':<8}{'kind':>5}{'K x out @pos':>17}{'groups':>8}{'dense instr':>13}"
            f"{'sparse instr':>14}{'dense cyc':>12}{'sparse cyc':>12}{'ratio':>7}{'im2col cyc':>12}"
            f"{'dense B':>9}{'sparse B':>10}{'ratio':>7}")
    lines = [head, "-" * len(head)]
    for r in result["layers"]:
        shape = f"{r['in']}x{r['out']}" + (f" @{r['positions']}" if r["kind"] == "conv" else "")
        im2col = f"{r['im2col_cycles']:,}" if r["kind"] == "conv" else "-"
        lines.append(f"{r['name']:<8}{r['kind']:>5}{shape:>17}{r['groups']:>8}{r['dense_instructions']:>13,}"
                     f"{r['sparse_instructions']:>14,}{r['dense_cycles']:>12,}{r['sparse_cycles']:>12,}"
                     f"{r['sparse_cycles'] / r['dense_cycles']:>6.3f}x{im2col:>12}{r['dense_bytes']:>9,}"
                     f"{r['sparse_bytes']:>10,}{r['sparse_bytes'] / r['dense_bytes']:>6.3f}x")
    t = result["totals"]
    lines.append(f"{'total':<8}{'':>5}{'':>17}{'':>8}{t['dense_instructions']:>13,}{t['sparse_instructions']:>14,}"
                 f"{t['dense_cycles']:>12,}{t['sparse_cycles']:>12,}{t['sparse_cycles'] / t['dense_cycles']:>6.3f}x"
                 f"{t['im2col_cycles']:>12,}{t['dense_bytes']:>9,}{t['sparse_bytes']:>10,}"
                 f"{t['sparse_bytes'] / t['dense_bytes']:>6.3f}x")
    lines.append(f"{'best':<8}{'':>5}{'(sparse where faster, else dense)':>38}{'':>14}"
                 f"{t['best_cycles']:>12,}{t['best_cycles'] / t['dense_cycles']:>6.3f}x{'':>12}{'':>9}"
                 f"{t['best_bytes']:>10,}{t['best_bytes'] / t['dense_bytes']:>6.3f}x")
    return "\n".join(lines)


def check_lines(result):
    """One line per layer: the host vs TFLite's int8 CONV_2D / FULLY_CONNECTED outputs."""
    lines = []
    for r in result["layers"]:
        n, imgs = r["checked_values"], r["checked_images"]
        xnn = (f"vs XNNPACK: fp32 requantization {n - r['xnnpack_fp32_mismatches']:,} equal, "
               f"fixed-point differs on {r['xnnpack_fixed_point_mismatches']:,}")
        if r["kind"] == "conv":
            lines.append(f"{r['name']}: host im2col + kernel (fixed-point) vs TFLite's reference int8 "
                         f"CONV_2D: {n - r['tflite_ref_mismatches']:,} of {n:,} values equal "
                         f"({imgs} images); {xnn}")
        else:
            lines.append(f"{r['name']}: TFLite's reference int8 FULLY_CONNECTED (double-precision "
                         f"requantization) reproduced on {n - r['tflite_ref_double_mismatches']:,} of "
                         f"{n:,} values ({imgs} images); the fixed-point path (TFLite Micro's, run "
                         f"on the MCU) differs from it on {r['tflite_ref_mismatches']:,}; {xnn}")
    return lines


def model_has_conv(model):
    return bool(_keras_conv_layers(model))


def main_model(args, model, t0):
    """The CLI for a model with conv layers."""
    from tfscalpel import datasets

    dataset = args.dataset
    if dataset == "auto":
        base = os.path.basename(args.model).lower()
        dataset = "fashion_mnist" if ("convnet" in base or "fashion" in base) else "mnist"
    (x, _), (xt, _) = getattr(datasets, f"load_{dataset}")()
    flat = len(model.inputs[0].shape) == 2
    train = datasets.to_model_inputs(x[:500], flatten=flat)
    test = datasets.to_model_inputs(xt[:args.checks], flatten=flat)
    log(f"checking every layer against TFLite on {len(test)} {dataset} test images, emulating "
        f"image {args.image}")
    res = measure_model(model, args.group_size, train, test, args.build_dir, image=args.image)
    print(res["firmware_output"])
    print(f"\nCortex-M4 (QEMU mps2-an386), batch 1, int8, g={args.group_size}; dense = CMSIS-NN-style "
          "SMLAD kernel, 2 rows per pass (our own code); sparse = TFS_GROUP_SPARSE_FC DSP path; "
          "cycles estimated by tfs_cycles_plugin (+-20 %); bytes = weights + indices + bias + "
          "requant params")
    print(NOTE)
    print(model_table(res))
    print("\n".join(check_lines(res)))
    print(f"time: {time.time() - t0:.0f} s")
    if args.json:
        import json
        with open(args.json, "w") as f:
            json.dump({k: v for k, v in res.items() if k != "firmware_output"}, f, indent=1)
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=os.path.join(ROOT, "out", "main", "lenet300_pruned.keras"))
    p.add_argument("--group-size", type=int, default=4, help="g of the custom op (the pruning's g)")
    p.add_argument("--build-dir", default=os.path.join(ROOT, "out", "mcu", "build"))
    p.add_argument("--image", type=int, default=0, help="test image run on the emulator")
    p.add_argument("--dataset", choices=("auto", "mnist", "fashion_mnist"), default="auto",
                   help="conv models: calibration / test data (auto: fashion_mnist for a file "
                        "named *convnet* or *fashion*, else mnist)")
    p.add_argument("--checks", type=int, default=100,
                   help="conv models: test images on which each layer is compared with TFLite")
    p.add_argument("--json", default=None,
                   help="also write the per-layer measurements to this file (FC-only model: "
                        "cost_model.calibrate's layout: format, dtype, g, out, units, time_ns = "
                        "estimated cycles; conv model: measure_model's result)")
    args = p.parse_args(argv)
    t0 = time.time()
    ensure_packages()
    if not os.path.isfile(args.model):
        sys.exit(f"error: {args.model} missing: run `python -m tfscalpel.main` first")
    os.makedirs(args.build_dir, exist_ok=True)
    log(f"converting {args.model} to int8")
    model = _load(args.model)
    if model_has_conv(model):
        return main_model(args, model, t0)
    layers, xq, yt = int8_layers(args.model, args.group_size)
    outs = host_chain(layers, xq)
    error = 100.0 * float(np.mean(np.argmax(outs[-1], axis=1) != yt))
    log(f"int8 pruned model on the host kernel (fixed-point requantization): "
        f"MNIST test error {error:.2f} % over {len(yt)} images")
    i = args.image
    xs = [xq[i]] + [o[i] for o in outs[:-1]]
    ys = [o[i] for o in outs]
    write_header(os.path.join(args.build_dir, "layers_data.h"), layers, xs, ys)
    t1 = time.time()
    elf, plugin, mark = build(args.build_dir)
    rc, out, segs = run_qemu(elf, plugin, mark, args.build_dir)
    t2 = time.time()
    print(out.strip())
    if rc != 0:
        sys.exit(f"error: firmware exit status {rc} (outputs not bit-exact or a fault)")
    kernels_segs = segs[1::2]  # segments alternate: kernel, code between kernels
    if len(kernels_segs) < 3 * len(layers):
        sys.exit(f"error: expected {3 * len(layers)} measured segments, got {len(kernels_segs)}")
    head = (f"{'layer':<8}{'in x out':>10}{'groups':>8}{'dense instr':>13}{'sparse instr':>14}"
            f"{'dense cyc':>11}{'sparse cyc':>12}{'ratio':>7}{'portable cyc':>14}"
            f"{'dense B':>9}{'sparse B':>10}{'ratio':>7}")
    lines = [head, "-" * len(head)]
    tot = np.zeros(6)
    measurements = []
    for k, L in enumerate(layers):
        (di, dc), (si, sc), (_, pc) = kernels_segs[3 * k:3 * k + 3]
        db, sb = flash_bytes(L)
        m = L["meta"]
        measurements += [
            {"layer": L["name"], "format": "dense", "dtype": "int8", "in": int(m[1]), "out": int(m[2]),
             "units": int(m[1]) * int(m[2]), "time_ns": dc, "instructions": di},
            {"layer": L["name"], "format": "custom", "dtype": "int8", "g": int(m[3]), "in": int(m[1]),
             "out": int(m[2]), "units": int(m[4]), "time_ns": sc, "instructions": si}]
        tot += [di, si, dc, sc, db, sb]
        m = L["meta"]
        lines.append(f"{L['name']:<8}{f'{m[1]}x{m[2]}':>10}{m[4]:>8}{di:>13,}{si:>14,}{dc:>11,}{sc:>12,}"
                     f"{sc / dc:>6.3f}x{pc:>14,}{db:>9,}{sb:>10,}{sb / db:>6.3f}x")
    lines.append(f"{'total':<8}{'':>10}{'':>8}{int(tot[0]):>13,}{int(tot[1]):>14,}{int(tot[2]):>11,}"
                 f"{int(tot[3]):>12,}{tot[3] / tot[2]:>6.3f}x{'':>14}{int(tot[4]):>9,}{int(tot[5]):>10,}"
                 f"{tot[5] / tot[4]:>6.3f}x")
    print("\nCortex-M4 (QEMU mps2-an386), batch 1, int8; dense = CMSIS-NN-style SMLAD kernel, 2 rows "
          "per pass (our own code); sparse = TFS_GROUP_SPARSE_FC DSP path; cycles estimated by "
          "tfs_cycles_plugin (+-20 %); bytes = weights + indices + bias + requant params")
    print("\n".join(lines))
    print(f"MNIST test error (int8, host kernel, fixed-point): {error:.2f} %")
    print(f"time: export + host run {t1 - t0:.0f} s, build + emulation {t2 - t1:.1f} s")
    if args.json:
        import json
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "group_size": args.group_size, "mnist_error_pct": error,
                       "time_unit": "estimated Cortex-M4 cycles", "measurements": measurements}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
