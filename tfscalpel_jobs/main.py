"""The main job: LeNet-300-100 on full MNIST, pruned with SIMD groups while it retrains.

    python -m tfscalpel_jobs.main [--group-size target | 4 | ...] [--sparsity 0.92] [--quick]
                                  [--output out/main] [--target host | x86-avx2 | ...]

1. train the dense network (or reuse the cached one),
2. prune it with Scalpel's SIMD groups (``g`` weights along the input dimension, RMS score)
   on a polynomial schedule while it retrains, then fine-tune with the masks fixed; by default
   ``g`` per layer is what the export target's kernels want (:func:`target_group_sizes`),
3. strip it to a plain Keras model,
4. export dense and pruned models to `.tflite` (float32 and full int8), run them on the host
   through tfscalpel's LiteRT runtime (custom op registered), and measure test error, file
   size and batch-1 latency,
5. print the results tables, write them as JSON next to the models, and plot them as PNG
   (training curves, per-layer sparsity and size, latency: tfscalpel.report).
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfscalpel  # noqa: E402
from tfscalpel import datasets, models  # noqa: E402
from tfscalpel.targets import get_target, known_targets  # noqa: E402


def _log(msg):
    print(f"[tfscalpel] {msg}", flush=True)


def load_data(quick):
    """MNIST as flat float inputs; ``quick`` keeps 6,000 / 2,000 images for smoke runs."""
    (x, y), (xt, yt) = datasets.load_mnist()
    if quick:
        x, y, xt, yt = x[:6000], y[:6000], xt[:2000], yt[:2000]
    return (datasets.to_model_inputs(x, flatten=True), y), (datasets.to_model_inputs(xt, flatten=True), yt)


def test_error(model, x, y):
    """Top-1 error in percent."""
    logits = model.predict(x, batch_size=1000, verbose=0)
    return 100.0 * float(np.mean(np.argmax(logits, axis=1) != y))


def train_dense(train, epochs, seed, cache_path=None):
    """Train LeNet-300-100 (SGD with momentum 0.9, batch 128, cosine-decayed learning rate);
    cached by settings so a rerun goes straight to pruning."""
    if cache_path and os.path.exists(cache_path):
        _log(f"reusing the dense model cached at {cache_path}")
        return keras.models.load_model(cache_path)
    keras.utils.set_random_seed(seed)
    model = models.lenet_300_100()
    steps = epochs * int(np.ceil(len(train[0]) / 128))
    lr = keras.optimizers.schedules.CosineDecay(0.05, steps, alpha=0.01)
    models.compile_classifier(model, keras.optimizers.SGD(lr, momentum=0.9))
    model.fit(*train, batch_size=128, epochs=epochs, verbose=2)
    if cache_path:
        os.makedirs(os.path.dirname(cache_path), exist_ok=True)
        model.save(cache_path)
    return model


def target_group_sizes(model, target, fallback=4):
    """``{layer name: g}`` for the Dense layers of ``model``, pruned for export to ``target`` (a
    registered target's name, or None): the target's int8 group width (16 on x86 and NEON: one
    vector load of int8) where it divides the layer's fan-in, ``fallback`` elsewhere, and on
    every layer for ``target=None`` or a target that is no registered name (a profile's path).

    Why int8's width: on an AVX-512 VNNI EPYC the int8 kernel at g=4 gathers every group with a
    scalar load and measured 0.98x dense XNNPACK int8 on LeNet's fc1 (kept dense), g=16 1.4x; the
    float32 kernels run 16-wide groups faster than 4-wide ones too (fc1: 15-20x vs 5.9x dense).
    Where the width does not divide the fan-in, the ragged last group runs in scalar code, and a
    small layer (the classifier fc3: 100 inputs) keeps its accuracy with narrower groups."""
    width = fallback
    if target in known_targets():
        width = get_target(target).group_size("int8")
    sizes = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            fan_in = int(layer.kernel.shape[0])
            sizes[layer.name] = width if fan_in % width == 0 else fallback
    return sizes


def prune_and_retrain(dense, train, group_size, sparsity, prune_epochs, finetune_epochs, seed,
                      distill=None):
    """Scalpel's group pruning during retraining: sparsity rises along a cubic schedule for
    ``prune_epochs`` epochs, then the masks stay fixed for ``finetune_epochs`` epochs.
    ``group_size``: one width for every layer, or ``{layer name: g}``.

    ``distill``: ``None`` (train on the labels), or ``{"temperature": T, "weight": w}`` to
    train through :class:`tfscalpel.Distiller` with a frozen copy of ``dense`` as the teacher.
    The pruned model is returned either way (not the wrapper)."""
    keras.utils.set_random_seed(seed)
    steps_per_epoch = int(np.ceil(len(train[0]) / 128))
    end = max(1, prune_epochs * steps_per_epoch - steps_per_epoch // 2)
    schedule = tfscalpel.PolynomialDecay(0.0, sparsity, begin_step=0, end_step=end,
                                         frequency=max(1, min(100, end // 20)))
    # One global ranking (scores normalised per layer) lets small, sensitive layers such as
    # the classifier keep more of their weights than the big first layer, as in Han et al.
    if isinstance(group_size, dict):
        pruned = tfscalpel.prune(dense, schedule=schedule, global_sparsity=True,
                                 per_layer={k: {"group_size": g} for k, g in group_size.items()})
    else:
        pruned = tfscalpel.prune(dense, schedule=schedule, group_size=group_size, global_sparsity=True)
    total = prune_epochs + finetune_epochs
    lr = keras.optimizers.schedules.CosineDecay(1e-3, total * steps_per_epoch, alpha=0.01)
    trainee = distiller(pruned, dense, distill)
    models.compile_classifier(trainee, keras.optimizers.Adam(lr))
    # SparsityHistory puts per-layer sparsity into the History (pruned.history) for the plots.
    history = trainee.fit(*train, batch_size=128, epochs=total, verbose=2,
                          callbacks=[tfscalpel.UpdatePruningStep(), tfscalpel.SparsityHistory()])
    pruned.history = history
    return pruned


def distiller(student, dense, distill):
    """``student`` itself when ``distill`` is None, else a :class:`tfscalpel.Distiller` of it
    with a frozen copy of ``dense`` as the teacher (a copy: the Distiller freezes its teacher,
    and ``dense`` is pruned again afterwards)."""
    if distill is None:
        return student
    teacher = keras.models.clone_model(dense)
    teacher.set_weights(dense.get_weights())
    return tfscalpel.Distiller(student, teacher, **distill)


def best_latencies_us(runtimes, x, rounds=15, iterations=200):
    """Batch-1 latency of each runtime in microseconds: C-timed loops, the runtimes taking turns
    round by round (so a load change on a shared machine hits all of them alike), best round
    kept (the least disturbed one)."""
    for rt in runtimes:
        rt.run(x[:1])
    best = [float("inf")] * len(runtimes)
    for _ in range(rounds):
        for i, rt in enumerate(runtimes):
            best[i] = min(best[i], 1e6 * rt.time_run(iterations))
    return best


def _runtime_error(runtime, x, y):
    logits = runtime.run(x)[0]
    return 100.0 * float(np.mean(np.argmax(logits, axis=1) != y))


def export_and_measure(dense, stripped, group_sizes, train, test, output, target="host"):
    """Export dense and pruned models (float32, int8), run each through the host runtime, and
    return ``(table text, rows)``. The pruned model's layers use the format the exporter's cost
    model picks per layer (group-sparse custom op, TFLite block-sparse, or dense)."""
    import tflite_export
    from tflite_export import runtime

    calibration = train[0][:500]
    rows, reports, blobs = [], [], []
    for quantize in (None, "int8"):
        tag = "int8" if quantize else "float32"
        dense_bytes = tflite_export.convert_keras(dense, quantize, calibration)
        pruned = tflite_export.export(
            stripped, target=target, quantize=quantize, representative_data=calibration,
            group_sizes=group_sizes, output=os.path.join(output, f"lenet300_pruned_{tag}.tflite"))
        reports.append((tag, pruned.report))
        blobs += [(f"dense {tag}", dense_bytes), (f"pruned {tag}", pruned.model_bytes)]
    runtimes = [runtime.load(blob, num_threads=1) for _, blob in blobs]
    try:
        latencies = best_latencies_us(runtimes, test[0])
        for (name, blob), rt, latency in zip(blobs, runtimes, latencies):
            rows.append({"model": name, "bytes": len(blob), "error": _runtime_error(rt, *test),
                         "latency_us": latency})
    finally:
        for rt in runtimes:
            rt.close()
    head = f"{'model':<16}{'file bytes':>12}{'vs dense':>10}{'latency us':>12}{'vs dense':>10}{'test error':>12}"
    lines = [head, "-" * len(head)]
    for i, row in enumerate(rows):
        base = rows[i - i % 2]
        lines.append(f"{row['model']:<16}{row['bytes']:>12,}{row['bytes'] / base['bytes']:>9.3f}x"
                     f"{row['latency_us']:>12.1f}{row['latency_us'] / base['latency_us']:>9.3f}x"
                     f"{row['error']:>11.2f}%")
    for tag, report in reports:
        lines += ["", f"exporter's per-layer choice ({tag}):", report.table()]
    return "\n".join(lines), rows


def results_table(dense_error, pruned_error, report):
    """The main job's table: one row per layer plus the whole model, dense vs pruned."""
    rows = report.layers
    dense_bytes = sum(r.bytes_dense for r in rows)
    gcsr_bytes = sum(r.bytes_group_csr for r in rows)
    csr_bytes = sum(r.bytes_csr for r in rows)
    weights = sum(r.rows * r.cols for r in rows)
    nonzero = sum(r.nonzero for r in rows)
    head = (f"{'':<10}{'shape':>10}{'sparsity':>10}{'groups kept':>16}{'dense B':>12}"
            f"{'CSR B':>11}{'group-CSR B':>13}{'vs dense':>10}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.name:<10}{f'{r.cols}x{r.rows}':>10}{1 - r.density:>10.2%}"
            f"{f'{r.nonzero_groups}/{r.total_groups}':>16}{r.bytes_dense:>12,}{r.bytes_csr:>11,}"
            f"{r.bytes_group_csr:>13,}{r.bytes_group_csr / r.bytes_dense:>9.3f}x"
        )
    lines.append("-" * len(head))
    lines.append(
        f"{'total':<10}{'':>10}{1 - nonzero / weights:>10.2%}{'':>16}{dense_bytes:>12,}"
        f"{csr_bytes:>11,}{gcsr_bytes:>13,}{gcsr_bytes / dense_bytes:>9.3f}x"
    )
    lines.append("")
    lines.append(f"test error: dense {dense_error:.2f} %   pruned {pruned_error:.2f} %")
    return "\n".join(lines), {
        "dense_error": dense_error, "pruned_error": pruned_error,
        "sparsity": 1 - nonzero / weights, "bytes_dense": dense_bytes,
        "bytes_csr": csr_bytes, "bytes_group_csr": gcsr_bytes, "layers": report.to_dicts(),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tfscalpel_jobs.main", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--group-size", default="target",
                        type=lambda v: v if v == "target" else int(v),
                        help="SIMD group width g for every layer, or 'target' (default): per layer "
                             "the export target's int8 width where it divides the fan-in, else 4 "
                             "(with --target host, the registered target of this CPU)")
    parser.add_argument("--sparsity", type=float, default=0.92, help="target weight sparsity")
    parser.add_argument("--dense-epochs", type=int, default=20)
    parser.add_argument("--prune-epochs", type=int, default=15)
    parser.add_argument("--finetune-epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="small data and few epochs (smoke run)")
    parser.add_argument("--target", default="host",
                        help="export target: 'host' (default: the models run here, so every "
                             "layer's candidates are measured on this machine) or a target "
                             "whose cost profile predicts them, e.g. x86-avx2")
    parser.add_argument("--output", default="out/main", help="directory for the model and JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.dense_epochs, args.prune_epochs, args.finetune_epochs = 2, 2, 1
    started = time.time()

    _log("[1/5] loading MNIST")
    train, test = load_data(args.quick)
    _log(f"      {len(train[0]):,} training and {len(test[0]):,} test images")

    _log(f"[2/5] training dense LeNet-300-100 ({args.dense_epochs} epochs)")
    cache = None if args.quick else os.path.join(
        datasets.cache_dir(), f"lenet300_dense_sgd_e{args.dense_epochs}_s{args.seed}.keras")
    dense = train_dense(train, args.dense_epochs, args.seed, cache)
    dense_error = test_error(dense, *test)
    _log(f"      dense test error {dense_error:.2f} %")

    if args.group_size == "target":
        from tflite_export import host_info

        target = host_info.registry_target() if args.target == "host" else args.target
        group_size = target_group_sizes(dense, target)
        widths = "/".join(str(g) for g in group_size.values())
        g_text = f"g={widths} ({'/'.join(group_size)}, for {target or 'no known target'})"
    else:
        group_size = args.group_size
        g_text = f"g={group_size}"
    _log(f"[3/5] pruning with SIMD groups {g_text} to {args.sparsity:.0%} while "
         f"retraining ({args.prune_epochs} + {args.finetune_epochs} epochs)")
    pruned = prune_and_retrain(dense, train, group_size, args.sparsity, args.prune_epochs,
                               args.finetune_epochs, args.seed)

    _log("[4/5] stripping")
    stripped, report = tfscalpel.strip(pruned, return_report=True)
    pruned_error = test_error(stripped, *test)
    table, results = results_table(dense_error, pruned_error, report)
    os.makedirs(args.output, exist_ok=True)
    stripped.save(os.path.join(args.output, "lenet300_pruned.keras"))

    _log("[5/5] exporting to .tflite (float32, int8) and running on the host runtime")
    export_table, results["tflite"] = export_and_measure(
        dense, stripped, report.group_sizes(), train, test, args.output, args.target)
    with open(os.path.join(args.output, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    plots = tfscalpel.report.write_all(args.output, history=pruned.history, strip_report=report,
                                       latency_rows=results["tflite"])

    print()
    print(f"LeNet-300-100 on MNIST, SIMD group pruning {g_text} "
          f"({time.time() - started:.0f} s)")
    print(table)
    print()
    print("TFLite on this CPU (batch 1, 1 thread, best of 15 interleaved rounds; runtime: LiteRT + TFS_GROUP_SPARSE_FC)")
    print(export_table)
    print(f"\nmodels, results.json and plots ({', '.join(sorted(plots))}) written to {args.output}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
