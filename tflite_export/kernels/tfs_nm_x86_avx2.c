/* TFS_NM_SPARSE_FC: the AVX2 kernels, float32 and int8.
 *
 * 4 windows = 16 inputs = 8 kept values per step. The 16 bits of positions become 8 lane indices
 * with one variable shift, and the 8 inputs are picked from the two 8-lane halves of the 16
 * inputs with two permutes and a blend - the same selection a sparse tensor core does in
 * hardware. Rows outside, batch inside (a row's values stay in L1).
 */
#include "tfs_common.h"

#if TFS_X86
#include <immintrin.h>
#include <string.h>

#include "tfs_nm_internal.h"

#define TFS_NM_AVX2 __attribute__((target("avx2,fma")))

/* 16 bits of positions (4 windows) -> 8 lane indices into the 8-lane half holding each input. */
TFS_NM_AVX2 static inline __m256i lane_index(const uint8_t* ix) {
  uint16_t bits;
  memcpy(&bits, ix, 2);
  const __m256i pos = _mm256_and_si256(
      _mm256_srlv_epi32(_mm256_set1_epi32((int32_t)bits), _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14)),
      _mm256_set1_epi32(3));
  return _mm256_add_epi32(pos, _mm256_setr_epi32(0, 0, 4, 4, 0, 0, 4, 4));
}

TFS_NM_AVX2 static inline float hsum_ps(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

TFS_NM_AVX2 static inline int32_t hsum_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

TFS_NM_AVX2 void tfs_nmfc_avx2_f32(const void* layer, const void* packed, const void* x_, void* y_,
                               int32_t batch, void* ws) {
  TFS_NM_KERNEL_BEGIN(float, float, float);
  const int32_t steps = L->in / 16, windows = L->in / 4;
  for (int32_t r = 0; r < L->out; ++r) {
    const float* v = TFS_NM_ROW_VALUES(L, r, float);
    const uint8_t* ix = TFS_NM_ROW_INDICES(L, r);
    for (int32_t b = 0; b < batch; ++b) {
      const float* xb = x + (size_t)b * L->in;
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
      int32_t t = 0;
      for (; t + 2 <= steps; t += 2) {
        const __m256i i0 = lane_index(ix + 2 * t), i1 = lane_index(ix + 2 * t + 2);
        const float* xt = xb + 16 * t;
        const __m256 g0 = _mm256_blend_ps(_mm256_permutevar8x32_ps(_mm256_loadu_ps(xt), i0),
                                          _mm256_permutevar8x32_ps(_mm256_loadu_ps(xt + 8), i0), 0xF0);
        const __m256 g1 = _mm256_blend_ps(_mm256_permutevar8x32_ps(_mm256_loadu_ps(xt + 16), i1),
                                          _mm256_permutevar8x32_ps(_mm256_loadu_ps(xt + 24), i1), 0xF0);
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(v + 8 * t), g0, a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(v + 8 * t + 8), g1, a1);
      }
      for (; t < steps; ++t) {
        const __m256i i0 = lane_index(ix + 2 * t);
        const float* xt = xb + 16 * t;
        const __m256 g0 = _mm256_blend_ps(_mm256_permutevar8x32_ps(_mm256_loadu_ps(xt), i0),
                                          _mm256_permutevar8x32_ps(_mm256_loadu_ps(xt + 8), i0), 0xF0);
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(v + 8 * t), g0, a0);
      }
      const float acc = hsum_ps(_mm256_add_ps(a0, a1)) + tfs_nm_row_f32(L, r, xb, 4 * steps, windows);
      y[(size_t)b * L->out + r] = tfs_act_f32(bias[r] + acc, L->activation);
    }
  }
}

TFS_NM_AVX2 static void avx2_widen(const tfs_nmfc_layer* L, const int8_t* x, int32_t* xs, size_t count) {
  const __m256i zp = _mm256_set1_epi32(L->in_zp);
  size_t i = 0;
  for (; i + 8 <= count; i += 8) {
    const __m128i b = _mm_loadl_epi64((const __m128i*)(const void*)(x + i));
    _mm256_storeu_si256((__m256i*)(void*)(xs + i), _mm256_sub_epi32(_mm256_cvtepi8_epi32(b), zp));
  }
  tfs_nm_widen(L, x + i, xs + i, count - i);
}

/* The workspace holds x - input_zp as int32. */
TFS_NM_AVX2 void tfs_nmfc_avx2_i8(const void* layer, const void* packed, const void* x_, void* y_,
                              int32_t batch, void* ws) {
  TFS_NM_KERNEL_BEGIN(int8_t, int8_t, int32_t);
  int32_t* xs = (int32_t*)ws;
  avx2_widen(L, x, xs, (size_t)batch * (size_t)L->in);
  const int32_t steps = L->in / 16, windows = L->in / 4;
  for (int32_t r = 0; r < L->out; ++r) {
    const int8_t* v = TFS_NM_ROW_VALUES(L, r, int8_t);
    const uint8_t* ix = TFS_NM_ROW_INDICES(L, r);
    for (int32_t b = 0; b < batch; ++b) {
      const int32_t* xb = xs + (size_t)b * L->in;
      __m256i a = _mm256_setzero_si256();
      for (int32_t t = 0; t < steps; ++t) {
        const __m256i i0 = lane_index(ix + 2 * t);
        const int32_t* xt = xb + 16 * t;
        const __m256i g = _mm256_blend_epi32(
            _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i*)(const void*)xt), i0),
            _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i*)(const void*)(xt + 8)), i0), 0xF0);
        const __m256i w = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(const void*)(v + 8 * t)));
        a = _mm256_add_epi32(a, _mm256_mullo_epi32(w, g));
      }
      const uint32_t acc = (uint32_t)hsum_epi32(a) + tfs_nm_row_i8(L, r, xb, 4 * steps, windows) + (uint32_t)bias[r];
      y[(size_t)b * L->out + r] = tfs_nm_requant(L, r, (int32_t)acc);
    }
  }
}
#endif /* TFS_X86 */
