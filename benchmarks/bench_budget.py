"""Prune to a budget vs uniform sparsity at the same cost: LeNet-5 and the ConvNet.

    python benchmarks/bench_budget.py            # 3 seeds, 10k training images, 2+2 epochs
    python benchmarks/bench_budget.py --quick    # smoke run: 1 seed, 3k images, 1+1 epochs
    python benchmarks/bench_budget.py --models lenet5 --cases m4-flash-0.3 --seeds 3
    python benchmarks/bench_budget.py --models lenet300 --cases host-latency-0.3

For each model (LeNet-5 on MNIST, the ConvNet on Fashion-MNIST as in benchmarks/scalpel_table.py)
and budget case, the dense model is trained once, then for each seed it is pruned twice and
fine-tuned the same way (each layer ramped to its own sparsity by PolynomialDecay):

- **budget**: ``tfscalpel.plan(dense, target, budget=Budget(...), sensitivity_data=held-out)``
  (the knapsack over the target's predicted costs, weighed by the one-shot sensitivity scan);
- **uniform**: ``Budget(..., order="uniform")``: the smallest single sparsity that fits the same
  budget, priced by the same costs.

Cases: ``m4-latency-0.3/0.5`` and ``m4-flash-0.3/0.5`` on ``cortex-m4`` (int8), and
``host-latency-0.3/0.5`` on this x86 host (float32, target ``x86-avx2``'s plan, priced with a
profile measured here for the dense model's layers, ``tflite_export.host_profile.measure``: the
fitted ``x86-avx2`` line, made on another CPU, planned 0.3x and the host export measured
0.344x). Measured after training:

- cortex-m4 cycles: every CONV_2D / FULLY_CONNECTED on the emulated Cortex-M4
  (benchmarks/mcu/bench_mcu.py's measure_layers: QEMU + the counting plugin, convs as
  TFS_GROUP_SPARSE_CONV2D runs them), the sparse kernel where the plan predicted it, else dense;
  seed 0 only (``--no-mcu`` skips it). A dense conv is TFLite Micro's CMSIS-NN CONV_2D, which
  this firmware does not run (its im2col + SMLAD stand-in is not it: LeNet-5's conv1 13 %
  under, conv2 17 % over): its cycles are the profile's ``custom_conv.dense_conv`` line, fitted
  to bench_tflm.py --per-layer counts (exact on LeNet-5's two convs, extrapolated to the
  ConvNet's), in the pruned and the dense model alike; ``cycles_standin`` in the JSON is the
  ratio with the stand-in instead;
- cortex-m4 flash: the exporter's ``.tflite`` file (``export(target="cortex-m4",
  quantize="int8")``, its profitable convs as TFS_GROUP_SPARSE_CONV2D) against the file of the
  same weights exported all dense (``host_profile.dense_export``): what the budget prices, each
  layer's tensors as they sit in the file plus the dense export's remainder
  (``host_profile.measure_flash``, measured on the dense model before planning). What the
  kernels read (mcu_layers.flash_bytes, no file structure) is in the JSON as ``flash_read``;
- host latency: ``export(target="host")`` (measured per layer on this machine) and the whole
  model timed through the host runtime, best of interleaved rounds against the dense export.

A budget is met when the measured figure is within 5 % of the limit. Prints one table, writes
``--out``/bench_budget.json and a PNG of accuracy against measured cost.

``--flash-check`` trains nothing but the dense model (quick settings) and, per model and flash
case, exports the plan's masks applied at once (no fine-tuning: the file's bytes depend on the
stored groups only), printing each layer's predicted bytes against the bytes its tensors take
in the file, and the totals.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(HERE, "mcu"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfscalpel  # noqa: E402
from tfscalpel import datasets, models  # noqa: E402
from tfscalpel.budget import Budget, BudgetError  # noqa: E402
from tfscalpel.cost_profile import conv_time  # noqa: E402
from tfscalpel.prune_model import apply_plan  # noqa: E402

MODELS = {"lenet5": (models.lenet5, datasets.load_mnist), "convnet": (models.convnet,
                                                                       datasets.load_fashion_mnist),
          # FC only (on LeNet-5 and the ConvNet a host latency budget group-prunes the convs too:
          # host_profile.measure times each in the conv op)
          "lenet300": (models.lenet_300_100, datasets.load_mnist)}
CASES = {"m4-flash-0.3": ("cortex-m4", "flash", 0.3), "m4-latency-0.3": ("cortex-m4", "latency", 0.3),
         "m4-latency-0.5": ("cortex-m4", "latency", 0.5), "m4-flash-0.5": ("cortex-m4", "flash", 0.5),
         "host-latency-0.3": ("x86-avx2", "latency", 0.3),
         "host-latency-0.5": ("x86-avx2", "latency", 0.5)}
FULL = dict(train=10000, test=10000, val=1000, dense_epochs=2, finetune_epochs=2, seeds=3)
QUICK = dict(train=3000, test=2000, val=500, dense_epochs=1, finetune_epochs=1, seeds=1)
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
TOLERANCE = 1.05


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load(name, s):
    (x, y), (xt, yt) = MODELS[name][1]()
    flat = name == "lenet300"
    x, xt = datasets.to_model_inputs(x, flat), datasets.to_model_inputs(xt, flat)
    n = s["train"]
    return ((x[:n], y[:n]), (x[n:n + s["val"]], y[n:n + s["val"]]), (xt[:s["test"]], yt[:s["test"]]))


def compile_(model, steps):
    lr = keras.optimizers.schedules.CosineDecay(1e-3, max(steps, 1), alpha=0.05)
    model.compile(keras.optimizers.Adam(lr), LOSS, metrics=["accuracy"])
    return model


def train_dense(name, s, train):
    keras.utils.set_random_seed(0)
    dense = compile_(MODELS[name][0](), s["dense_epochs"] * (len(train[0]) // 128 + 1))
    dense.fit(*train, batch_size=128, epochs=s["dense_epochs"], verbose=0)
    return dense


def finetune(dense, the_plan, s, train, seed):
    keras.utils.set_random_seed(seed)
    steps = s["finetune_epochs"] * (len(train[0]) // 128 + 1)
    ramp = tfscalpel.PolynomialDecay(0.0, 0.5, 0, max(1, steps // 2), frequency=max(1, steps // 20))
    pruned = compile_(apply_plan(dense, the_plan, schedule=ramp), steps)
    pruned.fit(*train, batch_size=128, epochs=s["finetune_epochs"], verbose=0,
               callbacks=[tfscalpel.UpdatePruningStep()])
    return tfscalpel.strip(pruned)


def accuracy(model, test):
    logits = model.predict(test[0], batch_size=512, verbose=0)
    return float(np.mean(np.argmax(logits, -1) == test[1]))


def sparse_layers(alloc):
    """Layers the plan predicts the exporter / firmware runs sparse."""
    return {r.name for r in alloc.layers if r.format.startswith("custom")}


def measure_m4(stripped, alloc, train, test, build_dir, cycles):
    """Measured flash (firmware per layer, and the .tflite file) and, if asked, cycles."""
    import bench_mcu
    from mcu_layers import flash_bytes, model_layers

    from tflite_export import export

    from tflite_export.host_profile import dense_export

    sparse = sparse_layers(alloc)
    tfl, layers = model_layers(stripped, train[0][:300], 4)
    result = export(stripped, target="cortex-m4", quantize="int8",
                    representative_data=train[0][:300],
                    group_sizes={n: g for n, g in alloc.group_sizes().items()
                                 if alloc[n].kind == "dense"})
    dense_file = dense_export(stripped, "cortex-m4", "int8", train[0][:300])
    out = {"flash": result.report.model_bytes, "flash_dense": len(dense_file.model_bytes),
           "flash_read": sum(flash_bytes(L)[1 if L["name"] in sparse else 0] for L in layers),
           "flash_read_dense": sum(flash_bytes(L)[0] for L in layers),
           "flash_predicted": alloc.totals.flash, "flash_predicted_dense": alloc.dense_totals.flash,
           "converter_dense": result.report.dense_model_bytes,
           "fc_formats": {r.layer: r.format for r in result.layers}}
    if cycles:
        m = bench_mcu.measure_layers("budget", 4, tfl, layers, test[0][:8], build_dir)
        profile = tfscalpel.get_target("cortex-m4").cost_profile
        dense = {r["name"]: conv_time(profile, "int8", "dense", r["in"], r["out"], r["positions"])
                 if r["kind"] == "conv" else r["dense_cycles"] for r in m["layers"]}
        out["cycles"] = sum(r["sparse_cycles"] if r["name"] in sparse else dense[r["name"]]
                            for r in m["layers"])
        out["cycles_dense"] = sum(dense.values())
        out["cycles_standin"] = (sum(r["sparse_cycles" if r["name"] in sparse else "dense_cycles"]
                                     for r in m["layers"]) / m["totals"]["dense_cycles"])
        out["cycles_layers"] = {r["name"]: (dense[r["name"]], r["dense_cycles"], r["sparse_cycles"])
                                for r in m["layers"]}
    return out


def measure_host(stripped, rounds=7):
    from tflite_export import export
    from tflite_export.host import runtime_timer

    result = export(stripped, target="host")
    log("host export: " + "; ".join(f"{r.layer} {r.format}: {r.reason}" for r in result.layers))
    x = np.zeros((1, *stripped.input_shape[1:]), np.float32)
    best = {"pruned": float("inf"), "dense": float("inf")}
    for _ in range(rounds):  # interleaved: the machine is shared
        best["pruned"] = min(best["pruned"], runtime_timer(result.model_bytes, x, 3, 100))
        best["dense"] = min(best["dense"], runtime_timer(result.dense_model_bytes, x, 3, 100))
    return {"latency_us": 1e6 * best["pruned"], "latency_dense_us": 1e6 * best["dense"],
            "fc_formats": {r.layer: r.format for r in result.layers}}


def run_case(name, case, dense, data, s, seeds, build_dir, mcu):
    target, metric, level = CASES[case]
    train, val, test = data
    rows, profile = [], None
    if metric == "flash":  # the file's bytes no layer owns, measured from the dense export
        from tflite_export import host_profile

        profile = host_profile.measure_flash(dense, target, representative_data=train[0][:300])
        log(f"{name} {case}: dense export's bytes no layer owns: "
            f"{profile['measured']['int8']['model_bytes']:.0f}")
    if case.startswith("host"):  # price with this host's measurements of the dense layers
        from tflite_export import host_profile

        profile = host_profile.measure(dense, target)
        m = profile["measured"]["float32"]
        log(f"{name} {case}: measured on this host (ns): model {m['model_ns']:.0f}; " + "; ".join(
            f"{k} dense {v['dense_ns']:.0f}, custom " + ", ".join(
                f"g={g}: " + " ".join(f"{n}:{t:.0f}" for n, t in pts)
                for g, pts in v["custom"].items()) for k, v in m["layers"].items()))
    for order in ("sensitivity", "uniform"):
        method = "budget" if order == "sensitivity" else "uniform"
        try:
            the_plan = tfscalpel.plan(dense, target, budget=Budget(**{metric: level}, order=order),
                                      profile=profile, sensitivity_data=val, loss=LOSS)
        except BudgetError as e:
            log(f"{name} {case} {method}: infeasible: {e}")
            rows.append({"model": name, "case": case, "method": method, "infeasible": str(e)})
            continue
        alloc = the_plan.allocation
        log(f"{name} {case} {method} plan:\n{alloc}")
        accs, measured = [], None
        for seed in seeds:
            stripped = finetune(dense, the_plan, s, train, seed)
            accs.append(accuracy(stripped, test))
            log(f"{name} {case} {method} seed {seed}: accuracy {accs[-1]:.4f}")
            if measured is None:
                measured = (measure_m4(stripped, alloc, train, test, os.path.join(
                    build_dir, f"{name}-{case}-{method}"), mcu and metric == "latency")
                    if target == "cortex-m4" else measure_host(stripped))
        if target == "cortex-m4":
            key = "cycles" if metric == "latency" else "flash"
            ratio = (measured[key] / measured[f"{key}_dense"]) if key in measured else None
        else:
            ratio = measured["latency_us"] / measured["latency_dense_us"]
        predicted = alloc.totals[metric] / alloc.dense_totals[metric]
        rows.append({"model": name, "case": case, "method": method,
                     "sparsity": {r.name: r.sparsity for r in alloc.layers},
                     "predicted": predicted, "measured": ratio,
                     "met": None if ratio is None else ratio <= level * TOLERANCE,
                     "accuracy": accs, "details": measured})
    return rows


def table(rows, dense_acc):
    head = (f"{'model':<9}{'case':<18}{'method':<9}{'sparsity per layer':<42}{'pred':>7}"
            f"{'meas':>7}{'met':>5}{'acc mean':>9}{'sd':>6}{'n':>3}")
    lines = ["pred / meas vs dense: m4 flash = .tflite file bytes (the dense file: the same weights "
             "exported dense); m4 latency = emulated cycles; host = measured latency",
             head, "-" * len(head)]
    for r in rows:
        if "infeasible" in r:
            lines.append(f"{r['model']:<9}{r['case']:<18}{r['method']:<9}infeasible: "
                         + r["infeasible"][:200])
            continue
        sp = " ".join(f"{k}:{v:.0%}" for k, v in r["sparsity"].items())
        acc = 100 * np.array(r["accuracy"])
        meas = "-" if r["measured"] is None else f"{r['measured']:.3f}"
        lines.append(f"{r['model']:<9}{r['case']:<18}{r['method']:<9}{sp:<42}{r['predicted']:>7.3f}"
                     f"{meas:>7}{str(r['met'] if r['met'] is not None else '-'):>5}"
                     f"{acc.mean():>9.2f}{acc.std():>6.2f}{len(acc):>3}")
    lines.append("dense accuracy: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in dense_acc.items()))
    return "\n".join(lines)


def plot(rows, path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cases = sorted({(r["model"], r["case"]) for r in rows if "infeasible" not in r})
    if not cases:
        return None
    fig = Figure(figsize=(4.5 * len(cases), 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    for k, (model, case) in enumerate(cases):
        ax = fig.add_subplot(1, len(cases), k + 1)
        for r in rows:
            if (r["model"], r["case"]) != (model, case) or "infeasible" in r:
                continue
            x = r["measured"] if r["measured"] is not None else r["predicted"]
            acc = 100 * np.array(r["accuracy"])
            ax.errorbar([x], [acc.mean()], yerr=[acc.std()], fmt="o" if r["method"] == "budget" else "s",
                        label=f"{r['method']} ({'measured' if r['measured'] is not None else 'predicted'})")
        ax.axvline(CASES[case][2], color="gray", linestyle="--", label="budget")
        ax.set_title(f"{model} {case}")
        ax.set_xlabel(f"{CASES[case][1]} vs dense")
        ax.set_ylabel("test accuracy (%)")
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=100)
    return path


def replot(paths, out):
    """Pool the seeds of several runs (same model, case, method) into one table and PNG."""
    merged, dense_acc = {}, {}
    for path in paths:
        with open(path) as f:
            run = json.load(f)
        dense_acc.update(run["dense_accuracy"])
        for r in run["rows"]:
            key = (r["model"], r["case"], r["method"])
            if key not in merged:
                merged[key] = dict(r)
            elif "accuracy" in r:
                merged[key]["accuracy"] = merged[key]["accuracy"] + r["accuracy"]
                if merged[key].get("measured") is None:
                    merged[key].update(measured=r["measured"], met=r["met"])
    rows = list(merged.values())
    print(table(rows, dense_acc))
    os.makedirs(out, exist_ok=True)
    print(f"wrote {plot(rows, os.path.join(out, 'bench_budget.png'))}")


def flash_check(names, cases, s):
    """Predicted vs file bytes per layer for the flash cases (no fine-tuning: module docstring)."""
    from tflite_export import export, flatbuffer, host_profile

    for name in names:
        data = load(name, s)
        dense = train_dense(name, s, data[0])
        rep = data[0][0][:300]
        profile = host_profile.measure_flash(dense, "cortex-m4", representative_data=rep)
        dense_file = len(host_profile.dense_export(dense, "cortex-m4", "int8", rep).model_bytes)
        for case in cases:
            target, metric, level = CASES[case]
            if metric != "flash":
                continue
            the_plan = tfscalpel.plan(dense, target, budget=Budget(**{metric: level}),
                                      profile=profile, sensitivity_data=data[1], loss=LOSS)
            alloc = the_plan.allocation
            # Every layer at its final sparsity from step 1; three steps at learning rate 0.
            pruned = apply_plan(dense, the_plan, schedule=tfscalpel.PolynomialDecay(
                0.0, 0.5, 0, 1, frequency=1))
            pruned.compile(keras.optimizers.SGD(0.0), LOSS)
            pruned.fit(data[0][0][:384], data[0][1][:384], batch_size=128, epochs=1, verbose=0,
                       callbacks=[tfscalpel.UpdatePruningStep()])
            result = export(tfscalpel.strip(pruned), target="cortex-m4", quantize="int8",
                            representative_data=rep, group_sizes={
                                n: g for n, g in alloc.group_sizes().items()
                                if alloc[n].kind == "dense"})
            in_file = flatbuffer.operator_constant_bytes(result.model_bytes)
            formats = {r.layer: (r.format, r.stored_units) for r in result.layers}
            print(f"{name} {case}: layer, plan, exported, predicted B, file B")
            for r in alloc.layers:  # the file's operators in order, constants that are not layers
                k = next(i for i, (n, _) in enumerate(in_file) if r.name in n.split("/")[0]
                         or f"/{r.name}_" in n)
                tname, b = in_file.pop(k)
                print(f"  {r.name:<8}{r.format:<13}{str(formats.get(r.name)):<24}"
                      f"{r.costs.flash:>9,.0f}{b:>9,}  {tname}")
            file_total = len(result.model_bytes)
            print(f"  other constants in the file: {in_file}")
            print(f"  model term (dense export's remainder) {alloc.model_flash:,.0f}; total "
                  f"predicted {alloc.totals.flash:,.0f} vs file {file_total:,} "
                  f"({alloc.totals.flash / file_total - 1:+.2%}); dense predicted "
                  f"{alloc.dense_totals.flash:,.0f} vs dense file {dense_file:,}; ratio predicted "
                  f"{alloc.totals.flash / alloc.dense_totals.flash:.4f} vs file "
                  f"{file_total / dense_file:.4f} (budget {level})", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 1 seed, small data, 1+1 epochs")
    p.add_argument("--models", default="lenet5,convnet")
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--seeds", type=int, default=None, help="how many seeds (default 3, quick 1)")
    p.add_argument("--first-seed", type=int, default=0,
                   help="first fine-tuning seed (to add seeds to an earlier run; the dense model "
                   "is always trained with seed 0)")
    p.add_argument("--no-mcu", action="store_true", help="skip the emulated Cortex-M4 cycles")
    p.add_argument("--out", default=os.path.join(ROOT, "out", "bench_budget"))
    p.add_argument("--replot", nargs="+", metavar="JSON",
                   help="no training: merge these runs' bench_budget.json (seeds of the same "
                   "model, case and method pooled) into one table and PNG under --out")
    p.add_argument("--flash-check", action="store_true",
                   help="no fine-tuning: per layer, predicted flash vs the bytes in the exported "
                   "file for the flash cases (module docstring)")
    args = p.parse_args(argv)
    if args.flash_check:
        return flash_check(args.models.split(","), args.cases.split(","), dict(QUICK))
    if args.replot:
        return replot(args.replot, args.out)
    s = dict(QUICK if args.quick else FULL)
    seeds = list(range(args.first_seed, args.first_seed + (args.seeds or s["seeds"])))
    from tflite_export import host_info, kernels

    print(host_info.describe(kernels.best_impl()), flush=True)
    print(f"settings: {s}, seeds {seeds}; machine shared with other builds", flush=True)
    os.makedirs(args.out, exist_ok=True)
    rows, dense_acc = [], {}
    for name in args.models.split(","):
        data = load(name, s)
        log(f"{name}: training dense ({s['dense_epochs']} epochs on {len(data[0][0])} images)")
        dense = train_dense(name, s, data[0])
        dense_acc[name] = accuracy(dense, data[2])
        log(f"{name}: dense accuracy {dense_acc[name]:.4f}")
        for case in args.cases.split(","):
            rows += run_case(name, case, dense, data, s, seeds, os.path.join(args.out, "mcu"),
                             not args.no_mcu)
            print(table(rows, dense_acc), flush=True)
            with open(os.path.join(args.out, "bench_budget.json"), "w") as f:  # after every case
                json.dump({"settings": s, "seeds": seeds, "dense_accuracy": dense_acc,
                           "rows": rows}, f, indent=1, default=str)
    print(table(rows, dense_acc))
    png = plot(rows, os.path.join(args.out, "bench_budget.png"))
    print(f"wrote {args.out}/bench_budget.json" + (f" and {png}" if png else ""))


if __name__ == "__main__":
    main()
