"""Node pruning with trained gates: dense vs pruned LeNet-300-100, LeNet-5 (MNIST) and the
ConvNet (Fashion-MNIST), each with a CPU plan (x86-avx2) and the GPU plan (gpu-ampere).

The models are benchmarks/scalpel_table.py's, trained on all 60,000 images with its SETTINGS
and cached per stage, so this benchmark and the Scalpel table report the same networks and
whichever of the two runs first trains them (the other only measures): the dense network (SGD,
the original schedule), then for each target ``tfscalpel.prune(dense, target=...)`` with the
gates trained by ``tfscalpel.GateTraining`` (three L1 penalty stages, stronger on conv channels
than on Dense units and strongest on LeNet-5's first conv layer, then fine-tuning with the masks
frozen; group-pruned Dense layers of the CPU plan rise on a cubic schedule meanwhile; an FC-only
network's CPU plan is group pruning everywhere, no node removed), stripped. Printed: test
accuracy, kept / original nodes per layer, parameters, MACs per image and LiteRT latency
(float32, batch 1, one thread, stock dense kernels, median of 5 timing loops).

Scalpel's anchors: LeNet-300-100 kept 161/300 and 64/100 nodes (98.48 % -> 98.54 %),
LeNet-5 9/20, 18/50, 65/500 (99.34 % -> 99.34 %). Target: no more kept nodes, at an accuracy no
worse than the dense model's minus 0.1 %.

    python benchmarks/bench_node_pruning.py                  # full data (the table's models)
    python benchmarks/bench_node_pruning.py --only lenet5    # one model
    python benchmarks/bench_node_pruning.py --quick          # the table's --quick models
    python benchmarks/bench_node_pruning.py --seeds 3 --distill   # mean +- std of seeds 0-2,
                                                                  # fine-tuning distilled
    python benchmarks/bench_node_pruning.py --only lenet5 --plans gpu-ampere   # one plan
    python benchmarks/bench_node_pruning.py --validation ...   # tuning: 50,000 / 10,000 of the
                                                               # training images, not the test set

With ``--seeds N`` every number is the mean over the seeds (accuracy +- its sample standard
deviation, kept nodes per layer as their mean) and the anchors are judged on the means.

This is a benchmark, not a test.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfscalpel import datasets  # noqa: E402

import scalpel_table as table  # noqa: E402  (benchmarks/: the models and their cache)

TARGETS = ("x86-avx2", "gpu-ampere")
STAGES = {"x86-avx2": "CPU", "gpu-ampere": "GPU"}
ANCHORS = {"lenet300": {"fc1": 161, "fc2": 64}, "lenet5": {"conv1": 9, "conv2": 18, "fc1": 65}}
TOLERANCE = 0.1  # percentage points below dense


def _count(kernel, nonzero):
    w = keras.ops.convert_to_numpy(kernel)
    return int(np.count_nonzero(w)) if nonzero else int(w.size)


def _positions(shape):
    """Output positions per image: the product of the dimensions between batch and channels."""
    return int(np.prod([int(d) for d in shape[1:-1]], dtype=np.int64))


def macs(model, nonzero=False):
    """Multiply-accumulates per image of the Dense, EinsumDense, Conv2D, DepthwiseConv2D and
    MultiHeadAttention layers (its four projections and the two attention products), a rank-3
    Dense counted at every position; ``nonzero``: only the nonzero weights' (what a sparse
    kernel that skips zeros still multiplies)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.MultiHeadAttention):
            seq = int(layer.output.shape[1])
            for sub in (layer.query_dense, layer.key_dense, layer.value_dense,
                        layer.output_dense):
                total += seq * _count(sub.kernel, nonzero)
            total += 2 * seq * seq * layer.num_heads * layer.key_dim
        elif isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense,
                                keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            total += _positions(layer.output.shape) * _count(layer.kernel, nonzero)
    return total


def latency_us(model, input_shape):
    """LiteRT float32 latency (us) at batch 1, one thread, dense kernels."""
    from tflite_export import converter, runtime

    rt = runtime.load_stock(converter.convert_keras(model), num_threads=1)
    try:
        rt.run(np.zeros((1, *input_shape), np.float32))
        return 1e6 * statistics.median(rt.time_run(300) for _ in range(5))
    finally:
        rt.close()


def nodes(model):
    """``{layer name: units or filters}`` of the Dense and Conv2D layers."""
    return {l.name: int(l.kernel.shape[-1]) for l in model.layers
            if isinstance(l, (keras.layers.Dense, keras.layers.Conv2D))}


def run(key, quick, seed, cache_dir, distill=None, targets=TARGETS, validation=False):
    """Rows (model, plan, accuracy, kept nodes, params, MACs, latency) of one model and seed,
    for the plans of ``targets``."""
    s = table.settings_for(key, quick, validation)
    train, test = table.load_data(s)
    cache = table.Cache(cache_dir, key, s, seed)
    t0 = time.time()
    ms = table.build_models(key, s, train, test, seed, cache, which=tuple(STAGES[t] for t in targets),
                            distill=distill)
    print(f"[bench] {s['title']}: models ready after {time.time() - t0:.0f} s", flush=True)
    dense = ms["dense"]
    dense_acc = table.accuracy(dense, test)
    shape = train[0].shape[1:]
    rows = [(key, s["title"], "dense", dense_acc, nodes(dense), dense.count_params(),
             macs(dense), latency_us(dense, shape))]
    for target in targets:
        model = ms[STAGES[target]]
        rows.append((key, s["title"], target, table.accuracy(model, test), nodes(model),
                     model.count_params(), macs(model), latency_us(model, shape)))
    return rows


def mean_rows(runs):
    """One row list from the row lists of several seeds (same models, same order): accuracy
    becomes ``(mean, sample std)`` (std None for one seed); nodes per layer, params, MACs and
    latency become their means."""
    out = []
    for rows in zip(*runs):
        if len({r[:3] for r in rows}) != 1:
            raise ValueError("mean_rows: the seeds' rows do not line up")
        accs = [r[3] for r in rows]
        std = statistics.stdev(accs) if len(accs) > 1 else None
        kept = {n: statistics.mean(r[4][n] for r in rows) for n in rows[0][4]}
        out.append((*rows[0][:3], (statistics.mean(accs), std), kept,
                    *(statistics.mean(r[i] for r in rows) for i in (5, 6, 7))))
    return out


def kept_text(kept, full):
    """``"fc1 161/300, fc2 64/100"`` for the layers that lost nodes (means print one decimal)."""
    fmt = lambda k: f"{k:g}" if float(k).is_integer() else f"{k:.1f}"  # noqa: E731
    text = ", ".join(f"{n} {fmt(k)}/{full[n]}" for n, k in kept.items() if k != full[n])
    return text or "(none removed)"


def verdict(key, dense_acc, acc, kept):
    """Whether a GPU-plan row meets the anchor: no more kept nodes, accuracy >= dense - 0.1."""
    anchor = ANCHORS.get(key)
    if not anchor:
        return ""
    nodes_ok = all(kept.get(n, 10 ** 9) <= k for n, k in anchor.items())
    acc_ok = acc >= dense_acc - TOLERANCE
    want = ", ".join(f"{n}<={k}" for n, k in anchor.items())
    return (f"anchor {want}: nodes {'met' if nodes_ok else 'NOT met'}, accuracy "
            f"{acc - dense_acc:+.2f} {'met' if acc_ok else 'NOT met'}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the Scalpel table's --quick models")
    parser.add_argument("--seed", type=int, default=0, help="the first seed (default 0)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds seed .. seed+N-1 (default 1)")
    parser.add_argument("--distill", action="store_true",
                        help=f"fine-tune from the dense teacher ({table.DISTILL})")
    parser.add_argument("--only", choices=tuple(table.SETTINGS), action="append")
    parser.add_argument("--cache-dir", default=None, help="default: the Scalpel table's cache")
    parser.add_argument("--validation", action="store_true",
                        help="train on 50,000 training images, report accuracy on the other "
                             "10,000 (for tuning; never tune on the test set)")
    parser.add_argument("--plans", choices=TARGETS, action="append",
                        help="only these plans (default: all; e.g. --plans gpu-ampere, the "
                             "plan the node anchors judge)")
    args = parser.parse_args(argv)
    cache_dir = args.cache_dir or os.path.join(
        str(datasets.cache_dir()), "scalpel_table" + ("_quick" if args.quick else ""))
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    seeds = list(range(args.seed, args.seed + args.seeds))
    distill = table.DISTILL if args.distill else None
    runs = {seed: [] for seed in seeds}
    t0 = time.time()
    for key in args.only or list(table.SETTINGS):
        for seed in seeds:
            runs[seed] += run(key, args.quick, seed, cache_dir, distill,
                              tuple(args.plans or TARGETS), args.validation)
    rows = mean_rows([runs[seed] for seed in seeds])
    head = (f"{'model':<14}{'plan':<12}{'acc %':>14}  {'params':>10}{'MACs':>12}{'LiteRT us':>11}"
            "  kept nodes")
    print("\n" + head + "\n" + "-" * (len(head) + 30))
    dense_acc, full = {}, {}
    for key, title, plan, (acc, std), kept, params, mac, lat in rows:
        dense_acc.setdefault(key, acc)
        full.setdefault(key, kept)
        acc_text = f"{acc:.2f}" + ("" if std is None else f" +- {std:.2f}")
        print(f"{title:<14}{plan:<12}{acc_text:>14}  {params:>10,.0f}{mac:>12,.0f}{lat:>11.1f}"
              f"  {'' if plan == 'dense' else kept_text(kept, full[key])}")
    for key, title, plan, (acc, _), kept, *_ in rows:
        if plan == "gpu-ampere" and key in ANCHORS:
            print(f"{title} {plan}: {verdict(key, dense_acc[key], acc, kept)}")
    print(f"\ntotal {time.time() - t0:.0f}s; LiteRT float32, batch 1, 1 thread, dense kernels"
          + (f"; seed {seeds[0]}" if len(seeds) == 1 else f"; mean of seeds {seeds}")
          + (f"; fine-tuning distilled {table.DISTILL} (or a model's gates.distill.teacher)"
             if distill else "")
          + ("; VALIDATION split (last 10,000 training images), not the test set"
             if args.validation else "")
          + ("; --quick: subsets, numbers are not comparable to the paper" if args.quick else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
