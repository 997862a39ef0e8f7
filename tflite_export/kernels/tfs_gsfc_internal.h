/* What the TFS_GROUP_SPARSE_FC kernels share (not public API): scalar epilogue and tail pieces.
 *
 * Every kernel computes, per output row, the dot product of the row's stored groups with x:
 * full groups in its own (SIMD) way, the one possible ragged tail group - always the row's last,
 * at a column >= in_full - in scalar code, so that no load ever reaches past x[b, in-1]. int8
 * sums wrap modulo 2^32 on every path (defined behaviour in uint32; TFLite's int32 sums wrap the
 * same way), which keeps all paths bit-exact even for adversarial weights.
 */
#ifndef TFS_GSFC_INTERNAL_H_
#define TFS_GSFC_INTERNAL_H_

#include <stddef.h>
#include <stdint.h>

#include "tfs_dispatch.h"
#include "tfs_group_sparse_fc.h"

/* int32 accumulator (bias included) of output row r -> int8, by the layer's flavour. */
static inline int8_t tfs_gsfc_requant(const tfs_gsfc_layer* L, int32_t r, int32_t acc) {
  return tfs_requant_i8(acc, L->requant, L->multiplier[r], L->shift[r], L->scale[r], L->out_zp,
                        L->act_min, L->act_max);
}

/* Dot product of the ragged tail group k (the row's last) with x: only in - col terms. */
static inline float tfs_gsfc_tail_f32(const tfs_gsfc_layer* L, const float* x, int32_t k) {
  const float* w = (const float*)L->values + (size_t)k * L->g;
  const int32_t c = tfs_gsfc_col(L, k), n = L->in - c;
  float s = 0.0f;
  for (int32_t j = 0; j < n; ++j) s += w[j] * x[c + j];
  return s;
}

/* The same for int8 over xs = x - input_zp as int16 (|s| <= 16 * 32640). */
static inline int32_t tfs_gsfc_tail_i16(const tfs_gsfc_layer* L, const int16_t* xs, int32_t k) {
  const int8_t* w = (const int8_t*)L->values + (size_t)k * L->g;
  const int32_t c = tfs_gsfc_col(L, k), n = L->in - c;
  int32_t s = 0;
  for (int32_t j = 0; j < n; ++j) s += (int32_t)w[j] * xs[c + j];
  return s;
}

/* The same over the raw int8 activations. */
static inline int32_t tfs_gsfc_tail_i8(const tfs_gsfc_layer* L, const int8_t* x, int32_t k) {
  const int8_t* w = (const int8_t*)L->values + (size_t)k * L->g;
  const int32_t c = tfs_gsfc_col(L, k), n = L->in - c;
  int32_t s = 0;
  for (int32_t j = 0; j < n; ++j) s += (int32_t)w[j] * ((int32_t)x[c + j] - L->in_zp);
  return s;
}

/* End of the row's full groups (all but a ragged last one) for the row's groups [k0, k1). */
static inline int32_t tfs_gsfc_full_end(const tfs_gsfc_layer* L, int32_t k0, int32_t k1) {
  return (k1 > k0 && L->in_full != L->in && tfs_gsfc_col(L, k1 - 1) >= L->in_full) ? k1 - 1 : k1;
}

/* x - input_zp as int16 (the portable and AVX2 int8 paths multiply int16 x int16). */
static inline void tfs_gsfc_widen(const tfs_gsfc_layer* L, const int8_t* x, int16_t* xs, size_t n) {
  const int16_t zp = (int16_t)L->in_zp;
  for (size_t i = 0; i < n; ++i) xs[i] = (int16_t)(x[i] - zp);
}

/* The SpMM kernels (tfs_gsfc_x86_spmm.c, the manifest's GSMM lines): rows per tile, the batch
 * from which tfs_gsfc_compute uses them (below it the one-row kernels are as fast), and their
 * scratch: x of one tile transposed (columns padded to 64, 4-byte lanes), 16 output rows of the
 * tile, and each row's slot in the packed copy. */
#define TFS_GSMM_TILE 64
#define TFS_GSMM_MIN_BATCH 16
static inline size_t tfs_gsmm_scratch_size(const tfs_gsfc_layer* L) {
  const size_t in_pad = ((size_t)L->in + 63) / 64 * 64;
  return (in_pad + 16) * TFS_GSMM_TILE * 4 + (size_t)L->out * 4;
}

#endif /* TFS_GSFC_INTERNAL_H_ */
