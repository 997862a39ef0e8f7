"""TFS_GROUP_SPARSE_FC: Scalpel's SIMD-group-sparse FULLY_CONNECTED (FORMAT.md, version 2).

Per output row, the groups of ``g`` consecutive inputs that hold a nonzero are stored with one
index each (group-CSR: ``values``, ``col_idx``, ``row_ptr``); any ``g`` in
``group_csr.ALLOWED_GROUP_SIZES``, ragged tails allowed. The cost model prices it per stored
group with the profile's ``custom`` entry; the kernels run on x86 (AVX2 / AVX-512), Cortex-M
(DSP) and portable C, under LiteRT on the host and TFLite Micro on microcontrollers.
"""
from __future__ import annotations


from tflite_export import group_csr
from tflite_export.formats.base import CustomOpFormat, bias_and_requant, meta_head

DTYPE_CODES = {"float32": 0, "int8": 1}


class GroupSparseFC(CustomOpFormat):
    name = "custom"
    title = "group-sparse custom op"
    op_name = "TFS_GROUP_SPARSE_FC"
    op_version = 1  # LiteRT only resolves custom ops registered at the model's version 1
    format_version = 2
    params_suffix = "tfs_params"
    litert_op_table = "tfs_gsfc_litert_op"
    tflm_registration = "tflite::Register_TFS_GROUP_SPARSE_FC()"
    # Node record + the adapter's OpData (tfs_gsfc_layer) + scratch handle, measured with
    # TFLite Micro's arena_used_bytes on a 64-bit host build (tflite_export/c_array.py).
    tflm_persistent_bytes = 204

    def widths(self, layer, cost, pinned=None):
        return (pinned,) if pinned else group_csr.ALLOWED_GROUP_SIZES

    def stored_units(self, weights, g):
        return group_csr.count_groups(weights, g)

    def label(self, g):
        return f"custom g={g}"

    def arrays(self, model, layer, g):
        csr = group_csr.encode(layer.weights, g)
        meta = meta_head(layer, self.format_version, g, csr.n_groups, DTYPE_CODES[layer.dtype],
                         layer.activation)
        arrays = {"values": csr.values, "col_idx": csr.col_idx, "row_ptr": csr.row_ptr, "meta": meta}
        arrays.update(bias_and_requant(model, layer, meta))
        return arrays

    def decode(self, arrays):
        meta = arrays["meta"]
        in_f, out_f, g = int(meta[1]), int(meta[2]), int(meta[3])
        return group_csr.decode(group_csr.GroupCSR(arrays["values"], arrays["col_idx"],
                                                   arrays["row_ptr"], g, in_f, out_f))

    def kernel(self, arrays):
        from tflite_export import kernels

        return kernels.GroupSparseFC(*[arrays.get(name) for name in self.sections])

    def tflm_workspace_bytes(self, x_type, batch, in_features):
        # int8 inputs are widened to int16 once per node (tfs_gsfc_workspace_size).
        from tensorflow.lite.python import schema_py_generated as schema

        return batch * in_features * 2 + 32 if x_type == schema.TensorType.INT8 else 0


FORMAT = GroupSparseFC()
