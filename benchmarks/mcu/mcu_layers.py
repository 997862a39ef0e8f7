"""A model's int8 layers as the MCU benchmark sees them, and their host-side checks.

`model_layers` converts a Keras model to full int8 with the exporter's own `convert_keras` and
describes every CONV_2D (`find_conv2d`: filters flattened to `[out, kh*kw*cin]`, the im2col
order) and FULLY_CONNECTED as a layer dict holding the dense weights and the arrays the
TFS_GROUP_SPARSE_FC custom op carries (`formats.group_sparse.FORMAT.arrays`). `host_layer` runs one layer
on the host (numpy `im2col` + the kernel's DSP algorithm, bit-exact with the firmware's);
`check_layers` compares every layer with TFLite's reference kernels (`tflite_tensors`,
`double_requant`) and XNNPACK and yields the firmware's inputs and expected outputs;
`host_fc_chain` runs an FC-only model end to end on the host kernel; `flash_bytes` is what each
kernel reads from flash for one layer.
"""
from __future__ import annotations

import numpy as np

from tfscalpel.cost_profile import CONV_TILE_BYTES, conv_tile

#: im2col tile: as many output positions per kernel call as fit in this many patch bytes (the
#: conv op's TFS_GSCONV_TILE_BYTES, which the cost formula prices)
PATCH_BUDGET = CONV_TILE_BYTES


def find_conv2d(tfl):
    """Every int8 CONV_2D of a converted model as (ConvLayer, geometry dict), from the exporter's
    own `tflite_export.conv_layers.find_conv2d`: the layer is an FCLayer view of the filters
    flattened to `[out, kh*kw*cin]` (the im2col order), so the group-sparse format (`arrays`)
    builds the group-CSR and requantization arrays for it exactly as for an FC layer."""
    from tflite_export.conv_layers import find_conv2d as exporter_find_conv2d

    found = []
    for conv in exporter_find_conv2d(tfl):
        if conv.unsupported:
            raise ValueError(f"CONV_2D {conv.name}: {conv.unsupported}")
        found.append((conv, conv.geometry()))
    return found


def model_layers(model, calibration_x, group_size):
    """Convert `model` to full int8 (the exporter's `convert_keras`) and describe every CONV_2D
    and FULLY_CONNECTED in execution order: name, kind, tensor ids, dense weights `[out, K]`, the
    custom op's arrays at `group_size` (`formats.group_sparse.FORMAT.arrays`), conv geometry and im2col tile.
    Returns (int8 .tflite bytes, layers)."""
    from tflite_export import flatbuffer, keras_names
    from tflite_export.formats.group_sparse import FORMAT as GROUP_SPARSE
    from tflite_export.converter import convert_keras
    from tflite_export.conv_layers import keras_conv_layers
    from tflite_export.fc_layers import find_fully_connected

    tfl_bytes = convert_keras(model, "int8", calibration_x)
    tfl = flatbuffer.load(tfl_bytes)
    fcs = find_fully_connected(tfl)
    keras_names.assign_names(model, tfl, fcs)
    found = [(fc, None) for fc in fcs] + find_conv2d(tfl)
    unused = keras_conv_layers(model)
    layers = []
    for fc, geom in sorted(found, key=lambda f: (f[0].subgraph, f[0].op_index)):
        if fc.weights is None or fc.dtype != "int8":
            raise ValueError(f"layer {fc.name}: {fc.unsupported or 'not a full int8 layer'}")
        T = tfl.subgraphs[fc.subgraph].tensors
        L = {"name": fc.name, "kind": "fc", "input": fc.input, "output": fc.output,
             "weights": np.ascontiguousarray(fc.weights), **GROUP_SPARSE.arrays(tfl, fc, group_size),
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
                     tile=conv_tile(P, fc.in_features))
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


def quantize_input(L, x):
    """Float model inputs `x` as layer `L`'s int8 input (its input scale and zero point): the
    model's leading QUANTIZE, in numpy, for an FC layer fed directly by the model input."""
    scale, zero_point = L["scales"][0], int(L["meta"][7])
    return np.clip(np.round(x / scale) + zero_point, -128, 127).astype(np.int8)


def host_fc_chain(layers, xq):
    """An FC-only model end to end on the host kernel (fixed-point requantization, as on the
    MCU): int8 inputs `xq` `[n, in]` through every layer, each fed the previous one's output.
    Returns every layer's int8 output. Conv models cannot run so: the ops between their layers
    (pooling, ...) are not modelled here."""
    if any(L["kind"] != "fc" for L in layers):
        raise ValueError("host_fc_chain: a model with only FULLY_CONNECTED layers expected")
    outs, h = [], xq
    for L in layers:
        h = host_layer(L, h)
        outs.append(h)
    return outs


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


def flash_bytes(L):
    """Bytes each kernel reads from flash for one layer (weights, indices, bias, requant params)."""
    out = int(L["meta"][2])
    requant = 8 * out  # int32 multiplier + shift per channel, both kernels
    dense = L["weights"].size + 4 * out + requant
    sparse = (L["values"].nbytes + L["col_idx"].nbytes + L["row_ptr"].nbytes + L["meta"].nbytes
              + L["bias"].nbytes + requant)
    return dense, sparse


