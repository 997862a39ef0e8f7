// Cortex-M4 firmware for benchmarks/mcu/bench_tflm.py: the real TFLite Micro interpreter (built
// for cortex-m4 with CMSIS-NN's kernels from the user's checkouts) runs each model of the
// generated tflm_models.h, the dense ones on CMSIS-NN's FULLY_CONNECTED / CONV_2D and the pruned
// ones with tfscalpel's custom ops registered through MicroMutableOpResolver::AddCustom. Each
// Invoke() sits between two tfs_mark() calls, the segment boundaries of the counting QEMU plugin
// (tfs_cycles_plugin.c). Prints, per model, the arena the interpreter used and every output.
#include <stdio.h>
#include <string.h>

#include "tensorflow/lite/micro/cortex_m_generic/debug_log_callback.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/schema/schema_generated.h"
#include "tflm_models.h"

namespace tflite {
TFLMRegistration* Register_TFS_GROUP_SPARSE_FC();
TFLMRegistration* Register_TFS_GROUP_SPARSE_CONV2D();
}  // namespace tflite

extern "C" __attribute__((noinline)) void tfs_mark(void) { __asm__ volatile("" ::: "memory"); }

alignas(16) static uint8_t g_arena[BENCH_ARENA_BYTES];

static void Log(const char* s) { printf("%s", s); }

int main() {
  RegisterDebugLogCallback(Log);
  tflite::MicroMutableOpResolver<12> resolver;  // not static: no destructor registration (no __dso_handle here)
  resolver.AddFullyConnected();
  resolver.AddConv2D();
  resolver.AddMaxPool2D();
  resolver.AddAveragePool2D();
  resolver.AddReshape();
  resolver.AddQuantize();
  resolver.AddDequantize();
  resolver.AddSoftmax();
  resolver.AddRelu();
  resolver.AddCustom("TFS_GROUP_SPARSE_FC", tflite::Register_TFS_GROUP_SPARSE_FC());
  resolver.AddCustom("TFS_GROUP_SPARSE_CONV2D", tflite::Register_TFS_GROUP_SPARSE_CONV2D());
  for (int m = 0; m < BENCH_N_MODELS; ++m) {
    const bench_model* M = &kModels[m];
    tflite::MicroInterpreter interpreter(tflite::GetModel(M->data), resolver, g_arena,
                                         sizeof g_arena);
    if (interpreter.AllocateTensors() != kTfLiteOk) {
      printf("FAIL %s: AllocateTensors\n", M->name);
      return 2;
    }
    TfLiteTensor* in = interpreter.input(0);
    TfLiteTensor* out = interpreter.output(0);
    if (in->bytes != (size_t)M->input_bytes || out->bytes != (size_t)M->output_bytes) {
      printf("FAIL %s: input %u / output %u bytes, expected %d / %d\n", M->name,
             (unsigned)in->bytes, (unsigned)out->bytes, M->input_bytes, M->output_bytes);
      return 3;
    }
    printf("MODEL %s arena_used %u\n", M->name, (unsigned)interpreter.arena_used_bytes());
    for (int i = 0; i < M->n_inputs; ++i) {
      memcpy(in->data.raw, M->inputs + (size_t)i * M->input_bytes, M->input_bytes);
      tfs_mark();
      const TfLiteStatus st = interpreter.Invoke();
      tfs_mark();
      if (st != kTfLiteOk) {
        printf("FAIL %s: Invoke\n", M->name);
        return 4;
      }
      printf("OUT %s %d", M->name, i);
      for (int k = 0; k < M->output_bytes; ++k) printf(" %d", (int)out->data.int8[k]);
      printf("\n");
    }
  }
  printf("DONE\n");
  return 0;
}
