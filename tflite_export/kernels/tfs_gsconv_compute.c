/* TFS_GROUP_SPARSE_CONV2D: compute - im2col of a tile of output positions into the workspace,
 * then the TFS_GROUP_SPARSE_FC kernel the manifest picks for the layer (tfs_gsfc_compute) on
 * the tile; or, for a float32 layer with the direct path set (tfs_gsconv_set_direct), the
 * manifest's GSCD kernel on the whole batch. See tfs_group_sparse_conv.h. */
#include "tfs_dispatch.h"
#include "tfs_group_sparse_conv.h"

int tfs_gsconv_compute(const tfs_gsconv_layer* layer, const tfs_gsfc_packed* packed, const void* x,
                       void* y, int32_t batch, void* workspace, int impl) {
  const tfs_conv_geom* G = &layer->geom;
  const int32_t positions = layer->positions, tile = layer->tile, out = layer->fc.out;
  const size_t es = tfs_gsconv_elem_size(layer); /* int8 or float32, activations and output */
  const size_t in_bytes = (size_t)G->in_h * (size_t)G->in_w * (size_t)G->cin * es;
  void* patches = workspace;
  void* fc_ws = (unsigned char*)workspace + tfs_gsconv_patch_bytes(layer);
  if (layer->direct) { /* float32 only (tfs_gsconv_set_direct) */
    int rc;
    const tfs_kernel_entry* k =
        tfs_select_kernel(TFS_OP_GSCD, TFS_DTYPE_F32, layer->fc.g, impl, 0, &rc);
    if (k == NULL) return rc;
    if (batch > 0) k->fn(layer, NULL, x, y, batch, workspace);
    return TFS_OK;
  }
  for (int32_t b = 0; b < batch; ++b) {
    const unsigned char* xb = (const unsigned char*)x + (size_t)b * in_bytes;
    unsigned char* yb = (unsigned char*)y + (size_t)b * (size_t)positions * (size_t)out * es;
    for (int32_t p0 = 0; p0 < positions; p0 += tile) {
      const int32_t n = positions - p0 < tile ? positions - p0 : tile;
      tfs_im2col(G, xb, p0, n, patches, (int32_t)es);
      const int rc = tfs_gsfc_compute(&layer->fc, packed, patches,
                                      yb + (size_t)p0 * (size_t)out * es, n, fc_ws, impl);
      if (rc != TFS_OK) return rc;
    }
  }
  return TFS_OK;
}
