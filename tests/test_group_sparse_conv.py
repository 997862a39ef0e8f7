"""TFS_GROUP_SPARSE_CONV2D: the group-sparse int8 conv op (FORMAT.md) against TFLite's own int8
CONV_2D, its validator, the exporter's rewrite for cortex-m4 and the host runtime.

References are TFLite's: the reference interpreter (BUILTIN_REF, fixed-point requantization, the
arithmetic of TFLite Micro) for the kernel's "fixed_point" flavour, and the stock host runtime
(XNNPACK, fp32 requantization) for the "fp32" flavour the host adapter uses."""
import keras
import numpy as np
import pytest

from tflite_export import c_array, check_nm, exporter, flatbuffer, kernels, params_blob, runtime
from tflite_export.conv_layers import decide, find_conv2d
from tflite_export.converter import convert_keras
from tflite_export.cost_model import load as load_cost
from tflite_export.formats import group_sparse_conv
from tflite_export.kernels import KernelFormatError
from tflite_export.quiet import filtered_stderr, litert_noise
from test_kernels import impls  # noqa: F401  (the fixture: every kernel path this CPU has)

CONV = group_sparse_conv.FORMAT


def _zero_groups(layer, g, sparsity, rng):
    """Zero whole groups of g along kh*kw*cin of each filter (GroupPrunedConv2D's layout)."""
    k, *rest = layer.get_weights()
    flat = k.reshape(-1, k.shape[-1])
    n_blocks = -(-flat.shape[0] // g)
    dead = np.repeat(rng.random((n_blocks, flat.shape[1])) < sparsity, g, axis=0)[:flat.shape[0]]
    flat[dead] = 0.0
    layer.set_weights([flat.reshape(k.shape), *rest])


def _conv_model(in_shape, filters, kernel, strides, dilation, padding, activation, seed, g=4):
    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input(in_shape), keras.layers.Conv2D(
        filters, kernel, strides=strides, dilation_rate=dilation, padding=padding,
        activation=activation, name="c")])
    _zero_groups(model.get_layer("c"), g, 0.6, rng)
    calib = rng.random((32,) + in_shape, dtype=np.float32)
    return model, calib, rng.random((6,) + in_shape, dtype=np.float32)


# (input HWC, filters, kernel, strides, dilation, padding, activation): SAME / VALID, stride 1/2,
# dilation 2, K = kh*kw*cin not a multiple of g (ragged last group), non-square shapes.
CASES = [
    ((9, 9, 3), 6, 3, 1, 1, "same", "relu"),       # K = 27: ragged for g = 4
    ((10, 11, 2), 5, (3, 2), 2, 1, "valid", None),
    ((9, 8, 4), 7, 3, 2, 1, "same", None),
    ((9, 9, 5), 4, 3, 1, 2, "same", "relu6"),      # dilation 2
    ((12, 10, 3), 8, 5, 1, 2, "valid", "relu"),    # dilation 2, VALID
    ((8, 8, 1), 6, 5, 1, 1, "valid", None),        # LeNet-5's conv1 shape, cin = 1
]


def _reference_tensors(tfl_bytes, conv, images):
    """The conv's int8 input and output under TFLite's reference kernels."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    with filtered_stderr(litert_noise):
        it = Interpreter(model_content=tfl_bytes, num_threads=1,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                         experimental_preserve_all_tensors=True)
        it.resize_tensor_input(0, list(images.shape))
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], images)
        it.invoke()
        return it.get_tensor(conv.input), it.get_tensor(conv.output)


@pytest.mark.parametrize("case", CASES, ids=[f"{c[6] or 'none'}-{c[5]}-s{c[3]}-d{c[4]}-{i}"
                                              for i, c in enumerate(CASES)])
def test_kernel_bit_exact_with_tflite_reference_conv2d(case):
    model, calib, images = _conv_model(*case, seed=len(case[0]) + case[1])
    tfl_bytes = convert_keras(model, "int8", calib)
    tfl = flatbuffer.load(tfl_bytes)
    (conv,) = find_conv2d(tfl)
    assert conv.unsupported is None
    x, want = _reference_tensors(tfl_bytes, conv, images)
    for g in (1, 2, 4, 8):
        arrays = CONV.arrays(tfl, conv, g)
        fixed = kernels.GroupSparseConv2D(*[arrays[n] for n in CONV.sections], requant="fixed_point")
        assert fixed.out_shape == want.shape[1:]
        for impl in kernels.available_impls():
            got = fixed(x, impl=impl)
            np.testing.assert_array_equal(got, want, err_msg=f"g={g} impl={impl}")
        # tiles that start mid-row and a ragged last tile give the same bits (an odd tile: the
        # DSP path's position pairs and its single last position)
        for tile in (1, 3, conv.positions):
            tiled = kernels.GroupSparseConv2D(*[arrays[n] for n in CONV.sections],
                                              requant="fixed_point", tile=tile)
            for impl in kernels.available_impls():
                np.testing.assert_array_equal(tiled(x, impl=impl), want, err_msg=f"g={g} tile={tile} {impl}")


# float32 cases besides CASES: an odd shape with a 1-row output and cin = 7, stride 3 VALID.
F32_CASES = CASES + [((7, 13, 7), 9, (2, 5), (1, 3), 1, "valid", "relu"),
                     ((5, 6, 16), 3, 3, 1, (2, 1), "same", None)]


@pytest.mark.parametrize("case", F32_CASES, ids=[f"{c[6] or 'none'}-{c[5]}-s{c[3]}-d{c[4]}-{i}"
                                                  for i, c in enumerate(F32_CASES)])
def test_float32_kernel_matches_tflite_conv2d(case, impls):
    """float32 conv op vs TFLite's reference float CONV_2D (SAME/VALID, strides, dilation, odd
    shapes, fused RELU/RELU6, bias) at g = 4, 8, 16, batch 1 and 3, every kernel path this CPU
    has, several tiles (the FC core's one-row and SpMM kernels both) and the direct path
    (tfs_gsconv_direct.c): within 1e-5 of the output's magnitude, the float FC tests' tolerance."""
    model, _, images = _conv_model(*case, seed=len(case[0]) + case[1] + 7)
    conv_layer = model.get_layer("c")
    k, b = conv_layer.get_weights()
    conv_layer.set_weights([k, np.random.default_rng(1).standard_normal(b.shape).astype(np.float32)])
    tfl_bytes = convert_keras(model)
    tfl = flatbuffer.load(tfl_bytes)
    (conv,) = find_conv2d(tfl)
    assert conv.unsupported is None and conv.dtype == "float32"
    for batch in (1, 3):
        x, want = _reference_tensors(tfl_bytes, conv, images[:batch])
        mag = max(float(np.abs(want).max()), 1e-3)
        for g in (4, 8, 16):
            arrays = CONV.arrays(tfl, conv, g)
            assert arrays["out_scale"].size == 0 and arrays["out_scale"].dtype == np.float32
            # im2col at several tiles; the direct path (what the host adapter runs)
            for tile, direct in ((None, False), (1, False), (5, False), (conv.positions, False),
                                 ("host", None), (None, True)):
                layer = kernels.GroupSparseConv2D(*[arrays[n] for n in CONV.sections], tile=tile,
                                                  direct=direct)
                assert layer.direct == (_host_direct(arrays["geometry"], arrays["meta"])
                                        if direct is None else direct)
                assert layer.dtype == np.float32 and layer.out_shape == want.shape[1:]
                for impl in impls:
                    got = layer(x, impl=impl)
                    assert got.dtype == np.float32
                    err = float(np.abs(got - want).max())
                    assert err <= 1e-5 * mag, (g, tile, impl, batch, err / mag)


def _host_direct(geom, meta=None) -> bool:
    """The host adapter's rule (tfs_gsconv_host_direct) from a float32 node's geometry and meta
    (None: dense): the direct path's wide indices, (out_h - 1) * dp_w + out_w with dp_w =
    ceil(((out_w - 1) * stride_w + (kw - 1) * dil_w + 1) / stride_w), rounded up to 16, at most
    4/3 of the positions, or at most twice them when groups * g <= in * out / 16."""
    kw, sw, dw, out_h, out_w = (int(geom[i]) for i in (5, 7, 9, 11, 12))
    dp_w = -(-((out_w - 1) * sw + (kw - 1) * dw + 1) // sw)
    lanes = -(-((out_h - 1) * dp_w + out_w) // 16) * 16
    positions = out_h * out_w
    sparse = meta is not None and 16 * int(meta[4]) * int(meta[3]) <= int(meta[1]) * int(meta[2])
    return 3 * lanes <= 4 * positions or (lanes <= 2 * positions and sparse)


def test_direct_path_selection_and_empty_filters(impls):
    """The float32 direct path: what the host tile selects (int8 never, the TFLite Micro / Cortex-M
    path stays im2col), its manifest lines, and a layer whose filters store no group at all or
    only a ragged tail group (K = 27, g = 8) against the im2col path and TFLite's reference."""
    model, calib, images = _conv_model((9, 9, 3), 6, 3, 1, 1, "same", "relu", seed=4, g=8)
    layer = model.get_layer("c")
    k, b = layer.get_weights()
    k[..., 0] = 0.0  # filter 0 stores no group: act(bias) everywhere
    k[..., 1] = 0.0
    k[2, 2, :, 1] = 1.5  # filter 1: only column 26, the ragged tail group (24..26)
    layer.set_weights([k, np.array([0.25, -0.5, 0.0, 0.1, -0.2, 0.3], np.float32)])
    tfl_bytes = convert_keras(model)
    tfl = flatbuffer.load(tfl_bytes)
    (conv,) = find_conv2d(tfl)
    x, want = _reference_tensors(tfl_bytes, conv, images[:2])
    arrays = CONV.arrays(tfl, conv, 8)
    assert arrays["row_ptr"][1] == 0 and arrays["row_ptr"][2] == 1  # filter 0 empty, 1: one group
    sections = [arrays[n] for n in CONV.sections]
    direct = kernels.GroupSparseConv2D(*sections, tile="host", direct=True)
    im2col = kernels.GroupSparseConv2D(*sections, tile="host", direct=False)
    assert direct.direct and not im2col.direct
    # the host adapter's rule: 9 x 9 SAME 3 x 3 computes 8 * 11 + 9 = 97 wide indices (112 lanes)
    # for 81 positions, more than 4/3: im2col; LeNet-5's conv1 (672 lanes for 576): direct
    assert not kernels.GroupSparseConv2D(*sections, tile="host").direct
    assert not _host_direct(arrays["geometry"], arrays["meta"])
    assert _host_direct(np.array([1, 28, 28, 1, 5, 5, 1, 1, 1, 1, 1, 24, 24, 0, 0, 0]))
    mag = float(np.abs(want).max())
    for impl in impls:
        got = direct(x, impl=impl)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * mag, err_msg=impl)
        np.testing.assert_allclose(got, im2col(x, impl=impl), rtol=0, atol=1e-5 * mag, err_msg=impl)
        np.testing.assert_array_equal(got[..., 0], np.float32(0.25))  # relu(bias)
    # the manifest's direct kernels: float32 only, any g, every x86 path and the portable one
    lines = [k for k in kernels.kernel_table() if k.op == "group_sparse_conv_direct"]
    assert {k.dtype for k in lines} == {"float32"} and {k.g for k in lines} == {0}
    assert "portable" in {k.impl for k in lines} and not any(k.packed for k in lines)
    # int8: never direct, even when asked (the Cortex-M cost profile is the im2col path's)
    q = flatbuffer.load(convert_keras(model, "int8", calib))
    (qconv,) = find_conv2d(q)
    qa = CONV.arrays(q, qconv, 8)
    assert not kernels.GroupSparseConv2D(*[qa[n] for n in CONV.sections], tile="host",
                                         direct=True).direct


def test_float32_validator_rules():
    """A float32 node: the requantization sections must be present and empty, meta's dtype
    decides which, and the activations must be float32."""
    model, _, images = _conv_model((9, 9, 3), 6, 3, 2, 1, "same", "relu", seed=2)
    tfl = flatbuffer.load(convert_keras(model))
    (conv,) = find_conv2d(tfl)
    arrays = CONV.arrays(tfl, conv, 4)
    layer = CONV.kernel(arrays)
    assert layer(images[:1]).shape == (1, 5, 5, 6)
    with pytest.raises(KernelFormatError, match=r"input 6 \(out_multiplier\): 2 elements, expected 0"):
        CONV.kernel(dict(arrays, out_multiplier=np.zeros(2, np.int32)))
    with pytest.raises(KernelFormatError, match=r"input 8 \(out_scale\): element type 2, expected 1"):
        CONV.kernel(dict(arrays, out_scale=np.zeros(0, np.int32)))
    bad = arrays["meta"].copy()
    bad[5] = 1  # says int8: values must then be int8
    with pytest.raises(KernelFormatError, match=r"input 1 \(values\): element type 1, expected 9"):
        CONV.kernel(dict(arrays, meta=bad))
    with pytest.raises(KernelFormatError, match="element type 9"):
        layer(np.zeros((1, 9, 9, 3), np.int8))
    # the blob round trip (what the runtime's unpacker reads) keeps the empty sections
    blob = CONV.blob(tfl, conv, 4)
    back = kernels.GroupSparseConv2D.from_blob(blob)
    np.testing.assert_array_equal(back(images[:2]), layer(images[:2]))


def test_float32_conv_node_runs_on_the_host_runtime():
    """A float32 model with its CONV_2D rewritten into the conv op (LiteRT adapter, batch 1 and
    3, SAME with stride 2) against the stock runtime's dense CONV_2D (XNNPACK)."""
    model, _, images = _conv_model((11, 9, 3), 8, 3, 2, 1, "same", "relu6", seed=9)
    dense = convert_keras(model)
    tfl = flatbuffer.load(dense)
    (conv,) = find_conv2d(tfl)
    CONV.rewrite(tfl, conv, 8)
    flatbuffer.compact(tfl)
    sparse = flatbuffer.save(tfl)
    assert [flatbuffer.custom_code(tfl, op) for op in tfl.subgraphs[0].operators] == [CONV.op_name]
    with filtered_stderr(litert_noise):
        for batch in (1, 3):
            want = runtime.load_stock(dense).run(images[:batch])[0]
            got = runtime.load(sparse).run(images[:batch])[0]
            assert got.shape == want.shape == (batch, 6, 5, 8)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * float(np.abs(want).max()))


def test_lenet5_like_model_exported_for_cortex_m4_equals_stock_tflite(tmp_path):
    """conv-pool-conv-pool-fc-fc-fc, groups of 4 pruned at 85-90 %, exported for cortex-m4:
    both convs become TFS_GROUP_SPARSE_CONV2D by the cost model (conv1 priced against CMSIS-NN's
    CONV_2D) unless forced dense; the model runs on the host runtime and every output
    equals stock TFLite int8 on the dense model; the C array's arena estimate counts the conv
    scratch."""
    rng = np.random.default_rng(5)
    keras.utils.set_random_seed(5)
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(6, 5, activation="relu", name="conv1"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(16, 5, activation="relu", name="conv2"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(120, activation="relu", name="fc1"),
        keras.layers.Dense(84, activation="relu", name="fc2"),
        keras.layers.Dense(10, name="fc3")])
    for name in ("conv1", "conv2"):
        _zero_groups(model.get_layer(name), 4, 0.85, rng)
    for name in ("fc1", "fc2"):
        _zero_groups(model.get_layer(name), 4, 0.9, rng)
    calib = rng.random((64, 28, 28, 1), dtype=np.float32)
    images = rng.random((8, 28, 28, 1), dtype=np.float32)
    auto = exporter.export(model, target="cortex-m4", quantize="int8", representative_data=calib)
    rows = {r.layer: r for r in auto.layers}
    assert rows["conv2"].format == "custom_conv" and rows["conv2"].g == 4
    # conv1 priced against CMSIS-NN's CONV_2D (the profile's dense_conv): sparse, 1.67x predicted
    # (6 filters of K = 25 at 85 %: im2col and the per-position work dominate the sparse op)
    assert rows["conv1"].format == "custom_conv"
    assert rows["conv1"].reason == "custom_conv g=4 predicted 1.67x vs dense on cortex-m4"
    forced = exporter.export(model, target="cortex-m4", quantize="int8", representative_data=calib,
                             formats={"conv1": "dense"})
    assert {r.layer: r for r in forced.layers}["conv1"].reason == "kept dense: forced by formats="
    res = auto
    assert rows["conv1"].format == "custom_conv" and rows["conv2"].format == "custom_conv"
    assert rows["conv1"].shape == (25, 6) and rows["conv2"].shape == (150, 16)
    assert rows["conv2"].bytes_exported < rows["conv2"].bytes_dense
    ops = [flatbuffer.custom_code(flatbuffer.load(res.model_bytes), op)
           for op in flatbuffer.load(res.model_bytes).subgraphs[0].operators]
    assert ops.count("TFS_GROUP_SPARSE_CONV2D") == 2
    with filtered_stderr(litert_noise):
        want = runtime.load_stock(res.dense_model_bytes).run(images)[0]
        got = runtime.load(res.model_bytes).run(images)[0]
    np.testing.assert_array_equal(got, want)
    est = c_array.arena_estimate(res.model_bytes)
    # conv1: 576 positions, K = 25, tile 163: patches 4,080 + int16 copy 8,182 (FORMAT.md)
    assert est.scratch >= 4080 + 8182
    cc, h = res.write_c_array(str(tmp_path))
    text = open(cc).read()
    assert f"g_model_data_len = {len(res.model_bytes)};" in text and "alignas(16)" in text
    # the validator decodes both conv nodes back to the dense filters
    checks = {c.name: c for c in check_nm(res.model_bytes).layers}
    assert checks["conv1"].kind == "TFS_GROUP_SPARSE_CONV2D" and checks["conv1"].status != "invalid"
    assert checks["conv2"].kind == "TFS_GROUP_SPARSE_CONV2D" and checks["conv2"].status != "invalid"


def _valid_layer(seed=0):
    model, calib, _ = _conv_model((9, 9, 3), 6, 3, 2, 1, "same", "relu", seed=seed)
    tfl = flatbuffer.load(convert_keras(model, "int8", calib))
    (conv,) = find_conv2d(tfl)
    return tfl, conv, CONV.arrays(tfl, conv, 4)


def test_geometry_and_blob_shape():
    tfl, conv, arrays = _valid_layer()
    np.testing.assert_array_equal(arrays["geometry"],
                                  [1, 9, 9, 3, 3, 3, 2, 2, 1, 1, 0, 5, 5, 1, 1, 0])
    assert arrays["meta"][1] == 27 and arrays["meta"][2] == 6
    blob = CONV.blob(tfl, conv, 4)
    assert blob.shape[:5] == (6, 1, 1, 2, 2)  # SAME: ekh = ekw = 1
    layer = CONV.kernel(params_blob.unpack_params(blob, CONV.sections))
    assert layer.blob_dims() == (6, 1, 1, 2, 2)


@pytest.mark.parametrize("field,value,message", [
    (0, 2, "geometry: version 2, expected 1"),
    (1, 0, "geometry: in_h = 0 not in [1, 65535]"),
    (3, 4, "geometry: kh * kw * cin = 36, but meta's in = 27"),
    (6, 70000, "geometry: stride_h = 70000 not in [1, 65535]"),
    (10, 2, "geometry: padding = 2, expected 0 (SAME) or 1 (VALID)"),
    (11, 4, "geometry: out_h x out_w = 4 x 5, TFLite's is 5 x 5"),
    (13, 0, "geometry: padding top/left = 0/1, TFLite's is 1/1"),
    (15, 7, "geometry: reserved field = 7, must be 0"),
])
def test_validator_rejects_bad_geometry(field, value, message):
    _, _, arrays = _valid_layer()
    arrays["geometry"][field] = value
    with pytest.raises(KernelFormatError, match=message.replace("[", r"\[").replace("]", r"\]")
                       .replace("*", r"\*").replace("(", r"\(").replace(")", r"\)")):
        CONV.kernel(arrays)


def test_validator_rules_beyond_geometry():
    _, _, arrays = _valid_layer()
    valid = dict(arrays)
    g = arrays["geometry"].copy()
    g[10], g[11], g[12], g[13], g[14] = 1, 4, 4, 0, 0  # VALID 3x3 on 9x9, stride 2: 4 x 4
    CONV.kernel(dict(valid, geometry=g))  # accepted
    g2 = g.copy()
    g2[1] = g2[2] = 2  # VALID window 3 larger than the 2x2 input
    with pytest.raises(KernelFormatError, match="VALID filter window is larger than the input"):
        CONV.kernel(dict(valid, geometry=g2))
    with pytest.raises(KernelFormatError, match=r"input 9 \(geometry\): 15 elements, expected 16"):
        CONV.kernel(dict(valid, geometry=arrays["geometry"][:15]))
    with pytest.raises(KernelFormatError, match="input 9 .geometry.: element type 1, expected 2"):
        CONV.kernel(dict(valid, geometry=arrays["geometry"].astype(np.float32)))
    bad_meta = arrays["meta"].copy()
    bad_meta[5] = 0  # says float32: the int8 values and bias no longer fit it
    with pytest.raises(KernelFormatError):
        CONV.kernel(dict(valid, meta=bad_meta))
    bad_col = arrays["col_idx"].copy()
    bad_col[0] = 200  # the FC part's rules hold: a group index past ceil(27 / 4)
    with pytest.raises(KernelFormatError, match=r"col_idx\[0\] = 200 >= ceil\(in / g\) = 7"):
        CONV.kernel(dict(valid, col_idx=bad_col))
    layer = CONV.kernel(valid)
    with pytest.raises(KernelFormatError, match="activations of shape"):
        layer(np.zeros((1, 9, 9, 4), np.int8))


def test_blob_unpacker_rejects_wrong_section_count():
    tfl, conv, arrays = _valid_layer()
    blob = params_blob.pack_params({k: v for k, v in arrays.items() if k != "geometry"}, 6,
                                   CONV.sections)
    with pytest.raises(KernelFormatError, match="sections"):
        kernels.GroupSparseConv2D.from_blob(blob)


def test_runtime_rejects_blob_shape_that_does_not_match_the_geometry():
    model, calib, images = _conv_model((9, 9, 3), 6, 3, 1, 1, "valid", None, seed=3)
    res = exporter.export(model, target="cortex-m4", quantize="int8", representative_data=calib,
                          formats={"c": "custom_conv"})
    tfl = flatbuffer.load(res.model_bytes)
    sg = tfl.subgraphs[0]
    (op,) = [op for op in sg.operators if flatbuffer.custom_code(tfl, op) == CONV.op_name]
    t = sg.tensors[int(op.inputs[1])]
    assert tuple(t.shape[:5]) == (6, 3, 3, 1, 1)
    with filtered_stderr(litert_noise):
        np.testing.assert_array_equal(runtime.load(res.model_bytes).run(images)[0],
                                      runtime.load_stock(res.dense_model_bytes).run(images)[0])
    # the same bytes, the blob reshaped as if the window were 1x1 (SAME-like): refused
    t.shape = np.array([6, 1, 1, 1, 1, 9 * int(t.shape[5])], np.int32)
    with filtered_stderr(litert_noise), pytest.raises(runtime.LiteRtError):
        runtime.load(flatbuffer.save(tfl)).run(images)


def test_planner_prices_conv_and_respects_hints():
    tfl, conv, _ = _valid_layer()
    cost = load_cost("cortex-m4")
    d = decide(conv, cost)
    assert d.format in ("custom_conv", "dense") and d.reason
    forced = decide(conv, cost, group_size=8, force="custom_conv")
    assert forced.format == "custom_conv" and forced.g == 8
    with pytest.raises(ValueError, match="format 'custom' not in"):
        decide(conv, cost, force="custom")
    # a float32 conv on a profile that prices only int8 convs stays dense, saying why
    f32 = flatbuffer.load(convert_keras(_conv_model((9, 9, 3), 6, 3, 1, 1, "valid", None, seed=4)[0]))
    (fconv,) = find_conv2d(f32)
    assert decide(fconv, cost).reason == "kept dense: cortex-m4 prices no float32 convolution"


def _lenet_convs(g, seed=11):
    """LeNet-5's convs (20 5x5 filters on 28x28x1, pool, 50 5x5), groups of g along kh*kw*cin
    zeroed at 90 %."""
    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((28, 28, 1)), keras.layers.Conv2D(20, 5, activation="relu", name="conv1"),
        keras.layers.MaxPooling2D(2), keras.layers.Conv2D(50, 5, activation="relu", name="conv2")])
    for name in ("conv1", "conv2"):
        _zero_groups(model.get_layer(name), g, 0.9, rng)
    return model, rng.random((16, 28, 28, 1), dtype=np.float32)


@pytest.mark.parametrize("target,dtype,conv1,conv2,speedups", [
    ("x86-avx512", "float32", "custom_conv", "custom_conv", ("1.71", "3.69")),
    ("x86-avx512", "int8", "dense", "custom_conv", ("0.75", "2.41")),
    ("x86-avx2", "float32", "custom_conv", "custom_conv", ("1.93", "3.33")),
    ("x86-avx2", "int8", "dense", "dense", ("0.37", "0.77"))])
def test_x86_profiles_price_the_conv_op(target, dtype, conv1, conv2, speedups):
    """x86 targets price TFS_GROUP_SPARSE_CONV2D (tfscalpel/targets.py, fitted on LeNet-5's
    convs): conv2 (K = 500, 64 positions) becomes the conv op at the target's g (not int8 on
    AVX2: no SpMM kernel without VNNI); conv1 (K = 25, 576 positions) too in float32, which the
    host runs on the direct (im2col-free) path, while int8's im2col dominates and XNNPACK is
    faster, so it stays dense; the model runs."""
    from tfscalpel import targets

    g = targets.get_target(target).group_size(dtype)
    model, calib = _lenet_convs(g)
    quant = dict(quantize="int8", representative_data=calib) if dtype == "int8" else {}
    res = exporter.export(model, target=target, **quant)
    rows = {r.layer: r for r in res.layers}
    kept = f"kept dense: best sparse choice custom_conv g={g} predicted {{}}x vs dense (< 1.15x " \
           f"required on {target})"
    if conv2 == "dense":
        assert rows["conv2"].format == "dense" and rows["conv2"].reason == kept.format(speedups[1])
    else:
        assert (rows["conv2"].format, rows["conv2"].g) == ("custom_conv", g)
        assert rows["conv2"].reason == f"custom_conv g={g} predicted {speedups[1]}x vs dense on {target}"
    if conv1 == "dense":
        assert rows["conv1"].format == "dense" and rows["conv1"].reason == kept.format(speedups[0])
    else:
        assert (rows["conv1"].format, rows["conv1"].g) == ("custom_conv", g)
        assert rows["conv1"].reason == f"custom_conv g={g} predicted {speedups[0]}x vs dense on {target}"
    with filtered_stderr(litert_noise):
        want = runtime.load_stock(res.dense_model_bytes).run(calib[:2])[0]
        got = runtime.load(res.model_bytes).run(calib[:2])[0]
    if dtype == "int8":
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * float(np.abs(want).max()))


def test_tile_constants_are_the_kernels():
    """The cost formula's tile rule (tfscalpel.cost_profile, which the training side prices with
    and cannot read from the C header) uses the kernels' own TFS_GSCONV_* constants."""
    import os
    import re

    from tfscalpel import cost_profile

    header = os.path.join(os.path.dirname(kernels.__file__), "tfs_group_sparse_conv.h")
    with open(header) as f:
        defines = dict(re.findall(r"#define (TFS_GSCONV_\w+) (\d+)", f.read()))
    assert int(defines["TFS_GSCONV_TILE_BYTES"]) == cost_profile.CONV_TILE_BYTES
    assert int(defines["TFS_GSCONV_HOST_TILE"]) == cost_profile.CONV_HOST_TILE
    # 4096 bytes of 25-byte int8 patches: 163 positions; float32: 40; the host runtime's least 32
    assert cost_profile.conv_tile(576, 25) == 163
    assert cost_profile.conv_tile(576, 25, elem_size=4) == 40
    assert cost_profile.conv_tile(64, 500, elem_size=4) == 2
    assert cost_profile.conv_tile(64, 500, elem_size=4, host=True) == 32
    assert cost_profile.conv_tile(16, 500, host=True) == 16
