// TFLite Micro adapter of TFS_GROUP_SPARSE_FC: the same kernel core (tfs_group_sparse_fc.c) as the
// host and LiteRT, registered as a custom op. Integration: tflite_export/kernels/TFLM.md.
//
//   tflite::MicroMutableOpResolver<N> resolver;
//   resolver.AddCustom("TFS_GROUP_SPARSE_FC", tflite::Register_TFS_GROUP_SPARSE_FC());
//
// Init allocates the node's state from the arena (persistent), Prepare validates every constant
// input completely (FORMAT.md "Validation": a corrupt model fails AllocateTensors, never reads or
// writes out of bounds at Invoke) and requests the int8 workspace from the arena, Eval only checks
// the O(1) shapes and computes. No malloc anywhere. int8 uses TFLite's fixed-point requantization
// (out_multiplier / out_shift), bit-exact with TFLM's own int8 FULLY_CONNECTED; on a core with the
// DSP extension (Cortex-M4/M7/M33/M55 built with -mcpu=...) the core picks its SMLAD/SXTB16 path.
#include <stddef.h>
#include <stdint.h>

#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/kernels/kernel_util.h"
#include "tensorflow/lite/micro/kernels/kernel_util.h"
#include "tensorflow/lite/micro/micro_context.h"
#include "tensorflow/lite/micro/micro_log.h"
#include "tfs_group_sparse_fc.h"

namespace tflite {
namespace {

struct OpData {
  tfs_gsfc_layer layer;
  int32_t batch;
  int scratch_index;  // -1 when no workspace is needed (float32)
};

int ElemType(TfLiteType t) {
  switch (t) {
    case kTfLiteFloat32: return TFS_ELEM_FLOAT32;
    case kTfLiteInt32: return TFS_ELEM_INT32;
    case kTfLiteInt8: return TFS_ELEM_INT8;
    case kTfLiteUInt16: return TFS_ELEM_UINT16;
    default: return 0;  // rejected by the validator
  }
}

size_t ElementCount(const TfLiteIntArray* dims) {
  size_t n = 1;
  for (int i = 0; i < dims->size; ++i) {
    if (dims->data[i] < 0) return 0;
    n *= static_cast<size_t>(dims->data[i]);
  }
  return n;
}

void* Init(TfLiteContext* context, const char* buffer, size_t length) {
  (void)buffer;
  (void)length;
  return context->AllocatePersistentBuffer(context, sizeof(OpData));
}

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  OpData* data = static_cast<OpData*>(node->user_data);
  TF_LITE_ENSURE(context, data != nullptr);
  // FORMAT.md: every parameter is in the constant inputs; custom options must be empty.
  if (node->custom_initial_data_size != 0) {
    MicroPrintf("TFS_GROUP_SPARSE_FC: custom options must be empty");
    return kTfLiteError;
  }
  const int n_inputs = node->inputs->size;
  if (n_inputs != TFS_GSFC_NODE_INPUTS) {
    MicroPrintf("TFS_GROUP_SPARSE_FC: %d inputs, expected 2 (activations, parameter blob)", n_inputs);
    return kTfLiteError;
  }
  TF_LITE_ENSURE_EQ(context, node->outputs->size, 1);
  MicroContext* micro_context = GetMicroContext(context);

  tfs_tensor tensors[TFS_GSFC_NUM_INPUTS_I8] = {};
  size_t n_tensors = 0;
  TfLiteTensor* temps[TFS_GSFC_NODE_INPUTS] = {};
  TfLiteStatus status = kTfLiteOk;
  for (int i = 0; i < n_inputs && status == kTfLiteOk; ++i) {
    temps[i] = micro_context->AllocateTempInputTensor(node, i);
    if (temps[i] == nullptr) {
      MicroPrintf("TFS_GROUP_SPARSE_FC: input %d missing", i);
      status = kTfLiteError;
    }
  }
  char err[160];
  if (status == kTfLiteOk && (!IsConstantTensor(temps[1]) || temps[1]->type != kTfLiteUInt8)) {
    MicroPrintf("TFS_GROUP_SPARSE_FC: input 1 must be the constant uint8 parameter blob");
    status = kTfLiteError;
  }
  if (status == kTfLiteOk &&
      tfs_gsfc_unpack_params(temps[1]->data.data, temps[1]->bytes, tensors, &n_tensors, err,
                             sizeof err) != TFS_OK) {
    MicroPrintf("TFS_GROUP_SPARSE_FC: %s", err);
    status = kTfLiteError;
  }
  TfLiteTensor* output = status == kTfLiteOk ? micro_context->AllocateTempOutputTensor(node, 0) : nullptr;
  if (status == kTfLiteOk && output == nullptr) status = kTfLiteError;
  if (status == kTfLiteOk &&
      tfs_gsfc_validate_layer(tensors, n_tensors, &data->layer, err, sizeof err) != TFS_OK) {
    MicroPrintf("TFS_GROUP_SPARSE_FC: %s", err);
    status = kTfLiteError;
  }
  if (status == kTfLiteOk) {
    data->layer.requant = TFS_REQUANT_FIXED_POINT;  // TFLite Micro's arithmetic
    // Shapes are static in TFLite Micro: check the activations and output once here (the data
    // pointers are not planned yet, so a dummy non-null pointer stands in for them).
    static const int64_t kDummy[1] = {0};
    const tfs_tensor x = {kDummy, ElementCount(temps[0]->dims), ElemType(temps[0]->type)};
    const tfs_tensor y = {kDummy, ElementCount(output->dims), ElemType(output->type)};
    int32_t batch = 0;
    if (tfs_gsfc_validate_io(&data->layer, &x, &y, &batch, err, sizeof err) != TFS_OK) {
      MicroPrintf("TFS_GROUP_SPARSE_FC: %s", err);
      status = kTfLiteError;
    } else {
      data->batch = batch;
      data->scratch_index = -1;
      const size_t ws = tfs_gsfc_workspace_size(&data->layer, batch);
      if (ws > 0)
        status = context->RequestScratchBufferInArena(context, ws, &data->scratch_index);
    }
  }
  for (int i = 0; i < n_inputs; ++i)
    if (temps[i] != nullptr) micro_context->DeallocateTempTfLiteTensor(temps[i]);
  if (output != nullptr) micro_context->DeallocateTempTfLiteTensor(output);
  return status;
}

TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  const OpData* data = static_cast<const OpData*>(node->user_data);
  const TfLiteEvalTensor* input = micro::GetEvalInput(context, node, TFS_GSFC_IN_X);
  TfLiteEvalTensor* output = micro::GetEvalOutput(context, node, 0);
  const tfs_tensor x = {input->data.data, ElementCount(input->dims), ElemType(input->type)};
  const tfs_tensor y = {output->data.data, ElementCount(output->dims), ElemType(output->type)};
  int32_t batch = 0;
  char err[160];
  if (tfs_gsfc_validate_io(&data->layer, &x, &y, &batch, err, sizeof err) != TFS_OK ||
      batch != data->batch) {
    MicroPrintf("TFS_GROUP_SPARSE_FC: %s", err);
    return kTfLiteError;
  }
  void* workspace =
      data->scratch_index >= 0 ? context->GetScratchBuffer(context, data->scratch_index) : nullptr;
  if (data->scratch_index >= 0 && workspace == nullptr) return kTfLiteError;
  if (tfs_gsfc_compute(&data->layer, nullptr, x.data, output->data.data, batch, workspace,
                       TFS_IMPL_AUTO) != TFS_OK) {
    MicroPrintf("TFS_GROUP_SPARSE_FC: compute failed");
    return kTfLiteError;
  }
  return kTfLiteOk;
}

}  // namespace

// A pointer, as MicroMutableOpResolver::AddCustom(name, const TFLMRegistration*) takes it.
TFLMRegistration* Register_TFS_GROUP_SPARSE_FC() {
  static TFLMRegistration registration = micro::RegisterOp(Init, Prepare, Eval);
  return &registration;
}

}  // namespace tflite
