"""The real TFLite Micro interpreter on the emulated Cortex-M4, dense (CMSIS-NN) vs tfscalpel's ops.

    python benchmarks/mcu/bench_tflm.py --tflm-dir ~/src/tflite-micro --cmsis-nn-dir ~/src/CMSIS-NN \\
        [--lenet300 pruned300.keras] [--lenet5 pruned5.keras] [--build-dir out/mcu/tflm]

Builds TFLite Micro from the user's checkout for Cortex-M4 (`TARGET=cortex_m_generic
TARGET_ARCH=cortex-m4+fp OPTIMIZED_KERNEL_DIR=cmsis_nn`, Debian's arm-none-eabi-gcc, CMSIS-NN
from --cmsis-nn-dir), exports each model twice with the exporter (int8, int8 inputs/outputs):
dense (the converter's model: CMSIS-NN's FULLY_CONNECTED and CONV_2D run it) and for target
`cortex-m4` (TFS_GROUP_SPARSE_FC / TFS_GROUP_SPARSE_CONV2D where the cost model chose them), and
runs both in one firmware (tflm_main.cc) on QEMU `mps2-an386`: the real interpreter, our ops
registered with MicroMutableOpResolver::AddCustom, every Invoke() between two marks of the
counting plugin (tfs_cycles_plugin.c: exact instruction counts weighted per instruction class
with the Cortex-M4 TRM's timings, +-20 %, for comparisons; QEMU does not emulate DWT->CYCCNT).
Reports cycles per Invoke, model flash bytes, the arena the interpreter used beside
tflite_export.c_array.arena_estimate, and whether the outputs are bit-exact: pruned vs dense on
TFLite Micro (the same int8 weights, both fixed-point), and against the host runtime
(tflite_export.runtime, whose dense layers are XNNPACK's fp32 requantization: differences there
are counted, not hidden).

Without --lenet300 / --lenet5 the models are LeNet-shaped with seeded random weights whose SIMD
groups (g = 4, along the input / kh*kw*cin) are zeroed at the issue's sparsities: cycles, flash
and arena are then meaningful, accuracy is not (it is not reported). Models given with --lenet300 /
--lenet5 are taken as trained on MNIST: their int8 exports are calibrated on 500 MNIST training
images and their test error (10,000 images, host runtime) is reported, dense and pruned.
--per-layer also runs each Conv2D / Dense layer alone as a one-op model (TFLite Micro's release
build does not profile per op): where the cycles go, and what the cortex-m4 profile's
`custom_conv.dense_conv` (CMSIS-NN's CONV_2D) is fitted to.

Sources (none is part of this repository). Measured with
  tflite-micro 90b983c2b3f1480642e040bbd2ddb37b998f3424 and the commits its Makefile pins:
  CMSIS-NN 4ab83cc3cc98fb85ed6dafb55e8ca02f1628dcae, CMSIS_6 5782d6f8057906d360f4b95ec08a2354afe5c9b9,
  Cortex_DFP c2c70a97a20fb355815e2ead3d4a40e35a4a3cdf, flatbuffers v25.9.23 (+ TFLM's
  flatbuffers.patch), gemmlowp 719139ce755a0f31cbf1c37f7f98adcc7fc9f425, ruy
  d37128311b445e758136b8602d1bbd2a755e115d, kissfft v130 (+ TFLM's kissfft.patch).
To get them: `git clone https://github.com/tensorflow/tflite-micro && git -C tflite-micro
checkout 90b983c2b3f1`, `git clone https://github.com/ARM-software/CMSIS-NN && git -C CMSIS-NN
checkout 4ab83cc3cc98`; TFLite Micro's Makefile downloads the others into
tensorflow/lite/micro/tools/make/downloads/ on its first run (with internet; offline, unpack them
there under the names flatbuffers, gemmlowp, ruy, kissfft, cmsis, cmsis/Cortex_DFP, plus an empty
pigweed/ directory). Debian packages: gcc-arm-none-eabi libnewlib-arm-none-eabi
libstdc++-arm-none-eabi-newlib qemu-system-arm (installed with apt-get if missing). Where a
source is missing the script says what and exits 0.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mcu_firmware import KERNELS, build_plugin, ensure_packages, log, mark_address, run_qemu  # noqa: E402

TFLM_COMMIT = "90b983c2b3f1480642e040bbd2ddb37b998f3424"
CMSIS_NN_COMMIT = "4ab83cc3cc98fb85ed6dafb55e8ca02f1628dcae"
DOWNLOADS = ("flatbuffers", "gemmlowp", "ruy", "kissfft", "cmsis", "pigweed")
ARCH = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"]
ARENA_BYTES = 48 * 1024
IMAGES = 4  # inputs per model: each is checked; cycles are per Invoke of the first
CALIBRATION = 500  # MNIST training images calibrating a trained model's int8 export


def missing_sources(tflm_dir: str | None, cmsis_nn_dir: str | None) -> str | None:
    """What is missing to build (None: nothing)."""
    if not tflm_dir or not os.path.isfile(os.path.join(
            tflm_dir, "tensorflow", "lite", "micro", "micro_interpreter.h")):
        return f"--tflm-dir {tflm_dir!r} is not a tflite-micro checkout"
    if not cmsis_nn_dir or not os.path.isfile(os.path.join(cmsis_nn_dir, "Include", "arm_nnfunctions.h")):
        return f"--cmsis-nn-dir {cmsis_nn_dir!r} is not a CMSIS-NN checkout"
    dl = os.path.join(tflm_dir, "tensorflow", "lite", "micro", "tools", "make", "downloads")
    absent = [d for d in DOWNLOADS if not os.path.isdir(os.path.join(dl, d))]
    if absent and not _online():
        return f"TFLite Micro's third-party downloads {absent} are missing in {dl} and there is no internet"
    return None


def _online() -> bool:
    import socket

    try:
        socket.create_connection(("github.com", 443), timeout=3).close()
        return True
    except OSError:
        return False


def _make(tflm_dir: str, cmsis_nn_dir: str, build_dir: str, *targets: str, evals=()):
    """TFLite Micro's Makefile for Cortex-M4 (hard float) with CMSIS-NN from `cmsis_nn_dir`."""
    gcc = subprocess.run(["which", "arm-none-eabi-gcc"], capture_output=True, text=True).stdout.strip()
    # The Makefile runs `python3` with numpy and PIL (example data): this interpreter, first on PATH.
    pybin = os.path.join(build_dir, "pybin")
    os.makedirs(pybin, exist_ok=True)
    with open(os.path.join(pybin, "python3"), "w") as f:
        f.write(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    os.chmod(os.path.join(pybin, "python3"), 0o755)
    # CMSIS-NN from cmsis_nn_dir, unless it is TFLite Micro's own download (then the Makefile's
    # default path, so that the objects it already built are reused).
    default = os.path.join(tflm_dir, "tensorflow", "lite", "micro", "tools", "make", "downloads", "cmsis_nn")
    own = os.path.realpath(cmsis_nn_dir) == os.path.realpath(default)
    cmd = ["make", "-f", "tensorflow/lite/micro/tools/make/Makefile", "TARGET=cortex_m_generic",
           "TARGET_ARCH=cortex-m4+fp", "OPTIMIZED_KERNEL_DIR=cmsis_nn", "BUILD_TYPE=release",
           *([] if own else [f"CMSIS_NN_PATH={os.path.abspath(cmsis_nn_dir)}"]),
           f"TARGET_TOOLCHAIN_ROOT={os.path.dirname(gcc)}/", f"GENDIR={os.path.join(build_dir, 'gen')}/",
           *[f"--eval={e}" for e in evals], *targets, f"-j{os.cpu_count() or 2}"]
    env = dict(os.environ, PATH=pybin + os.pathsep + os.environ["PATH"])
    run = subprocess.run(cmd, cwd=tflm_dir, env=env, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"TFLite Micro make {targets} failed:\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}")
    return run.stdout


def tflm_flags(tflm_dir: str, cmsis_nn_dir: str, build_dir: str) -> tuple[list, list]:
    """(CXXFLAGS, include flags) the library was built with (paths made absolute): the firmware's
    C++ must see the same struct layouts (TF_LITE_STATIC_MEMORY, ...)."""
    out = _make(tflm_dir, cmsis_nn_dir, build_dir, "tfs_print_flags", evals=(
        "tfs_print_flags: ; @echo TFS_CXXFLAGS $(CXXFLAGS) ; echo TFS_INCLUDES $(INCLUDES)",))
    lines = {ln.split(" ", 1)[0]: ln.split(" ", 1)[1].split() for ln in out.splitlines()
             if ln.startswith("TFS_")}
    flags = [f for f in lines["TFS_CXXFLAGS"] if f != "-MD"]
    incs = [f"-I{os.path.join(tflm_dir, f[2:])}" if f.startswith("-I") and not os.path.isabs(f[2:]) else f
            for f in lines["TFS_INCLUDES"]]
    return flags, incs


def build_tflm(tflm_dir: str, cmsis_nn_dir: str, build_dir: str) -> str:
    """TFLite Micro's static library for Cortex-M4 with CMSIS-NN's kernels; returns its path."""
    log("building TFLite Micro (cortex-m4+fp, CMSIS-NN kernels)")
    _make(tflm_dir, cmsis_nn_dir, build_dir, "microlite")
    gendir = os.path.join(build_dir, "gen")
    for root, _, files in os.walk(gendir):
        if "libtensorflow-microlite.a" in files:
            return os.path.join(root, "libtensorflow-microlite.a")
    raise RuntimeError(f"libtensorflow-microlite.a not found under {gendir}")


def synthetic_models(seed: int = 0):
    """LeNet-300-100 and LeNet-5 with seeded random weights, SIMD groups of 4 zeroed: fc1 93 %,
    fc2 90 %, conv1 and conv2 85 % (the 10-way output layer dense); the exporter decides."""
    import keras

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)

    def zero_groups(layer, sparsity, g=4):
        k, *rest = layer.get_weights()
        flat = k.reshape(-1, k.shape[-1])
        dead = np.repeat(rng.random((-(-flat.shape[0] // g), flat.shape[1])) < sparsity, g, axis=0)
        flat[dead[:flat.shape[0]]] = 0.0
        layer.set_weights([flat.reshape(k.shape), *rest])

    lenet300 = keras.Sequential([keras.Input((784,)), keras.layers.Dense(300, activation="relu", name="fc1"),
                                 keras.layers.Dense(100, activation="relu", name="fc2"),
                                 keras.layers.Dense(10, name="fc3")], name="lenet300")
    zero_groups(lenet300.get_layer("fc1"), 0.93)
    zero_groups(lenet300.get_layer("fc2"), 0.9)
    lenet5 = keras.Sequential([
        keras.Input((28, 28, 1)), keras.layers.Conv2D(6, 5, activation="relu", name="conv1"),
        keras.layers.MaxPooling2D(2), keras.layers.Conv2D(16, 5, activation="relu", name="conv2"),
        keras.layers.MaxPooling2D(2), keras.layers.Flatten(),
        keras.layers.Dense(120, activation="relu", name="fc1"),
        keras.layers.Dense(84, activation="relu", name="fc2"), keras.layers.Dense(10, name="fc3")],
        name="lenet5")
    for name, s in (("conv1", 0.85), ("conv2", 0.85), ("fc1", 0.93), ("fc2", 0.9)):
        zero_groups(lenet5.get_layer(name), s)
    return {"LeNet-300-100": lenet300, "LeNet-5": lenet5}


def layer_models(model) -> dict:
    """{"<model>:<layer>": a one-layer Keras model} for each Conv2D / Dense of `model`, with its
    weights and activation: TFLite Micro's release build compiles its per-op profiling out, so a
    layer's cost on the real interpreter is measured as a model of that one op (dense: CMSIS-NN's
    CONV_2D / FULLY_CONNECTED; pruned: the op the exporter picks for it)."""
    import keras

    out = {}
    for layer in model.layers:
        if not isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            continue
        clone = layer.__class__.from_config(layer.get_config())
        one = keras.Sequential([keras.Input(tuple(layer.input.shape[1:])), clone], name=layer.name)
        clone.set_weights(layer.get_weights())
        out[f"{model.name}:{layer.name}"] = one
    return out


def mnist_error(model_bytes, images, labels) -> float:
    """Test error (%) of an int8-I/O model on the host runtime: `images` float in [0, 1]
    quantized with the model's input scale / zero point."""
    import tensorflow as tf

    from tflite_export import runtime
    from tflite_export.quiet import filtered_stderr, litert_noise

    scale, zp = tf.lite.Interpreter(model_content=bytes(model_bytes)).get_input_details()[0]["quantization"]
    q = np.clip(np.round(images / scale) + zp, -128, 127).astype(np.int8)
    with filtered_stderr(litert_noise):
        rt = runtime.load(model_bytes)
        pred = np.concatenate([np.argmax(rt.run(q[i:i + 500])[0], axis=1) for i in range(0, len(q), 500)])
    return 100.0 * float(np.mean(pred != labels))


def export_pair(model, calib, force=None):
    """(dense int8 bytes, pruned int8 bytes for cortex-m4, the export report), int8 I/O. The
    dense model goes through the same exporter with every layer forced dense, so both have the
    static Flatten shape and the same aligned layout (the converter's own output computes
    Flatten's shape with SHAPE / STRIDED_SLICE / PACK, which TFLite Micro need not register)."""
    from tflite_export import exporter

    names = {layer.name for layer in model.layers}
    res = exporter.export(model, target="cortex-m4", quantize="int8", representative_data=calib,
                          int8_io=True, formats={k: v for k, v in (force or {}).items() if k in names})
    dense = exporter.export(model, target="cortex-m4", quantize="int8", representative_data=calib,
                            int8_io=True, formats={r.layer: "dense" for r in res.layers})
    assert all(r.format == "dense" for r in dense.layers)
    return dense.model_bytes, res.model_bytes, res


def _c_bytes(name: str, data: bytes) -> str:
    body = ",".join(str(b) for b in data)
    return f"alignas(16) static const unsigned char {name}[{max(len(data), 1)}] = {{{body}}};\n"


def write_models_header(path: str, models: list) -> None:
    """tflm_models.h: per model its name, flatbuffer, int8 inputs and sizes (tflm_main.cc)."""
    parts = ["// Generated by benchmarks/mcu/bench_tflm.py - do not edit.\n#include <stdint.h>\n",
             "typedef struct {\n  const char* name;\n  const unsigned char* data;\n  const int8_t* inputs;\n"
             "  int n_inputs, input_bytes, output_bytes;\n} bench_model;\n",
             f"#define BENCH_ARENA_BYTES {ARENA_BYTES}\n"]
    entries = []
    for i, m in enumerate(models):
        parts.append(_c_bytes(f"model{i}", m["bytes"]))
        x = np.ascontiguousarray(m["inputs"], np.int8)
        parts.append(f"alignas(16) static const int8_t inputs{i}[{x.size}] = {{{','.join(str(int(v)) for v in x.ravel())}}};\n")
        entries.append(f'  {{"{m["label"]}", model{i}, inputs{i}, {len(x)}, {x[0].size}, {m["output_bytes"]}}},\n')
    parts.append(f"#define BENCH_N_MODELS {len(models)}\nstatic const bench_model kModels[] = {{\n"
                 + "".join(entries) + "};\n")
    with open(path, "w") as f:
        f.write("".join(parts))


def build_firmware(tflm_dir: str, cmsis_nn_dir: str, lib: str, build_dir: str) -> str:
    """The firmware: tflm_main.cc and our TFLite Micro adapters (TFLite Micro's own C++ flags) +
    our kernel cores (C, mcu_firmware's flags), linked with the TFLite Micro library; returns
    the ELF's path."""
    import runpy

    flags, incs = tflm_flags(tflm_dir, cmsis_nn_dir, build_dir)
    inc = [*incs, "-I", build_dir, "-I", KERNELS, "-I", HERE]
    cxx = ["arm-none-eabi-g++", *flags, "-O2", "-Werror"]
    cc = ["arm-none-eabi-gcc", *ARCH, "-O2", "-ffunction-sections", "-fdata-sections", "-std=c11",
          "-Wall", "-Wextra", "-Werror"]
    objs = []
    core = runpy.run_path(os.path.join(KERNELS, "sources.py"))["core_sources"]()
    for src in [os.path.join(KERNELS, s) for s in core] + [os.path.join(HERE, "startup.c")]:
        obj = os.path.join(build_dir, os.path.basename(src) + ".o")
        subprocess.run([*cc, "-I", KERNELS, "-c", src, "-o", obj], check=True)
        objs.append(obj)
    for src in (os.path.join(HERE, "tflm_main.cc"), os.path.join(KERNELS, "tfs_tflm_adapter.cc"),
                os.path.join(KERNELS, "tfs_gsconv_tflm_adapter.cc")):
        obj = os.path.join(build_dir, os.path.basename(src) + ".o")
        subprocess.run([*cxx, *inc, "-c", src, "-o", obj], check=True)
        objs.append(obj)
    elf = os.path.join(build_dir, "tflm_bench.elf")
    subprocess.run(["arm-none-eabi-g++", *ARCH, *objs, lib, "--specs=nano.specs", "--specs=rdimon.specs",
                    "-nostartfiles", "-T", os.path.join(HERE, "tflm_an386.ld"), "-Wl,--gc-sections",
                    "-o", elf, "-lm"], check=True)
    return elf


def parse_output(text: str) -> tuple[dict, dict]:
    """({model: arena_used}, {model: [output rows]}) of the firmware's output."""
    arena, outs = {}, {}
    for line in text.splitlines():
        if m := re.match(r"MODEL (.+) arena_used (\d+)$", line):
            arena[m.group(1)] = int(m.group(2))
        elif m := re.match(r"OUT (.+?) (\d+)((?: -?\d+)+)$", line):
            outs.setdefault(m.group(1), []).append([int(v) for v in m.group(3).split()])
    return arena, outs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tflm-dir", default=os.environ.get("TFLM_DIR"))
    p.add_argument("--cmsis-nn-dir", default=os.environ.get("CMSIS_NN_DIR"))
    p.add_argument("--lenet300", help="pruned LeNet-300-100 (.keras); default: synthetic weights")
    p.add_argument("--lenet5", help="pruned LeNet-5 (.keras); default: synthetic weights")
    p.add_argument("--build-dir", default=os.path.join(ROOT, "out", "mcu", "tflm"))
    p.add_argument("--force", action="append", default=[], metavar="LAYER=FORMAT",
                   help="force a layer's format in the pruned export (exporter's formats=), e.g. "
                        "conv1=custom_conv; applies to the models that have the layer")
    p.add_argument("--models", default="LeNet-300-100,LeNet-5",
                   help="comma-separated models to run (default both)")
    p.add_argument("--per-layer", action="store_true",
                   help="also run every Conv2D / Dense layer alone as a one-op model (dense on "
                        "CMSIS-NN vs the exporter's choice): where the cycles go per layer")
    p.add_argument("--tflm-lib", help="an already built TFLite Micro library for this "
                   "configuration (cortex-m4+fp, CMSIS-NN, release): skips `make microlite`")
    args = p.parse_args(argv)
    why = missing_sources(args.tflm_dir, args.cmsis_nn_dir)
    if why:
        print(f"bench_tflm: not run: {why}. This benchmark needs a tflite-micro checkout "
              f"(measured with {TFLM_COMMIT}) and CMSIS-NN ({CMSIS_NN_COMMIT}); see the module "
              "docstring (python benchmarks/mcu/bench_tflm.py --help) for how to get them.")
        return 0
    t0 = time.time()
    ensure_packages(extra=("libstdc++-arm-none-eabi-newlib",))
    os.makedirs(args.build_dir, exist_ok=True)
    lib = args.tflm_lib or build_tflm(os.path.abspath(args.tflm_dir), args.cmsis_nn_dir,
                                      os.path.abspath(args.build_dir))

    import keras

    from tflite_export import c_array, runtime
    from tflite_export.quiet import filtered_stderr, litert_noise

    models = synthetic_models()
    synthetic = {n: True for n in models}
    for name, path in (("LeNet-300-100", args.lenet300), ("LeNet-5", args.lenet5)):
        if path:
            models[name], synthetic[name] = keras.models.load_model(path, compile=False), False
    keep = [m.strip() for m in args.models.split(",")]
    if set(keep) - set(models):
        p.error(f"--models: unknown {sorted(set(keep) - set(models))}; known: {sorted(models)}")
    models = {k: v for k, v in models.items() if k in keep}
    if args.per_layer:
        for name in list(models):
            for lname, one in layer_models(models[name]).items():
                models[f"{name}:{lname.split(':', 1)[1]}"], synthetic[f"{name}:{lname.split(':', 1)[1]}"] = \
                    one, synthetic[name]
    rng = np.random.default_rng(1)
    entries, info = [], {}
    mnist = None
    if not all(synthetic.values()):  # trained models: calibrated and scored on MNIST
        from tfscalpel import datasets

        (mx, _), (mxt, myt) = datasets.load_mnist()
        mnist = (mx[:CALIBRATION].astype(np.float32) / 255.0, mxt.astype(np.float32) / 255.0, myt)
    for name, model in models.items():
        shape = tuple(model.inputs[0].shape[1:])
        trained = not synthetic[name] and ":" not in name  # a whole trained model, not one layer
        calib = mnist[0].reshape((-1,) + shape) if trained else rng.random((200,) + shape, dtype=np.float32)
        dense, pruned, report = export_pair(model, calib, dict(f.split("=", 1) for f in args.force))
        with filtered_stderr(litert_noise):
            rt = runtime.load(pruned)
            qin = rt.input_details[0]
        xq = rng.integers(-128, 128, (IMAGES,) + shape).astype(np.int8)
        with filtered_stderr(litert_noise):
            host = rt.run(xq)[0].reshape(IMAGES, -1)
        out_bytes = int(host.shape[1])
        errors = None
        if trained:
            errors = {kind: mnist_error(data, mnist[1].reshape((-1,) + shape), mnist[2])
                      for kind, data in (("dense", dense), ("pruned", pruned))}
        info[name] = {"errors": errors, "report": report, "host": host, "dense_bytes": len(dense), "pruned_bytes": len(pruned),
                      "arena_est": {"dense": c_array.arena_estimate(dense).total,
                                    "pruned": c_array.arena_estimate(pruned).total}, "input": qin}
        for kind, data in (("dense", dense), ("pruned", pruned)):
            entries.append({"label": f"{name} {kind}", "bytes": data, "inputs": xq, "output_bytes": out_bytes})
    write_models_header(os.path.join(args.build_dir, "tflm_models.h"), entries)
    log("building the firmware")
    elf = build_firmware(os.path.abspath(args.tflm_dir), args.cmsis_nn_dir, lib,
                         os.path.abspath(args.build_dir))
    log("running it on QEMU mps2-an386")
    rc, out, segs = run_qemu(elf, build_plugin(args.build_dir), mark_address(elf), args.build_dir)
    invokes = segs[1::2]
    arena, outs = parse_output(out)
    if rc != 0 or "DONE" not in out or len(invokes) != IMAGES * len(entries):
        print(out[-3000:])
        raise RuntimeError(f"TFLite Micro firmware failed (exit {rc}, {len(invokes)} Invoke segments)")
    print(f"\nCortex-M4 (QEMU mps2-an386), TFLite Micro {TFLM_COMMIT[:12]} with CMSIS-NN "
          f"{CMSIS_NN_COMMIT[:12]}, int8, batch 1; cycles per Invoke() estimated by "
          "tfs_cycles_plugin (+-20 %); flash = the model's bytes; arena = interpreter.arena_used_bytes() "
          "(our estimate in brackets)")
    head = (f"{'model':<22}{'dense cyc':>12}{'pruned cyc':>12}{'ratio':>7}{'dense B':>9}{'pruned B':>10}"
            f"{'ratio':>7}{'arena dense':>18}{'arena pruned':>18}  outputs")
    print(head + "\n" + "-" * len(head))
    for k, (name, d) in enumerate(info.items()):
        dn, pn = f"{name} dense", f"{name} pruned"
        dc, pc = invokes[(2 * k) * IMAGES][1], invokes[(2 * k + 1) * IMAGES][1]
        same = outs.get(dn) == outs.get(pn)
        host_diff = int(np.sum(np.asarray(outs.get(pn)) != d["host"]))
        print(f"{name:<22}{dc:>12,}{pc:>12,}{pc / dc:>6.3f}x{d['dense_bytes']:>9,}{d['pruned_bytes']:>10,}"
              f"{d['pruned_bytes'] / d['dense_bytes']:>6.3f}x"
              f"{arena.get(dn, 0):>8,} [{d['arena_est']['dense']:>6,}]{arena.get(pn, 0):>8,} [{d['arena_est']['pruned']:>6,}]"
              f"  pruned == dense on TFLM: {same}; vs host runtime: {host_diff} of {d['host'].size} differ"
              + (" (synthetic weights)" if synthetic[name] else ""))
    for name, d in info.items():
        if d["errors"]:
            print(f"{name}: MNIST test error (int8, host runtime, {len(mnist[2]):,} images): "
                  f"pruned {d['errors']['pruned']:.2f} % (the same weights exported dense: "
                  f"{d['errors']['dense']:.2f} %)")
    for name, d in info.items():
        print(f"\n{name} export (cortex-m4):\n{d['report'].report.table()}")
    print(f"time: {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
