"""int8 models on an emulated Cortex-M4: dense CMSIS-NN-style baseline vs TFS_GROUP_SPARSE_FC.

    python benchmarks/mcu/bench_mcu.py [--model out/main/lenet300_pruned.keras] [--group-size 4]
    python benchmarks/mcu/bench_mcu.py --model lenet5_pruned.keras [--dataset mnist]

Installs its Debian packages if missing (gcc-arm-none-eabi, libnewlib-arm-none-eabi,
qemu-system-arm), converts the pruned model to full int8 with the exporter's own functions
(`convert_keras`, `find_fully_connected`, `rewrite.custom_op_arrays` - the arrays the exported
custom op carries), builds a bare-metal firmware for Cortex-M4 (`-mcpu=cortex-m4`, the kernel core
tflite_export/kernels/tfs_group_sparse_fc.c unchanged), runs it on QEMU `mps2-an386` with the
counting plugin `tfs_cycles_plugin.c`, checks that every layer's output is bit-exact with the
host's, and prints instructions, estimated cycles and flash bytes per layer. See
../../../shared/notes or tflite_export/kernels/TFLM.md for what the cycle estimate is (+-20 %,
for comparisons only). Build outputs go to --build-dir (default out/mcu/build); nothing is
written into the source tree.

On the command line a model with only FC layers (LeNet-300-100) runs as an FC chain on the host
kernel (fixed-point requantization; MNIST test error over 10,000 images), as before. A model with
Conv2D layers (`--model lenet5.keras`) has every CONV_2D measured too: the exporter emits no conv
custom op, so the firmware runs each conv as im2col (im2col.c, one implementation for both paths)
+ the FC kernels over its output positions (`[positions, kh*kw*cin] x [filters, kh*kw*cin]^T`,
the filters as group-CSR along kh*kw*cin, the group order of tfscalpel's GroupPrunedConv2D): a
measurement of what a firmware doing so would cost. Each layer's int8 input comes from TFLite's
reference interpreter; the host result (the same im2col + kernel, fixed-point requantization as
on TFLite Micro) must equal TFLite's reference int8 CONV_2D on every value. TFLite's reference
FULLY_CONNECTED requantizes in double precision in this TFLite version, so for FC layers the
differing values are counted and that double-precision formula is checked to reproduce it; both
are also compared with XNNPACK (fp32 requantization). The ops between (QUANTIZE, pooling,
RESHAPE, DEQUANTIZE) are not measured. `measure_model` does all this for one model and returns
per-layer dicts and totals (for benchmarks/scalpel_table.py).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

KERNELS = os.path.join(ROOT, "tflite_export", "kernels")
CFLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-O2",
          "-ffunction-sections", "-fdata-sections", "-std=c11", "-Wall", "-Wextra", "-Werror"]
PACKAGES = ["gcc-arm-none-eabi", "libnewlib-arm-none-eabi", "qemu-system-arm"]


def log(msg):
    print(f"[mcu] {msg}", flush=True)


def ensure_packages():
    if shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm"):
        return
    log(f"installing {' '.join(PACKAGES)} (apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
                   check=True, env=env, stdout=subprocess.DEVNULL)


def int8_layers(model_path, group_size):
    """The pruned model's int8 FC layers: dense weights and the custom op's arrays."""
    import keras

    from tfscalpel import datasets
    from tflite_export import flatbuffer, keras_names, rewrite
    from tflite_export.converter import convert_keras
    from tflite_export.fc_layers import find_fully_connected

    (x, _), (xt, yt) = datasets.load_mnist()
    train = datasets.to_model_inputs(x, flatten=True)
    test = datasets.to_model_inputs(xt, flatten=True)
    model = keras.models.load_model(model_path, compile=False)
    tfl = flatbuffer.load(convert_keras(model, "int8", train[:500]))
    fcs = find_fully_connected(tfl)
    keras_names.assign_names(model, tfl, fcs)
    layers = []
    for fc in fcs:
        arrays = rewrite.custom_op_arrays(tfl, fc, group_size)
        layers.append({"name": fc.name, "weights": np.ascontiguousarray(fc.weights), **arrays})
    qx = tfl.subgraphs[fcs[0].subgraph].tensors[fcs[0].input].quantization
    scale, zp = float(qx.scale[0]), int(qx.zeroPoint[0])
    xq = np.clip(np.round(test / scale) + zp, -128, 127).astype(np.int8)
    return layers, xq, yt


def host_chain(layers, xq):
    """Per-layer int8 outputs of the host kernel (portable, fixed-point requantization)."""
    from tflite_export import kernels

    outs, h = [], xq
    for L in layers:
        k = kernels.GroupSparseFC(L["values"], L["col_idx"], L["row_ptr"], L["meta"], L["bias"],
                                  L["out_multiplier"], L["out_shift"], L["out_scale"],
                                  requant="fixed_point")
        h = k(h, impl="portable")
        outs.append(h)
    return outs


# ---------------------------------------------------------------------------------------------
# Whole models (conv + FC layers): layer arrays, host im2col + kernel, TFLite's own outputs
# ---------------------------------------------------------------------------------------------
#: conv geometry fields, in conv_geom's order (im2col.h)
GEOM_FIELDS = ("in_h", "in_w", "cin", "out_h", "out_w", "kh", "kw", "stride_h", "stride_w",
               "dil_h", "dil_w", "pad_top", "pad_left", "pad_value")
#: im2col tile: as many output positions per kernel call as fit in this many patch bytes
PATCH_BUDGET = 4096


def _keras_conv_layers(model):
    """Every layer with a 4-D kernel (Conv2D), nested models included, in model order."""
    found, stack = [], list(reversed(getattr(model, "layers", [])))
    while stack:
        layer = stack.pop()
        if getattr(layer, "layers", None):
            stack.extend(reversed(layer.layers))
        elif getattr(layer, "kernel", None) is not None and len(layer.kernel.shape) == 4:
            found.append(layer)
    return found


def find_conv2d(tfl):
    """Every int8 CONV_2D of a converted model as (FCLayer view, geometry dict): the FCLayer has
    the filters `[out, kh, kw, cin]` flattened to `[out, kh*kw*cin]` (the im2col order), so the
    exporter's `rewrite.custom_op_arrays` builds the group-CSR and requantization arrays for it
    exactly as for an FC layer (per-channel weight scales along dim 0)."""
    from tensorflow.lite.python import schema_py_generated as schema

    from tflite_export import flatbuffer
    from tflite_export.fc_layers import FCLayer, builtin_code

    found = []
    for si, sg in enumerate(tfl.subgraphs):
        for oi, op in enumerate(sg.operators):
            if builtin_code(tfl.operatorCodes[op.opcodeIndex]) != schema.BuiltinOperator.CONV_2D:
                continue
            x, w, y = int(op.inputs[0]), int(op.inputs[1]), int(op.outputs[0])
            b = int(op.inputs[2]) if len(op.inputs) > 2 else -1
            T = sg.tensors
            name = T[w].name.decode() if isinstance(T[w].name, bytes) else str(T[w].name)
            if any(T[t].type != schema.TensorType.INT8 for t in (x, w, y)):
                raise ValueError(f"CONV_2D {name}: not a full int8 layer")
            W = flatbuffer.tensor_data(tfl, T[w], np.int8)
            if W is None or W.ndim != 4:
                raise ValueError(f"CONV_2D {name}: filters are not a constant 4-D tensor")
            cout, kh, kw, cin = W.shape
            qw = T[w].quantization
            if (len(qw.scale) not in (1, cout) or np.any(np.asarray(qw.zeroPoint) != 0)
                    or (len(qw.scale) > 1 and int(qw.quantizedDimension) != 0)):
                raise ValueError(f"CONV_2D {name}: weights not symmetric per-tensor / per-output-channel")
            n, ih, iw, cin_x = (int(d) for d in T[x].shape)
            n_y, oh, ow, cout_y = (int(d) for d in T[y].shape)
            if (n, n_y, cin_x, cout_y) != (1, 1, cin, cout):
                raise ValueError(f"CONV_2D {name}: shapes {T[x].shape} -> {T[y].shape} unexpected")
            o = op.builtinOptions
            sh, sw, dh, dw = int(o.strideH), int(o.strideW), int(o.dilationHFactor), int(o.dilationWFactor)
            pt = pl = 0
            if int(o.padding) == schema.Padding.SAME:  # TFLite's ComputePaddingHeightWidth
                pt = max((oh - 1) * sh + (kh - 1) * dh + 1 - ih, 0) // 2
                pl = max((ow - 1) * sw + (kw - 1) * dw + 1 - iw, 0) // 2
            geom = dict(in_h=ih, in_w=iw, cin=cin, out_h=oh, out_w=ow, kh=kh, kw=kw, stride_h=sh,
                        stride_w=sw, dil_h=dh, dil_w=dw, pad_top=pt, pad_left=pl,
                        pad_value=int(T[x].quantization.zeroPoint[0]))
            fc = FCLayer(subgraph=si, op_index=oi, name=name, input=x, weight=w, bias=b, output=y,
                         in_features=kh * kw * cin, out_features=cout, dtype="int8",
                         activation=int(o.fusedActivationFunction),
                         weights=np.ascontiguousarray(W.reshape(cout, -1)))
            found.append((fc, geom))
    return found


def model_layers(model, calibration_x, group_size):
    """Convert `model` to full int8 (the exporter's `convert_keras`) and describe every CONV_2D
    and FULLY_CONNECTED in execution order: name, kind, tensor ids, dense weights `[out, K]`, the
    custom op's arrays at `group_size` (`rewrite.custom_op_arrays`), conv geometry and im2col tile.
    Returns (int8 .tflite bytes, layers)."""
    from tflite_export import flatbuffer, keras_names, rewrite
    from tflite_export.converter import convert_keras
    from tflite_export.fc_layers import find_fully_connected

    tfl_bytes = convert_keras(model, "int8", calibration_x)
    tfl = flatbuffer.load(tfl_bytes)
    fcs = find_fully_connected(tfl)
    keras_names.assign_names(model, tfl, fcs)
    found = [(fc, None) for fc in fcs] + find_conv2d(tfl)
    unused = _keras_conv_layers(model)
    layers = []
    for fc, geom in sorted(found, key=lambda f: (f[0].subgraph, f[0].op_index)):
        if fc.weights is None or fc.dtype != "int8":
            raise ValueError(f"layer {fc.name}: {fc.unsupported or 'not a full int8 layer'}")
        T = tfl.subgraphs[fc.subgraph].tensors
        L = {"name": fc.name, "kind": "fc", "input": fc.input, "output": fc.output,
             "weights": np.ascontiguousarray(fc.weights), **rewrite.custom_op_arrays(tfl, fc, group_size),
             "positions": 1, "tile": 1,
             "scales": (float(T[fc.input].quantization.scale[0]),  # input, weights [out], output
                        np.broadcast_to(np.asarray(T[fc.weight].quantization.scale, np.float32),
                                        (fc.out_features,)).copy(),
                        float(T[fc.output].quantization.scale[0]))}
        if geom is not None:
            shape = (geom["kh"], geom["kw"], geom["cin"], fc.out_features)
            match = next((k for k in unused if tuple(k.kernel.shape) == shape), None)
            if match is not None:  # conv ops come in model order: the first unused of that shape
                unused.remove(match)
                L["name"] = match.name
            P = geom["out_h"] * geom["out_w"]
            L.update(kind="conv", geom=geom, positions=P,
                     tile=max(1, min(P, PATCH_BUDGET // fc.in_features)))
        layers.append(L)
    return tfl_bytes, layers


def im2col(x, geom):
    """Host im2col (numpy; the firmware's is im2col.c): x `[n, in_h, in_w, cin]` int8 ->
    patches `[n, out_h * out_w, kh * kw * cin]`, padding filled with the input zero point."""
    G = geom
    pb = max(0, (G["out_h"] - 1) * G["stride_h"] + (G["kh"] - 1) * G["dil_h"] + 1 - G["in_h"] - G["pad_top"])
    pr = max(0, (G["out_w"] - 1) * G["stride_w"] + (G["kw"] - 1) * G["dil_w"] + 1 - G["in_w"] - G["pad_left"])
    xp = np.pad(x, ((0, 0), (G["pad_top"], pb), (G["pad_left"], pr), (0, 0)),
                constant_values=np.int8(G["pad_value"]))
    iy = (np.arange(G["out_h"]) * G["stride_h"])[:, None] + (np.arange(G["kh"]) * G["dil_h"])[None, :]
    ix = (np.arange(G["out_w"]) * G["stride_w"])[:, None] + (np.arange(G["kw"]) * G["dil_w"])[None, :]
    p = xp[:, iy[:, None, :, None], ix[None, :, None, :], :]  # [n, out_h, out_w, kh, kw, cin]
    return p.reshape(len(x), G["out_h"] * G["out_w"], -1)


def host_layer(L, x, requant="fixed_point"):
    """One layer on the host: (im2col +) the group-sparse kernel's DSP algorithm (emulated in C
    on the host, bit-exact with the firmware's). x `[n, ...]` int8 -> y `[n, positions * out]`."""
    from tflite_export import kernels

    k = kernels.GroupSparseFC(L["values"], L["col_idx"], L["row_ptr"], L["meta"], L["bias"],
                              L["out_multiplier"], L["out_shift"], L["out_scale"], requant=requant)
    n = len(x)
    if L["kind"] == "conv":
        G = L["geom"]
        x = im2col(x.reshape(n, G["in_h"], G["in_w"], G["cin"]), G).reshape(-1, int(L["meta"][1]))
    return k(x.reshape(-1, int(L["meta"][1])), impl="arm_dsp").reshape(n, -1)


def tflite_tensors(tfl_bytes, ids, images, reference):
    """The int8 tensors `ids` (as `[n, -1]`) of the stock interpreter on `images`: TFLite's
    reference kernels (`reference=True`, every intermediate kept) or the default CPU path,
    XNNPACK (the tensors made subgraph outputs so that XNNPACK materializes them)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from tflite_export import flatbuffer

    if reference:
        it = Interpreter(model_content=tfl_bytes, num_threads=1,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                         experimental_preserve_all_tensors=True)
    else:
        tfl = flatbuffer.load(tfl_bytes)
        sg = tfl.subgraphs[0]
        sg.outputs = np.array(list(sg.outputs) + [i for i in ids if i not in set(sg.outputs)], np.int32)
        it = Interpreter(model_content=flatbuffer.save(tfl), num_threads=1)
    index = it.get_input_details()[0]["index"]
    it.resize_tensor_input(index, list(images.shape))
    it.allocate_tensors()
    it.set_tensor(index, np.ascontiguousarray(images, dtype=np.float32))
    it.invoke()
    return {i: it.get_tensor(i).reshape(len(images), -1).copy() for i in ids}


def double_requant(L, x):
    """TFLite's reference int8 FULLY_CONNECTED as this TFLite version runs it: the int32
    accumulators requantized in double precision, `round(acc * s_in * s_w / s_out)` (half away
    from zero), not with the fixed-point multiplier/shift (which TFLite Micro and the MCU use)."""
    s_in, s_w, s_out = L["scales"]
    acc = (x.reshape(len(x), -1).astype(np.int64) - int(L["meta"][7])) @ L["weights"].astype(np.int64).T
    acc = (acc + L["bias"]).astype(np.int32).astype(np.float64)  # int32 accumulator
    v = acc * (np.float64(s_in) * s_w.astype(np.float64) / np.float64(s_out))
    q = np.sign(v) * np.floor(np.abs(v) + 0.5) + int(L["meta"][8])
    return np.clip(q, int(L["meta"][9]), int(L["meta"][10])).astype(np.int8)


def check_layers(tfl_bytes, layers, images, image=0):
    """Run every layer on the host on TFLite's own int8 inputs and compare with TFLite's output.

    Returns (per-layer check dicts, firmware inputs, expected firmware outputs for `image`).
    A check dict counts output values over all `images`: `tflite_ref_mismatches` (host
    fixed-point vs TFLite's reference kernels); `tflite_ref_double_mismatches` (FC only:
    `double_requant` vs the reference FC, which requantizes in double precision in this TFLite
    version; None for conv, whose reference kernel is fixed-point like TFLite Micro's);
    `xnnpack_fp32_mismatches` (host with XNNPACK's fp32 requantization vs XNNPACK) and
    `xnnpack_fixed_point_mismatches` (the fixed-point path vs XNNPACK)."""
    ids = sorted({L["input"] for L in layers} | {L["output"] for L in layers})
    with _quiet():
        ref = tflite_tensors(tfl_bytes, ids, images, reference=True)
        xnn = tflite_tensors(tfl_bytes, ids, images, reference=False)
    checks, xs, ys = [], [], []
    for L in layers:
        x_ref, y_ref = ref[L["input"]], ref[L["output"]]
        y = host_layer(L, x_ref)
        checks.append({
            "checked_values": int(y.size), "checked_images": int(len(images)),
            "tflite_ref_mismatches": int(np.sum(y != y_ref)),
            "tflite_ref_double_mismatches":
                None if L["kind"] == "conv" else int(np.sum(double_requant(L, x_ref) != y_ref)),
            "xnnpack_fp32_mismatches": int(np.sum(host_layer(L, xnn[L["input"]], "fp32") != xnn[L["output"]])),
            "xnnpack_fixed_point_mismatches": int(np.sum(host_layer(L, xnn[L["input"]]) != xnn[L["output"]]))})
        xs.append(x_ref[image])
        ys.append(y[image])
    return checks, xs, ys


def _quiet():
    from tflite_export.quiet import filtered_stderr, litert_noise

    return filtered_stderr(litert_noise)


def c_array(name, arr, ctype):
    flat = np.asarray(arr).ravel()
    body = ",".join(str(int(v)) for v in flat)
    return f"static const {ctype} {name}[{max(flat.size, 1)}] __attribute__((aligned(16))) = {{{body}}};\n"


def flash_bytes(L):
    """Bytes each kernel reads from flash for one layer (weights, indices, bias, requant params)."""
    out = int(L["meta"][2])
    requant = 8 * out  # int32 multiplier + shift per channel, both kernels
    dense = L["weights"].size + 4 * out + requant
    sparse = (L["values"].nbytes + L["col_idx"].nbytes + L["row_ptr"].nbytes + L["meta"].nbytes
              + L["bias"].nbytes + requant)
    return dense, sparse


def write_header(path, layers, xs, ys):
    """The firmware's data: per layer the dense weights, the custom op's arrays, the input `x`
    (a conv layer's whole input feature map) and the host's output `y`. Layers without a "kind"
    (`int8_layers`) are FC layers."""
    parts = ["/* Generated by benchmarks/mcu/bench_mcu.py - do not edit. */\n",
             "#include \"dense_baseline.h\"\n#include \"im2col.h\"\n#include \"tfs_group_sparse_fc.h\"\n"]
    entries = []
    max_y, ws, patch = 1, 32, 4
    for i, (L, x, y) in enumerate(zip(layers, xs, ys)):
        m = L["meta"]
        # col_idx: group indices, uint8 or uint16 as the exporter chose (FORMAT.md version 2)
        ctype, celem = {1: ("uint8_t", "TFS_ELEM_UINT8"), 2: ("uint16_t", "TFS_ELEM_UINT16")}[L["col_idx"].itemsize]
        parts += [c_array(f"w{i}", L["weights"], "int8_t"), c_array(f"v{i}", L["values"], "int8_t"),
                  c_array(f"c{i}", L["col_idx"], ctype), c_array(f"r{i}", L["row_ptr"], "int32_t"),
                  c_array(f"m{i}", m, "int32_t"), c_array(f"b{i}", L["bias"], "int32_t"),
                  c_array(f"mu{i}", L["out_multiplier"], "int32_t"), c_array(f"s{i}", L["out_shift"], "int32_t"),
                  f"static const float sc{i}[{m[2]}] = {{{','.join(repr(float(v)) + 'f' for v in L['out_scale'])}}};\n",
                  c_array(f"x{i}", x, "int8_t"), c_array(f"y{i}", y, "int8_t")]
        n = int(m[4])
        conv = L.get("kind") == "conv"
        positions, tile = int(L.get("positions", 1)), int(L.get("tile", 1))
        geom = ", ".join(f".{k} = {L['geom'][k]}" for k in GEOM_FIELDS) if conv else "0"
        entries.append(
            f"  {{.is_conv = {int(conv)}, .geom = {{{geom}}}, .positions = {positions}, .tile = {tile},\n"
            f"   .dense = {{{m[1]}, {m[2]}, {m[7]}, {m[8]}, {m[9]}, {m[10]}, w{i}, b{i}, mu{i}, s{i}}},\n"
            f"   .tensors = {{{{NULL, 0, 0}}, {{v{i}, {n * int(m[3])}, TFS_ELEM_INT8}}, {{c{i}, {n}, {celem}}},\n"
            f"    {{r{i}, {int(m[2]) + 1}, TFS_ELEM_INT32}}, {{m{i}, 16, TFS_ELEM_INT32}}, {{b{i}, {m[2]}, TFS_ELEM_INT32}},\n"
            f"    {{mu{i}, {m[2]}, TFS_ELEM_INT32}}, {{s{i}, {m[2]}, TFS_ELEM_INT32}}, {{sc{i}, {m[2]}, TFS_ELEM_FLOAT32}}}},\n"
            f"   .x = x{i}, .y = y{i}}},\n")
        max_y = max(max_y, positions * int(m[2]))
        ws = max(ws, tile * int(m[1]) * 2 + 32)  # tfs_gsfc_workspace_size
        if conv:
            patch = max(patch, tile * int(m[1]))
    parts.append(
        "typedef struct {\n  dense_fc dense;\n  tfs_tensor tensors[9];\n  const int8_t* x;\n  const int8_t* y;\n"
        "  int32_t is_conv;\n  conv_geom geom;          /* conv only */\n"
        "  int32_t positions, tile; /* conv: output positions, positions per im2col tile; FC: 1, 1 */\n"
        "} bench_layer;\n"
        f"#define BENCH_N_LAYERS {len(layers)}\n"
        f"#define BENCH_MAX_Y {max_y}\n"
        f"#define BENCH_WS_BYTES {(ws + 3) // 4 * 4}\n"
        f"#define BENCH_PATCH_BYTES {(patch + 3) // 4 * 4}\n"
        "static const bench_layer kBenchLayers[BENCH_N_LAYERS] = {\n" + "".join(entries) + "};\n")
    with open(path, "w") as f:
        f.write("".join(parts))


def build(build_dir):
    elf = os.path.join(build_dir, "bench.elf")
    srcs = [os.path.join(HERE, s) for s in ("startup.c", "bench_main.c", "dense_baseline.c", "im2col.c")]
    srcs += [os.path.join(KERNELS, "tfs_group_sparse_fc.c"), os.path.join(KERNELS, "tfs_common.c")]
    cmd = ["arm-none-eabi-gcc", *CFLAGS, "-I", build_dir, "-I", HERE, "-I", KERNELS, *srcs,
           "--specs=nano.specs", "--specs=rdimon.specs", "-nostartfiles",
           "-T", os.path.join(HERE, "mps2_an386.ld"), "-Wl,--gc-sections", "-o", elf, "-lm"]
    subprocess.run(cmd, check=True)
    plugin = os.path.join(build_dir, "tfs_cycles_plugin.so")
    subprocess.run(["gcc", "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared",
                    os.path.join(HERE, "tfs_cycles_plugin.c"), "-o", plugin], check=True)
    nm = subprocess.run(["arm-none-eabi-nm", elf], check=True, capture_output=True, text=True).stdout
    mark = next(int(line.split()[0], 16) for line in nm.splitlines() if line.endswith(" tfs_mark"))
    return elf, plugin, mark


def run_qemu(elf, plugin, mark, build_dir):
    counts = os.path.join(build_dir, "counts.txt")
    if os.path.exists(counts):
        os.remove(counts)
    proc = subprocess.run(
        ["qemu-system-arm", "-M", "mps2-an386", "-nographic", "-monitor", "none",
         "-semihosting-config", "enable=on,target=native", "-kernel", elf,
         "-plugin", f"{plugin},mark={mark:#x},out={counts}"],
        capture_output=True, text=True, timeout=300)
    with open(counts) as f:
        segs = [tuple(int(v) for v in line.split()) for line in f if line.strip()]
    return proc.returncode, proc.stdout + proc.stderr, segs


NOTE = ("Conv layers run as im2col + the FC kernels inside the benchmark firmware (the exporter "
        "emits no conv custom op: this measures what a firmware doing so would cost). "
        "im2col (im2col.c, the same code in both paths) writes a tile of output positions "
        "(`tile`) into a patch buffer, padding = the input zero point; dense = im2col + the "
        "CMSIS-NN-style SMLAD FC kernel (2 filters per pass, one position at a time; CMSIS-NN's "
        "own arm_convolve_s8 also pairs 2 positions, so it is somewhat faster than this dense "
        "baseline); sparse = im2col + TFS_GROUP_SPARSE_FC's DSP path on the tile, filters as "
        "group-CSR along kh*kw*cin. Conv cycles include im2col; `im2col cyc` is its share. "
        "Not measured: the ops between (QUANTIZE, pooling, RESHAPE/flatten, DEQUANTIZE).")


def _load(model):
    if isinstance(model, (str, os.PathLike)):
        import keras

        return keras.models.load_model(model, compile=False)
    return model


def measure_model(model, group_size, train_x, images, build_dir, image=0, calibration=500):
    """Emulate every CONV_2D and FULLY_CONNECTED of `model` int8 on the Cortex-M4.

    model: a `.keras` path or a Keras model (stripped / pruned); group_size: g of the group-CSR
    (1 = plain CSR, "traditional" pruning); train_x: inputs for int8 calibration (the first
    `calibration` are used); images: model inputs `[n, ...]` float32 for the host-vs-TFLite
    checks, of which `images[image]` runs on the emulator; build_dir: firmware build directory.

    Returns {"model", "group_size", "layers": [per-layer dict], "totals": dict, "note",
    "firmware_output"}. A layer dict: name, kind ("conv" | "fc"), in (K = kh*kw*cin for conv),
    out, positions (output positions, 1 for FC), tile, g, groups (stored groups), dense_ / sparse_
    instructions and cycles (conv: im2col included), im2col_instructions / im2col_cycles (conv;
    0 for FC), portable_cycles (FC: the portable C kernel; None for conv), dense_bytes /
    sparse_bytes (flash: weights + indices + bias + requant), and the host-vs-TFLite check
    counts of `check_layers`. totals: the sums of dense_/sparse_instructions, _cycles, _bytes,
    and best_cycles / best_bytes (per layer the sparse kernel where it is faster, else dense:
    what the exporter's choice would give). Raises RuntimeError if the host differs from
    TFLite's reference kernels or the firmware from the host.
    """
    ensure_packages()
    name = os.fspath(model) if isinstance(model, (str, os.PathLike)) else getattr(model, "name", "model")
    model = _load(model)
    tfl_bytes, layers = model_layers(model, train_x[:calibration], group_size)
    checks, xs, ys = check_layers(tfl_bytes, layers, np.asarray(images), image)
    bad = [L["name"] for L, c in zip(layers, checks)
           if c["tflite_ref_mismatches" if L["kind"] == "conv" else "tflite_ref_double_mismatches"]]
    if bad:
        raise RuntimeError(f"host results differ from TFLite's reference kernels on {bad}")
    os.makedirs(build_dir, exist_ok=True)
    write_header(os.path.join(build_dir, "layers_data.h"), layers, xs, ys)
    elf, plugin, mark = build(build_dir)
    rc, out, segs = run_qemu(elf, plugin, mark, build_dir)
    kernel_segs = segs[1::2]  # segments alternate: kernel, code between kernels
    if rc != 0 or len(kernel_segs) < 3 * len(layers):
        raise RuntimeError(f"Cortex-M4 firmware failed (exit {rc}, {len(kernel_segs)} segments): "
                           f"{out.strip()[-1000:]}")
    rows = []
    for k, (L, c) in enumerate(zip(layers, checks)):
        (di, dc), (si, sc), (ti, tc) = kernel_segs[3 * k:3 * k + 3]
        conv = L["kind"] == "conv"
        db, sb = flash_bytes(L)
        m = L["meta"]
        rows.append({"name": L["name"], "kind": L["kind"], "in": int(m[1]), "out": int(m[2]),
                     "positions": int(L["positions"]), "tile": int(L["tile"]), "g": int(m[3]),
                     "groups": int(m[4]), "dense_instructions": di, "sparse_instructions": si,
                     "dense_cycles": dc, "sparse_cycles": sc,
                     "im2col_instructions": ti if conv else 0, "im2col_cycles": tc if conv else 0,
                     "portable_cycles": None if conv else tc, "dense_bytes": db, "sparse_bytes": sb,
                     **c})
    totals = {key: sum(r[key] for r in rows) for key in (
        "dense_instructions", "sparse_instructions", "dense_cycles", "sparse_cycles",
        "dense_bytes", "sparse_bytes", "im2col_cycles")}
    faster = [r["sparse_cycles"] < r["dense_cycles"] for r in rows]
    totals["best_cycles"] = sum(r["sparse_cycles" if f else "dense_cycles"] for r, f in zip(rows, faster))
    totals["best_bytes"] = sum(r["sparse_bytes" if f else "dense_bytes"] for r, f in zip(rows, faster))
    return {"model": name, "group_size": group_size, "layers": rows, "totals": totals,
            "note": NOTE, "firmware_output": out.strip()}


def model_table(result):
    """The per-layer table of `measure_model`'s result (conv and FC layers), as text."""
    head = (f"{'layer':<8}{'kind':>5}{'K x out @pos':>17}{'groups':>8}{'dense instr':>13}"
            f"{'sparse instr':>14}{'dense cyc':>12}{'sparse cyc':>12}{'ratio':>7}{'im2col cyc':>12}"
            f"{'dense B':>9}{'sparse B':>10}{'ratio':>7}")
    lines = [head, "-" * len(head)]
    for r in result["layers"]:
        shape = f"{r['in']}x{r['out']}" + (f" @{r['positions']}" if r["kind"] == "conv" else "")
        im2col = f"{r['im2col_cycles']:,}" if r["kind"] == "conv" else "-"
        lines.append(f"{r['name']:<8}{r['kind']:>5}{shape:>17}{r['groups']:>8}{r['dense_instructions']:>13,}"
                     f"{r['sparse_instructions']:>14,}{r['dense_cycles']:>12,}{r['sparse_cycles']:>12,}"
                     f"{r['sparse_cycles'] / r['dense_cycles']:>6.3f}x{im2col:>12}{r['dense_bytes']:>9,}"
                     f"{r['sparse_bytes']:>10,}{r['sparse_bytes'] / r['dense_bytes']:>6.3f}x")
    t = result["totals"]
    lines.append(f"{'total':<8}{'':>5}{'':>17}{'':>8}{t['dense_instructions']:>13,}{t['sparse_instructions']:>14,}"
                 f"{t['dense_cycles']:>12,}{t['sparse_cycles']:>12,}{t['sparse_cycles'] / t['dense_cycles']:>6.3f}x"
                 f"{t['im2col_cycles']:>12,}{t['dense_bytes']:>9,}{t['sparse_bytes']:>10,}"
                 f"{t['sparse_bytes'] / t['dense_bytes']:>6.3f}x")
    lines.append(f"{'best':<8}{'':>5}{'(sparse where faster, else dense)':>38}{'':>14}"
                 f"{t['best_cycles']:>12,}{t['best_cycles'] / t['dense_cycles']:>6.3f}x{'':>12}{'':>9}"
                 f"{t['best_bytes']:>10,}{t['best_bytes'] / t['dense_bytes']:>6.3f}x")
    return "\n".join(lines)


def check_lines(result):
    """One line per layer: the host vs TFLite's int8 CONV_2D / FULLY_CONNECTED outputs."""
    lines = []
    for r in result["layers"]:
        n, imgs = r["checked_values"], r["checked_images"]
        xnn = (f"vs XNNPACK: fp32 requantization {n - r['xnnpack_fp32_mismatches']:,} equal, "
               f"fixed-point differs on {r['xnnpack_fixed_point_mismatches']:,}")
        if r["kind"] == "conv":
            lines.append(f"{r['name']}: host im2col + kernel (fixed-point) vs TFLite's reference int8 "
                         f"CONV_2D: {n - r['tflite_ref_mismatches']:,} of {n:,} values equal "
                         f"({imgs} images); {xnn}")
        else:
            lines.append(f"{r['name']}: TFLite's reference int8 FULLY_CONNECTED (double-precision "
                         f"requantization) reproduced on {n - r['tflite_ref_double_mismatches']:,} of "
                         f"{n:,} values ({imgs} images); the fixed-point path (TFLite Micro's, run "
                         f"on the MCU) differs from it on {r['tflite_ref_mismatches']:,}; {xnn}")
    return lines


def model_has_conv(model):
    return bool(_keras_conv_layers(model))


def main_model(args, model, t0):
    """The CLI for a model with conv layers."""
    from tfscalpel import datasets

    dataset = args.dataset
    if dataset == "auto":
        base = os.path.basename(args.model).lower()
        dataset = "fashion_mnist" if ("convnet" in base or "fashion" in base) else "mnist"
    (x, _), (xt, _) = getattr(datasets, f"load_{dataset}")()
    flat = len(model.inputs[0].shape) == 2
    train = datasets.to_model_inputs(x[:500], flatten=flat)
    test = datasets.to_model_inputs(xt[:args.checks], flatten=flat)
    log(f"checking every layer against TFLite on {len(test)} {dataset} test images, emulating "
        f"image {args.image}")
    res = measure_model(model, args.group_size, train, test, args.build_dir, image=args.image)
    print(res["firmware_output"])
    print(f"\nCortex-M4 (QEMU mps2-an386), batch 1, int8, g={args.group_size}; dense = CMSIS-NN-style "
          "SMLAD kernel, 2 rows per pass (our own code); sparse = TFS_GROUP_SPARSE_FC DSP path; "
          "cycles estimated by tfs_cycles_plugin (+-20 %); bytes = weights + indices + bias + "
          "requant params")
    print(NOTE)
    print(model_table(res))
    print("\n".join(check_lines(res)))
    print(f"time: {time.time() - t0:.0f} s")
    if args.json:
        import json
        with open(args.json, "w") as f:
            json.dump({k: v for k, v in res.items() if k != "firmware_output"}, f, indent=1)
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=os.path.join(ROOT, "out", "main", "lenet300_pruned.keras"))
    p.add_argument("--group-size", type=int, default=4, help="g of the custom op (the pruning's g)")
    p.add_argument("--build-dir", default=os.path.join(ROOT, "out", "mcu", "build"))
    p.add_argument("--image", type=int, default=0, help="test image run on the emulator")
    p.add_argument("--dataset", choices=("auto", "mnist", "fashion_mnist"), default="auto",
                   help="conv models: calibration / test data (auto: fashion_mnist for a file "
                        "named *convnet* or *fashion*, else mnist)")
    p.add_argument("--checks", type=int, default=100,
                   help="conv models: test images on which each layer is compared with TFLite")
    p.add_argument("--json", default=None,
                   help="also write the per-layer measurements to this file (FC-only model: "
                        "cost_model.calibrate's layout: format, dtype, g, out, units, time_ns = "
                        "estimated cycles; conv model: measure_model's result)")
    args = p.parse_args(argv)
    t0 = time.time()
    ensure_packages()
    if not os.path.isfile(args.model):
        sys.exit(f"error: {args.model} missing: run `python -m tfscalpel.main` first")
    os.makedirs(args.build_dir, exist_ok=True)
    log(f"converting {args.model} to int8")
    model = _load(args.model)
    if model_has_conv(model):
        return main_model(args, model, t0)
    layers, xq, yt = int8_layers(args.model, args.group_size)
    outs = host_chain(layers, xq)
    error = 100.0 * float(np.mean(np.argmax(outs[-1], axis=1) != yt))
    log(f"int8 pruned model on the host kernel (fixed-point requantization): "
        f"MNIST test error {error:.2f} % over {len(yt)} images")
    i = args.image
    xs = [xq[i]] + [o[i] for o in outs[:-1]]
    ys = [o[i] for o in outs]
    write_header(os.path.join(args.build_dir, "layers_data.h"), layers, xs, ys)
    t1 = time.time()
    elf, plugin, mark = build(args.build_dir)
    rc, out, segs = run_qemu(elf, plugin, mark, args.build_dir)
    t2 = time.time()
    print(out.strip())
    if rc != 0:
        sys.exit(f"error: firmware exit status {rc} (outputs not bit-exact or a fault)")
    kernels_segs = segs[1::2]  # segments alternate: kernel, code between kernels
    if len(kernels_segs) < 3 * len(layers):
        sys.exit(f"error: expected {3 * len(layers)} measured segments, got {len(kernels_segs)}")
    head = (f"{'layer':<8}{'in x out':>10}{'groups':>8}{'dense instr':>13}{'sparse instr':>14}"
            f"{'dense cyc':>11}{'sparse cyc':>12}{'ratio':>7}{'portable cyc':>14}"
            f"{'dense B':>9}{'sparse B':>10}{'ratio':>7}")
    lines = [head, "-" * len(head)]
    tot = np.zeros(6)
    measurements = []
    for k, L in enumerate(layers):
        (di, dc), (si, sc), (_, pc) = kernels_segs[3 * k:3 * k + 3]
        db, sb = flash_bytes(L)
        m = L["meta"]
        measurements += [
            {"layer": L["name"], "format": "dense", "dtype": "int8", "in": int(m[1]), "out": int(m[2]),
             "units": int(m[1]) * int(m[2]), "time_ns": dc, "instructions": di},
            {"layer": L["name"], "format": "custom", "dtype": "int8", "g": int(m[3]), "in": int(m[1]),
             "out": int(m[2]), "units": int(m[4]), "time_ns": sc, "instructions": si}]
        tot += [di, si, dc, sc, db, sb]
        m = L["meta"]
        lines.append(f"{L['name']:<8}{f'{m[1]}x{m[2]}':>10}{m[4]:>8}{di:>13,}{si:>14,}{dc:>11,}{sc:>12,}"
                     f"{sc / dc:>6.3f}x{pc:>14,}{db:>9,}{sb:>10,}{sb / db:>6.3f}x")
    lines.append(f"{'total':<8}{'':>10}{'':>8}{int(tot[0]):>13,}{int(tot[1]):>14,}{int(tot[2]):>11,}"
                 f"{int(tot[3]):>12,}{tot[3] / tot[2]:>6.3f}x{'':>14}{int(tot[4]):>9,}{int(tot[5]):>10,}"
                 f"{tot[5] / tot[4]:>6.3f}x")
    print("\nCortex-M4 (QEMU mps2-an386), batch 1, int8; dense = CMSIS-NN-style SMLAD kernel, 2 rows "
          "per pass (our own code); sparse = TFS_GROUP_SPARSE_FC DSP path; cycles estimated by "
          "tfs_cycles_plugin (+-20 %); bytes = weights + indices + bias + requant params")
    print("\n".join(lines))
    print(f"MNIST test error (int8, host kernel, fixed-point): {error:.2f} %")
    print(f"time: export + host run {t1 - t0:.0f} s, build + emulation {t2 - t1:.1f} s")
    if args.json:
        import json
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "group_size": args.group_size, "mnist_error_pct": error,
                       "time_unit": "estimated Cortex-M4 cycles", "measurements": measurements}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
