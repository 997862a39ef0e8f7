/* TFS_NM_SPARSE_FC kernel core: validator, portable reference kernel, AVX2 kernels.
 * See tfs_nm_sparse_fc.h for the API and tflite_export/FORMAT.md for the format.
 *
 * Row r of the weights holds in/4 windows; window w keeps values v[2w], v[2w+1] at input columns
 * 4w + p0 and 4w + p1, where the positions nibble of window w is byte w/2 of the row's positions
 * (low nibble for even w): bits 0-1 = p0, bits 2-3 = p1, p0 < p1. A row's positions therefore
 * read as one little-endian bit stream with 2 bits per kept value, in the order of the values.
 *
 * AVX2 (float32 and int8): 4 windows = 16 inputs = 8 kept values per step. The 16 bits of
 * positions become 8 lane indices with one variable shift, and the 8 inputs are picked from the
 * two 8-lane halves of the 16 inputs with two permutes and a blend - the same selection a sparse
 * tensor core does in hardware. Rows outside, batch inside (a row's values stay in L1).
 */
#include "tfs_nm_sparse_fc.h"

#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define TFS_NM_X86 1
#include <immintrin.h>
#else
#define TFS_NM_X86 0
#endif

/* ------------------------------------------------------------------------------------------ */
/* Validation                                                                                 */
/* ------------------------------------------------------------------------------------------ */

static const char* const kNames[TFS_NMFC_NUM_INPUTS_I8] = {
    "activations", "values", "indices", "meta", "bias", "out_multiplier", "out_shift", "out_scale"};

static int check_tensor(const tfs_tensor* t, int index, int elem, int64_t count, char* err,
                        size_t err_len) {
  return tfs_check_tensor(t, index, kNames[index], elem, count, err, err_len);
}

int tfs_nmfc_unpack_params(const void* blob, size_t bytes, tfs_tensor* tensors, size_t* n_tensors,
                           char* err, size_t err_len) {
  return tfs_unpack_params(blob, bytes, TFS_NMFC_NUM_INPUTS_F32, TFS_NMFC_NUM_INPUTS_I8, kNames,
                           tensors, n_tensors, err, err_len);
}

int tfs_nmfc_validate_layer(const tfs_tensor* inputs, size_t n_inputs, tfs_nmfc_layer* layer,
                            char* err, size_t err_len) {
  int rc;
  if (inputs == NULL || layer == NULL) return tfs_fail(err, err_len, "null argument");
  memset(layer, 0, sizeof *layer);
  const int32_t* meta = NULL;
  if ((rc = tfs_check_meta_head(inputs, n_inputs, TFS_NMFC_NUM_INPUTS_F32, TFS_NMFC_NUM_INPUTS_I8,
                                TFS_NMFC_IN_META, kNames[TFS_NMFC_IN_META], TFS_NMFC_FORMAT_VERSION, &meta,
                                err, err_len)) != TFS_OK)
    return rc;
  const int32_t in = meta[TFS_NMFC_META_IN], out = meta[TFS_NMFC_META_OUT];
  const int32_t n = meta[TFS_NMFC_META_N], m = meta[TFS_NMFC_META_M];
  const int32_t dtype = meta[TFS_META_DTYPE], act = meta[TFS_META_ACTIVATION];
  if (n != 2 || m != 4)
    return tfs_fail(err, err_len, "meta: pattern %d:%d, format version 1 stores 2:4 only", (int)n, (int)m);
  if (in < 4 || in > TFS_NMFC_MAX_DIM || in % 4 != 0)
    return tfs_fail(err, err_len, "meta: in = %d not a multiple of 4 in [4, %d]", (int)in, TFS_NMFC_MAX_DIM);
  if (out < 1 || out > TFS_NMFC_MAX_DIM)
    return tfs_fail(err, err_len, "meta: out = %d not in [1, %d]", (int)out, TFS_NMFC_MAX_DIM);
  if ((rc = tfs_check_meta_common(meta, n_inputs, TFS_NMFC_NUM_INPUTS_F32, TFS_NMFC_NUM_INPUTS_I8,
                                  err, err_len)) != TFS_OK)
    return rc;
  const int32_t in_zp = meta[TFS_META_IN_ZP], out_zp = meta[TFS_META_OUT_ZP];
  const int32_t act_min = meta[TFS_META_ACT_MIN], act_max = meta[TFS_META_ACT_MAX];

  const int32_t kept = in / 2, stride = (in / 4 + 1) / 2;
  if ((rc = check_tensor(&inputs[TFS_NMFC_IN_VALUES], TFS_NMFC_IN_VALUES,
                         dtype == TFS_DTYPE_I8 ? TFS_ELEM_INT8 : TFS_ELEM_FLOAT32,
                         (int64_t)out * kept, err, err_len)) != TFS_OK ||
      (rc = check_tensor(&inputs[TFS_NMFC_IN_INDICES], TFS_NMFC_IN_INDICES, TFS_ELEM_UINT8,
                         (int64_t)out * stride, err, err_len)) != TFS_OK ||
      (rc = check_tensor(&inputs[TFS_NMFC_IN_BIAS], TFS_NMFC_IN_BIAS,
                         dtype == TFS_DTYPE_I8 ? TFS_ELEM_INT32 : TFS_ELEM_FLOAT32, out, err,
                         err_len)) != TFS_OK)
    return rc;

  /* Every position: each window's nibble must hold p0 < p1; an odd window count leaves the high
   * nibble of each row's last byte unused, and it must be 0. */
  const uint8_t* idx = (const uint8_t*)inputs[TFS_NMFC_IN_INDICES].data;
  const int32_t windows = in / 4;
  for (int32_t r = 0; r < out; ++r) {
    const uint8_t* row = idx + (size_t)r * (size_t)stride;
    for (int32_t w = 0; w < windows; ++w) {
      const unsigned nib = (row[w / 2] >> ((w & 1) * 4)) & 0xFu;
      const unsigned p0 = nib & 3u, p1 = nib >> 2;
      if (p0 >= p1)
        return tfs_fail(err, err_len, "indices: row %d window %d: positions %u, %u not increasing", (int)r, (int)w, p0, p1);
    }
    if ((windows & 1) && (row[stride - 1] >> 4) != 0)
      return tfs_fail(err, err_len, "indices: row %d: unused high nibble of the last byte is %u, not 0", (int)r,
                  (unsigned)(row[stride - 1] >> 4));
  }

  if (dtype == TFS_DTYPE_I8 &&
      (rc = tfs_check_requant_inputs(inputs, TFS_NMFC_IN_MULTIPLIER, kNames, out, &layer->multiplier,
                                     &layer->shift, &layer->scale, err, err_len)) != TFS_OK)
    return rc;
  layer->in = in;
  layer->out = out;
  layer->n = n;
  layer->m = m;
  layer->dtype = dtype;
  layer->activation = act;
  layer->in_zp = in_zp;
  layer->out_zp = out_zp;
  layer->act_min = act_min;
  layer->act_max = act_max;
  layer->requant = TFS_REQUANT_FP32;
  layer->kept_per_row = kept;
  layer->idx_stride = stride;
  layer->values = inputs[TFS_NMFC_IN_VALUES].data;
  layer->indices = idx;
  layer->bias = inputs[TFS_NMFC_IN_BIAS].data;
  return TFS_OK;
}

int tfs_nmfc_validate_io(const tfs_nmfc_layer* layer, const tfs_tensor* x, const tfs_tensor* y,
                         int32_t* batch, char* err, size_t err_len) {
  if (layer == NULL) return tfs_fail(err, err_len, "null argument");
  return tfs_check_io(layer->in, layer->out, layer->dtype, x, y, batch, err, err_len);
}

size_t tfs_nmfc_workspace_size(const tfs_nmfc_layer* layer, int32_t batch) {
  if (layer->dtype != TFS_DTYPE_I8 || batch <= 0) return 0;
  return (size_t)batch * (size_t)layer->in * sizeof(int32_t);
}

size_t tfs_nmfc_layer_size(void) { return sizeof(tfs_nmfc_layer); }

int tfs_nmfc_set_requant(tfs_nmfc_layer* layer, int requant) {
  if (requant != TFS_REQUANT_FP32 && requant != TFS_REQUANT_FIXED_POINT) return TFS_ERR_INVALID;
  layer->requant = requant;
  return TFS_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Shared scalar pieces                                                                       */
/* ------------------------------------------------------------------------------------------ */

/* int32 accumulator (bias included) of row r -> int8: the group-sparse op's requantization. */
static inline int8_t requant(const tfs_nmfc_layer* L, int32_t r, int32_t acc) {
  return tfs_requant_i8(acc, L->requant, L->multiplier[r], L->shift[r], L->scale[r], L->out_zp,
                        L->act_min, L->act_max);
}

static inline unsigned window_nibble(const uint8_t* row_idx, int32_t w) {
  return (row_idx[w / 2] >> ((w & 1) * 4)) & 0xFu;
}

/* Windows [w0, w1) of row r, scalar. */
static inline float row_f32(const tfs_nmfc_layer* L, int32_t r, const float* x, int32_t w0, int32_t w1) {
  const float* v = (const float*)L->values + (size_t)r * (size_t)L->kept_per_row;
  const uint8_t* ix = L->indices + (size_t)r * (size_t)L->idx_stride;
  float acc = 0.0f;
  for (int32_t w = w0; w < w1; ++w) {
    const unsigned nib = window_nibble(ix, w);
    const float* xw = x + 4 * (size_t)w;
    acc += v[2 * w] * xw[nib & 3u] + v[2 * w + 1] * xw[nib >> 2];
  }
  return acc;
}

/* int32 sums wrap (uint32 arithmetic: defined behaviour, the same bits as the SIMD adds). */
static inline uint32_t row_i8(const tfs_nmfc_layer* L, int32_t r, const int32_t* xs, int32_t w0, int32_t w1) {
  const int8_t* v = (const int8_t*)L->values + (size_t)r * (size_t)L->kept_per_row;
  const uint8_t* ix = L->indices + (size_t)r * (size_t)L->idx_stride;
  uint32_t acc = 0;
  for (int32_t w = w0; w < w1; ++w) {
    const unsigned nib = window_nibble(ix, w);
    const int32_t* xw = xs + 4 * (size_t)w;
    acc += (uint32_t)((int32_t)v[2 * w] * xw[nib & 3u]) + (uint32_t)((int32_t)v[2 * w + 1] * xw[nib >> 2]);
  }
  return acc;
}

static void widen(const tfs_nmfc_layer* L, const int8_t* x, int32_t* xs, size_t count) {
  for (size_t i = 0; i < count; ++i) xs[i] = (int32_t)x[i] - L->in_zp;
}

static void ref_f32(const tfs_nmfc_layer* L, const float* x, float* y, int32_t batch) {
  const float* bias = (const float*)L->bias;
  for (int32_t r = 0; r < L->out; ++r)
    for (int32_t b = 0; b < batch; ++b)
      y[(size_t)b * L->out + r] = tfs_act_f32(bias[r] + row_f32(L, r, x + (size_t)b * L->in, 0, L->in / 4), L->activation);
}

static void ref_i8(const tfs_nmfc_layer* L, const int32_t* xs, int8_t* y, int32_t batch) {
  const int32_t* bias = (const int32_t*)L->bias;
  for (int32_t r = 0; r < L->out; ++r)
    for (int32_t b = 0; b < batch; ++b) {
      const uint32_t acc = (uint32_t)bias[r] + row_i8(L, r, xs + (size_t)b * L->in, 0, L->in / 4);
      y[(size_t)b * L->out + r] = requant(L, r, (int32_t)acc);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* AVX2                                                                                       */
/* ------------------------------------------------------------------------------------------ */
#if TFS_NM_X86
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

TFS_NM_AVX2 static void avx2_f32(const tfs_nmfc_layer* L, const float* x, float* y, int32_t batch) {
  const int32_t steps = L->in / 16, windows = L->in / 4;
  const float* bias = (const float*)L->bias;
  for (int32_t r = 0; r < L->out; ++r) {
    const float* v = (const float*)L->values + (size_t)r * (size_t)L->kept_per_row;
    const uint8_t* ix = L->indices + (size_t)r * (size_t)L->idx_stride;
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
      const float acc = hsum_ps(_mm256_add_ps(a0, a1)) + row_f32(L, r, xb, 4 * steps, windows);
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
  widen(L, x + i, xs + i, count - i);
}

TFS_NM_AVX2 static void avx2_i8(const tfs_nmfc_layer* L, const int32_t* xs, int8_t* y, int32_t batch) {
  const int32_t steps = L->in / 16, windows = L->in / 4;
  const int32_t* bias = (const int32_t*)L->bias;
  for (int32_t r = 0; r < L->out; ++r) {
    const int8_t* v = (const int8_t*)L->values + (size_t)r * (size_t)L->kept_per_row;
    const uint8_t* ix = L->indices + (size_t)r * (size_t)L->idx_stride;
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
      const uint32_t acc = (uint32_t)hsum_epi32(a) + row_i8(L, r, xb, 4 * steps, windows) + (uint32_t)bias[r];
      y[(size_t)b * L->out + r] = requant(L, r, (int32_t)acc);
    }
  }
}
#endif /* TFS_NM_X86 */

/* ------------------------------------------------------------------------------------------ */
/* Dispatch and timing                                                                        */
/* ------------------------------------------------------------------------------------------ */

int tfs_nmfc_compute(const tfs_nmfc_layer* L, const void* x, void* y, int32_t batch, void* workspace,
                     int impl) {
  if (impl == TFS_IMPL_AUTO) impl = tfs_gsfc_best_impl();
  if (!tfs_gsfc_impl_available(impl)) return TFS_ERR_UNSUPPORTED;
  if (batch <= 0) return TFS_OK;
  /* AVX-512 has no kernel of its own here: it runs the AVX2 one (AVX-512 CPUs have AVX2). */
  const int simd = TFS_NM_X86 && (impl == TFS_IMPL_AVX2 || impl == TFS_IMPL_AVX512);
  if (L->dtype == TFS_DTYPE_F32) {
#if TFS_NM_X86
    if (simd) { avx2_f32(L, (const float*)x, (float*)y, batch); return TFS_OK; }
#endif
    ref_f32(L, (const float*)x, (float*)y, batch);
    return TFS_OK;
  }
  int32_t* xs = (int32_t*)workspace;
  const size_t count = (size_t)batch * (size_t)L->in;
#if TFS_NM_X86
  if (simd) {
    avx2_widen(L, (const int8_t*)x, xs, count);
    avx2_i8(L, xs, (int8_t*)y, batch);
    return TFS_OK;
  }
#endif
  (void)simd;
  widen(L, (const int8_t*)x, xs, count);
  ref_i8(L, xs, (int8_t*)y, batch);
  return TFS_OK;
}
