"""TFS_GROUP_SPARSE_CONV2D: Scalpel's SIMD-group-sparse CONV_2D, int8 and float32 (FORMAT.md).

The filters ``[cout, kh, kw, cin]`` flattened to ``[cout, kh*kw*cin]`` (the im2col order, along
which ``tfscalpel.GroupPrunedConv2D`` prunes its groups) are stored exactly as a
``TFS_GROUP_SPARSE_FC`` layer (group-CSR, its eight arrays and validator; a float32 node's three
requantization arrays are empty, so the geometry keeps its index), plus an int32[16]
``geometry`` section: input size, filter size, strides, dilations, padding and TFLite's output
size and SAME padding. The kernels run im2col on a tile of output positions and the FC core's
kernel on the tile, so every FC path (portable, Cortex-M DSP, x86 SIMD) serves convolutions.

Its layers are ``tflite_export.conv_layers.ConvLayer`` (CONV_2D operators); the conv planner
there prices it with the target profile's ``custom_conv`` entry, and the host target measures it
(``tflite_export.host``).
"""
from __future__ import annotations

import numpy as np

from tflite_export import group_csr, params_blob
from tflite_export.formats.base import CustomOpFormat
from tflite_export.formats.group_sparse import FORMAT as GROUP_SPARSE_FC
from tflite_export.kernels import default_tile

GEOMETRY_LEN = 16


def geometry(layer) -> np.ndarray:
    """The ``geometry`` section of a ``ConvLayer`` (FORMAT.md, TFS_GROUP_SPARSE_CONV2D)."""
    g = np.zeros(GEOMETRY_LEN, np.int32)
    g[:15] = [1, layer.in_h, layer.in_w, layer.cin, layer.kh, layer.kw, layer.stride_h,
              layer.stride_w, layer.dil_h, layer.dil_w, layer.padding, layer.out_h, layer.out_w,
              layer.pad_top, layer.pad_left]
    return g


def blob_dims(geom: np.ndarray, cout: int) -> tuple[int, ...]:
    """The blob's leading dimensions ``(cout, ekh, ekw, stride_h, stride_w)``: the output shape
    follows from them and the activations' shape alone (LiteRT's shape inference sees shapes):
    ``out_h = (in_h - ekh) // stride_h + 1`` with ``ekh`` the VALID window's extent, 1 for SAME."""
    valid = int(geom[10]) == 1
    ekh = (int(geom[4]) - 1) * int(geom[8]) + 1 if valid else 1
    ekw = (int(geom[5]) - 1) * int(geom[9]) + 1 if valid else 1
    return (int(cout), ekh, ekw, int(geom[6]), int(geom[7]))


def workspace_bytes(geom: np.ndarray, in_features: int, elem_size: int = 1) -> int:
    """tfs_gsconv_workspace_size at the default tile, off x86 (TFLite Micro): patches, plus the
    FC core's int16 copy of them for int8."""
    tile = default_tile(geom, in_features, elem_size)
    patches = -(-tile * in_features * elem_size // 16) * 16
    return patches + (tile * in_features * 2 + 32 if elem_size == 1 else 0)


class GroupSparseConv2D(CustomOpFormat):
    name = "custom_conv"
    title = "group-sparse conv op"
    op_name = "TFS_GROUP_SPARSE_CONV2D"
    op_version = 1  # LiteRT only resolves custom ops registered at the model's version 1
    format_version = 1  # the geometry section's version (meta[0] is the FC core's, 2)
    params_suffix = "tfs_conv_params"
    litert_op_table = "tfs_gsconv_litert_op"
    tflm_registration = "tflite::Register_TFS_GROUP_SPARSE_CONV2D()"
    # The FC op's measured 204 bytes plus the geometry fields of tfs_gsconv_layer (68 bytes):
    # an estimate, not measured on a TFLite Micro build.
    tflm_persistent_bytes = 272

    def layer_reason(self, layer):
        return None if layer.dtype in ("int8", "float32") else (
            f"{layer.dtype} convolution: {self.op_name} is int8 or float32")

    def widths(self, layer, cost, pinned=None):
        return (pinned,) if pinned else group_csr.ALLOWED_GROUP_SIZES

    def stored_units(self, weights, g):
        return group_csr.count_groups(weights, g)

    def label(self, g):
        return f"custom_conv g={g}"

    def arrays(self, model, layer, g):
        arrays = GROUP_SPARSE_FC.arrays(model, layer, g)  # the filters as a group-sparse FC
        # float32: the requantization sections present and empty (the geometry's index is fixed)
        arrays.setdefault("out_multiplier", np.zeros(0, np.int32))
        arrays.setdefault("out_shift", np.zeros(0, np.int32))
        arrays.setdefault("out_scale", np.zeros(0, np.float32))
        arrays["geometry"] = geometry(layer)
        return arrays

    def blob(self, model, layer, g):
        arrays = self.arrays(model, layer, g)
        lead = blob_dims(arrays["geometry"], layer.out_features)
        flat = params_blob.pack_params(arrays, int(np.prod(lead)), self.sections)
        return flat.reshape(lead + (flat.shape[1],))

    def decode(self, arrays):
        return GROUP_SPARSE_FC.decode(arrays)

    def kernel(self, arrays):
        from tflite_export import kernels

        return kernels.GroupSparseConv2D(*[arrays.get(name) for name in self.sections])

    def tflm_node_workspace_bytes(self, model, sg, op):
        _, arrays = self.node_arrays(model, sg, op)
        return workspace_bytes(arrays["geometry"], int(arrays["meta"][1]),
                               1 if int(arrays["meta"][5]) == 1 else 4)


FORMAT = GroupSparseConv2D()
