/* TFS_GROUP_SPARSE_FC kernel core: validator, portable reference kernel, x86 SIMD kernels.
 * See tfs_group_sparse_fc.h for the API and tflite_export/FORMAT.md for the format.
 *
 * Layout of the compute (all paths):
 *   for each block of up to 8 output rows:
 *     for each batch row b:
 *       for each of the rows: accumulate its stored groups (all full groups in SIMD, the one
 *         possible ragged tail group - always the row's last - in scalar code, so no load ever
 *         reaches past x[b, in-1]);
 *       reduce, add bias, activation / requantize, store.
 * Keeping the batch loop inside the row block re-reads the block's weights from L1, not memory.
 */
#include "tfs_group_sparse_fc.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define TFS_X86 1
#include <immintrin.h>
#else
#define TFS_X86 0
#endif

/* ------------------------------------------------------------------------------------------ */
/* Validation                                                                                 */
/* ------------------------------------------------------------------------------------------ */

static const char* const kInputNames[TFS_GSFC_NUM_INPUTS_I8] = {
    "activations", "values", "col_idx", "row_ptr", "meta", "bias", "out_multiplier",
    "out_shift", "out_scale"};

static int check_tensor(const tfs_tensor* t, int index, int elem, int64_t count, char* err,
                        size_t err_len) {
  return tfs_check_tensor(t, index, kInputNames[index], elem, count, err, err_len);
}

int tfs_gsfc_unpack_params(const void* blob, size_t bytes, tfs_tensor* tensors, size_t* n_tensors,
                           char* err, size_t err_len) {
  return tfs_unpack_params(blob, bytes, TFS_GSFC_NUM_INPUTS_F32, TFS_GSFC_NUM_INPUTS_I8,
                           kInputNames, tensors, n_tensors, err, err_len);
}

int tfs_gsfc_validate_layer(const tfs_tensor* inputs, size_t n_inputs, tfs_gsfc_layer* layer,
                            char* err, size_t err_len) {
  int rc;
  if (inputs == NULL || layer == NULL) return tfs_fail(err, err_len, "null argument");
  memset(layer, 0, sizeof *layer);
  const int32_t* meta = NULL;
  if ((rc = tfs_check_meta_head(inputs, n_inputs, TFS_GSFC_NUM_INPUTS_F32, TFS_GSFC_NUM_INPUTS_I8,
                                TFS_GSFC_IN_META, kInputNames[TFS_GSFC_IN_META], TFS_GSFC_FORMAT_VERSION, &meta,
                                err, err_len)) != TFS_OK)
    return rc;
  const int32_t in = meta[TFS_META_IN], out = meta[TFS_META_OUT], g = meta[TFS_META_G];
  const int32_t n_groups = meta[TFS_META_N_GROUPS], dtype = meta[TFS_META_DTYPE];
  const int32_t act = meta[TFS_META_ACTIVATION];
  /* Every group starts below `in` and the SIMD paths' packed copy keeps first columns as uint16,
   * so in <= 65536 (FORMAT.md "Validation"). */
  if (in < 1 || in > 65536) return tfs_fail(err, err_len, "meta: in = %d not in [1, 65536]", (int)in);
  if (out < 1) return tfs_fail(err, err_len, "meta: out = %d < 1", (int)out);
  if (g != 1 && g != 2 && g != 4 && g != 8 && g != 16)
    return tfs_fail(err, err_len, "meta: g = %d not in {1, 2, 4, 8, 16}", (int)g);
  const int64_t groups_per_row = ((int64_t)in + g - 1) / g;
  if (n_groups < 0 || (int64_t)n_groups > groups_per_row * out)
    return tfs_fail(err, err_len, "meta: n_groups = %d not in [0, out * ceil(in / g) = %lld]",
                (int)n_groups, (long long)(groups_per_row * out));
  if ((rc = tfs_check_meta_common(meta, n_inputs, TFS_GSFC_NUM_INPUTS_F32, TFS_GSFC_NUM_INPUTS_I8,
                                  err, err_len)) != TFS_OK)
    return rc;
  const int32_t in_zp = meta[TFS_META_IN_ZP], out_zp = meta[TFS_META_OUT_ZP];
  const int32_t act_min = meta[TFS_META_ACT_MIN], act_max = meta[TFS_META_ACT_MAX];

  const int wtype = dtype == TFS_DTYPE_I8 ? TFS_ELEM_INT8 : TFS_ELEM_FLOAT32;
  /* col_idx: uint8 or uint16 group indices (the exporter writes the narrowest that fits). */
  const int ctype = inputs[TFS_GSFC_IN_COL_IDX].elem == TFS_ELEM_UINT8 ? TFS_ELEM_UINT8 : TFS_ELEM_UINT16;
  if ((rc = check_tensor(&inputs[TFS_GSFC_IN_VALUES], TFS_GSFC_IN_VALUES, wtype,
                         (int64_t)n_groups * g, err, err_len)) != TFS_OK ||
      (rc = check_tensor(&inputs[TFS_GSFC_IN_COL_IDX], TFS_GSFC_IN_COL_IDX, ctype,
                         n_groups, err, err_len)) != TFS_OK ||
      (rc = check_tensor(&inputs[TFS_GSFC_IN_ROW_PTR], TFS_GSFC_IN_ROW_PTR, TFS_ELEM_INT32,
                         (int64_t)out + 1, err, err_len)) != TFS_OK ||
      (rc = check_tensor(&inputs[TFS_GSFC_IN_BIAS], TFS_GSFC_IN_BIAS,
                         dtype == TFS_DTYPE_I8 ? TFS_ELEM_INT32 : TFS_ELEM_FLOAT32, out, err,
                         err_len)) != TFS_OK)
    return rc;

  const int32_t* row_ptr = (const int32_t*)inputs[TFS_GSFC_IN_ROW_PTR].data;
  const void* col = inputs[TFS_GSFC_IN_COL_IDX].data;
  const uint8_t* col8 = ctype == TFS_ELEM_UINT8 ? (const uint8_t*)col : NULL;
  const uint16_t* col16 = ctype == TFS_ELEM_UINT16 ? (const uint16_t*)col : NULL;
  if (row_ptr[0] != 0) return tfs_fail(err, err_len, "row_ptr[0] = %d, not 0", (int)row_ptr[0]);
  if (row_ptr[out] != n_groups)
    return tfs_fail(err, err_len, "row_ptr[out] = %d, not n_groups = %d", (int)row_ptr[out], (int)n_groups);
  for (int32_t r = 0; r < out; ++r) {
    const int32_t k0 = row_ptr[r], k1 = row_ptr[r + 1];
    /* k0 is already known to be in [0, n_groups] (previous iteration). */
    if (k1 < k0 || k1 > n_groups)
      return tfs_fail(err, err_len, "row_ptr[%d] = %d not in [row_ptr[%d] = %d, n_groups = %d]",
                  (int)(r + 1), (int)k1, (int)r, (int)k0, (int)n_groups);
    int32_t prev = -1;
    for (int32_t k = k0; k < k1; ++k) {
      const int32_t c = col8 != NULL ? (int32_t)col8[k] : (int32_t)col16[k];
      if (c >= groups_per_row)
        return tfs_fail(err, err_len, "col_idx[%d] = %d >= ceil(in / g) = %d (row %d)", (int)k, (int)c,
                        (int)groups_per_row, (int)r);
      if (c <= prev)
        return tfs_fail(err, err_len, "col_idx not strictly increasing in row %d at group %d", (int)r, (int)k);
      prev = c;
    }
  }

  if (dtype == TFS_DTYPE_I8 &&
      (rc = tfs_check_requant_inputs(inputs, TFS_GSFC_IN_MULTIPLIER, kInputNames, out, &layer->multiplier,
                                     &layer->shift, &layer->scale, err, err_len)) != TFS_OK)
    return rc;

  layer->in = in;
  layer->out = out;
  layer->g = g;
  layer->n_groups = n_groups;
  layer->dtype = dtype;
  layer->activation = act;
  layer->in_zp = in_zp;
  layer->out_zp = out_zp;
  layer->act_min = act_min;
  layer->act_max = act_max;
  layer->in_full = in - in % g;
  layer->requant = TFS_REQUANT_FP32;
  layer->values = inputs[TFS_GSFC_IN_VALUES].data;
  layer->col_idx = col;
  layer->col_bytes = ctype == TFS_ELEM_UINT8 ? 1 : 2;
  layer->row_ptr = row_ptr;
  layer->bias = inputs[TFS_GSFC_IN_BIAS].data;
  return TFS_OK;
}

int tfs_gsfc_validate_io(const tfs_gsfc_layer* layer, const tfs_tensor* x, const tfs_tensor* y,
                         int32_t* batch, char* err, size_t err_len) {
  if (layer == NULL) return tfs_fail(err, err_len, "null argument");
  return tfs_check_io(layer->in, layer->out, layer->dtype, x, y, batch, err, err_len);
}

size_t tfs_gsfc_workspace_size(const tfs_gsfc_layer* layer, int32_t batch) {
  if (layer->dtype != TFS_DTYPE_I8 || batch <= 0) return 0;
  /* int16 (x - input_zp) for the whole batch, plus 32 bytes so a 4-byte gather at the last
   * element (g = 1) stays inside the workspace. */
  return (size_t)batch * (size_t)layer->in * sizeof(int16_t) + 32;
}

/* ------------------------------------------------------------------------------------------ */
/* Shared scalar pieces                                                                       */
/* ------------------------------------------------------------------------------------------ */

/* int32 accumulator (bias included) of output row r -> int8, by the layer's flavour. */
static inline int8_t requant_one(const tfs_gsfc_layer* L, int32_t r, int32_t acc) {
  return tfs_requant_i8(acc, L->requant, L->multiplier[r], L->shift[r], L->scale[r], L->out_zp,
                        L->act_min, L->act_max);
}

/* Dot product of the ragged tail group k (the row's last) with x: only in - col terms. */
static inline float tail_f32(const tfs_gsfc_layer* L, const float* x, int32_t k) {
  const float* w = (const float*)L->values + (size_t)k * L->g;
  const int32_t c = tfs_gsfc_col(L, k), n = L->in - c;
  float s = 0.0f;
  for (int32_t j = 0; j < n; ++j) s += w[j] * x[c + j];
  return s;
}

static inline int32_t tail_i8(const tfs_gsfc_layer* L, const int16_t* xs, int32_t k) {
  const int8_t* w = (const int8_t*)L->values + (size_t)k * L->g;
  const int32_t c = tfs_gsfc_col(L, k), n = L->in - c;
  int32_t s = 0;
  for (int32_t j = 0; j < n; ++j) s += (int32_t)w[j] * xs[c + j]; /* |s| <= 16 * 32640 */
  return s;
}

/* Number of the row's groups that are full (all but a ragged last one). */
static inline int32_t full_end(const tfs_gsfc_layer* L, int32_t k0, int32_t k1) {
  return (k1 > k0 && L->in_full != L->in && tfs_gsfc_col(L, k1 - 1) >= L->in_full) ? k1 - 1 : k1;
}

/* x - input_zp as int16 for the whole batch (the int8 paths multiply int16 x int16). */
static void widen_input(const tfs_gsfc_layer* L, const int8_t* x, int16_t* xs, size_t n) {
  const int16_t zp = (int16_t)L->in_zp;
  for (size_t i = 0; i < n; ++i) xs[i] = (int16_t)(x[i] - zp);
}

/* ------------------------------------------------------------------------------------------ */
/* Packing for the SIMD paths (layout explained above the SIMD kernels)                       */
/* ------------------------------------------------------------------------------------------ */

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

static int64_t pack_entries_bound(const tfs_gsfc_layer* L) {
  /* Rows sorted by length descending: a block's padding is at most 8 * (its max length - the
   * next block's max length); the sum telescopes to 8 * the longest row <= 8 * ceil(in / g). */
  return (int64_t)L->n_groups + (int64_t)TFS_GSFC_BLOCK_ROWS * (((int64_t)L->in + L->g - 1) / L->g);
}

size_t tfs_gsfc_packed_bound(const tfs_gsfc_layer* L) {
  const size_t n_blocks = ((size_t)L->out + TFS_GSFC_BLOCK_ROWS - 1) / TFS_GSFC_BLOCK_ROWS;
  const size_t slots = n_blocks * TFS_GSFC_BLOCK_ROWS;
  const size_t entries = (size_t)pack_entries_bound(L);
  const size_t wsize = L->dtype == TFS_DTYPE_I8 ? 1 : 4;
  return align64(slots * sizeof(int32_t)) * 4 + align64((n_blocks + 1) * sizeof(int64_t)) +
         align64(entries * sizeof(uint16_t)) + align64(entries * (size_t)L->g * wsize) +
         align64((size_t)L->out * sizeof(int64_t));
}

static int cmp_i64(const void* a, const void* b) {
  const int64_t x = *(const int64_t*)a, y = *(const int64_t*)b;
  return (x > y) - (x < y);
}

static int32_t full_groups(const tfs_gsfc_layer* L, int32_t r) {
  const int32_t k0 = L->row_ptr[r], k1 = L->row_ptr[r + 1];
  return full_end(L, k0, k1) - k0;
}

int tfs_gsfc_pack(const tfs_gsfc_layer* L, void* mem, size_t bytes, tfs_gsfc_packed* P) {
  if (L == NULL || mem == NULL || P == NULL || ((uintptr_t)mem % 64) != 0 ||
      bytes < tfs_gsfc_packed_bound(L))
    return TFS_ERR_INVALID;
  const int32_t R = TFS_GSFC_BLOCK_ROWS, g = L->g;
  const int32_t n_blocks = (int32_t)(((int64_t)L->out + R - 1) / R);
  const size_t slots = (size_t)n_blocks * R;
  const int64_t bound = pack_entries_bound(L);
  const size_t wsize = L->dtype == TFS_DTYPE_I8 ? 1 : 4;
  char* p = (char*)mem;
  int32_t* perm = (int32_t*)(void*)p;   p += align64(slots * sizeof(int32_t));
  int32_t* tail = (int32_t*)(void*)p;   p += align64(slots * sizeof(int32_t));
  int32_t* bias = (int32_t*)(void*)p;   p += align64(slots * sizeof(int32_t));
  float* scale = (float*)(void*)p;      p += align64(slots * sizeof(float));
  int64_t* off = (int64_t*)(void*)p;    p += align64(((size_t)n_blocks + 1) * sizeof(int64_t));
  uint16_t* col = (uint16_t*)(void*)p;  p += align64((size_t)bound * sizeof(uint16_t));
  char* w = p;                          p += align64((size_t)bound * (size_t)g * wsize);
  int64_t* keys = (int64_t*)(void*)p;

  /* Sort rows by number of full groups, descending (ties: row order, for determinism). */
  for (int32_t r = 0; r < L->out; ++r)
    keys[r] = ((int64_t)(65536 - full_groups(L, r)) << 32) | (int64_t)r;
  qsort(keys, (size_t)L->out, sizeof(int64_t), cmp_i64);
  for (size_t s = 0; s < slots; ++s) {
    const int32_t r = s < (size_t)L->out ? (int32_t)(keys[s] & 0xFFFFFFFF) : -1;
    perm[s] = r;
    /* Each slot's bias (float32 or int32: 4 bytes either way) and int8 out_scale, so that the
     * SIMD epilogue loads them instead of gathering (gathers are slow on AMD cores). */
    if (r >= 0) memcpy(&bias[s], (const char*)L->bias + 4 * (size_t)r, 4);
    else bias[s] = 0;
    scale[s] = (r >= 0 && L->dtype == TFS_DTYPE_I8) ? L->scale[r] : 0.0f;
    tail[s] = (r >= 0 && full_groups(L, r) != L->row_ptr[r + 1] - L->row_ptr[r]) ? L->row_ptr[r + 1] - 1 : -1;
  }
  off[0] = 0;
  for (int32_t b = 0; b < n_blocks; ++b) {
    int32_t steps = 0;
    for (int32_t i = 0; i < R; ++i) {
      const int32_t r = perm[b * R + i];
      if (r >= 0 && full_groups(L, r) > steps) steps = full_groups(L, r);
    }
    off[b + 1] = off[b] + (int64_t)steps * R;
    if (off[b + 1] > bound) return TFS_ERR_INVALID; /* cannot happen (see the bound) */
    for (int32_t t = 0; t < steps; ++t) {
      for (int32_t i = 0; i < R; ++i) {
        const int64_t e = off[b] + (int64_t)t * R + i;
        const int32_t r = perm[b * R + i];
        char* we = w + (size_t)e * (size_t)g * wsize;
        if (r >= 0 && t < full_groups(L, r)) {
          const int32_t k = L->row_ptr[r] + t;
          col[e] = (uint16_t)tfs_gsfc_col(L, k); /* < in <= 65536 */
          memcpy(we, (const char*)L->values + (size_t)k * (size_t)g * wsize, (size_t)g * wsize);
        } else {
          /* Padding: zero weights at column 0, a full group (padding exists only when some row
           * has a full group, so in >= g). */
          col[e] = 0;
          memset(we, 0, (size_t)g * wsize);
        }
      }
    }
  }
  P->n_blocks = n_blocks;
  P->perm = perm;
  P->tail = tail;
  P->bias = bias;
  P->scale = scale;
  P->blk_off = off;
  P->col = col;
  P->w = w;
  return TFS_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Portable reference kernel                                                                  */
/* ------------------------------------------------------------------------------------------ */

static void ref_f32(const tfs_gsfc_layer* L, const float* x, float* y, int32_t batch) {
  const float* vals = (const float*)L->values;
  const float* bias = (const float*)L->bias;
  const int32_t g = L->g, in = L->in;
  for (int32_t b = 0; b < batch; ++b) {
    const float* xb = x + (size_t)b * in;
    for (int32_t r = 0; r < L->out; ++r) {
      float acc = 0.0f;
      for (int32_t k = L->row_ptr[r]; k < L->row_ptr[r + 1]; ++k) {
        const int32_t c = tfs_gsfc_col(L, k);
        const int32_t n = in - c < g ? in - c : g; /* ragged tail: never read past x[in-1] */
        const float* w = vals + (size_t)k * g;
        for (int32_t j = 0; j < n; ++j) acc += w[j] * xb[c + j];
      }
      y[(size_t)b * L->out + r] = tfs_act_f32(acc + bias[r], L->activation);
    }
  }
}

static void ref_i8(const tfs_gsfc_layer* L, const int16_t* xs, int8_t* y, int32_t batch) {
  const int8_t* vals = (const int8_t*)L->values;
  const int32_t* bias = (const int32_t*)L->bias;
  const int32_t g = L->g, in = L->in;
  for (int32_t b = 0; b < batch; ++b) {
    const int16_t* xb = xs + (size_t)b * in;
    for (int32_t r = 0; r < L->out; ++r) {
      /* Modulo-2^32 accumulation: defined behaviour, and the result of the SIMD paths and of
       * TFLite (whose int32 sums wrap the same way) even for adversarial weights. */
      uint32_t acc = (uint32_t)bias[r];
      for (int32_t k = L->row_ptr[r]; k < L->row_ptr[r + 1]; ++k) {
        const int32_t c = tfs_gsfc_col(L, k);
        const int32_t n = in - c < g ? in - c : g;
        const int8_t* w = vals + (size_t)k * g;
        for (int32_t j = 0; j < n; ++j) acc += (uint32_t)((int32_t)w[j] * xb[c + j]);
      }
      y[(size_t)b * L->out + r] = requant_one(L, r, (int32_t)acc);
    }
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Cortex-M DSP extension (int8): SMLAD + SXTB16                                              */
/* ------------------------------------------------------------------------------------------ */
/* Runs directly on the model's group-CSR: on a microcontroller the weights stay in flash and
 * there is no RAM for a packed copy (Cortex-M4 has no cache and no branch predictor worth
 * sorting rows for). The workspace holds x - input_zp as int16, and for g >= 4 every aligned
 * quad below in_full is stored permuted as (x0, x2, x1, x3): one 32-bit weight load
 * w = (w0 w1 w2 w3) gives SXTB16(w) = (w0, w2) and SXTB16(w ror 8) = (w1, w3), which meet the
 * two 32-bit input loads (x0, x2) and (x1, x3) in two SMLADs - 4 MACs with no repacking. The
 * widening itself is the same trick on the input bytes (SXTB16, SXTB16 ror 8, SSUB16 by the
 * zero point). g = 2: a 16-bit weight load h = (w0 w1); SXTB16(h | h << 8) = (w0, w1) against
 * the natural pair (x0, x1), so g = 2 layers widen without permuting. g = 1: scalar MACs.
 * Ragged tail groups (at columns >= in_full, never permuted) reuse tail_i8.
 * Accumulation wraps modulo 2^32 like the portable kernel (SMLAD wraps; it only sets Q).
 *
 * Off Arm (or on an Arm core without DSP) the four intrinsics are emulated in C, so the same
 * algorithm is tested bit-exact on the host; TFS_IMPL_AUTO only picks it where it is native. */
static inline uint32_t pack16(int32_t lo, int32_t hi) {
  return ((uint32_t)lo & 0xFFFFu) | (((uint32_t)hi & 0xFFFFu) << 16);
}
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#define TFS_ARM_DSP_NATIVE 1
#include <arm_acle.h>
static inline uint32_t dsp_sxtb16(uint32_t v) { return (uint32_t)__sxtb16((int32_t)v); }
static inline uint32_t dsp_sxtb16_ror8(uint32_t v) {
  /* GCC 12 does not fold a rotate into SXTB16 (CMSIS uses the same one line of asm). */
  uint32_t r;
  __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
  return r;
}
static inline uint32_t dsp_ssub16(uint32_t a, uint32_t b) {
  return (uint32_t)__ssub16((int32_t)a, (int32_t)b);
}
static inline uint32_t dsp_smlad(uint32_t a, uint32_t b, uint32_t acc) {
  return (uint32_t)__smlad((int32_t)a, (int32_t)b, (int32_t)acc);
}
#else
#define TFS_ARM_DSP_NATIVE 0
static inline int32_t lo16(uint32_t v) { return (int32_t)(int16_t)(uint16_t)(v & 0xFFFFu); }
static inline int32_t hi16(uint32_t v) { return (int32_t)(int16_t)(uint16_t)(v >> 16); }
static inline uint32_t dsp_sxtb16(uint32_t v) {
  return pack16((int8_t)(uint8_t)(v & 0xFFu), (int8_t)(uint8_t)((v >> 16) & 0xFFu));
}
static inline uint32_t dsp_sxtb16_ror8(uint32_t v) { return dsp_sxtb16((v >> 8) | (v << 24)); }
static inline uint32_t dsp_ssub16(uint32_t a, uint32_t b) {
  return pack16(lo16(a) - lo16(b), hi16(a) - hi16(b));
}
static inline uint32_t dsp_smlad(uint32_t a, uint32_t b, uint32_t acc) {
  return acc + (uint32_t)(lo16(a) * lo16(b)) + (uint32_t)(hi16(a) * hi16(b));
}
#endif

static inline uint32_t ld32(const void* p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint32_t ld16(const void* p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline void st32(void* p, uint32_t v) { memcpy(p, &v, 4); }

/* x - input_zp widened to int16, quads below in_full permuted to (x0, x2, x1, x3) if g >= 4. */
static void dsp_widen(const tfs_gsfc_layer* L, const int8_t* x, int16_t* xs, int32_t batch) {
  const uint32_t zp2 = pack16(L->in_zp, L->in_zp);
  const int32_t in = L->in, quads_end = L->g >= 4 ? L->in_full : 0;
  for (int32_t b = 0; b < batch; ++b) {
    const int8_t* xb = x + (size_t)b * in;
    int16_t* sb = xs + (size_t)b * in;
    int32_t i = 0;
    for (; i < quads_end; i += 4) {
      const uint32_t v = ld32(xb + i);
      st32(sb + i, dsp_ssub16(dsp_sxtb16(v), zp2));           /* (x0, x2) */
      st32(sb + i + 2, dsp_ssub16(dsp_sxtb16_ror8(v), zp2));  /* (x1, x3) */
    }
    for (; i < in; ++i) sb[i] = (int16_t)(xb[i] - L->in_zp);
  }
}

/* The hot loops exist once per col_idx width (uint8 / uint16; FORMAT.md version 2 stores the
 * group index, so the input of group k starts at xs + col[k] * g): the width is chosen once per
 * layer, never per group. On Cortex-M4 `ldrb` + `add rX, xs, idx, lsl #3` (g = 4) costs what
 * `ldrh` + `add rX, xs, col, lsl #1` did in version 1. */
#define TFS_DEFINE_DSP_I8(SUF, IT)                                                                \
  /* Sum over n full groups of `quads` permuted quads each (g = 4 * quads), starting from acc. */ \
  static inline uint32_t dsp_dot_quads_##SUF(const int16_t* xs, const IT* col, const int8_t* w,   \
                                             int32_t n, int quads, uint32_t acc) {                 \
    for (int32_t k = 0; k < n; ++k) {                                                              \
      const int16_t* xp = xs + (size_t)col[k] * 4 * (size_t)quads;                                 \
      const int8_t* wk = w + (size_t)k * 4 * (size_t)quads;                                        \
      for (int q = 0; q < quads; ++q) {                                                            \
        const uint32_t wv = ld32(wk + 4 * q);                                                      \
        acc = dsp_smlad(dsp_sxtb16(wv), ld32(xp + 4 * q), acc);                                    \
        acc = dsp_smlad(dsp_sxtb16_ror8(wv), ld32(xp + 4 * q + 2), acc);                           \
      }                                                                                            \
    }                                                                                              \
    return acc;                                                                                    \
  }                                                                                                \
  static inline uint32_t dsp_dot_g2_##SUF(const int16_t* xs, const IT* col, const int8_t* w,      \
                                          int32_t n, uint32_t acc) {                               \
    for (int32_t k = 0; k < n; ++k) {                                                              \
      const uint32_t h = ld16(w + 2 * k);                                                          \
      acc = dsp_smlad(dsp_sxtb16(h | (h << 8)), ld32(xs + 2 * (size_t)col[k]), acc);              \
    }                                                                                              \
    return acc;                                                                                    \
  }                                                                                                \
  static inline uint32_t dsp_dot_g1_##SUF(const int16_t* xs, const IT* col, const int8_t* w,      \
                                          int32_t n, uint32_t acc) {                               \
    for (int32_t k = 0; k < n; ++k) acc += (uint32_t)((int32_t)w[k] * xs[col[k]]);                 \
    return acc;                                                                                    \
  }                                                                                                \
  /* noinline: inlined into tfs_gsfc_compute, the uint8 loop ran out of registers (a spilled  \
   * loop bound, +2 cycles per group on Cortex-M4). */                                            \
  __attribute__((noinline)) static void dsp_i8_##SUF(const tfs_gsfc_layer* L, const int16_t* xs,  \
                                                     int8_t* y, int32_t batch) {                  \
    const int8_t* vals = (const int8_t*)L->values;                                                 \
    const int32_t* bias = (const int32_t*)L->bias;                                                 \
    const IT* cols = (const IT*)L->col_idx;                                                        \
    const int32_t g = L->g, in = L->in;                                                            \
    /* A row's last group is ragged iff in % g != 0 and it is the last group of the row. */       \
    const int32_t last_group = L->in_full != in ? L->in_full / g : -1;                             \
    for (int32_t b = 0; b < batch; ++b) {                                                          \
      const int16_t* xb = xs + (size_t)b * in;                                                     \
      int8_t* yb = y + (size_t)b * L->out;                                                         \
      for (int32_t r = 0; r < L->out; ++r) {                                                       \
        const int32_t k0 = L->row_ptr[r], k1 = L->row_ptr[r + 1];                                  \
        const int32_t kf = (k1 > k0 && (int32_t)cols[k1 - 1] == last_group) ? k1 - 1 : k1;         \
        const IT* col = cols + k0;                                                                 \
        const int8_t* w = vals + (size_t)k0 * g;                                                   \
        uint32_t acc = (uint32_t)bias[r];                                                          \
        switch (g) {                                                                               \
          case 1: acc = dsp_dot_g1_##SUF(xb, col, w, kf - k0, acc); break;                         \
          case 2: acc = dsp_dot_g2_##SUF(xb, col, w, kf - k0, acc); break;                         \
          case 4: acc = dsp_dot_quads_##SUF(xb, col, w, kf - k0, 1, acc); break;                   \
          case 8: acc = dsp_dot_quads_##SUF(xb, col, w, kf - k0, 2, acc); break;                   \
          default: acc = dsp_dot_quads_##SUF(xb, col, w, kf - k0, 4, acc); break;                  \
        }                                                                                          \
        if (kf != k1) acc += (uint32_t)tail_i8(L, xb, kf);                                         \
        yb[r] = requant_one(L, r, (int32_t)acc);                                                   \
      }                                                                                            \
    }                                                                                              \
  }

/* (Unrolling these loops by two groups measured slower on the emulated Cortex-M4: the extra
 * live registers spill around every row, and rows hold ~15 groups at 92 % sparsity.) */
TFS_DEFINE_DSP_I8(u8, uint8_t)
TFS_DEFINE_DSP_I8(u16, uint16_t)

static void dsp_i8(const tfs_gsfc_layer* L, const int16_t* xs, int8_t* y, int32_t batch) {
  if (L->col_bytes == 1) dsp_i8_u8(L, xs, y, batch);
  else dsp_i8_u16(L, xs, y, batch);
}

/* ------------------------------------------------------------------------------------------ */
/* AVX2 + FMA                                                                                 */
/* ------------------------------------------------------------------------------------------ */
#if TFS_X86
#define TFS_AVX2 __attribute__((target("avx2,fma")))

/* Sums of eight vectors, one per lane, in order: result[i] = sum(v[i]). */
TFS_AVX2 static inline __m256 hsum8_ps(const __m256* v) {
  const __m256 s01 = _mm256_hadd_ps(v[0], v[1]), s23 = _mm256_hadd_ps(v[2], v[3]);
  const __m256 s45 = _mm256_hadd_ps(v[4], v[5]), s67 = _mm256_hadd_ps(v[6], v[7]);
  const __m256 a = _mm256_hadd_ps(s01, s23), b = _mm256_hadd_ps(s45, s67);
  return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
}

TFS_AVX2 static inline __m256i hsum8_epi32(const __m256i* v) {
  const __m256i s01 = _mm256_hadd_epi32(v[0], v[1]), s23 = _mm256_hadd_epi32(v[2], v[3]);
  const __m256i s45 = _mm256_hadd_epi32(v[4], v[5]), s67 = _mm256_hadd_epi32(v[6], v[7]);
  const __m256i a = _mm256_hadd_epi32(s01, s23), b = _mm256_hadd_epi32(s45, s67);
  return _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20),
                          _mm256_permute2x128_si256(a, b, 0x31));
}

TFS_AVX2 static inline __m256 act_f32_v(__m256 v, int act) {
  if (act == TFS_ACT_NONE) return v;
  v = _mm256_max_ps(v, _mm256_setzero_ps());
  if (act == TFS_ACT_RELU6) v = _mm256_min_ps(v, _mm256_set1_ps(6.0f));
  return v;
}

/* --- Packed layout for the SIMD paths -------------------------------------------------------
 * Rows with a random number of groups make a row-at-a-time loop mispredict its exit and
 * remainder branches on nearly every row, which costs more than the arithmetic at 90 %+
 * sparsity. So the SIMD kernels run on a packed copy (tfs_gsfc_pack): rows sorted by their
 * number of full groups (descending) and cut into blocks of 8 "slots"; within a block, step t
 * holds group t of each of the 8 rows side by side (zero-weight padding where a row is shorter;
 * sorting keeps the padding to a few %). A block is then one loop with a fixed trip count and
 * 8 independent accumulator chains; the only data-dependent branch is the block's loop exit.
 * Ragged tail groups stay in the original layout and are added per slot in scalar code.
 * ------------------------------------------------------------------------------------------ */

TFS_AVX2 static inline __m256 perm_ps(__m256 v, int a, int b, int c, int d, int e, int f, int g, int h) {
  return _mm256_permutevar8x32_ps(v, _mm256_setr_epi32(a, b, c, d, e, f, g, h));
}
TFS_AVX2 static inline __m256i perm_epi32(__m256i v, int a, int b, int c, int d, int e, int f, int g, int h) {
  return _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(a, b, c, d, e, f, g, h));
}
TFS_AVX2 static inline __m256i load_cols8(const uint16_t* col) {
  return _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(const void*)col));
}
TFS_AVX2 static inline __m256 load2x4_ps(const float* p, const float* q) {
  return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(p)), _mm_loadu_ps(q), 1);
}
TFS_AVX2 static inline __m128i load_i16x4(const int16_t* p) {
  return _mm_loadl_epi64((const __m128i*)(const void*)p);
}
TFS_AVX2 static inline __m128i load_i16x8(const int16_t* p) {
  return _mm_loadu_si128((const __m128i*)(const void*)p);
}

/* Four 16-bit column numbers from one 64-bit load. The g = 4 kernels are bound by instruction
 * dispatch on AMD cores (whose gathers are slow): one load and shifts issue fewer uops than four
 * 16-bit loads (10-25 % faster at 90 % sparsity on Zen 3). */
static inline uint64_t load_cols4(const uint16_t* col) {
  uint64_t v;
  memcpy(&v, col, 8);
  return v;
}
#define TFS_COL(v, i) ((size_t)(((v) >> (16 * (i))) & 0xFFFF))

/* The per-slot loops inside the step loops must be unrolled: rolled, GCC -O2 keeps the
 * accumulator array a[] on the stack and every group pays a store and a reload (g = 16 int8 ran
 * at half speed). */
#define TFS_UNROLL _Pragma("GCC unroll 8")

/* Each blk_* returns the 8 slots' dot products over the block's steps, lane i = slot i. */

TFS_AVX2 static inline __m256 blk_f32_g1(const float* x, const uint16_t* col, const float* w, int32_t steps) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int32_t t = 0;
  for (; t + 2 <= steps; t += 2) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + 8 * t), _mm256_i32gather_ps(x, load_cols8(col + 8 * t), 4), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + 8 * t + 8), _mm256_i32gather_ps(x, load_cols8(col + 8 * t + 8), 4), a1);
  }
  if (t < steps)
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + 8 * t), _mm256_i32gather_ps(x, load_cols8(col + 8 * t), 4), a0);
  return _mm256_add_ps(a0, a1);
}

TFS_AVX2 static inline __m256 blk_f32_g2(const float* x, const uint16_t* col, const float* w, int32_t steps) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  const long long* xq = (const long long*)(const void*)x; /* (x[c], x[c+1]) as one 64-bit lane */
  for (int32_t t = 0; t < steps; ++t) {
    const __m256i c = load_cols8(col + 8 * t);
    const __m256 xl = _mm256_castsi256_ps(_mm256_i32gather_epi64(xq, _mm256_castsi256_si128(c), 4));
    const __m256 xh = _mm256_castsi256_ps(_mm256_i32gather_epi64(xq, _mm256_extracti128_si256(c, 1), 4));
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + 16 * t), xl, a0);      /* slots 0-3, 2 lanes each */
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + 16 * t + 8), xh, a1);  /* slots 4-7 */
  }
  /* hadd -> [s0 s1 s4 s5 | s2 s3 s6 s7] */
  return perm_ps(_mm256_hadd_ps(a0, a1), 0, 1, 4, 5, 2, 3, 6, 7);
}

TFS_AVX2 static inline __m256 blk_f32_g4(const float* x, const uint16_t* col, const float* w, int32_t steps) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  for (int32_t t = 0; t < steps; ++t) {
    const uint64_t c0 = load_cols4(col + 8 * t), c1 = load_cols4(col + 8 * t + 4);
    const float* wt = w + 32 * t;
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(wt), load2x4_ps(x + TFS_COL(c0, 0), x + TFS_COL(c0, 1)), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(wt + 8), load2x4_ps(x + TFS_COL(c0, 2), x + TFS_COL(c0, 3)), a1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(wt + 16), load2x4_ps(x + TFS_COL(c1, 0), x + TFS_COL(c1, 1)), a2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(wt + 24), load2x4_ps(x + TFS_COL(c1, 2), x + TFS_COL(c1, 3)), a3);
  }
  /* a_j = [slot 2j x4 | slot 2j+1 x4]; two hadd levels -> [s0 s2 s4 s6 | s1 s3 s5 s7] */
  const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
  return perm_ps(h, 0, 4, 1, 5, 2, 6, 3, 7);
}

TFS_AVX2 static inline __m256 blk_f32_g8(const float* x, const uint16_t* col, const float* w, int32_t steps) {
  __m256 a[8];
  for (int i = 0; i < 8; ++i) a[i] = _mm256_setzero_ps();
  for (int32_t t = 0; t < steps; ++t) {
    const uint16_t* c = col + 8 * t;
    const float* wt = w + 64 * t;
    TFS_UNROLL
    for (int i = 0; i < 8; ++i) a[i] = _mm256_fmadd_ps(_mm256_loadu_ps(wt + 8 * i), _mm256_loadu_ps(x + c[i]), a[i]);
  }
  return hsum8_ps(a);
}

TFS_AVX2 static inline __m256 blk_f32_g16(const float* x, const uint16_t* col, const float* w, int32_t steps) {
  __m256 a[8];
  for (int i = 0; i < 8; ++i) a[i] = _mm256_setzero_ps();
  for (int32_t t = 0; t < steps; ++t) {
    const uint16_t* c = col + 8 * t;
    const float* wt = w + 128 * t;
    TFS_UNROLL
    for (int i = 0; i < 8; ++i) {
      a[i] = _mm256_fmadd_ps(_mm256_loadu_ps(wt + 16 * i), _mm256_loadu_ps(x + c[i]), a[i]);
      a[i] = _mm256_fmadd_ps(_mm256_loadu_ps(wt + 16 * i + 8), _mm256_loadu_ps(x + c[i] + 8), a[i]);
    }
  }
  return hsum8_ps(a);
}

/* int8 over xs = int16 (x - input_zp). madd_epi16 cannot overflow: |w| <= 128, |xs| <= 255. */

TFS_AVX2 static inline __m256i blk_i8_g1(const int16_t* xs, const uint16_t* col, const int8_t* w, int32_t steps) {
  /* 32-bit gathers at xs + c give (xs[c], xs[c+1]) (the workspace has slack past the end);
   * weights become (w, 0) pairs so madd yields exactly xs[c] * w. */
  const int* xi = (const int*)(const void*)xs;
  const __m256i lo16 = _mm256_set1_epi32(0xFFFF);
  __m256i a0 = _mm256_setzero_si256();
  for (int32_t t = 0; t < steps; ++t) {
    const __m256i xv = _mm256_i32gather_epi32(xi, load_cols8(col + 8 * t), 2);
    const __m256i wv = _mm256_and_si256(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(const void*)(w + 8 * t))), lo16);
    a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(xv, wv));
  }
  return a0;
}

TFS_AVX2 static inline __m256i blk_i8_g2(const int16_t* xs, const uint16_t* col, const int8_t* w, int32_t steps) {
  const int* xi = (const int*)(const void*)xs;
  __m256i a0 = _mm256_setzero_si256();
  for (int32_t t = 0; t < steps; ++t) {
    const __m256i xv = _mm256_i32gather_epi32(xi, load_cols8(col + 8 * t), 2);
    const __m256i wv = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(const void*)(w + 16 * t)));
    a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(xv, wv));
  }
  return a0;
}

TFS_AVX2 static inline __m256i blk_i8_g4(const int16_t* xs, const uint16_t* col, const int8_t* w, int32_t steps) {
  __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
  for (int32_t t = 0; t < steps; ++t) {
    const uint64_t c0 = load_cols4(col + 8 * t), c1 = load_cols4(col + 8 * t + 4);
    const int8_t* wt = w + 32 * t;
    const __m128i p01 = _mm_unpacklo_epi64(load_i16x4(xs + TFS_COL(c0, 0)), load_i16x4(xs + TFS_COL(c0, 1)));
    const __m128i p23 = _mm_unpacklo_epi64(load_i16x4(xs + TFS_COL(c0, 2)), load_i16x4(xs + TFS_COL(c0, 3)));
    const __m128i p45 = _mm_unpacklo_epi64(load_i16x4(xs + TFS_COL(c1, 0)), load_i16x4(xs + TFS_COL(c1, 1)));
    const __m128i p67 = _mm_unpacklo_epi64(load_i16x4(xs + TFS_COL(c1, 2)), load_i16x4(xs + TFS_COL(c1, 3)));
    a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_inserti128_si256(_mm256_castsi128_si256(p01), p23, 1),
                                                _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(const void*)wt))));
    a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_inserti128_si256(_mm256_castsi128_si256(p45), p67, 1),
                                                _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(const void*)(wt + 16)))));
  }
  /* a0 = [s0 s0 s1 s1 | s2 s2 s3 s3], a1 likewise for 4-7; hadd -> [s0 s1 s4 s5 | s2 s3 s6 s7] */
  return perm_epi32(_mm256_hadd_epi32(a0, a1), 0, 1, 4, 5, 2, 3, 6, 7);
}

TFS_AVX2 static inline __m256i blk_i8_g8(const int16_t* xs, const uint16_t* col, const int8_t* w, int32_t steps) {
  __m256i a[4];
  for (int j = 0; j < 4; ++j) a[j] = _mm256_setzero_si256();
  for (int32_t t = 0; t < steps; ++t) {
    const uint16_t* c = col + 8 * t;
    const int8_t* wt = w + 64 * t;
    TFS_UNROLL
    for (int j = 0; j < 4; ++j) {
      const __m256i xv = _mm256_inserti128_si256(_mm256_castsi128_si256(load_i16x8(xs + c[2 * j])),
                                                 load_i16x8(xs + c[2 * j + 1]), 1);
      a[j] = _mm256_add_epi32(a[j], _mm256_madd_epi16(xv, _mm256_cvtepi8_epi16(
                                        _mm_loadu_si128((const __m128i*)(const void*)(wt + 16 * j)))));
    }
  }
  /* a_j = [slot 2j x4 | slot 2j+1 x4] -> [s0 s2 s4 s6 | s1 s3 s5 s7] */
  const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(a[0], a[1]), _mm256_hadd_epi32(a[2], a[3]));
  return perm_epi32(h, 0, 4, 1, 5, 2, 6, 3, 7);
}

TFS_AVX2 static inline __m256i blk_i8_g16(const int16_t* xs, const uint16_t* col, const int8_t* w, int32_t steps) {
  __m256i a[8];
  for (int i = 0; i < 8; ++i) a[i] = _mm256_setzero_si256();
  for (int32_t t = 0; t < steps; ++t) {
    const uint16_t* c = col + 8 * t;
    const int8_t* wt = w + 128 * t;
    TFS_UNROLL
    for (int i = 0; i < 8; ++i)
      a[i] = _mm256_add_epi32(a[i], _mm256_madd_epi16(_mm256_loadu_si256((const __m256i*)(const void*)(xs + c[i])),
                                                      _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(const void*)(wt + 16 * i)))));
  }
  return hsum8_epi32(a);
}

TFS_AVX2 static inline void finish_f32(const tfs_gsfc_layer* L, const tfs_gsfc_packed* P, int32_t b,
                                       __m256 s, const float* xb, float* yb) {
  const int32_t* perm = P->perm + 8 * b;
  if (L->in_full != L->in) {
    float t[8];
    for (int i = 0; i < 8; ++i) {
      const int32_t k = P->tail[8 * b + i];
      t[i] = k >= 0 ? tail_f32(L, xb, k) : 0.0f;
    }
    s = _mm256_add_ps(s, _mm256_loadu_ps(t));
  }
  s = _mm256_add_ps(s, _mm256_loadu_ps((const float*)P->bias + 8 * b));
  float o[8];
  _mm256_storeu_ps(o, act_f32_v(s, L->activation));
  for (int i = 0; i < 8; ++i)
    if (perm[i] >= 0) yb[perm[i]] = o[i];
}

TFS_AVX2 static inline void finish_i8(const tfs_gsfc_layer* L, const tfs_gsfc_packed* P, int32_t b,
                                      __m256i s, const int16_t* xb, int8_t* yb) {
  const int32_t* perm = P->perm + 8 * b;
  if (L->in_full != L->in) {
    int32_t t[8];
    for (int i = 0; i < 8; ++i) {
      const int32_t k = P->tail[8 * b + i];
      t[i] = k >= 0 ? tail_i8(L, xb, k) : 0;
    }
    s = _mm256_add_epi32(s, _mm256_loadu_si256((const __m256i*)(const void*)t));
  }
  s = _mm256_add_epi32(s, _mm256_loadu_si256((const __m256i*)(const void*)((const int32_t*)P->bias + 8 * b)));
  int32_t o[8];
  if (L->requant == TFS_REQUANT_FP32) {
    /* XNNPACK's fp32 requantization, 8 rows at once. */
    __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(s), _mm256_loadu_ps(P->scale + 8 * b));
    f = _mm256_max_ps(f, _mm256_set1_ps((float)(L->act_min - L->out_zp)));
    f = _mm256_min_ps(f, _mm256_set1_ps((float)(L->act_max - L->out_zp)));
    f = _mm256_round_ps(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm256_storeu_si256((__m256i*)(void*)o, _mm256_add_epi32(_mm256_cvtps_epi32(f), _mm256_set1_epi32(L->out_zp)));
  } else {
    _mm256_storeu_si256((__m256i*)(void*)o, s);
    for (int i = 0; i < 8; ++i) o[i] = perm[i] >= 0 ? requant_one(L, perm[i], o[i]) : 0;
  }
  for (int i = 0; i < 8; ++i)
    if (perm[i] >= 0) yb[perm[i]] = (int8_t)o[i];
}

/* Block loop outside, batch loop inside: a block's packed weights stay in L1 across the batch. */
#define TFS_DEFINE_F32_DRIVER(NAME, BLK, TARGET)                                                \
  TARGET static void NAME(const tfs_gsfc_layer* L, const tfs_gsfc_packed* P, const float* x,     \
                          float* y, int32_t batch) {                                             \
    const float* wbase = (const float*)P->w;                                                     \
    for (int32_t b = 0; b < P->n_blocks; ++b) {                                                  \
      const int64_t e0 = P->blk_off[b];                                                          \
      const int32_t steps = (int32_t)((P->blk_off[b + 1] - e0) / 8);                             \
      for (int32_t bi = 0; bi < batch; ++bi) {                                                   \
        const float* xb = x + (size_t)bi * L->in;                                                \
        finish_f32(L, P, b, BLK(xb, P->col + e0, wbase + e0 * L->g, steps), xb,                  \
                   y + (size_t)bi * L->out);                                                     \
      }                                                                                          \
    }                                                                                            \
  }

#define TFS_DEFINE_I8_DRIVER(NAME, BLK, TARGET)                                                 \
  TARGET static void NAME(const tfs_gsfc_layer* L, const tfs_gsfc_packed* P, const int16_t* xs,  \
                          int8_t* y, int32_t batch) {                                            \
    const int8_t* wbase = (const int8_t*)P->w;                                                   \
    for (int32_t b = 0; b < P->n_blocks; ++b) {                                                  \
      const int64_t e0 = P->blk_off[b];                                                          \
      const int32_t steps = (int32_t)((P->blk_off[b + 1] - e0) / 8);                             \
      for (int32_t bi = 0; bi < batch; ++bi) {                                                   \
        const int16_t* xb = xs + (size_t)bi * L->in;                                             \
        finish_i8(L, P, b, BLK(xb, P->col + e0, wbase + e0 * L->g, steps), xb,                   \
                  y + (size_t)bi * L->out);                                                      \
      }                                                                                          \
    }                                                                                            \
  }

TFS_DEFINE_F32_DRIVER(avx2_f32_g1, blk_f32_g1, TFS_AVX2)
TFS_DEFINE_F32_DRIVER(avx2_f32_g2, blk_f32_g2, TFS_AVX2)
TFS_DEFINE_F32_DRIVER(avx2_f32_g4, blk_f32_g4, TFS_AVX2)
TFS_DEFINE_F32_DRIVER(avx2_f32_g8, blk_f32_g8, TFS_AVX2)
TFS_DEFINE_F32_DRIVER(avx2_f32_g16, blk_f32_g16, TFS_AVX2)
TFS_DEFINE_I8_DRIVER(avx2_i8_g1, blk_i8_g1, TFS_AVX2)
TFS_DEFINE_I8_DRIVER(avx2_i8_g2, blk_i8_g2, TFS_AVX2)
TFS_DEFINE_I8_DRIVER(avx2_i8_g4, blk_i8_g4, TFS_AVX2)
TFS_DEFINE_I8_DRIVER(avx2_i8_g8, blk_i8_g8, TFS_AVX2)
TFS_DEFINE_I8_DRIVER(avx2_i8_g16, blk_i8_g16, TFS_AVX2)

TFS_AVX2 static void avx2_widen(const tfs_gsfc_layer* L, const int8_t* x, int16_t* xs, size_t n) {
  const __m256i zp = _mm256_set1_epi16((int16_t)L->in_zp);
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256((__m256i*)(void*)(xs + i),
                        _mm256_sub_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(const void*)(x + i))), zp));
  widen_input(L, x + i, xs + i, n - i);
}

/* ------------------------------------------------------------------------------------------ */
/* AVX-512 (F + BW): float32 g = 8, 16 and int8 g = 16 get 512-bit block kernels (two slots or
 * one slot per register); every other case runs the AVX2 kernels, whose slots already fill a
 * 256-bit register. Not exercised on the development machine (no AVX-512): see the tests. */
/* ------------------------------------------------------------------------------------------ */
#define TFS_AVX512 __attribute__((target("avx512f,avx512bw,avx2,fma")))

TFS_AVX512 static inline __m256 lo256_ps(__m512 v) { return _mm512_castps512_ps256(v); }
TFS_AVX512 static inline __m256 hi256_ps(__m512 v) {
  return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
}
TFS_AVX512 static inline __m512 load2x8_ps(const float* p, const float* q) {
  return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(_mm256_loadu_ps(p))),
                                             _mm256_castps_pd(_mm256_loadu_ps(q)), 1));
}

TFS_AVX512 static inline __m256 blk_f32_g8_512(const float* x, const uint16_t* col, const float* w, int32_t steps) {
  __m512 a[4];
  for (int j = 0; j < 4; ++j) a[j] = _mm512_setzero_ps();
  for (int32_t t = 0; t < steps; ++t) {
    const uint16_t* c = col + 8 * t;
    const float* wt = w + 64 * t;
    TFS_UNROLL
    for (int j = 0; j < 4; ++j)
      a[j] = _mm512_fmadd_ps(_mm512_loadu_ps(wt + 16 * j), load2x8_ps(x + c[2 * j], x + c[2 * j + 1]), a[j]);
  }
  __m256 v[8];
  for (int j = 0; j < 4; ++j) { v[2 * j] = lo256_ps(a[j]); v[2 * j + 1] = hi256_ps(a[j]); }
  return hsum8_ps(v);
}

TFS_AVX512 static inline __m256 blk_f32_g16_512(const float* x, const uint16_t* col, const float* w, int32_t steps) {
  __m512 a[8];
  for (int i = 0; i < 8; ++i) a[i] = _mm512_setzero_ps();
  for (int32_t t = 0; t < steps; ++t) {
    const uint16_t* c = col + 8 * t;
    const float* wt = w + 128 * t;
    TFS_UNROLL
    for (int i = 0; i < 8; ++i) a[i] = _mm512_fmadd_ps(_mm512_loadu_ps(wt + 16 * i), _mm512_loadu_ps(x + c[i]), a[i]);
  }
  __m256 v[8];
  for (int i = 0; i < 8; ++i) v[i] = _mm256_add_ps(lo256_ps(a[i]), hi256_ps(a[i]));
  return hsum8_ps(v);
}

TFS_AVX512 static inline __m256i blk_i8_g16_512(const int16_t* xs, const uint16_t* col, const int8_t* w, int32_t steps) {
  __m512i a[4];
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
  for (int j = 0; j < 4; ++j) {
    v[2 * j] = _mm512_castsi512_si256(a[j]);
    v[2 * j + 1] = _mm512_extracti64x4_epi64(a[j], 1);
  }
  return hsum8_epi32(v);
}

TFS_DEFINE_F32_DRIVER(avx512_f32_g8, blk_f32_g8_512, TFS_AVX512)
TFS_DEFINE_F32_DRIVER(avx512_f32_g16, blk_f32_g16_512, TFS_AVX512)
TFS_DEFINE_I8_DRIVER(avx512_i8_g16, blk_i8_g16_512, TFS_AVX512)

static int cpu_has_avx2(void) {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
static int cpu_has_avx512(void) {
  return cpu_has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
}
#else
static int cpu_has_avx2(void) { return 0; }
static int cpu_has_avx512(void) { return 0; }
#endif /* TFS_X86 */

/* ------------------------------------------------------------------------------------------ */
/* Dispatch                                                                                   */
/* ------------------------------------------------------------------------------------------ */

int tfs_gsfc_impl_available(int impl) {
  switch (impl) {
    case TFS_IMPL_AUTO: case TFS_IMPL_PORTABLE: case TFS_IMPL_ARM_DSP: return 1;
    case TFS_IMPL_AVX2: return cpu_has_avx2();
    case TFS_IMPL_AVX512: return cpu_has_avx512();
    default: return 0;
  }
}

int tfs_gsfc_best_impl(void) {
  if (cpu_has_avx512()) return TFS_IMPL_AVX512;
  if (cpu_has_avx2()) return TFS_IMPL_AVX2;
  return TFS_IMPL_PORTABLE;
}

int tfs_gsfc_compute(const tfs_gsfc_layer* L, const tfs_gsfc_packed* P, const void* x, void* y,
                     int32_t batch, void* workspace, int impl) {
  if (impl == TFS_IMPL_AUTO) {
    if (TFS_ARM_DSP_NATIVE && L->dtype == TFS_DTYPE_I8) impl = TFS_IMPL_ARM_DSP;
    else impl = P != NULL ? tfs_gsfc_best_impl() : TFS_IMPL_PORTABLE;
  }
  if (!tfs_gsfc_impl_available(impl)) return TFS_ERR_UNSUPPORTED;
  if ((impl == TFS_IMPL_AVX2 || impl == TFS_IMPL_AVX512) && P == NULL)
    return TFS_ERR_INVALID; /* the x86 SIMD paths need the packing */
  if (batch <= 0) return TFS_OK;
  if (L->dtype == TFS_DTYPE_F32) {
    const float* xf = (const float*)x;
    float* yf = (float*)y;
#if TFS_X86
    if (impl == TFS_IMPL_AVX512 && L->g == 8) { avx512_f32_g8(L, P, xf, yf, batch); return TFS_OK; }
    if (impl == TFS_IMPL_AVX512 && L->g == 16) { avx512_f32_g16(L, P, xf, yf, batch); return TFS_OK; }
    if (impl == TFS_IMPL_AVX2 || impl == TFS_IMPL_AVX512) {
      switch (L->g) {
        case 1: avx2_f32_g1(L, P, xf, yf, batch); return TFS_OK;
        case 2: avx2_f32_g2(L, P, xf, yf, batch); return TFS_OK;
        case 4: avx2_f32_g4(L, P, xf, yf, batch); return TFS_OK;
        case 8: avx2_f32_g8(L, P, xf, yf, batch); return TFS_OK;
        default: avx2_f32_g16(L, P, xf, yf, batch); return TFS_OK;
      }
    }
#endif
    ref_f32(L, xf, yf, batch);
    return TFS_OK;
  }
  /* int8: the workspace holds x - input_zp widened to int16, plus zeroed slack. */
  int16_t* xs = (int16_t*)workspace;
  const size_t n = (size_t)batch * (size_t)L->in;
  memset(xs + n, 0, 32);
  const int8_t* xi = (const int8_t*)x;
  int8_t* yi = (int8_t*)y;
  if (impl == TFS_IMPL_ARM_DSP) {
    dsp_widen(L, xi, xs, batch);
    dsp_i8(L, xs, yi, batch);
    return TFS_OK;
  }
#if TFS_X86
  if (impl == TFS_IMPL_AVX2 || impl == TFS_IMPL_AVX512) {
    avx2_widen(L, xi, xs, n);
    if (impl == TFS_IMPL_AVX512 && L->g == 16) { avx512_i8_g16(L, P, xs, yi, batch); return TFS_OK; }
    switch (L->g) {
      case 1: avx2_i8_g1(L, P, xs, yi, batch); return TFS_OK;
      case 2: avx2_i8_g2(L, P, xs, yi, batch); return TFS_OK;
      case 4: avx2_i8_g4(L, P, xs, yi, batch); return TFS_OK;
      case 8: avx2_i8_g8(L, P, xs, yi, batch); return TFS_OK;
      default: avx2_i8_g16(L, P, xs, yi, batch); return TFS_OK;
    }
  }
#endif
  widen_input(L, xi, xs, n);
  ref_i8(L, xs, yi, batch);
  return TFS_OK;
}
