/* LiteRT adapter for TFS_GROUP_SPARSE_CONV2D: this op's hooks over the shared LiteRT plumbing
 * (tfs_litert_common.c). A node's cached state is its validated layer plus the FC core's packed
 * copy for the x86 SIMD paths, made once per node. The output shape comes from the blob's shape
 * (FORMAT.md: [cout, ekh, ekw, stride_h, stride_w, row_bytes]). */
#define _POSIX_C_SOURCE 200112L /* posix_memalign under -std=c11 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tfs_group_sparse_conv.h"
#include "tfs_litert_common.h"

/* The implementation the FC adapter's contexts use (tfs_litert_adapter.c; tfs_set_impl). */
const int* tfs_runtime_impl(void);

typedef struct {
  tfs_gsconv_layer layer;
  tfs_gsfc_packed packed;
  void* packed_mem;
} gsconv_node;

_Static_assert(TFS_GSCONV_NUM_INPUTS <= TFS_LITERT_MAX_SECTIONS, "blob sections");

/* Whether this adapter runs a validated layer on the float32 direct path (tfs_gsconv_set_direct)
 * rather than im2col + the FC core: a float32 layer the direct path accepts whose computed wide
 * indices (rounded up to 16 lanes) are at most 4/3 of its output positions, or at most twice
 * them when it stores at most 1/16 of the dense weights (groups * g). The direct path
 * computes dp_w - out_w dropped columns per output row; im2col copies K values per position.
 * Measured (AMD EPYC Zen 4, AVX-512, kernels alone, interleaved, load ~8 on 2 cores; g = 16,
 * im2col / direct us at 50 / 90 / 95 % group sparsity): LeNet-5 conv1 (24 x 24 out, 672 lanes
 * for 576 positions, 1.17) 14.6/10.4, 10.3/5.4, 9.6/4.6; ConvNet conv2 (14 x 14 SAME, 256 for
 * 196, 1.31) 120.6/111.3, 43.3/29.1, 36.5/18.7; ConvNet conv3 (7 x 7, 80 for 49, 1.63)
 * 66.6/72.6, 19.1/18.8, 14.2/12.1; LeNet-5 conv2 (8 x 8, 96 for 64, 1.5) 31.8/42.0,
 * 10.6/11.4, 8.0/7.6. Above 4/3 direct loses at moderate sparsity, ties at 90 % and wins by
 * 5-15 % at 95 %, hence the second clause. Deterministic: geometry and stored groups, no timing. */
int tfs_gsconv_host_direct(const tfs_gsconv_layer* layer) {
  tfs_gsconv_layer probe = *layer;
  if (!tfs_gsconv_set_direct(&probe, 1)) return 0;
  const int64_t lanes = ((int64_t)probe.dspan + 15) / 16 * 16;
  const int64_t positions = layer->positions;
  const int64_t stored = (int64_t)layer->fc.n_groups * layer->fc.g;
  return lanes * 3 <= positions * 4 ||
         (lanes <= positions * 2 && stored * 16 <= (int64_t)layer->fc.in * layer->fc.out);
}

static int gsconv_prepare(void* p, const tfs_tensor* t, size_t n, int32_t* out, char* err,
                          size_t err_len) {
  gsconv_node* node = (gsconv_node*)p;
  const int rc = tfs_gsconv_validate_layer(t, n, &node->layer, err, err_len);
  if (rc != TFS_OK) return rc;
  if (node->layer.tile < TFS_GSCONV_HOST_TILE) tfs_gsconv_set_tile(&node->layer, TFS_GSCONV_HOST_TILE);
  tfs_gsconv_set_direct(&node->layer, tfs_gsconv_host_direct(&node->layer));
  const size_t bound = tfs_gsfc_packed_bound(&node->layer.fc);
  void* mem = NULL;
  if (posix_memalign(&mem, 64, bound ? bound : 64) != 0)
    return tfs_fail(err, err_len, "out of memory for the packed weights");
  if (tfs_gsfc_pack(&node->layer.fc, mem, bound, &node->packed) != TFS_OK) {
    free(mem);
    return tfs_fail(err, err_len, "packing the weights failed");
  }
  node->packed_mem = mem;
  *out = node->layer.fc.out;
  return TFS_OK;
}

static void gsconv_release(void* p) { free(((gsconv_node*)p)->packed_mem); }

static int gsconv_check_io(const void* p, const tfs_tensor* x, const tfs_tensor* y,
                           int32_t* batch, size_t* ws, char* err, size_t err_len) {
  const gsconv_node* node = (const gsconv_node*)p;
  const int rc = tfs_gsconv_validate_io(&node->layer, x, y, batch, err, err_len);
  if (rc == TFS_OK) *ws = tfs_gsconv_workspace_size(&node->layer, *batch);
  return rc;
}

static int gsconv_compute(const void* p, const void* x, void* y, int32_t batch, void* ws,
                          int impl) {
  const gsconv_node* node = (const gsconv_node*)p;
  return tfs_gsconv_compute(&node->layer, &node->packed, x, y, batch, ws, impl);
}

/* x [batch, in_h, in_w, cin], blob [cout, ekh, ekw, stride_h, stride_w, row_bytes] ->
 * y [batch, (in_h - ekh) / stride_h + 1, (in_w - ekw) / stride_w + 1, cout]. */
static int gsconv_output_layout(const LiteRtLayout* x, const LiteRtLayout* blob, LiteRtLayout* y) {
  if (x->rank != 4 || blob->rank != 6) return 1;
  for (unsigned i = 0; i < 6; ++i)
    if (blob->dimensions[i] < 1) return 1;
  const int32_t in_h = x->dimensions[1], in_w = x->dimensions[2];
  if (in_h < blob->dimensions[1] || in_w < blob->dimensions[2]) return 1;
  LiteRtLayout o;
  memset(&o, 0, sizeof o);
  o.rank = 4;
  o.dimensions[0] = x->dimensions[0]; /* the batch, -1 while it is dynamic */
  o.dimensions[1] = (in_h - blob->dimensions[1]) / blob->dimensions[3] + 1;
  o.dimensions[2] = (in_w - blob->dimensions[2]) / blob->dimensions[4] + 1;
  o.dimensions[3] = blob->dimensions[0];
  *y = o;
  return 0;
}

static int gsconv_check_blob_layout(const void* p, const LiteRtLayout* blob) {
  int32_t dims[5];
  tfs_gsconv_blob_dims(&((const gsconv_node*)p)->layer, dims);
  if (blob->rank != 6) return 1;
  for (int i = 0; i < 5; ++i)
    if (blob->dimensions[i] != dims[i]) return 1;
  return 0;
}

static tfs_litert_op g_gsconv_op = {"TFS_GROUP_SPARSE_CONV2D", TFS_GSCONV_FORMAT_VERSION,
                                    sizeof(gsconv_node), tfs_gsconv_unpack_params, gsconv_prepare,
                                    gsconv_release, gsconv_check_io, gsconv_compute, NULL,
                                    gsconv_output_layout, gsconv_check_blob_layout};

/* This op's table, for tfs_litert_ctx_create (tfs_litert_common.h). */
const tfs_litert_op* tfs_gsconv_litert_op(void) {
  g_gsconv_op.impl = tfs_runtime_impl(); /* set here: not a constant expression */
  return &g_gsconv_op;
}

/* Seconds per tfs_gsconv_compute on a validated layer; <0 if impl is unavailable. */
double tfs_gsconv_time_compute(const tfs_gsconv_layer* layer, const tfs_gsfc_packed* packed,
                               const void* x, void* y, int32_t batch, void* workspace, int impl,
                               int iterations) {
  if (iterations < 1 || !tfs_gsfc_impl_available(impl)) return -1.0;
  const double t0 = tfs_now_seconds();
  for (int i = 0; i < iterations; ++i)
    if (tfs_gsconv_compute(layer, packed, x, y, batch, workspace, impl) != TFS_OK) return -1.0;
  return (tfs_now_seconds() - t0) / iterations;
}
