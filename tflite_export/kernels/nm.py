"""Python access to the ``TFS_NM_SPARSE_FC`` kernel core (2:4 compressed weights)::

    from tflite_export.kernels.nm import NMSparseFC
    layer = NMSparseFC(values, indices, meta, bias)                                # float32
    layer = NMSparseFC(values, indices, meta, bias, out_multiplier, out_shift, out_scale)  # int8
    y = layer(x, impl="auto")          # "portable", "avx2", ...
    t = layer.time(x, iterations=1000) # seconds per call, timed in C

An invalid layer raises :class:`~tflite_export.kernels.KernelFormatError` with the validator's
message. The layout is specified in ``tflite_export/FORMAT.md`` (TFS_NM_SPARSE_FC).
"""
from __future__ import annotations

import ctypes

import numpy as np

from tflite_export.kernels import REQUANT, KernelFormatError, _impl_code, _kernel_name, _Tensor, library

__all__ = ["NMSparseFC", "nm_library", "FORMAT_VERSION", "META_LEN", "NUM_INPUTS"]

FORMAT_VERSION = 1
META_LEN = 16
NUM_INPUTS = {"float32": 5, "int8": 8}
_ELEM = {np.dtype(np.float32): 1, np.dtype(np.int32): 2, np.dtype(np.uint8): 3,
         np.dtype(np.int8): 9, np.dtype(np.uint16): 17}
_DECLARED = False


def nm_library() -> ctypes.CDLL:
    """The kernel library with the TFS_NM_SPARSE_FC entry points declared."""
    global _DECLARED
    lib = library()
    if not _DECLARED:
        vp, sz, i32 = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int32
        decl = {
            "tfs_nmfc_unpack_params": (ctypes.c_int, [vp, sz, ctypes.POINTER(_Tensor), ctypes.POINTER(sz),
                                                      ctypes.c_char_p, sz]),
            "tfs_nmfc_validate_layer": (ctypes.c_int, [ctypes.POINTER(_Tensor), sz, vp, ctypes.c_char_p, sz]),
            "tfs_nmfc_validate_io": (ctypes.c_int, [vp, ctypes.POINTER(_Tensor), ctypes.POINTER(_Tensor),
                                                    ctypes.POINTER(i32), ctypes.c_char_p, sz]),
            "tfs_nmfc_workspace_size": (sz, [vp, i32]),
            "tfs_nmfc_compute": (ctypes.c_int, [vp, vp, vp, i32, vp, ctypes.c_int]),
            "tfs_nmfc_time_compute": (ctypes.c_double, [vp, vp, vp, i32, vp, ctypes.c_int, ctypes.c_int]),
            "tfs_nmfc_layer_size": (sz, []),
            "tfs_nmfc_set_requant": (ctypes.c_int, [vp, ctypes.c_int]),
            "tfs_nm_set_impl": (ctypes.c_int, [ctypes.c_int]),
        }
        for name, (res, args) in decl.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
        _DECLARED = True
    return lib


def _tensor(arr):
    if arr is None:
        return _Tensor(None, 0, 0)
    return _Tensor(arr.ctypes.data if arr.size else None, arr.size, _ELEM.get(arr.dtype, 0))


class NMSparseFC:
    """One validated TFS_NM_SPARSE_FC layer, runnable on numpy arrays without LiteRT.

    Arguments are the node's constant inputs 1..7 in FORMAT.md order (int8-only ones None for
    float32); C-contiguous copies are kept for the layer's lifetime. Dtypes are not cast: a wrong
    dtype is a format error.
    """

    def __init__(self, values, indices, meta, bias, out_multiplier=None, out_shift=None,
                 out_scale=None, requant: str = "fp32"):
        lib = nm_library()
        arrays = [values, indices, meta, bias, out_multiplier, out_shift, out_scale]
        self._arrays = [None if a is None else np.ascontiguousarray(a) for a in arrays]
        given = [i for i, a in enumerate(self._arrays) if a is not None]
        n_inputs = 2 + given[-1] if given else 1
        tensors = (_Tensor * 8)()
        for i, a in enumerate(self._arrays[: max(n_inputs - 1, 0)]):
            tensors[i + 1] = _tensor(a)
        self._layer = ctypes.create_string_buffer(lib.tfs_nmfc_layer_size())
        err = ctypes.create_string_buffer(400)
        if lib.tfs_nmfc_validate_layer(tensors, n_inputs, self._layer, err, len(err)) != 0:
            raise KernelFormatError(err.value.decode(errors="replace"))
        if requant not in REQUANT or lib.tfs_nmfc_set_requant(self._layer, REQUANT[requant]) != 0:
            raise ValueError(f"unknown requantization {requant!r}")
        m = self._arrays[2]
        self.in_features, self.out_features = int(m[1]), int(m[2])
        self.dtype = np.dtype(np.int8) if int(m[5]) == 1 else np.dtype(np.float32)
        self._workspace = np.empty(0, np.uint8)

    @classmethod
    def from_blob(cls, blob, requant: str = "fp32") -> "NMSparseFC":
        """The layer a node's parameter blob (FORMAT.md "Parameter blob") holds; the C unpacker
        checks the header and section bounds before any array is read."""
        from tflite_export import params_blob

        raw = np.ascontiguousarray(blob).view(np.uint8).ravel()
        tensors, n = (_Tensor * 8)(), ctypes.c_size_t()
        err = ctypes.create_string_buffer(400)
        if nm_library().tfs_nmfc_unpack_params(raw.ctypes.data, raw.size, tensors, ctypes.byref(n),
                                               err, len(err)) != 0:
            raise KernelFormatError(err.value.decode(errors="replace"))
        arrays = params_blob.unpack_params(raw, params_blob.OP_SECTIONS["TFS_NM_SPARSE_FC"])
        return cls(*[arrays.get(name) for name in params_blob.OP_SECTIONS["TFS_NM_SPARSE_FC"]],
                   requant=requant)

    @property
    def arrays(self) -> list:
        """The constant arrays 1..7 in FORMAT.md order (None where a float32 layer has none)."""
        return list(self._arrays)

    def _prepare(self, x):
        lib = nm_library()
        x = np.ascontiguousarray(x)
        y = np.empty((x.shape[:-1] if x.ndim > 1 else ()) + (self.out_features,), self.dtype)
        tx, ty = _tensor(x), _tensor(y)
        batch = ctypes.c_int32()
        err = ctypes.create_string_buffer(400)
        if lib.tfs_nmfc_validate_io(self._layer, ctypes.byref(tx), ctypes.byref(ty),
                                    ctypes.byref(batch), err, len(err)) != 0:
            raise KernelFormatError(err.value.decode(errors="replace"))
        need = lib.tfs_nmfc_workspace_size(self._layer, batch.value)
        if self._workspace.size < need + 64:
            self._workspace = np.zeros(need + 64, np.uint8)
        ws = self._workspace.ctypes.data + ((-self._workspace.ctypes.data) % 64)
        return x, y, batch.value, ws

    def __call__(self, x, impl: str = "auto"):
        """y[..., out] for x[..., in] (x's dtype must be the layer's)."""
        x, y, batch, ws = self._prepare(x)
        if nm_library().tfs_nmfc_compute(self._layer, x.ctypes.data, y.ctypes.data, batch, ws,
                                         _impl_code(impl)) != 0:
            raise RuntimeError(f"kernel implementation {impl!r} is not available on this CPU")
        return y

    def kernel(self, impl: str = "auto") -> str:
        """The manifest's C function that `impl` runs for this layer (RuntimeError if `impl`
        is not available on this CPU)."""
        return _kernel_name(1, self.dtype.name, 0, impl, False)

    def time(self, x, iterations: int = 1000, impl: str = "auto") -> float:
        """Seconds per call on x, a loop in C (best of 3)."""
        x, y, batch, ws = self._prepare(x)
        best = float("inf")
        for _ in range(3):
            t = nm_library().tfs_nmfc_time_compute(self._layer, x.ctypes.data, y.ctypes.data,
                                                   batch, ws, _impl_code(impl), int(iterations))
            if t < 0:
                raise RuntimeError(f"kernel implementation {impl!r} is not available on this CPU")
            best = min(best, t)
        return best
