"""Python access to the C kernels of ``TFS_GROUP_SPARSE_FC`` (validator, compute, timing).

The shared library ``_tfs_kernels`` is built by ``setup.py`` (``pip install -e .``) and loaded
with ctypes. The LiteRT runtime (``tflite_export.runtime``) uses its adapter entry points; this
module adds a direct, runtime-free way to validate and run one layer::

    from tflite_export import kernels
    layer = kernels.GroupSparseFC(values, col_idx, row_ptr, meta, bias)       # float32
    layer = kernels.GroupSparseFC(values, col_idx, row_ptr, meta, bias,
                                  out_multiplier, out_shift, out_scale)      # int8
    y = layer(x)                        # x [batch, in] -> y [batch, out]; impl="auto" by default
    t = layer.time(x, iterations=1000)  # seconds per call, timed in C
    kernels.available_impls()           # e.g. ["portable", "avx2", "avx512", "avx512_vnni"]
    layer.kernel("avx2")                # the manifest's kernel that impl runs for this layer

The implementations and kernels are the C library's manifest (``tfs_kernels.inc``), read through
:func:`impls` and :func:`kernel_table`; :func:`disabled_impls` switches instruction sets off as if
the CPU lacked them (tests; the environment variable ``TFS_KERNELS_DISABLE`` does the same).

An invalid layer raises :class:`KernelFormatError` with the validator's message.
"""
from __future__ import annotations

import contextlib
import ctypes
import glob
import importlib.machinery
import os
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence

import numpy as np

__all__ = [
    "KernelFormatError", "CustomOpLayer", "GroupSparseFC", "GroupSparseConv2D", "library", "available_impls", "best_impl", "IMPLS",
    "set_runtime_impl", "get_runtime_impl", "multiply_by_quantized_multiplier",
    "time_layer_vs_dense", "FORMAT_VERSION", "META_LEN", "impls", "impl_features",
    "kernel_table", "KernelInfo", "disabled_impls",
]

FORMAT_VERSION = 2
META_LEN = 16

REQUANT = {"fp32": 0, "fixed_point": 1}

# TfLiteType numbering (the C core uses the same).
_ELEM = {np.dtype(np.float32): 1, np.dtype(np.int32): 2, np.dtype(np.uint8): 3,
         np.dtype(np.int8): 9, np.dtype(np.uint16): 17}


class KernelFormatError(ValueError):
    """The group-sparse layer's tensors break FORMAT.md; the message names the rule."""


class _Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("count", ctypes.c_size_t), ("elem", ctypes.c_int)]


class _KernelEntry(ctypes.Structure):  # tfs_kernel_entry (tfs_dispatch.h)
    _fields_ = [("op", ctypes.c_int), ("dtype", ctypes.c_int), ("g", ctypes.c_int),
                ("impl", ctypes.c_int), ("layout", ctypes.c_int), ("fn", ctypes.c_void_p),
                ("name", ctypes.c_char_p)]


class KernelInfo(NamedTuple):
    """One line of the C kernel manifest (tfs_kernels.inc)."""
    op: str       # "group_sparse_fc" or "nm_sparse_fc"
    dtype: str    # "float32" or "int8"
    g: int        # group width; 0 = any
    impl: str     # the instruction set, a name of impls()
    packed: bool  # runs on tfs_gsfc_pack's copy (else on the validated layer)
    name: str     # the C function


_LIB = None


def _library_path() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(here, "_tfs_kernels" + suffix)
        if os.path.exists(path):
            return path
    found = glob.glob(os.path.join(here, "_tfs_kernels*.so"))
    if found:
        return found[0]
    raise ImportError(
        f"the compiled kernel library _tfs_kernels is missing from {here}: build it with "
        "`pip install -e .` (setup.py compiles tflite_export/kernels/*.c)")


def library() -> ctypes.CDLL:
    """The loaded kernel library with every entry point's C signature declared."""
    global _LIB
    if _LIB is not None:
        return _LIB
    lib = ctypes.CDLL(_library_path())
    vp, sz, i32 = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int32
    decl = {
        "tfs_gsfc_packed_bound": (sz, [vp]),
        "tfs_gsfc_pack": (ctypes.c_int, [vp, vp, sz, vp]),
        "tfs_gsfc_packed_struct_size": (sz, []),
        "tfs_gsfc_impl_available": (ctypes.c_int, [ctypes.c_int]),
        "tfs_gsfc_best_impl": (ctypes.c_int, []),
        "tfs_gsfc_batched_min_rows": (ctypes.c_int, []),
        "tfs_impl_name": (ctypes.c_char_p, [ctypes.c_int]),
        "tfs_impl_features": (ctypes.c_char_p, [ctypes.c_int]),
        "tfs_impl_available": (ctypes.c_int, [ctypes.c_int]),
        "tfs_impl_disable": (ctypes.c_int, [ctypes.c_char_p]),
        "tfs_kernel_count": (ctypes.c_int, []),
        "tfs_kernel_at": (ctypes.POINTER(_KernelEntry), [ctypes.c_int]),
        "tfs_kernel_index": (ctypes.c_int, [ctypes.c_int] * 5),
        "tfs_multiply_by_quantized_multiplier": (i32, [i32, i32, i32]),
        "tfs_set_impl": (ctypes.c_int, [ctypes.c_int]),
        "tfs_get_impl": (ctypes.c_int, []),
        "tfs_time_litert_run": (ctypes.c_double, [vp, vp, sz, ctypes.POINTER(vp), sz,
                                                  ctypes.POINTER(vp), ctypes.c_int]),
    }
    _declare(lib, decl)
    _declare_op(lib, "tfs_gsfc", n_layer_args=2)  # compute / time_compute take (layer, packed)
    _declare_op(lib, "tfs_gsconv", n_layer_args=2)
    _declare(lib, {"tfs_gsconv_set_tile": (None, [vp, i32]),
                   "tfs_gsconv_set_direct": (ctypes.c_int, [vp, ctypes.c_int]),
                   "tfs_gsconv_host_direct": (ctypes.c_int, [vp]),
                   "tfs_gsconv_blob_dims": (None, [vp, ctypes.POINTER(i32)])})
    _LIB = lib
    return lib


def _declare(lib: ctypes.CDLL, decl: dict) -> None:
    for name, (res, args) in decl.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args


def _declare_op(lib: ctypes.CDLL, prefix: str, n_layer_args: int) -> None:
    """Declare one custom op's core API (tfs_common.h TFS_DECLARE_OP_CORE, plus compute and
    time_compute, whose leading layer arguments number ``n_layer_args``)."""
    vp, sz, i32, c_int = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int32, ctypes.c_int
    tensors, err = ctypes.POINTER(_Tensor), [ctypes.c_char_p, sz]
    layer = [vp] * n_layer_args
    _declare(lib, {
        f"{prefix}_unpack_params": (c_int, [vp, sz, tensors, ctypes.POINTER(sz), *err]),
        f"{prefix}_validate_layer": (c_int, [tensors, sz, vp, *err]),
        f"{prefix}_validate_io": (c_int, [vp, tensors, tensors, ctypes.POINTER(i32), *err]),
        f"{prefix}_workspace_size": (sz, [vp, i32]),
        f"{prefix}_layer_size": (sz, []),
        f"{prefix}_set_requant": (c_int, [vp, c_int]),
        f"{prefix}_compute": (c_int, [*layer, vp, vp, i32, vp, c_int]),
        f"{prefix}_time_compute": (ctypes.c_double, [*layer, vp, vp, i32, vp, c_int, c_int]),
    })


_IMPL_LIMIT = 16  # TFS_IMPL_LIMIT: implementation codes are below it
_OPS = ("group_sparse_fc", "nm_sparse_fc", "group_sparse_fc_batched",  # TFS_OP_*
        "group_sparse_conv_direct")
_DTYPES = ("float32", "int8")  # TFS_DTYPE_*
_IMPLS: Optional[Dict[str, int]] = None
_DISABLED = ""


def impls() -> Dict[str, int]:
    """Implementation names -> TFS_IMPL_* codes, as the C manifest lists them, by code; "auto"
    (0) first. "arm_dsp" is the Cortex-M DSP (SMLAD/SXTB16) int8 algorithm; off Arm its
    intrinsics are emulated in C, so it runs here and is tested bit-exact against the others."""
    global _IMPLS
    if _IMPLS is None:
        lib = library()
        named = {lib.tfs_impl_name(c).decode(): c for c in range(1, _IMPL_LIMIT)
                 if lib.tfs_impl_name(c) is not None}
        _IMPLS = {"auto": 0, **dict(sorted(named.items(), key=lambda nc: nc[1]))}
    return _IMPLS


def __getattr__(name: str):
    if name == "IMPLS":  # the historical name; computed from the library on first use
        return impls()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def impl_features(impl: str) -> str:
    """The CPU features an implementation needs, as the manifest states them (skip messages)."""
    return library().tfs_impl_features(_impl_code(impl)).decode()


def kernel_table() -> List[KernelInfo]:
    """Every kernel of the C manifest, in its order (the first match wins in dispatch)."""
    lib = library()
    names = {c: n for n, c in impls().items()}
    out = []
    for i in range(lib.tfs_kernel_count()):
        k = lib.tfs_kernel_at(i).contents
        out.append(KernelInfo(_OPS[k.op], _DTYPES[k.dtype], int(k.g), names[k.impl],
                              bool(k.layout), k.name.decode()))
    return out


def _impl_code(impl: str) -> int:
    table = impls()
    if impl not in table:
        raise ValueError(f"unknown kernel implementation {impl!r}; choose from {sorted(table)}")
    return table[impl]


def _kernel_name(op: int, dtype: str, g: int, impl: str, packed: bool) -> str:
    i = library().tfs_kernel_index(op, _DTYPES.index(dtype), g, _impl_code(impl), int(packed))
    if i < 0:
        raise RuntimeError(f"kernel implementation {impl!r} is not available on this CPU")
    return kernel_table()[i].name


def available_impls() -> List[str]:
    """Implementations this CPU can run (not switched off), besides "auto" (always includes
    "portable")."""
    lib = library()
    return [n for n, c in impls().items() if c and lib.tfs_impl_available(c)]


def best_impl() -> str:
    """What "auto" resolves to on this CPU."""
    code = library().tfs_gsfc_best_impl()
    return next(n for n, c in impls().items() if c == code)


@contextlib.contextmanager
def disabled_impls(names: Sequence[str]) -> Iterator[None]:
    """Within the block, the named implementations (and those built on them, e.g. "avx2" takes
    "avx512" along) are unavailable, as on a CPU without them; restores the previous mask."""
    global _DISABLED
    lib, before = library(), _DISABLED
    wanted = ",".join(sorted(set(filter(None, before.split(",") + list(names)))))
    for n in names:
        _impl_code(n)
    if lib.tfs_impl_disable(wanted.encode()) != 0:
        raise ValueError(f"cannot disable {list(names)} (\"portable\" cannot be)")
    _DISABLED = wanted
    try:
        yield
    finally:
        lib.tfs_impl_disable(before.encode())
        _DISABLED = before


def set_runtime_impl(impl: str) -> None:
    """Force the implementation the LiteRT adapter uses in every Runtime (tests, benchmarks).

    Raises RuntimeError if the CPU lacks it. "auto" restores the default.
    """
    if library().tfs_set_impl(_impl_code(impl)) != 0:
        raise RuntimeError(f"kernel implementation {impl!r} is not available on this CPU")


def get_runtime_impl() -> str:
    code = library().tfs_get_impl()
    return next(n for n, c in impls().items() if c == code)


def multiply_by_quantized_multiplier(acc: int, multiplier: int, shift: int) -> int:
    """TFLite's fixed-point requantization of one int32 (the C implementation)."""
    return int(library().tfs_multiply_by_quantized_multiplier(acc, multiplier, shift))


def _tensor(arr: Optional[np.ndarray]) -> _Tensor:
    if arr is None:
        return _Tensor(None, 0, 0)
    return _Tensor(arr.ctypes.data if arr.size else None, arr.size, _ELEM.get(arr.dtype, 0))


class CustomOpLayer:
    """One validated custom-op layer, runnable on numpy arrays without LiteRT: the ctypes
    plumbing both ops share. A subclass names its C prefix (``_prefix``), its blob's op name
    (``_op``), how many constant arrays it has and where meta is; its ``__init__`` calls
    :meth:`_validate` with the node's constant inputs 1.. in FORMAT.md order (int8-only ones None
    for float32). C-contiguous copies are kept for the layer's lifetime: the C layer points into
    them. Dtypes are not cast: a wrong dtype is a format error (KernelFormatError)."""

    _prefix: str
    _op: str
    _n_arrays: int
    _meta_index: int

    _lib = staticmethod(library)  # the library with this op's entry points declared

    @classmethod
    def _fn(cls, name: str):
        return getattr(cls._lib(), f"{cls._prefix}_{name}")

    def _layer_args(self) -> tuple:
        """The leading arguments of compute / time_compute."""
        return (self._layer,)

    def _validate(self, arrays: list, requant: str) -> None:
        self._arrays = [None if a is None else np.ascontiguousarray(a) for a in arrays]
        given = [i for i, a in enumerate(self._arrays) if a is not None]
        n_inputs = 2 + given[-1] if given else 1  # node inputs: activations + the given ones
        tensors = (_Tensor * (self._n_arrays + 1))()
        for i, a in enumerate(self._arrays[: max(n_inputs - 1, 0)]):
            tensors[i + 1] = _tensor(a)
        self._layer = ctypes.create_string_buffer(self._fn("layer_size")())
        err = ctypes.create_string_buffer(400)
        if self._fn("validate_layer")(tensors, n_inputs, self._layer, err, len(err)) != 0:
            raise KernelFormatError(err.value.decode(errors="replace"))
        if requant not in REQUANT or self._fn("set_requant")(self._layer, REQUANT[requant]) != 0:
            raise ValueError(f"unknown requantization {requant!r}")
        m = self._arrays[self._meta_index]
        self.in_features, self.out_features = int(m[1]), int(m[2])
        self.dtype = np.dtype(np.int8) if int(m[5]) == 1 else np.dtype(np.float32)
        self._workspace = np.empty(0, np.uint8)

    @classmethod
    def from_blob(cls, blob, requant: str = "fp32"):
        """The layer a node's parameter blob (FORMAT.md "Parameter blob") holds; the C unpacker
        checks the header and section bounds before any array is read."""
        from tflite_export import params_blob

        raw = np.ascontiguousarray(blob).view(np.uint8).ravel()
        tensors, n = (_Tensor * (cls._n_arrays + 1))(), ctypes.c_size_t()
        err = ctypes.create_string_buffer(400)
        if cls._fn("unpack_params")(raw.ctypes.data, raw.size, tensors, ctypes.byref(n), err,
                                    len(err)) != 0:
            raise KernelFormatError(err.value.decode(errors="replace"))
        sections = params_blob.OP_SECTIONS[cls._op]
        arrays = params_blob.unpack_params(raw, sections)
        return cls(*[arrays.get(name) for name in sections], requant=requant)

    @property
    def arrays(self) -> list:
        """The constant arrays 1.. in FORMAT.md order (None where a float32 layer has none)."""
        return list(self._arrays)

    def _output_shape(self, x: np.ndarray) -> tuple:
        """The output's shape for activations ``x``: x's with the last dimension ``out``."""
        return (x.shape[:-1] if x.ndim > 1 else ()) + (self.out_features,)

    def _prepare(self, x: np.ndarray):
        x = np.ascontiguousarray(x)
        y = np.empty(self._output_shape(x), dtype=self.dtype)
        tx, ty = _tensor(x), _tensor(y)
        batch = ctypes.c_int32()
        err = ctypes.create_string_buffer(400)
        if self._fn("validate_io")(self._layer, ctypes.byref(tx), ctypes.byref(ty),
                                   ctypes.byref(batch), err, len(err)) != 0:
            raise KernelFormatError(err.value.decode(errors="replace"))
        need = self._fn("workspace_size")(self._layer, batch.value)
        if self._workspace.size < need + 64:
            self._workspace = np.zeros(need + 64, np.uint8)
        ws = self._workspace.ctypes.data + ((-self._workspace.ctypes.data) % 64)
        return x, y, batch.value, ws

    def __call__(self, x: np.ndarray, impl: str = "auto") -> np.ndarray:
        """y[..., out] for x[..., in] (x's dtype must be the layer's)."""
        x, y, batch, ws = self._prepare(x)
        if self._fn("compute")(*self._layer_args(), x.ctypes.data, y.ctypes.data, batch, ws,
                               _impl_code(impl)) != 0:
            raise RuntimeError(f"kernel implementation {impl!r} is not available on this CPU")
        return y

    def time(self, x: np.ndarray, iterations: int = 1000, impl: str = "auto") -> float:
        """Seconds per call on x, measured by a loop in C (best of 3 repetitions)."""
        x, y, batch, ws = self._prepare(x)
        best = float("inf")
        for _ in range(3):
            t = self._fn("time_compute")(*self._layer_args(), x.ctypes.data, y.ctypes.data,
                                         batch, ws, _impl_code(impl), int(iterations))
            if t < 0:
                raise RuntimeError(f"kernel implementation {impl!r} is not available on this CPU")
            best = min(best, t)
        return best


def _pack_fc_core(lib, layer) -> tuple:
    """The SIMD paths' packed copy of a validated group-sparse FC core ``layer``: its 64-byte
    aligned memory (kept alive by the caller) and the ``tfs_gsfc_packed`` struct."""
    bound = lib.tfs_gsfc_packed_bound(layer)
    raw = np.zeros(bound + 64, np.uint8)
    mem = raw.ctypes.data + ((-raw.ctypes.data) % 64)
    packed = ctypes.create_string_buffer(lib.tfs_gsfc_packed_struct_size())
    if lib.tfs_gsfc_pack(layer, mem, bound, packed) != 0:
        raise RuntimeError("tfs_gsfc_pack failed")
    return raw, packed


class GroupSparseFC(CustomOpLayer):
    """One validated group-sparse FC layer (TFS_GROUP_SPARSE_FC), runnable on numpy arrays
    without LiteRT: :class:`CustomOpLayer` on the arrays values, col_idx, row_ptr, meta, bias
    (and out_multiplier, out_shift, out_scale for int8). Raises KernelFormatError on any format
    violation.
    """

    _prefix, _op, _n_arrays, _meta_index = "tfs_gsfc", "TFS_GROUP_SPARSE_FC", 8, 3

    def __init__(self, values, col_idx, row_ptr, meta, bias, out_multiplier=None, out_shift=None,
                 out_scale=None, requant: str = "fp32"):
        lib = library()
        self._validate([values, col_idx, row_ptr, meta, bias, out_multiplier, out_shift,
                        out_scale], requant)
        # The SIMD paths' packed copy (rows sorted and interleaved in blocks of 8).
        self._packed_raw, self._packed = _pack_fc_core(lib, self._layer)
        self.g = int(self._arrays[3][3])

    def _layer_args(self) -> tuple:
        return (self._layer, self._packed)

    def kernel(self, impl: str = "auto", batch: int = 1) -> str:
        """The manifest's C function that `impl` runs for this layer on `batch` rows: from
        :func:`batched_min_rows` rows its SpMM kernel where the manifest lists one (RuntimeError
        if `impl` is not available on this CPU)."""
        if batch >= batched_min_rows():
            try:
                return _kernel_name(2, self.dtype.name, self.g, impl, True)
            except RuntimeError:  # no SpMM line for this layer and path: the one-row kernel
                pass
        return _kernel_name(0, self.dtype.name, self.g, impl, True)


def batched_min_rows() -> int:
    """Rows from which the op runs a layer with its SpMM kernel (C: TFS_GSMM_MIN_BATCH)."""
    return int(library().tfs_gsfc_batched_min_rows())


def default_tile(geom: np.ndarray, in_features: int, elem_size: int = 1, host: bool = False) -> int:
    """Output positions per FC call that tfs_gsconv_validate_layer sets: what fits
    TFS_GSCONV_TILE_BYTES of patches (elements of ``elem_size`` bytes), in [1, positions];
    ``host``: at least TFS_GSCONV_HOST_TILE, what the host runtime's adapter sets. The rule and
    its constants live with the cost formula that prices the tiles (``tfscalpel.cost_profile``),
    imported here when called: importing the format registry stays free of Keras/TensorFlow."""
    from tfscalpel.cost_profile import conv_tile

    positions = int(geom[11]) * int(geom[12])
    return conv_tile(positions, in_features, elem_size, host)


class GroupSparseConv2D(CustomOpLayer):
    """One validated TFS_GROUP_SPARSE_CONV2D layer (int8 or float32), runnable on numpy arrays
    without LiteRT: the FC op's eight arrays (the filters ``[cout, kh*kw*cin]`` as group-CSR;
    float32: the three requantization arrays empty) plus the int32[16] ``geometry`` (FORMAT.md).
    ``layer(x)``: x ``[batch, in_h, in_w, cin]`` -> ``[batch, out_h, out_w, cout]``, the layer's
    dtype. ``requant="fixed_point"`` is TFLite's reference CONV_2D / TFLite Micro arithmetic,
    "fp32" XNNPACK's. ``tile``: output positions per FC call (default: what fits 4,096 bytes of
    patches; "host": at least 32, what the host runtime runs). ``direct``: run float32 on the
    im2col-free path (tfs_gsconv_direct.c; int8 never); default: the host adapter's rule
    (tfs_gsconv_host_direct) with ``tile="host"``, else im2col. Raises KernelFormatError on any
    format violation."""

    _prefix, _op, _n_arrays, _meta_index = "tfs_gsconv", "TFS_GROUP_SPARSE_CONV2D", 9, 3

    def __init__(self, values, col_idx, row_ptr, meta, bias, out_multiplier, out_shift,
                 out_scale, geometry, requant: str = "fp32", tile: Optional[int] = None,
                 direct: Optional[bool] = None):
        lib = library()
        self._validate([values, col_idx, row_ptr, meta, bias, out_multiplier, out_shift,
                        out_scale, geometry], requant)
        g = self._arrays[8]
        host = tile == "host"
        if host:  # what the host runtime's adapter runs (TFS_GSCONV_HOST_TILE)
            tile = default_tile(g, self.in_features, self.dtype.itemsize, host=True)
        if tile is not None:
            lib.tfs_gsconv_set_tile(self._layer, int(tile))
        if direct is None:  # the host adapter's rule (tfs_gsconv_litert_adapter.c)
            direct = host and lib.tfs_gsconv_host_direct(self._layer) != 0
        #: whether compute runs the float32 direct path (tfs_gsconv_set_direct: int8 never)
        self.direct = bool(lib.tfs_gsconv_set_direct(self._layer, int(bool(direct))))
        positions = int(g[11]) * int(g[12])
        self.tile = (min(max(int(tile), 1), positions) if tile is not None
                     else default_tile(g, self.in_features, self.dtype.itemsize))
        # The FC core's packed copy: the layer struct starts with its tfs_gsfc_layer.
        self._packed_raw, self._packed = _pack_fc_core(lib, self._layer)
        self.g = int(self._arrays[3][3])
        self.in_shape = (int(g[1]), int(g[2]), int(g[3]))
        self.out_shape = (int(g[11]), int(g[12]), int(meta[2]))

    def _layer_args(self) -> tuple:
        return (self._layer, self._packed)

    def _output_shape(self, x: np.ndarray) -> tuple:
        if x.ndim != 4 or tuple(x.shape[1:]) != self.in_shape:
            raise KernelFormatError(f"activations of shape {x.shape}, expected [batch, "
                                    f"{', '.join(map(str, self.in_shape))}]")
        return (x.shape[0],) + self.out_shape

    def blob_dims(self) -> tuple:
        """The first five dimensions of the node's blob shape (FORMAT.md)."""
        dims = (ctypes.c_int32 * 5)()
        library().tfs_gsconv_blob_dims(self._layer, dims)
        return tuple(int(d) for d in dims)

    def kernel(self, impl: str = "auto") -> str:
        """The kernel `impl` runs: on the direct path the manifest's GSCD kernel, else the FC
        kernel on this layer's full im2col tiles (``tile`` rows: from :func:`batched_min_rows`
        its SpMM kernel where the manifest lists one)."""
        if self.direct:
            return _kernel_name(3, "float32", self.g, impl, False)
        if self.tile >= batched_min_rows():
            try:
                return _kernel_name(2, self.dtype.name, self.g, impl, True)
            except RuntimeError:  # no SpMM line for this layer and path: the one-row kernel
                pass
        return _kernel_name(0, self.dtype.name, self.g, impl, True)


def time_layer_vs_dense(in_features: int, out_features: int, density: float, g: int,
                        dtype: str = "float32", batch: int = 1, iterations: int = 300,
                        seed: int = 0) -> Dict[str, float]:
    """Measured cost-model hook: our kernel on a random layer of this shape / group density.

    Returns ``{"custom_s": seconds per call, "n_groups": ...}`` at one thread, timed in C. The
    dense baseline is LiteRT/XNNPACK and needs TensorFlow to build the model, so it lives in
    ``benchmarks/bench_kernels.py``; this function is the cheap part an exporter can call.
    """
    from tflite_export import group_csr

    rng = np.random.default_rng(seed)
    n_col_groups = -(-in_features // g)
    keep = rng.random((out_features, n_col_groups)) < density
    w = rng.standard_normal((out_features, n_col_groups * g)).astype(np.float32)
    w *= np.repeat(keep, g, axis=1)
    w = w[:, :in_features]
    layer, x = random_layer_from_dense(w, g, dtype, batch, rng)
    return {"custom_s": layer.time(x, iterations), "n_groups": float(layer.n_groups)}


def random_layer_from_dense(w: np.ndarray, g: int, dtype: str, batch: int, rng,
                            activation: int = 0):
    """A GroupSparseFC for dense weights ``w[out, in]`` (float32; int8 gets quantized with random
    plausible scales) and a random input batch. Used by tests, benchmarks and the cost hook."""
    from tflite_export import group_csr

    out_features, in_features = w.shape
    meta = np.zeros(META_LEN, np.int32)
    if dtype == "float32":
        csr = group_csr.encode(w.astype(np.float32), g)
        meta[:7] = [FORMAT_VERSION, in_features, out_features, g, csr.n_groups, 0, activation]
        bias = rng.standard_normal(out_features).astype(np.float32)
        layer = GroupSparseFC(csr.values, csr.col_idx, csr.row_ptr, meta, bias)
        x = rng.standard_normal((batch, in_features)).astype(np.float32)
    else:
        w_scale = np.maximum(np.abs(w).max(axis=1), 1e-6) / 127.0
        wq = np.clip(np.round(w / w_scale[:, None]), -127, 127).astype(np.int8)
        csr = group_csr.encode(wq, g)
        in_zp, out_zp = int(rng.integers(-20, 20)), int(rng.integers(-20, 20))
        in_s, out_s = np.float32(0.05), np.float32(0.1 * np.sqrt(in_features / 64))
        scale = (in_s * w_scale.astype(np.float32)) / out_s
        act_min, act_max = (-128, 127) if activation == 0 else (out_zp, 127)
        meta[:11] = [FORMAT_VERSION, in_features, out_features, g, csr.n_groups, 1, activation,
                     in_zp, out_zp, act_min, act_max]
        bias = rng.integers(-2000, 2000, out_features).astype(np.int32)
        mult = np.full(out_features, 1 << 30, np.int32)
        shift = np.zeros(out_features, np.int32)
        layer = GroupSparseFC(csr.values, csr.col_idx, csr.row_ptr, meta, bias, mult, shift,
                              scale.astype(np.float32))
        x = rng.integers(-128, 128, (batch, in_features)).astype(np.int8)
    layer.n_groups = csr.n_groups
    return layer, x
