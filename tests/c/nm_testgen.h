/* Shared by the NM sanitizer driver and fuzz target: validate a TFS_NM_SPARSE_FC layer, run every
 * available path with exactly-sized heap buffers (ASan sees any overrun), compare to portable. */
#ifndef TFS_NM_TESTGEN_H_
#define TFS_NM_TESTGEN_H_
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../tflite_export/kernels/tfs_nm_sparse_fc.h"
#include "tfs_testgen.h"

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
  tfs_fill_x(x, nx, esize, seed);
  tfs_tensor tx = {x, nx, L.dtype == TFS_DTYPE_I8 ? TFS_ELEM_INT8 : TFS_ELEM_FLOAT32};
  tfs_tensor ty = {y, ny, tx.elem};
  int32_t b = 0;
  if (tfs_nmfc_validate_io(&L, &tx, &ty, &b, err, sizeof err) != TFS_OK || b != batch) abort();
  int bad = 0;
  if (tfs_nmfc_compute(&L, x, y_ref, batch, ws, TFS_IMPL_PORTABLE) != TFS_OK) abort();
  for (int impl = TFS_IMPL_PORTABLE + 1; impl < TFS_IMPL_LIMIT; ++impl) {
    if (!tfs_gsfc_impl_available(impl)) continue;
    if (tfs_nmfc_compute(&L, x, y, batch, ws, impl) != TFS_OK) abort();
    size_t at = 0;
    bad = tfs_outputs_differ(y, y_ref, ny, esize, &at);
    if (bad) {
      fprintf(stderr, "mismatch impl %d dtype %d at %zu\n", impl, L.dtype, at);
      break;
    }
  }
  free(x); free(y_ref); free(y); free(ws);
  return bad;
}
#endif
