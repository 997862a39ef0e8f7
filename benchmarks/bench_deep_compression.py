"""Deep Compression on LeNet-300-100 and LeNet-5 (MNIST): prune -> int8 -> coded size, beside
Han et al.'s published figures.

    python benchmarks/bench_deep_compression.py [--quick] [--models lenet300,lenet5]

1. train the dense network (SGD; cached by settings, LeNet-300-100 shares tfscalpel_jobs.main's),
2. prune unstructured by magnitude to Han et al.'s per-layer densities (LeNet-300-100: 8 %,
   9 %, 26 %; LeNet-5: 66 %, 12 %, 8 %, 19 %) on a cubic schedule while retraining (Adam),
   then fine-tune with the masks fixed,
3. strip, quantize to int8 with post-training quantization through the exporter (checked:
   every pruned weight is still exactly zero), and run the int8 .tflite on LiteRT for its
   test error (TensorFlow's TFLite interpreter),
4. price the weights: dense float32, int8 relative-index sparse format, Huffman-coded.
"""
import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfscalpel  # noqa: E402
from tfscalpel import datasets, models  # noqa: E402
from tflite_export import compression  # noqa: E402

# Han et al. 2015, Tables 1-2: fraction of weights kept per layer.
HAN_DENSITY = {
    "lenet300": {"fc1": 0.08, "fc2": 0.09, "fc3": 0.26},
    "lenet5": {"conv1": 0.66, "conv2": 0.12, "fc1": 0.08, "fc2": 0.19},
}
BUILD = {"lenet300": (models.lenet_300_100, True, "lenet_300_100"),
         "lenet5": (models.lenet5, False, "lenet5")}


def _log(msg):
    print(f"[deep-compression] {msg}", flush=True)


def _error(predict, x, y):
    return 100.0 * float(np.mean(np.argmax(predict(x), axis=1) != y))


def _run_tflite(model_bytes, x):
    """Logits of an int8 .tflite on TensorFlow's own interpreter (reference kernels path)."""
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_content=model_bytes)
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x.astype(inp["dtype"]))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def train_dense(name, train, epochs, seed, quick):
    build = BUILD[name][0]
    cache = None if quick else os.path.join(
        datasets.cache_dir(), f"{name}_dense_sgd_e{epochs}_s{seed}.keras")
    if cache and os.path.exists(cache):
        _log(f"reusing the dense model cached at {cache}")
        return keras.models.load_model(cache)
    keras.utils.set_random_seed(seed)
    model = build()
    steps = epochs * int(np.ceil(len(train[0]) / 128))
    lr = keras.optimizers.schedules.CosineDecay(0.05, steps, alpha=0.01)
    models.compile_classifier(model, keras.optimizers.SGD(lr, momentum=0.9))
    model.fit(*train, batch_size=128, epochs=epochs, verbose=2)
    if cache:
        model.save(cache)
    return model


def prune_and_retrain(name, dense, train, prune_epochs, finetune_epochs, seed):
    keras.utils.set_random_seed(seed)
    steps_per_epoch = int(np.ceil(len(train[0]) / 128))
    end = max(1, prune_epochs * steps_per_epoch - steps_per_epoch // 2)
    frequency = max(1, min(100, end // 20))
    per_layer = {
        layer: {"schedule": tfscalpel.PolynomialDecay(0.0, 1.0 - density, begin_step=0,
                                                      end_step=end, frequency=frequency)}
        for layer, density in HAN_DENSITY[name].items()
    }
    pruned = tfscalpel.prune(dense, sparsity=0.0, pattern="unstructured", per_layer=per_layer)
    total = prune_epochs + finetune_epochs
    lr = keras.optimizers.schedules.CosineDecay(1e-3, total * steps_per_epoch, alpha=0.01)
    models.compile_classifier(pruned, keras.optimizers.Adam(lr))
    pruned.fit(*train, batch_size=128, epochs=total, verbose=2,
               callbacks=[tfscalpel.UpdatePruningStep()])
    return tfscalpel.strip(pruned)


def run_model(name, args):
    flat = BUILD[name][1]
    (x, y), (xt, yt) = datasets.load_mnist()
    if args.quick:
        x, y, xt, yt = x[:6000], y[:6000], xt[:2000], yt[:2000]
    x, xt = datasets.to_model_inputs(x, flatten=flat), datasets.to_model_inputs(xt, flatten=flat)
    _log(f"{name}: dense training ({args.dense_epochs} epochs)")
    dense = train_dense(name, (x, y), args.dense_epochs, args.seed, args.quick)
    dense_error = _error(lambda a: dense.predict(a, batch_size=1000, verbose=0), xt, yt)
    _log(f"{name}: dense error {dense_error:.2f} %; pruning to Han's densities "
         f"({args.prune_epochs} + {args.finetune_epochs} epochs)")
    stripped = prune_and_retrain(name, dense, (x, y), args.prune_epochs, args.finetune_epochs,
                                 args.seed)
    pruned_error = _error(lambda a: stripped.predict(a, batch_size=1000, verbose=0), xt, yt)
    _log(f"{name}: pruned float32 error {pruned_error:.2f} %; int8 post-training quantization")
    tflite_bytes, report = compression.deep_compression(stripped, x[:500])
    int8_error = _error(lambda a: _run_tflite(tflite_bytes, a), xt, yt)
    return {"name": name, "dense_error": dense_error, "pruned_error": pruned_error,
            "int8_error": int8_error, "report": report, "tflite_bytes": len(tflite_bytes)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="6k images, 1-2 epochs per stage")
    parser.add_argument("--models", default="lenet300,lenet5")
    parser.add_argument("--dense-epochs", type=int, default=20)
    parser.add_argument("--prune-epochs", type=int, default=10)
    parser.add_argument("--finetune-epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.dense_epochs, args.prune_epochs, args.finetune_epochs = 2, 2, 1
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(BUILD))
    if unknown:
        parser.error(f"unknown models {unknown}; allowed: {sorted(BUILD)}")
    started = time.time()
    results = [run_model(name, args) for name in names]

    print()
    print(f"Deep Compression chain on MNIST ({time.time() - started:.0f} s; "
          f"{'quick: 6k/2k images' if args.quick else 'full 60k/10k'})")
    for r in results:
        print(f"\n{r['name']}: per-layer sizes (bytes; biases and int8 scales included)")
        print(r["report"])
    head = (f"{'model':<10}{'error dense/pruned/int8':>26}{'fp32 KB':>9}{'int8 sparse KB':>16}"
            f"{'Huffman KB':>12}{'ratio':>7}   Han et al. 2016 (KB -> KB, ratio, error)")
    print()
    print(head)
    print("-" * len(head))
    for r in results:
        rep, han = r["report"], compression.HAN_LENET[BUILD[r["name"]][2]]
        errors = f"{r['dense_error']:.2f}/{r['pruned_error']:.2f}/{r['int8_error']:.2f} %"
        print(f"{r['name']:<10}{errors:>26}{rep.total('dense_fp32') / 1000:>9.0f}"
              f"{rep.total('sparse_int8') / 1000:>16.1f}{rep.total('huffman') / 1000:>12.1f}"
              f"{rep.ratio:>6.1f}x   {han['dense_kb']} -> {han['compressed_kb']}, "
              f"{han['ratio']}x, {han['dense_error']:.2f} -> {han['error']:.2f} %")
    print("\nint8 .tflite file sizes (dense layout, for reference): "
          + ", ".join(f"{r['name']} {r['tflite_bytes'] / 1000:.0f} KB" for r in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
