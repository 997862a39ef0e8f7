/* TFS_GROUP_SPARSE_CONV2D under AddressSanitizer + UndefinedBehaviorSanitizer: a libFuzzer target
 * (clang -fsanitize=fuzzer,address,undefined; tests/test_fuzz_validator.py) and, built with
 * -DTFS_GSCONV_DRIVER, a deterministic driver over seeded inputs (gcc;
 * tests/test_kernels_sanitizers.py).
 *
 * The input bytes become a geometry (mostly plausible, sometimes any int32), a well-formed or
 * raw group-CSR of the filters and the requantization arrays; whatever the validator accepts is
 * run on every available implementation, with and without the packed copy, at two tile sizes
 * and (float32) on the direct path,
 * with exactly sized activations, output and workspace (ASan catches any access outside them),
 * and compared with a direct convolution written here (no im2col): a mismatch aborts (int8:
 * any bit; float32 nodes, with empty requantization arrays: beyond 1e-5 of the output's
 * magnitude, the summation order differs). The raw bytes also go through the blob unpacker. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../tflite_export/kernels/tfs_dispatch.h"
#include "../../tflite_export/kernels/tfs_group_sparse_conv.h"

typedef struct {
  const uint8_t* data;
  size_t size, pos;
} reader;

static uint32_t rd(reader* r, int n) {
  uint32_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | (r->pos < r->size ? r->data[r->pos++] : 0u);
  return v;
}

/* The reference: a direct convolution of one image with the layer's dense filters. */
static void reference(const tfs_gsconv_layer* L, const int8_t* w, const int8_t* x, int8_t* y) {
  const tfs_conv_geom* G = &L->geom;
  const int32_t cout = L->fc.out, K = L->fc.in;
  for (int32_t oy = 0; oy < G->out_h; ++oy)
    for (int32_t ox = 0; ox < G->out_w; ++ox)
      for (int32_t co = 0; co < cout; ++co) {
        uint32_t acc = (uint32_t)((const int32_t*)L->fc.bias)[co];
        for (int32_t ky = 0; ky < G->kh; ++ky)
          for (int32_t kx = 0; kx < G->kw; ++kx) {
            const int32_t iy = oy * G->stride_h - G->pad_top + ky * G->dil_h;
            const int32_t ix = ox * G->stride_w - G->pad_left + kx * G->dil_w;
            if (iy < 0 || iy >= G->in_h || ix < 0 || ix >= G->in_w) continue; /* x - zp = 0 */
            for (int32_t c = 0; c < G->cin; ++c) {
              const int32_t xv = x[((size_t)iy * G->in_w + ix) * G->cin + c] - L->fc.in_zp;
              acc += (uint32_t)(w[(size_t)co * K + ((size_t)ky * G->kw + kx) * G->cin + c] * xv);
            }
          }
        y[((size_t)oy * G->out_w + ox) * cout + co] = tfs_requant_i8(
            (int32_t)acc, L->fc.requant, L->fc.multiplier[co], L->fc.shift[co], L->fc.scale[co],
            L->fc.out_zp, L->fc.act_min, L->fc.act_max);
      }
}

/* The float32 reference, in double. */
static void reference_f32(const tfs_gsconv_layer* L, const float* w, const float* x, float* y) {
  const tfs_conv_geom* G = &L->geom;
  const int32_t cout = L->fc.out, K = L->fc.in;
  for (int32_t oy = 0; oy < G->out_h; ++oy)
    for (int32_t ox = 0; ox < G->out_w; ++ox)
      for (int32_t co = 0; co < cout; ++co) {
        double acc = ((const float*)L->fc.bias)[co];
        for (int32_t ky = 0; ky < G->kh; ++ky)
          for (int32_t kx = 0; kx < G->kw; ++kx) {
            const int32_t iy = oy * G->stride_h - G->pad_top + ky * G->dil_h;
            const int32_t ix = ox * G->stride_w - G->pad_left + kx * G->dil_w;
            if (iy < 0 || iy >= G->in_h || ix < 0 || ix >= G->in_w) continue; /* pads read 0 */
            for (int32_t c = 0; c < G->cin; ++c)
              acc += (double)w[(size_t)co * K + ((size_t)ky * G->kw + kx) * G->cin + c] *
                     x[((size_t)iy * G->in_w + ix) * G->cin + c];
          }
        y[((size_t)oy * G->out_w + ox) * cout + co] = tfs_act_f32((float)acc, L->fc.activation);
      }
}

static int g_direct; /* float32 layers also run on the direct path */

static int run_one(const uint8_t* data, size_t size) {
  reader r = {data, size, 0};
  if (size < 16) return 0;
  /* The blob unpacker on the raw bytes (bounds of every section). */
  {
    tfs_tensor t[TFS_GSCONV_NUM_INPUTS];
    size_t n = 0;
    char err[200];
    (void)tfs_gsconv_unpack_params(data, size, t, &n, err, sizeof err);
  }
  const uint32_t mode = rd(&r, 1);
  int32_t geom[16] = {0};
  if (mode & 1) { /* raw: every range check */
    for (int i = 0; i < 16; ++i) geom[i] = (int32_t)rd(&r, 4);
  } else {
    geom[0] = (mode & 0x80) ? (int32_t)rd(&r, 1) : 1;
    geom[1] = 1 + (int32_t)(rd(&r, 1) % 12);
    geom[2] = 1 + (int32_t)(rd(&r, 1) % 12);
    geom[3] = 1 + (int32_t)(rd(&r, 1) % 5);
    geom[4] = 1 + (int32_t)(rd(&r, 1) % 5);
    geom[5] = 1 + (int32_t)(rd(&r, 1) % 5);
    geom[6] = 1 + (int32_t)(rd(&r, 1) % 3);
    geom[7] = 1 + (int32_t)(rd(&r, 1) % 3);
    geom[8] = 1 + (int32_t)(rd(&r, 1) % 3);
    geom[9] = 1 + (int32_t)(rd(&r, 1) % 3);
    geom[10] = (int32_t)(rd(&r, 1) & 1);
    /* TFLite's output size and padding, unless the input asks for a perturbation */
    for (int axis = 0; axis < 2; ++axis) {
      const int32_t in = geom[1 + axis], k = geom[4 + axis], s = geom[6 + axis], d = geom[8 + axis];
      const int32_t eff = (k - 1) * d + 1;
      int32_t out, pad = 0;
      if (geom[10] == 0) {
        out = (in + s - 1) / s;
        const int32_t total = (out - 1) * s + eff - in;
        pad = total > 0 ? total / 2 : 0;
      } else {
        out = in >= eff ? (in - eff) / s + 1 : 0;
      }
      geom[11 + axis] = out;
      geom[13 + axis] = pad;
    }
    if ((mode & 0x60) == 0x60) geom[1 + rd(&r, 1) % 15] += (int32_t)(int8_t)rd(&r, 1);
  }
  const int sane = geom[3] >= 1 && geom[3] <= 65535 && geom[4] >= 1 && geom[4] <= 65535 &&
                   geom[5] >= 1 && geom[5] <= 65535;
  const int64_t K64 = sane ? (int64_t)geom[3] * geom[4] * geom[5] : 0;
  const int32_t cout = 1 + (int32_t)(rd(&r, 1) % 6);
  static const int32_t gs[5] = {1, 2, 4, 8, 16};
  const int32_t g = gs[rd(&r, 1) % 5];
  /* meta's in: K where the geometry is sane, sometimes off by one */
  int32_t in = K64 >= 1 && K64 <= 4096 ? (int32_t)K64 : 1 + (int32_t)(rd(&r, 2) % 64);
  if ((rd(&r, 1) & 0x1F) == 0) in += 1;
  const int32_t per_row = (in + g - 1) / g;
  /* float32 nodes (mode bit 4): the same CSR with values v / 16, float bias, empty requant */
  const int f32 = (mode & 0x10) != 0;
  /* well-formed group-CSR, each group kept with probability 1/2; dense filters for the reference */
  int32_t* row_ptr = (int32_t*)malloc(sizeof(int32_t) * (size_t)(cout + 1));
  uint16_t* col = (uint16_t*)malloc(sizeof(uint16_t) * (size_t)(per_row * cout + 1));
  int8_t* values = (int8_t*)malloc((size_t)(per_row * cout) * (size_t)g + 1);
  int8_t* dense = (int8_t*)calloc((size_t)cout * (size_t)in, 1);
  float* values_f = (float*)malloc(sizeof(float) * ((size_t)(per_row * cout) * (size_t)g + 1));
  float* dense_f = (float*)calloc((size_t)cout * (size_t)in, sizeof(float));
  int32_t n_groups = 0;
  for (int32_t co = 0; co < cout; ++co) {
    row_ptr[co] = n_groups;
    for (int32_t c = 0; c < per_row; ++c) {
      if (!(rd(&r, 1) & 1)) continue;
      col[n_groups] = (uint16_t)c;
      for (int32_t j = 0; j < g; ++j) {
        const int8_t v = (c * g + j < in) ? (int8_t)rd(&r, 1) : 0; /* ragged tail padded with 0 */
        values[(size_t)n_groups * g + j] = v;
        values_f[(size_t)n_groups * g + j] = (float)v / 16.0f;
        if (c * g + j < in) dense[(size_t)co * in + c * g + j] = v;
      }
      ++n_groups;
    }
  }
  row_ptr[cout] = n_groups;
  if (n_groups > 0 && (rd(&r, 1) & 0x3F) == 0) {
    /* a perturbed group index: the validator must refuse it unless the CSR stays valid, and
     * then the reference must use it too (the dense filters are rebuilt from the CSR) */
    col[rd(&r, 2) % n_groups] = (uint16_t)rd(&r, 2);
    memset(dense, 0, (size_t)cout * (size_t)in);
    for (int32_t co = 0; co < cout; ++co)
      for (int32_t k = row_ptr[co]; k < row_ptr[co + 1]; ++k)
        for (int32_t j = 0; j < g; ++j)
          if (col[k] < per_row && (int32_t)col[k] * g + j < in)
            dense[(size_t)co * in + (size_t)col[k] * g + j] = values[(size_t)k * g + j];
  }
  for (size_t i = 0; i < (size_t)cout * (size_t)in; ++i) dense_f[i] = (float)dense[i] / 16.0f;
  int32_t meta[16] = {0};
  meta[0] = 2; meta[1] = in; meta[2] = cout; meta[3] = g; meta[4] = n_groups; meta[5] = 1;
  meta[6] = (int32_t)(rd(&r, 1) % 2);
  meta[7] = (int32_t)(int8_t)rd(&r, 1);
  meta[8] = (int32_t)(int8_t)rd(&r, 1);
  meta[9] = meta[6] ? meta[8] : -128;
  meta[10] = 127;
  if (f32) meta[5] = meta[7] = meta[8] = meta[9] = meta[10] = 0;
  int32_t* bias = (int32_t*)malloc(sizeof(int32_t) * (size_t)cout);
  int32_t* mult = (int32_t*)malloc(sizeof(int32_t) * (size_t)cout);
  int32_t* shift = (int32_t*)malloc(sizeof(int32_t) * (size_t)cout);
  float* scale = (float*)malloc(sizeof(float) * (size_t)cout);
  float* bias_f = (float*)malloc(sizeof(float) * (size_t)cout);
  for (int32_t co = 0; co < cout; ++co) {
    bias[co] = (int32_t)(int16_t)rd(&r, 2);
    bias_f[co] = (float)bias[co] / 256.0f;
    mult[co] = (int32_t)(rd(&r, 4) & 0x7FFFFFFFu) | 0x40000000;
    shift[co] = -(int32_t)(rd(&r, 1) % 12);
    scale[co] = 0.001f + (float)rd(&r, 1) / 4096.0f;
  }
  const size_t n_rq = f32 ? 0 : (size_t)cout; /* float32: the requantization arrays empty */
  const tfs_tensor t[TFS_GSCONV_NUM_INPUTS] = {
      {NULL, 0, 0},
      {f32 ? (const void*)values_f : (const void*)values, (size_t)n_groups * (size_t)g,
       f32 ? TFS_ELEM_FLOAT32 : TFS_ELEM_INT8},
      {col, (size_t)n_groups, TFS_ELEM_UINT16},
      {row_ptr, (size_t)cout + 1, TFS_ELEM_INT32},
      {meta, 16, TFS_ELEM_INT32},
      {f32 ? (const void*)bias_f : (const void*)bias, (size_t)cout,
       f32 ? TFS_ELEM_FLOAT32 : TFS_ELEM_INT32},
      {mult, n_rq, TFS_ELEM_INT32},
      {shift, n_rq, TFS_ELEM_INT32},
      {scale, n_rq, TFS_ELEM_FLOAT32},
      {geom, 16, TFS_ELEM_INT32}};
  tfs_gsconv_layer L;
  char err[200];
  int accepted = 0;
  if (tfs_gsconv_validate_layer(t, TFS_GSCONV_NUM_INPUTS, &L, err, sizeof err) == TFS_OK &&
      (int64_t)L.geom.in_h * L.geom.in_w * L.geom.cin <= 4096 && L.positions <= 1024) {
    accepted = 1;
    const int32_t batch = 1 + (int32_t)(rd(&r, 1) % 2);
    const size_t in_size = (size_t)L.geom.in_h * L.geom.in_w * L.geom.cin;
    const size_t out_size = (size_t)L.positions * (size_t)cout;
    const size_t es = f32 ? sizeof(float) : 1; /* exactly sized buffers for ASan */
    int8_t* x = (int8_t*)malloc(in_size * (size_t)batch * es);
    for (size_t i = 0; i < in_size * (size_t)batch; ++i) {
      const int8_t v = (int8_t)rd(&r, 1);
      if (f32) ((float*)x)[i] = (float)v / 32.0f; else x[i] = v;
    }
    int8_t* want = (int8_t*)malloc(out_size * (size_t)batch * es);
    int8_t* y = (int8_t*)malloc(out_size * (size_t)batch * es);
    const int elem = f32 ? TFS_ELEM_FLOAT32 : TFS_ELEM_INT8;
    const tfs_tensor xt = {x, in_size * (size_t)batch, elem};
    const tfs_tensor yt = {y, out_size * (size_t)batch, elem};
    int32_t b = 0;
    if (tfs_gsconv_validate_io(&L, &xt, &yt, &b, err, sizeof err) != TFS_OK || b != batch) abort();
    tfs_gsfc_packed packed;
    void* packed_mem = NULL;
    const size_t bound = tfs_gsfc_packed_bound(&L.fc);
    if (posix_memalign(&packed_mem, 64, bound ? bound : 64) != 0 ||
        tfs_gsfc_pack(&L.fc, packed_mem, bound, &packed) != TFS_OK)
      abort();
    for (int requant = 0; requant < (f32 ? 1 : 2); ++requant) {
      tfs_gsconv_set_requant(&L, requant);
      for (int32_t bi = 0; bi < batch; ++bi) {
        if (f32)
          reference_f32(&L, dense_f, (const float*)x + (size_t)bi * in_size,
                        (float*)want + (size_t)bi * out_size);
        else
          reference(&L, dense, x + (size_t)bi * in_size, want + (size_t)bi * out_size);
      }
      /* im2col at the default tile and at 3 positions; the float32 direct path (tile_mode 2;
       * int8 and oversized planes stay on im2col) */
      for (int tile_mode = 0; tile_mode < 3; ++tile_mode) {
        tfs_gsconv_set_tile(&L, tile_mode == 1 ? 3 : TFS_GSCONV_TILE_BYTES / (L.fc.in * (int32_t)es));
        const int direct = tfs_gsconv_set_direct(&L, tile_mode == 2);
        if (direct != (tile_mode == 2 && f32 && tfs_gsconv_direct_planes(&L) <=
                       4 * in_size + 65536)) abort();
        g_direct += direct && requant == 0;
        const size_t ws_bytes = tfs_gsconv_workspace_size(&L, batch);
        void* ws = NULL;
        if (posix_memalign(&ws, 16, ws_bytes ? ws_bytes : 16) != 0) abort();
        for (int impl = TFS_IMPL_PORTABLE; impl < TFS_IMPL_LIMIT; ++impl) {
          if (tfs_impl_name(impl) == NULL || !tfs_impl_available(impl)) continue;
          for (int use_packed = 0; use_packed < 2; ++use_packed) {
            memset(y, 0x55, out_size * (size_t)batch * es);
            const int rc = tfs_gsconv_compute(&L, use_packed ? &packed : NULL, x, y, batch, ws, impl);
            if (rc == TFS_ERR_INVALID && !use_packed) continue; /* this impl needs the packed copy */
            if (rc != TFS_OK) abort();
            int bad = 0;
            if (f32) {
              const float *got = (const float*)y, *ref = (const float*)want;
              float mag = 1e-3f;
              for (size_t i = 0; i < out_size * (size_t)batch; ++i)
                if (fabsf(ref[i]) > mag) mag = fabsf(ref[i]);
              for (size_t i = 0; i < out_size * (size_t)batch; ++i)
                if (!(fabsf(got[i] - ref[i]) <= 1e-5f * mag)) bad = 1;
            } else {
              bad = memcmp(y, want, out_size * (size_t)batch) != 0;
            }
            if (bad) {
              fprintf(stderr, "mismatch: %s impl %s packed %d requant %d tile %d direct %d\n",
                      f32 ? "float32" : "int8", tfs_impl_name(impl), use_packed, requant, L.tile,
                      L.direct);
              abort();
            }
          }
        }
        free(ws);
      }
    }
    free(packed_mem);
    free(x);
    free(want);
    free(y);
  }
  free(row_ptr);
  free(col);
  free(values);
  free(dense);
  free(values_f);
  free(dense_f);
  free(bias_f);
  free(bias);
  free(mult);
  free(shift);
  free(scale);
  return accepted;
}

#ifdef TFS_GSCONV_DRIVER
/* Deterministic driver: seeded random inputs; prints how many layers were run. */
int main(void) {
  uint32_t s = 20u;
  int accepted = 0, accepted_f32 = 0;
  const int cases = 3000;
  uint8_t buf[4096];
  for (int i = 0; i < cases; ++i) {
    for (size_t k = 0; k < sizeof buf; ++k) {
      s ^= s << 13;
      s ^= s >> 17;
      s ^= s << 5;
      buf[k] = (uint8_t)s;
    }
    buf[0] &= (i % 4 == 0) ? 0xFF : 0x1E; /* mostly plausible geometry (bit 0 clear) */
    const int ok = run_one(buf, sizeof buf);
    accepted += ok;
    accepted_f32 += ok && (buf[0] & 0x10) != 0;
  }
  printf("OK: %d conv layers (%d float32, %d of them also direct) run on every path (int8: both "
         "requantizations), %d rejected\n", accepted, accepted_f32, g_direct, cases - accepted);
  return accepted > 0 ? 0 : 1;
}
#else
int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)run_one(data, size);
  return 0;
}
#endif
