/* TFS_GROUP_SPARSE_FC: the AVX2 + FMA kernels, float32 and int8 (int16 madd), every g.
 * One template per dtype, written once with a constant g (always inlined, so every g compiles
 * to its own straight-line step loop). Layout and shared pieces: tfs_gsfc_x86.h. */
#include "tfs_common.h"

#if TFS_X86
#include "tfs_gsfc_x86.h"

#define TFS_INLINE static inline __attribute__((always_inline))

/* ---- float32: a step is g vectors of 8 floats (vector v = floats 8v..8v+7 of the step). ---- */

/* Vector v of the step whose 8 columns are c (q0, q1: the same columns as two 64-bit words). */
TFS_AVX2 TFS_INLINE __m256 x_f32(const float* x, const uint16_t* c, uint64_t q0, uint64_t q1,
                                 int v, const int g) {
  if (g == 2) { /* slots 4v..4v+3, (x[c], x[c+1]) as one 64-bit lane each */
    const __m128i idx = _mm_cvtepu16_epi32(_mm_loadl_epi64((const __m128i*)(const void*)(c + 4 * v)));
    return _mm256_castsi256_ps(_mm256_i32gather_epi64((const long long*)(const void*)x, idx, 4));
  }
  if (g == 4) { /* slots 2v, 2v+1 */
    const uint64_t q = v < 2 ? q0 : q1;
    const int i = 2 * (v & 1);
    return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(x + TFS_COL(q, i))),
                                _mm_loadu_ps(x + TFS_COL(q, i + 1)), 1);
  }
  if (g == 8) return _mm256_loadu_ps(x + c[v]);
  return _mm256_loadu_ps(x + c[v / 2] + 8 * (v % 2)); /* g = 16: half v % 2 of slot v / 2 */
}

/* The 8 slot sums of a block: g vectors per step into min(g, 8) accumulators (g = 16: both
 * halves of a slot into one). g = 1 (one gathered vector per step) alternates two. */
TFS_AVX2 TFS_INLINE __m256 blk_f32(const float* x, const uint16_t* col, const float* w,
                                   int32_t steps, const int g) {
  if (g == 1) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int32_t t = 0;
    for (; t + 2 <= steps; t += 2) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + 8 * t), _mm256_i32gather_ps(x, tfs_x86_cols8(col + 8 * t), 4), a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + 8 * t + 8), _mm256_i32gather_ps(x, tfs_x86_cols8(col + 8 * t + 8), 4), a1);
    }
    if (t < steps)
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + 8 * t), _mm256_i32gather_ps(x, tfs_x86_cols8(col + 8 * t), 4), a0);
    return _mm256_add_ps(a0, a1);
  }
  const int n_acc = g < 8 ? g : 8;
  __m256 a[8];
  TFS_UNROLL
  for (int i = 0; i < n_acc; ++i) a[i] = _mm256_setzero_ps();
  TFS_X86_FOR_STEPS(float,
    TFS_UNROLL
    for (int v = 0; v < g; ++v) {
      const int i = g == 16 ? v / 2 : v;
      a[i] = _mm256_fmadd_ps(_mm256_loadu_ps(wt + 8 * v), x_f32(x, c, q0, q1, v, g), a[i]);
    })
  return tfs_x86_reduce_ps(a, n_acc);
}

/* ---- int8 over xs = x - input_zp as int16: madd_epi16 sums pairs of products (no overflow:
 * |w| <= 128, |xs| <= 255). A step is max(g / 2, 1) vectors of 16 int16 products. ---- */

TFS_AVX2 TFS_INLINE __m256i x_i16(const int16_t* xs, const uint16_t* c, uint64_t q0, uint64_t q1,
                                  int v, const int g) {
  if (g <= 2) /* 32-bit gathers give (xs[c], xs[c+1]); the workspace has zeroed slack */
    return _mm256_i32gather_epi32((const int*)(const void*)xs, tfs_x86_cols8(c), 2);
  if (g == 4) { /* slots 4v..4v+3, 4 int16 each */
    const uint64_t q = v == 0 ? q0 : q1;
    const __m128i p01 = _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i*)(const void*)(xs + TFS_COL(q, 0))),
                                           _mm_loadl_epi64((const __m128i*)(const void*)(xs + TFS_COL(q, 1))));
    const __m128i p23 = _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i*)(const void*)(xs + TFS_COL(q, 2))),
                                           _mm_loadl_epi64((const __m128i*)(const void*)(xs + TFS_COL(q, 3))));
    return _mm256_inserti128_si256(_mm256_castsi128_si256(p01), p23, 1);
  }
  if (g == 8) /* slots 2v, 2v+1 */
    return _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128((const __m128i*)(const void*)(xs + c[2 * v]))),
        _mm_loadu_si128((const __m128i*)(const void*)(xs + c[2 * v + 1])), 1);
  return _mm256_loadu_si256((const __m256i*)(const void*)(xs + c[v])); /* g = 16: slot v */
}

TFS_AVX2 TFS_INLINE __m256i blk_i8(const int16_t* xs, const uint16_t* col, const int8_t* w,
                                   int32_t steps, const int g) {
  const int n_vec = g < 2 ? 1 : g / 2;
  __m256i a[8];
  TFS_UNROLL
  for (int i = 0; i < n_vec; ++i) a[i] = _mm256_setzero_si256();
  TFS_X86_FOR_STEPS(int8_t,
    TFS_UNROLL
    for (int v = 0; v < n_vec; ++v) {
      /* g = 1: weights as (w, 0) pairs, so madd yields exactly xs[c] * w. */
      const __m256i wv = g == 1
          ? _mm256_and_si256(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(const void*)wt)),
                             _mm256_set1_epi32(0xFFFF))
          : _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(const void*)(wt + 16 * v)));
      a[v] = _mm256_add_epi32(a[v], _mm256_madd_epi16(x_i16(xs, c, q0, q1, v, g), wv));
    })
  return tfs_x86_reduce_epi32(a, n_vec);
}

/* x - input_zp as int16 for the whole batch, then 32 zeroed bytes for the g <= 2 gathers. */
TFS_AVX2 static void widen_i16(const tfs_gsfc_layer* L, const int8_t* x, int16_t* xs, size_t n) {
  const __m256i zp = _mm256_set1_epi16((int16_t)L->in_zp);
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256((__m256i*)(void*)(xs + i),
                        _mm256_sub_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(const void*)(x + i))), zp));
  tfs_gsfc_widen(L, x + i, xs + i, n - i);
  memset(xs + n, 0, 32);
}

#define TFS_BIAS_I32 ((const int32_t*)P->bias)
#define TFS_AVX2_KERNELS(G)                                                                    \
  TFS_X86_F32_KERNEL(tfs_gsfc_avx2_f32_g##G, TFS_AVX2, blk_f32, G)                           \
  TFS_X86_I8_KERNEL(tfs_gsfc_avx2_i8_g##G, TFS_AVX2, int16_t, widen_i16, blk_i8, TFS_BIAS_I32, tfs_x86_finish_i8_x2, G)
TFS_AVX2_KERNELS(1)
TFS_AVX2_KERNELS(2)
TFS_AVX2_KERNELS(4)
TFS_AVX2_KERNELS(8)
TFS_AVX2_KERNELS(16)

#endif /* TFS_X86 */
