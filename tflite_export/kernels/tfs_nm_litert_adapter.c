/* LiteRT adapter for TFS_NM_SPARSE_FC: this op's hooks over the shared LiteRT plumbing
 * (tfs_litert_common.c: LiteRT types, context, error slot, node cache keyed by parameter blob,
 * vtable); the same contract as TFS_GROUP_SPARSE_FC's adapter. A node's cached state is its
 * validated layer (no packing: the SIMD paths read the stored layout).
 */
#include <stdint.h>

#include "tfs_litert_common.h"
#include "tfs_nm_sparse_fc.h"

static int g_nm_impl = TFS_IMPL_AUTO;

int tfs_nm_set_impl(int impl) {
  if (!tfs_gsfc_impl_available(impl)) return TFS_ERR_UNSUPPORTED;
  g_nm_impl = impl;
  return TFS_OK;
}

_Static_assert(TFS_NMFC_NUM_INPUTS_I8 <= TFS_LITERT_MAX_SECTIONS, "blob sections");

static int nm_prepare(void* node, const tfs_tensor* t, size_t n, int32_t* out, char* err,
                      size_t err_len) {
  tfs_nmfc_layer* layer = (tfs_nmfc_layer*)node;
  const int rc = tfs_nmfc_validate_layer(t, n, layer, err, err_len);
  if (rc == TFS_OK) *out = layer->out;
  return rc;
}

static int nm_check_io(const void* node, const tfs_tensor* x, const tfs_tensor* y, int32_t* batch,
                       size_t* ws, char* err, size_t err_len) {
  const tfs_nmfc_layer* layer = (const tfs_nmfc_layer*)node;
  const int rc = tfs_nmfc_validate_io(layer, x, y, batch, err, err_len);
  if (rc == TFS_OK) *ws = tfs_nmfc_workspace_size(layer, *batch);
  return rc;
}

static int nm_compute(const void* node, const void* x, void* y, int32_t batch, void* ws, int impl) {
  return tfs_nmfc_compute((const tfs_nmfc_layer*)node, x, y, batch, ws, impl);
}

static const tfs_litert_op kNmOp = {"TFS_NM_SPARSE_FC", TFS_NMFC_FORMAT_VERSION,
                                    sizeof(tfs_nmfc_layer), tfs_nmfc_unpack_params, nm_prepare,
                                    NULL, nm_check_io,
                                    nm_compute, &g_nm_impl, NULL, NULL};

/* This op's table, for tfs_litert_ctx_create (tfs_litert_common.h). */
const tfs_litert_op* tfs_nm_litert_op(void) { return &kNmOp; }

/* Seconds per tfs_nmfc_compute, averaged over `iterations` (timed in C); < 0 on error. */
double tfs_nmfc_time_compute(const tfs_nmfc_layer* L, const void* x, void* y, int32_t batch,
                             void* workspace, int impl, int iterations) {
  if (iterations < 1 || !tfs_gsfc_impl_available(impl)) return -1.0;
  const double t0 = tfs_now_seconds();
  for (int i = 0; i < iterations; ++i)
    if (tfs_nmfc_compute(L, x, y, batch, workspace, impl) != TFS_OK) return -1.0;
  return (tfs_now_seconds() - t0) / iterations;
}
