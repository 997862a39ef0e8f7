/* TFS_NM_SPARSE_FC: validation of a node (Prepare) - the parameter blob, every rule of
 * tflite_export/FORMAT.md, the activations against the layer - and the workspace size. See
 * tfs_nm_sparse_fc.h for the API. */
#include <string.h>

#include "tfs_nm_sparse_fc.h"

static const char* const kNames[TFS_NMFC_NUM_INPUTS_I8] = {
    "activations", "values", "indices", "meta", "bias", "out_multiplier", "out_shift", "out_scale"};

TFS_DEFINE_OP_CORE_COMMON(tfs_nmfc, tfs_nmfc_layer, kNames, TFS_NMFC_NUM_INPUTS_F32,
                          TFS_NMFC_NUM_INPUTS_I8, TFS_NMFC_IN_META, TFS_NMFC_FORMAT_VERSION);

/* The op's part of tfs_nmfc_validate_layer (TFS_DEFINE_OP_CORE_COMMON): meta's own fields, the
 * arrays, the layer's own fields. */
static int check_layer(const tfs_tensor* inputs, size_t n_inputs, const int32_t* meta,
                       tfs_nmfc_layer* layer, char* err, size_t err_len) {
  int rc;
  const int32_t in = meta[TFS_NMFC_META_IN], out = meta[TFS_NMFC_META_OUT];
  const int32_t n = meta[TFS_NMFC_META_N], m = meta[TFS_NMFC_META_M];
  const int32_t dtype = meta[TFS_META_DTYPE];
  if (n != 2 || m != 4)
    return tfs_fail(err, err_len, "meta: pattern %d:%d, format version 1 stores 2:4 only", (int)n, (int)m);
  if (in < 4 || in > TFS_NMFC_MAX_DIM || in % 4 != 0)
    return tfs_fail(err, err_len, "meta: in = %d not a multiple of 4 in [4, %d]", (int)in, TFS_NMFC_MAX_DIM);
  if (out < 1 || out > TFS_NMFC_MAX_DIM)
    return tfs_fail(err, err_len, "meta: out = %d not in [1, %d]", (int)out, TFS_NMFC_MAX_DIM);
  if ((rc = tfs_check_meta_common(meta, n_inputs, TFS_NMFC_NUM_INPUTS_F32, TFS_NMFC_NUM_INPUTS_I8,
                                  err, err_len)) != TFS_OK)
    return rc;

  const int32_t kept = in / 2, stride = (in / 4 + 1) / 2;
  if ((rc = check_tensor(&inputs[TFS_NMFC_IN_VALUES], TFS_NMFC_IN_VALUES,
                         dtype == TFS_DTYPE_I8 ? TFS_ELEM_INT8 : TFS_ELEM_FLOAT32,
                         (int64_t)out * kept, err, err_len)) != TFS_OK ||
      (rc = check_tensor(&inputs[TFS_NMFC_IN_INDICES], TFS_NMFC_IN_INDICES, TFS_ELEM_UINT8,
                         (int64_t)out * stride, err, err_len)) != TFS_OK ||
      (rc = check_tensor(&inputs[TFS_NMFC_IN_BIAS], TFS_NMFC_IN_BIAS,
                         dtype == TFS_DTYPE_I8 ? TFS_ELEM_INT32 : TFS_ELEM_FLOAT32, out, err,
                         err_len)) != TFS_OK)
    return rc;

  /* Every position: each window's nibble must hold p0 < p1; an odd window count leaves the high
   * nibble of each row's last byte unused, and it must be 0. */
  const uint8_t* idx = (const uint8_t*)inputs[TFS_NMFC_IN_INDICES].data;
  const int32_t windows = in / 4;
  for (int32_t r = 0; r < out; ++r) {
    const uint8_t* row = idx + (size_t)r * (size_t)stride;
    for (int32_t w = 0; w < windows; ++w) {
      const unsigned nib = (row[w / 2] >> ((w & 1) * 4)) & 0xFu;
      const unsigned p0 = nib & 3u, p1 = nib >> 2;
      if (p0 >= p1)
        return tfs_fail(err, err_len, "indices: row %d window %d: positions %u, %u not increasing", (int)r, (int)w, p0, p1);
    }
    if ((windows & 1) && (row[stride - 1] >> 4) != 0)
      return tfs_fail(err, err_len, "indices: row %d: unused high nibble of the last byte is %u, not 0", (int)r,
                  (unsigned)(row[stride - 1] >> 4));
  }

  layer->n = n;
  layer->m = m;
  layer->kept_per_row = kept;
  layer->idx_stride = stride;
  layer->values = inputs[TFS_NMFC_IN_VALUES].data;
  layer->indices = idx;
  layer->bias = inputs[TFS_NMFC_IN_BIAS].data;
  return TFS_OK;
}

size_t tfs_nmfc_workspace_size(const tfs_nmfc_layer* layer, int32_t batch) {
  if (layer->dtype != TFS_DTYPE_I8 || batch <= 0) return 0;
  return (size_t)batch * (size_t)layer->in * sizeof(int32_t);
}
