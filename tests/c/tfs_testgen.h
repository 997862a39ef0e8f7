/* The test generator both custom ops' sanitizer drivers and the fuzz target share: the op under
 * test (TFS_GROUP_SPARSE_FC by default, TFS_NM_SPARSE_FC where TFS_TEST_OP_NM is defined before
 * this header, or with -DTFS_TEST_OP_NM), the parameter-blob builder, the fuzz input reader,
 * input filling, running a layer on every path, and the cross-path output comparison. */
#ifndef TFS_TESTGEN_H_
#define TFS_TESTGEN_H_
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../tflite_export/kernels/tfs_common.h"
#include "../../tflite_export/kernels/tfs_dispatch.h"

/* The op's layer type and entry points (TFS_TEST_FN(validate_layer) is tfs_gsfc_validate_layer or
 * tfs_nmfc_validate_layer); TFS_TEST_PACKS: the op has a packing step its SIMD paths read. */
#ifdef TFS_TEST_OP_NM
#include "../../tflite_export/kernels/tfs_nm_sparse_fc.h"
typedef tfs_nmfc_layer tfs_test_layer;
#define TFS_TEST_FN(name) tfs_nmfc_##name
#define TFS_TEST_VERSION TFS_NMFC_FORMAT_VERSION
#define TFS_TEST_PACKS 0
#else
#include "../../tflite_export/kernels/tfs_group_sparse_fc.h"
typedef tfs_gsfc_layer tfs_test_layer;
#define TFS_TEST_FN(name) tfs_gsfc_##name
#define TFS_TEST_VERSION TFS_GSFC_FORMAT_VERSION
#define TFS_TEST_PACKS 1
#endif

/* " + avx2 + avx512 ..." : the available implementations besides portable (manifest names). */
static inline const char* tfs_available_impls_text(void) {
  static char text[256];
  text[0] = '\0';
  for (int impl = TFS_IMPL_PORTABLE + 1; impl < TFS_IMPL_LIMIT; ++impl)
    if (tfs_impl_name(impl) != NULL && tfs_impl_available(impl)) {
      strncat(text, " + ", sizeof text - strlen(text) - 1);
      strncat(text, tfs_impl_name(impl), sizeof text - strlen(text) - 1);
    }
  return text;
}

/* Pack tensors 1..n-1 into a parameter blob (FORMAT.md) in a 64-byte aligned heap block of
 * exactly *bytes bytes, as tflite_export/params_blob.py does. */
static inline unsigned char* tfs_build_blob(const tfs_tensor* t, size_t n, size_t* bytes) {
  const size_t sections = n - 1;
  size_t offset = TFS_BLOB_HEADER_BYTES + sections * TFS_BLOB_ENTRY_BYTES;
  size_t offsets[16] = {0}, sizes[16] = {0};
  if (sections > 16) abort();
  for (size_t i = 0; i < sections; ++i) {
    const size_t es = tfs_elem_size(t[i + 1].elem);
    offset = (offset + TFS_BLOB_ALIGN - 1) / TFS_BLOB_ALIGN * TFS_BLOB_ALIGN;
    offsets[i] = offset;
    sizes[i] = t[i + 1].count * es;
    offset += sizes[i];
  }
  *bytes = offset;
  void* mem = NULL;
  if (posix_memalign(&mem, 64, offset ? offset : 64) != 0) abort();
  unsigned char* b = (unsigned char*)mem;
  memset(b, 0, offset);
  const int32_t head[4] = {(int32_t)TFS_BLOB_MAGIC, (int32_t)sections, 0, 0};
  memcpy(b, head, sizeof head);
  for (size_t i = 0; i < sections; ++i) {
    const int32_t entry[4] = {t[i + 1].elem, (int32_t)t[i + 1].count, (int32_t)offsets[i], 0};
    memcpy(b + TFS_BLOB_HEADER_BYTES + i * TFS_BLOB_ENTRY_BYTES, entry, sizeof entry);
    if (sizes[i]) memcpy(b + offsets[i], t[i + 1].data, sizes[i]);
  }
  return b;
}
/* The drivers' generator: a 32-bit LCG, 24 bits out. */
static inline uint32_t tfs_rnd(uint32_t* state) {
  *state = *state * 1664525u + 1013904223u;
  return *state >> 8;
}

/* The fuzz targets' reader: `bytes` big-endian bytes of the input, cycling (0 when empty). */
typedef struct { const uint8_t* d; size_t n, i; } tfs_reader;
static inline uint32_t tfs_rd(tfs_reader* r, int bytes) {
  uint32_t v = 0;
  for (int k = 0; k < bytes; ++k) v = (v << 8) | (r->n ? r->d[(r->i++) % r->n] : 0u);
  return v;
}

/* Quantization fields of meta (activation, zero points, range) for a generated layer, and its
 * bias and requantization arrays (out entries each), from rng state *s. */
static inline void tfs_fill_quant(int dtype, int32_t out, int32_t* meta, unsigned char* bias,
                                  int32_t* mult, int32_t* shift, float* scale, uint32_t* s) {
  meta[6] = (int32_t)(tfs_rnd(s) % 2);
  if (dtype) { meta[7] = 5; meta[8] = -3; meta[9] = meta[6] ? -3 : -128; meta[10] = 127; }
  for (int32_t r = 0; r < out; ++r) {
    if (dtype) { const int32_t bv = (int32_t)(tfs_rnd(s) % 4000) - 2000; memcpy(bias + 4 * r, &bv, 4); }
    else { const float bv = (float)(tfs_rnd(s) % 100) / 50.0f - 1.0f; memcpy(bias + 4 * r, &bv, 4); }
    mult[r] = (int32_t)(1u << 30) + (int32_t)(tfs_rnd(s) % 1000000);
    shift[r] = -8;
    scale[r] = 0.002f + (float)(tfs_rnd(s) % 100) * 1e-4f;
  }
}

/* Activations x[nx] (int8 if esize is 1, else float32) from a seed. */
static inline void tfs_fill_x(unsigned char* x, size_t nx, size_t esize, uint32_t seed) {
  uint32_t s = seed * 2654435761u + 1u;
  for (size_t i = 0; i < nx; ++i) {
    s = s * 1664525u + 1013904223u;
    if (esize == 1) x[i] = (unsigned char)(s >> 24);
    else { const float f = (float)((int32_t)(s >> 8) % 2000) / 500.0f; memcpy(x + 4 * i, &f, 4); }
  }
}

/* 1 if y differs from y_ref: int8 exactly; float32 beyond a loose tolerance (sums in another
 * order; catches wrong terms), NaN on both sides counting as equal. *at = first index. */
static inline int tfs_outputs_differ(const unsigned char* y, const unsigned char* y_ref, size_t ny,
                                     size_t esize, size_t* at) {
  for (size_t i = 0; i < ny; ++i) {
    int bad;
    if (esize == 1) {
      bad = y[i] != y_ref[i];
    } else {
      float a, r;
      memcpy(&a, y + 4 * i, 4);
      memcpy(&r, y_ref + 4 * i, 4);
      const float d = a > r ? a - r : r - a, m = (a > 0 ? a : -a) + (r > 0 ? r : -r);
      bad = !(d <= 1e-3f * m + 1e-3f) && !(a != a && r != r);
    }
    if (bad) { *at = i; return 1; }
  }
  return 0;
}

/* exactly n bytes from the heap (one where n is 0), so ASan sees a one-byte overrun. */
static inline void* tfs_alloc_exact(size_t n) { return malloc(n ? n : 1); }

/* Validate, (pack) and compute a layer on every implementation the CPU has, with x, y, workspace
 * (and the packed copy) in exactly-sized heap blocks. int8 results must be identical across
 * paths; float32 ones close. Returns 0 if the layer was rejected (*rejected = 1) or all paths
 * agreed, 1 on a mismatch. */
static int tfs_run_all_paths(const tfs_tensor* inputs, size_t n_inputs, int32_t batch,
                             uint32_t seed, int* rejected) {
  tfs_test_layer L;
  char err[256];
  *rejected = TFS_TEST_FN(validate_layer)(inputs, n_inputs, &L, err, sizeof err) != TFS_OK;
  if (*rejected) return 0;
  const size_t esize = L.dtype == TFS_DTYPE_I8 ? 1 : 4;
  const size_t nx = (size_t)batch * (size_t)L.in, ny = (size_t)batch * (size_t)L.out;
  unsigned char* x = (unsigned char*)tfs_alloc_exact(nx * esize);
  unsigned char* y_ref = (unsigned char*)tfs_alloc_exact(ny * esize);
  unsigned char* y = (unsigned char*)tfs_alloc_exact(ny * esize);
  const size_t ws_size = TFS_TEST_FN(workspace_size)(&L, batch);
  void* ws = ws_size ? malloc(ws_size) : NULL;
#if TFS_TEST_PACKS
  const size_t bound = tfs_gsfc_packed_bound(&L);
  void* mem = NULL;
  if (posix_memalign(&mem, 64, bound ? bound : 64) != 0) abort();
  tfs_gsfc_packed P;
  if (tfs_gsfc_pack(&L, mem, bound, &P) != TFS_OK) { fprintf(stderr, "pack failed\n"); abort(); }
#define TFS_TEST_COMPUTE(packed, y_out, impl) tfs_gsfc_compute(&L, packed, x, y_out, batch, ws, impl)
#else
  void* mem = NULL;
#define TFS_TEST_COMPUTE(packed, y_out, impl) tfs_nmfc_compute(&L, x, y_out, batch, ws, impl)
#endif
  tfs_fill_x(x, nx, esize, seed);
  tfs_tensor tx = {x, nx, L.dtype == TFS_DTYPE_I8 ? TFS_ELEM_INT8 : TFS_ELEM_FLOAT32};
  tfs_tensor ty = {y, ny, tx.elem};
  int32_t b = 0;
  if (TFS_TEST_FN(validate_io)(&L, &tx, &ty, &b, err, sizeof err) != TFS_OK || b != batch) abort();
  int bad = 0;
  if (TFS_TEST_COMPUTE(NULL, y_ref, TFS_IMPL_PORTABLE) != TFS_OK) abort();
  for (int impl = TFS_IMPL_PORTABLE + 1; impl < TFS_IMPL_LIMIT; ++impl) {
    if (!tfs_impl_available(impl)) continue;
    if (TFS_TEST_COMPUTE(&P, y, impl) != TFS_OK) abort();
    size_t at = 0;
    bad = tfs_outputs_differ(y, y_ref, ny, esize, &at);
    if (bad) {
      fprintf(stderr, "mismatch impl %d in %d out %d dtype %d at %zu\n", impl, L.in, L.out, L.dtype, at);
      break;
    }
  }
#undef TFS_TEST_COMPUTE
  free(x); free(y_ref); free(y); free(ws); free(mem);
  return bad;
}

/* The arrays after meta (bias, multiplier, shift, scale; out entries each) of a generated valid
 * layer, into t[0..3], from rng state *s; tfs_free_data frees them. */
static inline void tfs_make_quant(int dtype, int32_t out, int32_t* meta, tfs_tensor* t, uint32_t* s) {
  unsigned char* bias = (unsigned char*)malloc((size_t)out * 4);
  int32_t* mult = (int32_t*)malloc((size_t)out * 4);
  int32_t* shift = (int32_t*)malloc((size_t)out * 4);
  float* scale = (float*)malloc((size_t)out * 4);
  tfs_fill_quant(dtype, out, meta, bias, mult, shift, scale, s);
  const tfs_tensor q[4] = {{bias, (size_t)out, dtype ? TFS_ELEM_INT32 : TFS_ELEM_FLOAT32},
                           {mult, (size_t)out, TFS_ELEM_INT32},
                           {shift, (size_t)out, TFS_ELEM_INT32},
                           {scale, (size_t)out, TFS_ELEM_FLOAT32}};
  memcpy(t, q, sizeof q);
}
static inline void tfs_free_data(tfs_tensor* t, size_t n) {
  for (size_t i = 0; i < n; ++i) free((void*)(uintptr_t)t[i].data); /* ours: malloc'd */
}

/* Drivers: a valid layer must survive the trip through a parameter blob in an exactly sized
 * block (as models carry it) and a truncated blob must be refused. 0 if so, else 1. */
static inline int tfs_blob_round_trip(const tfs_tensor* t, size_t n_in) {
  size_t bytes = 0, n_u = 0;
  unsigned char* blob = tfs_build_blob(t, n_in, &bytes);
  tfs_tensor u[16];
  char err[256] = "";
  int rejected = 1, bad = 0;
  if (TFS_TEST_FN(unpack_params)(blob, bytes, u, &n_u, err, sizeof err) != TFS_OK || tfs_run_all_paths(u, n_u, 2, 99u, &rejected) ||
      rejected) {
    fprintf(stderr, "blob of a valid layer failed: %s\n", err);
    bad = 1;
  } else if (TFS_TEST_FN(unpack_params)(blob, bytes - 1, u, &n_u, err, sizeof err) == TFS_OK) {
    fprintf(stderr, "truncated blob accepted\n");
    bad = 1;
  }
  free(blob);
  return bad;
}

/* Fuzz targets: the arrays packed into a parameter blob, with an occasional fuzzed header or
 * directory word or a truncation, then unpacked and, if accepted, run. 1 on a path mismatch. */
static inline int tfs_fuzz_blob(tfs_reader* r, const tfs_tensor* t, size_t n_in, int32_t batch,
                                uint32_t seed) {
  size_t bytes = 0, n_u = 0;
  unsigned char* blob = tfs_build_blob(t, n_in, &bytes);
  if ((tfs_rd(r, 1) & 3) == 0) {
    const size_t word = tfs_rd(r, 1) % (4 + 4 * (n_in - 1));
    const int32_t v = (int32_t)tfs_rd(r, 4);
    memcpy(blob + 4 * word, &v, 4);
  }
  const size_t cut = (tfs_rd(r, 1) & 0x1F) == 0 ? tfs_rd(r, 2) % (bytes + 1) : bytes;
  tfs_tensor u[16];
  char err[256];
  int rejected = 0, bad = 0;
  if (TFS_TEST_FN(unpack_params)(blob, cut, u, &n_u, err, sizeof err) == TFS_OK)
    bad = tfs_run_all_paths(u, n_u, batch, seed, &rejected);
  free(blob);
  return bad;
}

/* Drivers: a valid layer on every path at batch 1 and 3 (never rejected) - and for the
 * group-sparse op at 37 and 70, where the SpMM kernels run (a partial tile; a full one and a
 * partial one) - then through a parameter blob; counts the runs in *cases. 0 if all passed. */
static inline int tfs_check_valid_layer(const tfs_tensor* t, size_t n_in, int* cases) {
  static const int32_t batches[] = {1, 3, 37, 70};
  const int n_batches = TFS_TEST_PACKS ? 4 : 2;
  for (int bi = 0; bi < n_batches; ++bi) {
    const int32_t batch = batches[bi];
    int rejected = 0;
    if (tfs_run_all_paths(t, n_in, batch, (uint32_t)(*cases + 1), &rejected)) return 1;
    if (rejected) { fprintf(stderr, "valid layer rejected (case %d)\n", *cases); return 1; }
    ++*cases;
  }
  return tfs_blob_round_trip(t, n_in);
}

/* Drivers: `stmt` corrupts the layer t[0..n_in), `undo` restores it; the corrupted layer must be
 * rejected (else main returns 1), counted in rejected_count. */
#define TFS_EXPECT_REJECT(stmt, undo)                                                   \
  do {                                                                                 \
    int rejected_ = 0;                                                                 \
    stmt; tfs_run_all_paths(t, n_in, 1, 7u, &rejected_); undo;                         \
    if (!rejected_) { fprintf(stderr, "corruption accepted: %s\n", #stmt); return 1; } \
    ++rejected_count;                                                                  \
  } while (0)

/* Drivers' last line, which the tests read. */
static inline void tfs_report(int cases, int rejected_count) {
  printf("OK: %d layers on portable%s, %d corruptions rejected\n", cases, tfs_available_impls_text(),
         rejected_count);
}

#endif
