/* LiteRT adapter for TFS_GROUP_SPARSE_FC: the LiteRtCustomOpKernel vtable over the kernel core.
 *
 * The wheel ships no headers, so the few LiteRT types used here are declared below and pinned
 * by static_asserts (facts: shared/notes/litert-custom-ops.md). Nothing links against
 * libLiteRt.so: the four LiteRt* functions Run needs arrive as pointers from the Python runtime,
 * which has already loaded the library (a build-time link is fragile under pip's isolation).
 *
 * LiteRT ignores the status Run returns (trap 3), so every failure goes into the context's
 * error slot, which the Python runtime checks after each run. One context (= user_data) is
 * made per loaded model and shared by all its nodes (trap 4: Run gets no node identity), so
 * validated layers are cached by the address of their parameter blob (the node's one constant
 * input); the cache dies with the context, before the model's memory can be reused.
 */
#define _POSIX_C_SOURCE 200112L /* clock_gettime, posix_memalign under -std=c11 */

#include <assert.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tfs_group_sparse_fc.h"

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

typedef LiteRtStatus (*GetTensorTypeFn)(LiteRtTensorBuffer, LiteRtRankedTensorType*);
typedef LiteRtStatus (*GetSizeFn)(LiteRtTensorBuffer, size_t*);
typedef LiteRtStatus (*HostMemoryFn)(LiteRtTensorBuffer, void**);
typedef LiteRtStatus (*RunCompiledModelFn)(void*, LiteRtParamIndex, size_t, LiteRtTensorBuffer*,
                                           size_t, LiteRtTensorBuffer*);

/* A validated layer and the parameter blob it was validated from. */
typedef struct {
  const void* blob;
  tfs_gsfc_layer layer;
  tfs_gsfc_packed packed; /* the SIMD paths' copy, in packed_mem */
  void* packed_mem;
} tfs_cached_layer;

typedef struct {
  GetTensorTypeFn get_type;
  GetSizeFn get_size;
  HostMemoryFn host_memory;
  int error;
  char message[512];
  tfs_cached_layer* cache;
  size_t cache_len, cache_cap;
  void* workspace;
  size_t workspace_cap;
  long long runs;
} tfs_litert_ctx;

/* The compute implementation used by every context (TFS_IMPL_AUTO unless a test forces one). */
static int g_impl = TFS_IMPL_AUTO;

int tfs_set_impl(int impl) {
  if (!tfs_gsfc_impl_available(impl)) return TFS_ERR_UNSUPPORTED;
  g_impl = impl;
  return TFS_OK;
}

int tfs_get_impl(void) { return g_impl; }

static void set_error(tfs_litert_ctx* ctx, const char* fmt, const char* detail) {
  if (ctx->error) return; /* keep the first error: it is the cause */
  ctx->error = 1;
  snprintf(ctx->message, sizeof ctx->message, fmt, detail);
}

/* The LiteRt* functions Run needs, as pointers from the loaded libLiteRt.so:
 * LiteRtGetTensorBufferTensorType, LiteRtGetTensorBufferSize, LiteRtGetTensorBufferHostMemory. */
void* tfs_litert_ctx_create(void* get_type, void* get_size, void* host_memory) {
  if (!get_type || !get_size || !host_memory) return NULL;
  tfs_litert_ctx* ctx = (tfs_litert_ctx*)calloc(1, sizeof *ctx);
  if (!ctx) return NULL;
  ctx->get_type = (GetTensorTypeFn)get_type;
  ctx->get_size = (GetSizeFn)get_size;
  ctx->host_memory = (HostMemoryFn)host_memory;
  return ctx;
}

void tfs_litert_ctx_destroy(void* p) {
  tfs_litert_ctx* ctx = (tfs_litert_ctx*)p;
  if (!ctx) return;
  for (size_t i = 0; i < ctx->cache_len; ++i) free(ctx->cache[i].packed_mem);
  free(ctx->cache);
  free(ctx->workspace);
  free(ctx);
}

/* Copies the pending error message into buf and clears it; returns 1 if there was one. */
int tfs_litert_ctx_take_error(void* p, char* buf, size_t len) {
  tfs_litert_ctx* ctx = (tfs_litert_ctx*)p;
  if (!ctx || !ctx->error) return 0;
  if (buf && len) snprintf(buf, len, "%s", ctx->message);
  ctx->error = 0;
  ctx->message[0] = '\0';
  return 1;
}

/* Number of custom-op node runs since the context was made (lets tests prove the op ran). */
long long tfs_litert_ctx_runs(void* p) { return p ? ((tfs_litert_ctx*)p)->runs : -1; }

static LiteRtStatus kernel_init(void* user_data, const void* init_data, size_t init_data_size) {
  (void)init_data;
  tfs_litert_ctx* ctx = (tfs_litert_ctx*)user_data;
  /* Format version 1 keeps every parameter in constant tensors; custom options must be empty. */
  if (ctx && init_data_size != 0)
    set_error(ctx, "%s", "custom options must be empty (format version 1)");
  return kLiteRtStatusOk;
}

static LiteRtStatus kernel_output_layouts(void* user_data, size_t n_in, const LiteRtLayout* in,
                                          size_t n_out, LiteRtLayout* out) {
  tfs_litert_ctx* ctx = (tfs_litert_ctx*)user_data;
  if (n_out != 1 || n_in != TFS_GSFC_NODE_INPUTS || in[0].rank < 1 || in[0].rank > 8 ||
      in[1].rank != 2 || in[1].dimensions[0] < 1) {
    if (ctx) set_error(ctx, "%s", "node has the wrong number of inputs/outputs or bad ranks");
    return kLiteRtStatusErrorInvalidArgument;
  }
  /* Output = activations' shape with the last dimension replaced by out, which is the blob's
   * first dimension (shape inference sees shapes only; FORMAT.md "Parameter blob"). */
  LiteRtLayout o;
  memset(&o, 0, sizeof o);
  o.rank = in[0].rank;
  for (unsigned i = 0; i < o.rank; ++i) o.dimensions[i] = in[0].dimensions[i];
  o.dimensions[o.rank - 1] = in[1].dimensions[0];
  out[0] = o;
  return kLiteRtStatusOk;
}

/* Element count and byte size of a buffer, checked against the bytes it really has. */
static int describe(tfs_litert_ctx* ctx, LiteRtTensorBuffer buf, tfs_tensor* t) {
  LiteRtRankedTensorType type;
  size_t bytes = 0;
  if (ctx->get_type(buf, &type) != kLiteRtStatusOk || ctx->get_size(buf, &bytes) != kLiteRtStatusOk)
    return -1;
  size_t count = 1;
  for (unsigned i = 0; i < type.layout.rank; ++i) {
    const int32_t d = type.layout.dimensions[i];
    if (d < 0) return -1;
    if (d != 0 && count > SIZE_MAX / (size_t)d) return -1;
    count *= (size_t)d;
  }
  size_t esize = 0;
  switch (type.element_type) {
    case TFS_ELEM_FLOAT32: case TFS_ELEM_INT32: esize = 4; break;
    case TFS_ELEM_UINT16: esize = 2; break;
    case TFS_ELEM_INT8: esize = 1; break;
    default: esize = 0; /* a type we never accept; validation reports it */
  }
  if (esize && count > bytes / esize) return -1; /* the layout claims more than the buffer has */
  t->count = count;
  t->elem = type.element_type;
  t->data = NULL;
  return 0;
}

/* Cached layer validated from the blob at this address, or NULL. Keying on the address alone is
 * memory-safe: a hit means the kernel touches exactly the bytes that were validated (the model
 * is immutable and outlives the context); the activations and the output are checked on every
 * run. */
static const tfs_cached_layer* find_cached(const tfs_litert_ctx* ctx, const void* blob) {
  for (size_t i = 0; i < ctx->cache_len; ++i)
    if (ctx->cache[i].blob == blob) return &ctx->cache[i];
  return NULL;
}

/* First sight of a node: unpack and validate its parameter blob, pack, cache. */
static const tfs_cached_layer* validate_and_cache(tfs_litert_ctx* ctx, LiteRtTensorBuffer blob_buf,
                                                  const void* blob) {
  LiteRtRankedTensorType type;
  size_t bytes = 0;
  if (ctx->get_type(blob_buf, &type) != kLiteRtStatusOk ||
      ctx->get_size(blob_buf, &bytes) != kLiteRtStatusOk) {
    set_error(ctx, "%s", "cannot read the parameter blob's type and size");
    return NULL;
  }
  if (type.element_type != TFS_ELEM_UINT8 || type.layout.rank != 2) {
    set_error(ctx, "%s", "input 1 (the parameter blob) must be a 2-D uint8 tensor");
    return NULL;
  }
  tfs_tensor t[TFS_GSFC_NUM_INPUTS_I8];
  size_t n = 0;
  tfs_gsfc_layer layer;
  char err[400];
  if (tfs_gsfc_unpack_params(blob, bytes, t, &n, err, sizeof err) != TFS_OK ||
      tfs_gsfc_validate_layer(t, n, &layer, err, sizeof err) != TFS_OK) {
    set_error(ctx, "invalid node: %s", err);
    return NULL;
  }
  if (type.layout.dimensions[0] != layer.out) {
    set_error(ctx, "%s", "the parameter blob's first dimension must equal the layer's out");
    return NULL;
  }
  if (ctx->cache_len == ctx->cache_cap) {
    const size_t cap = ctx->cache_cap ? 2 * ctx->cache_cap : 8;
    tfs_cached_layer* grown = (tfs_cached_layer*)realloc(ctx->cache, cap * sizeof *grown);
    if (!grown) {
      set_error(ctx, "%s", "out of memory");
      return NULL;
    }
    ctx->cache = grown;
    ctx->cache_cap = cap;
  }
  /* The SIMD kernels' packed copy, made once per node. */
  const size_t bound = tfs_gsfc_packed_bound(&layer);
  void* mem = NULL;
  tfs_gsfc_packed packed;
  if (posix_memalign(&mem, 64, bound ? bound : 64) != 0) {
    set_error(ctx, "%s", "out of memory for the packed weights");
    return NULL;
  }
  if (tfs_gsfc_pack(&layer, mem, bound, &packed) != TFS_OK) {
    free(mem);
    set_error(ctx, "%s", "packing the weights failed");
    return NULL;
  }
  tfs_cached_layer* c = &ctx->cache[ctx->cache_len++];
  memset(c, 0, sizeof *c);
  c->blob = blob;
  c->layer = layer;
  c->packed = packed;
  c->packed_mem = mem;
  return c;
}

static LiteRtStatus kernel_run(void* user_data, size_t n_in, const LiteRtTensorBuffer* inputs,
                               size_t n_out, LiteRtTensorBuffer* outputs) {
  tfs_litert_ctx* ctx = (tfs_litert_ctx*)user_data;
  if (!ctx) return kLiteRtStatusErrorInvalidArgument;
  ctx->runs++;
  if (n_out != 1 || n_in != TFS_GSFC_NODE_INPUTS) {
    set_error(ctx, "%s", "node must have 2 inputs (activations, parameter blob) and 1 output");
    return kLiteRtStatusErrorInvalidArgument;
  }
  /* Host buffers only (CPU): their memory is read directly, no lock round trip per run. */
  void *xp = NULL, *blob = NULL, *yp = NULL;
  if (ctx->host_memory(inputs[0], &xp) != kLiteRtStatusOk ||
      ctx->host_memory(inputs[1], &blob) != kLiteRtStatusOk ||
      ctx->host_memory(outputs[0], &yp) != kLiteRtStatusOk) {
    set_error(ctx, "%s", "an input or the output is not a host-memory tensor buffer");
    return kLiteRtStatusErrorRuntimeFailure;
  }
  tfs_tensor x, y;
  if (describe(ctx, inputs[0], &x) != 0 || describe(ctx, outputs[0], &y) != 0) {
    set_error(ctx, "%s", "cannot describe the activations or the output buffer");
    return kLiteRtStatusErrorRuntimeFailure;
  }
  x.data = xp;
  y.data = yp;
  const tfs_cached_layer* node = find_cached(ctx, blob);
  if (!node) node = validate_and_cache(ctx, inputs[1], blob);
  if (!node) return kLiteRtStatusErrorInvalidArgument;
  const tfs_gsfc_layer* layer = &node->layer;
  int32_t batch = 0;
  char err[400];
  if (tfs_gsfc_validate_io(layer, &x, &y, &batch, err, sizeof err) != TFS_OK) {
    set_error(ctx, "invalid run: %s", err);
    return kLiteRtStatusErrorInvalidArgument;
  }
  const size_t ws = tfs_gsfc_workspace_size(layer, batch);
  if (ws > ctx->workspace_cap) {
    void* grown = realloc(ctx->workspace, ws);
    if (!grown) {
      set_error(ctx, "%s", "out of memory for the int8 workspace");
      return kLiteRtStatusErrorRuntimeFailure;
    }
    ctx->workspace = grown;
    ctx->workspace_cap = ws;
  }
  if (tfs_gsfc_compute(layer, &node->packed, x.data, yp, batch, ctx->workspace, g_impl) != TFS_OK) {
    set_error(ctx, "%s", "the selected kernel implementation is not available on this CPU");
    return kLiteRtStatusErrorRuntimeFailure;
  }
  return kLiteRtStatusOk;
}

static LiteRtStatus kernel_destroy(void* user_data) {
  (void)user_data; /* the context outlives the compiled model; Python frees it afterwards */
  return kLiteRtStatusOk;
}

static const LiteRtCustomOpKernel kKernel = {kernel_init, kernel_output_layouts, kernel_run,
                                             kernel_destroy};

/* The vtable handed to LiteRtAddCustomOpKernelOption. */
const void* tfs_litert_kernel(void) { return &kKernel; }

/* ---- Timing helpers for benchmarks: loops in C, so ctypes' ~0.35 us per call is not timed. */

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Seconds per LiteRtRunCompiledModel(cm, signature 0, ...), averaged over iterations; <0 on error. */
double tfs_time_litert_run(void* run_fn, void* cm, size_t n_in, LiteRtTensorBuffer* in,
                           size_t n_out, LiteRtTensorBuffer* out, int iterations) {
  RunCompiledModelFn run = (RunCompiledModelFn)run_fn;
  if (!run || iterations < 1) return -1.0;
  const double t0 = now_seconds();
  for (int i = 0; i < iterations; ++i)
    if (run(cm, 0, n_in, in, n_out, out) != kLiteRtStatusOk) return -1.0;
  return (now_seconds() - t0) / iterations;
}

/* Seconds per tfs_gsfc_compute on a validated layer; <0 if impl is unavailable. */
double tfs_gsfc_time_compute(const tfs_gsfc_layer* layer, const tfs_gsfc_packed* packed,
                             const void* x, void* y, int32_t batch, void* workspace, int impl,
                             int iterations) {
  if (iterations < 1 || !tfs_gsfc_impl_available(impl)) return -1.0;
  const double t0 = now_seconds();
  for (int i = 0; i < iterations; ++i)
    if (tfs_gsfc_compute(layer, packed, x, y, batch, workspace, impl) != TFS_OK) return -1.0;
  return (now_seconds() - t0) / iterations;
}

/* Size of tfs_gsfc_packed, for the Python side. */
size_t tfs_gsfc_packed_struct_size(void) { return sizeof(tfs_gsfc_packed); }

/* Size of tfs_gsfc_layer, so the Python side can allocate one without knowing its fields. */
size_t tfs_gsfc_layer_size(void) { return sizeof(tfs_gsfc_layer); }

/* Set the int8 requantization flavour of a validated layer (TFS_REQUANT_*). */
int tfs_gsfc_set_requant(tfs_gsfc_layer* layer, int requant) {
  if (requant != TFS_REQUANT_FP32 && requant != TFS_REQUANT_FIXED_POINT) return TFS_ERR_INVALID;
  layer->requant = requant;
  return TFS_OK;
}
