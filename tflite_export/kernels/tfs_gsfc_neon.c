/* TFS_GROUP_SPARSE_FC on AArch64 Advanced SIMD: float32 FMLA, int8 SMLAL and int8 SDOT kernels.
 * One function per (dtype, g, instruction set), each a line of tfs_kernels.inc (declared by
 * tfs_dispatch.h with the manifest's common signature):
 *   float32, FMLA:           tfs_gsfc_neon_f32_g4 / _g8 / _g16     (any AArch64 core)
 *   int8, SMLAL (ARMv8.0-A): tfs_gsfc_neon_i8_g4 / _g8 / _g16      (any AArch64 core)
 *   int8, SDOT (ARMv8.2-A):  tfs_gsfc_neon_i8_dot_g4 / _g8 / _g16  (tfs_arm_has_dotprod())
 * float32 sums the portable kernel's terms in another order (within 1e-5 of the sum of |terms|).
 * The SMLAL kernels multiply by x - input_zp widened to int16 in the workspace, as the portable
 * kernel does; the SDOT kernels multiply the raw int8 x (x - input_zp does not fit in int8) and
 * start from the packed copy's bias_s8 = bias - input_zp * (sum of the slot's weights), folded
 * when the node is prepared. Both are bit-exact with the portable kernel: the same integer sum
 * modulo 2^32 and the same requantization (tfs_requant_i8).
 * Probes tfs_arm_has_neon / tfs_arm_has_dotprod (TFS_PROBE lines) are defined on every
 * architecture: 0 off AArch64, where the kernels do not exist.
 *
 * All kernels run on the packed copy (tfs_gsfc_pack.c, as the x86 kernels): rows sorted by length
 * and cut into blocks of 8 slots; step t of a block holds group t of each slot (slot-major
 * weights, one uint16 first column per slot). A block is one loop with a fixed trip count and 8
 * independent accumulator chains, so at 90 % sparsity (a few groups per row) the per-row work -
 * bounds, reduction, bias, requantization - is paid once per 8 rows and the loop exit is the only
 * data-dependent branch. int8, per group: its share of one 16-byte load of 8 columns, a 16-bit
 * field extract, the address add, the x load(s), the weight load(s) (LDP, sequential) and the
 * multiply. float32 reads the byte offsets of x that AArch64 packing adds (P->xoff), two per LDP,
 * and loads x with a register offset: g = 4 costs a quarter LDP, one LDR Q, half an LDP Q and an
 * FMLA per group (assembly, blk_f32_g4). Ragged tail groups stay in the model's layout (P->tail)
 * and are added per slot in scalar code (compiled out of layers without them). Blocks outer,
 * batch inner: a block's weights stay in L1 across the batch.
 */
#include "tfs_dispatch.h"
#include "tfs_group_sparse_fc.h"

#if defined(__aarch64__)

#include <arm_neon.h>
#include <string.h>

#include "tfs_gsfc_internal.h"
#include "tfs_neon.h"

#if defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20) /* Linux arch/arm64 uapi hwcap.h */
#endif
#endif

#define TFS_INLINE static inline __attribute__((always_inline))
/* Slot and vector loops must be unrolled: rolled, GCC keeps the accumulator array on the stack. */
#define TFS_UNROLL _Pragma("GCC unroll 16")
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
/* GCC's vdotq_s32 with 8 accumulators makes register copies around every SDOT (GCC 12: a
 * "mov v.16b" per SDOT); the same instruction as inline assembly with a tied accumulator does
 * not. */
TFS_DOTPROD static inline __attribute__((always_inline)) int32x4_t tfs_sdot(int32x4_t acc, int8x16_t a,
                                                                             int8x16_t b) {
  __asm__("sdot %0.4s, %1.16b, %2.16b" : "+w"(acc) : "w"(a), "w"(b));
  return acc;
}
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

/* The 8 slot sums of a block: slots 0-3 and 4-7. */
typedef struct { float32x4_t lo, hi; } tfs_f32x8;
typedef struct { int32x4_t lo, hi; } tfs_s32x8;

TFS_INLINE uint64_t ld64(const void* p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}
TFS_INLINE int32_t ld32(const void* p) {
  int32_t v;
  memcpy(&v, p, 4);
  return v;
}

/* First column of slot i of a step whose 8 columns are the words q[0] (slots 0-3), q[1] (4-7):
 * one 16-byte load per step and a 16-bit field extract per slot (cheaper than 8 LDRH). The
 * empty asm keeps the extract separate from the address add: folded, the low field becomes an
 * extended-register add ("add x, x, w, uxth #2") and the high one a shifted-register add ("add
 * x, x, q, lsr #48"), which the Neoverse N1 issues on its one M pipe at a full cycle each,
 * against a third of a cycle each for the extract and an ADD (LSL <= 4) on three integer pipes. */
TFS_INLINE size_t col_field(const uint64_t* q, int i) {
  size_t c = (size_t)((q[i / 4] >> (16 * (i % 4))) & 0xFFFF);
  __asm__("" : "+r"(c));
  return c;
}
#define TFS_COL(q, i) col_field(q, i)

/* x + column, materialized in a register: the empty asm stops the compiler from folding the add
 * into the load as a register offset. The Neoverse N1 Software Optimization Guide prices a vector
 * load with a register offset at an integer-pipe slot on top of the load; "add p, x, c, lsl #2"
 * costs the same, and all of a group's vectors then load from p with immediate offsets. */
TFS_INLINE const void* at_col(const void* x, size_t col, size_t elem_bytes) {
  const char* p = (const char*)x + col * elem_bytes;
  __asm__("" : "+r"(p));
  return p;
}

/* 8 accumulators (one per slot, 4 lanes each) -> the 8 slot sums (pairwise adds). */
TFS_INLINE tfs_f32x8 reduce8_f32(const float32x4_t* a) {
  tfs_f32x8 s = {vpaddq_f32(vpaddq_f32(a[0], a[1]), vpaddq_f32(a[2], a[3])),
                 vpaddq_f32(vpaddq_f32(a[4], a[5]), vpaddq_f32(a[6], a[7]))};
  return s;
}
TFS_INLINE tfs_s32x8 reduce8_s32(const int32x4_t* a) {
  tfs_s32x8 s = {vpaddq_s32(vpaddq_s32(a[0], a[1]), vpaddq_s32(a[2], a[3])),
                 vpaddq_s32(vpaddq_s32(a[4], a[5]), vpaddq_s32(a[6], a[7]))};
  return s;
}

/* The step loop of a block: for each step t the statements STEP (which see q = the step's 8
 * columns, c = the step's column pointer, wt = its weights), U steps per iteration (the loop's
 * own cost - counter, branch, pointer updates - is paid once per U steps), the rest one by one. */
#define TFS_FOR_STEPS(w_t, G, U, ...)                                     \
  do {                                                                    \
    int32_t t_ = 0;                                                       \
    for (; t_ + (U) <= steps; t_ += (U)) {                                \
      TFS_UNROLL                                                          \
      for (int u_ = 0; u_ < (U); ++u_) {                                  \
        const uint16_t* c = col + 8 * (t_ + u_);                          \
        const w_t* wt = w + (size_t)8 * (G) * (size_t)(t_ + u_);          \
        const uint64_t q[2] = {ld64(c), ld64(c + 4)};                     \
        __VA_ARGS__                                                       \
      }                                                                   \
    }                                                                     \
    for (; t_ < steps; ++t_) {                                            \
      const uint16_t* c = col + 8 * t_;                                   \
      const w_t* wt = w + (size_t)8 * (G) * (size_t)t_;                   \
      const uint64_t q[2] = {ld64(c), ld64(c + 4)};                       \
      __VA_ARGS__                                                         \
    }                                                                     \
  } while (0)

/* Block b's slot sums s (int32 or float lanes, T) += each slot's ragged tail TAIL(L, xb, k). */
#define TFS_ADD_TAILS(s, T, VLD, VADD, TAIL)                          \
  do {                                                                \
    T t_[8];                                                          \
    for (int i_ = 0; i_ < 8; ++i_) {                                  \
      const int32_t k_ = P->tail[8 * b + i_];                         \
      t_[i_] = k_ >= 0 ? (T)TAIL(L, xb, k_) : (T)0;                   \
    }                                                                 \
    s.lo = VADD(s.lo, VLD(t_));                                       \
    s.hi = VADD(s.hi, VLD(t_ + 4));                                   \
  } while (0)

/* The 8 values o[] (u_t: y's element type) of block b -> y row yb, at the slots' original rows
 * (padding slots, only in the last block, have perm -1). Through memory: the compiler would
 * otherwise store each lane straight from its vector (ST1 {v.s}[i], a load/store slot plus a
 * vector slot per row); the empty asm makes it read o[] back as scalars (LDP pairs). */
#define TFS_SCATTER(yb, o, perm, u_t)                                 \
  do {                                                                \
    u_t* yu_ = (u_t*)(void*)(yb);                                     \
    u_t ou_[8];                                                       \
    memcpy(ou_, (o), sizeof ou_);                                     \
    __asm__("" : : "r"(ou_) : "memory");                              \
    if ((perm)[7] >= 0) {                                             \
      TFS_UNROLL                                                      \
      for (int i_ = 0; i_ < 8; ++i_) yu_[(perm)[i_]] = ou_[i_];       \
    } else {                                                          \
      for (int i_ = 0; i_ < 8; ++i_)                                  \
        if ((perm)[i_] >= 0) yu_[(perm)[i_]] = ou_[i_];               \
    }                                                                 \
  } while (0)

/* The packed copy's arrays as locals (the compiler cannot keep fields of *P in registers across
 * stores through y, which may alias anything): blocks are contiguous, so the column and weight
 * pointers just advance by each block's steps. */
#define TFS_PACKED_LOCALS(w_t, b_t)                           \
  const int32_t n_blocks = P->n_blocks, in = L->in, out = L->out; \
  const int64_t* blk_off = P->blk_off;                          \
  const uint16_t* colp = P->col;                                \
  const w_t* wp = (const w_t*)P->w;                             \
  const int32_t* perm = P->perm;                                \
  const b_t* bias = (const b_t*)P->bias

/* Block b's number of steps (entries / 8). */
#define TFS_BLOCK_STEPS(b) \
  const int32_t steps = (int32_t)((uint64_t)(blk_off[(b) + 1] - blk_off[(b)]) >> 3)

/* The exported kernel NAME (tfs_kernel_fn) over RUN(L, P, x, y, batch, ws, G, RAG), instantiated
 * with and without ragged tails (RAG: in % g != 0, decided once per layer). */
#define TFS_NEON_KERNEL(NAME, RUN, G, T, ATTR)                                                   \
  ATTR void NAME(const void* layer, const void* packed, const void* x, void* y, int32_t batch,   \
                 void* ws) {                                                                      \
    const tfs_gsfc_layer* L = (const tfs_gsfc_layer*)layer;                                      \
    const tfs_gsfc_packed* P = (const tfs_gsfc_packed*)packed;                                   \
    if (L->in_full != L->in) RUN(L, P, (const T*)x, (T*)y, batch, ws, G, 1);                     \
    else RUN(L, P, (const T*)x, (T*)y, batch, ws, G, 0);                                         \
  }

/* ------------------------------------------------------------------------------------------ */
/* float32: FMLA                                                                              */
/* ------------------------------------------------------------------------------------------ */

/* One step of a block (group t of each of the 8 slots), g = 8 / 16 (g = 4: blk_f32_g4): slot i's
 * x is at byte offset o[i] of x (P->xoff, read two at a time by LDP); its weights are
 * wt[i * G ..]. G / 4 FMLAs per slot, FMUL for the block's first step (no zeroing of the
 * accumulators); the address once (ADD), then loads with immediate offsets. */
TFS_INLINE void step_f32(float32x4_t* a, const char* x, const uint32_t* o, const float* wt,
                         const int G, const int first) {
  TFS_UNROLL
  for (int i = 0; i < 8; ++i) {
    const float* xp = (const float*)(const void*)(x + o[i]);
    if (G > 4) xp = (const float*)at_col(xp, 0, 4);
    TFS_UNROLL
    for (int v = 0; v < G / 4; ++v) {
      const float32x4_t wv = vld1q_f32(wt + i * G + 4 * v), xv = vld1q_f32(xp + 4 * v);
      a[i] = (first && v == 0) ? vmulq_f32(wv, xv) : vfmaq_f32(a[i], wv, xv);
    }
  }
}

/* A block's 8 slot sums (steps >= 1), g = 8 / 16: the first step, then the (steps - 1) % 4 odd
 * steps one by one, then 4 steps per iteration (the offset pointer is the counter). */
TFS_INLINE tfs_f32x8 blk_f32(const char* x, const uint32_t* o, const float* w, int32_t steps,
                             const int G) {
  float32x4_t a[8];
  step_f32(a, x, o, w, G, 1);
  const uint32_t* const end = o + 8 * (size_t)steps;
  o += 8;
  w += 8 * G;
  for (int32_t r = (steps - 1) & 3; r > 0; --r, o += 8, w += 8 * G) step_f32(a, x, o, w, G, 0);
  for (; o != end; o += 32, w += 32 * G) {
    TFS_UNROLL
    for (int u = 0; u < 4; ++u) step_f32(a, x, o + 8 * u, w + 8 * G * u, G, 0);
  }
  return reduce8_f32(a);
}

/* g = 4 in assembly: a group is its share of an LDP of two byte offsets, one LDR Q with a
 * register offset (x), half an LDP Q (weights) and one FMLA, i.e. 4 + 1/4 instructions, and
 * compilers do not keep that shape (GCC 12 splits about a quarter of the offset pairs into single
 * loads and copies accumulators between the loops). Registers: accumulators v0-v7 (slot i in vi),
 * x v16-v23, weights v24-v31, offsets w9-w16. Pointers advance by post-indexed loads (the first
 * pair of each array in an iteration; the rest at negative offsets from the new value). */
#define TFS_F4_STEP(OP, OA, OB, OC, OD, WA, WB, WC, WD)                                       \
  "ldp w9, w10, " OA "\n\t"                                                                   \
  "ldp w11, w12, " OB "\n\t"                                                                  \
  "ldp w13, w14, " OC "\n\t"                                                                  \
  "ldp w15, w16, " OD "\n\t"                                                                  \
  "ldr q16, [%[x], w9, uxtw]\n\t"                                                             \
  "ldr q17, [%[x], w10, uxtw]\n\t"                                                            \
  "ldr q18, [%[x], w11, uxtw]\n\t"                                                            \
  "ldr q19, [%[x], w12, uxtw]\n\t"                                                            \
  "ldr q20, [%[x], w13, uxtw]\n\t"                                                            \
  "ldr q21, [%[x], w14, uxtw]\n\t"                                                            \
  "ldr q22, [%[x], w15, uxtw]\n\t"                                                            \
  "ldr q23, [%[x], w16, uxtw]\n\t"                                                            \
  "ldp q24, q25, " WA "\n\t"                                                                  \
  "ldp q26, q27, " WB "\n\t"                                                                  \
  "ldp q28, q29, " WC "\n\t"                                                                  \
  "ldp q30, q31, " WD "\n\t"                                                                  \
  OP " v0.4s, v24.4s, v16.4s\n\t"                                                             \
  OP " v1.4s, v25.4s, v17.4s\n\t"                                                             \
  OP " v2.4s, v26.4s, v18.4s\n\t"                                                             \
  OP " v3.4s, v27.4s, v19.4s\n\t"                                                             \
  OP " v4.4s, v28.4s, v20.4s\n\t"                                                             \
  OP " v5.4s, v29.4s, v21.4s\n\t"                                                             \
  OP " v6.4s, v30.4s, v22.4s\n\t"                                                             \
  OP " v7.4s, v31.4s, v23.4s\n\t"
#define TFS_AT(P, OFF) "[%[" P "], #" #OFF "]"
#define TFS_POST(P, INC) "[%[" P "]], #" #INC
/* The block, n = steps - 1 >= 0: step 0 by FMUL (no zeroing), n / 4 iterations of 4 steps, n % 4
 * single steps (one counter: the loop exits and the remainder test are the flags of its SUBS /
 * ADDS), then the pairwise reduction to the 8 slot sums; *po and *pw advance past the block. */
TFS_INLINE tfs_f32x8 blk_f32_g4(const char* x, const uint32_t** po, const float** pw, int64_t n) {
  const uint32_t* o = *po;
  const float* w = *pw;
  tfs_f32x8 s;
  __asm__(
      TFS_F4_STEP("fmul", TFS_POST("o", 32), TFS_AT("o", -24), TFS_AT("o", -16), TFS_AT("o", -8),
                  TFS_POST("w", 128), TFS_AT("w", -96), TFS_AT("w", -64), TFS_AT("w", -32))
      "subs %[n], %[n], #4\n\t"
      "b.lt 2f\n"
      "3:\n\t"
      TFS_F4_STEP("fmla", TFS_POST("o", 128), TFS_AT("o", -120), TFS_AT("o", -112), TFS_AT("o", -104),
                  TFS_POST("w", 512), TFS_AT("w", -480), TFS_AT("w", -448), TFS_AT("w", -416))
      TFS_F4_STEP("fmla", TFS_AT("o", -96), TFS_AT("o", -88), TFS_AT("o", -80), TFS_AT("o", -72),
                  TFS_AT("w", -384), TFS_AT("w", -352), TFS_AT("w", -320), TFS_AT("w", -288))
      TFS_F4_STEP("fmla", TFS_AT("o", -64), TFS_AT("o", -56), TFS_AT("o", -48), TFS_AT("o", -40),
                  TFS_AT("w", -256), TFS_AT("w", -224), TFS_AT("w", -192), TFS_AT("w", -160))
      TFS_F4_STEP("fmla", TFS_AT("o", -32), TFS_AT("o", -24), TFS_AT("o", -16), TFS_AT("o", -8),
                  TFS_AT("w", -128), TFS_AT("w", -96), TFS_AT("w", -64), TFS_AT("w", -32))
      "subs %[n], %[n], #4\n\t"
      "b.ge 3b\n"
      "2:\n\t"
      "adds %[n], %[n], #4\n\t"
      "b.eq 4f\n"
      "1:\n\t"
      TFS_F4_STEP("fmla", TFS_POST("o", 32), TFS_AT("o", -24), TFS_AT("o", -16), TFS_AT("o", -8),
                  TFS_POST("w", 128), TFS_AT("w", -96), TFS_AT("w", -64), TFS_AT("w", -32))
      "subs %[n], %[n], #1\n\t"
      "b.ne 1b\n"
      "4:\n\t"
      "faddp v0.4s, v0.4s, v1.4s\n\t"
      "faddp v2.4s, v2.4s, v3.4s\n\t"
      "faddp v4.4s, v4.4s, v5.4s\n\t"
      "faddp v6.4s, v6.4s, v7.4s\n\t"
      "faddp %[lo].4s, v0.4s, v2.4s\n\t"
      "faddp %[hi].4s, v4.4s, v6.4s\n\t"
      : [lo] "=w"(s.lo), [hi] "=w"(s.hi), [o] "+r"(o), [w] "+r"(w), [n] "+r"(n)
      : [x] "r"(x)
      : "cc", "memory", "x9", "x10", "x11", "x12", "x13", "x14", "x15", "x16", "v0", "v1", "v2",
        "v3", "v4", "v5", "v6", "v7", "v16", "v17", "v18", "v19", "v20", "v21", "v22", "v23",
        "v24", "v25", "v26", "v27", "v28", "v29", "v30", "v31");
  *po = o;
  *pw = w;
  return s;
}

/* tfs_act_f32 on 4 lanes; FMAXNM / FMINNM map NaN to 0 under RELU / RELU6 as the C does. */
TFS_INLINE float32x4_t act4_f32(float32x4_t v, int act) {
  if (act == TFS_ACT_RELU) return vmaxnmq_f32(v, vdupq_n_f32(0.0f));
  if (act == TFS_ACT_RELU6) return vminnmq_f32(vmaxnmq_f32(v, vdupq_n_f32(0.0f)), vdupq_n_f32(6.0f));
  return v;
}

/* 8 float32 outputs (lo: slots 0-3, hi: 4-7) -> y[perm[i]], every perm[i] >= 0: through a
 * 32-byte buffer read back as 32-bit integers, the rows read in pairs (LDP), so each row costs
 * a quarter of two loads and one general-register store (an FP store with a register offset
 * would take an extra integer-pipe slot on the Neoverse N1). */
TFS_INLINE void scatter8_f32(float* y, const int32_t* perm, float32x4_t lo, float32x4_t hi) {
  uint32_t t[8];
  __asm__("stp %q[lo], %q[hi], [%[t]]\n\t"
          "ldp w9, w10, [%[p]]\n\t"
          "ldp w11, w12, [%[p], #8]\n\t"
          "ldp w13, w14, [%[t]]\n\t"
          "ldp w15, w16, [%[t], #8]\n\t"
          "str w13, [%[y], w9, sxtw #2]\n\t"
          "str w14, [%[y], w10, sxtw #2]\n\t"
          "str w15, [%[y], w11, sxtw #2]\n\t"
          "str w16, [%[y], w12, sxtw #2]\n\t"
          "ldp w9, w10, [%[p], #16]\n\t"
          "ldp w11, w12, [%[p], #24]\n\t"
          "ldp w13, w14, [%[t], #16]\n\t"
          "ldp w15, w16, [%[t], #24]\n\t"
          "str w13, [%[y], w9, sxtw #2]\n\t"
          "str w14, [%[y], w10, sxtw #2]\n\t"
          "str w15, [%[y], w11, sxtw #2]\n\t"
          "str w16, [%[y], w12, sxtw #2]\n\t"
          :
          : [lo] "w"(lo), [hi] "w"(hi), [t] "r"(t), [p] "r"(perm), [y] "r"(y)
          : "memory", "x9", "x10", "x11", "x12", "x13", "x14", "x15", "x16");
}

/* The 8 rows of one block for every batch row (B1: batch is 1, no batch loop). n: the block's
 * steps - 1 (-1: no steps, the rows are bias and tails only; only with ragged tails, RAG: on
 * AArch64 a float32 layer without them packs every block with at least one step, tfs_gsfc_pack.c's
 * min_one_step); bias / perm: the block's 8 slots';
 * *po / *pw: the block's byte offsets and weights, advanced past it. LAST: the last block, the
 * only one that can hold padding slots (perm -1), whose rows are not written. */
TFS_INLINE void blk_rows_f32(const tfs_gsfc_layer* L, const tfs_gsfc_packed* P, int32_t b,
                             int64_t n, const float* bias, const int32_t* perm, const float* x,
                             float* y, int32_t batch, const uint32_t** po, const float** pw,
                             const int G, const int RAG, const int ACT, const int B1,
                             const int LAST) {
  const float32x4_t b_lo = vld1q_f32(bias), b_hi = vld1q_f32(bias + 4);
  const uint32_t* const o0 = *po;
  const float* const w0 = *pw;
  const float* xb = x;
  float* yb = y;
  int32_t bi = B1 ? 1 : batch;
  do {
    if (!B1) {
      *po = o0;
      *pw = w0;
    }
    tfs_f32x8 s = {b_lo, b_hi};
    if (!RAG || n >= 0) {
      tfs_f32x8 d;
      if (G == 4) {
        d = blk_f32_g4((const char*)xb, po, pw, n);
      } else {
        d = blk_f32((const char*)xb, *po, *pw, (int32_t)n + 1, G);
        *po += 8 * (size_t)(n + 1);
        *pw += 8 * (size_t)G * (size_t)(n + 1);
      }
      s.lo = vaddq_f32(d.lo, b_lo);
      s.hi = vaddq_f32(d.hi, b_hi);
    }
    if (RAG) TFS_ADD_TAILS(s, float, vld1q_f32, vaddq_f32, tfs_gsfc_tail_f32);
    const float32x4_t lo = act4_f32(s.lo, ACT), hi = act4_f32(s.hi, ACT);
    if (!LAST || perm[7] >= 0) {
      scatter8_f32(yb, perm, lo, hi);
    } else {
      float t[8];
      vst1q_f32(t, lo);
      vst1q_f32(t + 4, hi);
      for (int i = 0; i < 8; ++i)
        if (perm[i] >= 0) yb[perm[i]] = t[i];
    }
    xb += L->in;
    yb += L->out;
  } while (!B1 && --bi > 0);
}

/* ACT: the layer's activation as a compile-time constant (no branch per block). g = 4 peels the
 * last block, the only one that can hold padding slots (g = 8 / 16 test every block: half the
 * code for their larger unrolled blocks). The packed
 * copy's arrays are locals: the assembly's memory clobber would force reloads of *P's fields. */
TFS_INLINE void run_f32(const tfs_gsfc_layer* L, const tfs_gsfc_packed* P, const float* x,
                        float* y, int32_t batch, const int G, const int RAG, const int ACT,
                        const int B1) {
  const int32_t n_blocks = P->n_blocks;
  if (batch <= 0 || n_blocks <= 0) return;
  const int64_t* blk_off = P->blk_off;
  const float* bias = (const float*)P->bias;
  const int32_t* perm = P->perm;
  const uint32_t* o = P->xoff;
  const float* w = (const float*)P->w;
  int64_t e0 = blk_off[0];
  int32_t b = 0;
  for (; b < n_blocks - (G == 4); ++b, bias += 8, perm += 8) {
    const int64_t e1 = blk_off[b + 1];
    blk_rows_f32(L, P, b, ((e1 - e0) >> 3) - 1, bias, perm, x, y, batch, &o, &w, G, RAG, ACT, B1,
                 G != 4);
    e0 = e1;
  }
  if (G != 4) return;
  blk_rows_f32(L, P, b, ((blk_off[b + 1] - e0) >> 3) - 1, bias, perm, x, y, batch, &o, &w, G, RAG,
               ACT, B1, 1);
}

/* The float32 kernels: run_f32 instantiated per ragged-tail case and activation, for g = 4 (the
 * assembly block, whose per-block work matters most) also for batch 1. */
#define TFS_F32_RUN(G, RAG, ACT)                                                                  \
  do {                                                                                            \
    if ((G) == 4 && batch == 1) run_f32(L, P, xf, yf, 1, G, RAG, ACT, 1);                         \
    else run_f32(L, P, xf, yf, batch, G, RAG, ACT, 0);                                            \
  } while (0)
#define TFS_NEON_F32_KERNEL(NAME, G)                                                              \
  void NAME(const void* layer, const void* packed, const void* x, void* y, int32_t batch,         \
            void* ws) {                                                                           \
    (void)ws;                                                                                     \
    const tfs_gsfc_layer* L = (const tfs_gsfc_layer*)layer;                                       \
    const tfs_gsfc_packed* P = (const tfs_gsfc_packed*)packed;                                    \
    const float* xf = (const float*)x;                                                            \
    float* yf = (float*)y;                                                                        \
    const int rag = L->in_full != L->in;                                                          \
    switch (L->activation) {                                                                      \
      case TFS_ACT_RELU:                                                                          \
        if (rag) TFS_F32_RUN(G, 1, TFS_ACT_RELU);                                                 \
        else TFS_F32_RUN(G, 0, TFS_ACT_RELU);                                                     \
        break;                                                                                    \
      case TFS_ACT_RELU6:                                                                         \
        if (rag) TFS_F32_RUN(G, 1, TFS_ACT_RELU6);                                                \
        else TFS_F32_RUN(G, 0, TFS_ACT_RELU6);                                                    \
        break;                                                                                    \
      default:                                                                                    \
        if (rag) TFS_F32_RUN(G, 1, TFS_ACT_NONE);                                                 \
        else TFS_F32_RUN(G, 0, TFS_ACT_NONE);                                                     \
    }                                                                                             \
  }

TFS_NEON_F32_KERNEL(tfs_gsfc_neon_f32_g4, 4)
TFS_NEON_F32_KERNEL(tfs_gsfc_neon_f32_g8, 8)
TFS_NEON_F32_KERNEL(tfs_gsfc_neon_f32_g16, 16)

/* ------------------------------------------------------------------------------------------ */
/* int8 epilogue                                                                              */
/* ------------------------------------------------------------------------------------------ */

/* The requantization constants of a layer, made once per call (kept in registers: *L would be
 * reloaded after every store through y). fp32 flavour: lo / hi = act_min / act_max - out_zp;
 * rounding by the magic number 1.5 * 2^23 (f + magic has an ulp of 1 for |f| <= 2^22, so the FP
 * add rounds f to an integer, half to even, like tfs_round_half_even; the clamped |f| <= 255),
 * whose bit pattern minus (0x4B400000 - out_zp) is round(f) + out_zp. */
typedef struct {
  float32x4_t lo, hi, magic;
  int32x4_t bits_minus_zp;
  int fp32;
} tfs_rq;

TFS_INLINE tfs_rq rq_consts(const tfs_gsfc_layer* L) {
  tfs_rq q = {vdupq_n_f32((float)(L->act_min - L->out_zp)), vdupq_n_f32((float)(L->act_max - L->out_zp)),
              vdupq_n_f32(12582912.0f), vdupq_n_s32(0x4B400000 - L->out_zp), L->requant == TFS_REQUANT_FP32};
  return q;
}

/* 4 int32 accumulators (bias included) -> 4 int8 as int16 lanes: exactly tfs_requant_i8's fp32
 * flavour. SCVTF and FMUL round to nearest like the C conversion and product, FMAX/FMIN clamp
 * like the C comparisons (no NaN can occur: scale is finite); every value is then in [act_min,
 * act_max], so narrowing is exact. */
TFS_INLINE int16x4_t requant4_fp32(int32x4_t acc, float32x4_t scale, const tfs_rq* q) {
  float32x4_t f = vmulq_f32(vcvtq_f32_s32(acc), scale);
  f = vaddq_f32(vminq_f32(vmaxq_f32(f, q->lo), q->hi), q->magic);
  return vmovn_s32(vsubq_s32(vreinterpretq_s32_f32(f), q->bits_minus_zp));
}

/* Block b's 8 slot sums s (bias included) of one batch row -> y row yb. */
TFS_INLINE void finish_i8(const tfs_gsfc_layer* L, const tfs_gsfc_packed* P, int32_t b,
                          const int32_t* perm, tfs_s32x8 s, int8_t* yb, const tfs_rq* q) {
  if (q->fp32) {
    const int8x8_t v = vmovn_s16(vcombine_s16(requant4_fp32(s.lo, vld1q_f32(P->scale + 8 * b), q),
                                              requant4_fp32(s.hi, vld1q_f32(P->scale + 8 * b + 4), q)));
    int8_t o[8];
    vst1_s8(o, v);
    TFS_SCATTER(yb, o, perm, uint8_t);
    return;
  }
  int32_t a[8];
  vst1q_s32(a, s.lo);
  vst1q_s32(a + 4, s.hi);
  for (int i = 0; i < 8; ++i)
    if (perm[i] >= 0) yb[perm[i]] = tfs_gsfc_requant(L, perm[i], a[i]);
}

/* ------------------------------------------------------------------------------------------ */
/* int8 on any AArch64 core: SMLAL on x - input_zp widened to int16 (as the portable kernel)  */
/* ------------------------------------------------------------------------------------------ */

/* A block's 8 slot sums over xs = x - zp (int16; products |w * xs| <= 128 * 255, lanes wrap
 * modulo 2^32 like the portable sum): per slot one accumulator, weights sign-extended with
 * SXTL, two SMLALs per 8 weights (g = 4: slots in pairs, one SMLAL(2) each). */
TFS_INLINE tfs_s32x8 blk_smlal(const int16_t* xs, const uint16_t* col, const int8_t* w,
                               int32_t steps, const int G) {
  int32x4_t a[8];
  TFS_UNROLL
  for (int i = 0; i < 8; ++i) a[i] = vdupq_n_s32(0);
  TFS_FOR_STEPS(int8_t, G, 2,
    if (G == 4) {
      TFS_UNROLL
      for (int j = 0; j < 2; ++j) { /* slots 4j .. 4j + 3: 16 weights */
        const int8x16_t wv = vld1q_s8(wt + 16 * j);
        const int16x8_t w01 = vmovl_s8(vget_low_s8(wv)), w23 = vmovl_high_s8(wv);
        const int16x8_t x01 = vcombine_s16(vld1_s16((const int16_t*)at_col(xs, TFS_COL(q, 4 * j), 2)),
                                           vld1_s16((const int16_t*)at_col(xs, TFS_COL(q, 4 * j + 1), 2)));
        const int16x8_t x23 = vcombine_s16(vld1_s16((const int16_t*)at_col(xs, TFS_COL(q, 4 * j + 2), 2)),
                                           vld1_s16((const int16_t*)at_col(xs, TFS_COL(q, 4 * j + 3), 2)));
        a[4 * j] = vmlal_s16(a[4 * j], vget_low_s16(w01), vget_low_s16(x01));
        a[4 * j + 1] = vmlal_high_s16(a[4 * j + 1], w01, x01);
        a[4 * j + 2] = vmlal_s16(a[4 * j + 2], vget_low_s16(w23), vget_low_s16(x23));
        a[4 * j + 3] = vmlal_high_s16(a[4 * j + 3], w23, x23);
      }
    } else {
      TFS_UNROLL
      for (int i = 0; i < 8; ++i) {
        const int16_t* xp = (const int16_t*)at_col(xs, TFS_COL(q, i), 2);
        TFS_UNROLL
        for (int v = 0; v < G / 8; ++v) {
          const int16x8_t wc = vmovl_s8(vld1_s8(wt + i * G + 8 * v)), xc = vld1q_s16(xp + 8 * v);
          a[i] = vmlal_s16(a[i], vget_low_s16(wc), vget_low_s16(xc));
          a[i] = vmlal_high_s16(a[i], wc, xc);
        }
      }
    });
  return reduce8_s32(a);
}

TFS_INLINE void run_i8_smlal(const tfs_gsfc_layer* L, const tfs_gsfc_packed* P, const int8_t* x,
                             int8_t* y, int32_t batch, void* ws, const int G, const int RAG) {
  TFS_PACKED_LOCALS(int8_t, int32_t);
  const tfs_rq rq = rq_consts(L);
  int16_t* xs = (int16_t*)ws;
  tfs_neon_widen_i16(x, xs, (size_t)batch * (size_t)in, L->in_zp);
  for (int32_t b = 0; b < n_blocks; ++b, perm += 8, bias += 8) {
    TFS_BLOCK_STEPS(b);
    for (int32_t bi = 0; bi < batch; ++bi) {
      const int16_t* xb = xs + (size_t)bi * in;
      tfs_s32x8 s = blk_smlal(xb, colp, wp, steps, G);
      s.lo = vaddq_s32(s.lo, vld1q_s32(bias)); /* lanes wrap modulo 2^32, as the portable sum */
      s.hi = vaddq_s32(s.hi, vld1q_s32(bias + 4));
      if (RAG) TFS_ADD_TAILS(s, int32_t, vld1q_s32, vaddq_s32, tfs_gsfc_tail_i16);
      finish_i8(L, P, b, perm, s, y + (size_t)bi * out, &rq);
    }
    colp += 8 * (size_t)steps;
    wp += 8 * (size_t)G * (size_t)steps;
  }
}

TFS_NEON_KERNEL(tfs_gsfc_neon_i8_g4, run_i8_smlal, 4, int8_t, )
TFS_NEON_KERNEL(tfs_gsfc_neon_i8_g8, run_i8_smlal, 8, int8_t, )
TFS_NEON_KERNEL(tfs_gsfc_neon_i8_g16, run_i8_smlal, 16, int8_t, )

/* ------------------------------------------------------------------------------------------ */
/* int8 with the dot-product extension: SDOT on the raw int8 x                                */
/* ------------------------------------------------------------------------------------------ */
/* sum w * (x - zp) = sum w * x - zp * sum w, exactly, modulo 2^32: SDOT multiplies the raw
 * bytes; the second term is in the slot biases (P->bias_s8, made by tfs_gsfc_pack). One SDOT
 * takes 16 weights: one slot's group (g = 16), two slots' (g = 8: lanes 0-1 and 2-3) or four
 * (g = 4: one lane per slot, so the accumulators are already the slot sums). */

/* The x bytes of 16 / G slots starting at slot i (G bytes each, from their first columns). */
TFS_DOTPROD TFS_INLINE int8x16_t gather_x(const int8_t* x, const uint64_t* q, int i, const int G) {
  if (G == 16) return vld1q_s8((const int8_t*)at_col(x, TFS_COL(q, i), 1));
  if (G == 8)
    return vcombine_s8(vld1_s8((const int8_t*)at_col(x, TFS_COL(q, i), 1)),
                       vld1_s8((const int8_t*)at_col(x, TFS_COL(q, i + 1), 1)));
  int32x4_t v = vdupq_n_s32(ld32(x + TFS_COL(q, i)));
  v = vsetq_lane_s32(ld32(x + TFS_COL(q, i + 1)), v, 1);
  v = vsetq_lane_s32(ld32(x + TFS_COL(q, i + 2)), v, 2);
  v = vsetq_lane_s32(ld32(x + TFS_COL(q, i + 3)), v, 3);
  return vreinterpretq_s8_s32(v);
}

/* A block's 8 slot sums (without the bias): 8 / (16 / G) accumulators, one SDOT each per step. */
TFS_DOTPROD TFS_INLINE tfs_s32x8 blk_sdot(const int8_t* x, const uint16_t* col, const int8_t* w,
                                          int32_t steps, const int G) {
  const int NA = G / 2; /* accumulators: 8, 4, 2 for G = 16, 8, 4 */
  int32x4_t a[8];
  TFS_UNROLL
  for (int j = 0; j < NA; ++j) a[j] = vdupq_n_s32(0);
  TFS_FOR_STEPS(int8_t, G, 2,
    TFS_UNROLL
    for (int j = 0; j < NA; ++j)
      a[j] = tfs_sdot(a[j], vld1q_s8(wt + 16 * j), gather_x(x, q, j * (16 / G), G));
  );
  if (G == 16) return reduce8_s32(a);
  if (G == 8) { /* a[j] = [slot 2j, slot 2j, slot 2j+1, slot 2j+1] */
    tfs_s32x8 s = {vpaddq_s32(a[0], a[1]), vpaddq_s32(a[2], a[3])};
    return s;
  }
  tfs_s32x8 s = {a[0], a[1]};
  return s;
}

TFS_DOTPROD TFS_INLINE void run_i8_sdot(const tfs_gsfc_layer* L, const tfs_gsfc_packed* P,
                                        const int8_t* x, int8_t* y, int32_t batch, void* ws,
                                        const int G, const int RAG) {
  (void)ws;
  TFS_PACKED_LOCALS(int8_t, int32_t);
  const tfs_rq rq = rq_consts(L);
  bias = P->bias_s8; /* zp * sum(w) folded in */
  for (int32_t b = 0; b < n_blocks; ++b, perm += 8, bias += 8) {
    TFS_BLOCK_STEPS(b);
    for (int32_t bi = 0; bi < batch; ++bi) {
      const int8_t* xb = x + (size_t)bi * in;
      tfs_s32x8 s = blk_sdot(xb, colp, wp, steps, G);
      s.lo = vaddq_s32(s.lo, vld1q_s32(bias));
      s.hi = vaddq_s32(s.hi, vld1q_s32(bias + 4));
      if (RAG) TFS_ADD_TAILS(s, int32_t, vld1q_s32, vaddq_s32, tfs_gsfc_tail_i8);
      finish_i8(L, P, b, perm, s, y + (size_t)bi * out, &rq);
    }
    colp += 8 * (size_t)steps;
    wp += 8 * (size_t)G * (size_t)steps;
  }
}

TFS_NEON_KERNEL(tfs_gsfc_neon_i8_dot_g4, run_i8_sdot, 4, int8_t, TFS_DOTPROD)
TFS_NEON_KERNEL(tfs_gsfc_neon_i8_dot_g8, run_i8_sdot, 8, int8_t, TFS_DOTPROD)
TFS_NEON_KERNEL(tfs_gsfc_neon_i8_dot_g16, run_i8_sdot, 16, int8_t, TFS_DOTPROD)

#else
/* Not AArch64: only the probes, saying no. */
int tfs_arm_has_neon(void) { return 0; }
int tfs_arm_has_dotprod(void) { return 0; }
#endif /* __aarch64__ */
