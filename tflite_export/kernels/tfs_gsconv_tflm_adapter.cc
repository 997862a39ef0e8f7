// TFLite Micro adapter of TFS_GROUP_SPARSE_CONV2D: the same kernel core (tfs_gsconv_*.c over the
// TFS_GROUP_SPARSE_FC core) as the host and LiteRT, registered as a custom op. Integration:
// tflite_export/kernels/TFLM.md.
//
//   tflite::MicroMutableOpResolver<N> resolver;
//   resolver.AddCustom("TFS_GROUP_SPARSE_CONV2D", tflite::Register_TFS_GROUP_SPARSE_CONV2D());
//
// The node (Init, Prepare's complete validation, Eval) is tfs_tflm_node.h's; the workspace it
// requests from the arena is one tile of im2col patches + the FC core's int16 copy. int8 only
// here, with TFLite's fixed-point requantization (out_multiplier / out_shift), bit-exact with
// TFLite's reference int8 CONV_2D; on a core with the DSP extension the FC core picks its
// SMLAD/SXTB16 path.
#include "tfs_group_sparse_conv.h"
#include "tfs_tflm_node.h"

namespace tflite {
namespace {

struct GroupSparseConv2D {
  using Layer = tfs_gsconv_layer;
  static constexpr const char* kName = "TFS_GROUP_SPARSE_CONV2D";
  static constexpr size_t kSections = TFS_GSCONV_NUM_INPUTS;

  static int ElemType(TfLiteType t) { return t == kTfLiteInt8 ? TFS_ELEM_INT8 : 0; }
  static int Unpack(const void* blob, size_t bytes, tfs_tensor* t, size_t* n, char* err,
                    size_t len) {
    return tfs_gsconv_unpack_params(blob, bytes, t, n, err, len);
  }
  static int Validate(const tfs_tensor* t, size_t n, Layer* layer, char* err, size_t len) {
    return tfs_gsconv_validate_layer(t, n, layer, err, len);
  }
  static int SetRequant(Layer* layer, int requant) {
    return tfs_gsconv_set_requant(layer, requant);
  }
  static int ValidateIo(const Layer* layer, const tfs_tensor* x, const tfs_tensor* y,
                        int32_t* batch, char* err, size_t len) {
    return tfs_gsconv_validate_io(layer, x, y, batch, err, len);
  }
  static size_t WorkspaceSize(const Layer* layer, int32_t batch) {
    return tfs_gsconv_workspace_size(layer, batch);
  }
  static int Compute(const Layer* layer, const void* x, void* y, int32_t batch, void* ws) {
    return tfs_gsconv_compute(layer, nullptr, x, y, batch, ws, TFS_IMPL_AUTO);
  }
};

}  // namespace

// A pointer, as MicroMutableOpResolver::AddCustom(name, const TFLMRegistration*) takes it.
TFLMRegistration* Register_TFS_GROUP_SPARSE_CONV2D() {
  return tfs_tflm::Node<GroupSparseConv2D>::Registration();
}

}  // namespace tflite
