"""Calibrate the cost model's custom-op costs on this machine from measured kernel timings.

    python -m tflite_export.calibrate --output my-host.json [--base x86-avx2] [--repeats 5]

Times TFS_GROUP_SPARSE_FC (the kernel library's C timing hook, one thread, batch 1) on random
layers for every dtype and g over several shapes and densities, fits
`fixed_ns + row_ns * out + unit_ns * n_groups` by least squares (`cost_model.calibrate`) and
writes a JSON profile to pass as `target=` / `--target`. Dense and builtin block-sparse costs
are kept from the base profile (they need TensorFlow-built models; see the profiles in
tfscalpel/targets.py).
"""
from __future__ import annotations

import json
import sys

import numpy as np

from absl import app, flags

from tflite_export import cost_model
from tflite_export.group_csr import ALLOWED_GROUP_SIZES

# LiteRT adds this much per custom-op node over the bare kernel, which the C timing hook
# excludes: it wraps each of the node's 2 inputs and its output in a new tensor buffer on every
# run, and the node splits XNNPACK's delegated partition. Measured with a tiny custom-op layer
# (best of 40 C-timed loops, blob format): ~1.1 us per node against ~0.3 us for a builtin FC.
CUSTOM_NODE_OVERHEAD_NS = 800.0
# (in, out, group density): shapes of the benchmarks, densities around the useful range.
DEFAULT_POINTS = ((1024, 1024, 0.10), (1024, 1024, 0.05), (784, 300, 0.10), (784, 300, 0.25),
                  (300, 100, 0.25), (300, 100, 0.50), (256, 64, 0.10))


def measure_custom(points=DEFAULT_POINTS, dtypes=cost_model.DTYPES, gs=ALLOWED_GROUP_SIZES,
                   repeats: int = 5, iterations: int = 200, seed: int = 0) -> list[dict]:
    """Measurement rows for `cost_model.calibrate`: best of `repeats` timings per point."""
    from tflite_export import kernels  # needs the compiled kernel library

    rows = []
    for dtype in dtypes:
        for g in gs:
            for in_f, out_f, density in points:
                best, n_groups = float("inf"), 0
                for _ in range(repeats):  # the minimum is the least disturbed run
                    r = kernels.time_layer_vs_dense(in_f, out_f, density, g, dtype,
                                                    iterations=iterations, seed=seed)
                    best, n_groups = min(best, r["custom_s"]), int(r["n_groups"])
                rows.append({"format": "custom", "dtype": dtype, "g": g, "out": out_f,
                             "units": n_groups, "time_ns": best * 1e9})
    return rows


def _random_layer_model(in_f: int, out_f: int, density: float, dtype: str, rng) -> bytes:
    """A converted one-layer model whose Dense kernel keeps groups of 4 inputs with ``density``."""
    import keras

    from tflite_export.converter import convert_keras

    model = keras.Sequential([keras.Input((in_f,)), keras.layers.Dense(out_f, activation="relu")])
    keep = rng.random((-(-in_f // 4), out_f)) < density
    kernel = rng.standard_normal((in_f, out_f)).astype("float32")
    model.layers[0].kernel.assign(kernel * np.repeat(keep, 4, axis=0)[:in_f])
    if dtype == "float32":
        return convert_keras(model)
    calibration = rng.standard_normal((64, in_f)).astype("float32")
    return convert_keras(model, "int8", calibration)


def measure_formats(points=DEFAULT_POINTS, dtypes=cost_model.DTYPES, gs=ALLOWED_GROUP_SIZES,
                    repeats: int = 5, seed: int = 0, timer=None) -> list[dict]:
    """Measurement rows for every format (dense, builtin block-sparse, custom per g), each a
    one-layer model timed through the host runtime (best of ``repeats``); ``timer`` as in
    ``tflite_export.host.HostMeasurement`` (tests inject one)."""
    import tempfile

    from tflite_export import flatbuffer, formats, host
    from tflite_export.fc_layers import find_fully_connected
    from tflite_export.formats.block_sparse import TFLITE_BLOCKS

    rng = np.random.default_rng(seed)
    timer = timer or (lambda model, x: host.runtime_timer(model, x, rounds=repeats))
    builtin, custom = formats.get("builtin_sparse"), formats.get("custom")
    rows = []
    with tempfile.TemporaryDirectory() as cache:  # fresh timings, not the export cache's
        measure = host.HostMeasurement(timer=timer, cache_dir=cache, key="calibration")
        for dtype in dtypes:
            for in_f, out_f, density in points:
                model = _random_layer_model(in_f, out_f, density, dtype, rng)
                fc = find_fully_connected(flatbuffer.load(model))[0]

                def row(fmt, g, units):
                    seconds = measure.time_candidate(model, fc, fmt, g)
                    rows.append({"format": "dense" if fmt is None else fmt.name, "dtype": dtype,
                                 "g": g, "out": out_f, "units": units, "time_ns": seconds * 1e9})

                row(None, 0, in_f * out_f)
                block = TFLITE_BLOCKS[dtype]
                if builtin.eligible(fc) is None and builtin.width_reason(fc, block) is None:
                    row(builtin, block, builtin.stored_units(fc.weights, block))
                for g in gs:
                    units = custom.stored_units(fc.weights, g)
                    if units:
                        row(custom, g, units)
    return rows


def _safe_side(fitted: cost_model.CostModel, rows: list[dict]) -> cost_model.CostModel:
    """Scale each fitted (format, dtype) so that no measured point is mispredicted in the
    dangerous direction: dense never above its measurement, sparse formats never below theirs.
    A linear cost does not fit every kernel's shape effects (XNNPACK's float32 tiles), and the
    exporter's promise is "never slower than dense", so the fit errs towards keeping dense."""
    profile = fitted.to_dict()
    ratios: dict = {}
    for r in rows:
        fmt, dtype, g = r["format"], r["dtype"], int(r.get("g", 0))
        if fmt == "dense":
            pred = fitted.dense(dtype, r["units"] // r["out"], r["out"]).time_ns
        elif fmt == "builtin_sparse":
            pred = fitted.builtin_sparse(dtype, r["out"], r["units"]).time_ns
        else:
            pred = fitted.custom(dtype, g, r["out"], r["units"]).time_ns
        if pred > 0:
            entry = ratios.setdefault((fmt, dtype), ([], set()))
            entry[0].append(r["time_ns"] / pred)
            entry[1].add(str(g))
    for (fmt, dtype), (measured_over_predicted, widths) in ratios.items():
        factor = (min(1.0, min(measured_over_predicted)) if fmt == "dense"
                  else max(1.0, max(measured_over_predicted)))
        if abs(factor - 1.0) < 1e-6:  # an exact fit (rounding only)
            continue
        coeffs = profile["formats"][fmt][dtype]
        for key in ("fixed_ns", "row_ns"):
            coeffs[key] *= factor
        if isinstance(coeffs["unit_ns"], dict):  # custom: the measured widths only
            coeffs["unit_ns"] = {k: v * factor if k in widths else v
                                 for k, v in coeffs["unit_ns"].items()}
        else:
            coeffs["unit_ns"] *= factor
    return cost_model.CostModel(profile)


def calibrated_profile(base: cost_model.CostModel, rows: list[dict], name: str | None = None,
                       add_node_overhead: bool = True, relative: bool = False):
    """Fit the rows (``relative``: on relative errors, see ``cost_model.calibrate``); for
    bare-kernel rows (``measure_custom``, ``add_node_overhead``), then add LiteRT's per-node
    overhead to the custom fixed cost (runtime rows already include it).

    Adding it after the fit (rather than to every row) keeps it out of the least-squares
    intercept, which is clipped at 0 and poorly determined by large layers.
    """
    fitted = _safe_side(cost_model.calibrate(base, rows, name=name, relative=relative), rows).to_dict()
    if add_node_overhead:
        for coeffs in fitted["formats"]["custom"].values():
            coeffs["fixed_ns"] += CUSTOM_NODE_OVERHEAD_NS
    return cost_model.CostModel(fitted)


FLAGS = flags.FLAGS
flags.DEFINE_string("output", None, "Path of the JSON profile to write.")
flags.DEFINE_string("base", "x86-avx2", "Profile whose numbers are kept where nothing was measured.")
flags.DEFINE_string("name", None, "Name of the new profile (default: <base>-calibrated).")
flags.DEFINE_integer("repeats", 5, "Timings per point; the minimum is kept.")
flags.DEFINE_bool("kernel_only", False, "Time only the custom op's kernel (C timing hook); keep "
                  "dense and block-sparse costs from --base.")


def main(argv) -> int:
    if len(argv) > 1 or not FLAGS.output:
        print("error: usage: python -m tflite_export.calibrate --output PROFILE.json", file=sys.stderr)
        return 1
    try:
        base = cost_model.load(FLAGS.base)
        if FLAGS.kernel_only:
            rows = measure_custom(repeats=FLAGS.repeats)
        else:
            rows = measure_formats(repeats=FLAGS.repeats)
        fitted = calibrated_profile(base, rows, name=FLAGS.name, add_node_overhead=FLAGS.kernel_only)
        from tflite_export.atomic import write_atomic

        write_atomic(FLAGS.output, json.dumps(fitted.to_dict(), indent=2))
    except Exception as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(fitted.to_dict()["formats"], indent=2))
    return 0


if __name__ == "__main__":
    app.run(main)
