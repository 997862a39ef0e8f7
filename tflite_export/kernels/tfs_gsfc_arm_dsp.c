/* TFS_GROUP_SPARSE_FC: the Cortex-M DSP-extension int8 kernel (SMLAD + SXTB16). */
#include <string.h>

#include "tfs_gsfc_internal.h"

/* Runs directly on the model's group-CSR: on a microcontroller the weights stay in flash and
 * there is no RAM for a packed copy (Cortex-M4 has no cache and no branch predictor worth
 * sorting rows for). The workspace holds x - input_zp as int16, and for g >= 4 every aligned
 * quad below in_full is stored permuted as (x0, x2, x1, x3): one 32-bit weight load
 * w = (w0 w1 w2 w3) gives SXTB16(w) = (w0, w2) and SXTB16(w ror 8) = (w1, w3), which meet the
 * two 32-bit input loads (x0, x2) and (x1, x3) in two SMLADs - 4 MACs with no repacking. The
 * widening itself is the same trick on the input bytes (SXTB16, SXTB16 ror 8, SSUB16 by the
 * zero point). g = 2: a 16-bit weight load h = (w0 w1); SXTB16(h | h << 8) = (w0, w1) against
 * the natural pair (x0, x1), so g = 2 layers widen without permuting. g = 1: scalar MACs.
 * Ragged tail groups (at columns >= in_full, never permuted) reuse tfs_gsfc_tail_i16.
 * Accumulation wraps modulo 2^32 like the portable kernel (SMLAD wraps; it only sets Q).
 *
 * Off Arm (or on an Arm core without DSP) the four intrinsics are emulated in C, so the same
 * algorithm is tested bit-exact on the host; TFS_IMPL_AUTO only picks it where it is native. */
static inline uint32_t pack16(int32_t lo, int32_t hi) {
  return ((uint32_t)lo & 0xFFFFu) | (((uint32_t)hi & 0xFFFFu) << 16);
}
#if TFS_ARM_DSP_NATIVE
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
  /* The same over two inputs at once (xa and xb = xa + in: two batch rows, or two output       \
   * positions of a conv tile): each weight quad is loaded and sign-extended once for both, as   \
   * CMSIS-NN's convolution pairs two output columns; the column index is shared too. */        \
  static inline void dsp_dot2_quads_##SUF(const int16_t* xa, int32_t in, const IT* col,            \
                                          const int8_t* w, int32_t n, int quads, uint32_t* a0,     \
                                          uint32_t* a1) {                                          \
    uint32_t s0 = *a0, s1 = *a1;                                                                   \
    for (int32_t k = 0; k < n; ++k) {                                                              \
      const int16_t* xp = xa + (size_t)col[k] * 4 * (size_t)quads;                                 \
      const int8_t* wk = w + (size_t)k * 4 * (size_t)quads;                                        \
      for (int q = 0; q < quads; ++q) {                                                            \
        const uint32_t wv = ld32(wk + 4 * q);                                                      \
        const uint32_t lo = dsp_sxtb16(wv), hi = dsp_sxtb16_ror8(wv);                              \
        s0 = dsp_smlad(lo, ld32(xp + 4 * q), s0);                                                  \
        s0 = dsp_smlad(hi, ld32(xp + 4 * q + 2), s0);                                              \
        s1 = dsp_smlad(lo, ld32(xp + in + 4 * q), s1);                                             \
        s1 = dsp_smlad(hi, ld32(xp + in + 4 * q + 2), s1);                                         \
      }                                                                                            \
    }                                                                                              \
    *a0 = s0;                                                                                      \
    *a1 = s1;                                                                                      \
  }                                                                                                \
  static inline void dsp_dot2_g2_##SUF(const int16_t* xa, int32_t in, const IT* col,               \
                                       const int8_t* w, int32_t n, uint32_t* a0, uint32_t* a1) {   \
    uint32_t s0 = *a0, s1 = *a1;                                                                   \
    for (int32_t k = 0; k < n; ++k) {                                                              \
      const uint32_t h = ld16(w + 2 * k), wv = dsp_sxtb16(h | (h << 8));                           \
      const int16_t* xp = xa + 2 * (size_t)col[k];                                                 \
      s0 = dsp_smlad(wv, ld32(xp), s0);                                                            \
      s1 = dsp_smlad(wv, ld32(xp + in), s1);                                                       \
    }                                                                                              \
    *a0 = s0;                                                                                      \
    *a1 = s1;                                                                                      \
  }                                                                                                \
  /* noinline: inlined into its caller, the uint8 loop ran out of registers (a spilled  \
   * loop bound, +2 cycles per group on Cortex-M4). */                                            \
  __attribute__((noinline)) static void dsp_i8_##SUF(const tfs_gsfc_layer* L, const int16_t* xs,  \
                                                     int8_t* y, int32_t batch) {                  \
    const int8_t* vals = (const int8_t*)L->values;                                                 \
    const int32_t* bias = (const int32_t*)L->bias;                                                 \
    const IT* cols = (const IT*)L->col_idx;                                                        \
    const int32_t g = L->g, in = L->in;                                                            \
    /* A row's last group is ragged iff in % g != 0 and it is the last group of the row. */       \
    const int32_t last_group = L->in_full != in ? L->in_full / g : -1;                             \
    /* A row without stored groups (a dead filter or neuron) gives requant(bias) for every input: \
     * computed once per call, not once per input (a conv tile has many). */                      \
    for (int32_t r = 0; r < L->out; ++r) {                                                         \
      if (L->row_ptr[r] != L->row_ptr[r + 1]) continue;                                            \
      const int8_t v = tfs_gsfc_requant(L, r, bias[r]);                                            \
      for (int32_t b = 0; b < batch; ++b) y[(size_t)b * L->out + r] = v;                           \
    }                                                                                              \
    int32_t b = 0;                                                                                 \
    /* Pairs of inputs (g = 1 has no weight decode to share: one input at a time). */              \
    for (; g > 1 && b + 1 < batch; b += 2) {                                                       \
      const int16_t* xb = xs + (size_t)b * in;                                                     \
      int8_t* yb = y + (size_t)b * L->out;                                                         \
      for (int32_t r = 0; r < L->out; ++r) {                                                       \
        const int32_t k0 = L->row_ptr[r], k1 = L->row_ptr[r + 1];                                  \
        if (k0 == k1) continue; /* written above */                                                \
        const int32_t kf = (k1 > k0 && (int32_t)cols[k1 - 1] == last_group) ? k1 - 1 : k1;         \
        const IT* col = cols + k0;                                                                 \
        const int8_t* w = vals + (size_t)k0 * g;                                                   \
        uint32_t a0 = (uint32_t)bias[r], a1 = a0;                                                  \
        switch (g) {                                                                               \
          case 2: dsp_dot2_g2_##SUF(xb, in, col, w, kf - k0, &a0, &a1); break;                     \
          case 4: dsp_dot2_quads_##SUF(xb, in, col, w, kf - k0, 1, &a0, &a1); break;               \
          case 8: dsp_dot2_quads_##SUF(xb, in, col, w, kf - k0, 2, &a0, &a1); break;               \
          default: dsp_dot2_quads_##SUF(xb, in, col, w, kf - k0, 4, &a0, &a1); break;              \
        }                                                                                          \
        if (kf != k1) {                                                                            \
          a0 += (uint32_t)tfs_gsfc_tail_i16(L, xb, kf);                                            \
          a1 += (uint32_t)tfs_gsfc_tail_i16(L, xb + in, kf);                                       \
        }                                                                                          \
        yb[r] = tfs_gsfc_requant(L, r, (int32_t)a0);                                               \
        yb[L->out + r] = tfs_gsfc_requant(L, r, (int32_t)a1);                                      \
      }                                                                                            \
    }                                                                                              \
    for (; b < batch; ++b) {                                                                       \
      const int16_t* xb = xs + (size_t)b * in;                                                     \
      int8_t* yb = y + (size_t)b * L->out;                                                         \
      for (int32_t r = 0; r < L->out; ++r) {                                                       \
        const int32_t k0 = L->row_ptr[r], k1 = L->row_ptr[r + 1];                                  \
        if (k0 == k1) continue; /* written above */                                                \
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
        if (kf != k1) acc += (uint32_t)tfs_gsfc_tail_i16(L, xb, kf);                               \
        yb[r] = tfs_gsfc_requant(L, r, (int32_t)acc);                                              \
      }                                                                                            \
    }                                                                                              \
  }

/* (Unrolling these loops by two groups measured slower on the emulated Cortex-M4: the extra
 * live registers spill around every row, and rows hold ~15 groups at 92 % sparsity.) */
TFS_DEFINE_DSP_I8(u8, uint8_t)
TFS_DEFINE_DSP_I8(u16, uint16_t)

/* The workspace holds the widened (and, for g >= 4, permuted) activations. */
void tfs_gsfc_arm_dsp_i8(const void* layer, const void* packed, const void* x, void* y,
                         int32_t batch, void* ws) {
  const tfs_gsfc_layer* L = (const tfs_gsfc_layer*)layer;
  int16_t* xs = (int16_t*)ws;
  (void)packed;
  dsp_widen(L, (const int8_t*)x, xs, batch);
  if (L->col_bytes == 1) dsp_i8_u8(L, xs, (int8_t*)y, batch);
  else dsp_i8_u16(L, xs, (int8_t*)y, batch);
}
