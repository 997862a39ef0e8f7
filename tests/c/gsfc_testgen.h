/* Shared by the sanitizer driver and the fuzz target: build layers, run every path, compare. */
#ifndef TFS_GSFC_TESTGEN_H_
#define TFS_GSFC_TESTGEN_H_
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../tflite_export/kernels/tfs_group_sparse_fc.h"
#include "tfs_testgen.h"

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
  tfs_fill_x(x, nx, esize, seed);
  tfs_tensor tx = {x, nx, L.dtype == TFS_DTYPE_I8 ? TFS_ELEM_INT8 : TFS_ELEM_FLOAT32};
  tfs_tensor ty = {y, ny, tx.elem};
  int32_t b = 0;
  if (tfs_gsfc_validate_io(&L, &tx, &ty, &b, err, sizeof err) != TFS_OK || b != batch) abort();
  int bad = 0;
  if (tfs_gsfc_compute(&L, NULL, x, y_ref, batch, ws, TFS_IMPL_PORTABLE) != TFS_OK) abort();
  for (int impl = TFS_IMPL_PORTABLE + 1; impl < TFS_IMPL_LIMIT; ++impl) {
    if (!tfs_gsfc_impl_available(impl)) continue;
    if (tfs_gsfc_compute(&L, &P, x, y, batch, ws, impl) != TFS_OK) abort();
    size_t at = 0;
    bad = tfs_outputs_differ(y, y_ref, ny, esize, &at);
    if (bad) {
      fprintf(stderr, "mismatch impl %d g %d dtype %d at %zu\n", impl, L.g, L.dtype, at);
      break;
    }
  }
  free(x); free(y_ref); free(y); free(ws); free(mem);
  return bad;
}
#endif
