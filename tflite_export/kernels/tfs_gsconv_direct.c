/* TFS_GROUP_SPARSE_CONV2D, float32, im2col-free ("direct") path: the host (LiteRT) adapter's
 * choice (tfs_gsconv_set_direct; tfs_group_sparse_conv.h). int8 and TFLite Micro keep im2col.
 *
 * The im2col path copies K = kh*kw*cin values per output position before the FC core skips
 * anything, so a sparse float32 conv stayed im2col-bound (LeNet-5's conv1, K = 25: 12.4 us at
 * 4 of 80 groups kept against XNNPACK's 11.6 us dense). Here the work is stored weights x
 * positions:
 *
 *  1. planes: the image, zero-padded, as stride_h * stride_w phase planes per input channel
 *     (plane (c, ry, rx) row qy, column qx = padded input (qy * stride_h + ry, qx * stride_w + rx),
 *     channel c; dp_h x dp_w each). Tap (ky, kx, c) of output (oy, ox) then reads plane
 *     (c, ky*dil_h % stride_h, kx*dil_w % stride_w) at row oy + ky*dil_h / stride_h, column
 *     ox + kx*dil_w / stride_w: for every stride and dilation a tap is one offset into the planes
 *     plus the "wide" output index i = oy * dp_w + ox (columns out_w..dp_w-1 of a row are computed
 *     and dropped), so each stored weight is one contiguous axpy over the wide index. Cost: the
 *     padded input's size, once per image.
 *  2. col_off[k] = that offset for each column k of the flattened [kh][kw][cin] filter, once
 *     per call (K values).
 *  3. per chunk of CH wide indices and per filter: CH accumulators in registers start at the
 *     bias, and each stored weight w at column k adds w * planes[col_off[k] + i] (one load and
 *     one FMA per SIMD vector); the fused activation, then the chunk goes to a [cout][CH] buffer.
 *  4. the chunk's valid positions are written to y in NHWC (a filter-major to position-major
 *     transposition through L1).
 *
 * One body (direct_f32, plain C on GCC/Clang vector types of 16 floats) compiled per
 * instruction set by the wrappers at the end, listed in the manifest (tfs_kernels.inc, op GSCD):
 * the AVX-512 one keeps 8 vectors of accumulators (128 positions, 8 zmm), AVX2 + FMA 4 (8 ymm),
 * the portable one 2. Results equal the im2col path's within float32 rounding (another
 * summation order: the reference tests' 1e-5 of the output's magnitude). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "tfs_dispatch.h"
#include "tfs_group_sparse_conv.h"

/* GCC (in ISO C mode) does not contract a * b + c into an FMA by default; Clang does within an
 * expression. A pragma, not a function attribute: the wrappers must inline direct_f32. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=fast")
#endif

#ifdef TFS_SANITIZER_BUILD /* as tfs_gsfc_x86.h: the same code, loops rolled */
#define TFS_DIRECT_UNROLL
#define TFS_DIRECT_INLINE static inline
#else
#define TFS_DIRECT_UNROLL _Pragma("GCC unroll 16")
#define TFS_DIRECT_INLINE static inline __attribute__((always_inline))
#endif

typedef float tfs_v16f __attribute__((vector_size(64)));
typedef int32_t tfs_v16i __attribute__((vector_size(64)));
typedef float tfs_v8f __attribute__((vector_size(32)));
typedef int32_t tfs_v8i __attribute__((vector_size(32)));

/* Two-input shuffles of 8 floats with constant lane lists (GCC's and Clang's builtins). */
#if defined(__clang__)
#define SHUF8(a, b, i0, i1, i2, i3, i4, i5, i6, i7) \
  __builtin_shufflevector(a, b, i0, i1, i2, i3, i4, i5, i6, i7)
#else
#define SHUF8(a, b, i0, i1, i2, i3, i4, i5, i6, i7) \
  __builtin_shuffle(a, b, (tfs_v8i){i0, i1, i2, i3, i4, i5, i6, i7})
#endif

/* r[i][l] -> r[l][i]: at each scale s (4, 2, 1) the off-diagonal s x s blocks swap (vunpck /
 * vshuf / vperm on x86). */
TFS_DIRECT_INLINE void transpose8(tfs_v8f* r) {
  TFS_DIRECT_UNROLL
  for (int i = 0; i < 4; ++i) {
    const tfs_v8f a = r[i], b = r[i + 4];
    r[i] = SHUF8(a, b, 0, 1, 2, 3, 8, 9, 10, 11);
    r[i + 4] = SHUF8(a, b, 4, 5, 6, 7, 12, 13, 14, 15);
  }
  TFS_DIRECT_UNROLL
  for (int k = 0; k < 4; ++k) {
    const int i = (k & 1) + (k & 2) * 2; /* 0, 1, 4, 5 */
    const tfs_v8f a = r[i], b = r[i + 2];
    r[i] = SHUF8(a, b, 0, 1, 8, 9, 4, 5, 12, 13);
    r[i + 2] = SHUF8(a, b, 2, 3, 10, 11, 6, 7, 14, 15);
  }
  TFS_DIRECT_UNROLL
  for (int i = 0; i < 8; i += 2) {
    const tfs_v8f a = r[i], b = r[i + 1];
    r[i] = SHUF8(a, b, 0, 8, 2, 10, 4, 12, 6, 14);
    r[i + 1] = SHUF8(a, b, 1, 9, 3, 11, 5, 13, 7, 15);
  }
}

/* The workspace: planes (+ TFS_GSCONV_DIRECT_CHUNK floats of slack that the last chunk's
 * dropped lanes read), col_off[K], the [cout][CHUNK] chunk buffer; each part 64-byte rounded. */
static size_t round64(size_t n) { return (n + 63) / 64 * 64; }

size_t tfs_gsconv_direct_planes(const tfs_gsconv_layer* L) {
  return (size_t)L->geom.cin * (size_t)L->geom.stride_h * (size_t)L->geom.stride_w *
         (size_t)L->dp_h * (size_t)L->dp_w;
}

size_t tfs_gsconv_direct_workspace_size(const tfs_gsconv_layer* L) {
  return round64((tfs_gsconv_direct_planes(L) + TFS_GSCONV_DIRECT_CHUNK) * sizeof(float)) +
         round64((size_t)L->fc.in * sizeof(int32_t)) +
         round64((size_t)L->fc.out * TFS_GSCONV_DIRECT_CHUNK * sizeof(float));
}

/* Step 1 for one image, channel by channel (any stride; a strided read of x per value). */
TFS_DIRECT_INLINE void to_planes_any(const tfs_gsconv_layer* L, const float* x, float* planes) {
  const tfs_conv_geom* G = &L->geom;
  const int32_t sh = G->stride_h, sw = G->stride_w, dp_h = L->dp_h, dp_w = L->dp_w, cin = G->cin;
  float* p = planes;
  for (int32_t c = 0; c < cin; ++c)
    for (int32_t ry = 0; ry < sh; ++ry)
      for (int32_t rx = 0; rx < sw; ++rx) {
        /* columns qx whose input column qx * sw + rx - pad_left lies in [0, in_w) */
        const int32_t first = rx - G->pad_left; /* input column of qx = 0 */
        int32_t q0 = first < 0 ? (-first + sw - 1) / sw : 0;
        int32_t q1 = G->in_w - first > 0 ? (G->in_w - first + sw - 1) / sw : 0;
        if (q1 > dp_w) q1 = dp_w;
        if (q0 > q1) q0 = q1;
        for (int32_t qy = 0; qy < dp_h; ++qy, p += dp_w) {
          const int32_t iy = qy * sh + ry - G->pad_top;
          if (iy < 0 || iy >= G->in_h) {
            for (int32_t qx = 0; qx < dp_w; ++qx) p[qx] = 0.0f;
            continue;
          }
          const float* xr = x + ((size_t)iy * (size_t)G->in_w + (size_t)(q0 * sw + first)) * (size_t)cin + (size_t)c;
          for (int32_t qx = 0; qx < q0; ++qx) p[qx] = 0.0f;
          for (int32_t qx = q0; qx < q1; ++qx, xr += (size_t)sw * (size_t)cin) p[qx] = *xr;
          for (int32_t qx = q1; qx < dp_w; ++qx) p[qx] = 0.0f;
        }
      }
}

/* Step 1 with horizontal stride 1 and cin >= 8: each input row's [pixels][cin] turned into
 * cin plane rows by 8 x 8 register transposes (ConvNet's conv2, 14 x 14 x 32: the channel-by-
 * channel loop read x with a 128-byte stride). */
TFS_DIRECT_INLINE void to_planes_rows(const tfs_gsconv_layer* L, const float* x, float* planes) {
  const tfs_conv_geom* G = &L->geom;
  const int32_t sh = G->stride_h, dp_h = L->dp_h, dp_w = L->dp_w, cin = G->cin;
  const size_t P = (size_t)dp_h * (size_t)dp_w, cstep = (size_t)sh * P; /* next channel's plane */
  int32_t q0 = G->pad_left, q1 = G->in_w + G->pad_left; /* inside columns [q0, q1) */
  if (q1 > dp_w) q1 = dp_w;
  if (q0 > q1) q0 = q1;
  for (int32_t ry = 0; ry < sh; ++ry)
    for (int32_t qy = 0; qy < dp_h; ++qy) {
      float* p = planes + (size_t)ry * P + (size_t)qy * (size_t)dp_w; /* channel 0's row */
      const int32_t iy = qy * sh + ry - G->pad_top;
      if (iy < 0 || iy >= G->in_h) {
        for (int32_t c = 0; c < cin; ++c)
          for (int32_t qx = 0; qx < dp_w; ++qx) p[c * cstep + qx] = 0.0f;
        continue;
      }
      /* xr[qx * cin + c]: padded column qx >= q0 = pad_left, input column qx - pad_left */
      const float* xr = x + ((size_t)iy * (size_t)G->in_w) * (size_t)cin;
      const int32_t pl = G->pad_left;
      for (int32_t c = 0; c < cin; ++c) {
        for (int32_t qx = 0; qx < q0; ++qx) p[c * cstep + qx] = 0.0f;
        for (int32_t qx = q1; qx < dp_w; ++qx) p[c * cstep + qx] = 0.0f;
      }
      int32_t c0 = 0;
      for (; c0 + 8 <= cin; c0 += 8) {
        int32_t qx = q0;
        for (; qx + 8 <= q1; qx += 8) {
          tfs_v8f r[8];
          TFS_DIRECT_UNROLL
          for (int k = 0; k < 8; ++k) memcpy(&r[k], xr + (size_t)(qx - pl + k) * cin + c0, sizeof r[k]);
          transpose8(r);
          TFS_DIRECT_UNROLL
          for (int k = 0; k < 8; ++k) memcpy(p + (c0 + k) * cstep + qx, &r[k], sizeof r[k]);
        }
        for (; qx < q1; ++qx)
          for (int32_t k = 0; k < 8; ++k) p[(c0 + k) * cstep + qx] = xr[(size_t)(qx - pl) * cin + c0 + k];
      }
      for (; c0 < cin; ++c0)
        for (int32_t qx = q0; qx < q1; ++qx) p[c0 * cstep + qx] = xr[(size_t)(qx - pl) * cin + c0];
    }
}

/* Step 1 for one image, then the slack after the planes. */
TFS_DIRECT_INLINE void to_planes(const tfs_gsconv_layer* L, const float* x, float* planes) {
  if (L->geom.stride_w == 1 && L->geom.cin >= 8)
    to_planes_rows(L, x, planes);
  else
    to_planes_any(L, x, planes);
  float* slack = planes + tfs_gsconv_direct_planes(L);
  for (int32_t i = 0; i < TFS_GSCONV_DIRECT_CHUNK; ++i) slack[i] = 0.0f;
}

/* Step 2. */
TFS_DIRECT_INLINE void column_offsets(const tfs_gsconv_layer* L, int32_t* col_off) {
  const tfs_conv_geom* G = &L->geom;
  const int32_t plane = L->dp_h * L->dp_w;
  int32_t k = 0;
  for (int32_t ky = 0; ky < G->kh; ++ky)
    for (int32_t kx = 0; kx < G->kw; ++kx) {
      const int32_t ty = ky * G->dil_h, tx = kx * G->dil_w;
      const int32_t tap = (ty / G->stride_h) * L->dp_w + tx / G->stride_w;
      for (int32_t c = 0; c < G->cin; ++c, ++k)
        col_off[k] = ((c * G->stride_h + ty % G->stride_h) * G->stride_w + tx % G->stride_w) *
                     plane + tap;
    }
}

/* Step 3 for filter o and the chunk of wide indices at pc - planes: NV vectors of W
 * accumulators, stored (activation applied) to out[0 .. W * NV). Defined for 16-float vectors
 * (AVX-512: 8 zmm) and 8-float ones (AVX2 / portable: GCC keeps 64-byte vectors on the stack
 * where the ISA has no 64-byte registers, measured 4x slower on AVX2). */
/* (unaligned loads by memcpy: no function returns a vector, psABI; a ragged tail's padding is
 * not read; tfs_act_f32 on the vectors: NaN -> 0 under RELU / RELU6, as there) */
#define TFS_DEFINE_FILTER_CHUNK(NAME, VEC, IVEC, W) \
TFS_DIRECT_INLINE void NAME(const tfs_gsfc_layer* F, const int32_t* col_off, \
                                    const float* pc, int32_t o, float* out, const int NV) { \
  const float* values = (const float*)F->values; \
  const int32_t K = F->in, g = F->g, act = F->activation; \
  const VEC zero = {0}, six = zero + 6.0f; \
  VEC acc[16]; \
  TFS_DIRECT_UNROLL \
  for (int v = 0; v < NV; ++v) acc[v] = zero + ((const float*)F->bias)[o]; \
  for (int32_t s = F->row_ptr[o]; s < F->row_ptr[o + 1]; ++s) { \
    const int32_t col = tfs_gsfc_col(F, s); \
    const int32_t n = K - col < g ? K - col : g;  \
    const float* w = values + (size_t)s * (size_t)g; \
    const int32_t* off = col_off + col; \
    for (int32_t j = 0; j < n; ++j) { \
      const float* xp = pc + off[j]; \
      const float wj = w[j]; \
      TFS_DIRECT_UNROLL \
      for (int v = 0; v < NV; ++v) { \
        VEC xv;  \
        memcpy(&xv, xp + W * v, sizeof xv); \
        acc[v] += wj * xv; \
      } \
    } \
  } \
   \
  if (act != TFS_ACT_NONE) { \
    TFS_DIRECT_UNROLL \
    for (int v = 0; v < NV; ++v) { \
      VEC r = (VEC)((IVEC)acc[v] & (acc[v] > zero)); \
      if (act == TFS_ACT_RELU6) { \
        const IVEC m = r < six; \
        r = (VEC)(((IVEC)r & m) | ((IVEC)six & ~m)); \
      } \
      acc[v] = r; \
    } \
  } \
  TFS_DIRECT_UNROLL \
  for (int v = 0; v < NV; ++v) memcpy(out + W * v, &acc[v], sizeof acc[v]); \
}
TFS_DEFINE_FILTER_CHUNK(filter_chunk16, tfs_v16f, tfs_v16i, 16)
TFS_DEFINE_FILTER_CHUNK(filter_chunk8, tfs_v8f, tfs_v8i, 8)

/* One filter's chunk of 16 * NV wide indices: 16-float vectors (WIDE) or twice as many 8-float. */
#define filter_chunk(F, col_off, pc, o, out, NV) \
  (WIDE ? filter_chunk16(F, col_off, pc, o, out, NV) : filter_chunk8(F, col_off, pc, o, out, 2 * (NV)))

/* y = act(conv(x)) for `batch` images: chunks of CH = 16 * NV wide indices (NV <= 8, CH <=
 * TFS_GSCONV_DIRECT_CHUNK), the last one with just the vectors it needs (a 7 x 7 output is 73
 * wide indices: 5 vectors, not 8). */
TFS_DIRECT_INLINE void direct_f32(const tfs_gsconv_layer* L, const float* x, float* y,
                                  int32_t batch, void* workspace, const int NV, const int WIDE) {
  const tfs_gsfc_layer* F = &L->fc;
  const tfs_conv_geom* G = &L->geom;
  const int32_t CH = 16 * NV, cout = F->out, K = F->in, span = L->dspan;
  const int32_t out_w = G->out_w, dp_w = L->dp_w;
  float* planes = (float*)workspace;
  int32_t* col_off = (int32_t*)((unsigned char*)workspace +
                                round64((tfs_gsconv_direct_planes(L) + TFS_GSCONV_DIRECT_CHUNK) * sizeof(float)));
  float* buf = (float*)((unsigned char*)col_off + round64((size_t)K * sizeof(int32_t)));
  const size_t in_size = (size_t)G->in_h * (size_t)G->in_w * (size_t)G->cin;
  const size_t out_size = (size_t)L->positions * (size_t)cout;
  column_offsets(L, col_off);
  for (int32_t b = 0; b < batch; ++b) {
    to_planes(L, x + (size_t)b * in_size, planes);
    float* yb = y + (size_t)b * out_size;
    int32_t oy = 0, ox = 0; /* the output row / wide column of the next wide index */
    for (int32_t i0 = 0; i0 < span; i0 += CH) {
      const float* pc = planes + i0;
      const int32_t n = span - i0 < CH ? span - i0 : CH;
      if (n == CH) {
        for (int32_t o = 0; o < cout; ++o) filter_chunk(F, col_off, pc, o, buf + (size_t)o * CH, NV);
      } else {
        /* the last chunk: ceil(n / 16) vectors; each case a copy of the loop with its count */
        const int nv = (n + 15) / 16;
        for (int32_t o = 0; o < cout; ++o) {
          float* out = buf + (size_t)o * CH;
          switch (nv) {
            case 1: filter_chunk(F, col_off, pc, o, out, 1); break;
            case 2: filter_chunk(F, col_off, pc, o, out, NV >= 2 ? 2 : 1); break;
            case 3: filter_chunk(F, col_off, pc, o, out, NV >= 3 ? 3 : 1); break;
            case 4: filter_chunk(F, col_off, pc, o, out, NV >= 4 ? 4 : 1); break;
            case 5: filter_chunk(F, col_off, pc, o, out, NV >= 5 ? 5 : 1); break;
            case 6: filter_chunk(F, col_off, pc, o, out, NV >= 6 ? 6 : 1); break;
            default: filter_chunk(F, col_off, pc, o, out, NV); break;
          }
        }
      }
      /* Step 4: the chunk's positions (wide indices with ox < out_w) into y, 8 x 8 blocks of
       * (position, filter) transposed in registers, the last cout % 8 filters one by one. */
      for (int32_t j0 = 0; j0 < n; j0 += 8) {
        int32_t pos[8]; /* output position of wide index i0 + j0 + jj, or -1 (dropped) */
        const int32_t m = n - j0 < 8 ? n - j0 : 8;
        for (int32_t jj = 0; jj < 8; ++jj) {
          pos[jj] = jj < m && ox < out_w ? oy * out_w + ox : -1;
          if (jj < m && ++ox == dp_w) { /* (oy, ox) of the next wide index, no division */
            ox = 0;
            ++oy;
          }
        }
        int32_t o0 = 0;
        for (; o0 + 8 <= cout; o0 += 8) {
          tfs_v8f r[8];
          TFS_DIRECT_UNROLL
          for (int k = 0; k < 8; ++k) memcpy(&r[k], buf + (size_t)(o0 + k) * CH + j0, sizeof r[k]);
          transpose8(r);
          TFS_DIRECT_UNROLL
          for (int jj = 0; jj < 8; ++jj) /* pos[jj] < 0 from jj = m on */
            if (pos[jj] >= 0) memcpy(yb + (size_t)pos[jj] * (size_t)cout + o0, &r[jj], sizeof r[jj]);
        }
        for (int32_t jj = 0; jj < m; ++jj)
          if (pos[jj] >= 0)
            for (int32_t o = o0; o < cout; ++o)
              yb[(size_t)pos[jj] * (size_t)cout + o] = buf[(size_t)o * CH + j0 + jj];
      }
    }
  }
}

/* The manifest's GSCD kernels (tfs_kernel_fn): layer = a tfs_gsconv_layer with direct set. */
#define TFS_GSCD_WRAPPER(name, attr, nv, wide)                                                       \
  attr void name(const void* layer, const void* packed, const void* x, void* y, int32_t batch, \
                 void* ws) {                                                                   \
    (void)packed;                                                                              \
    direct_f32((const tfs_gsconv_layer*)layer, (const float*)x, (float*)y, batch, ws, nv, wide); \
  }

#if TFS_GSCONV_DIRECT
#if TFS_X86
TFS_GSCD_WRAPPER(tfs_gscd_avx512_f32, __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma"))), 8, 1)
TFS_GSCD_WRAPPER(tfs_gscd_avx2_f32, __attribute__((target("avx2,fma"))), 4, 0)
#endif
TFS_GSCD_WRAPPER(tfs_gscd_portable_f32, , 2, 0)
#endif
