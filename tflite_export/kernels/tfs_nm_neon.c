/* TFS_NM_SPARSE_FC (2:4) on AArch64 Advanced SIMD, any core: float32 (FMLA) and int8 (SMLAL on
 * x - input_zp widened to int16, as the portable kernel's sum; bit-exact with it).
 *
 * The kept inputs are picked with TBL, a table lookup over the input vectors: one position byte
 * (2 windows = 8 inputs -> 4 kept values) indexes a constant table of TBL control vectors. There
 * is no sparse hardware here: each 4 kept float32 values cost an index byte, a control-vector
 * load, two input vectors, a TBL and one FMLA, against two FMLAs for the same 8 inputs in a dense
 * kernel, so on NEON 2:4 does not beat a good dense kernel (benchmarks/cortex_a/README.md
 * measures it); these kernels are the runtime's path for 2:4 models on Arm, ~3-6x faster than
 * the portable C loop. Rows outside, batch inside (a row's values stay in L1); the odd last
 * window, if any, runs in the shared scalar code (tfs_nm_internal.h).
 */
#include "tfs_dispatch.h"

#if defined(__aarch64__)

#include <arm_neon.h>

#include "tfs_neon.h"
#include "tfs_nm_internal.h"

/* TBL controls. float32: byte b of positions (window 2k: bits 0-3, window 2k + 1: bits 4-7)
 * selects inputs p0, p1 of the first 4 floats and 4 + p0', 4 + p1' of the next 4: 16 bytes over a
 * 32-byte table (two input vectors). int16: the same selection of 2-byte lanes, 8 bytes over a
 * 16-byte table; kNm16[1] adds 16 to pick from a second table register. */
#define TFS_NM_F(f) 4 * (f), 4 * (f) + 1, 4 * (f) + 2, 4 * (f) + 3
#define TFS_NM_H(f, o) 2 * (f) + (o), 2 * (f) + 1 + (o)
#define TFS_NM_SEL_F32(b) {TFS_NM_F((b) & 3), TFS_NM_F(((b) >> 2) & 3), \
                           TFS_NM_F(4 + (((b) >> 4) & 3)), TFS_NM_F(4 + (((b) >> 6) & 3))}
#define TFS_NM_SEL_I16(b, o) {TFS_NM_H((b) & 3, o), TFS_NM_H(((b) >> 2) & 3, o), \
                              TFS_NM_H(4 + (((b) >> 4) & 3), o), TFS_NM_H(4 + (((b) >> 6) & 3), o)}
#define TFS_NM_SEL_I16_LO(b) TFS_NM_SEL_I16(b, 0)
#define TFS_NM_SEL_I16_HI(b) TFS_NM_SEL_I16(b, 16)
/* E(0), E(1), ..., E(255). */
#define TFS_NM_R4(E, b) E(b), E((b) + 1), E((b) + 2), E((b) + 3)
#define TFS_NM_R16(E, b) TFS_NM_R4(E, b), TFS_NM_R4(E, (b) + 4), TFS_NM_R4(E, (b) + 8), TFS_NM_R4(E, (b) + 12)
#define TFS_NM_R64(E, b) TFS_NM_R16(E, b), TFS_NM_R16(E, (b) + 16), TFS_NM_R16(E, (b) + 32), TFS_NM_R16(E, (b) + 48)
#define TFS_NM_R256(E) TFS_NM_R64(E, 0), TFS_NM_R64(E, 64), TFS_NM_R64(E, 128), TFS_NM_R64(E, 192)
static const uint8_t kNmF32[256][16] = {TFS_NM_R256(TFS_NM_SEL_F32)};
static const uint8_t kNm16[2][256][8] = {{TFS_NM_R256(TFS_NM_SEL_I16_LO)}, {TFS_NM_R256(TFS_NM_SEL_I16_HI)}};

/* float32: two position bytes (4 windows, 16 inputs, 8 kept values) per step. */
void tfs_nmfc_neon_f32(const void* layer, const void* packed, const void* x_, void* y_,
                       int32_t batch, void* ws) {
  TFS_NM_KERNEL_BEGIN(float, float, float);
  const int32_t bytes = L->in / 8, windows = L->in / 4;
  for (int32_t r = 0; r < L->out; ++r) {
    const float* v = TFS_NM_ROW_VALUES(L, r, float);
    const uint8_t* ix = TFS_NM_ROW_INDICES(L, r);
    for (int32_t b = 0; b < batch; ++b) {
      const float* xb = x + (size_t)b * L->in;
      float32x4_t a0 = vdupq_n_f32(0.0f), a1 = vdupq_n_f32(0.0f);
      int32_t k = 0;
      for (; k + 2 <= bytes; k += 2) {
        const uint8_t* xt = (const uint8_t*)(xb + 8 * k);
        const uint8x16x2_t t0 = vld1q_u8_x2(xt), t1 = vld1q_u8_x2(xt + 32);
        a0 = vfmaq_f32(a0, vld1q_f32(v + 4 * k), vreinterpretq_f32_u8(vqtbl2q_u8(t0, vld1q_u8(kNmF32[ix[k]]))));
        a1 = vfmaq_f32(a1, vld1q_f32(v + 4 * k + 4), vreinterpretq_f32_u8(vqtbl2q_u8(t1, vld1q_u8(kNmF32[ix[k + 1]]))));
      }
      for (; k < bytes; ++k) {
        const uint8x16x2_t t0 = vld1q_u8_x2((const uint8_t*)(xb + 8 * k));
        a0 = vfmaq_f32(a0, vld1q_f32(v + 4 * k), vreinterpretq_f32_u8(vqtbl2q_u8(t0, vld1q_u8(kNmF32[ix[k]]))));
      }
      const float acc = vaddvq_f32(vaddq_f32(a0, a1)) + tfs_nm_row_f32(L, r, xb, 2 * bytes, windows);
      y[(size_t)b * L->out + r] = tfs_act_f32(bias[r] + acc, L->activation);
    }
  }
}

/* Windows [w0, w1) of row r over int16 x - zp, scalar (the row's odd last window). */
TFS_NM_DEFINE_ROW(row_i16, uint32_t, int8_t, int16_t, TFS_NM_MUL_I8)

/* int8: two position bytes (16 inputs as two int16 vectors, 8 kept values) per step: one TBL
 * over both vectors, the 8 weights sign-extended, SMLAL + SMLAL2. Sums wrap modulo 2^32 as the
 * portable kernel's (products |w * (x - zp)| <= 128 * 255). */
void tfs_nmfc_neon_i8(const void* layer, const void* packed, const void* x_, void* y_,
                      int32_t batch, void* ws) {
  TFS_NM_KERNEL_BEGIN(int8_t, int8_t, int32_t);
  int16_t* xs = (int16_t*)ws;
  tfs_neon_widen_i16(x, xs, (size_t)batch * (size_t)L->in, L->in_zp); /* fits the int32-sized workspace */
  const int32_t bytes = L->in / 8, windows = L->in / 4;
  for (int32_t r = 0; r < L->out; ++r) {
    const int8_t* v = TFS_NM_ROW_VALUES(L, r, int8_t);
    const uint8_t* ix = TFS_NM_ROW_INDICES(L, r);
    for (int32_t b = 0; b < batch; ++b) {
      const int16_t* xb = xs + (size_t)b * L->in;
      int32x4_t a0 = vdupq_n_s32(0), a1 = vdupq_n_s32(0);
      int32_t k = 0;
      for (; k + 2 <= bytes; k += 2) {
        /* LD1 of two registers: TBL's table must be consecutive registers (two separate loads
         * cost a register copy per TBL). */
        const uint8x16x2_t t = vld1q_u8_x2((const uint8_t*)(xb + 8 * k));
        const uint8x16_t sel = vcombine_u8(vld1_u8(kNm16[0][ix[k]]), vld1_u8(kNm16[1][ix[k + 1]]));
        const int16x8_t xk = vreinterpretq_s16_u8(vqtbl2q_u8(t, sel));
        const int16x8_t wk = vmovl_s8(vld1_s8(v + 4 * k));
        a0 = vmlal_s16(a0, vget_low_s16(wk), vget_low_s16(xk));
        a1 = vmlal_high_s16(a1, wk, xk);
      }
      uint32_t acc = (uint32_t)vaddvq_s32(vaddq_s32(a0, a1));
      acc += row_i16(L, r, xb, 2 * k, windows);
      y[(size_t)b * L->out + r] = tfs_nm_requant(L, r, (int32_t)(acc + (uint32_t)bias[r]));
    }
  }
}

#endif /* __aarch64__ */
