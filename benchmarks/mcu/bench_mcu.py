"""int8 models on an emulated Cortex-M4: dense CMSIS-NN-style baseline vs TFS_GROUP_SPARSE_FC.

    python benchmarks/mcu/bench_mcu.py [--model out/main/lenet300_pruned.keras] [--group-size 4]
    python benchmarks/mcu/bench_mcu.py --model lenet5_pruned.keras [--dataset mnist]
    python benchmarks/mcu/bench_mcu.py --fit [--json rows.json]   # refit the cortex-m4 profile

Converts the pruned model to full int8 with the exporter's own functions and measures every
CONV_2D and FULLY_CONNECTED layer on QEMU `mps2-an386` (Cortex-M4) with a counting plugin:
instructions, estimated cycles and flash bytes per layer, dense kernel vs the group-sparse custom
op (mcu_layers.py: the layers' arrays and host checks; mcu_firmware.py: packages, firmware build
and QEMU run). See tfs_cycles_plugin.c (its timing table) and tflite_export/kernels/TFLM.md for what the cycle
estimate is (+-20 %, for comparisons only). Build outputs go to --build-dir (default
out/mcu/build); nothing is written into the source tree.

The firmware runs each conv as TFS_GROUP_SPARSE_CONV2D does (tflite_export/kernels/tfs_im2col.c,
one implementation for both paths, + the FC kernels over its output positions)
(`[positions, kh*kw*cin] x [filters, kh*kw*cin]^T`, the filters as group-CSR along kh*kw*cin,
the group order of tfscalpel's GroupPrunedConv2D): a measurement of what a firmware doing so
would cost. Each layer's int8 input comes from TFLite's reference interpreter; the host result
(the same im2col + kernel, fixed-point requantization as on TFLite Micro) must equal TFLite's
reference int8 CONV_2D on every value. TFLite's reference FULLY_CONNECTED requantizes in double
precision in this TFLite version, so for FC layers the differing values are counted and that
double-precision formula is checked to reproduce it; both are also compared with XNNPACK (fp32
requantization). The ops between (QUANTIZE, pooling, RESHAPE, DEQUANTIZE) are not measured.
For a model with only FC layers (LeNet-300-100) the CLI also reports its test error over the
whole test set on the host kernel (fixed-point requantization), and --json writes
cost_model.calibrate's layout. `measure_model` does the measurement for one model and returns
per-layer dicts and totals (for benchmarks/scalpel_table.py).

--fit measures FIT_MODELS (seeded random weights, group-pruned at 50 and 90 %) and prints the
cortex-m4 profile's dense / custom / custom_conv entries fitted to the counts (`fit_profile`),
with predicted against measured cycles per layer before and after; tfscalpel/targets.py's
CORTEX_M4 holds the numbers it printed (the exporter and the budget allocator both read them).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mcu_firmware import ensure_packages, log, measure_layers_on_qemu  # noqa: E402
from mcu_layers import check_layers, flash_bytes, host_fc_chain, model_layers, quantize_input  # noqa: E402


NOTE = ("Conv layers run as im2col + the FC kernels inside the benchmark firmware (what "
        "TFS_GROUP_SPARSE_CONV2D runs, tfs_gsconv_compute.c). "
        "im2col (tfs_im2col.c, the same code in both paths) writes a tile of output positions "
        "(`tile`) into a patch buffer, padding = the input zero point; dense = im2col + the "
        "CMSIS-NN-style SMLAD FC kernel (2 filters per pass, one position at a time; CMSIS-NN's "
        "own arm_convolve_s8 also pairs 2 positions, so it is somewhat faster than this dense "
        "baseline); sparse = im2col + TFS_GROUP_SPARSE_FC's DSP path on the tile, filters as "
        "group-CSR along kh*kw*cin. Conv cycles include im2col; `im2col cyc` is its share. "
        "Not measured: the ops between (QUANTIZE, pooling, RESHAPE/flatten, DEQUANTIZE).")


def _load(model):
    """A Keras model from a `.keras` path (not compiled), or `model` itself."""
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
    name = os.fspath(model) if isinstance(model, (str, os.PathLike)) else getattr(model, "name", "model")
    tfl_bytes, layers = model_layers(_load(model), train_x[:calibration], group_size)
    return measure_layers(name, group_size, tfl_bytes, layers, images, build_dir, image)


def measure_layers(name, group_size, tfl_bytes, layers, images, build_dir, image=0):
    """The second half of `measure_model`, on a model `model_layers` has already converted
    (`tfl_bytes`, `layers`): check every layer against TFLite, emulate them, and return
    `measure_model`'s result with `name` as its "model"."""
    checks, xs, ys = check_layers(tfl_bytes, layers, np.asarray(images), image)
    bad = [L["name"] for L, c in zip(layers, checks)
           if c["tflite_ref_mismatches" if L["kind"] == "conv" else "tflite_ref_double_mismatches"]]
    if bad:
        raise RuntimeError(f"host results differ from TFLite's reference kernels on {bad}")
    out, segments = measure_layers_on_qemu(layers, xs, ys, build_dir)
    rows = []
    for L, c, ((di, dc), (si, sc), (ti, tc)) in zip(layers, checks, segments):
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
    """The per-layer table of `measure_model`'s result, as text. Columns that only some layers
    have: `im2col cyc` (conv: im2col's share) if the model has conv layers, `portable cyc` (FC:
    the group-sparse portable C kernel) if it has FC layers."""
    rows, t = result["layers"], result["totals"]
    kinds = {r["kind"] for r in rows}
    extra = []  # (header, width, cell of a layer row, cell of the total row)
    if "conv" in kinds:
        extra.append(("im2col cyc", 12, lambda r: f"{r['im2col_cycles']:,}" if r["kind"] == "conv" else "-",
                      f"{t['im2col_cycles']:,}"))
    if "fc" in kinds:
        extra.append(("portable cyc", 14, lambda r: f"{r['portable_cycles']:,}" if r["kind"] == "fc" else "-",
                      ""))
    head = (f"{'layer':<8}{'kind':>5}{'K x out @pos':>17}{'groups':>8}{'dense instr':>13}"
            f"{'sparse instr':>14}{'dense cyc':>12}{'sparse cyc':>12}{'ratio':>7}"
            + "".join(f"{h:>{w}}" for h, w, _, _ in extra) + f"{'dense B':>9}{'sparse B':>10}{'ratio':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        shape = f"{r['in']}x{r['out']}" + (f" @{r['positions']}" if r["kind"] == "conv" else "")
        lines.append(f"{r['name']:<8}{r['kind']:>5}{shape:>17}{r['groups']:>8}{r['dense_instructions']:>13,}"
                     f"{r['sparse_instructions']:>14,}{r['dense_cycles']:>12,}{r['sparse_cycles']:>12,}"
                     f"{r['sparse_cycles'] / r['dense_cycles']:>6.3f}x"
                     + "".join(f"{cell(r):>{w}}" for _, w, cell, _ in extra)
                     + f"{r['dense_bytes']:>9,}{r['sparse_bytes']:>10,}{r['sparse_bytes'] / r['dense_bytes']:>6.3f}x")
    lines.append(f"{'total':<8}{'':>5}{'':>17}{'':>8}{t['dense_instructions']:>13,}{t['sparse_instructions']:>14,}"
                 f"{t['dense_cycles']:>12,}{t['sparse_cycles']:>12,}{t['sparse_cycles'] / t['dense_cycles']:>6.3f}x"
                 + "".join(f"{total:>{w}}" for _, w, _, total in extra)
                 + f"{t['dense_bytes']:>9,}{t['sparse_bytes']:>10,}{t['sparse_bytes'] / t['dense_bytes']:>6.3f}x")
    lines.append(f"{'best':<8}{'':>5}{'(sparse where faster, else dense)':>38}{'':>14}"
                 f"{t['best_cycles']:>12,}{t['best_cycles'] / t['dense_cycles']:>6.3f}x"
                 f"{'':>{sum(w for _, w, _, _ in extra)}}{'':>9}"
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


def calibration_measurements(result):
    """`measure_model`'s FC layers as cost_model.calibrate's measurements (time_ns = estimated
    cycles): per layer one dense and one custom-op entry."""
    out = []
    for r in result["layers"]:
        if r["kind"] != "fc":
            continue
        out += [
            {"layer": r["name"], "format": "dense", "dtype": "int8", "in": r["in"], "out": r["out"],
             "units": r["in"] * r["out"], "time_ns": r["dense_cycles"], "instructions": r["dense_instructions"]},
            {"layer": r["name"], "format": "custom", "dtype": "int8", "g": r["g"], "in": r["in"],
             "out": r["out"], "units": r["groups"], "time_ns": r["sparse_cycles"],
             "instructions": r["sparse_instructions"]}]
    return out


#: What --fit measures: (model, its data set, group sparsities, widths g). The FC layers of
#: LeNet-300-100 at every kernel width, and the convs and FCs of LeNet-5 and the ConvNet at g = 4
#: (the widths the cortex-m4 profile prices convs at), each at two sparsities so that per-row and
#: per-group costs separate.
FIT_MODELS = (("lenet_300_100", "mnist", (0.5, 0.9), (1, 2, 4, 8, 16)),
              ("lenet5", "mnist", (0.5, 0.9), (4,)), ("convnet", "fashion_mnist", (0.5, 0.9), (4,)))


def pruned_copy(model, g, sparsity):
    """`model` with every Dense / Conv2D kernel group-pruned as tfscalpel.GroupPattern(g) prunes
    it at `sparsity` (groups along the input, for a conv along kh*kw*cin: the im2col order); the
    cycle counts depend on the stored groups only, so the weights may be untrained."""
    import keras

    from tflite_export.host_profile import group_pruned

    pruned = keras.models.clone_model(model)
    pruned.set_weights(model.get_weights())
    for layer in pruned.layers:
        if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)):
            k = np.asarray(layer.kernel)
            flat = k.reshape(-1, k.shape[-1])
            layer.kernel.assign(group_pruned(flat.T, g, sparsity).T.reshape(k.shape))
    return pruned


def fit_rows(build_dir, checks=20):
    """Measure FIT_MODELS (seeded random weights, group-pruned) on the emulator: the per-layer
    rows of `measure_model`, each with its model, sparsity and g."""
    import keras

    from tfscalpel import datasets, models

    rows = []
    for name, dataset, sparsities, gs in FIT_MODELS:
        keras.utils.set_random_seed(0)
        model = getattr(models, name)()
        (x, _), (xt, _) = getattr(datasets, f"load_{dataset}")()
        flat = len(model.inputs[0].shape) == 2
        calib = datasets.to_model_inputs(x[:500], flatten=flat)
        test = datasets.to_model_inputs(xt[:checks], flatten=flat)
        for g in gs:
            for s in sparsities:
                log(f"fit: {name} g={g} at {s:.0%}")
                res = measure_model(pruned_copy(model, g, s), g, calib, test,
                                    os.path.join(build_dir, f"fit-{name}-g{g}-{int(100 * s)}"))
                rows += [dict(r, model=name, sparsity=s) for r in res["layers"]]
    return rows


def fit_profile(rows):
    """The cortex-m4 profile refitted to measured rows (estimated cycles), each fit on relative
    errors (the layers span three orders of magnitude):

    - ``formats.custom`` (TFS_GROUP_SPARSE_FC): cost_model.calibrate's least squares, fixed and
      per-row costs shared across g;
    - ``formats.dense`` (the CMSIS-NN-style SMLAD FC): fixed, per row and per weight (calibrate
      drops the per-row term for CPUs' tiled kernels; this kernel requantizes each row);
    - ``formats.custom_conv`` (TFS_GROUP_SPARSE_CONV2D): im2col ``position_ns`` / ``patch_ns``
      from the measured im2col share; then from the rest, less the FC fixed cost once per tile
      (tfscalpel.cost_profile.conv_time's formula), ``widen_ns`` (per patch byte), ``row_ns``
      (per filter storing a group, cost_profile.filters_with_groups, and position), ``unit_ns``
      (per stored group and position) and the kernel's own per-position cost (added to
      ``position_ns``), by non-negative least squares.
    No safe-side scaling: the budget allocator needs the best estimate (the exporter keeps its
    own margin, min_speedup). ``dense_conv`` (TFLite Micro's CMSIS-NN CONV_2D) is not run by
    this firmware (bench_tflm.py --per-layer measures it) and is kept."""
    from tfscalpel import targets
    from tfscalpel.cost_profile import conv_tile, filters_with_groups
    from tflite_export import cost_model

    fcs = [r for r in rows if r["kind"] == "fc"]
    custom = [m for m in calibration_measurements({"layers": fcs}) if m["format"] == "custom"]
    fitted = cost_model.calibrate(cost_model.CostModel(targets.CORTEX_M4), custom,
                                  relative=True).to_dict()
    a = np.array([[1.0, r["out"], r["in"] * r["out"]] for r in fcs])
    y = np.array([r["dense_cycles"] for r in fcs], float)
    fixed, row, unit = cost_model._nonnegative_fit(a / y[:, None], np.ones_like(y))
    fitted["formats"]["dense"]["int8"].update(fixed_ns=float(fixed), row_ns=float(row),
                                             unit_ns=float(unit))
    convs = [r for r in rows if r["kind"] == "conv"]
    fixed = fitted["formats"]["custom"]["int8"]["fixed_ns"]
    a = np.array([[r["positions"], r["positions"] * r["in"]] for r in convs], float)
    y = np.array([r["im2col_cycles"] for r in convs], float)
    position_ns, patch_ns = cost_model._nonnegative_fit(a / y[:, None], np.ones_like(y))
    gs = sorted({r["g"] for r in convs})
    a = np.array([[r["positions"], r["positions"] * r["in"],
                   r["positions"] * filters_with_groups(r["in"], r["out"], r["g"], r["groups"])]
                  + [r["positions"] * r["groups"] * (r["g"] == k) for k in gs] for r in convs], float)
    y = np.array([r["sparse_cycles"] - r["im2col_cycles"]
                  - -(-r["positions"] // conv_tile(r["positions"], r["in"])) * fixed
                  for r in convs], float)
    coef = cost_model._nonnegative_fit(a / y[:, None], np.ones_like(y))
    fitted["formats"]["custom_conv"]["int8"].update(
        position_ns=float(position_ns + coef[0]), patch_ns=float(patch_ns), widen_ns=float(coef[1]),
        row_ns=float(coef[2]), unit_ns={str(k): float(u) for k, u in zip(gs, coef[3:])})
    return {fmt: {d: {k: (round(v, 4) if isinstance(v, float) else
                          {g: round(u, 4) for g, u in v.items()} if isinstance(v, dict)
                          and all(isinstance(u, float) for u in v.values()) else v)
                      for k, v in c.items()} for d, c in fitted["formats"][fmt].items()}
            for fmt in ("dense", "custom", "custom_conv")}


def fit_table(rows, profile):
    """Predicted (``profile``'s formats, tfscalpel.cost_profile) vs measured cycles per layer."""
    from tfscalpel.cost_profile import conv_time, fc_time

    full = {"formats": profile}
    head = (f"{'model':<14}{'layer':<7}{'g':>3}{'spars':>6}{'groups':>8}{'dense meas':>12}"
            f"{'pred':>12}{'err':>7}{'sparse meas':>13}{'pred':>12}{'err':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if r["kind"] == "conv":
            dense = None  # our SMLAD stand-in, not what the profile prices (CMSIS-NN's CONV_2D)
            sparse = conv_time(full, "int8", "custom_conv", r["in"], r["out"], r["positions"],
                               r["g"], r["groups"])
        else:
            dense = fc_time(full, "int8", "dense", r["in"], r["out"])
            sparse = fc_time(full, "int8", "custom", r["in"], r["out"], r["g"], r["groups"])
        d = ("-", "-", "-") if dense is None else (
            f"{r['dense_cycles']:,}", f"{dense:,.0f}", f"{dense / r['dense_cycles'] - 1:+.1%}")
        lines.append(f"{r['model']:<14}{r['name']:<7}{r['g']:>3}{r['sparsity']:>6.0%}{r['groups']:>8}"
                     f"{d[0]:>12}{d[1]:>12}{d[2]:>7}{r['sparse_cycles']:>13,}{sparse:>12,.0f}"
                     f"{sparse / r['sparse_cycles'] - 1:>+7.1%}")
    return "\n".join(lines)


DATASET_NAMES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=os.path.join(ROOT, "out", "main", "lenet300_pruned.keras"))
    p.add_argument("--group-size", type=int, default=4, help="g of the custom op (the pruning's g)")
    p.add_argument("--build-dir", default=os.path.join(ROOT, "out", "mcu", "build"))
    p.add_argument("--image", type=int, default=0, help="test image run on the emulator")
    p.add_argument("--dataset", choices=("auto", "mnist", "fashion_mnist"), default="auto",
                   help="calibration / test data (auto: fashion_mnist for a file named "
                        "*convnet* or *fashion*, else mnist)")
    p.add_argument("--checks", type=int, default=100,
                   help="test images on which each layer is compared with TFLite")
    p.add_argument("--json", default=None,
                   help="also write the per-layer measurements to this file (FC-only model: "
                        "cost_model.calibrate's layout: format, dtype, g, out, units, time_ns = "
                        "estimated cycles; conv model: measure_model's result)")
    p.add_argument("--fit", action="store_true",
                   help="instead: measure FIT_MODELS (LeNet-300-100 FCs at g = 1..16, LeNet-5's "
                   "and the ConvNet's layers at g = 4, each at 50 and 90 %% group sparsity), print "
                   "the cortex-m4 profile's dense / custom / custom_conv entries fitted to them "
                   "and predicted vs measured cycles per layer (before and after the fit); "
                   "--json writes the rows and the fit")
    p.add_argument("--fit-rows", default=None, metavar="JSON",
                   help="with --fit: refit the rows an earlier --fit --json wrote (no emulation)")
    args = p.parse_args(argv)
    t0 = time.time()
    if args.fit:
        from tfscalpel import targets

        if args.fit_rows:
            with open(args.fit_rows) as f:
                rows = json.load(f)["rows"]
        else:
            ensure_packages()
            rows = fit_rows(args.build_dir)
        fitted = fit_profile(rows)
        print("predicted with the current cortex-m4 profile:")
        print(fit_table(rows, targets.CORTEX_M4["formats"]))
        print("\nrefitted:")
        print(json.dumps(fitted, indent=1))
        print(fit_table(rows, fitted))
        if args.json and not args.fit_rows:
            with open(args.json, "w") as f:
                json.dump({"rows": [{k: v for k, v in r.items() if not isinstance(v, np.ndarray)}
                                    for r in rows], "fitted": fitted}, f, indent=1, default=str)
        print(f"time: {time.time() - t0:.0f} s")
        return 0
    ensure_packages()
    if not os.path.isfile(args.model):
        sys.exit(f"error: {args.model} missing: run `python -m tfscalpel_jobs.main` first")
    from tfscalpel import datasets

    dataset = args.dataset
    if dataset == "auto":
        base = os.path.basename(args.model).lower()
        dataset = "fashion_mnist" if ("convnet" in base or "fashion" in base) else "mnist"
    log(f"converting {args.model} to int8")
    model = _load(args.model)
    (x, _), (xt, yt) = getattr(datasets, f"load_{dataset}")()
    flat = len(model.inputs[0].shape) == 2
    test = datasets.to_model_inputs(xt, flatten=flat)
    tfl_bytes, layers = model_layers(model, datasets.to_model_inputs(x[:500], flatten=flat), args.group_size)
    fc_only = all(L["kind"] == "fc" for L in layers)
    if fc_only:  # the whole model is a chain of host kernels: its test error
        logits = host_fc_chain(layers, quantize_input(layers[0], test))[-1]
        error = 100.0 * float(np.mean(np.argmax(logits, axis=1) != yt))
        log(f"int8 pruned model on the host kernel (fixed-point requantization): "
            f"{DATASET_NAMES[dataset]} test error {error:.2f} % over {len(yt)} images")
    checked = test[:args.checks]
    log(f"checking every layer against TFLite on {len(checked)} {dataset} test images, emulating "
        f"image {args.image}")
    res = measure_layers(args.model, args.group_size, tfl_bytes, layers, checked, args.build_dir,
                         image=args.image)
    print(res["firmware_output"])
    print(f"\nCortex-M4 (QEMU mps2-an386), batch 1, int8, g={args.group_size}; dense = CMSIS-NN-style "
          "SMLAD kernel, 2 rows per pass (our own code); sparse = TFS_GROUP_SPARSE_FC DSP path; "
          "cycles estimated by tfs_cycles_plugin (+-20 %); bytes = weights + indices + bias + "
          "requant params")
    if not fc_only:
        print(NOTE)
    print(model_table(res))
    print("\n".join(check_lines(res)))
    if fc_only:
        print(f"{DATASET_NAMES[dataset]} test error (int8, host kernel, fixed-point): {error:.2f} %")
    print(f"time: {time.time() - t0:.0f} s")
    if args.json:
        if fc_only:
            out = {"model": args.model, "group_size": args.group_size, f"{dataset}_error_pct": error,
                   "time_unit": "estimated Cortex-M4 cycles", "measurements": calibration_measurements(res)}
        else:
            out = {k: v for k, v in res.items() if k != "firmware_output"}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
