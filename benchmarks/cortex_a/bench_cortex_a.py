"""The custom ops' NEON kernels (TFS_GROUP_SPARSE_FC and the 2:4 TFS_NM_SPARSE_FC) vs XNNPACK's
dense FULLY_CONNECTED on an emulated Arm Neoverse N1 (the Cortex-A76's server sibling), counted
instruction by instruction.

    python benchmarks/cortex_a/bench_cortex_a.py [--build-dir out/cortex_a] [--litert-wheel W] [--fit]

Both sides run as AArch64 Linux code under `qemu-aarch64 -cpu neoverse-n1` with the counting
plugin tfs_a64_cycles_plugin.c (exact instruction counts; cycles estimated from the Neoverse N1
Software Optimization Guide's issue throughputs, see the plugin's header):

- sparse: tests/c/neon_driver.c (the NEON kernels of tflite_export/kernels/tfs_gsfc_neon.c on the
  layer's packed copy, made before counting as a runtime makes it when the node is prepared, and
  the portable kernel, each between two marks), layers at 90 % group sparsity (each group kept
  with probability 0.1), batch 1; int8 with input zero point -128 (activations after a ReLU) and
  XNNPACK's fp32 requantization. 2:4: the same driver in its `nm` mode (tfs_nm_neon.c), the same
  layers with 2 of every 4 weights kept.
- dense: the `ai-edge-litert` aarch64 wheel's libLiteRt.so (the pinned version, downloaded with
  pip into the build directory; never committed) running a one-layer FULLY_CONNECTED .tflite
  (TF's converter; int8 = full-integer quantization) on XNNPACK, one thread, through
  litert_run.c; one inference counted after a warm-up. XNNPACK picks its micro-kernels from
  cpuinfo, which reads /proc/cpuinfo: QEMU user mode shows the host's (x86) file, so
  cpuinfo_shim.c (LD_PRELOAD in the guest) serves a Neoverse N1 one. The runtime's fixed cost
  per inference (a 1x1 FULLY_CONNECTED model, counted the same way) is subtracted: the "dense"
  column is the layer's own cost inside LiteRT. XNNPACK runs float32 layers whose width is not a
  multiple of 8 on a ~4x slower path; for those the table shows that measured cost and, as the
  baseline for the ratio, the width rounded up to a multiple of 8, scaled back by width.

With --fit it also prints the `arm-neon` cost profile fitted to these counts (the "formats" of
tfscalpel/targets.py's ARM_NEON): tflite_export.calibrate's least squares and safe-side scaling
on the best dense costs and the sparse kernels' (int8: SDOT), plus LiteRT's extra cost per custom
node, NODE_CYCLES, borrowed from the x86 measurement.

Build outputs go to --build-dir; nothing is written into the source tree.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import struct
import subprocess
import sys
import zipfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import a64_toolchain as a64  # noqa: E402
from tflite_export import params_blob  # noqa: E402

CPU = "neoverse-n1"
CORE = "Arm Neoverse N1 (QEMU -cpu neoverse-n1: ARMv8.2-A + dot product)"
CYCLE_TABLE = ("Arm Neoverse N1 Software Optimization Guide, instruction issue throughputs per "
               "class (benchmarks/cortex_a/tfs_a64_cycles_plugin.c); no latency, cache or branch "
               "model")
LITERT = "ai-edge-litert==2.3.0"  # setup.py's pin
LAYERS = [(1024, 1024), (784, 300), (300, 100), (100, 10)]  # (in, out)
KERNELS = [("float32", 4), ("float32", 8), ("float32", 16), ("int8", 4), ("int8", 8), ("int8", 16)]
KEEP = 0.10
IN_ZP = -128
# LiteRT's extra cost per custom-op node over a builtin one: ~0.8 us measured on x86
# (tflite_export/calibrate.py), taken as ~2,000 cycles of a ~2.5 GHz core; not measured on Arm.
NODE_CYCLES = 2000.0
REQUANT_FP32 = 0
# /proc/cpuinfo of a 2-core Neoverse N1 (MIDR: implementer 0x41 Arm, part 0xd0c N1, r4p1).
CPUINFO = "".join(
    f"processor\t: {i}\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 "
    "crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\n"
    "CPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n"
    for i in range(2))


def log(msg):
    print(f"[cortex-a] {msg}", flush=True)


def build(build_dir):
    """The plugin (host), the NEON driver, the LiteRT runner and the cpuinfo shim (AArch64)."""
    plugin = os.path.join(build_dir, "tfs_a64_cycles_plugin.so")
    subprocess.run(["gcc", "-O2", "-fPIC", "-shared", "-Wall", "-Wextra", "-Werror",
                    os.path.join(HERE, "tfs_a64_cycles_plugin.c"), "-o", plugin], check=True)
    driver = a64.compile_program([os.path.join(ROOT, "tests", "c", "neon_driver.c")],
                                 os.path.join(build_dir, "neon_driver"), ["-no-pie"])
    runner = os.path.join(build_dir, "litert_run")
    shim = os.path.join(build_dir, "cpuinfo_shim.so")
    flags = ["-std=c11", "-D_POSIX_C_SOURCE=200809L", "-O2", "-Wall", "-Wextra", "-Werror"]
    subprocess.run([a64.CC, *flags, "-no-pie", os.path.join(HERE, "litert_run.c"), "-ldl", "-o",
                    runner], check=True)
    subprocess.run([a64.CC, *flags, "-D_GNU_SOURCE", "-fPIC", "-shared",
                    os.path.join(HERE, "cpuinfo_shim.c"), "-ldl", "-o", shim], check=True)
    return plugin, driver, runner, shim


def mark_address(binary):
    out = subprocess.run([a64.NM, binary], capture_output=True, text=True,
                         check=True).stdout
    return next("0x" + line.split()[0] for line in out.splitlines() if line.endswith(" T tfs_mark"))


def counted(binary, args, plugin, out, env=()):
    """Run `binary` under the plugin; returns [(instructions, cycles, unclassified)] per segment."""
    cmd = [a64.QEMU, "-L", a64.SYSROOT, "-cpu", CPU]
    for e in env:
        cmd += ["-E", e]
    cmd += ["-plugin", f"{plugin},mark={mark_address(binary)},out={out}", binary, *map(str, args)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if run.returncode != 0 or "failed" in run.stdout:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{run.stdout}\n{run.stderr[-3000:]}")
    with open(out) as f:
        return [(int(a), float(b), int(c)) for a, b, c in (line.split() for line in f)]


def sparse_layer(rng, in_f, out_f, dtype, g):
    """The custom op's arrays for a random layer with 10 % of its groups kept, and its input."""
    import custom_op_testlib as tl

    n_col = -(-in_f // g)
    keep = np.repeat(rng.random((out_f, n_col)) < KEEP, g, axis=1)[:, :in_f]
    w = rng.standard_normal((out_f, in_f)).astype(np.float32) * keep
    if dtype == "float32":
        arrays = tl.layer_arrays(w, rng.standard_normal(out_f).astype(np.float32), g)
        return w, arrays, rng.standard_normal((1, in_f)).astype(np.float32)
    wq = np.clip(np.round(w * 40), -127, 127).astype(np.int8)
    p = dict(in_zp=IN_ZP, out_zp=-5, act_min=-128, act_max=127,
             multiplier=np.full(out_f, 1 << 30), shift=np.full(out_f, -8),
             scale=rng.uniform(0.001, 0.01, out_f).astype(np.float32))
    arrays = tl.layer_arrays(wq, rng.integers(-2000, 2000, out_f).astype(np.int32), g, int8=p)
    return wq, arrays, rng.integers(-128, 128, (1, in_f)).astype(np.int8)


def nm_layer(rng, in_f, out_f, dtype):
    """The 2:4 op's arrays for a random layer (2 of every 4 weights kept) and its input."""
    from test_nm_kernels import f32_layer, i8_layer, random_2_4

    names = params_blob.OP_SECTIONS["TFS_NM_SPARSE_FC"]
    w = random_2_4(rng, out_f, in_f, sparse_windows=0.0)
    if dtype == "float32":
        arrays = f32_layer(w, rng.standard_normal(out_f).astype(np.float32))
        return dict(zip(names, arrays)), rng.standard_normal((1, in_f)).astype(np.float32)
    wq = np.clip(np.round(w * 40), -127, 127).astype(np.int8)
    arrays = i8_layer(rng, wq)
    return dict(zip(names, arrays)), rng.integers(-128, 128, (1, in_f)).astype(np.int8)


def write_cases(path, cases, sections):
    """neon_driver's case file: (arrays, x) each, batch 1, fp32 requantization."""
    with open(path, "wb") as f:
        for arrays, x in cases:
            blob = params_blob.pack_params(arrays, int(arrays["meta"][2]), sections).tobytes()
            f.write(struct.pack("<4i", 1, REQUANT_FP32, len(blob), x.nbytes) + blob + x.tobytes())
    return path


def dense_tflite(path, w, dtype, rng):
    """A one-layer FULLY_CONNECTED model `y = x W^T + b` (batch 1) converted by TF."""
    import keras
    import tensorflow as tf

    out_f, in_f = w.shape
    inp = keras.Input((in_f,), batch_size=1)
    layer = keras.layers.Dense(out_f)
    model = keras.Model(inp, layer(inp))
    layer.set_weights([np.asarray(w, np.float32).T, np.zeros(out_f, np.float32)])
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if dtype == "int8":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: (
            [rng.random((1, in_f)).astype(np.float32)] for _ in range(16))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = conv.inference_output_type = tf.int8
    with open(path, "wb") as f:
        f.write(conv.convert())
    return path


def litert_library(build_dir, wheel):
    """libLiteRt.so of the aarch64 wheel (downloaded with pip unless given), unpacked."""
    if wheel is None:
        dest = os.path.join(build_dir, "wheel")
        os.makedirs(dest, exist_ok=True)
        found = glob.glob(os.path.join(dest, "ai_edge_litert-*aarch64*.whl"))
        if not found:
            log(f"downloading the aarch64 {LITERT} wheel into {dest}")
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                            "--only-binary=:all:", "--platform", "manylinux_2_27_aarch64",
                            LITERT, "-d", dest], check=True)
            found = glob.glob(os.path.join(dest, "ai_edge_litert-*aarch64*.whl"))
        wheel = found[0]
    lib = os.path.join(build_dir, "libLiteRt.so")
    with zipfile.ZipFile(wheel) as z, open(lib, "wb") as f:
        f.write(z.read("ai_edge_litert/libLiteRt.so"))
    return wheel, lib


def fit_profile(rows):
    """The arm-neon profile's dense and custom coefficients fitted to measured rows
    (tflite_export.calibrate's fit: least squares on relative errors - the layers span three
    orders of magnitude - then scaled so that no point is mispredicted towards the sparse side),
    plus NODE_CYCLES per custom node; g = 1 / 2 (no NEON kernel) keep the current profile's
    portable-kernel prices."""
    from tfscalpel import targets
    from tflite_export import calibrate, cost_model

    fitted = calibrate.calibrated_profile(cost_model.CostModel(targets.ARM_NEON), rows,
                                          add_node_overhead=False, relative=True).to_dict()["formats"]
    for coeffs in fitted["custom"].values():
        coeffs["fixed_ns"] += NODE_CYCLES
    return {fmt: {d: {k: (round(v, 4) if isinstance(v, float) else
                          {g: round(u, 4) for g, u in v.items()} if isinstance(v, dict) else v)
                      for k, v in c.items()} for d, c in fitted[fmt].items()}
            for fmt in ("dense", "custom")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "out", "cortex_a"))
    ap.add_argument("--litert-wheel", default=None, help="the aarch64 ai-edge-litert wheel "
                    "(default: pip download into the build directory)")
    ap.add_argument("--fit", action="store_true", help="also print the arm-neon cost profile "
                    "fitted to these counts")
    args = ap.parse_args(argv)
    os.makedirs(args.build_dir, exist_ok=True)
    a64.ensure_packages()
    plugin, driver, runner, shim = build(args.build_dir)
    wheel, lib = litert_library(args.build_dir, args.litert_wheel)
    cpuinfo = os.path.join(args.build_dir, "cpuinfo_neoverse_n1.txt")
    with open(cpuinfo, "w") as f:
        f.write(CPUINFO)
    env = [f"LD_PRELOAD={shim}", f"TFS_CPUINFO={cpuinfo}"]

    rng = np.random.default_rng(2017)
    cases, dense_w = [], {}
    for in_f, out_f in LAYERS:
        for dtype, g in KERNELS:
            w, arrays, x = sparse_layer(rng, in_f, out_f, dtype, g)
            dense_w.setdefault((in_f, out_f, dtype), w)
            cases.append((in_f, out_f, dtype, g, int(arrays["meta"][4]), arrays, x))
    nm_cases = [(in_f, out_f, dtype, *nm_layer(rng, in_f, out_f, dtype))
                for in_f, out_f in LAYERS for dtype in ("float32", "int8")]
    log(f"sparse: {len(cases)} group-sparse and {len(nm_cases)} 2:4 layers through {driver}")
    seg = counted(driver, [write_cases(os.path.join(args.build_dir, "cases.bin"),
                                       [(a, x) for *_, a, x in cases], params_blob.SECTIONS),
                           os.path.join(args.build_dir, "y.bin")], plugin,
                  os.path.join(args.build_dir, "sparse_counts.txt"))
    nm_seg = counted(driver, [write_cases(os.path.join(args.build_dir, "nm_cases.bin"),
                                          [(a, x) for *_, a, x in nm_cases],
                                          params_blob.OP_SECTIONS["TFS_NM_SPARSE_FC"]),
                              os.path.join(args.build_dir, "y.bin"), "nm"], plugin,
                     os.path.join(args.build_dir, "nm_counts.txt"))

    log("dense: XNNPACK inside libLiteRt.so")
    dense = {}
    for dtype in ("float32", "int8"):
        tiny = dense_tflite(os.path.join(args.build_dir, f"dense_1x1_{dtype}.tflite"),
                            np.ones((1, 1), np.float32), dtype, rng)
        base = counted(runner, [lib, tiny], plugin, os.path.join(args.build_dir, "c.txt"), env)[1]
        for in_f, out_f in LAYERS:
            costs = []
            # XNNPACK runs a layer whose width is not a multiple of 8 on a much slower path
            # (1024x300 float32: 307,200 FMLAs, 1024x296: 75,776); the best dense cost is the
            # smaller of the layer's own and the next multiple of 8's, scaled by width.
            for width in sorted({out_f, -(-out_f // 8) * 8}):
                w = np.zeros((width, in_f), np.float32)
                w[:out_f] = dense_w[(in_f, out_f, dtype)]
                model = dense_tflite(os.path.join(args.build_dir, f"dense_{in_f}x{width}_{dtype}.tflite"),
                                     w, dtype, rng)
                run = counted(runner, [lib, model], plugin, os.path.join(args.build_dir, "c.txt"), env)[1]
                costs.append(((run[0] - base[0]) * out_f / width, (run[1] - base[1]) * out_f / width))
            dense[(in_f, out_f, dtype)] = (costs[0], min(costs, key=lambda c: c[1]), base)

    print()
    print(f"Emulated core: {CORE}")
    print(f"Cycle table:   {CYCLE_TABLE}")
    print(f"Dense:         XNNPACK FULLY_CONNECTED in {os.path.basename(wheel)} (libLiteRt.so C API, "
          "1 thread, batch 1), minus the runtime's fixed cost per inference "
          + ", ".join(f"{d} {dense[(LAYERS[0][0], LAYERS[0][1], d)][2][0]:,} instr / "
                      f"{dense[(LAYERS[0][0], LAYERS[0][1], d)][2][1]:,.0f} cyc"
                      for d in ("float32", "int8")))
    print("               (the SMLAL rows run without the dot product, e.g. Cortex-A72, but are "
          "compared with the same SDOT-capable dense baseline)")
    print(f"Sparse:        tflite_export/kernels/tfs_gsfc_neon.c ({KEEP:.0%} of groups kept, "
          f"batch 1, int8 input zero point {IN_ZP}); portable = the portable C kernel; 2:4 = "
          "tfs_nm_neon.c on the same layers with 2 of every 4 weights kept")
    print(f"Paths:         driver {driver}, runner {runner}, plugin {plugin}")
    print()
    head = ("| layer (in x out) | dtype | g | groups | dense instr (best) | dense cyc (measured) | "
            "dense cyc (best) | NEON kernel | NEON instr | NEON cyc | NEON / best dense | "
            "portable cyc |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for i, (in_f, out_f, dtype, g, groups, _, _) in enumerate(cases):
        portable, neon, dot = seg[1 + 4 * i], seg[2 + 4 * i], seg[3 + 4 * i]
        (_, measured), (di, dc), _ = dense[(in_f, out_f, dtype.split()[0])]
        rows = {"float32": [("FMLA", neon)], "int8": [("SDOT", dot), ("SMLAL (no dotprod)", neon)]}[dtype]
        for kern, (ki, kc, _) in rows:
            print(f"| {in_f}x{out_f} | {dtype} | {g} | {groups:,} | {di:,.0f} | {measured:,.0f} | "
                  f"{dc:,.0f} | {kern} | {ki:,} | {kc:,.0f} | {kc / dc:.3f}x | {portable[1]:,.0f} |")
    for i, (in_f, out_f, dtype, _, _) in enumerate(nm_cases):
        portable, neon = nm_seg[1 + 4 * i], nm_seg[2 + 4 * i]
        (_, measured), (di, dc), _ = dense[(in_f, out_f, dtype)]
        kern = "2:4 TBL + FMLA" if dtype == "float32" else "2:4 TBL + SMLAL"
        print(f"| {in_f}x{out_f} | {dtype} | 2:4 | {in_f * out_f // 2:,} kept | {di:,.0f} | "
              f"{measured:,.0f} | {dc:,.0f} | {kern} | {neon[0]:,} | {neon[1]:,.0f} | "
              f"{neon[1] / dc:.3f}x | {portable[1]:,.0f} |")
    unclassified = sum(s[2] for s in seg) + sum(s[2] for s in nm_seg)
    if args.fit:
        rows = [dict(format="dense", dtype=d, out=o, units=i * o, time_ns=dense[(i, o, d)][1][1])
                for i, o in LAYERS for d in ("float32", "int8")]
        rows += [dict(format="custom", dtype=d, g=g, out=o, units=groups,
                      time_ns=(seg[2 + 4 * k] if d == "float32" else seg[3 + 4 * k])[1])
                 for k, (i, o, d, g, groups, _, _) in enumerate(cases)]
        print("\nFitted arm-neon profile (formats; tfscalpel/targets.py ARM_NEON):")
        print(json.dumps(fit_profile(rows), indent=1))
    print(f"\nInstructions the cycle table did not classify (costed as integer ALU ops): "
          f"{unclassified:,} in the sparse runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
