/* The dense int8 baseline for the Cortex-M4 benchmark: a CMSIS-NN-style fully-connected kernel
 * (SMLAD + SXTB16, two output rows per pass so each input load serves two rows), written for this
 * benchmark - it is our own code in the style of CMSIS-NN's arm_nn_vec_mat_mult_t_s8, not CMSIS-NN.
 * Same arithmetic as TFLite's int8 FULLY_CONNECTED (per-channel fixed-point requantization), so its
 * outputs must equal the group-sparse kernel's on the same weights. */
#include <string.h>

#include "dense_baseline.h"
#include "tfs_group_sparse_fc.h"

#if !(defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP)
#error "the dense baseline is the Cortex-M DSP kernel: build with -mcpu=cortex-m4"
#endif
#include <arm_acle.h>

static inline uint32_t ld32(const void* p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline int32_t sxtb16_ror8(int32_t v) {
  int32_t r;
  __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
  return r;
}
/* (a.lo + sext(v.byte1), a.hi + sext(v.byte3)): widening and the input offset in one step. */
static inline int32_t sxtab16_ror8(int32_t a, int32_t v) {
  int32_t r;
  __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(v));
  return r;
}

static inline int8_t requant(const dense_fc* L, int32_t r, int32_t acc) {
  int32_t v = tfs_multiply_by_quantized_multiplier(acc, L->multiplier[r], L->shift[r]) + L->out_zp;
  if (v < L->act_min) v = L->act_min;
  if (v > L->act_max) v = L->act_max;
  return (int8_t)v;
}

void dense_fc_s8(const dense_fc* L, const int8_t* x, int8_t* y) {
  const int32_t in = L->in, quads = in / 4;
  /* CMSIS-NN's trick: the input offset (-zero point) added by SXTAB16 while widening. */
  const int32_t off2 = (int32_t)(((uint32_t)(uint16_t)(-L->in_zp)) * 0x10001u);
  int32_t r = 0;
  for (; r + 2 <= L->out; r += 2) {
    const int8_t* w0 = L->weights + (size_t)r * in;
    const int8_t* w1 = w0 + in;
    int32_t a0 = L->bias[r], a1 = L->bias[r + 1];
    for (int32_t q = 0; q < quads; ++q) {
      const int32_t xv = (int32_t)ld32(x + 4 * q);
      const int32_t x02 = __sxtab16(off2, xv), x13 = sxtab16_ror8(off2, xv);
      const int32_t v0 = (int32_t)ld32(w0 + 4 * q), v1 = (int32_t)ld32(w1 + 4 * q);
      a0 = __smlad(__sxtb16(v0), x02, a0);
      a0 = __smlad(sxtb16_ror8(v0), x13, a0);
      a1 = __smlad(__sxtb16(v1), x02, a1);
      a1 = __smlad(sxtb16_ror8(v1), x13, a1);
    }
    for (int32_t c = 4 * quads; c < in; ++c) {
      a0 += w0[c] * (x[c] - L->in_zp);
      a1 += w1[c] * (x[c] - L->in_zp);
    }
    y[r] = requant(L, r, a0);
    y[r + 1] = requant(L, r + 1, a1);
  }
  for (; r < L->out; ++r) {
    const int8_t* w0 = L->weights + (size_t)r * in;
    int32_t a0 = L->bias[r];
    for (int32_t q = 0; q < quads; ++q) {
      const int32_t xv = (int32_t)ld32(x + 4 * q);
      const int32_t v0 = (int32_t)ld32(w0 + 4 * q);
      a0 = __smlad(__sxtb16(v0), __sxtab16(off2, xv), a0);
      a0 = __smlad(sxtb16_ror8(v0), sxtab16_ror8(off2, xv), a0);
    }
    for (int32_t c = 4 * quads; c < in; ++c) a0 += w0[c] * (x[c] - L->in_zp);
    y[r] = requant(L, r, a0);
  }
}
