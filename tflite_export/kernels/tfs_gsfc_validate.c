/* TFS_GROUP_SPARSE_FC: validation of a node (Prepare) - the parameter blob, every rule of
 * tflite_export/FORMAT.md "Validation", the activations against the layer - and the workspace
 * size. See tfs_group_sparse_fc.h for the API. */
#include <string.h>

#include "tfs_group_sparse_fc.h"
#include "tfs_gsfc_internal.h"

static const char* const kInputNames[TFS_GSFC_NUM_INPUTS_I8] = {
    "activations", "values", "col_idx", "row_ptr", "meta", "bias", "out_multiplier",
    "out_shift", "out_scale"};

TFS_DEFINE_OP_CORE_COMMON(tfs_gsfc, tfs_gsfc_layer, kInputNames, TFS_GSFC_NUM_INPUTS_F32,
                          TFS_GSFC_NUM_INPUTS_I8, TFS_GSFC_IN_META, TFS_GSFC_FORMAT_VERSION);

/* The op's part of tfs_gsfc_validate_layer (TFS_DEFINE_OP_CORE_COMMON): meta's own fields, the
 * arrays, the layer's own fields. */
static int check_layer(const tfs_tensor* inputs, size_t n_inputs, const int32_t* meta,
                       tfs_gsfc_layer* layer, char* err, size_t err_len) {
  int rc;
  const int32_t in = meta[TFS_META_IN], out = meta[TFS_META_OUT], g = meta[TFS_META_G];
  const int32_t n_groups = meta[TFS_META_N_GROUPS], dtype = meta[TFS_META_DTYPE];
  /* Every group starts below `in` and the SIMD paths' packed copy keeps first columns as uint16,
   * so in <= 65536 (FORMAT.md "Validation"). */
  if (in < 1 || in > 65536) return tfs_fail(err, err_len, "meta: in = %d not in [1, 65536]", (int)in);
  if (out < 1) return tfs_fail(err, err_len, "meta: out = %d < 1", (int)out);
  if (g != 1 && g != 2 && g != 4 && g != 8 && g != 16)
    return tfs_fail(err, err_len, "meta: g = %d not in {1, 2, 4, 8, 16}", (int)g);
  const int64_t groups_per_row = ((int64_t)in + g - 1) / g;
  if (n_groups < 0 || (int64_t)n_groups > groups_per_row * out)
    return tfs_fail(err, err_len, "meta: n_groups = %d not in [0, out * ceil(in / g) = %lld]",
                (int)n_groups, (long long)(groups_per_row * out));
  if ((rc = tfs_check_meta_common(meta, n_inputs, TFS_GSFC_NUM_INPUTS_F32, TFS_GSFC_NUM_INPUTS_I8,
                                  err, err_len)) != TFS_OK)
    return rc;

  const int wtype = dtype == TFS_DTYPE_I8 ? TFS_ELEM_INT8 : TFS_ELEM_FLOAT32;
  /* col_idx: uint8 or uint16 group indices (the exporter writes the narrowest that fits). */
  const int ctype = inputs[TFS_GSFC_IN_COL_IDX].elem == TFS_ELEM_UINT8 ? TFS_ELEM_UINT8 : TFS_ELEM_UINT16;
  if ((rc = check_tensor(&inputs[TFS_GSFC_IN_VALUES], TFS_GSFC_IN_VALUES, wtype,
                         (int64_t)n_groups * g, err, err_len)) != TFS_OK ||
      (rc = check_tensor(&inputs[TFS_GSFC_IN_COL_IDX], TFS_GSFC_IN_COL_IDX, ctype,
                         n_groups, err, err_len)) != TFS_OK ||
      (rc = check_tensor(&inputs[TFS_GSFC_IN_ROW_PTR], TFS_GSFC_IN_ROW_PTR, TFS_ELEM_INT32,
                         (int64_t)out + 1, err, err_len)) != TFS_OK ||
      (rc = check_tensor(&inputs[TFS_GSFC_IN_BIAS], TFS_GSFC_IN_BIAS,
                         dtype == TFS_DTYPE_I8 ? TFS_ELEM_INT32 : TFS_ELEM_FLOAT32, out, err,
                         err_len)) != TFS_OK)
    return rc;

  const int32_t* row_ptr = (const int32_t*)inputs[TFS_GSFC_IN_ROW_PTR].data;
  const void* col = inputs[TFS_GSFC_IN_COL_IDX].data;
  const uint8_t* col8 = ctype == TFS_ELEM_UINT8 ? (const uint8_t*)col : NULL;
  const uint16_t* col16 = ctype == TFS_ELEM_UINT16 ? (const uint16_t*)col : NULL;
  if (row_ptr[0] != 0) return tfs_fail(err, err_len, "row_ptr[0] = %d, not 0", (int)row_ptr[0]);
  if (row_ptr[out] != n_groups)
    return tfs_fail(err, err_len, "row_ptr[out] = %d, not n_groups = %d", (int)row_ptr[out], (int)n_groups);
  for (int32_t r = 0; r < out; ++r) {
    const int32_t k0 = row_ptr[r], k1 = row_ptr[r + 1];
    /* k0 is already known to be in [0, n_groups] (previous iteration). */
    if (k1 < k0 || k1 > n_groups)
      return tfs_fail(err, err_len, "row_ptr[%d] = %d not in [row_ptr[%d] = %d, n_groups = %d]",
                  (int)(r + 1), (int)k1, (int)r, (int)k0, (int)n_groups);
    int32_t prev = -1;
    for (int32_t k = k0; k < k1; ++k) {
      const int32_t c = col8 != NULL ? (int32_t)col8[k] : (int32_t)col16[k];
      if (c >= groups_per_row)
        return tfs_fail(err, err_len, "col_idx[%d] = %d >= ceil(in / g) = %d (row %d)", (int)k, (int)c,
                        (int)groups_per_row, (int)r);
      if (c <= prev)
        return tfs_fail(err, err_len, "col_idx not strictly increasing in row %d at group %d", (int)r, (int)k);
      prev = c;
    }
  }

  layer->g = g;
  layer->n_groups = n_groups;
  layer->in_full = in - in % g;
  layer->values = inputs[TFS_GSFC_IN_VALUES].data;
  layer->col_idx = col;
  layer->col_bytes = ctype == TFS_ELEM_UINT8 ? 1 : 2;
  layer->row_ptr = row_ptr;
  layer->bias = inputs[TFS_GSFC_IN_BIAS].data;
  return TFS_OK;
}

size_t tfs_gsfc_workspace_size(const tfs_gsfc_layer* layer, int32_t batch) {
  if (batch <= 0) return 0;
  /* int16 (x - input_zp) for the whole batch, plus 32 bytes so a 4-byte gather at the last
   * element (g = 1) stays inside the workspace. */
  size_t need = layer->dtype == TFS_DTYPE_I8 ? (size_t)batch * (size_t)layer->in * sizeof(int16_t) + 32 : 0;
#if TFS_X86
  /* The SpMM kernels' transposed tiles, from the batch at which tfs_gsfc_compute picks them. */
  if (batch >= TFS_GSMM_MIN_BATCH && tfs_gsmm_scratch_size(layer) > need) need = tfs_gsmm_scratch_size(layer);
#endif
  return need;
}
