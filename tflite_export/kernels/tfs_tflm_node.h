// The TFLite Micro node every tfscalpel custom op shares (TFS_GROUP_SPARSE_FC,
// TFS_GROUP_SPARSE_CONV2D): one template over an op's kernel core, whose C entry points all have
// the shapes of tfs_common.h's TFS_DECLARE_OP_CORE. Each adapter (tfs_*_tflm_adapter.cc) supplies
// a traits struct and its Register_* function; integration: TFLM.md.
//
// Init takes the node's state from the arena's persistent part; Prepare validates every constant
// input completely (FORMAT.md "Validation": a corrupt model fails AllocateTensors, never reads or
// writes out of bounds at Invoke), switches the layer to TFLite's fixed-point requantization and
// requests the op's workspace with RequestScratchBufferInArena; Eval checks only the O(1) shapes
// and computes. No malloc anywhere.
//
// Traits (all static):
//   using Layer = the core's layer view;         static constexpr const char* kName;
//   static constexpr size_t kSections             the most arrays Unpack writes (int8 node);
//   int ElemType(TfLiteType)                      the TFS_ELEM_* of an activation type, 0 if
//                                                  the op does not take it on TFLite Micro;
//   Unpack / Validate / SetRequant / ValidateIo / WorkspaceSize / Compute: the core's
//   prefix_unpack_params, _validate_layer, _set_requant, _validate_io, _workspace_size and
//   prefix_compute(layer, NULL, x, y, batch, workspace, TFS_IMPL_AUTO).
#ifndef TFS_TFLM_NODE_H_
#define TFS_TFLM_NODE_H_

#include <stddef.h>
#include <stdint.h>

#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/kernels/kernel_util.h"
#include "tensorflow/lite/micro/kernels/kernel_util.h"
#include "tensorflow/lite/micro/micro_context.h"
#include "tensorflow/lite/micro/micro_log.h"
#include "tfs_common.h"

namespace tflite {
namespace tfs_tflm {

// The most parameter-blob sections an op has (the int8 variant of the conv op).
constexpr size_t kMaxSections = 16;

inline size_t ElementCount(const TfLiteIntArray* dims) {
  size_t n = 1;
  for (int i = 0; i < dims->size; ++i) {
    if (dims->data[i] < 0) return 0;
    n *= static_cast<size_t>(dims->data[i]);
  }
  return n;
}

template <class Op>
struct Node {
  static_assert(Op::kSections <= kMaxSections, "the op's blob has more sections than Prepare holds");

  struct Data {
    typename Op::Layer layer;
    int32_t batch;
    int scratch_index;  // -1 when no workspace is needed (float32 FC)
  };

  static void* Init(TfLiteContext* context, const char* buffer, size_t length) {
    (void)buffer;
    (void)length;
    return context->AllocatePersistentBuffer(context, sizeof(Data));
  }

  // Unpacks and validates the blob into data->layer, then checks the (static) activation and
  // output shapes and requests the workspace. Temp tensors are released on every path.
  static TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
    Data* data = static_cast<Data*>(node->user_data);
    TF_LITE_ENSURE(context, data != nullptr);
    // FORMAT.md: every parameter is in the constant inputs; custom options must be empty.
    if (node->custom_initial_data_size != 0) {
      MicroPrintf("%s: custom options must be empty", Op::kName);
      return kTfLiteError;
    }
    if (node->inputs->size != 2 || node->outputs->size != 1) {
      MicroPrintf("%s: %d inputs / %d outputs, expected 2 (activations, parameter blob) / 1",
                  Op::kName, node->inputs->size, node->outputs->size);
      return kTfLiteError;
    }
    MicroContext* micro_context = GetMicroContext(context);
    TfLiteTensor* x = micro_context->AllocateTempInputTensor(node, 0);
    TfLiteTensor* blob = micro_context->AllocateTempInputTensor(node, 1);
    TfLiteTensor* y = micro_context->AllocateTempOutputTensor(node, 0);
    TfLiteStatus status = kTfLiteOk;
    char err[160];
    tfs_tensor tensors[kMaxSections] = {};
    size_t n_tensors = 0;
    if (x == nullptr || blob == nullptr || y == nullptr) {
      MicroPrintf("%s: an input or the output is missing", Op::kName);
      status = kTfLiteError;
    } else if (!IsConstantTensor(blob) || blob->type != kTfLiteUInt8) {
      MicroPrintf("%s: input 1 must be the constant uint8 parameter blob", Op::kName);
      status = kTfLiteError;
    } else if (Op::Unpack(blob->data.data, blob->bytes, tensors, &n_tensors, err, sizeof err) !=
                   TFS_OK ||
               Op::Validate(tensors, n_tensors, &data->layer, err, sizeof err) != TFS_OK) {
      MicroPrintf("%s: %s", Op::kName, err);
      status = kTfLiteError;
    }
    if (status == kTfLiteOk) {
      Op::SetRequant(&data->layer, TFS_REQUANT_FIXED_POINT);  // TFLite's reference arithmetic
      // Shapes are static in TFLite Micro: check the activations and output once here (data
      // pointers are not planned yet, so a dummy non-null pointer stands in for them).
      static const int64_t kDummy[1] = {0};
      const tfs_tensor xt = {kDummy, ElementCount(x->dims), Op::ElemType(x->type)};
      const tfs_tensor yt = {kDummy, ElementCount(y->dims), Op::ElemType(y->type)};
      int32_t batch = 0;
      if (Op::ValidateIo(&data->layer, &xt, &yt, &batch, err, sizeof err) != TFS_OK) {
        MicroPrintf("%s: %s", Op::kName, err);
        status = kTfLiteError;
      } else {
        data->batch = batch;
        data->scratch_index = -1;
        const size_t ws = Op::WorkspaceSize(&data->layer, batch);
        if (ws > 0)
          status = context->RequestScratchBufferInArena(context, ws, &data->scratch_index);
      }
    }
    if (x != nullptr) micro_context->DeallocateTempTfLiteTensor(x);
    if (blob != nullptr) micro_context->DeallocateTempTfLiteTensor(blob);
    if (y != nullptr) micro_context->DeallocateTempTfLiteTensor(y);
    return status;
  }

  static TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
    const Data* data = static_cast<const Data*>(node->user_data);
    const TfLiteEvalTensor* input = micro::GetEvalInput(context, node, 0);
    TfLiteEvalTensor* output = micro::GetEvalOutput(context, node, 0);
    const tfs_tensor x = {input->data.data, ElementCount(input->dims), Op::ElemType(input->type)};
    const tfs_tensor y = {output->data.data, ElementCount(output->dims),
                          Op::ElemType(output->type)};
    int32_t batch = 0;
    char err[160];
    if (Op::ValidateIo(&data->layer, &x, &y, &batch, err, sizeof err) != TFS_OK) {
      MicroPrintf("%s: %s", Op::kName, err);
      return kTfLiteError;
    }
    if (batch != data->batch) {
      MicroPrintf("%s: batch %d at Invoke, %d at Prepare", Op::kName, static_cast<int>(batch),
                  static_cast<int>(data->batch));
      return kTfLiteError;
    }
    // A workspace is requested whenever the core needs one (a conv node always, batch >= 1).
    void* workspace = data->scratch_index >= 0
                          ? context->GetScratchBuffer(context, data->scratch_index)
                          : nullptr;
    if (data->scratch_index >= 0 && workspace == nullptr) return kTfLiteError;
    if (Op::Compute(&data->layer, x.data, output->data.data, batch, workspace) != TFS_OK) {
      MicroPrintf("%s: compute failed", Op::kName);
      return kTfLiteError;
    }
    return kTfLiteOk;
  }

  static TFLMRegistration* Registration() {
    static TFLMRegistration registration = micro::RegisterOp(Init, Prepare, Eval);
    return &registration;
  }
};

}  // namespace tfs_tflm
}  // namespace tflite

#endif  // TFS_TFLM_NODE_H_
