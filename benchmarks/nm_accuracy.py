"""2:4 accuracy: LeNet-300-100 on MNIST and the ConvNet on Fashion-MNIST, dense vs 2:4.

NVIDIA's recipe (tfscalpel.prune_2_4): train dense, prune every eligible layer to 2:4 by
magnitude along the input dimension (mask fixed from then on), fine-tune with the original
optimizer and learning-rate schedule for as many epochs as the dense training, strip, check.

    python benchmarks/nm_accuracy.py [--quick] [--models lenet,convnet] [--epochs N] [--permute]

Prints the recipe's per-layer plan and one table: test accuracy dense vs 2:4 and whether the
2:4 model is within 0.2 % (absolute) of dense. Dense models are cached in the tfscalpel cache.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfscalpel  # noqa: E402
from tfscalpel import datasets, models  # noqa: E402

TOLERANCE = 0.2  # percentage points


#: name -> (builder, data set, flat inputs)
MODELS = {"lenet": (models.lenet_300_100, "mnist", True),
          "lenet5": (models.lenet5, "mnist", False),
          "convnet": (models.convnet, "fashion", False)}
DATA_NAMES = {"mnist": "MNIST", "fashion": "Fashion-MNIST"}
#: Dense epochs (= fine-tuning epochs) of the full run; benchmarks/scalpel_table.py trains its
#: dense conv nets the same way, so the cached models are shared.
DEFAULT_EPOCHS = {"lenet": 20, "lenet5": 10, "convnet": 12}


def _data(name, quick):
    _, data, flat = MODELS[name]
    loader = datasets.load_mnist if data == "mnist" else datasets.load_fashion_mnist
    (x, y), (xt, yt) = loader()
    if quick:
        x, y, xt, yt = x[:4000], y[:4000], xt[:1000], yt[:1000]
    return (datasets.to_model_inputs(x, flatten=flat), y), (datasets.to_model_inputs(xt, flatten=flat), yt)


def _compile(model, epochs, n_train):
    """The original schedule: SGD momentum 0.9, batch 128, cosine-decayed learning rate."""
    steps = epochs * int(np.ceil(n_train / 128))
    lr = keras.optimizers.schedules.CosineDecay(0.05, steps, alpha=0.01)
    return models.compile_classifier(model, keras.optimizers.SGD(lr, momentum=0.9))


def accuracy(model, x, y):
    logits = model.predict(x, batch_size=1000, verbose=0)
    return 100.0 * float(np.mean(np.argmax(logits, axis=1) == y))


def dense_path(name, epochs, seed=0):
    """Cache file of the dense model trained with the original schedule (full data)."""
    return os.path.join(datasets.cache_dir(), f"nm_{name}_dense_sgd_e{epochs}_s{seed}.keras")


def dense_model(name, epochs, seed=0, quick=False, data=None):
    """The dense model trained for ``epochs`` with the original schedule (seeded); cached on
    full data, so benchmarks/scalpel_table.py shares the same conv nets."""
    train, _ = data or _data(name, quick)
    build = MODELS[name][0]
    cache = None if quick else dense_path(name, epochs, seed)
    if cache and os.path.exists(cache):
        print(f"[{name}] dense model from cache {cache}", flush=True)
        return keras.models.load_model(cache)
    keras.utils.set_random_seed(seed)
    dense = _compile(build(), epochs, len(train[0]))
    dense.fit(*train, batch_size=128, epochs=epochs, verbose=2)
    if cache:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        dense.save(cache + ".tmp.keras")
        os.replace(cache + ".tmp.keras", cache)
    return dense


def run(name, epochs, quick, permute, seed=0):
    train, test = _data(name, quick)
    t0 = time.time()
    dense = dense_model(name, epochs, seed, quick, (train, test))
    dense_acc = accuracy(dense, *test)
    keras.utils.set_random_seed(seed + 1)
    pruned, plan = tfscalpel.prune_2_4(dense, permute=permute)
    print(f"[{name}] recipe plan:\n{plan}", flush=True)
    one_shot = accuracy(tfscalpel.strip(pruned), *test)
    _compile(pruned, epochs, len(train[0]))
    pruned.fit(*train, batch_size=128, epochs=epochs, verbose=2,
               callbacks=[tfscalpel.UpdatePruningStep()])
    sparse = tfscalpel.strip(pruned)
    check = tfscalpel.check_nm(sparse)
    print(check, flush=True)
    sparse_acc = accuracy(sparse, *test)
    return {"model": name, "dense": dense_acc, "one_shot": one_shot, "nm": sparse_acc,
            "delta": sparse_acc - dense_acc, "within": sparse_acc >= dense_acc - TOLERANCE,
            "pruned_layers": plan.pruned, "skipped": plan.skipped, "check_ok": check.ok,
            "epochs": epochs, "seconds": time.time() - t0}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small data, 1 epoch (smoke run)")
    p.add_argument("--models", default="lenet,convnet", help=f"comma-separated, of {list(MODELS)}")
    p.add_argument("--epochs", type=int, default=None, help=f"dense epochs = fine-tune epochs (default {DEFAULT_EPOCHS})")
    p.add_argument("--permute", action="store_true", help="input-channel permutation before pruning")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    rows = []
    for name in args.models.split(","):
        epochs = 1 if args.quick else (args.epochs or DEFAULT_EPOCHS[name])
        rows.append(run(name, epochs, args.quick, args.permute))
    data = {name: DATA_NAMES[MODELS[name][1]] for name in MODELS}
    print(f"\n2:4 accuracy (test top-1 %, fine-tuned with the original schedule{', permuted' if args.permute else ''}"
          f"{'; QUICK smoke run, not a result' if args.quick else ''})")
    head = f"{'model':<20}{'data':<15}{'epochs':>7}{'dense':>8}{'2:4 one-shot':>14}{'2:4 tuned':>11}{'delta':>8}  within {TOLERANCE} %"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['model']:<20}{data[r['model']]:<15}{r['epochs']:>7}{r['dense']:>8.2f}{r['one_shot']:>14.2f}"
              f"{r['nm']:>11.2f}{r['delta']:>+8.2f}  {'yes' if r['within'] else 'NO'}")
    for r in rows:
        print(f"  {r['model']}: 2:4 layers {r['pruned_layers']}; dense (skipped) {r['skipped'] or '-'}; "
              f"check_nm {'OK' if r['check_ok'] else 'FAILED'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0 if all(r["check_ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
