/* What the x86 SIMD kernels of TFS_GROUP_SPARSE_FC share (AVX2, AVX-512, VNNI files): the
 * reduction of a block's accumulators to 8 slot sums, the epilogues, and the block/batch driver.
 * Only included on x86 (TFS_X86). Functions carry target attributes, so the library needs no
 * -mavx2 and runs on any x86-64; an AVX-512 function may inline these AVX2 ones.
 *
 * All kernels run on the packed copy (tfs_gsfc_pack.c): per block of 8 rows ("slots"), step t
 * holds group t of each slot, slot-major: the 8 * g weights of step t are slot 0's g weights,
 * then slot 1's, ... Each kernel accumulates a step into n vectors of 8 lanes (float32 or
 * int32) in that slot-major order, n lanes per slot; tfs_x86_reduce_* sums them to one lane
 * per slot.
 */
#ifndef TFS_GSFC_X86_H_
#define TFS_GSFC_X86_H_

#include <immintrin.h>
#include <string.h>

#include "tfs_gsfc_internal.h"

#define TFS_AVX2 __attribute__((target("avx2,fma")))

/* The per-slot loops inside the step loops must be unrolled: rolled, GCC -O2 keeps the
 * accumulator array on the stack and every group pays a store and a reload. The sanitizer and
 * fuzz builds (tests/sanitized_c.py defines TFS_SANITIZER_BUILD) keep them rolled: the same
 * code, but fully unrolled under ASan clang spent over 5 minutes on the SpMM file alone. */
#ifdef TFS_SANITIZER_BUILD
#define TFS_UNROLL
#else
#define TFS_UNROLL _Pragma("GCC unroll 16")
#endif

TFS_AVX2 static inline __m256 tfs_x86_perm_ps(__m256 v, int a, int b, int c, int d, int e, int f,
                                              int g, int h) {
  return _mm256_permutevar8x32_ps(v, _mm256_setr_epi32(a, b, c, d, e, f, g, h));
}
TFS_AVX2 static inline __m256i tfs_x86_perm_epi32(__m256i v, int a, int b, int c, int d, int e,
                                                  int f, int g, int h) {
  return _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(a, b, c, d, e, f, g, h));
}

/* n vectors (n in {1, 2, 4, 8}), slot-major with n lanes per slot -> lane i = sum of slot i.
 * n = 2: v0 = [s0 s0 s1 s1 | s2 s2 s3 s3]; hadd -> [s0 s1 s4 s5 | s2 s3 s6 s7].
 * n = 4: v_j = [slot 2j x4 | slot 2j+1 x4]; two hadds -> [s0 s2 s4 s6 | s1 s3 s5 s7].
 * n = 8: v_i = slot i; three hadds and a cross-lane add. */
TFS_AVX2 static inline __m256 tfs_x86_reduce_ps(const __m256* v, int n) {
  if (n == 1) return v[0];
  if (n == 2) return tfs_x86_perm_ps(_mm256_hadd_ps(v[0], v[1]), 0, 1, 4, 5, 2, 3, 6, 7);
  if (n == 4)
    return tfs_x86_perm_ps(_mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3])),
                           0, 4, 1, 5, 2, 6, 3, 7);
  const __m256 a = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
  const __m256 b = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
}

TFS_AVX2 static inline __m256i tfs_x86_reduce_epi32(const __m256i* v, int n) {
  if (n == 1) return v[0];
  if (n == 2) return tfs_x86_perm_epi32(_mm256_hadd_epi32(v[0], v[1]), 0, 1, 4, 5, 2, 3, 6, 7);
  if (n == 4)
    return tfs_x86_perm_epi32(
        _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3])),
        0, 4, 1, 5, 2, 6, 3, 7);
  const __m256i a = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
  const __m256i b = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
  return _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20),
                          _mm256_permute2x128_si256(a, b, 0x31));
}

/* The step loop of the block kernels with several accumulator sets: a[n_set][n_vec] (n_vec
 * vectors a step; n_set sets take consecutive steps in turn, hiding the multiply-add latency in
 * the short blocks of a sparse layer), summed into a[0] at the end. MAC(acc, t, v) is the
 * accumulator after vector v of step t; ZERO() and ADD(a, b) are the vector type's. Only
 * a[0..n_set)[0..n_vec) is touched, so with constant counts the accumulators live in registers. */
#define TFS_X86_ACCUMULATE(a, n_set, n_vec, steps, ZERO, ADD, MAC)                        \
  do {                                                                                      \
    TFS_UNROLL                                                                              \
    for (int s_ = 0; s_ < (n_set); ++s_)                                                    \
      TFS_UNROLL                                                                            \
      for (int v_ = 0; v_ < (n_vec); ++v_) (a)[s_][v_] = ZERO();                            \
    int32_t t_ = 0;                                                                         \
    for (; t_ + (n_set) <= (steps); t_ += (n_set))                                          \
      TFS_UNROLL                                                                            \
      for (int s_ = 0; s_ < (n_set); ++s_)                                                  \
        TFS_UNROLL                                                                          \
        for (int v_ = 0; v_ < (n_vec); ++v_) (a)[s_][v_] = MAC((a)[s_][v_], t_ + s_, v_);   \
    for (; t_ < (steps); ++t_)                                                              \
      TFS_UNROLL                                                                            \
      for (int v_ = 0; v_ < (n_vec); ++v_) (a)[0][v_] = MAC((a)[0][v_], t_, v_);            \
    TFS_UNROLL                                                                              \
    for (int s_ = 1; s_ < (n_set); ++s_)                                                    \
      TFS_UNROLL                                                                            \
      for (int v_ = 0; v_ < (n_vec); ++v_) (a)[0][v_] = ADD((a)[0][v_], (a)[s_][v_]);       \
  } while (0)

/* 8 column numbers as int32 lanes (gather indices). */
TFS_AVX2 static inline __m256i tfs_x86_cols8(const uint16_t* col) {
  return _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(const void*)col));
}

/* Four 16-bit column numbers from one 64-bit load: the g = 4 kernels are bound by instruction
 * dispatch on AMD cores (whose gathers are slow); one load and shifts issue fewer uops than four
 * 16-bit loads (10-25 % faster at 90 % sparsity on Zen 3). */
static inline uint64_t tfs_x86_cols4(const uint16_t* col) {
  uint64_t v;
  memcpy(&v, col, 8);
  return v;
}
#define TFS_COL(v, i) ((size_t)(((v) >> (16 * (i))) & 0xFFFF))

/* For each of a block's `steps` steps t (inside blk_* on col, w, steps, g): c = the 8 slots'
 * first columns, wt = the step's weights (w_t, 8 * g of them) and, for g = 4, q0 / q1 = the
 * columns of slots 0-3 / 4-7 in one word each (tfs_x86_cols4). */
#define TFS_X86_FOR_STEPS(w_t, ...)                                                             \
  for (int32_t t = 0; t < steps; ++t) {                                                         \
    const uint16_t* c = col + 8 * t;                                                            \
    const w_t* wt = w + 8 * g * t;                                                              \
    const uint64_t q0 = g == 4 ? tfs_x86_cols4(c) : 0, q1 = g == 4 ? tfs_x86_cols4(c + 4) : 0;  \
    __VA_ARGS__                                                                                 \
  }

/* In tfs_x86_finish_* (L, P, b, xb): if the layer has ragged tails, s = ADD(s, LOAD(t)) with
 * t[i] (t_type) = block b's slot i's tail sum TAIL(L, xb, k), 0 where the slot has none. */
#define TFS_X86_ADD_TAILS(s, t_type, TAIL, ADD, LOAD)     \
  if (L->in_full != L->in) {                              \
    t_type t[8];                                          \
    for (int i = 0; i < 8; ++i) {                         \
      const int32_t k = P->tail[8 * b + i];               \
      t[i] = k >= 0 ? TAIL(L, xb, k) : 0;                 \
    }                                                     \
    s = ADD(s, LOAD(t));                                  \
  }
#define TFS_X86_LOADU_EPI32(p) _mm256_loadu_si256((const __m256i*)(const void*)(p))

TFS_AVX2 static inline __m256 tfs_x86_act_ps(__m256 v, int act) {
  if (act == TFS_ACT_NONE) return v;
  v = _mm256_max_ps(v, _mm256_setzero_ps());
  if (act == TFS_ACT_RELU6) v = _mm256_min_ps(v, _mm256_set1_ps(6.0f));
  return v;
}

/* Block b's 8 slot sums s (full groups) -> y row of one batch row: + ragged tails, + bias,
 * activation, scatter to the original rows. */
TFS_AVX2 static inline __attribute__((always_inline)) void tfs_x86_finish_f32(const tfs_gsfc_layer* L, const tfs_gsfc_packed* P,
                                               int32_t b, __m256 s, const float* xb, float* yb) {
  const int32_t* perm = P->perm + 8 * b;
  TFS_X86_ADD_TAILS(s, float, tfs_gsfc_tail_f32, _mm256_add_ps, _mm256_loadu_ps)
  s = _mm256_add_ps(s, _mm256_loadu_ps((const float*)P->bias + 8 * b));
  float o[8];
  _mm256_storeu_ps(o, tfs_x86_act_ps(s, L->activation));
  for (int i = 0; i < 8; ++i)
    if (perm[i] >= 0) yb[perm[i]] = o[i];
}

/* int8: s = the 8 slot sums with the slot biases already added (P->bias, or P->bias_u8 for the
 * kernels on x + 128); xb = the raw int8 activations (for the ragged tails). */
TFS_AVX2 static inline __attribute__((always_inline)) void tfs_x86_finish_i8(const tfs_gsfc_layer* L, const tfs_gsfc_packed* P,
                                              int32_t b, __m256i s, const int8_t* xb, int8_t* yb) {
  const int32_t* perm = P->perm + 8 * b;
  TFS_X86_ADD_TAILS(s, int32_t, tfs_gsfc_tail_i8, _mm256_add_epi32, TFS_X86_LOADU_EPI32)
  if (L->requant == TFS_REQUANT_FP32) {
    /* XNNPACK's fp32 requantization, 8 rows at once; the 8 int8 results leave as one 64-bit
     * word (a vector store read back as scalars would stall on store forwarding every block). */
    __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(s), _mm256_loadu_ps(P->scale + 8 * b));
    f = _mm256_max_ps(f, _mm256_set1_ps((float)(L->act_min - L->out_zp)));
    f = _mm256_min_ps(f, _mm256_set1_ps((float)(L->act_max - L->out_zp)));
    f = _mm256_round_ps(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256i q = _mm256_shuffle_epi8(
        _mm256_add_epi32(_mm256_cvtps_epi32(f), _mm256_set1_epi32(L->out_zp)),
        _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                         0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1));
    const uint64_t v = (uint64_t)_mm_cvtsi128_si64(
        _mm_unpacklo_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1)));
    if (perm[7] >= 0) { /* no padding slot (they are the last slots of the last block) */
      TFS_UNROLL
      for (int i = 0; i < 8; ++i) yb[perm[i]] = (int8_t)(uint8_t)(v >> (8 * i));
    } else {
      for (int i = 0; i < 8; ++i)
        if (perm[i] >= 0) yb[perm[i]] = (int8_t)(uint8_t)(v >> (8 * i));
    }
    return;
  }
  int32_t o[8];
  _mm256_storeu_si256((__m256i*)(void*)o, s);
  for (int i = 0; i < 8; ++i)
    if (perm[i] >= 0) yb[perm[i]] = tfs_gsfc_requant(L, perm[i], o[i]);
}

/* ---- uint8 activations for the VNNI kernels (u8 x s8 products) ---- */

static inline uint32_t tfs_x86_ld32(const void* p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t tfs_x86_ld64(const void* p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* u = x + 128 as uint8 (x ^ 0x80), the whole batch. */
TFS_AVX2 static inline void tfs_x86_to_u8(const tfs_gsfc_layer* L, const int8_t* x, uint8_t* u,
                                          size_t n) {
  (void)L;
  const __m256i flip = _mm256_set1_epi8((char)0x80);
  size_t i = 0;
  for (; i + 32 <= n; i += 32)
    _mm256_storeu_si256((__m256i*)(void*)(u + i),
                        _mm256_xor_si256(_mm256_loadu_si256((const __m256i*)(const void*)(x + i)), flip));
  for (; i < n; ++i) u[i] = (uint8_t)(x[i] ^ (int8_t)0x80);
}

/* 32 bytes of a step's slot-major activations: vector v of a step whose 8 first columns are c,
 * each slot's g bytes of u. */
TFS_AVX2 static inline __attribute__((always_inline)) __m256i tfs_x86_u8_chunks(
    const uint8_t* u, const uint16_t* c, int v, const int g) {
  if (g == 4) {
    const uint64_t q0 = tfs_x86_cols4(c), q1 = tfs_x86_cols4(c + 4);
    return _mm256_setr_epi32((int)tfs_x86_ld32(u + TFS_COL(q0, 0)), (int)tfs_x86_ld32(u + TFS_COL(q0, 1)),
                             (int)tfs_x86_ld32(u + TFS_COL(q0, 2)), (int)tfs_x86_ld32(u + TFS_COL(q0, 3)),
                             (int)tfs_x86_ld32(u + TFS_COL(q1, 0)), (int)tfs_x86_ld32(u + TFS_COL(q1, 1)),
                             (int)tfs_x86_ld32(u + TFS_COL(q1, 2)), (int)tfs_x86_ld32(u + TFS_COL(q1, 3)));
  }
  if (g == 8) { /* slots 4v..4v+3 */
    const uint64_t q = tfs_x86_cols4(c + 4 * v);
    return _mm256_setr_epi64x((long long)tfs_x86_ld64(u + TFS_COL(q, 0)), (long long)tfs_x86_ld64(u + TFS_COL(q, 1)),
                              (long long)tfs_x86_ld64(u + TFS_COL(q, 2)), (long long)tfs_x86_ld64(u + TFS_COL(q, 3)));
  }
  return _mm256_inserti128_si256( /* g = 16: slots 2v, 2v + 1 */
      _mm256_castsi128_si256(_mm_loadu_si128((const __m128i*)(const void*)(u + c[2 * v]))),
      _mm_loadu_si128((const __m128i*)(const void*)(u + c[2 * v + 1])), 1);
}

/* A kernel (tfs_kernel_fn) from a block function BLK(xk, col, w, steps, G) that returns the 8
 * slot sums of a block: the block loop outside, the batch loop inside, so a block's packed
 * weights stay in L1 across the batch. XK is the activations the block function reads (the raw
 * x, or a widened copy in the workspace made by PREP); for int8, BIAS is the slot biases,
 * an expression in P: (const int32_t*)P->bias or P->bias_u8. */
#define TFS_X86_F32_KERNEL(NAME, TARGET, BLK, G)                                                 \
  TARGET void NAME(const void* layer, const void* packed, const void* x_, void* y_,             \
                   int32_t batch, void* ws) {                                                   \
    const tfs_gsfc_layer* L = (const tfs_gsfc_layer*)layer;                                     \
    const tfs_gsfc_packed* P = (const tfs_gsfc_packed*)packed;                                  \
    const float* x = (const float*)x_;                                                          \
    const float* wbase = (const float*)P->w;                                                    \
    (void)ws;                                                                                   \
    for (int32_t b = 0; b < P->n_blocks; ++b) {                                                 \
      const int64_t e0 = P->blk_off[b];                                                         \
      const int32_t steps = (int32_t)((P->blk_off[b + 1] - e0) / 8);                            \
      for (int32_t bi = 0; bi < batch; ++bi) {                                                  \
        const float* xb = x + (size_t)bi * L->in;                                               \
        tfs_x86_finish_f32(L, P, b, BLK(xb, P->col + e0, wbase + e0 * (G), steps, G), xb,       \
                           (float*)y_ + (size_t)bi * L->out);                                   \
      }                                                                                         \
    }                                                                                           \
  }

/* Blocks b and b + 1 (both present) of one batch row: two 8-lane epilogues. */
TFS_AVX2 static inline __attribute__((always_inline)) void tfs_x86_finish_i8_x2(
    const tfs_gsfc_layer* L, const tfs_gsfc_packed* P, int32_t b, __m256i s0, __m256i s1,
    const int8_t* xb, int8_t* yb) {
  tfs_x86_finish_i8(L, P, b, s0, xb, yb);
  tfs_x86_finish_i8(L, P, b + 1, s1, xb, yb);
}

/* int8: blocks go in pairs, so that an instruction set with 16-lane vectors can finish two
 * blocks at once (FINISH2: tfs_x86_finish_i8_x2 or a wider one); an odd last block alone. */
#define TFS_X86_I8_KERNEL(NAME, TARGET, XT, PREP, BLK, BIAS, FINISH2, G)                        \
  TARGET void NAME(const void* layer, const void* packed, const void* x_, void* y_,             \
                   int32_t batch, void* ws) {                                                   \
    const tfs_gsfc_layer* L = (const tfs_gsfc_layer*)layer;                                     \
    const tfs_gsfc_packed* P = (const tfs_gsfc_packed*)packed;                                  \
    const int8_t* x = (const int8_t*)x_;                                                        \
    const int8_t* wbase = (const int8_t*)P->w;                                                  \
    XT* xk = (XT*)ws;                                                                           \
    PREP(L, x, xk, (size_t)batch * (size_t)L->in);                                              \
    int32_t b = 0;                                                                              \
    for (; b + 2 <= P->n_blocks; b += 2) {                                                      \
      const int64_t e0 = P->blk_off[b], e1 = P->blk_off[b + 1];                                 \
      const int32_t steps0 = (int32_t)((e1 - e0) / 8);                                          \
      const int32_t steps1 = (int32_t)((P->blk_off[b + 2] - e1) / 8);                           \
      const __m256i bias0 = _mm256_loadu_si256((const __m256i*)(const void*)((BIAS) + 8 * b));  \
      const __m256i bias1 = _mm256_loadu_si256((const __m256i*)(const void*)((BIAS) + 8 * b + 8)); \
      for (int32_t bi = 0; bi < batch; ++bi) {                                                  \
        const XT* xr = xk + (size_t)bi * L->in;                                                 \
        const __m256i s0 = BLK(xr, P->col + e0, wbase + e0 * (G), steps0, G);                   \
        const __m256i s1 = BLK(xr, P->col + e1, wbase + e1 * (G), steps1, G);                   \
        FINISH2(L, P, b, _mm256_add_epi32(s0, bias0), _mm256_add_epi32(s1, bias1),              \
                x + (size_t)bi * L->in, (int8_t*)y_ + (size_t)bi * L->out);                     \
      }                                                                                         \
    }                                                                                           \
    if (b < P->n_blocks) {                                                                      \
      const int64_t e0 = P->blk_off[b];                                                         \
      const int32_t steps = (int32_t)((P->blk_off[b + 1] - e0) / 8);                            \
      const __m256i bias = _mm256_loadu_si256((const __m256i*)(const void*)((BIAS) + 8 * b));   \
      for (int32_t bi = 0; bi < batch; ++bi) {                                                  \
        const __m256i s = BLK(xk + (size_t)bi * L->in, P->col + e0, wbase + e0 * (G), steps, G); \
        tfs_x86_finish_i8(L, P, b, _mm256_add_epi32(s, bias), x + (size_t)bi * L->in,          \
                          (int8_t*)y_ + (size_t)bi * L->out);                                   \
      }                                                                                         \
    }                                                                                           \
  }

#endif /* TFS_GSFC_X86_H_ */
