/* im2col of an NHWC feature map, int8 or float32 (see tfs_im2col.h): one byte-level
 * implementation, a pixel being cin * elem_size bytes. One patch row of
 * the filter (kw * cin pixels) is contiguous in the NHWC input when the horizontal dilation is 1,
 * so it is one copy plus padding fills at the left / right border; rows above / below the input
 * are all padding. Copies go 4 bytes at a time (Cortex-M4 LDR/STR allow unaligned addresses);
 * newlib-nano's memcpy/memset are byte loops. */
/* GCC would turn the copy / fill loops back into memcpy / memset calls (a pragma, not a function
 * attribute: functions with their own optimize attribute are not inlined). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-tree-loop-distribute-patterns")
#endif

#include "tfs_im2col.h"

#include <stddef.h>

#include "tfs_common.h" /* TFS_X86 */
#include <string.h>

static inline void st32(void* p, uint32_t v) { memcpy(p, &v, 4); }

#if TFS_X86
/* x86: 16-, 8- and 4-byte copies (constant-size memcpy, one unaligned vector or integer move
 * each), the last one overlapping the previous: a LeNet-5 conv1 patch row (5 float32, 20 bytes)
 * is two 16-byte moves instead of five 4-byte ones (the im2col of 576 positions was ~60 % of
 * that conv's time: 11.5 -> 9.1 us); rows of 64 bytes and more go to the C library's memcpy.
 * The source and the patches never overlap. */
static inline int8_t* copy_s8(int8_t* d, const int8_t* s, int32_t n) {
  int8_t* const end = d + n;
  if (n >= 64) {
    memcpy(d, s, (size_t)n); /* the C library's, vectorized for long rows */
  } else if (n >= 16) {
    for (; n > 16; n -= 16, d += 16, s += 16) memcpy(d, s, 16);
    memcpy(end - 16, s + n - 16, 16);
  } else if (n >= 8) {
    memcpy(d, s, 8);
    memcpy(end - 8, s + n - 8, 8);
  } else if (n >= 4) {
    memcpy(d, s, 4);
    memcpy(end - 4, s + n - 4, 4);
  } else {
    for (; n > 0; --n) *d++ = *s++;
  }
  return end;
}
#else
static inline uint32_t ld32(const void* p) { uint32_t v; memcpy(&v, p, 4); return v; }

static inline int8_t* copy_s8(int8_t* d, const int8_t* s, int32_t n) {
  for (; n >= 16; n -= 16, d += 16, s += 16) {
    const uint32_t a = ld32(s), b = ld32(s + 4), c = ld32(s + 8), e = ld32(s + 12);
    st32(d, a);
    st32(d + 4, b);
    st32(d + 8, c);
    st32(d + 12, e);
  }
  for (; n >= 4; n -= 4, d += 4, s += 4) st32(d, ld32(s));
  for (; n > 0; --n) *d++ = *s++;
  return d;
}
#endif

static inline int8_t* fill_s8(int8_t* d, uint32_t v4, int32_t n) {
  for (; n >= 4; n -= 4, d += 4) st32(d, v4);
  for (; n > 0; --n) *d++ = (int8_t)v4;
  return d;
}

/* [lo, hi): the filter taps t (0 <= t < k) whose input coordinate o + t * dil is in [0, in). */
static inline void taps_inside(int32_t o, int32_t k, int32_t dil, int32_t in, int32_t* lo, int32_t* hi) {
  int32_t a = o < 0 ? (-o + dil - 1) / dil : 0, b = in - o > 0 ? (in - o + dil - 1) / dil : 0;
  if (a > k) a = k;
  if (b > k) b = k;
  *lo = a;
  *hi = b > a ? b : a;
}

/* A patch wholly inside the input with horizontal dilation 1: kh rows of `row` contiguous bytes,
 * `step` apart. Its own function: inlined into tfs_im2col_s8 it shared that function's spilled
 * registers, and a K = 25 patch cost ~590 cycles on a Cortex-M4 instead of ~100. */
__attribute__((noinline)) static int8_t* patch_inside(int8_t* p, const int8_t* xr, int32_t kh,
                                                      int32_t row, ptrdiff_t step) {
  for (int32_t ky = 0; ky < kh; ++ky, xr += step) p = copy_s8(p, xr, row);
  return p;
}

void tfs_im2col(const tfs_conv_geom* G, const void* xv, int32_t pos0, int32_t n, void* pv,
                int32_t elem_size) {
  /* Every field in a local: stores through int8_t* may alias *G, so GCC would reload them.
   * cin counts bytes from here on (a float32 pixel is 4 * cin of them). */
  const int8_t* x = (const int8_t*)xv;
  int8_t* p = (int8_t*)pv;
  const int32_t in_h = G->in_h, in_w = G->in_w, cin = G->cin * elem_size, out_w = G->out_w, kh = G->kh;
  const int32_t kw = G->kw, sh = G->stride_h, sw = G->stride_w, dh = G->dil_h, dw = G->dil_w;
  const int32_t pad_top = G->pad_top, pad_left = G->pad_left, row = kw * cin;
  const ptrdiff_t x_row = (ptrdiff_t)in_w * cin;
  /* int8 pads with the zero point in every byte; float32 with 0.0f, whose bytes are all zero. */
  const uint32_t pad4 = elem_size == 1 ? (uint32_t)(uint8_t)G->pad_value * 0x01010101u : 0u;
  int32_t oy = pos0 / out_w, ox = pos0 % out_w;
  for (int32_t i = 0; i < n; ++i) {
    const int32_t iy0 = oy * sh - pad_top, ix0 = ox * sw - pad_left;
    if (dw == 1 && iy0 >= 0 && iy0 + (kh - 1) * dh < in_h && ix0 >= 0 && ix0 + kw - 1 < in_w) {
      p = patch_inside(p, x + (ptrdiff_t)iy0 * x_row + (ptrdiff_t)ix0 * cin, kh, row, dh * x_row);
      if (++ox == out_w) {
        ox = 0;
        ++oy;
      }
      continue;
    }
    int32_t r0, r1, k0, k1; /* filter rows [r0, r1) and columns [k0, k1) read the input */
    taps_inside(iy0, kh, dh, in_h, &r0, &r1);
    taps_inside(ix0, kw, dw, in_w, &k0, &k1);
    p = fill_s8(p, pad4, r0 * row);
    const int8_t* xr = x + (ptrdiff_t)(iy0 + r0 * dh) * x_row + (ptrdiff_t)ix0 * cin;
    if (dw == 1) { /* the row's inside columns are contiguous in x */
      const int32_t left = k0 * cin, inside = (k1 - k0) * cin, right = (kw - k1) * cin;
      for (int32_t ky = r0; ky < r1; ++ky, xr += dh * x_row) {
        p = fill_s8(p, pad4, left);
        p = copy_s8(p, xr + left, inside);
        p = fill_s8(p, pad4, right);
      }
    } else {
      for (int32_t ky = r0; ky < r1; ++ky, xr += dh * x_row) {
        p = fill_s8(p, pad4, k0 * cin);
        for (int32_t kx = k0; kx < k1; ++kx) p = copy_s8(p, xr + (ptrdiff_t)kx * dw * cin, cin);
        p = fill_s8(p, pad4, (kw - k1) * cin);
      }
    }
    p = fill_s8(p, pad4, (kh - r1) * row);
    if (++ox == out_w) {
      ox = 0;
      ++oy;
    }
  }
}

void tfs_im2col_s8(const tfs_conv_geom* G, const int8_t* x, int32_t pos0, int32_t n, int8_t* p) {
  tfs_im2col(G, x, pos0, n, p, 1);
}
