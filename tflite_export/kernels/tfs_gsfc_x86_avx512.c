/* TFS_GROUP_SPARSE_FC: the AVX-512 kernels. AVX-512 F/BW/VL: float32 for every g and int8 g = 16
 * (int16 madd); AVX-512 VNNI: int8 g = 4, 8, 16 with vpdpbusd. One template per family, written
 * once with a constant g. Layout and shared pieces: tfs_gsfc_x86.h. */
#include "tfs_common.h"

#if TFS_X86
#include "tfs_gsfc_x86.h"

#define TFS_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))
#define TFS_AVX512_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")))
#define TFS_INLINE static inline __attribute__((always_inline))

TFS_AVX512 TFS_INLINE __m256 lo_ps(__m512 v) { return _mm512_castps512_ps256(v); }
TFS_AVX512 TFS_INLINE __m256 hi_ps(__m512 v) {
  return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
}
TFS_AVX512 TFS_INLINE __m512 pair_ps(__m256 lo, __m256 hi) {
  return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(lo)),
                                             _mm256_castps_pd(hi), 1));
}

/* ---- float32: a step is g / 2 vectors of 16 floats (g = 1: one vector holds two steps). ---- */

/* Vector j of the step whose 8 columns are c. */
TFS_AVX512 TFS_INLINE __m512 x_f32(const float* x, const uint16_t* c, int j, const int g) {
  if (g == 2) { /* 8 slots, (x[c], x[c+1]) as one 64-bit lane each */
    const __m256i idx = tfs_x86_cols8(c);
    return _mm512_castpd_ps(_mm512_i32gather_pd(idx, (const double*)(const void*)x, 4));
  }
  if (g == 4) { /* slots 4j..4j+3 */
    const uint64_t q = tfs_x86_cols4(c + 4 * j);
    const __m256 lo = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(x + TFS_COL(q, 0))),
                                           _mm_loadu_ps(x + TFS_COL(q, 1)), 1);
    const __m256 hi = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(x + TFS_COL(q, 2))),
                                           _mm_loadu_ps(x + TFS_COL(q, 3)), 1);
    return pair_ps(lo, hi);
  }
  if (g == 8) return pair_ps(_mm256_loadu_ps(x + c[2 * j]), _mm256_loadu_ps(x + c[2 * j + 1]));
  return _mm512_loadu_ps(x + c[j]); /* g = 16: slot j */
}

/* The 8 slot sums of a block. n_vec vectors a step; 4 / n_vec sets of accumulators (at least
 * one) take alternate steps so that FMA latency is hidden in short blocks. */
TFS_AVX512 TFS_INLINE __m256 blk_f32(const float* x, const uint16_t* col, const float* w,
                                     int32_t steps, const int g) {
  if (g == 1) { /* two steps (16 gathered floats) a vector, two vectors in flight */
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int32_t t = 0;
    for (; t + 4 <= steps; t += 4) {
      const __m512i i0 = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)(const void*)(col + 8 * t)));
      const __m512i i1 = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)(const void*)(col + 8 * t + 16)));
      a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + 8 * t), _mm512_i32gather_ps(i0, x, 4), a0);
      a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + 8 * t + 16), _mm512_i32gather_ps(i1, x, 4), a1);
    }
    __m256 r = _mm256_add_ps(_mm256_add_ps(lo_ps(a0), hi_ps(a0)), _mm256_add_ps(lo_ps(a1), hi_ps(a1)));
    for (; t < steps; ++t)
      r = _mm256_fmadd_ps(_mm256_loadu_ps(w + 8 * t), _mm256_i32gather_ps(x, tfs_x86_cols8(col + 8 * t), 4), r);
    return r;
  }
  const int n_vec = g / 2, n_set = n_vec >= 4 ? 1 : 4 / n_vec;
  __m512 a[4][8];
#define MAC(acc, t, j) _mm512_fmadd_ps(_mm512_loadu_ps(w + 8 * g * (t) + 16 * (j)), x_f32(x, col + 8 * (t), j, g), acc)
  TFS_X86_ACCUMULATE(a, n_set, n_vec, steps, _mm512_setzero_ps, _mm512_add_ps, MAC);
#undef MAC
  /* To 256-bit halves in slot order: g = 16 folds each slot's vector; else each vector splits. */
  __m256 h[8];
  if (g == 16) {
    TFS_UNROLL
    for (int j = 0; j < 8; ++j) h[j] = _mm256_add_ps(lo_ps(a[0][j]), hi_ps(a[0][j]));
    return tfs_x86_reduce_ps(h, 8);
  }
  TFS_UNROLL
  for (int j = 0; j < n_vec; ++j) { h[2 * j] = lo_ps(a[0][j]); h[2 * j + 1] = hi_ps(a[0][j]); }
  return tfs_x86_reduce_ps(h, 2 * n_vec);
}

/* ---- int8 g = 16 over int16 x - input_zp (AVX-512 BW madd; CPUs without VNNI). ---- */

TFS_AVX512 TFS_INLINE __m256i blk_i16_g16(const int16_t* xs, const uint16_t* col, const int8_t* w,
                                          int32_t steps, const int g) {
  __m512i a[4];
  (void)g;
  for (int j = 0; j < 4; ++j) a[j] = _mm512_setzero_si512();
  for (int32_t t = 0; t < steps; ++t) {
    const uint16_t* c = col + 8 * t;
    const int8_t* wt = w + 128 * t;
    TFS_UNROLL
    for (int j = 0; j < 4; ++j) {
      const __m512i xv = _mm512_inserti64x4(
          _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i*)(const void*)(xs + c[2 * j]))),
          _mm256_loadu_si256((const __m256i*)(const void*)(xs + c[2 * j + 1])), 1);
      a[j] = _mm512_add_epi32(a[j], _mm512_madd_epi16(xv, _mm512_cvtepi8_epi16(
                                        _mm256_loadu_si256((const __m256i*)(const void*)(wt + 32 * j)))));
    }
  }
  __m256i v[8];
  TFS_UNROLL
  for (int j = 0; j < 4; ++j) {
    v[2 * j] = _mm512_castsi512_si256(a[j]);
    v[2 * j + 1] = _mm512_extracti64x4_epi64(a[j], 1);
  }
  return tfs_x86_reduce_epi32(v, 8);
}

TFS_AVX512 static void widen_i16(const tfs_gsfc_layer* L, const int8_t* x, int16_t* xs, size_t n) {
  const __m512i zp = _mm512_set1_epi16((int16_t)L->in_zp);
  size_t i = 0;
  for (; i + 32 <= n; i += 32)
    _mm512_storeu_si512((void*)(xs + i),
                        _mm512_sub_epi16(_mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i*)(const void*)(x + i))), zp));
  tfs_gsfc_widen(L, x + i, xs + i, n - i);
}

/* ---- int8 with AVX-512 VNNI (see tfs_gsfc_x86_vnni256.h for the uint8 trick). g = 8, 16 on
 * 512-bit vectors (a step is g / 8 of them); g = 4 (a step is 32 bytes) on 256-bit ones. ---- */

#define TFS_VNNI256_TARGET TFS_AVX512_VNNI
#define TFS_VNNI256_DP(a, u, w) _mm256_dpbusd_epi32(a, u, w)
#define TFS_VNNI256_BLK blk_vnni256
#include "tfs_gsfc_x86_vnni256.h"

/* Vector j of a step: g = 16: slots 4j..4j+3 (16 bytes each); g = 8: all 8 slots (8 bytes). */
TFS_AVX512_VNNI TFS_INLINE __m512i u8_chunks512(const uint8_t* u, const uint16_t* c, int j,
                                                const int g) {
  if (g == 8)
    return _mm512_inserti64x4(_mm512_castsi256_si512(tfs_x86_u8_chunks(u, c, 0, 8)),
                              tfs_x86_u8_chunks(u, c, 1, 8), 1);
  return _mm512_inserti64x4(_mm512_castsi256_si512(tfs_x86_u8_chunks(u, c, 2 * j, 16)),
                            tfs_x86_u8_chunks(u, c, 2 * j + 1, 16), 1);
}

TFS_AVX512_VNNI TFS_INLINE __m256i blk_vnni(const uint8_t* xu, const uint16_t* col, const int8_t* w,
                                            int32_t steps, const int g) {
  if (g == 4) return blk_vnni256(xu, col, w, steps, 4);
  const int n_vec = g / 8, n_set = 4 / n_vec;
  __m512i a[4][2];
#define MAC(acc, t, j) _mm512_dpbusd_epi32(acc, u8_chunks512(xu, col + 8 * (t), j, g), _mm512_loadu_si512(w + 8 * g * (t) + 64 * (j)))
  TFS_X86_ACCUMULATE(a, n_set, n_vec, steps, _mm512_setzero_si512, _mm512_add_epi32, MAC);
#undef MAC
  __m256i h[4]; /* slot-major halves, g / 4 lanes per slot */
  TFS_UNROLL
  for (int j = 0; j < n_vec; ++j) {
    h[2 * j] = _mm512_castsi512_si256(a[0][j]);
    h[2 * j + 1] = _mm512_extracti64x4_epi64(a[0][j], 1);
  }
  return tfs_x86_reduce_epi32(h, 2 * n_vec);
}

/* Blocks b and b + 1 of one batch row finished together: the fp32 requantization of 16 rows in
 * 512-bit vectors (rounding to nearest even embedded in the conversion, independent of MXCSR)
 * and vpmovdb's 16 bytes; ragged tails and the fixed-point flavour as in tfs_x86_finish_i8. */
TFS_AVX512 TFS_INLINE void finish_i8_x2(const tfs_gsfc_layer* L, const tfs_gsfc_packed* P,
                                        int32_t b, __m256i s0, __m256i s1, const int8_t* xb,
                                        int8_t* yb) {
  if (L->requant != TFS_REQUANT_FP32 || L->in_full != L->in) {
    tfs_x86_finish_i8_x2(L, P, b, s0, s1, xb, yb);
    return;
  }
  const __m512i s = _mm512_inserti64x4(_mm512_castsi256_si512(s0), s1, 1);
  __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(s), _mm512_loadu_ps(P->scale + 8 * b));
  f = _mm512_max_ps(f, _mm512_set1_ps((float)(L->act_min - L->out_zp)));
  f = _mm512_min_ps(f, _mm512_set1_ps((float)(L->act_max - L->out_zp)));
  const __m512i q = _mm512_add_epi32(_mm512_cvt_roundps_epi32(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                                     _mm512_set1_epi32(L->out_zp));
  const __m128i bytes = _mm512_cvtepi32_epi8(q); /* in [act_min, act_max]: no truncation */
  const int32_t* perm = P->perm + 8 * b;
  uint64_t v[2];
  v[0] = (uint64_t)_mm_cvtsi128_si64(bytes);
  v[1] = (uint64_t)_mm_extract_epi64(bytes, 1);
  if (perm[15] >= 0) { /* no padding slot (they are the last slots of the last block) */
    TFS_UNROLL
    for (int i = 0; i < 16; ++i) yb[perm[i]] = (int8_t)(uint8_t)(v[i / 8] >> (8 * (i % 8)));
  } else {
    for (int i = 0; i < 16; ++i)
      if (perm[i] >= 0) yb[perm[i]] = (int8_t)(uint8_t)(v[i / 8] >> (8 * (i % 8)));
  }
}

#define TFS_BIAS_I32 ((const int32_t*)P->bias)
TFS_X86_F32_KERNEL(tfs_gsfc_avx512_f32_g1, TFS_AVX512, blk_f32, 1)
TFS_X86_F32_KERNEL(tfs_gsfc_avx512_f32_g2, TFS_AVX512, blk_f32, 2)
TFS_X86_F32_KERNEL(tfs_gsfc_avx512_f32_g4, TFS_AVX512, blk_f32, 4)
TFS_X86_F32_KERNEL(tfs_gsfc_avx512_f32_g8, TFS_AVX512, blk_f32, 8)
TFS_X86_F32_KERNEL(tfs_gsfc_avx512_f32_g16, TFS_AVX512, blk_f32, 16)
TFS_X86_I8_KERNEL(tfs_gsfc_avx512_i8_g16, TFS_AVX512, int16_t, widen_i16, blk_i16_g16, TFS_BIAS_I32, finish_i8_x2, 16)
TFS_X86_I8_KERNEL(tfs_gsfc_avx512_vnni_i8_g4, TFS_AVX512_VNNI, uint8_t, tfs_x86_to_u8, blk_vnni, P->bias_u8, finish_i8_x2, 4)
TFS_X86_I8_KERNEL(tfs_gsfc_avx512_vnni_i8_g8, TFS_AVX512_VNNI, uint8_t, tfs_x86_to_u8, blk_vnni, P->bias_u8, finish_i8_x2, 8)
TFS_X86_I8_KERNEL(tfs_gsfc_avx512_vnni_i8_g16, TFS_AVX512_VNNI, uint8_t, tfs_x86_to_u8, blk_vnni, P->bias_u8, finish_i8_x2, 16)

#endif /* TFS_X86 */
