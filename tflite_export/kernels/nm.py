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

from tflite_export.kernels import CustomOpLayer, _declare, _declare_op, _kernel_name, library

__all__ = ["NMSparseFC", "nm_library", "FORMAT_VERSION", "META_LEN", "NUM_INPUTS"]

FORMAT_VERSION = 1
META_LEN = 16
NUM_INPUTS = {"float32": 5, "int8": 8}
_DECLARED = False


def nm_library() -> ctypes.CDLL:
    """The kernel library with the TFS_NM_SPARSE_FC entry points declared."""
    global _DECLARED
    lib = library()
    if not _DECLARED:
        _declare_op(lib, "tfs_nmfc", n_layer_args=1)
        _declare(lib, {"tfs_nm_set_impl": (ctypes.c_int, [ctypes.c_int])})
        _DECLARED = True
    return lib


class NMSparseFC(CustomOpLayer):
    """One validated TFS_NM_SPARSE_FC layer, runnable on numpy arrays without LiteRT:
    :class:`~tflite_export.kernels.CustomOpLayer` on the arrays values, indices, meta, bias (and
    out_multiplier, out_shift, out_scale for int8).
    """

    _prefix, _op, _n_arrays, _meta_index = "tfs_nmfc", "TFS_NM_SPARSE_FC", 7, 2
    _lib = staticmethod(nm_library)

    def __init__(self, values, indices, meta, bias, out_multiplier=None, out_shift=None,
                 out_scale=None, requant: str = "fp32"):
        self._validate([values, indices, meta, bias, out_multiplier, out_shift, out_scale], requant)

    def kernel(self, impl: str = "auto") -> str:
        """The manifest's C function that `impl` runs for this layer (RuntimeError if `impl`
        is not available on this CPU)."""
        return _kernel_name(1, self.dtype.name, 0, impl, False)
