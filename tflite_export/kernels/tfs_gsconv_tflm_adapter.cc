// TFLite Micro adapter of TFS_GROUP_SPARSE_CONV2D: the same kernel core (tfs_gsconv_*.c over the
// TFS_GROUP_SPARSE_FC core) as the host and LiteRT, registered as a custom op. Integration:
// tflite_export/kernels/TFLM.md.
//
//   tflite::MicroMutableOpResolver<N> resolver;
//   resolver.AddCustom("TFS_GROUP_SPARSE_CONV2D", tflite::Register_TFS_GROUP_SPARSE_CONV2D());
//
// Init allocates the node's state from the arena (persistent), Prepare validates every constant
// input completely (FORMAT.md "Validation") and requests the im2col workspace (one tile of
// patches + the FC core's int16 copy) with RequestScratchBufferInArena, Eval only checks the O(1)
// shapes and computes. No malloc anywhere. int8 with TFLite's fixed-point requantization
// (out_multiplier / out_shift), bit-exact with TFLite's reference int8 CONV_2D; on a core with
// the DSP extension the FC core picks its SMLAD/SXTB16 path.
#include <stddef.h>
#include <stdint.h>

#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/kernels/kernel_util.h"
#include "tensorflow/lite/micro/kernels/kernel_util.h"
#include "tensorflow/lite/micro/micro_context.h"
#include "tensorflow/lite/micro/micro_log.h"
#include "tfs_group_sparse_conv.h"

namespace tflite {
namespace {

struct OpData {
  tfs_gsconv_layer layer;
  int32_t batch;
  int scratch_index;
};

size_t ElementCount(const TfLiteIntArray* dims) {
  size_t n = 1;
  for (int i = 0; i < dims->size; ++i) {
    if (dims->data[i] < 0) return 0;
    n *= static_cast<size_t>(dims->data[i]);
  }
  return n;
}

int ElemType(TfLiteType t) { return t == kTfLiteInt8 ? TFS_ELEM_INT8 : 0; }

void* Init(TfLiteContext* context, const char* buffer, size_t length) {
  (void)buffer;
  (void)length;
  return context->AllocatePersistentBuffer(context, sizeof(OpData));
}

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  OpData* data = static_cast<OpData*>(node->user_data);
  TF_LITE_ENSURE(context, data != nullptr);
  if (node->custom_initial_data_size != 0) {
    MicroPrintf("TFS_GROUP_SPARSE_CONV2D: custom options must be empty");
    return kTfLiteError;
  }
  if (node->inputs->size != 2 || node->outputs->size != 1) {
    MicroPrintf("TFS_GROUP_SPARSE_CONV2D: %d inputs / %d outputs, expected 2 / 1",
                node->inputs->size, node->outputs->size);
    return kTfLiteError;
  }
  MicroContext* micro_context = GetMicroContext(context);
  TfLiteTensor* x = micro_context->AllocateTempInputTensor(node, 0);
  TfLiteTensor* blob = micro_context->AllocateTempInputTensor(node, 1);
  TfLiteTensor* y = micro_context->AllocateTempOutputTensor(node, 0);
  TfLiteStatus status = kTfLiteOk;
  char err[160];
  tfs_tensor tensors[TFS_GSCONV_NUM_INPUTS] = {};
  size_t n_tensors = 0;
  if (x == nullptr || blob == nullptr || y == nullptr) {
    MicroPrintf("TFS_GROUP_SPARSE_CONV2D: an input or the output is missing");
    status = kTfLiteError;
  } else if (!IsConstantTensor(blob) || blob->type != kTfLiteUInt8) {
    MicroPrintf("TFS_GROUP_SPARSE_CONV2D: input 1 must be the constant uint8 parameter blob");
    status = kTfLiteError;
  } else if (tfs_gsconv_unpack_params(blob->data.data, blob->bytes, tensors, &n_tensors, err,
                                      sizeof err) != TFS_OK ||
             tfs_gsconv_validate_layer(tensors, n_tensors, &data->layer, err, sizeof err) !=
                 TFS_OK) {
    MicroPrintf("TFS_GROUP_SPARSE_CONV2D: %s", err);
    status = kTfLiteError;
  }
  if (status == kTfLiteOk) {
    tfs_gsconv_set_requant(&data->layer, TFS_REQUANT_FIXED_POINT);  // TFLite's reference arithmetic
    // Shapes are static in TFLite Micro: check activations and output once here (data pointers
    // are not planned yet, so a dummy non-null pointer stands in for them).
    static const int64_t kDummy[1] = {0};
    const tfs_tensor xt = {kDummy, ElementCount(x->dims), ElemType(x->type)};
    const tfs_tensor yt = {kDummy, ElementCount(y->dims), ElemType(y->type)};
    int32_t batch = 0;
    if (tfs_gsconv_validate_io(&data->layer, &xt, &yt, &batch, err, sizeof err) != TFS_OK) {
      MicroPrintf("TFS_GROUP_SPARSE_CONV2D: %s", err);
      status = kTfLiteError;
    } else {
      data->batch = batch;
      data->scratch_index = -1;
      const size_t ws = tfs_gsconv_workspace_size(&data->layer, batch);
      if (ws > 0) status = context->RequestScratchBufferInArena(context, ws, &data->scratch_index);
    }
  }
  if (x != nullptr) micro_context->DeallocateTempTfLiteTensor(x);
  if (blob != nullptr) micro_context->DeallocateTempTfLiteTensor(blob);
  if (y != nullptr) micro_context->DeallocateTempTfLiteTensor(y);
  return status;
}

TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  const OpData* data = static_cast<const OpData*>(node->user_data);
  const TfLiteEvalTensor* input = micro::GetEvalInput(context, node, 0);
  TfLiteEvalTensor* output = micro::GetEvalOutput(context, node, 0);
  const tfs_tensor x = {input->data.data, ElementCount(input->dims), ElemType(input->type)};
  const tfs_tensor y = {output->data.data, ElementCount(output->dims), ElemType(output->type)};
  int32_t batch = 0;
  char err[160];
  if (tfs_gsconv_validate_io(&data->layer, &x, &y, &batch, err, sizeof err) != TFS_OK ||
      batch != data->batch) {
    MicroPrintf("TFS_GROUP_SPARSE_CONV2D: %s", err);
    return kTfLiteError;
  }
  void* workspace =
      data->scratch_index >= 0 ? context->GetScratchBuffer(context, data->scratch_index) : nullptr;
  if (workspace == nullptr && batch > 0) return kTfLiteError;
  if (tfs_gsconv_compute(&data->layer, nullptr, x.data, output->data.data, batch, workspace,
                         TFS_IMPL_AUTO) != TFS_OK) {
    MicroPrintf("TFS_GROUP_SPARSE_CONV2D: compute failed");
    return kTfLiteError;
  }
  return kTfLiteOk;
}

}  // namespace

// A pointer, as MicroMutableOpResolver::AddCustom(name, const TFLMRegistration*) takes it.
TFLMRegistration* Register_TFS_GROUP_SPARSE_CONV2D() {
  static TFLMRegistration registration = micro::RegisterOp(Init, Prepare, Eval);
  return &registration;
}

}  // namespace tflite
