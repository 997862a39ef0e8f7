// TFLite Micro adapter of TFS_GROUP_SPARSE_FC: the same kernel core (tfs_group_sparse_fc.c) as the
// host and LiteRT, registered as a custom op. Integration: tflite_export/kernels/TFLM.md.
//
//   tflite::MicroMutableOpResolver<N> resolver;
//   resolver.AddCustom("TFS_GROUP_SPARSE_FC", tflite::Register_TFS_GROUP_SPARSE_FC());
//
// The node (Init, Prepare's complete validation and arena workspace, Eval) is tfs_tflm_node.h's.
// int8 uses TFLite's fixed-point requantization (out_multiplier / out_shift), bit-exact with
// TFLM's own int8 FULLY_CONNECTED; on a core with the DSP extension (Cortex-M4/M7/M33/M55 built
// with -mcpu=...) the core picks its SMLAD/SXTB16 path.
#include "tfs_group_sparse_fc.h"
#include "tfs_tflm_node.h"

namespace tflite {
namespace {

struct GroupSparseFc {
  using Layer = tfs_gsfc_layer;
  static constexpr const char* kName = "TFS_GROUP_SPARSE_FC";
  static constexpr size_t kSections = TFS_GSFC_NUM_INPUTS_I8;

  static int ElemType(TfLiteType t) {
    switch (t) {
      case kTfLiteFloat32: return TFS_ELEM_FLOAT32;
      case kTfLiteInt32: return TFS_ELEM_INT32;
      case kTfLiteInt8: return TFS_ELEM_INT8;
      case kTfLiteUInt16: return TFS_ELEM_UINT16;
      default: return 0;  // rejected by the validator
    }
  }
  static int Unpack(const void* blob, size_t bytes, tfs_tensor* t, size_t* n, char* err,
                    size_t len) {
    return tfs_gsfc_unpack_params(blob, bytes, t, n, err, len);
  }
  static int Validate(const tfs_tensor* t, size_t n, Layer* layer, char* err, size_t len) {
    return tfs_gsfc_validate_layer(t, n, layer, err, len);
  }
  static int SetRequant(Layer* layer, int requant) { return tfs_gsfc_set_requant(layer, requant); }
  static int ValidateIo(const Layer* layer, const tfs_tensor* x, const tfs_tensor* y,
                        int32_t* batch, char* err, size_t len) {
    return tfs_gsfc_validate_io(layer, x, y, batch, err, len);
  }
  static size_t WorkspaceSize(const Layer* layer, int32_t batch) {
    return tfs_gsfc_workspace_size(layer, batch);
  }
  static int Compute(const Layer* layer, const void* x, void* y, int32_t batch, void* ws) {
    return tfs_gsfc_compute(layer, nullptr, x, y, batch, ws, TFS_IMPL_AUTO);
  }
};

}  // namespace

// A pointer, as MicroMutableOpResolver::AddCustom(name, const TFLMRegistration*) takes it.
TFLMRegistration* Register_TFS_GROUP_SPARSE_FC() {
  return tfs_tflm::Node<GroupSparseFc>::Registration();
}

}  // namespace tflite
