/* TFS_GROUP_SPARSE_FC on AArch64 Advanced SIMD: float32 FMLA, int8 SMLAL and int8 SDOT kernels.
 * One function per (dtype, g, instruction set), each a line of tfs_kernels.inc (declared by
 * tfs_dispatch.h with the manifest's common signature; `packed` is not used: they run on the
 * model's group-CSR, FORMAT.md version 2, uint8 or uint16 group indices, ragged tails, empty
 * rows):
 *   float32, FMLA:           tfs_gsfc_neon_f32_g4 / _g8 / _g16     (any AArch64 core)
 *   int8, SMLAL (ARMv8.0-A): tfs_gsfc_neon_i8_g4 / _g8 / _g16      (any AArch64 core)
 *   int8, SDOT (ARMv8.2-A):  tfs_gsfc_neon_i8_dot_g4 / _g8 / _g16  (tfs_arm_has_dotprod())
 * float32 sums the portable kernel's terms in another order (within 1e-5 of the sum of |terms|).
 * The SMLAL kernels widen x - input_zp to int16 in the workspace, as the portable kernel does;
 * the SDOT kernels multiply int8 x int8 and subtract input_zp * (sum of the row's weights),
 * because x - input_zp does not fit in int8 (no workspace). Both are bit-exact with the portable
 * kernel: the same integer sum modulo 2^32 and the same requantization (tfs_requant_i8).
 * Probes tfs_arm_has_neon / tfs_arm_has_dotprod (TFS_PROBE lines) are defined on every
 * architecture: 0 off AArch64, where the kernels do not exist.
 *
 * Layout of the compute (all three): blocks of 4 output rows outer, batch inner (a block's weights
 * are re-read from L1 for each batch row). Each row's full groups are accumulated in vector
 * accumulators (float32: four FMLA chains per row; int8: one to four, the 4 rows of a block being
 * independent chains for an out-of-order core); the block's 4 row vectors are reduced with two
 * pairwise adds into one vector of 4 row sums, and bias, activation / requantization and the
 * store run on that vector: at 90 % sparsity a row has only a few groups, so per-row work decides
 * the speed. The ragged tail group (always the row's last, at column in_full) runs in scalar code
 * so no load reaches past x[b, in - 1]. Each kernel body is one always-inline template on the
 * constants G (group size), CB (col_idx bytes) and RAG (in % g != 0), instantiated per
 * combination: index width and raggedness are decided once per layer, never per group or row.
 * Layer fields used in the loops are copied to locals (stores through the int8 output may alias
 * anything, so the compiler would reload them per row).
 *
 * A group costs an index load, a shift, one 16-byte x load per 4 floats / 16 bytes (at x + index *
 * 16 bytes for float32 g = 4 and int8 g = 16) and its weights, read sequentially (groups are
 * stored in row order).
 */
#include "tfs_dispatch.h"
#include "tfs_group_sparse_fc.h"

#if defined(__aarch64__)

#include <arm_neon.h>
#include <string.h>

#if defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20) /* Linux arch/arm64 uapi hwcap.h */
#endif
#endif

#define TFS_INLINE static inline __attribute__((always_inline))
/* The SDOT kernels are compiled for ARMv8.2-A + dotprod per function, so this file builds with
 * plain -march=armv8-a and the probe below decides at run time. GCC's arm_neon.h declares
 * vdotq_s32 for such functions; clang 14's declares it only when the whole file targets
 * dotprod, so there the one instruction is written as inline assembly. */
#if defined(__clang__)
#define TFS_DOTPROD __attribute__((target("dotprod")))
/* sdot v0.4s, v1.16b, v2.16b by its encoding (clang 14's assembler knows no dotprod switch). */
TFS_DOTPROD static inline __attribute__((always_inline)) int32x4_t tfs_sdot(int32x4_t acc, int8x16_t a,
                                                                             int8x16_t b) {
  register int32x4_t v0 __asm__("v0") = acc;
  register int8x16_t v1 __asm__("v1") = a;
  register int8x16_t v2 __asm__("v2") = b;
  __asm__(".inst 0x4e829420" : "+w"(v0) : "w"(v1), "w"(v2));
  return v0;
}
#else
#define TFS_DOTPROD __attribute__((target("arch=armv8.2-a+dotprod")))
#define tfs_sdot vdotq_s32
#endif

int tfs_arm_has_neon(void) { return 1; }

int tfs_arm_has_dotprod(void) {
#if defined(__linux__)
  return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#elif defined(__ARM_FEATURE_DOTPROD)
  return 1;
#else
  return 0;
#endif
}

/* ------------------------------------------------------------------------------------------ */
/* Shared pieces                                                                              */
/* ------------------------------------------------------------------------------------------ */

/* Group index (column / g) of stored group k; CB = bytes per index (1 or 2), a constant. */
TFS_INLINE size_t gidx(const void* col, int32_t k, const int CB) {
  return CB == 1 ? (size_t)((const uint8_t*)col)[k] : (size_t)((const uint16_t*)col)[k];
}

/* End of row's full groups [k0, kf): its last group is ragged (the scalar tail) iff it is group
 * `last` (= in_full / g; the highest index, so always the row's last). RAG (a constant: in % g
 * != 0) compiles the check out of layers without ragged groups. */
TFS_INLINE int32_t row_kf(const void* col, int32_t k0, int32_t k1, int32_t last, const int CB,
                          const int RAG) {
  return (RAG && k1 > k0 && (int32_t)gidx(col, k1 - 1, CB) == last) ? k1 - 1 : k1;
}

/* Groups [k0, k1) of row r0 + i of a block of nr rows (rows past the block's end: empty). */
#define TFS_ROW_RANGE(row_ptr, r0, i, nr, k0, k1)                  \
  const int32_t k0 = (i) < (nr) ? (row_ptr)[(r0) + (i)] : 0;       \
  const int32_t k1 = (i) < (nr) ? (row_ptr)[(r0) + (i) + 1] : 0

/* Runs the statements (which use r0 and nr) for each block of 4 output rows: the full blocks
 * with nr a constant 4, so the compiler drops every partial-block check, then the last partial
 * block. */
#define TFS_FOR_BLOCKS(out, ...)                  \
  do {                                            \
    int32_t r0 = 0;                               \
    for (; r0 + 4 <= (out); r0 += 4) {            \
      const int32_t nr = 4;                       \
      __VA_ARGS__                                 \
    }                                             \
    if (r0 < (out)) {                             \
      const int32_t nr = (out) - r0;              \
      __VA_ARGS__                                 \
    }                                             \
  } while (0)

/* The layer fields every run_* reads (vals as v_t, bias as b_t), and `last`, the ragged tail
 * group's index (-1 if none). */
#define TFS_NEON_LAYER(L, v_t, b_t, G)                           \
  const v_t* vals = (const v_t*)(L)->values;                     \
  const b_t* bias = (const b_t*)(L)->bias;                       \
  const int32_t* row_ptr = (L)->row_ptr;                         \
  const void* col = (L)->col_idx;                                \
  const int32_t in = (L)->in, out = (L)->out;                    \
  const int32_t last = (L)->in_full != in ? (L)->in_full / G : -1

/* Inside TFS_FOR_BLOCKS: the statement runs for each of the block's 4 row slots i, with k0 the
 * row's first group and kf the end of its full groups. */
#define TFS_EACH_ROW_SLOT(...)                                    \
  _Pragma("GCC unroll 4")                                         \
  for (int32_t i = 0; i < 4; ++i) {                               \
    TFS_ROW_RANGE(row_ptr, r0, i, nr, k0, k1);                    \
    const int32_t kf = row_kf(col, k0, k1, last, CB, RAG);        \
    __VA_ARGS__;                                                  \
  }

/* Inside TFS_FOR_BLOCKS, if RAG: t[i] (acc_t[4], zeroed) += the ragged tail group of each of the
 * block's nr rows, w[j] * X(c + j) for the in - c columns that exist; w is the tail's weights
 * (v_t). */
#define TFS_RAGGED_TAILS(t, X)                                               \
  for (int32_t i = 0; i < nr; ++i) {                                          \
    TFS_ROW_RANGE(row_ptr, r0, i, nr, k0, k1);                               \
    const int32_t kf = row_kf(col, k0, k1, last, CB, RAG), c = last * G;     \
    if (kf != k1)                                                            \
      for (int32_t j = 0; j < in - c; ++j) t[i] += X(vals[(size_t)kf * G + j], c + j); \
  }

/* The exported kernel NAME (tfs_kernel_fn) for width G: RUN(L, x, y, batch, ws, G, CB, RAG)
 * instantiated for both col_idx widths (CB) and with / without ragged tails (RAG), T the
 * activations' element type. */
#define TFS_NEON_KERNEL(NAME, RUN, G, T, ATTR)                                                   \
  ATTR void NAME(const void* layer, const void* packed, const void* x, void* y, int32_t batch,   \
                 void* ws) {                                                                      \
    (void)packed;                                                                                \
    const tfs_gsfc_layer* L = (const tfs_gsfc_layer*)layer;                                      \
    const T* xt = (const T*)x;                                                                   \
    T* yt = (T*)y;                                                                               \
    const int ragged = L->in_full != L->in;                                                      \
    if (L->col_bytes == 1) {                                                                     \
      if (ragged) RUN(L, xt, yt, batch, ws, G, 1, 1);                                            \
      else RUN(L, xt, yt, batch, ws, G, 1, 0);                                                   \
    } else {                                                                                     \
      if (ragged) RUN(L, xt, yt, batch, ws, G, 2, 1);                                            \
      else RUN(L, xt, yt, batch, ws, G, 2, 0);                                                   \
    }                                                                                            \
  }

/* Row sums of four accumulators: lane i = sum of a[i]'s lanes (two pairwise adds). */
TFS_INLINE float32x4_t sum4_f32(const float32x4_t* a) {
  return vpaddq_f32(vpaddq_f32(a[0], a[1]), vpaddq_f32(a[2], a[3]));
}
TFS_INLINE int32x4_t sum4_s32(const int32x4_t* a) {
  return vpaddq_s32(vpaddq_s32(a[0], a[1]), vpaddq_s32(a[2], a[3]));
}

/* 4 values from p[0 .. nr-1] (zeros after). */
TFS_INLINE int32x4_t load4_s32(const int32_t* p, int32_t nr) {
  if (nr == 4) return vld1q_s32(p);
  int32_t t[4] = {0, 0, 0, 0};
  for (int32_t i = 0; i < nr; ++i) t[i] = p[i];
  return vld1q_s32(t);
}

/* x + group index * group bytes, materialized in a register: the empty asm stops the compiler
 * from folding the add into the load as a register offset ("lsl t, idx, #4; ldr q, [x, t]"). A
 * vector load with a register offset costs N1-class cores an integer-pipe slot on top of the
 * shift (Neoverse N1 Software Optimization Guide: load vector reg, register offset = I + L);
 * "add p, x, idx, lsl #4" shifts and adds in one, and every vector of the group then loads from
 * p with an immediate offset (or as a pair). */
TFS_INLINE const void* group_ptr(const void* x, size_t idx, size_t group_bytes) {
  const char* p = (const char*)x + idx * group_bytes;
  __asm__("" : "+r"(p));
  return p;
}

TFS_INLINE int32_t ld32(const void* p) {
  int32_t v;
  memcpy(&v, p, 4);
  return v;
}

/* int32 accumulators (bias included) of output rows r0 .. r0 + nr - 1 -> y[r0 ..]: exactly
 * tfs_requant_i8 (the portable kernel's requantization). The float32 flavour runs four rows at a
 * time in NEON with the same operations: SCVTF and FMUL round to nearest like the C conversion
 * and product, FMAX/FMIN clamp like the C comparisons (no NaN can occur: scale is finite), and
 * FCVTNS rounds half to even like tfs_round_half_even. */
TFS_INLINE void store_i8(const tfs_gsfc_layer* L, int32_t r0, int32_t nr, int32x4_t acc,
                         int8_t* y) {
  if (nr == 4 && L->requant == TFS_REQUANT_FP32) {
    float32x4_t f = vmulq_f32(vcvtq_f32_s32(acc), vld1q_f32(L->scale + r0));
    f = vmaxq_f32(f, vdupq_n_f32((float)(L->act_min - L->out_zp)));
    f = vminq_f32(f, vdupq_n_f32((float)(L->act_max - L->out_zp)));
    const int16x4_t h = vmovn_s32(vaddq_s32(vcvtnq_s32_f32(f), vdupq_n_s32(L->out_zp)));
    const int32_t packed = vget_lane_s32(vreinterpret_s32_s8(vmovn_s16(vcombine_s16(h, h))), 0);
    memcpy(y + r0, &packed, 4); /* every value is in [act_min, act_max], so the narrowing is exact */
    return;
  }
  int32_t a[4];
  vst1q_s32(a, acc);
  for (int32_t i = 0; i < nr; ++i)
    y[r0 + i] = tfs_requant_i8(a[i], L->requant, L->multiplier[r0 + i], L->shift[r0 + i],
                               L->scale[r0 + i], L->out_zp, L->act_min, L->act_max);
}

/* ------------------------------------------------------------------------------------------ */
/* float32: FMLA                                                                              */
/* ------------------------------------------------------------------------------------------ */

/* Sum over full groups k0 .. k1-1 of w_k . x[col_k * G ..]: G / 4 FMLAs per group, four per
 * step into four accumulators (16 / G groups per step, the rest one group at a time). */
TFS_INLINE float32x4_t dot_f32(const float* x, const void* col, const float* w, int32_t k0,
                               int32_t k1, const int G, const int CB) {
  const int V = G / 4, U = G == 4 ? 4 : G == 8 ? 2 : 1; /* four FMLAs per step */
  float32x4_t a[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
  const float* wp = w + (size_t)k0 * G;
  int32_t k = k0;
  for (; k + U <= k1; k += U, wp += U * G) {
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) {
      const float* xp = (const float*)group_ptr(x, gidx(col, k + u, CB), 4 * G);
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v)
        a[u * V + v] = vfmaq_f32(a[u * V + v], vld1q_f32(wp + u * G + 4 * v), vld1q_f32(xp + 4 * v));
    }
  }
  for (; U > 1 && k < k1; ++k, wp += G) { /* the row's last < U groups */
    const float* xp = (const float*)group_ptr(x, gidx(col, k, CB), 4 * G);
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v) a[v] = vfmaq_f32(a[v], vld1q_f32(wp + 4 * v), vld1q_f32(xp + 4 * v));
  }
  return vaddq_f32(vaddq_f32(a[0], a[1]), vaddq_f32(a[2], a[3]));
}

/* tfs_act_f32 on 4 lanes; FMAXNM / FMINNM map NaN to 0 under RELU / RELU6 as the C does. */
TFS_INLINE float32x4_t act4_f32(float32x4_t v, int act) {
  if (act == TFS_ACT_RELU) return vmaxnmq_f32(v, vdupq_n_f32(0.0f));
  if (act == TFS_ACT_RELU6) return vminnmq_f32(vmaxnmq_f32(v, vdupq_n_f32(0.0f)), vdupq_n_f32(6.0f));
  return v;
}

/* run_f32's tail term: weight w times x column j. */
#define X_F32(w, j) (w) * xb[j]

TFS_INLINE void run_f32(const tfs_gsfc_layer* L, const float* x, float* y, int32_t batch,
                        void* workspace, const int G, const int CB, const int RAG) {
  (void)workspace;
  TFS_NEON_LAYER(L, float, float, G);
  const int32_t act = L->activation;
  TFS_FOR_BLOCKS(out,
    float32x4_t bv;
    if (nr == 4) {
      bv = vld1q_f32(bias + r0);
    } else {
      float t[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      for (int32_t i = 0; i < nr; ++i) t[i] = bias[r0 + i];
      bv = vld1q_f32(t);
    }
    for (int32_t b = 0; b < batch; ++b) {
      const float* xb = x + (size_t)b * in;
      float32x4_t d[4];
      TFS_EACH_ROW_SLOT(d[i] = dot_f32(xb, col, vals, k0, kf, G, CB))
      float32x4_t s = sum4_f32(d);
      if (RAG) { /* ragged tails: only the in - c columns that exist */
        float t[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        TFS_RAGGED_TAILS(t, X_F32)
        s = vaddq_f32(s, vld1q_f32(t));
      }
      s = act4_f32(vaddq_f32(s, bv), act);
      float* yb = y + (size_t)b * out + r0;
      if (nr == 4) {
        vst1q_f32(yb, s);
      } else {
        float o[4];
        vst1q_f32(o, s);
        for (int32_t i = 0; i < nr; ++i) yb[i] = o[i];
      }
    }
  );
}

TFS_NEON_KERNEL(tfs_gsfc_neon_f32_g4, run_f32, 4, float, )
TFS_NEON_KERNEL(tfs_gsfc_neon_f32_g8, run_f32, 8, float, )
TFS_NEON_KERNEL(tfs_gsfc_neon_f32_g16, run_f32, 16, float, )

/* ------------------------------------------------------------------------------------------ */
/* int8 on any AArch64 core: SMLAL on x - input_zp widened to int16 (as the portable kernel)  */
/* ------------------------------------------------------------------------------------------ */

static void widen_i8(const int8_t* x, int16_t* xs, size_t n, int32_t zp) {
  const int16x8_t z = vdupq_n_s16((int16_t)zp);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const int8x16_t v = vld1q_s8(x + i);
    vst1q_s16(xs + i, vsubq_s16(vmovl_s8(vget_low_s8(v)), z));
    vst1q_s16(xs + i + 8, vsubq_s16(vmovl_high_s8(v), z));
  }
  for (; i < n; ++i) xs[i] = (int16_t)(x[i] - zp);
}

/* 4 int8 weights (one g = 4 group) sign-extended to int16. */
TFS_INLINE int16x4_t load_w4_s16(const int8_t* w) {
  return vget_low_s16(vmovl_s8(vreinterpret_s8_s32(vdup_n_s32(ld32(w)))));
}

/* Sum over full groups k0 .. k1-1 of w_k . xs[col_k * G ..] (products |w * xs| <= 128 * 255;
 * the lanes wrap modulo 2^32 like the portable sum): g = 4 two groups per step (one 8-byte weight
 * load, x quads paired), g = 8 and 16 one group per step, two SMLALs per 8 weights. */
TFS_INLINE int32x4_t dot_smlal(const int16_t* xs, const void* col, const int8_t* w, int32_t k0,
                               int32_t k1, const int G, const int CB) {
  int32x4_t a[4] = {vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0)};
  const int8_t* wp = w + (size_t)k0 * G;
  int32_t k = k0;
  if (G == 4) {
    for (; k + 2 <= k1; k += 2, wp += 8) {
      const int16x8_t wv = vmovl_s8(vld1_s8(wp));
      const int16x8_t xv = vcombine_s16(vld1_s16((const int16_t*)group_ptr(xs, gidx(col, k, CB), 8)), vld1_s16((const int16_t*)group_ptr(xs, gidx(col, k + 1, CB), 8)));
      a[0] = vmlal_s16(a[0], vget_low_s16(wv), vget_low_s16(xv));
      a[1] = vmlal_high_s16(a[1], wv, xv);
    }
    if (k < k1) a[0] = vmlal_s16(a[0], load_w4_s16(wp), vld1_s16((const int16_t*)group_ptr(xs, gidx(col, k, CB), 8)));
    return vaddq_s32(a[0], a[1]);
  }
  const int C = G / 8; /* chunks of 8 per group */
  for (; k < k1; ++k, wp += G) {
    const int16_t* xp = (const int16_t*)group_ptr(xs, gidx(col, k, CB), 2 * G);
#pragma GCC unroll 2
    for (int c = 0; c < C; ++c) {
      const int16x8_t wc = vmovl_s8(vld1_s8(wp + 8 * c)), xc = vld1q_s16(xp + 8 * c);
      a[2 * c] = vmlal_s16(a[2 * c], vget_low_s16(wc), vget_low_s16(xc));
      a[2 * c + 1] = vmlal_high_s16(a[2 * c + 1], wc, xc);
    }
  }
  return C == 2 ? vaddq_s32(vaddq_s32(a[0], a[1]), vaddq_s32(a[2], a[3])) : vaddq_s32(a[0], a[1]);
}

/* run_i8_smlal's tail term on the widened x - zp, wrapping like the portable sum. */
#define X_I16(w, j) (uint32_t)((int32_t)(w) * xb[j])

TFS_INLINE void run_i8_smlal(const tfs_gsfc_layer* L, const int8_t* x, int8_t* y, int32_t batch,
                             void* workspace, const int G, const int CB, const int RAG) {
  TFS_NEON_LAYER(L, int8_t, int32_t, G);
  int16_t* xs = (int16_t*)workspace;
  widen_i8(x, xs, (size_t)batch * (size_t)in, L->in_zp);
  TFS_FOR_BLOCKS(out,
    const int32x4_t bv = load4_s32(bias + r0, nr);
    for (int32_t b = 0; b < batch; ++b) {
      const int16_t* xb = xs + (size_t)b * in;
      int32x4_t d[4];
      TFS_EACH_ROW_SLOT(d[i] = dot_smlal(xb, col, vals, k0, kf, G, CB))
      int32x4_t s = vaddq_s32(sum4_s32(d), bv); /* lanes wrap modulo 2^32, as the portable sum */
      if (RAG) {
        uint32_t t[4] = {0, 0, 0, 0};
        TFS_RAGGED_TAILS(t, X_I16)
        s = vaddq_s32(s, vreinterpretq_s32_u32(vld1q_u32(t)));
      }
      store_i8(L, r0, nr, s, y + (size_t)b * out);
    }
  );
}

TFS_NEON_KERNEL(tfs_gsfc_neon_i8_g4, run_i8_smlal, 4, int8_t, )
TFS_NEON_KERNEL(tfs_gsfc_neon_i8_g8, run_i8_smlal, 8, int8_t, )
TFS_NEON_KERNEL(tfs_gsfc_neon_i8_g16, run_i8_smlal, 16, int8_t, )

/* ------------------------------------------------------------------------------------------ */
/* int8 with the dot-product extension: SDOT on the raw int8 x                                */
/* ------------------------------------------------------------------------------------------ */
/* sum w * (x - zp) = sum w * x - zp * sum w, exactly, modulo 2^32: SDOT multiplies the raw
 * bytes, and a second SDOT against ones sums the row's weights (only if zp != 0, and only in the
 * first batch row; the sum is kept for the others). A 16-byte vector holds 16 / G groups. */

/* The x bytes of groups k .. k + n - 1 (n <= 16 / G), one group per 16 / (16 / G) lanes; lanes
 * of missing groups are 0. */
TFS_DOTPROD TFS_INLINE int8x16_t gather_x(const int8_t* x, const void* col, int32_t k, int32_t n,
                                         const int G, const int CB) {
  if (G == 16) return vld1q_s8((const int8_t*)group_ptr(x, gidx(col, k, CB), 16));
  if (G == 8)
    return vcombine_s8(vld1_s8((const int8_t*)group_ptr(x, gidx(col, k, CB), 8)),
                       n > 1 ? vld1_s8((const int8_t*)group_ptr(x, gidx(col, k + 1, CB), 8)) : vdup_n_s8(0));
  int32x4_t v = vdupq_n_s32(ld32(x + gidx(col, k, CB) * 4));
  v = vsetq_lane_s32(n > 1 ? ld32(x + gidx(col, k + 1, CB) * 4) : 0, v, 1);
  v = vsetq_lane_s32(n > 2 ? ld32(x + gidx(col, k + 2, CB) * 4) : 0, v, 2);
  v = vsetq_lane_s32(n > 3 ? ld32(x + gidx(col, k + 3, CB) * 4) : 0, v, 3);
  return vreinterpretq_s8_s32(v);
}

/* Sum over full groups k0 .. k1-1 of w_k . x[col_k * G ..] (raw int8), one vector (16 / G
 * groups) per step (rows are short at 90 % sparsity: a two-vector step cost more in remainder
 * handling than it saved, measured), the row's last partial vector zero-padded; if SUM, also the sum of the
 * weights into *wsum. */
TFS_DOTPROD TFS_INLINE int32x4_t dot_sdot(const int8_t* x, const void* col, const int8_t* w,
                                         int32_t k0, int32_t k1, const int G, const int CB,
                                         const int SUM, int32x4_t* wsum) {
  const int P = 16 / G; /* groups per vector */
  const int8x16_t ones = vdupq_n_s8(1);
  int32x4_t a = vdupq_n_s32(0), s = vdupq_n_s32(0);
  const int8_t* wp = w + (size_t)k0 * G;
  int32_t k = k0;
  for (; k + P <= k1; k += P, wp += 16) {
    const int8x16_t wv = vld1q_s8(wp);
    a = tfs_sdot(a, wv, gather_x(x, col, k, P, G, CB));
    if (SUM) s = tfs_sdot(s, wv, ones);
  }
  if (P > 1 && k < k1) { /* the row's last few groups: zero the missing ones' weights */
    const int32_t n = k1 - k;
    int8_t buf[16] = {0};
    memcpy(buf, wp, (size_t)n * G);
    const int8x16_t wv = vld1q_s8(buf);
    a = tfs_sdot(a, wv, gather_x(x, col, k, n, G, CB));
    if (SUM) s = tfs_sdot(s, wv, ones);
  }
  if (SUM) *wsum = s;
  return a;
}

/* run_i8_sdot's tail term on the raw x, wrapping like the portable sum. */
#define X_I8_ZP(w, j) (uint32_t)((int32_t)(w) * (xb[j] - zp))

TFS_DOTPROD TFS_INLINE void run_i8_sdot(const tfs_gsfc_layer* L, const int8_t* x, int8_t* y,
                                        int32_t batch, void* workspace, const int G, const int CB,
                                        const int RAG) {
  (void)workspace;
  TFS_NEON_LAYER(L, int8_t, int32_t, G);
  const int32_t zp = L->in_zp;
  TFS_FOR_BLOCKS(out,
    int32x4_t bv = load4_s32(bias + r0, nr);
    for (int32_t b = 0; b < batch; ++b) {
      const int8_t* xb = x + (size_t)b * in;
      int32x4_t d[4];
      if (b == 0 && zp != 0) {
        /* bias - zp * (sum of each row's full-group weights), kept for the other batch rows */
        int32x4_t ws[4];
        TFS_EACH_ROW_SLOT(d[i] = dot_sdot(xb, col, vals, k0, kf, G, CB, 1, &ws[i]))
        bv = vreinterpretq_s32_u32(vmlsq_u32(vreinterpretq_u32_s32(bv), vreinterpretq_u32_s32(sum4_s32(ws)),
                                             vdupq_n_u32((uint32_t)zp)));
      } else {
        TFS_EACH_ROW_SLOT(d[i] = dot_sdot(xb, col, vals, k0, kf, G, CB, 0, NULL))
      }
      int32x4_t s = vaddq_s32(sum4_s32(d), bv);
      if (RAG) {
        uint32_t t[4] = {0, 0, 0, 0};
        TFS_RAGGED_TAILS(t, X_I8_ZP)
        s = vaddq_s32(s, vreinterpretq_s32_u32(vld1q_u32(t)));
      }
      store_i8(L, r0, nr, s, y + (size_t)b * out);
    }
  );
}

TFS_NEON_KERNEL(tfs_gsfc_neon_i8_dot_g4, run_i8_sdot, 4, int8_t, TFS_DOTPROD)
TFS_NEON_KERNEL(tfs_gsfc_neon_i8_dot_g8, run_i8_sdot, 8, int8_t, TFS_DOTPROD)
TFS_NEON_KERNEL(tfs_gsfc_neon_i8_dot_g16, run_i8_sdot, 16, int8_t, TFS_DOTPROD)

#else
/* Not AArch64: only the probes, saying no. */
int tfs_arm_has_neon(void) { return 0; }
int tfs_arm_has_dotprod(void) { return 0; }
#endif /* __aarch64__ */
