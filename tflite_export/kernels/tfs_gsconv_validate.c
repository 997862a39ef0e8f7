/* TFS_GROUP_SPARSE_CONV2D: validation of a node (Prepare) - the parameter blob, the FC part by
 * the TFS_GROUP_SPARSE_FC validator, every geometry rule of tflite_export/FORMAT.md, the
 * activations against the layer - and the workspace size. See tfs_group_sparse_conv.h. */
#include <string.h>

#include "tfs_group_sparse_conv.h"

static const char* const kInputNames[TFS_GSCONV_NUM_INPUTS] = {
    "activations", "values", "col_idx", "row_ptr", "meta", "bias", "out_multiplier",
    "out_shift", "out_scale", "geometry"};

/* Limits that keep every product below in int32 (FORMAT.md "Validation"). */
#define DIM_MAX 65535

int tfs_gsconv_unpack_params(const void* blob, size_t bytes, tfs_tensor* tensors,
                             size_t* n_tensors, char* err, size_t err_len) {
  /* Exactly nine sections for both dtypes (n_f32 = n_i8): float32's requantization ones empty. */
  return tfs_unpack_params(blob, bytes, TFS_GSCONV_NUM_INPUTS, TFS_GSCONV_NUM_INPUTS, kInputNames,
                           tensors, n_tensors, err, err_len);
}

/* TFLite's output size and SAME padding (ComputePaddingHeightWidth) along one axis; 0 output
 * when the VALID window does not fit. */
static void axis_geometry(int64_t in, int64_t k, int64_t stride, int64_t dil, int32_t padding,
                          int64_t* out, int64_t* pad) {
  const int64_t eff = (k - 1) * dil + 1;
  if (padding == TFS_PADDING_SAME) {
    *out = (in + stride - 1) / stride;
    const int64_t total = (*out - 1) * stride + eff - in;
    *pad = total > 0 ? total / 2 : 0;
  } else {
    *out = in >= eff ? (in - eff) / stride + 1 : 0;
    *pad = 0;
  }
}

static int check_geometry(const int32_t* g, const tfs_gsfc_layer* fc, tfs_gsconv_layer* layer,
                          char* err, size_t err_len) {
  static const char* const kNames[TFS_GSCONV_GEOMETRY_LEN] = {
      "version", "in_h", "in_w", "cin", "kh", "kw", "stride_h", "stride_w", "dil_h", "dil_w",
      "padding", "out_h", "out_w", "pad_top", "pad_left", "reserved"};
  if (g[TFS_GEOM_VERSION] != TFS_GSCONV_FORMAT_VERSION)
    return tfs_fail(err, err_len, "geometry: version %d, expected %d", (int)g[TFS_GEOM_VERSION],
                    TFS_GSCONV_FORMAT_VERSION);
  for (int i = TFS_GEOM_IN_H; i <= TFS_GEOM_DIL_W; ++i)
    if (g[i] < 1 || g[i] > DIM_MAX)
      return tfs_fail(err, err_len, "geometry: %s = %d not in [1, %d]", kNames[i], (int)g[i], DIM_MAX);
  const int32_t padding = g[TFS_GEOM_PADDING];
  if (padding != TFS_PADDING_SAME && padding != TFS_PADDING_VALID)
    return tfs_fail(err, err_len, "geometry: padding = %d, expected 0 (SAME) or 1 (VALID)", (int)padding);
  if (g[TFS_GEOM_RESERVED] != 0)
    return tfs_fail(err, err_len, "geometry: reserved field = %d, must be 0", (int)g[TFS_GEOM_RESERVED]);
  const int64_t k = (int64_t)g[TFS_GEOM_KH] * g[TFS_GEOM_KW] * g[TFS_GEOM_CIN];
  if (k != fc->in)
    return tfs_fail(err, err_len, "geometry: kh * kw * cin = %lld, but meta's in = %d",
                    (long long)k, (int)fc->in);
  const int64_t in_size = (int64_t)g[TFS_GEOM_IN_H] * g[TFS_GEOM_IN_W] * g[TFS_GEOM_CIN];
  if (in_size > INT32_MAX)
    return tfs_fail(err, err_len, "geometry: in_h * in_w * cin = %lld > %d", (long long)in_size, (int)INT32_MAX);
  int64_t out_h, out_w, pad_top, pad_left;
  axis_geometry(g[TFS_GEOM_IN_H], g[TFS_GEOM_KH], g[TFS_GEOM_STRIDE_H], g[TFS_GEOM_DIL_H], padding,
                &out_h, &pad_top);
  axis_geometry(g[TFS_GEOM_IN_W], g[TFS_GEOM_KW], g[TFS_GEOM_STRIDE_W], g[TFS_GEOM_DIL_W], padding,
                &out_w, &pad_left);
  if (out_h < 1 || out_w < 1)
    return tfs_fail(err, err_len, "geometry: the VALID filter window is larger than the input");
  if (g[TFS_GEOM_OUT_H] != out_h || g[TFS_GEOM_OUT_W] != out_w)
    return tfs_fail(err, err_len, "geometry: out_h x out_w = %d x %d, TFLite's is %lld x %lld",
                    (int)g[TFS_GEOM_OUT_H], (int)g[TFS_GEOM_OUT_W], (long long)out_h, (long long)out_w);
  if (g[TFS_GEOM_PAD_TOP] != pad_top || g[TFS_GEOM_PAD_LEFT] != pad_left)
    return tfs_fail(err, err_len, "geometry: padding top/left = %d/%d, TFLite's is %lld/%lld",
                    (int)g[TFS_GEOM_PAD_TOP], (int)g[TFS_GEOM_PAD_LEFT], (long long)pad_top,
                    (long long)pad_left);
  const int64_t positions = out_h * out_w;
  if (positions * fc->out > INT32_MAX)
    return tfs_fail(err, err_len, "geometry: out_h * out_w * cout = %lld > %d",
                    (long long)(positions * fc->out), (int)INT32_MAX);
  const tfs_conv_geom geom = {g[TFS_GEOM_IN_H], g[TFS_GEOM_IN_W], g[TFS_GEOM_CIN], (int32_t)out_h,
                              (int32_t)out_w, g[TFS_GEOM_KH], g[TFS_GEOM_KW], g[TFS_GEOM_STRIDE_H],
                              g[TFS_GEOM_STRIDE_W], g[TFS_GEOM_DIL_H], g[TFS_GEOM_DIL_W],
                              (int32_t)pad_top, (int32_t)pad_left, fc->in_zp};
  layer->geom = geom;
  layer->padding = padding;
  layer->positions = (int32_t)positions;
  return TFS_OK;
}

int tfs_gsconv_validate_layer(const tfs_tensor* inputs, size_t n_inputs, tfs_gsconv_layer* layer,
                              char* err, size_t err_len) {
  int rc;
  if (inputs == NULL || layer == NULL) return tfs_fail(err, err_len, "null argument");
  memset(layer, 0, sizeof *layer);
  if (n_inputs != TFS_GSCONV_NUM_INPUTS)
    return tfs_fail(err, err_len, "%zu inputs, expected %d", n_inputs, TFS_GSCONV_NUM_INPUTS);
  /* meta's dtype says how many of arrays 1-8 the FC part has (float32: 5, int8: 8); checked
   * here only as far as reading it needs, the FC validator checks the rest. */
  if ((rc = tfs_check_tensor(&inputs[TFS_GSFC_IN_META], TFS_GSFC_IN_META, "meta", TFS_ELEM_INT32,
                             TFS_META_LEN, err, err_len)) != TFS_OK)
    return rc;
  const int f32 = ((const int32_t*)inputs[TFS_GSFC_IN_META].data)[TFS_META_DTYPE] == TFS_DTYPE_F32;
  const size_t n_fc = f32 ? TFS_GSFC_NUM_INPUTS_F32 : TFS_GSFC_NUM_INPUTS_I8;
  /* The FC part: every rule of TFS_GROUP_SPARSE_FC on its arrays. */
  if ((rc = tfs_gsfc_validate_layer(inputs, n_fc, &layer->fc, err, err_len)) != TFS_OK) return rc;
  /* A float32 node's requantization arrays are present (the geometry's index is fixed) and
   * empty, of their int8 element types. */
  static const int kRequantElem[3] = {TFS_ELEM_INT32, TFS_ELEM_INT32, TFS_ELEM_FLOAT32};
  for (size_t i = n_fc; i < TFS_GSFC_NUM_INPUTS_I8; ++i)
    if ((rc = tfs_check_tensor(&inputs[i], (int)i, kInputNames[i], kRequantElem[i - n_fc], 0,
                               err, err_len)) != TFS_OK)
      return rc;
  if ((rc = tfs_check_tensor(&inputs[TFS_GSCONV_IN_GEOMETRY], TFS_GSCONV_IN_GEOMETRY, "geometry",
                             TFS_ELEM_INT32, TFS_GSCONV_GEOMETRY_LEN, err, err_len)) != TFS_OK)
    return rc;
  if ((rc = check_geometry((const int32_t*)inputs[TFS_GSCONV_IN_GEOMETRY].data, &layer->fc, layer,
                           err, err_len)) != TFS_OK)
    return rc;
  /* fc.in <= 65536 (the FC validator), so the patch row's bytes fit an int32. */
  tfs_gsconv_set_tile(layer, TFS_GSCONV_TILE_BYTES / (layer->fc.in * (int32_t)tfs_gsconv_elem_size(layer)));
  return TFS_OK;
}

void tfs_gsconv_set_tile(tfs_gsconv_layer* layer, int32_t positions) {
  layer->tile = positions < 1 ? 1 : (positions > layer->positions ? layer->positions : positions);
}

int tfs_gsconv_validate_io(const tfs_gsconv_layer* layer, const tfs_tensor* x, const tfs_tensor* y,
                           int32_t* batch, char* err, size_t err_len) {
  if (layer == NULL) return tfs_fail(err, err_len, "null argument");
  const tfs_conv_geom* G = &layer->geom;
  return tfs_check_io(G->in_h * G->in_w * G->cin, layer->positions * layer->fc.out,
                      layer->fc.dtype, x, y, batch, err, err_len);
}

size_t tfs_gsconv_workspace_size(const tfs_gsconv_layer* layer, int32_t batch) {
  if (batch <= 0) return 0;
  if (layer->direct) return tfs_gsconv_direct_workspace_size(layer);
  return tfs_gsconv_patch_bytes(layer) + tfs_gsfc_workspace_size(&layer->fc, layer->tile);
}

/* The phase planes cover the padded input rows / columns the taps read along one axis:
 * span = (out - 1) * stride + (k - 1) * dil + 1, in ceil(span / stride) rows per phase. */
int tfs_gsconv_set_direct(tfs_gsconv_layer* layer, int on) {
  const tfs_conv_geom* G = &layer->geom;
  layer->direct = 0;
  if (!on || !TFS_GSCONV_DIRECT || layer->fc.dtype != TFS_DTYPE_F32) return 0;
  const int64_t span_h = (int64_t)(G->out_h - 1) * G->stride_h + (int64_t)(G->kh - 1) * G->dil_h + 1;
  const int64_t span_w = (int64_t)(G->out_w - 1) * G->stride_w + (int64_t)(G->kw - 1) * G->dil_w + 1;
  const int64_t dp_h = (span_h + G->stride_h - 1) / G->stride_h;
  const int64_t dp_w = (span_w + G->stride_w - 1) / G->stride_w;
  /* every factor <= 2^32 (geometry fields <= 65535), so each product below fits in 64 bits */
  const int64_t phases = (int64_t)G->stride_h * G->stride_w * G->cin;
  if (dp_h > INT32_MAX || dp_w > INT32_MAX || dp_h * dp_w > INT32_MAX / phases) return 0;
  const int64_t planes = phases * dp_h * dp_w;
  const int64_t in_size = (int64_t)G->in_h * G->in_w * G->cin;
  /* mostly zero padding (a huge dilation under SAME): im2col reads less */
  if (planes > 4 * in_size + 65536 || planes > INT32_MAX - TFS_GSCONV_DIRECT_CHUNK) return 0;
  layer->dp_h = (int32_t)dp_h;
  layer->dp_w = (int32_t)dp_w;
  layer->dspan = (G->out_h - 1) * layer->dp_w + G->out_w;
  layer->direct = 1;
  return 1;
}

size_t tfs_gsconv_layer_size(void) { return sizeof(tfs_gsconv_layer); }

int tfs_gsconv_set_requant(tfs_gsconv_layer* layer, int requant) {
  return tfs_gsfc_set_requant(&layer->fc, requant);
}

void tfs_gsconv_blob_dims(const tfs_gsconv_layer* layer, int32_t dims[5]) {
  const tfs_conv_geom* G = &layer->geom;
  const int valid = layer->padding == TFS_PADDING_VALID;
  dims[0] = layer->fc.out;
  dims[1] = valid ? (G->kh - 1) * G->dil_h + 1 : 1;
  dims[2] = valid ? (G->kw - 1) * G->dil_w + 1 : 1;
  dims[3] = G->stride_h;
  dims[4] = G->stride_w;
}
