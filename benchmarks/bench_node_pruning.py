"""Node pruning with trained gates: dense vs pruned LeNet-300-100, LeNet-5 (MNIST) and the
ConvNet (Fashion-MNIST), each with a CPU plan (x86-avx2) and the GPU plan (gpu-ampere).

For every model: train the dense network (Adam, a fixed number of steps), then for each target
``tfscalpel.prune(dense, target=...)``, train the gates with ``tfscalpel.GateTraining`` in
"epochs" of a fixed number of steps (three L1 penalty stages, stronger on conv channels than on
Dense units, then fine-tuning with the masks frozen; group-pruned layers of the CPU plan reach
``sparsity=0.75`` at once), ``tfscalpel.strip`` it, and print: test accuracy, kept / original
nodes per layer, parameters, MACs per image and LiteRT latency (float32, batch 1, one thread,
stock dense kernels, median of 5 timing loops). Gates move fast enough for short stages because
MaskLayer trains ``gate / gate_scale`` (see tfscalpel/gates.py).

Scalpel's anchors: LeNet-300-100 kept 161/300 and 64/100 nodes (98.48 % -> 98.54 %),
LeNet-5 9/20, 18/50, 65/500 (99.34 % -> 99.34 %).

    python benchmarks/bench_node_pruning.py                  # full data
    python benchmarks/bench_node_pruning.py --only lenet5    # one model
    python benchmarks/bench_node_pruning.py --quick          # small subsets, a few minutes

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

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfscalpel  # noqa: E402
from tfscalpel import datasets, models  # noqa: E402

TARGETS = ("x86-avx2", "gpu-ampere")


def macs(model):
    """Multiply-accumulates per image of the Dense, Conv2D and DepthwiseConv2D layers."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            h, w = layer.output.shape[1:3]
            total += int(h * w * np.prod(layer.kernel.shape))
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


def accuracy(model, x, y):
    return 100.0 * float(np.mean(np.argmax(model.predict(x, batch_size=1000, verbose=0), 1) == y))


def load(name, quick, limit):
    loader = datasets.load_fashion_mnist if name == "fashion" else datasets.load_mnist
    (x, y), (xt, yt) = loader()
    n = 6000 if quick else limit
    if n:
        x, y = x[:n], y[:n]
    if quick:
        xt, yt = xt[:2000], yt[:2000]
    return x, y, xt, yt


def _batches(x, y, seed):
    """Endless shuffled batches of 128, so a Keras "epoch" can be any number of steps."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed)
    return ds.repeat().batch(128).prefetch(2)


def run(name, builder, data, flatten, dense_steps, chunk, gate_kwargs, group_sparsity, seed):
    """Dense training for ``dense_steps`` steps; gate training in "epochs" of ``chunk`` steps
    (GateTraining's stages and fine-tuning count these chunks)."""
    x, y, xt, yt = data
    x, xt = datasets.to_model_inputs(x, flatten), datasets.to_model_inputs(xt, flatten)
    keras.utils.set_random_seed(seed)
    dense = models.compile_classifier(builder(), keras.optimizers.Adam(1e-3))
    t0 = time.time()
    dense.fit(_batches(x, y, seed), steps_per_epoch=dense_steps, epochs=1, verbose=0)
    rows = [(name, "dense", accuracy(dense, xt, yt), "", dense.count_params(), macs(dense),
             latency_us(dense, x.shape[1:]))]
    print(f"[bench] {name} dense: {dense_steps} steps in {time.time() - t0:.0f}s, "
          f"{rows[0][2]:.2f} %", flush=True)
    for target in TARGETS:
        keras.utils.set_random_seed(seed)
        pruned = tfscalpel.prune(dense, target=target, sparsity=group_sparsity)
        print(tfscalpel.plan(dense, target), flush=True)
        models.compile_classifier(pruned, keras.optimizers.Adam(1e-3))
        gates = tfscalpel.GateTraining(**gate_kwargs)
        # A plan without node pruning (LeNet-300-100 on a CPU: groups only) retrains as long.
        callbacks = [gates] if tfscalpel.mask_layers(pruned) else []
        if tfscalpel.pruned_layers(pruned):
            callbacks.append(tfscalpel.UpdatePruningStep())
        t0 = time.time()
        pruned.fit(_batches(x, y, seed + 1), steps_per_epoch=chunk, epochs=gates.total_epochs,
                   verbose=0, callbacks=callbacks)
        stripped, report = tfscalpel.strip(pruned, return_report=True)
        diff = float(np.max(np.abs(stripped.predict(xt[:256], verbose=0)
                                   - pruned.predict(xt[:256], verbose=0))))
        kept = ", ".join(f"{r.name} {r.nodes_kept}/{r.nodes_total}" for r in report.layers
                         if r.nodes_kept != r.nodes_total)
        acc = accuracy(stripped, xt, yt)
        print(f"[bench] {name} {target}: {gates.total_epochs * chunk} gate-training steps in "
              f"{time.time() - t0:.0f}s, {acc:.2f} %, {kept or 'no node removed'}, "
              f"max |stripped - gated| = {diff:.1e}", flush=True)
        rows.append((name, target, acc, kept or "(none removed)",
                     stripped.count_params(), macs(stripped), latency_us(stripped, x.shape[1:])))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small subsets, few epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=("lenet300", "lenet5", "convnet"), action="append")
    args = parser.parse_args(argv)
    q = args.quick
    mnist = load("mnist", q, None)
    fashion = load("fashion", q, None)
    # Gate training: three penalty stages of one chunk each, then fine-tuning with the masks
    # frozen. Conv channels get stronger penalties than Dense units (see GateTraining).
    ft = 2 if q else 4
    dense_pen = (1e-4, 3e-4, 1e-3)
    conv_pen = (1e-3, 3e-3, 8e-3)
    lenet5_pen = {"conv": conv_pen, "dense": (2e-4, 6e-4, 2e-3)}
    # name, builder, data, flatten, dense steps, chunk (steps), GateTraining kwargs, group sparsity
    configs = {
        "lenet300": ("LeNet-300-100", models.lenet_300_100, mnist, True, 300 if q else 4000,
                     60 if q else 300, dict(penalties=dense_pen, finetune_epochs=ft), 0.75),
        "lenet5": ("LeNet-5", models.lenet5, mnist, False, 200 if q else 800, 60 if q else 120,
                   dict(penalties=lenet5_pen, finetune_epochs=ft), 0.75),
        "convnet": ("ConvNet", models.convnet, fashion, False, 200 if q else 500,
                    60 if q else 80,
                    dict(penalties={"conv": conv_pen, "dense": dense_pen}, finetune_epochs=ft),
                    0.75),
    }
    rows = []
    t0 = time.time()
    for key in args.only or list(configs):
        rows += run(*configs[key], args.seed)
    head = (f"{'model':<14}{'plan':<12}{'acc %':>7}  {'params':>8}{'MACs':>11}{'LiteRT us':>11}"
            "  kept nodes")
    print("\n" + head + "\n" + "-" * (len(head) + 30))
    for name, plan, acc, kept, params, mac, lat in rows:
        print(f"{name:<14}{plan:<12}{acc:>7.2f}  {params:>8,}{mac:>11,}{lat:>11.1f}  {kept}")
    print(f"\ntotal {time.time() - t0:.0f}s; LiteRT float32, batch 1, 1 thread, dense kernels"
          + ("; --quick: subsets, numbers are not comparable to the paper" if q else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
