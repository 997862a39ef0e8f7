/* TFS_GROUP_SPARSE_CONV2D: the group-sparse 2-D convolution kernel core, int8 and float32
 * (FORMAT.md).
 *
 * A CONV_2D is an FC over im2col rows: the filters [cout, kh, kw, cin] flattened to
 * [cout, kh*kw*cin] (tfscalpel's GroupPrunedConv2D prunes groups along that axis) are stored
 * exactly as a TFS_GROUP_SPARSE_FC layer (group-CSR, format version 2, `in` = kh*kw*cin,
 * `out` = cout) and validated by its validator; a `geometry` section adds the convolution.
 * Compute = for each tile of output positions: im2col into the workspace (tfs_im2col.c), then
 * the FC core's kernel on the tile (tfs_gsfc_compute: portable, the Cortex-M DSP path, the x86
 * SIMD paths), so every FC kernel serves the conv and stays bit-exact with it. float32 only, and
 * only where an adapter asks for it (the host's does: tfs_gsconv_set_direct): the direct path,
 * no im2col, the manifest's GSCD kernels (tfs_gsconv_direct.c). int8 always runs im2col.
 *
 * Runtime-neutral C99 like the FC core: no allocation, no I/O in the compute path. Use:
 *   tfs_gsconv_layer layer;
 *   if (tfs_gsconv_validate_layer(inputs, n_inputs, &layer, err, sizeof err) != 0) reject;
 *   // optional: tfs_gsconv_set_tile(&layer, positions) (RAM vs. per-call overhead),
 *   //           tfs_gsconv_set_direct(&layer, 1) (float32: no im2col; the host adapter's rule)
 *   if (tfs_gsconv_validate_io(&layer, &x, &y, &batch, err, sizeof err) != 0) reject;
 *   tfs_gsconv_compute(&layer, packed_or_NULL, x.data, y.data, batch, workspace, TFS_IMPL_AUTO);
 * with a workspace of tfs_gsconv_workspace_size(&layer, batch) bytes, 16-byte aligned.
 */
#ifndef TFS_GROUP_SPARSE_CONV_H_
#define TFS_GROUP_SPARSE_CONV_H_

#include <stddef.h>
#include <stdint.h>

#include "tfs_common.h"
#include "tfs_group_sparse_fc.h"
#include "tfs_im2col.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The geometry section's own version (the FC part keeps TFS_GSFC_FORMAT_VERSION in meta[0]). */
#define TFS_GSCONV_FORMAT_VERSION 1
#define TFS_GSCONV_GEOMETRY_LEN 16

/* Array indices: the FC op's nine (activations, values, col_idx, row_ptr, meta, bias,
 * out_multiplier, out_shift, out_scale) then the geometry. Every node has all ten, so the
 * geometry's index is fixed: a float32 node's three requantization arrays are empty. */
enum { TFS_GSCONV_IN_GEOMETRY = 9, TFS_GSCONV_NUM_INPUTS = 10 };

/* geometry[] fields (int32[16], FORMAT.md "TFS_GROUP_SPARSE_CONV2D"). */
enum {
  TFS_GEOM_VERSION = 0,
  TFS_GEOM_IN_H = 1,
  TFS_GEOM_IN_W = 2,
  TFS_GEOM_CIN = 3,
  TFS_GEOM_KH = 4,
  TFS_GEOM_KW = 5,
  TFS_GEOM_STRIDE_H = 6,
  TFS_GEOM_STRIDE_W = 7,
  TFS_GEOM_DIL_H = 8,
  TFS_GEOM_DIL_W = 9,
  TFS_GEOM_PADDING = 10, /* TFLite's Padding enum: 0 SAME, 1 VALID */
  TFS_GEOM_OUT_H = 11,
  TFS_GEOM_OUT_W = 12,
  TFS_GEOM_PAD_TOP = 13,
  TFS_GEOM_PAD_LEFT = 14,
  TFS_GEOM_RESERVED = 15
};
enum { TFS_PADDING_SAME = 0, TFS_PADDING_VALID = 1 };

/* Default im2col tile: as many output positions per FC call as fit in this many patch bytes. */
#define TFS_GSCONV_TILE_BYTES 4096
/* The host (LiteRT) adapter's least tile: enough positions for the FC core's SpMM kernels
 * (TFS_GSMM_MIN_BATCH = 16 rows) with room to amortise them; RAM is no concern there. Measured
 * on LeNet-5's conv2 (K = 500, 90 %, AVX-512): 2-8 positions per call 16-39 us, 32 about 4 us
 * (int8) / 11 us (float32). */
#define TFS_GSCONV_HOST_TILE 32

/* One validated node. */
typedef struct {
  tfs_gsfc_layer fc;  /* the filters as a group-sparse FC: in = kh*kw*cin, out = cout */
  tfs_conv_geom geom; /* pad_value = the input zero point (0 for float32) */
  int32_t padding;    /* TFS_PADDING_* */
  int32_t positions;  /* out_h * out_w */
  int32_t tile;       /* output positions per im2col + FC call, in [1, positions] */
  /* The float32 direct path (tfs_gsconv_direct.c), set by tfs_gsconv_set_direct only: */
  int32_t direct;     /* 1: compute runs it instead of im2col + the FC core */
  int32_t dp_h, dp_w; /* rows / columns of one phase plane of the padded input */
  int32_t dspan;      /* wide output indices: (out_h - 1) * dp_w + out_w */
} tfs_gsconv_layer;

/* tfs_gsconv_unpack_params (exactly 9 sections), _validate_layer (the FC validator on arrays
 * 1-8, then the geometry: every field in range and consistent with meta and TFLite's output size
 * and SAME padding; a float32 node's requantization arrays empty), _validate_io (x = batch *
 * in_h * in_w * cin, y = batch * out_h * out_w * cout, both of the layer's dtype), _workspace_size (patches of one tile + the FC core's workspace for
 * a tile, or the direct path's planes, tap offsets and chunk buffer; independent of batch),
 * _layer_size, _set_requant: tfs_common.h TFS_DECLARE_OP_CORE. */
TFS_DECLARE_OP_CORE(tfs_gsconv, tfs_gsconv_layer);

/* Wide output indices per chunk of the direct path (its largest; the workspace's buffer). */
#define TFS_GSCONV_DIRECT_CHUNK 128

/* The float32 direct (im2col-free) path, tfs_gsconv_direct.c: cost stored weights x positions
 * instead of K x positions. on = 1 selects it for a validated float32 layer whose padded input
 * planes stay small (at most 4x the input plus 65,536 values; every size checked in 64 bits);
 * returns whether it is now selected (0 for int8, or when refused; on = 0 restores im2col).
 * Changes the workspace size. Only the host (LiteRT) adapter sets it: the TFLite Micro adapter
 * and the Cortex-M cost profile are the im2col path's. Compute then runs the manifest's GSCD
 * kernel (no packed copy needed). */
int tfs_gsconv_set_direct(tfs_gsconv_layer* layer, int on);
/* The direct path's phase planes (values) and workspace bytes for one call (any batch). */
size_t tfs_gsconv_direct_planes(const tfs_gsconv_layer* layer);
size_t tfs_gsconv_direct_workspace_size(const tfs_gsconv_layer* layer);

/* Output positions per FC call (clamped to [1, positions]); validate sets the positions that
 * fit in TFS_GSCONV_TILE_BYTES of patches. Changes the workspace size. */
void tfs_gsconv_set_tile(tfs_gsconv_layer* layer, int32_t positions);

/* The expected blob dimensions of a validated layer (FORMAT.md: shape inference sees only
 * shapes): [cout, ekh, ekw, stride_h, stride_w, row_bytes] with ekh = (kh - 1) * dil_h + 1 for
 * VALID and 1 for SAME (likewise ekw), so that out_h = (in_h - ekh) / stride_h + 1 for both.
 * Writes the first five into dims. */
void tfs_gsconv_blob_dims(const tfs_gsconv_layer* layer, int32_t dims[5]);

/* Bytes per activation / output element: 1 (int8) or 4 (float32). */
static inline size_t tfs_gsconv_elem_size(const tfs_gsconv_layer* layer) {
  return layer->fc.dtype == TFS_DTYPE_I8 ? 1 : 4;
}

/* The workspace starts with one tile of patches (rounded up to 16 bytes), then the FC core's. */
static inline size_t tfs_gsconv_patch_bytes(const tfs_gsconv_layer* layer) {
  return ((size_t)layer->tile * (size_t)layer->fc.in * tfs_gsconv_elem_size(layer) + 15) / 16 * 16;
}

/* y[batch, out_h, out_w, cout] = conv(x[batch, in_h, in_w, cin]), int8 or float32 (the
 * layer's dtype; float32 pads with 0.0, applies the float bias and fused RELU / RELU6 as the FC
 * op does). `packed` (tfs_gsfc_pack of
 * layer->fc) as for tfs_gsfc_compute: NULL restricts TFS_IMPL_AUTO to the model-layout kernels.
 * Returns tfs_gsfc_compute's codes. */
int tfs_gsconv_compute(const tfs_gsconv_layer* layer, const tfs_gsfc_packed* packed, const void* x,
                       void* y, int32_t batch, void* workspace, int impl);

#ifdef __cplusplus
}
#endif

#endif /* TFS_GROUP_SPARSE_CONV_H_ */
