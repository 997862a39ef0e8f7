"""Training-step time of LeNet-300-100 and LeNet-5 on MNIST: dense Keras 3 vs tfscalpel vs tfmot.

Prints one table per model: milliseconds per training step (batch 128, Adam) for

  (a)  the dense Keras 3 model,
  (b)  ``tfscalpel.prune`` with SIMD groups of 4 and (b2) with the unstructured pattern, both
       under ``PolynomialDecay(0 -> 0.9, frequency=100)`` and trained with
       ``tfscalpel.UpdatePruningStep`` -- the overhead a user really sees, mask recomputation
       every 100 steps included,
  (c0) the same network as a dense tf-keras (Keras 2) model and
  (c)  tfmot's ``prune_low_magnitude`` with the same schedule, both measured in one
       ``TF_USE_LEGACY_KERAS=1`` subprocess (tfmot must never be imported in a Keras 3
       process), so tfmot's ratio is relative to its own dense baseline.

Every configuration trains a freshly initialised (seeded) model with ``model.fit`` on the same
pre-shuffled MNIST batches: ``--warmup`` steps (tracing, first mask update) are discarded,
then ``--steps`` steps are timed in windows of ``--window`` steps, one ``fit`` call per
window, from the first batch's begin to the epoch's end (no batch-end hook, which would
change Keras 3's batch-end dispatch on backends with an asynchronous one), the
configurations of one process taking turns window by window, in reversed order every other
round (A B C, C B A, ...; the machine may be shared: turns spread any load change over all
of them, and alternating cancels the cost of going first or last).
The window equals the pruning frequency, so every window holds exactly one mask
recomputation. The table reports the median over windows of the mean step time in each window,
the ratio of those medians to the dense one, and the *paired* ratio: the median over rounds of
each window's time divided by the dense window of the same round (a few seconds apart), which
a load change between rounds does not move.

Targets printed beside the numbers: tfscalpel (group g=4) <= 1.05x its dense baseline on
LeNet-300-100 and <= 1.10x on LeNet-5 (median paired ratio), and below tfmot's paired ratio to
its own dense baseline.

    python benchmarks/bench_training_step.py            # both models, 50 warm-up + 1000 steps
    python benchmarks/bench_training_step.py --model lenet5 --quick   # one model, rough

This is a benchmark, not a test: nothing here is run by the test suite.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

# Nothing heavy is imported at module level: the same file runs as the tfmot worker in a
# TF_USE_LEGACY_KERAS=1 subprocess, which must never import Keras 3 or tfscalpel.

#: The model builders of tfscalpel.models and each one's target (median ratio to dense).
TARGET_RATIO = {"lenet_300_100": 1.05, "lenet5": 1.10}
BATCH_SIZE = 128
FREQUENCY = 100
FINAL_SPARSITY = 0.9


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def load_average():
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[0]
    except OSError:
        return "?"


def set_threads(tf, threads):
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def make_dataset(tf, x, y, batch_size):
    """Pre-shuffled arrays -> fixed-size batches, repeated forever (same order everywhere)."""
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    return ds.batch(batch_size, drop_remainder=True).repeat().prefetch(2)


#: ``--clock``: wall time, or the CPU time of the whole process (every thread). On a shared
#: machine other processes stretch wall time at random; CPU time counts this process's work only.
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def step_timer(callback_base, clock):
    """A callback recording the time at the first batch begin and at the epoch end.

    It has no ``on_train_batch_end`` on purpose: a callback defining one turns off the
    asynchronous batch-end dispatch of Keras 3 backends that have it (JAX, PyTorch; the
    TensorFlow backend's batch ends are synchronous anyway), so every configuration is timed in
    the dispatch mode a user's ``fit`` runs in (tfscalpel's callbacks keep it). Listed last, it
    starts after the other callbacks' first-batch setup (once per ``fit`` call, i.e. per window
    here, but once per training for a user)."""

    class StepTimer(callback_base):
        def __init__(self):
            super().__init__()
            self.start = self.end = None

        def on_train_batch_begin(self, batch, logs=None):
            if self.start is None:
                self.start = clock()

        def on_epoch_end(self, epoch, logs=None):
            self.end = clock()

    return StepTimer()


def fit_steps(model, dataset, callbacks, callback_base, steps, clock):
    """``model.fit`` for ``steps`` steps (one epoch); returns the mean ms/step from the first
    batch to the end of the epoch (the callbacks' per-batch work, UpdatePruningStep's included,
    is inside the window)."""
    timer = step_timer(callback_base, CLOCKS[clock])
    model.fit(dataset, epochs=1, steps_per_epoch=steps, callbacks=list(callbacks) + [timer],
              shuffle=False, verbose=0)
    return (timer.end - timer.start) / steps * 1e3


def time_interleaved(configs, dataset, callback_base, args, tag):
    """Warm every configuration up, then time them window by window in turn (A B C C B A ...),
    so a change in machine load hits all of them alike. ``configs``: name -> (model, callbacks),
    models compiled. Returns name -> {"windows_ms", "median_ms", "best_ms"}; ``windows_ms[w]``
    of every configuration comes from the same round ``w``."""
    windows = {name: [] for name in configs}
    for name, (model, callbacks) in configs.items():
        ms = fit_steps(model, dataset, callbacks, callback_base, args.warmup, args.clock)
        log(f"{tag}/{name}: {args.warmup} warm-up steps done ({ms:.2f} ms/step incl. tracing)")
    n_windows = args.steps // args.window
    for w in range(n_windows):
        order = list(configs) if w % 2 == 0 else list(reversed(configs))
        for name in order:
            model, callbacks = configs[name]
            windows[name].append(fit_steps(model, dataset, callbacks, callback_base, args.window,
                                           args.clock))
        log(f"{tag}: window {w + 1}/{n_windows} (" + ", ".join(
            f"{name} {ms[-1]:.3f}" for name, ms in windows.items()) + " ms/step)")
    return {name: {"windows_ms": ms, "median_ms": statistics.median(ms), "best_ms": min(ms)}
            for name, ms in windows.items()}


def round_ratios(res, base):
    """Each round's window time of ``res`` over ``base``'s window in the same round."""
    return [r / b for r, b in zip(res["windows_ms"], base["windows_ms"])]


def paired_ratio(res, base):
    """The median over rounds of :func:`round_ratios`."""
    return statistics.median(round_ratios(res, base))


def paired_quartiles(res, base):
    """The first and third quartiles of the per-round ratios behind :func:`paired_ratio`: how
    far one round's ratio strays, i.e. how much one run's median can be trusted."""
    ratios = round_ratios(res, base)
    if len(ratios) < 2:
        return ratios[0], ratios[0]
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return q1, q3


def schedule_end(args):
    # Sparsity rises over the whole run, so masks are recomputed in every timed window.
    return args.warmup + args.steps


# ---------------------------------------------------------------------------------------------
# Keras 3 side: dense and tfscalpel
# ---------------------------------------------------------------------------------------------
def run_keras3(args, x, y):
    import keras
    import tensorflow as tf

    import tfscalpel
    from tfscalpel import models
    from tfscalpel.models import compile_classifier

    set_threads(tf, args.threads)
    dataset = make_dataset(tf, x, y, BATCH_SIZE)

    def fresh_dense():
        keras.utils.set_random_seed(args.seed)
        return getattr(models, args.model)()

    def schedule():
        return tfscalpel.PolynomialDecay(0.0, FINAL_SPARSITY, begin_step=0,
                                         end_step=schedule_end(args), frequency=FREQUENCY)

    builders = {
        "dense": lambda: (fresh_dense(), []),
        "group4": lambda: (tfscalpel.prune(fresh_dense(), schedule=schedule(), group_size=4),
                           [tfscalpel.UpdatePruningStep()]),
        "unstructured": lambda: (tfscalpel.prune(fresh_dense(), schedule=schedule(),
                                                 pattern="unstructured"),
                                 [tfscalpel.UpdatePruningStep()]),
    }
    configs = {}
    for name, build in builders.items():
        model, callbacks = build()
        compile_classifier(model, optimizer=keras.optimizers.Adam())
        configs[name] = (model, callbacks)
    results = time_interleaved(configs, dataset, keras.callbacks.Callback, args, "keras3")
    for name in ("group4", "unstructured"):
        sparsity = [round(layer.mask_sparsity(), 3)
                    for layer in tfscalpel.pruned_layers(configs[name][0])]
        results[name]["final_sparsity"] = sparsity
        log(f"keras3/{name}: final mask sparsity per layer {sparsity}")
    return {"versions": {"keras": keras.__version__, "tensorflow": tf.__version__},
            "results": results}


# ---------------------------------------------------------------------------------------------
# tf-keras side (subprocess): dense and tfmot
# ---------------------------------------------------------------------------------------------
def run_tfmot_worker(args):
    """Runs in the TF_USE_LEGACY_KERAS=1 subprocess; writes its results as JSON."""
    import numpy as np
    import tensorflow as tf
    import tf_keras
    import tensorflow_model_optimization as tfmot

    set_threads(tf, args.threads)
    data = np.load(args.data)
    dataset = make_dataset(tf, data["x"], data["y"], BATCH_SIZE)

    def fresh_dense():
        # The same networks as tfscalpel.models, in tf-keras.
        tf_keras.utils.set_random_seed(args.seed)
        layers = tf_keras.layers
        if args.model == "lenet5":
            inputs = tf_keras.Input((28, 28, 1), name="input")
            h = layers.MaxPooling2D(2)(layers.Conv2D(20, 5, name="conv1")(inputs))
            h = layers.MaxPooling2D(2)(layers.Conv2D(50, 5, name="conv2")(h))
            h = layers.Dense(500, activation="relu", name="fc1")(layers.Flatten()(h))
            return tf_keras.Model(inputs, layers.Dense(10, name="fc2")(h), name="lenet5")
        inputs = tf_keras.Input((784,), name="input")
        h = layers.Dense(300, activation="relu", name="fc1")(inputs)
        h = layers.Dense(100, activation="relu", name="fc2")(h)
        outputs = layers.Dense(10, name="fc3")(h)
        return tf_keras.Model(inputs, outputs, name="lenet_300_100")

    def tfmot_pruned():
        schedule = tfmot.sparsity.keras.PolynomialDecay(
            0.0, FINAL_SPARSITY, begin_step=0, end_step=schedule_end(args), frequency=FREQUENCY)
        model = tfmot.sparsity.keras.prune_low_magnitude(fresh_dense(), pruning_schedule=schedule)
        return model, [tfmot.sparsity.keras.UpdatePruningStep()]

    configs = {}
    for name, build in {"dense": lambda: (fresh_dense(), []), "tfmot": tfmot_pruned}.items():
        model, callbacks = build()
        model.compile(optimizer=tf_keras.optimizers.Adam(),
                      loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        configs[name] = (model, callbacks)
    results = time_interleaved(configs, dataset, tf_keras.callbacks.Callback, args, "tf-keras")
    stripped = tfmot.sparsity.keras.strip_pruning(configs["tfmot"][0])
    sparsity = [round(float(np.mean(layer.kernel.numpy() == 0)), 3)
                for layer in stripped.layers if hasattr(layer, "kernel")]
    results["tfmot"]["final_sparsity"] = sparsity
    log(f"tf-keras/tfmot: final kernel sparsity per layer {sparsity}")
    out = {"versions": {"tf_keras": tf_keras.__version__, "tfmot": tfmot.__version__},
           "results": results}
    with open(args.json_out, "w") as f:
        json.dump(out, f)


def run_tfmot_subprocess(args, data_path):
    json_out = data_path + ".json"
    cmd = [sys.executable, os.path.abspath(__file__), "--tfmot-worker", "--data", data_path,
           "--json-out", json_out, "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--window", str(args.window), "--threads", str(args.threads), "--seed", str(args.seed),
           "--model", args.model, "--clock", args.clock]
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    log("starting the tf-keras/tfmot subprocess (TF_USE_LEGACY_KERAS=1)")
    proc = subprocess.run(cmd, env=env, stdout=sys.stderr, stderr=sys.stderr)
    if proc.returncode != 0:
        log(f"tfmot subprocess failed with exit status {proc.returncode}; tfmot rows skipped")
        return None
    with open(json_out) as f:
        return json.load(f)


# ---------------------------------------------------------------------------------------------
# Table
# ---------------------------------------------------------------------------------------------
def print_table(args, k3, legacy):
    rows = []  # (label, framework, result, baseline result, target text)
    dense = k3["results"]["dense"]
    tfmot_ratio = None
    if legacy is not None:
        results = legacy["results"]
        tfmot_ratio = paired_ratio(results["tfmot"], results["dense"])

    target_ratio = TARGET_RATIO[args.model]

    def target_group(ratio):
        ok = ratio <= target_ratio
        text = f"<= {target_ratio:.2f}x: {'PASS' if ok else 'FAIL'}"
        if tfmot_ratio is not None:
            beat = ratio < tfmot_ratio
            text += f"; < tfmot {tfmot_ratio:.3f}x: {'PASS' if beat else 'FAIL'}"
        return text

    rows.append(("(a)  dense", "keras 3", dense, dense, "baseline"))
    rows.append(("(b)  tfscalpel group g=4", "keras 3", k3["results"]["group4"], dense,
                 target_group))
    rows.append(("(b2) tfscalpel unstructured", "keras 3", k3["results"]["unstructured"], dense,
                 "(for reference)"))
    if legacy is not None:
        ldense = legacy["results"]["dense"]
        rows.append(("(c0) dense", "tf-keras", ldense, ldense, "baseline"))
        rows.append(("(c)  tfmot prune_low_magnitude", "tf-keras", legacy["results"]["tfmot"],
                     ldense, "(overhead to beat)"))

    versions = dict(k3["versions"], **(legacy or {}).get("versions", {}))
    n_windows = len(dense["windows_ms"])
    print()
    print(f"Training-step time: {args.model} on MNIST, batch 128, Adam, model.fit")
    from tflite_export import host_info  # main process only (the tfmot worker must not)

    print(f"machine: {host_info.describe()}; TF threads intra={args.threads}"
          f" inter={args.threads}, CPU only (no XLA); {datetime.datetime.now():%Y-%m-%d %H:%M}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items())
          + f", python {platform.python_version()}")
    print(f"timing: {args.clock} clock; {args.warmup} warm-up + {args.steps} timed steps per "
          "configuration, "
          "interleaved; "
          f"median of {n_windows} windows of {args.window} steps, seed {args.seed}")
    print(f"pruning: PolynomialDecay 0 -> {FINAL_SPARSITY} over steps 0..{schedule_end(args)}, "
          f"frequency {FREQUENCY} (one mask update per window), UpdatePruningStep callback")
    print(f"load average (1 min) at start {args.load_start}, at end {load_average()} "
          f"(above {args.threads} the machine was shared and windows are noisy: "
          "compare the paired and best-window columns too)")
    print("ratio: median ms/step over dense's; paired: median over rounds of the window's time "
          "over dense's window in the same round, and its quartiles over the rounds; (best): best "
          "window over dense's best")
    print()
    header = (f"{'configuration':<31} {'framework':<9} {'ms/step':>8} {'best':>7} {'worst':>7} "
              f"{'ratio':>6} {'paired':>6} {'quartiles':>11} {'(best)':>6}  "
              "target (on the paired ratio)")
    print(header)
    print("-" * (len(header) + 6))
    for label, framework, res, base, target in rows:
        ratio = res["median_ms"] / base["median_ms"]
        paired = paired_ratio(res, base)
        q1, q3 = paired_quartiles(res, base)
        best_ratio = res["best_ms"] / base["best_ms"]
        target_text = target(paired) if callable(target) else target
        print(f"{label:<31} {framework:<9} {res['median_ms']:>8.3f} {res['best_ms']:>7.3f} "
              f"{max(res['windows_ms']):>7.3f} {ratio:>5.2f}x {paired:>5.3f}x {q1:.3f}-{q3:.3f}"
              f" {best_ratio:>5.2f}x  {target_text}")
    if legacy is None:
        print("(no tfmot rows: " + ("--no-tfmot given)" if args.no_tfmot else
                                    "the TF_USE_LEGACY_KERAS=1 subprocess failed, see above)"))
    print()
    ratio = paired_ratio(k3["results"]["group4"], dense)
    return ratio <= target_ratio and (tfmot_ratio is None or ratio < tfmot_ratio)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1000,
                   help="timed steps per configuration (default 1000)")
    p.add_argument("--warmup", type=int, default=50, help="untimed warm-up steps (default 50)")
    p.add_argument("--window", type=int, default=FREQUENCY,
                   help=f"steps per timing window (default {FREQUENCY}, the pruning frequency)")
    p.add_argument("--quick", action="store_true",
                   help="a rough run: 20 warm-up + 200 timed steps")
    p.add_argument("--threads", type=int, default=2,
                   help="TF intra- and inter-op threads (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="wall time (default), or process CPU time: use cpu with --threads 1 on "
                        "a shared machine")
    p.add_argument("--model", choices=sorted(TARGET_RATIO) + ["both"], default="both",
                   help="the network to time (default both, one table each)")
    p.add_argument("--no-tfmot", action="store_true", help="skip the tfmot subprocess")
    # Internal: the tfmot worker.
    p.add_argument("--tfmot-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--json-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.warmup = 200, 20
    if args.window < 1 or args.steps < args.window or args.warmup < 1:
        p.error("need --warmup >= 1, --window >= 1 and --steps >= --window")
    args.steps -= args.steps % args.window  # whole windows only
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.tfmot_worker:
        run_tfmot_worker(args)
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    from tfscalpel.datasets import load_mnist, to_model_inputs

    start = time.perf_counter()
    log("loading MNIST")
    (x_train, y_train), _ = load_mnist()
    order = np.random.default_rng(args.seed).permutation(len(x_train))
    y = y_train[order].astype(np.int32)
    for model in list(TARGET_RATIO) if args.model == "both" else [args.model]:
        one = argparse.Namespace(**vars(args))
        one.model, one.load_start = model, load_average()
        x = to_model_inputs(x_train[order], flatten=model == "lenet_300_100")
        with tempfile.TemporaryDirectory(prefix="bench_training_step_") as tmp:
            data_path = os.path.join(tmp, "mnist.npz")
            np.savez(data_path, x=x, y=y)
            k3 = run_keras3(one, x, y)
            legacy = None if args.no_tfmot else run_tfmot_subprocess(one, data_path)
        print_table(one, k3, legacy)
    log(f"done in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
