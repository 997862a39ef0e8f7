/* Shared by the sanitizer driver and the fuzz target: build layers, run every path, compare. */
#ifndef TFS_GSFC_TESTGEN_H_
#define TFS_GSFC_TESTGEN_H_
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../tflite_export/kernels/tfs_group_sparse_fc.h"

/* Validate, pack and compute a layer on every implementation the CPU has, with x, y, workspace
 * and the packed copy in exactly-sized heap blocks (so ASan sees any overrun). int8 results must
 * be identical across paths; float32 ones close. Returns 0 if the layer was rejected or all paths
 * agreed, 1 on a mismatch. */
static int tfs_run_all_paths(const tfs_tensor* inputs, size_t n_inputs, int32_t batch,
                             uint32_t seed, int* rejected) {
  tfs_gsfc_layer L;
  char err[256];
  *rejected = tfs_gsfc_validate_layer(inputs, n_inputs, &L, err, sizeof err) != TFS_OK;
  if (*rejected) return 0;
  const size_t esize = L.dtype == TFS_DTYPE_I8 ? 1 : 4;
  const size_t nx = (size_t)batch * (size_t)L.in, ny = (size_t)batch * (size_t)L.out;
  unsigned char* x = (unsigned char*)malloc(nx * esize + 1);
  unsigned char* y_ref = (unsigned char*)malloc(ny * esize + 1);
  unsigned char* y = (unsigned char*)malloc(ny * esize + 1);
  const size_t ws_size = tfs_gsfc_workspace_size(&L, batch);
  void* ws = ws_size ? malloc(ws_size) : NULL;
  const size_t bound = tfs_gsfc_packed_bound(&L);
  void* mem = NULL;
  if (posix_memalign(&mem, 64, bound ? bound : 64) != 0) abort();
  tfs_gsfc_packed P;
  if (tfs_gsfc_pack(&L, mem, bound, &P) != TFS_OK) { fprintf(stderr, "pack failed\n"); abort(); }
  uint32_t s = seed * 2654435761u + 1u;
  for (size_t i = 0; i < nx; ++i) {
    s = s * 1664525u + 1013904223u;
    if (esize == 1) x[i] = (unsigned char)(s >> 24);
    else { const float f = (float)((int32_t)(s >> 8) % 2000) / 500.0f; memcpy(x + 4 * i, &f, 4); }
  }
  tfs_tensor tx = {x, nx, L.dtype == TFS_DTYPE_I8 ? TFS_ELEM_INT8 : TFS_ELEM_FLOAT32};
  tfs_tensor ty = {y, ny, tx.elem};
  int32_t b = 0;
  if (tfs_gsfc_validate_io(&L, &tx, &ty, &b, err, sizeof err) != TFS_OK || b != batch) abort();
  int bad = 0;
  if (tfs_gsfc_compute(&L, NULL, x, y_ref, batch, ws, TFS_IMPL_PORTABLE) != TFS_OK) abort();
  for (int impl = TFS_IMPL_AVX2; impl <= TFS_IMPL_ARM_DSP; ++impl) {
    if (!tfs_gsfc_impl_available(impl)) continue;
    if (tfs_gsfc_compute(&L, &P, x, y, batch, ws, impl) != TFS_OK) abort();
    for (size_t i = 0; i < ny && !bad; ++i) {
      if (esize == 1) {
        bad = y[i] != y_ref[i];
      } else {
        float a, r;
        memcpy(&a, y + 4 * i, 4);
        memcpy(&r, y_ref + 4 * i, 4);
        const float d = a > r ? a - r : r - a, m = (a > 0 ? a : -a) + (r > 0 ? r : -r);
        bad = !(d <= 1e-3f * m + 1e-3f); /* loose: sums in another order; catches wrong terms */
      }
      if (bad) fprintf(stderr, "mismatch impl %d g %d dtype %d at %zu\n", impl, L.g, L.dtype, i);
    }
  }
  free(x); free(y_ref); free(y); free(ws); free(mem);
  return bad;
}
/* Pack tensors 1..n-1 into a parameter blob (FORMAT.md) in a 64-byte aligned heap block of
 * exactly *bytes bytes, as tflite_export/params_blob.py does. */
static unsigned char* tfs_build_blob(const tfs_tensor* t, size_t n, size_t* bytes) {
  const size_t sections = n - 1;
  size_t offset = TFS_BLOB_HEADER_BYTES + sections * TFS_BLOB_ENTRY_BYTES;
  size_t offsets[8] = {0}, sizes[8] = {0};
  for (size_t i = 0; i < sections; ++i) {
    const int e = t[i + 1].elem;
    const size_t es = e == TFS_ELEM_UINT16 ? 2 : e == TFS_ELEM_INT8 ? 1 : 4;
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
#endif
