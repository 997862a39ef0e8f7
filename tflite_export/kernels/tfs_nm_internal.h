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

/* Windows [w0, w1) of row r, scalar. */
static inline float tfs_nm_row_f32(const tfs_nmfc_layer* L, int32_t r, const float* x, int32_t w0, int32_t w1) {
  const float* v = (const float*)L->values + (size_t)r * (size_t)L->kept_per_row;
  const uint8_t* ix = L->indices + (size_t)r * (size_t)L->idx_stride;
  float acc = 0.0f;
  for (int32_t w = w0; w < w1; ++w) {
    const unsigned nib = tfs_nm_nibble(ix, w);
    const float* xw = x + 4 * (size_t)w;
    acc += v[2 * w] * xw[nib & 3u] + v[2 * w + 1] * xw[nib >> 2];
  }
  return acc;
}

/* int32 sums wrap (uint32 arithmetic: defined behaviour, the same bits as the SIMD adds). */
static inline uint32_t tfs_nm_row_i8(const tfs_nmfc_layer* L, int32_t r, const int32_t* xs, int32_t w0, int32_t w1) {
  const int8_t* v = (const int8_t*)L->values + (size_t)r * (size_t)L->kept_per_row;
  const uint8_t* ix = L->indices + (size_t)r * (size_t)L->idx_stride;
  uint32_t acc = 0;
  for (int32_t w = w0; w < w1; ++w) {
    const unsigned nib = tfs_nm_nibble(ix, w);
    const int32_t* xw = xs + 4 * (size_t)w;
    acc += (uint32_t)((int32_t)v[2 * w] * xw[nib & 3u]) + (uint32_t)((int32_t)v[2 * w + 1] * xw[nib >> 2]);
  }
  return acc;
}

static inline void tfs_nm_widen(const tfs_nmfc_layer* L, const int8_t* x, int32_t* xs, size_t count) {
  for (size_t i = 0; i < count; ++i) xs[i] = (int32_t)x[i] - L->in_zp;
}

#endif /* TFS_NM_INTERNAL_H_ */
