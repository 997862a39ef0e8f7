/* Shared by the NM sanitizer driver and fuzz target: validate a TFS_NM_SPARSE_FC layer, run every
 * available path with exactly-sized heap buffers (ASan sees any overrun), compare to portable. */
#ifndef TFS_NM_TESTGEN_H_
#define TFS_NM_TESTGEN_H_
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../tflite_export/kernels/tfs_nm_sparse_fc.h"

/* Returns 1 on a mismatch between paths, else 0; *rejected says whether validation failed. */
static int tfs_nm_run_all_paths(const tfs_tensor* inputs, size_t n_inputs, int32_t batch,
                                uint32_t seed, int* rejected) {
  tfs_nmfc_layer L;
  char err[256];
  *rejected = tfs_nmfc_validate_layer(inputs, n_inputs, &L, err, sizeof err) != TFS_OK;
  if (*rejected) return 0;
  const size_t esize = L.dtype == TFS_DTYPE_I8 ? 1 : 4;
  const size_t nx = (size_t)batch * (size_t)L.in, ny = (size_t)batch * (size_t)L.out;
  unsigned char* x = (unsigned char*)malloc(nx * esize);
  unsigned char* y_ref = (unsigned char*)malloc(ny * esize);
  unsigned char* y = (unsigned char*)malloc(ny * esize);
  const size_t ws_size = tfs_nmfc_workspace_size(&L, batch);
  void* ws = ws_size ? malloc(ws_size) : NULL;
  uint32_t s = seed * 2654435761u + 1u;
  for (size_t i = 0; i < nx; ++i) {
    s = s * 1664525u + 1013904223u;
    if (esize == 1) x[i] = (unsigned char)(s >> 24);
    else { const float f = (float)((int32_t)(s >> 8) % 2000) / 500.0f; memcpy(x + 4 * i, &f, 4); }
  }
  tfs_tensor tx = {x, nx, L.dtype == TFS_DTYPE_I8 ? TFS_ELEM_INT8 : TFS_ELEM_FLOAT32};
  tfs_tensor ty = {y, ny, tx.elem};
  int32_t b = 0;
  if (tfs_nmfc_validate_io(&L, &tx, &ty, &b, err, sizeof err) != TFS_OK || b != batch) abort();
  int bad = 0;
  if (tfs_nmfc_compute(&L, x, y_ref, batch, ws, TFS_IMPL_PORTABLE) != TFS_OK) abort();
  for (int impl = TFS_IMPL_AVX2; impl <= TFS_IMPL_AVX512; ++impl) {
    if (!tfs_gsfc_impl_available(impl)) continue;
    if (tfs_nmfc_compute(&L, x, y, batch, ws, impl) != TFS_OK) abort();
    for (size_t i = 0; i < ny && !bad; ++i) {
      if (esize == 1) {
        bad = y[i] != y_ref[i];
      } else {
        float a, r;
        memcpy(&a, y + 4 * i, 4);
        memcpy(&r, y_ref + 4 * i, 4);
        const float d = a > r ? a - r : r - a, m = (a > 0 ? a : -a) + (r > 0 ? r : -r);
        bad = !(d <= 1e-3f * m + 1e-3f) && !(a != a && r != r); /* NaN from NaN weights: both */
      }
      if (bad) fprintf(stderr, "mismatch impl %d dtype %d at %zu\n", impl, L.dtype, i);
    }
  }
  free(x); free(y_ref); free(y); free(ws);
  return bad;
}
#endif
