/* What the TFS_NM_SPARSE_FC kernels share (not public API).
 *
 * Row r of the weights holds in/4 windows; window w keeps values v[2w], v[2w+1] at input columns
 * 4w + p0 and 4w + p1, where the positions nibble of window w is byte w/2 of the row's positions
 * (low nibble for even w): bits 0-1 = p0, bits 2-3 = p1, p0 < p1. A row's positions therefore
 * read as one little-endian bit stream with 2 bits per kept value, in the order of the values.
 */
#ifndef TFS_NM_INTERNAL_H_
#define TFS_NM_INTERNAL_H_

#include <stddef.h>
#include <stdint.h>

#include "tfs_dispatch.h"
#include "tfs_nm_sparse_fc.h"

/* int32 accumulator (bias included) of row r -> int8: the group-sparse op's requantization. */
static inline int8_t tfs_nm_requant(const tfs_nmfc_layer* L, int32_t r, int32_t acc) {
  return tfs_requant_i8(acc, L->requant, L->multiplier[r], L->shift[r], L->scale[r], L->out_zp,
                        L->act_min, L->act_max);
}

static inline unsigned tfs_nm_nibble(const uint8_t* row_idx, int32_t w) {
  return (row_idx[w / 2] >> ((w & 1) * 4)) & 0xFu;
}

/* The start of every N:M kernel (tfs_kernel_fn's parameters layer, packed, x_, y_, batch, ws):
 * the layer L and typed x, y and bias (N:M kernels read the model's layout: no packed copy). */
#define TFS_NM_KERNEL_BEGIN(x_t, y_t, bias_t)                    \
  const tfs_nmfc_layer* L = (const tfs_nmfc_layer*)layer;       \
  const x_t* x = (const x_t*)x_;                                \
  y_t* y = (y_t*)y_;                                            \
  const bias_t* bias = (const bias_t*)L->bias;                  \
  (void)packed;                                                 \
  (void)ws

/* Row r's kept values (v_t: float or int8_t) and position bytes. */
#define TFS_NM_ROW_VALUES(L, r, v_t) ((const v_t*)(L)->values + (size_t)(r) * (size_t)(L)->kept_per_row)
#define TFS_NM_ROW_INDICES(L, r) ((L)->indices + (size_t)(r) * (size_t)(L)->idx_stride)

/* Windows [w0, w1) of row r, scalar, one definition for both dtypes: float32, and int8 weights
 * on widened int32 inputs whose sums wrap (uint32 arithmetic: defined behaviour, the same bits
 * as the SIMD adds). */
#define TFS_NM_DEFINE_ROW(name, acc_t, v_t, x_t, mul)                                            \
  static inline acc_t name(const tfs_nmfc_layer* L, int32_t r, const x_t* x, int32_t w0,        \
                           int32_t w1) {                                                        \
    const v_t* v = TFS_NM_ROW_VALUES(L, r, v_t);                                                \
    const uint8_t* ix = TFS_NM_ROW_INDICES(L, r);                                               \
    acc_t acc = 0;                                                                              \
    for (int32_t w = w0; w < w1; ++w) {                                                         \
      const unsigned nib = tfs_nm_nibble(ix, w);                                                \
      const x_t* xw = x + 4 * (size_t)w;                                                        \
      acc += mul(v[2 * w], xw[nib & 3u]) + mul(v[2 * w + 1], xw[nib >> 2]);                     \
    }                                                                                           \
    return acc;                                                                                 \
  }
#define TFS_NM_MUL_F32(a, b) ((a) * (b))
#define TFS_NM_MUL_I8(a, b) ((uint32_t)((int32_t)(a) * (b)))
TFS_NM_DEFINE_ROW(tfs_nm_row_f32, float, float, float, TFS_NM_MUL_F32)
TFS_NM_DEFINE_ROW(tfs_nm_row_i8, uint32_t, int8_t, int32_t, TFS_NM_MUL_I8)

static inline void tfs_nm_widen(const tfs_nmfc_layer* L, const int8_t* x, int32_t* xs, size_t count) {
  for (size_t i = 0; i < count; ++i) xs[i] = (int32_t)x[i] - L->in_zp;
}

#endif /* TFS_NM_INTERNAL_H_ */
