"""The C kernel core through tflite_export.kernels: every g, ragged tails, batch, every SIMD path
against the portable one and against numpy, and the validator's rules one by one."""
import os
import subprocess
import sys

import numpy as np
import pytest

import array_mutations
import custom_op_testlib as tl
from tflite_export import kernels

GS = [1, 2, 4, 8, 16]
# (in, out): multiples of 16, ragged for every g > 1, in < 16 (all-tail rows for g = 16),
# out not a multiple of the 8-row block.
SHAPES = [(64, 16), (45, 19), (7, 9), (130, 33)]
# col_idx widths (format version 2): the exporter's narrowest (uint8 for every shape above) and
# uint16 (what rows of more than 256 groups get; valid for any layer).
INDEX_DTYPES = [np.uint8, np.uint16]


def _int8_params(rng, out_f, activation=0):
    out_zp = int(rng.integers(-30, 30))
    return dict(in_zp=int(rng.integers(-30, 30)), out_zp=out_zp,
                act_min=out_zp if activation else -128, act_max=127,
                multiplier=rng.integers(1 << 30, (1 << 31) - 1, out_f),
                shift=rng.integers(-12, -4, out_f),
                scale=(rng.uniform(0.001, 0.02, out_f)).astype(np.float32))


def _layer(rng, in_f, out_f, g, dtype, density=0.35, activation=0, requant="fp32",
           index_dtype=None):
    w = tl.random_group_sparse(rng, out_f, in_f, g, density)
    if dtype == "float32":
        bias = rng.standard_normal(out_f).astype(np.float32)
        arrays = tl.layer_arrays(w, bias, g, activation, index_dtype=index_dtype)
        return w, bias, None, kernels.GroupSparseFC(*arrays.values())
    wq = np.clip(np.round(w * 50), -128, 127).astype(np.int8)
    bias = rng.integers(-3000, 3000, out_f).astype(np.int32)
    p = _int8_params(rng, out_f, activation)
    arrays = tl.layer_arrays(wq, bias, g, activation, int8=p, index_dtype=index_dtype)
    if index_dtype is not None:
        assert arrays["col_idx"].dtype == index_dtype
    return wq, bias, p, kernels.GroupSparseFC(*arrays.values(), requant=requant)


def _ref_float(w, bias, x, activation):
    y = x.astype(np.float64) @ w.T.astype(np.float64) + bias
    if activation:
        y = np.maximum(y, 0)
    if activation == 3:
        y = np.minimum(y, 6)
    return y, np.abs(x) @ np.abs(w).T + np.abs(bias)


def _ref_int8_acc(wq, bias, x, p):
    return (x.astype(np.int64) - p["in_zp"]) @ wq.T.astype(np.int64) + bias


def _ref_int8_fp32(wq, bias, x, p):
    """XNNPACK's fp32 requantization in numpy float32 arithmetic."""
    acc = _ref_int8_acc(wq, bias, x, p)
    f = acc.astype(np.float32) * p["scale"]
    f = np.clip(f, np.float32(p["act_min"] - p["out_zp"]), np.float32(p["act_max"] - p["out_zp"]))
    return (np.rint(f).astype(np.int32) + p["out_zp"]).astype(np.int8)


def _mbqm(acc, mult, shift):
    """TFLite's MultiplyByQuantizedMultiplier in Python integers (independent of the C one)."""
    left, right = max(shift, 0), max(-shift, 0)
    a = ((acc << left) + (1 << 31)) % (1 << 32) - (1 << 31)
    ab = a * mult
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    q = abs(ab + nudge) >> 31
    high = q if ab + nudge >= 0 else -q
    mask = (1 << right) - 1
    rem, thr = high & mask, (mask >> 1) + (1 if high < 0 else 0)
    return (high >> right) + (1 if rem > thr else 0)


def _ref_int8_fixed(wq, bias, x, p):
    acc = _ref_int8_acc(wq, bias, x, p)
    out = np.empty(acc.shape, np.int64)
    for (b, r), a in np.ndenumerate(acc):
        out[b, r] = _mbqm(int(a), int(p["multiplier"][r]), int(p["shift"][r])) + p["out_zp"]
    return np.clip(out, p["act_min"], p["act_max"]).astype(np.int8)


#: Every group-sparse kernel of the C manifest (tfs_kernels.inc): a kernel is tested by being listed.
GSFC_KERNELS = [k for k in kernels.kernel_table() if k.op == "group_sparse_fc"]


def require_impl(impl):
    """Skip (naming the missing CPU features) unless this CPU runs `impl`."""
    if impl not in kernels.available_impls():
        pytest.skip(f"kernel path {impl!r} needs the CPU features {kernels.impl_features(impl)}, "
                    "which this CPU lacks")


@pytest.fixture(scope="module")
def impls(request):
    names = kernels.available_impls()
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    missing = [f"{n} ({kernels.impl_features(n)})" for n in kernels.impls()
               if n != "auto" and n not in names]
    line = (f"\n[tfs kernels] paths exercised: {', '.join(names)}; not available on this CPU "
            f"(not tested here): {', '.join(missing) or 'none'}")
    capman = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capman is not None:
        with capman.global_and_fixture_disabled():  # shown even under -q and output capture
            reporter.write_line(line)
    return names


@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
@pytest.mark.parametrize("g", GS)
@pytest.mark.parametrize("in_f,out_f", SHAPES)
def test_float32_every_path_matches_numpy(g, in_f, out_f, index_dtype, impls):
    rng = np.random.default_rng(g * 1000 + in_f)
    for activation in (0, 1, 3):
        w, bias, _, layer = _layer(rng, in_f, out_f, g, "float32", activation=activation,
                                   index_dtype=index_dtype)
        for batch in (1, 3):
            x = rng.standard_normal((batch, in_f)).astype(np.float32)
            want, mag = _ref_float(w, bias, x, activation)
            for impl in impls:
                got = layer(x, impl)
                assert got.shape == (batch, out_f) and got.dtype == np.float32
                err = np.abs(got - want)
                assert np.all(err <= 1e-5 * mag + 1e-7), (impl, float((err / mag).max()))


@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
@pytest.mark.parametrize("g", GS)
@pytest.mark.parametrize("in_f,out_f", SHAPES)
def test_int8_every_path_is_bit_exact(g, in_f, out_f, index_dtype, impls):
    rng = np.random.default_rng(g * 1000 + in_f + 1)
    for activation in (0, 1):
        wq, bias, p, layer = _layer(rng, in_f, out_f, g, "int8", activation=activation,
                                    index_dtype=index_dtype)
        for batch in (1, 4):
            x = rng.integers(-128, 128, (batch, in_f)).astype(np.int8)
            want = _ref_int8_fp32(wq, bias, x, p)
            for impl in impls:
                np.testing.assert_array_equal(layer(x, impl), want, err_msg=impl)


@pytest.mark.parametrize("g", [1, 4, 16])
def test_int8_fixed_point_requantization_matches_tflite_formula(g, impls):
    rng = np.random.default_rng(50 + g)
    wq, bias, p, layer = _layer(rng, 45, 19, g, "int8", requant="fixed_point")
    x = rng.integers(-128, 128, (2, 45)).astype(np.int8)
    want = _ref_int8_fixed(wq, bias, x, p)
    for impl in impls:
        np.testing.assert_array_equal(layer(x, impl), want, err_msg=impl)


def test_multiply_by_quantized_multiplier_matches_reference():
    rng = np.random.default_rng(3)
    for _ in range(3000):
        acc = int(rng.integers(-(1 << 31), 1 << 31))
        mult = int(rng.integers(1 << 30, 1 << 31))
        shift = int(rng.integers(-31, 8))
        assert kernels.multiply_by_quantized_multiplier(acc, mult, shift) == _mbqm(acc, mult, shift)


def test_multiply_by_quantized_multiplier_ties_and_extremes():
    """Products exactly halfway between two results (a * 2^30 with a odd: TFLite's nudge
    differs by sign there), both signs, the int32 extremes and the saturating INT32_MIN^2."""
    cases = [(a, 1 << 30, s) for a in range(-41, 42) for s in (0, -1, -2, -5)]
    cases += [(a, m, s) for a in (-(1 << 31), (1 << 31) - 1, -(1 << 30), (1 << 30) - 1, 1, -1)
              for m in ((1 << 31) - 1, 1 << 30, (1 << 30) + 1) for s in (-31, -8, 0, 1, 3)]
    for acc, mult, shift in cases:
        assert kernels.multiply_by_quantized_multiplier(acc, mult, shift) == _mbqm(acc, mult, shift), \
            (acc, mult, shift)
    # the one product TFLite saturates (2^62 / 2^31 = 2^31 does not fit): INT32_MAX
    assert kernels.multiply_by_quantized_multiplier(-(1 << 31), -(1 << 31), 0) == (1 << 31) - 1


@pytest.mark.parametrize("in_f,g,index_dtype", [(1024, 4, np.uint8), (1030, 4, np.uint16),
                                                (1030, 2, np.uint16)])
def test_large_sparse_layer_all_paths_agree(in_f, g, index_dtype, impls):
    """A 1024x1024 layer at 90 % group sparsity (the benchmark shape; 256 groups per row: the
    exporter's uint8 col_idx) and ragged ones past 256 groups per row (uint16), batch 2."""
    rng = np.random.default_rng(99)
    for dtype in ("float32", "int8"):
        w, bias, p, layer = _layer(rng, in_f, 1024, g, dtype, density=0.1)
        assert layer._arrays[1].dtype == index_dtype  # the narrowest width, chosen by encode
        if dtype == "float32":
            x = rng.standard_normal((2, in_f)).astype(np.float32)
            want, mag = _ref_float(w, bias, x, 0)
            for impl in impls:
                assert np.all(np.abs(layer(x, impl) - want) <= 1e-5 * mag + 1e-7), impl
        else:
            x = rng.integers(-128, 128, (2, in_f)).astype(np.int8)
            for impl in impls:
                np.testing.assert_array_equal(layer(x, impl), _ref_int8_fp32(w, bias, x, p), impl)


def test_empty_rows_and_no_groups(impls):
    meta = np.zeros(16, np.int32)
    meta[:7] = [kernels.FORMAT_VERSION, 12, 5, 4, 0, 0, 0]
    layer = kernels.GroupSparseFC(np.zeros(0, np.float32), np.zeros(0, np.uint8),
                                  np.zeros(6, np.int32), meta, np.arange(5, dtype=np.float32))
    for impl in impls:
        np.testing.assert_array_equal(layer(np.ones((2, 12), np.float32), impl),
                                      np.tile(np.arange(5, dtype=np.float32), (2, 1)))


@pytest.mark.parametrize("kernel", GSFC_KERNELS, ids=lambda k: k.name)
def test_every_listed_kernel_runs_and_is_exact(kernel):
    """Each manifest line: its path picks exactly this kernel for its (dtype, g), and the result
    matches numpy (int8: bit-exact, both requantization flavours) on every shape class."""
    require_impl(kernel.impl)
    for g in [kernel.g] if kernel.g else GS:
        for in_f, out_f in SHAPES:
            rng = np.random.default_rng(7 * g + in_f)
            if kernel.dtype == "float32":
                w, bias, _, layer = _layer(rng, in_f, out_f, g, "float32", activation=1)
                assert layer.kernel(kernel.impl) == kernel.name
                x = rng.standard_normal((3, in_f)).astype(np.float32)
                want, mag = _ref_float(w, bias, x, 1)
                assert np.all(np.abs(layer(x, kernel.impl) - want) <= 1e-5 * mag + 1e-7)
                continue
            for requant, ref in (("fp32", _ref_int8_fp32), ("fixed_point", _ref_int8_fixed)):
                wq, bias, p, layer = _layer(rng, in_f, out_f, g, "int8", requant=requant)
                assert layer.kernel(kernel.impl) == kernel.name
                x = rng.integers(-128, 128, (3, in_f)).astype(np.int8)
                np.testing.assert_array_equal(layer(x, kernel.impl), ref(wq, bias, x, p))


#: The manifest's SpMM kernels (GSMM lines): the op runs them from kernels.batched_min_rows() rows.
GSMM_KERNELS = [k for k in kernels.kernel_table() if k.op == "group_sparse_fc_batched"]


@pytest.mark.parametrize("kernel", GSMM_KERNELS, ids=lambda k: f"{k.name}-g{k.g}")
def test_every_listed_batched_kernel_matches_numpy_and_the_one_row_kernels(kernel):
    """Each SpMM line: its path picks it from batched_min_rows() rows and not below; on a
    partial tile, a full one and several (16, 37, 64, 130 rows) and every shape class (ragged
    tails, in % 4 != 0, in < g) it matches numpy: int8 bit-exact in both requantizations and
    equal to the one-row kernels (the same rows 8 at a time), float32 within 1e-5 relative."""
    require_impl(kernel.impl)
    n0 = kernels.batched_min_rows()
    for g in [kernel.g] if kernel.g else GS:
        for in_f, out_f in SHAPES + [(256, 40)]:
            rng = np.random.default_rng(11 * g + in_f)
            if kernel.dtype == "float32":
                w, bias, _, layer = _layer(rng, in_f, out_f, g, "float32", activation=3)
                cases = [(layer, None)]
            else:
                cases = []
                for requant, ref in (("fp32", _ref_int8_fp32), ("fixed_point", _ref_int8_fixed)):
                    wq, bias, p, layer = _layer(rng, in_f, out_f, g, "int8", activation=1,
                                                requant=requant)
                    cases.append((layer, lambda x, wq=wq, bias=bias, p=p, ref=ref: ref(wq, bias, x, p)))
            for layer, ref in cases:
                assert layer.kernel(kernel.impl, n0) == kernel.name
                assert layer.kernel(kernel.impl, n0 - 1) != kernel.name
                for batch in (n0, 37, 64, 130):
                    if ref is None:
                        x = rng.standard_normal((batch, in_f)).astype(np.float32)
                        want, mag = _ref_float(w, bias, x, 3)
                        err = np.abs(layer(x, kernel.impl) - want)
                        assert np.all(err <= 1e-5 * mag + 1e-7), (g, in_f, batch)
                        continue
                    x = rng.integers(-128, 128, (batch, in_f)).astype(np.int8)
                    got = layer(x, kernel.impl)
                    np.testing.assert_array_equal(got, ref(x), err_msg=f"g={g} in={in_f} batch={batch}")
                    one_row = np.concatenate([layer(x[i:i + 8], kernel.impl) for i in range(0, batch, 8)])
                    np.testing.assert_array_equal(got, one_row)


def test_int8_extreme_values_are_bit_exact_on_every_path(impls):
    """x and w at the int8 extremes (the VNNI paths' x + 128 and bias correction at their
    limits; int16 products at their largest), every g, against numpy."""
    for g in GS:
        rng = np.random.default_rng(500 + g)
        for xv, wv, zp in ((-128, -128, 127), (127, 127, -128), (-128, 127, 0), (127, -128, -1)):
            w = tl.random_group_sparse(rng, 19, 45, g, 0.5)
            wq = np.where(w != 0, np.int8(wv), np.int8(0)).astype(np.int8)
            bias = np.full(19, -7, np.int32)
            p = dict(_int8_params(rng, 19), in_zp=zp)
            layer = kernels.GroupSparseFC(*tl.layer_arrays(wq, bias, g, int8=p).values())
            for rows in (2, kernels.batched_min_rows()):  # the one-row and the SpMM kernels
                x = np.full((rows, 45), xv, np.int8)
                want = _ref_int8_fp32(wq, bias, x, p)
                for impl in impls:
                    np.testing.assert_array_equal(layer(x, impl), want, err_msg=f"{impl} g={g}")


def test_unavailable_path_is_an_error_not_a_silent_fallback():
    """On any CPU: with "avx2" switched off (as on a CPU without it), asking for it, or for a
    path built on it, fails loudly; "auto" still runs (on what is left) and agrees."""
    rng = np.random.default_rng(0)
    *_, layer = _layer(rng, 16, 8, 4, "float32")
    x = rng.standard_normal((1, 16)).astype(np.float32)
    want = layer(x, "portable")
    before = kernels.available_impls()
    with kernels.disabled_impls(["avx2"]):
        left = kernels.available_impls()
        assert "avx2" not in left and "avx512" not in left and "portable" in left
        for impl in ("avx2", "avx512"):
            with pytest.raises(RuntimeError, match="not available"):
                layer(x, impl)
            with pytest.raises(RuntimeError, match="not available"):
                layer.kernel(impl)
            with pytest.raises(RuntimeError, match="not available"):
                kernels.set_runtime_impl(impl)
        np.testing.assert_array_equal(layer(x), want)
        assert kernels.get_runtime_impl() == "auto"
    assert kernels.available_impls() == before


def test_auto_picks_what_is_left_when_paths_are_switched_off():
    rng = np.random.default_rng(1)
    everything = [n for n in kernels.impls() if n not in ("auto", "portable")]
    for dtype in ("float32", "int8"):
        *_, layer = _layer(rng, 40, 9, 16, dtype)
        with kernels.disabled_impls(everything):
            assert kernels.available_impls() == ["portable"]
            assert layer.kernel("auto") == f"tfs_gsfc_portable_{'f32' if dtype == 'float32' else 'i8'}"
        for k in GSFC_KERNELS:  # with nothing switched off, auto runs an available listed kernel
            if k.name == layer.kernel("auto"):
                assert k.impl in kernels.available_impls()
                break
        else:
            pytest.fail(f"auto ran a kernel that is not in the manifest: {layer.kernel('auto')}")


def test_disable_rejects_unknown_names_and_portable():
    with pytest.raises(ValueError, match="unknown kernel implementation"):
        with kernels.disabled_impls(["avx9000"]):
            pass
    with pytest.raises(ValueError, match="portable"):
        with kernels.disabled_impls(["portable"]):
            pass


def test_environment_variable_switches_paths_off():
    """TFS_KERNELS_DISABLE, read by the C library at its first query, in a fresh process."""
    code = ("from tflite_export import kernels; print(','.join(kernels.available_impls()))")
    env = dict(os.environ, TFS_KERNELS_DISABLE="avx2,arm_dsp")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip().split(",")
    assert out == ["portable"] + [n for n in out if n not in ("portable",)]
    assert "avx2" not in out and "avx512" not in out and "arm_dsp" not in out and "portable" in out


# ---- validator: one test per rule -------------------------------------------------------------

def _valid_int8_arrays():
    rng = np.random.default_rng(11)
    wq = np.clip(np.round(tl.random_group_sparse(rng, 6, 20, 4, 0.5) * 50), -127, 127).astype(np.int8)
    p = dict(in_zp=1, out_zp=2, act_min=-128, act_max=127, multiplier=np.full(6, 1 << 30),
             shift=np.full(6, -3), scale=np.full(6, 0.01, np.float32))
    return tl.layer_arrays(wq, np.zeros(6, np.int32), 4, int8=p)


_set, _replace = array_mutations.set_at, array_mutations.replace


def _drop(name):
    def mutate(a):
        del a[name]
    return mutate


RULES = {
    "version": (_set("meta", 0, 1), "format version 1"),
    "in_zero": (_set("meta", 1, 0), "in = 0"),
    "in_too_big": (_set("meta", 1, 70000), "in = 70000"),
    "out_zero": (_set("meta", 2, 0), "out = 0"),
    "g_not_allowed": (_set("meta", 3, 3), "g = 3"),
    "n_groups_negative": (_set("meta", 4, -1), "n_groups = -1"),
    "n_groups_too_many": (_set("meta", 4, 1000), "n_groups = 1000"),
    "dtype": (_set("meta", 5, 2), "dtype = 2"),
    "activation": (_set("meta", 6, 2), "fused activation 2"),
    "in_zp": (_set("meta", 7, 300), "input zero point 300"),
    "out_zp": (_set("meta", 8, -129), "output zero point -129"),
    "act_range": (_set("meta", 9, 100), "activation range"),  # min 100 > max 127? no: 100 <= 127
    "reserved": (_set("meta", 13, 1), "reserved field 13"),
    "meta_size": (_replace("meta", lambda m: m[:15]), "input 4 (meta): 15 elements"),
    "meta_type": (_replace("meta", lambda m: m.astype(np.int16)), "input 4 (meta): element type"),
    "values_size": (_replace("values", lambda v: v[:-1]), "input 1 (values)"),
    "values_type": (_replace("values", lambda v: v.astype(np.float32)), "input 1 (values): element type"),
    "col_idx_type": (_replace("col_idx", lambda c: c.astype(np.int32)), "input 2 (col_idx): element type"),
    "col_idx_size": (_replace("col_idx", lambda c: c[:-1]), "input 2 (col_idx)"),
    # in = 20, g = 4: group indices 0..4
    "col_idx_range": (_set("col_idx", -1, 5), "col_idx[%d] = 5 >= ceil(in / g) = 5"),
    "col_idx_range_u16": (_replace("col_idx", lambda c: np.where(np.arange(c.size) == c.size - 1, 300, c).astype(np.uint16)),
                          "col_idx[%d] = 300 >= ceil(in / g) = 5"),
    "col_idx_type_u32": (_replace("col_idx", lambda c: c.astype(np.uint32)), "input 2 (col_idx): element type"),
    "col_idx_order": (None, "not strictly increasing"),
    "row_ptr_size": (_replace("row_ptr", lambda r: r[:-1]), "input 3 (row_ptr)"),
    "row_ptr_first": (_set("row_ptr", 0, 1), "row_ptr[0] = 1"),
    "row_ptr_last": (None, "row_ptr[out]"),
    "row_ptr_decreasing": (None, "row_ptr[2]"),
    "bias_type": (_replace("bias", lambda b: b.astype(np.float32)), "input 5 (bias): element type"),
    "bias_size": (_replace("bias", lambda b: b[:-1]), "input 5 (bias)"),
    "multiplier_negative": (_set("out_multiplier", 1, -5), "out_multiplier[1] = -5"),
    "shift_range": (_set("out_shift", 2, 31), "out_shift[2] = 31"),
    "scale_range": (_set("out_scale", 3, 300.0), "out_scale[3] = 300"),
    "scale_nan": (_set("out_scale", 0, np.nan), "out_scale[0] = nan"),
    "missing_int8_inputs": (_drop("out_scale"), "inputs, expected 6 (float32) or 9 (int8)"),
}


def _row_ptr_last(a):
    a["row_ptr"] = a["row_ptr"].copy()
    a["row_ptr"][-1] -= 1


def _row_ptr_decreasing(a):
    a["row_ptr"] = a["row_ptr"].copy()
    a["row_ptr"][2] = a["row_ptr"][1] - 1


def _col_order(a):
    # Swap the first two groups of the first row with at least two groups.
    rp, c = a["row_ptr"], a["col_idx"].copy()
    r = next(i for i in range(len(rp) - 1) if rp[i + 1] - rp[i] >= 2)
    c[rp[r]], c[rp[r] + 1] = c[rp[r] + 1], c[rp[r]]
    a["col_idx"] = c


RULES["row_ptr_last"] = (_row_ptr_last, "row_ptr[out]")
RULES["row_ptr_decreasing"] = (_row_ptr_decreasing, "row_ptr[2]")
RULES["col_idx_order"] = (_col_order, "not strictly increasing")
RULES["act_range"] = (_set("meta", 9, -129), "activation range [-129, 127]")


def test_valid_arrays_are_accepted():
    kernels.GroupSparseFC(*_valid_int8_arrays().values())


@pytest.mark.parametrize("rule", sorted(RULES))
def test_validator_rejects(rule):
    mutate, message = RULES[rule]
    arrays = _valid_int8_arrays()
    mutate(arrays)
    if "%d" in message:
        message = message.split("%d")[0]
    with pytest.raises(kernels.KernelFormatError) as info:
        kernels.GroupSparseFC(*arrays.values())
    assert message.replace("[", "").replace("]", "") in str(info.value).replace("[", "").replace("]", "")


def test_float32_meta_must_have_zero_quantization_fields():
    rng = np.random.default_rng(1)
    arrays = tl.layer_arrays(tl.random_group_sparse(rng, 4, 8, 2, 0.5), np.zeros(4, np.float32), 2)
    arrays["meta"][7] = 1
    with pytest.raises(kernels.KernelFormatError, match="must be 0 for float32"):
        kernels.GroupSparseFC(*arrays.values())


def test_io_validation():
    rng = np.random.default_rng(2)
    arrays = tl.layer_arrays(tl.random_group_sparse(rng, 4, 8, 2, 0.5), np.zeros(4, np.float32), 2)
    layer = kernels.GroupSparseFC(*arrays.values())
    with pytest.raises(kernels.KernelFormatError, match="not a multiple of in"):
        layer(np.zeros((1, 9), np.float32))
    with pytest.raises(kernels.KernelFormatError, match="element type"):
        layer(np.zeros((1, 8), np.float64))


@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
def test_validator_accepts_both_index_widths_and_orders_them(index_dtype):
    """Version 2: col_idx is uint8 or uint16 group indices, strictly increasing within a row; the
    last group index of a row may be ceil(in / g) - 1 (a ragged tail), never more."""
    arrays = _valid_int8_arrays()
    arrays["col_idx"] = arrays["col_idx"].astype(index_dtype)
    kernels.GroupSparseFC(*arrays.values())
    rp = arrays["row_ptr"]
    r = next(i for i in range(len(rp) - 1) if rp[i + 1] - rp[i] >= 2)
    c = arrays["col_idx"].copy()
    c[rp[r] + 1] = c[rp[r]]  # a repeated group index
    with pytest.raises(kernels.KernelFormatError, match=f"not strictly increasing in row {r}"):
        kernels.GroupSparseFC(*{**arrays, "col_idx": c}.values())


def test_index_width_does_not_change_results(impls):
    """The same layer with uint8 and uint16 col_idx: identical outputs on every path."""
    rng = np.random.default_rng(7)
    w = tl.random_group_sparse(rng, 11, 45, 4, 0.4)
    wq = np.clip(np.round(w * 50), -128, 127).astype(np.int8)
    p = _int8_params(rng, 11)
    bias = rng.integers(-3000, 3000, 11).astype(np.int32)
    x = rng.integers(-128, 128, (3, 45)).astype(np.int8)
    outs = [kernels.GroupSparseFC(*tl.layer_arrays(wq, bias, 4, int8=p, index_dtype=d).values())(x, impl)
            for d in INDEX_DTYPES for impl in impls]
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])
    np.testing.assert_array_equal(outs[0], _ref_int8_fp32(wq, bias, x, p))
