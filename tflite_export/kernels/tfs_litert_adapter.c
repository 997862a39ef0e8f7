/* LiteRT adapter for TFS_GROUP_SPARSE_FC: this op's hooks over the shared LiteRT plumbing
 * (tfs_litert_common.c: LiteRT types, context, error slot, node cache, vtable) and the timing
 * helpers benchmarks use. A node's cached state is its validated layer plus the SIMD paths'
 * packed copy, made once per node.
 */
#define _POSIX_C_SOURCE 200112L /* posix_memalign under -std=c11 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tfs_group_sparse_fc.h"
#include "tfs_litert_common.h"

typedef LiteRtStatus (*RunCompiledModelFn)(void*, LiteRtParamIndex, size_t, LiteRtTensorBuffer*,
                                           size_t, LiteRtTensorBuffer*);

typedef struct {
  tfs_gsfc_layer layer;
  tfs_gsfc_packed packed; /* the SIMD paths' copy, in packed_mem */
  void* packed_mem;
} gsfc_node;

/* The compute implementation used by every context (TFS_IMPL_AUTO unless a test forces one). */
static int g_impl = TFS_IMPL_AUTO;

int tfs_set_impl(int impl) {
  if (!tfs_gsfc_impl_available(impl)) return TFS_ERR_UNSUPPORTED;
  g_impl = impl;
  return TFS_OK;
}

int tfs_get_impl(void) { return g_impl; }

/* The same setting, for the other ops built on this op's kernels (TFS_GROUP_SPARSE_CONV2D). */
const int* tfs_runtime_impl(void) { return &g_impl; }

_Static_assert(TFS_GSFC_NUM_INPUTS_I8 <= TFS_LITERT_MAX_SECTIONS, "blob sections");

static int gsfc_prepare(void* p, const tfs_tensor* t, size_t n, int32_t* out, char* err,
                        size_t err_len) {
  gsfc_node* node = (gsfc_node*)p;
  const int rc = tfs_gsfc_validate_layer(t, n, &node->layer, err, err_len);
  if (rc != TFS_OK) return rc;
  const size_t bound = tfs_gsfc_packed_bound(&node->layer);
  void* mem = NULL;
  if (posix_memalign(&mem, 64, bound ? bound : 64) != 0)
    return tfs_fail(err, err_len, "out of memory for the packed weights");
  if (tfs_gsfc_pack(&node->layer, mem, bound, &node->packed) != TFS_OK) {
    free(mem);
    return tfs_fail(err, err_len, "packing the weights failed");
  }
  node->packed_mem = mem;
  *out = node->layer.out;
  return TFS_OK;
}

static void gsfc_release(void* p) { free(((gsfc_node*)p)->packed_mem); }

static int gsfc_check_io(const void* p, const tfs_tensor* x, const tfs_tensor* y, int32_t* batch,
                         size_t* ws, char* err, size_t err_len) {
  const gsfc_node* node = (const gsfc_node*)p;
  const int rc = tfs_gsfc_validate_io(&node->layer, x, y, batch, err, err_len);
  if (rc == TFS_OK) *ws = tfs_gsfc_workspace_size(&node->layer, *batch);
  return rc;
}

static int gsfc_compute(const void* p, const void* x, void* y, int32_t batch, void* ws, int impl) {
  const gsfc_node* node = (const gsfc_node*)p;
  return tfs_gsfc_compute(&node->layer, &node->packed, x, y, batch, ws, impl);
}

static const tfs_litert_op kGsfcOp = {"TFS_GROUP_SPARSE_FC", TFS_GSFC_FORMAT_VERSION,
                                      sizeof(gsfc_node), tfs_gsfc_unpack_params, gsfc_prepare,
                                      gsfc_release,
                                      gsfc_check_io, gsfc_compute, &g_impl, NULL, NULL};

/* This op's table, for tfs_litert_ctx_create (tfs_litert_common.h). */
const tfs_litert_op* tfs_gsfc_litert_op(void) { return &kGsfcOp; }

/* ---- Timing helpers for benchmarks: loops in C, so ctypes' ~0.35 us per call is not timed. */

/* Seconds per LiteRtRunCompiledModel(cm, signature 0, ...), averaged over iterations; <0 on error. */
double tfs_time_litert_run(void* run_fn, void* cm, size_t n_in, LiteRtTensorBuffer* in,
                           size_t n_out, LiteRtTensorBuffer* out, int iterations) {
  RunCompiledModelFn run = (RunCompiledModelFn)run_fn;
  if (!run || iterations < 1) return -1.0;
  const double t0 = tfs_now_seconds();
  for (int i = 0; i < iterations; ++i)
    if (run(cm, 0, n_in, in, n_out, out) != kLiteRtStatusOk) return -1.0;
  return (tfs_now_seconds() - t0) / iterations;
}

/* Seconds per tfs_gsfc_compute on a validated layer; <0 if impl is unavailable. */
double tfs_gsfc_time_compute(const tfs_gsfc_layer* layer, const tfs_gsfc_packed* packed,
                             const void* x, void* y, int32_t batch, void* workspace, int impl,
                             int iterations) {
  if (iterations < 1 || !tfs_gsfc_impl_available(impl)) return -1.0;
  const double t0 = tfs_now_seconds();
  for (int i = 0; i < iterations; ++i)
    if (tfs_gsfc_compute(layer, packed, x, y, batch, workspace, impl) != TFS_OK) return -1.0;
  return (tfs_now_seconds() - t0) / iterations;
}

/* Size of tfs_gsfc_packed, for the Python side. */
size_t tfs_gsfc_packed_struct_size(void) { return sizeof(tfs_gsfc_packed); }
