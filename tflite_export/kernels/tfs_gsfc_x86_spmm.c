/* TFS_GROUP_SPARSE_FC on many rows at once (SpMM): a Transformer's Dense runs on batch * seq
 * rows, where the one-row kernels (tfs_gsfc_x86_avx512.c) gather each row's inputs group by group
 * and reduce 8 slots per block, once per row. Here the rows are the vector lanes instead:
 *
 *   xT[c][b] = x[b][c] for a tile of up to TFS_GSMM_TILE rows (16 lanes per vector), and for each
 *   stored group (row r, first column c) and each of its g weights w_j:
 *       y[b][r] += w_j * xT[c + j][b]   for every row b of the tile (broadcast w_j, 16-lane FMA)
 *
 * so each group's weights and index are read once per tile, there is no gather and no horizontal
 * reduction; the only reordering is a 16 x 16 transpose per 256 inputs and per 256 outputs (16
 * output rows are computed into an L1 buffer, then transposed into y). xT is zero beyond `in`
 * (columns padded to a multiple of 16 (float32) / 64 (int8)); padding rows of the last tile are
 * computed and dropped. A ragged tail group's padding weights are never used.
 *
 * int8 (AVX-512 VNNI, g = 4, 8, 16): xT holds u = x + 128 (uint8), four consecutive columns of one
 * row in each 32-bit lane, so vpdpbusd multiplies a group's 4 weights (broadcast) into 16 rows at
 * once; the bias carries -(128 + input_zp) * sum w as in the one-row VNNI kernels (the packed
 * copy's bias_u8, which counts the full groups; the ragged tail's weights are subtracted here).
 * The int32 sums are exact, so the results are bit-exact with every other int8 path; float32
 * sums in another order than the one-row kernels (within the op's 1e-5 relative contract).
 *
 * AVX2 + FMA (CPUs without AVX-512): float32 on 8-lane vectors, 32 rows a pass. The float32
 * kernels of both widths are one implementation, tfs_gsfc_x86_spmm_f32.inc.
 *
 * Chosen by tfs_gsfc_compute for batch >= TFS_GSMM_MIN_BATCH through the manifest's GSMM lines
 * (tfs_kernels.inc); scratch in the op's workspace (tfs_gsmm_scratch_size). */
#include "tfs_common.h"

#if TFS_X86
#include "tfs_gsfc_x86.h"

#define TFS_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))
#define TFS_AVX512_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")))
#ifdef TFS_SANITIZER_BUILD /* see TFS_UNROLL: inlining every (NV, G) instance is what costs */
#define TFS_INLINE static inline
#else
#define TFS_INLINE static inline __attribute__((always_inline))
#endif
#define TILE TFS_GSMM_TILE

static int32_t round_up(int32_t v, int32_t m) { return (v + m - 1) / m * m; }

/* r[i] (row i of a 16 x 16 matrix of 32-bit values) -> column i. */
TFS_AVX512 TFS_INLINE void transpose16(__m512* r) {
  __m512 t[16];
  TFS_UNROLL
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  TFS_UNROLL
  for (int i = 0; i < 4; ++i) {
    r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  TFS_UNROLL
  for (int i = 0; i < 2; ++i) {
    TFS_UNROLL
    for (int j = 0; j < 4; ++j) {
      t[8 * i + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + 4 + j], 0x88);
      t[8 * i + 4 + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + 4 + j], 0xDD);
    }
  }
  TFS_UNROLL
  for (int j = 0; j < 8; ++j) {
    r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
    r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xDD);
  }
}

TFS_AVX512 TFS_INLINE __mmask16 first_n(int32_t n) {
  return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1u);
}

/* xT[c][0..T) = the tile's rows 0..n of x[.][c] (32-bit elements, `cols` per row, the columns
 * padded with zeros to `cols_pad`, a multiple of 16; rows n..T are zero). FLIP is XORed into the
 * loaded elements (int8: x + 128 as uint8, four per element). */
TFS_AVX512 TFS_INLINE void load_tile(const float* x, int32_t cols, int32_t cols_pad, int32_t n,
                                     float* xT, const int NV, const uint32_t flip) {
  const int T = 16 * NV;
  const __m512 f = _mm512_castsi512_ps(_mm512_set1_epi32((int)flip));
  for (int32_t c0 = 0; c0 < cols_pad; c0 += 16) {
    const __mmask16 m = first_n(cols - c0 > 0 ? cols - c0 : 0);
    TFS_UNROLL
    for (int j = 0; j < NV; ++j) {
      __m512 r[16];
      TFS_UNROLL
      for (int i = 0; i < 16; ++i) {
        const int32_t b = 16 * j + i;
        r[i] = b < n ? _mm512_maskz_loadu_ps(m, x + (size_t)b * (size_t)cols + c0) : _mm512_setzero_ps();
        if (flip) r[i] = _mm512_castsi512_ps(_mm512_mask_xor_epi32(
                      _mm512_castps_si512(r[i]), m, _mm512_castps_si512(r[i]), _mm512_castps_si512(f)));
      }
      transpose16(r);
      TFS_UNROLL
      for (int i = 0; i < 16; ++i) _mm512_storeu_ps(xT + (size_t)(c0 + i) * T + 16 * j, r[i]);
    }
  }
}

/* y[b][r0 + i] = buf[i][b] for the tile's rows b < n and the block's rows i < nr (buf: 16 rows
 * of T lanes). INT8: buf holds requantized int32 values, stored as int8. */
TFS_AVX512 TFS_INLINE void store_block(const float* buf, int32_t r0, int32_t nr, int32_t out,
                                       int32_t n, void* y, const int NV, const int INT8) {
  const int T = 16 * NV;
  const __mmask16 m = first_n(nr);
  TFS_UNROLL
  for (int j = 0; j < NV; ++j) {
    __m512 r[16];
    TFS_UNROLL
    for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(buf + i * T + 16 * j);
    transpose16(r);
    TFS_UNROLL
    for (int i = 0; i < 16; ++i) {
      const int32_t b = 16 * j + i;
      if (b >= n) break;
      if (INT8)
        _mm_mask_storeu_epi8((int8_t*)y + (size_t)b * (size_t)out + r0, m,
                             _mm512_cvtepi32_epi8(_mm512_castps_si512(r[i])));
      else
        _mm512_mask_storeu_ps((float*)y + (size_t)b * (size_t)out + r0, m, r[i]);
    }
  }
}

/* ---- float32, any g (tfs_gsfc_x86_spmm_f32.inc, 16 lanes) ---- */

#define SPMM_ATTR TFS_AVX512
#define SPMM_LANES 16
#define SPMM_SUFFIX avx512
#define SPMM_V __m512
#define SPMM_ZERO() _mm512_setzero_ps()
#define SPMM_SET1(f) _mm512_set1_ps(f)
#define SPMM_LOAD(p) _mm512_loadu_ps(p)
#define SPMM_STORE(p, v) _mm512_storeu_ps(p, v)
#define SPMM_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define SPMM_ADD(a, b) _mm512_add_ps(a, b)
#define SPMM_MAX(a, b) _mm512_max_ps(a, b)
#define SPMM_MIN(a, b) _mm512_min_ps(a, b)
#define SPMM_LOAD_TILE(x, cols, n, xT, NV) load_tile(x, cols, round_up(cols, 16), n, xT, NV, 0)
#define SPMM_STORE_BLOCK(buf, r0, nr, out, n, y, NV) store_block(buf, r0, nr, out, n, y, NV, 0)
#include "tfs_gsfc_x86_spmm_f32.inc"

/* ---- int8 with AVX-512 VNNI, g = 4, 8, 16 ---- */

/* Output row r of one tile (s: its slot in the packed copy, for bias_u8), requantized to int32
 * values in [act_min, act_max] in T lanes at yrow. xT: per 4 columns, T lanes of 4 bytes. */
TFS_AVX512_VNNI TFS_INLINE void row_vnni(const tfs_gsfc_layer* L, const tfs_gsfc_packed* P,
                                         const uint8_t* xT, int32_t r, int32_t s, int32_t* yrow,
                                         const int NV, const int G) {
  const size_t T = 16 * (size_t)NV;
  const int8_t* values = (const int8_t*)L->values;
  const __m512 lo = _mm512_set1_ps((float)(L->act_min - L->out_zp));
  const __m512 hi = _mm512_set1_ps((float)(L->act_max - L->out_zp));
  const __m512i zp = _mm512_set1_epi32(L->out_zp);
  uint32_t bias = (uint32_t)P->bias_u8[s];
  if (P->tail[s] >= 0) { /* bias_u8 counts the full groups; the tail is summed here too */
    /* Only its in - col real weights: the padding's products are 0 (x is 0 there), and the
     * padding itself is not read by any kernel, whatever it holds. */
    const int32_t k = P->tail[s], n_real = L->in - tfs_gsfc_col(L, k);
    uint32_t wsum = 0;
    for (int32_t j = 0; j < n_real; ++j) wsum += (uint32_t)(int32_t)values[(size_t)k * G + j];
    bias -= (uint32_t)(128 + L->in_zp) * wsum;
  }
  __m512i a[4], b[4];
  TFS_UNROLL
  for (int v = 0; v < NV; ++v) {
    a[v] = _mm512_set1_epi32((int32_t)bias);
    b[v] = _mm512_setzero_si512();
  }
  int32_t k = L->row_ptr[r];
  const int32_t k1 = L->row_ptr[r + 1];
#define GROUP(acc, kk)                                                                        \
  do {                                                                                        \
    const uint8_t* xc = xT + (size_t)(tfs_gsfc_col(L, kk) / 4) * T * 4;                       \
    const int8_t* w = values + (size_t)(kk) * G;                                              \
    TFS_UNROLL                                                                                \
    for (int q = 0; q < G / 4; ++q) {                                                         \
      const __m512i wq = _mm512_set1_epi32((int32_t)tfs_x86_ld32(w + 4 * q));                 \
      TFS_UNROLL                                                                              \
      for (int v = 0; v < NV; ++v)                                                            \
        acc[v] = _mm512_dpbusd_epi32(                                                         \
            acc[v], _mm512_loadu_si512((const void*)(xc + (q * T + 16 * v) * 4)), wq);        \
    }                                                                                         \
  } while (0)
  for (; k + 2 <= k1; k += 2) {
    GROUP(a, k);
    GROUP(b, k + 1);
  }
  if (k < k1) GROUP(a, k);
#undef GROUP
  TFS_UNROLL
  for (int v = 0; v < NV; ++v) {
    const __m512i acc = _mm512_add_epi32(a[v], b[v]);
    int32_t* yr = yrow + 16 * v;
    if (L->requant == TFS_REQUANT_FP32) { /* as tfs_x86_finish_i8: XNNPACK's fp32 flavour */
      __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), _mm512_set1_ps(L->scale[r]));
      f = _mm512_min_ps(_mm512_max_ps(f, lo), hi);
      _mm512_storeu_si512((void*)yr, _mm512_add_epi32(
          _mm512_cvt_roundps_epi32(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), zp));
    } else {
      int32_t o[16];
      _mm512_storeu_si512((void*)o, acc);
      for (int i = 0; i < 16; ++i) yr[i] = tfs_gsfc_requant(L, r, o[i]);
    }
  }
}

/* The output rows of one tile, 16 at a time into buf, each block then stored to y. slot[r]: row
 * r's slot in the packed copy. */
TFS_AVX512_VNNI TFS_INLINE void rows_vnni(const tfs_gsfc_layer* L, const tfs_gsfc_packed* P,
                                          const int32_t* slot, const uint8_t* xT, int32_t* buf,
                                          int32_t n, int8_t* y, const int NV, const int G) {
  for (int32_t r0 = 0; r0 < L->out; r0 += 16) {
    const int32_t nr = L->out - r0 < 16 ? L->out - r0 : 16;
    for (int32_t r = r0; r < r0 + nr; ++r)
      row_vnni(L, P, xT, r, slot[r], buf + (size_t)(r - r0) * 16 * NV, NV, G);
    store_block((const float*)(const void*)buf, r0, nr, L->out, n, y, NV, 1);
  }
}

/* x + 128 of the tile's rows as uint8, 4 columns per 32-bit element of xT. With in % 4 == 0 the
 * rows are 32-bit elements and load_tile transposes them; otherwise byte by byte. */
TFS_AVX512_VNNI TFS_INLINE void load_tile_u8(const tfs_gsfc_layer* L, const int8_t* x, int32_t n,
                                             uint8_t* xT, const int NV) {
  const int32_t in_pad = round_up(L->in, 64);
  if (L->in % 4 == 0) {
    load_tile((const float*)(const void*)x, L->in / 4, in_pad / 4, n, (float*)(void*)xT, NV, 0x80808080u);
    return;
  }
  const size_t T = 16 * (size_t)NV;
  memset(xT, 0, (size_t)in_pad * T);
  for (int32_t b = 0; b < n; ++b)
    for (int32_t c = 0; c < L->in; ++c)
      xT[((size_t)(c / 4) * T + (size_t)b) * 4 + (size_t)(c % 4)] =
          (uint8_t)(x[(size_t)b * L->in + c] ^ (int8_t)0x80);
}

TFS_AVX512_VNNI TFS_INLINE void tile_vnni(const tfs_gsfc_layer* L, const tfs_gsfc_packed* P,
                                          const int32_t* slot, const int8_t* x, int8_t* y,
                                          int32_t n, uint8_t* xT, int32_t* buf, const int NV) {
  load_tile_u8(L, x, n, xT, NV);
  switch (L->g) {
    case 4: rows_vnni(L, P, slot, xT, buf, n, y, NV, 4); break;
    case 8: rows_vnni(L, P, slot, xT, buf, n, y, NV, 8); break;
    default: rows_vnni(L, P, slot, xT, buf, n, y, NV, 16); break; /* manifest: g = 4, 8, 16 */
  }
}

TFS_AVX512_VNNI void tfs_gsmm_avx512_vnni_i8(const void* layer, const void* packed, const void* x_,
                                             void* y_, int32_t batch, void* ws) {
  const tfs_gsfc_layer* L = (const tfs_gsfc_layer*)layer;
  const tfs_gsfc_packed* P = (const tfs_gsfc_packed*)packed;
  uint8_t* xT = (uint8_t*)ws;
  int32_t* buf = (int32_t*)(void*)(xT + (size_t)round_up(L->in, 64) * TILE * 4);
  int32_t* slot = buf + 16 * TILE;
  for (int32_t s = 0; s < P->n_blocks * TFS_GSFC_BLOCK_ROWS; ++s)
    if (P->perm[s] >= 0) slot[P->perm[s]] = s;
  for (int32_t b0 = 0; b0 < batch; b0 += TILE) {
    const int32_t n = batch - b0 < TILE ? batch - b0 : TILE;
    const int8_t* x = (const int8_t*)x_ + (size_t)b0 * L->in;
    int8_t* y = (int8_t*)y_ + (size_t)b0 * L->out;
    switch ((n + 15) / 16) {
      case 1: tile_vnni(L, P, slot, x, y, n, xT, buf, 1); break;
      case 2: tile_vnni(L, P, slot, x, y, n, xT, buf, 2); break;
      case 3: tile_vnni(L, P, slot, x, y, n, xT, buf, 3); break;
      default: tile_vnni(L, P, slot, x, y, n, xT, buf, 4); break;
    }
  }
}

/* ---- float32 with AVX2 + FMA, any g: the same scheme on 8-lane vectors, up to 32 rows a pass
 * (4 vectors: two accumulator sets of 4 fill 8 of the 16 ymm registers), 8 output rows per
 * block. ---- */

/* r[i] (row i of an 8 x 8 matrix of floats) -> column i. */
TFS_AVX2 TFS_INLINE void transpose8(__m256* r) {
  __m256 t[8], u[8];
  TFS_UNROLL
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  TFS_UNROLL
  for (int i = 0; i < 2; ++i) {
    u[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  TFS_UNROLL
  for (int j = 0; j < 4; ++j) {
    r[j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x20);
    r[4 + j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x31);
  }
}

/* Lanes 0..n-1 on (maskload / maskstore: masked lanes are never touched). */
TFS_AVX2 TFS_INLINE __m256i first_n8(int32_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

TFS_AVX2 TFS_INLINE void load_tile8(const float* x, int32_t cols, int32_t cols_pad, int32_t n,
                                    float* xT, const int NV) {
  const int T = 8 * NV;
  for (int32_t c0 = 0; c0 < cols_pad; c0 += 8) {
    const __m256i m = first_n8(cols - c0);
    TFS_UNROLL
    for (int j = 0; j < NV; ++j) {
      __m256 r[8];
      TFS_UNROLL
      for (int i = 0; i < 8; ++i) {
        const int32_t b = 8 * j + i;
        r[i] = b < n ? _mm256_maskload_ps(x + (size_t)b * (size_t)cols + c0, m) : _mm256_setzero_ps();
      }
      transpose8(r);
      TFS_UNROLL
      for (int i = 0; i < 8; ++i) _mm256_storeu_ps(xT + (size_t)(c0 + i) * T + 8 * j, r[i]);
    }
  }
}

/* y[b][r0 + i] = buf[i][b] for the tile's rows b < n and the block's rows i < nr (buf: 8 rows of
 * T lanes). */
TFS_AVX2 TFS_INLINE void store_block8(const float* buf, int32_t r0, int32_t nr, int32_t out,
                                      int32_t n, float* y, const int NV) {
  const int T = 8 * NV;
  const __m256i m = first_n8(nr);
  TFS_UNROLL
  for (int j = 0; j < NV; ++j) {
    __m256 v[8];
    TFS_UNROLL
    for (int i = 0; i < 8; ++i) v[i] = _mm256_loadu_ps(buf + i * T + 8 * j);
    transpose8(v);
    TFS_UNROLL
    for (int i = 0; i < 8; ++i)
      if (8 * j + i < n) _mm256_maskstore_ps(y + (size_t)(8 * j + i) * (size_t)out + r0, m, v[i]);
  }
}

#define SPMM_ATTR TFS_AVX2
#define SPMM_LANES 8
#define SPMM_SUFFIX avx2
#define SPMM_V __m256
#define SPMM_ZERO() _mm256_setzero_ps()
#define SPMM_SET1(f) _mm256_set1_ps(f)
#define SPMM_LOAD(p) _mm256_loadu_ps(p)
#define SPMM_STORE(p, v) _mm256_storeu_ps(p, v)
#define SPMM_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define SPMM_ADD(a, b) _mm256_add_ps(a, b)
#define SPMM_MAX(a, b) _mm256_max_ps(a, b)
#define SPMM_MIN(a, b) _mm256_min_ps(a, b)
#define SPMM_LOAD_TILE(x, cols, n, xT, NV) load_tile8(x, cols, round_up(cols, 8), n, xT, NV)
#define SPMM_STORE_BLOCK(buf, r0, nr, out, n, y, NV) store_block8(buf, r0, nr, out, n, y, NV)
#include "tfs_gsfc_x86_spmm_f32.inc"


#endif /* TFS_X86 */
