/* The LiteRT plumbing every tfscalpel custom op shares: LiteRT C API type declarations, the
 * per-model context (error slot, node cache keyed by parameter blob, workspace), buffer
 * description and the LiteRtCustomOpKernel vtable. Each op supplies only a tfs_litert_op:
 * its validate+pack (prepare), per-run check and compute hooks.
 *
 * The wheel ships no headers, so the few LiteRT types used here are declared below and pinned
 * by static_asserts (facts: tflite_export/RUNTIME.md). Nothing links against
 * libLiteRt.so: the LiteRt* functions Run needs arrive as pointers from the Python runtime,
 * which has already loaded the library (a build-time link is fragile under pip's isolation).
 *
 * LiteRT ignores the status Run returns (RUNTIME.md, "Ignored return codes"), so every failure
 * goes into the context's error slot, which the Python runtime checks after each run. One
 * context (= user_data) is made per loaded model and op, shared by all of that op's nodes
 * (RUNTIME.md, "One user_data per op name": Run gets no node identity),
 * so validated nodes are cached by the address of their parameter blob (the node's one constant
 * input); the cache dies with the context, before the model's memory can be reused. Keying on
 * the address alone is memory-safe: a hit means the kernel touches exactly the bytes that were
 * validated (the model is immutable and outlives the context); the activations and the output
 * are checked on every run.
 */
#ifndef TFS_LITERT_COMMON_H_
#define TFS_LITERT_COMMON_H_

#include <stddef.h>
#include <stdint.h>

#include "tfs_common.h"

/* ---- Our own declarations of the LiteRT C API types we touch (ai-edge-litert 2.3.0) ---- */
typedef int LiteRtStatus;
typedef void* LiteRtTensorBuffer;
typedef size_t LiteRtParamIndex;

typedef struct {
  unsigned int rank : 7;
  unsigned int has_strides : 1;
  int32_t dimensions[8];
  uint32_t strides[8];
} LiteRtLayout;

typedef struct {
  int element_type;
  LiteRtLayout layout;
} LiteRtRankedTensorType;

typedef struct {
  LiteRtStatus (*Init)(void* user_data, const void* init_data, size_t init_data_size);
  LiteRtStatus (*GetOutputLayouts)(void* user_data, size_t num_inputs,
                                   const LiteRtLayout* input_layouts, size_t num_outputs,
                                   LiteRtLayout* output_layouts);
  LiteRtStatus (*Run)(void* user_data, size_t num_inputs, const LiteRtTensorBuffer* inputs,
                      size_t num_outputs, LiteRtTensorBuffer* outputs);
  LiteRtStatus (*Destroy)(void* user_data);
} LiteRtCustomOpKernel;

_Static_assert(sizeof(LiteRtLayout) == 68, "LiteRtLayout must be 68 bytes (ai-edge-litert 2.3.0)");
_Static_assert(sizeof(LiteRtRankedTensorType) == 72,
               "LiteRtRankedTensorType must be 72 bytes (ai-edge-litert 2.3.0)");

enum { kLiteRtStatusOk = 0, kLiteRtStatusErrorInvalidArgument = 1, kLiteRtStatusErrorRuntimeFailure = 3 };

/* The most parameter-blob sections any op has (its int8 variant's constant inputs). */
#define TFS_LITERT_MAX_SECTIONS 16

/* A fused node (FORMAT.md "Fused chains"): its blob is a chain of 2..TFS_CHAIN_MAX_LAYERS layer
 * blobs of one op, run in order on the node's activations, the intermediate activations living
 * in the context's workspace. LiteRT wraps every node input and output in a new tensor buffer on
 * every run (RUNTIME.md "Overheads"), so one node for consecutive layers pays that once.
 *   header   int32 magic "TFSC", int32 number of layers, int32 0, int32 0
 *   entries  per layer: int32 byte offset of its blob (a multiple of 16), int32 its bytes, 0, 0
 * Each layer blob is a complete parameter blob of the op ("TFSB"). Only this LiteRT plumbing
 * reads chains; the exporter fuses only for runtimes that load them. */
#define TFS_CHAIN_MAGIC 0x43534654u /* "TFSC" as little-endian bytes */
#define TFS_CHAIN_MAX_LAYERS 16

/* ---- One op's hooks. A node's cached state is `node_size` bytes the op lays out itself.
 * Each adapter (tfs_*_litert_adapter.c) defines one table and exports it by a getter; the Python
 * runtime hands that table to tfs_litert_ctx_create. */
typedef struct {
  const char* name;   /* the custom op's name in the model, for messages */
  int format_version; /* the parameter format version the op reads (FORMAT.md) */
  size_t node_size;
  /* Split the parameter blob (bytes long) into its sections (FORMAT.md); at most
   * TFS_LITERT_MAX_SECTIONS. TFS_OK, or a message in err. */
  int (*unpack)(const void* blob, size_t bytes, tfs_tensor* sections, size_t* n_sections,
                char* err, size_t err_len);
  /* Validate the sections into `node`, pack if the op needs to; set *out (the layer's output
   * width). TFS_OK, or a message in err. */
  int (*prepare)(void* node, const tfs_tensor* sections, size_t n_sections, int32_t* out,
                 char* err, size_t err_len);
  /* Frees what prepare allocated (NULL if nothing). */
  void (*release)(void* node);
  /* Checks activations and output against the node, O(1): sets *batch and *workspace bytes. */
  int (*check_io)(const void* node, const tfs_tensor* x, const tfs_tensor* y, int32_t* batch,
                  size_t* workspace, char* err, size_t err_len);
  /* y = op(x); TFS_ERR_UNSUPPORTED if impl cannot run here. */
  int (*compute)(const void* node, const void* x, void* y, int32_t batch, void* workspace,
                 int impl);
  const int* impl; /* the implementation this op's contexts use (TFS_IMPL_*) */
  /* Optional (NULL: the FC ops' rule, a 2-D blob [out, row_bytes] and an output of the
   * activations' shape with the last dimension replaced by out). An op whose output shape is
   * not that (TFS_GROUP_SPARSE_CONV2D) gives both hooks: */
  /* The output layout from the activations' and the blob's layouts (shape inference sees only
   * shapes); 0, or nonzero for layouts the op cannot take. */
  int (*output_layout)(const LiteRtLayout* x, const LiteRtLayout* blob, LiteRtLayout* y);
  /* 0 if the blob's layout is the one the validated node implies. */
  int (*check_blob_layout)(const void* node, const LiteRtLayout* blob);
} tfs_litert_op;

/* ---- Exported to the Python runtime (the same five functions serve every op) ---- */

/* A context for `op`, given LiteRtGetTensorBufferTensorType, LiteRtGetTensorBufferSize and
 * LiteRtGetTensorBufferHostMemory as pointers from the loaded libLiteRt.so; NULL on failure. */
void* tfs_litert_ctx_create(const tfs_litert_op* op, void* get_type, void* get_size,
                            void* host_memory);
void tfs_litert_ctx_destroy(void* ctx);
/* Copies the pending error message into buf and clears it; returns 1 if there was one. */
int tfs_litert_ctx_take_error(void* ctx, char* buf, size_t len);
/* Number of node runs since the context was made (lets tests prove the op ran); -1 for NULL. */
long long tfs_litert_ctx_runs(void* ctx);
/* The vtable handed to LiteRtAddCustomOpKernelOption with a context as user_data (one for
 * every op: the context carries the op's table). */
const LiteRtCustomOpKernel* tfs_litert_kernel(void);

/* Monotonic seconds (timing helpers loop in C, so ctypes' ~0.35 us per call is not timed). */
double tfs_now_seconds(void);

#endif /* TFS_LITERT_COMMON_H_ */
