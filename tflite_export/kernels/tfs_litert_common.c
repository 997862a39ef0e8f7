/* Shared LiteRT adapter plumbing; see tfs_litert_common.h. */
#define _POSIX_C_SOURCE 200112L /* clock_gettime and posix_memalign under -std=c11 */

#include "tfs_litert_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef LiteRtStatus (*GetTensorTypeFn)(LiteRtTensorBuffer, LiteRtRankedTensorType*);
typedef LiteRtStatus (*GetSizeFn)(LiteRtTensorBuffer, size_t*);
typedef LiteRtStatus (*HostMemoryFn)(LiteRtTensorBuffer, void**);

typedef struct {
  const tfs_litert_op* op;
  GetTensorTypeFn get_type;
  GetSizeFn get_size;
  HostMemoryFn host_memory;
  int error;
  char message[512];
  const void** keys;      /* [cache_len] parameter blob of each cached node */
  unsigned char* nodes;   /* [cache_len * stride] the op's node state */
  size_t stride, cache_len, cache_cap;
  void* workspace;
  size_t workspace_cap;
  long long runs;
} tfs_litert_ctx;

static void set_error(tfs_litert_ctx* ctx, const char* fmt, const char* detail) {
  if (ctx->error) return; /* keep the first error: it is the cause */
  ctx->error = 1;
  snprintf(ctx->message, sizeof ctx->message, fmt, detail);
}

void* tfs_litert_ctx_create(const tfs_litert_op* op, void* get_type, void* get_size,
                            void* host_memory) {
  if (!op || !get_type || !get_size || !host_memory) return NULL;
  tfs_litert_ctx* ctx = (tfs_litert_ctx*)calloc(1, sizeof *ctx);
  if (!ctx) return NULL;
  ctx->op = op;
  ctx->get_type = (GetTensorTypeFn)get_type;
  ctx->get_size = (GetSizeFn)get_size;
  ctx->host_memory = (HostMemoryFn)host_memory;
  const size_t align = _Alignof(max_align_t);
  ctx->stride = (op->node_size + align - 1) / align * align;
  if (ctx->stride == 0) ctx->stride = align;
  return ctx;
}

void tfs_litert_ctx_destroy(void* p) {
  tfs_litert_ctx* ctx = (tfs_litert_ctx*)p;
  if (!ctx) return;
  if (ctx->op->release)
    for (size_t i = 0; i < ctx->cache_len; ++i) ctx->op->release(ctx->nodes + i * ctx->stride);
  free(ctx->keys);
  free(ctx->nodes);
  free(ctx->workspace);
  free(ctx);
}

int tfs_litert_ctx_take_error(void* p, char* buf, size_t len) {
  tfs_litert_ctx* ctx = (tfs_litert_ctx*)p;
  if (!ctx || !ctx->error) return 0;
  if (buf && len) snprintf(buf, len, "%s", ctx->message);
  ctx->error = 0;
  ctx->message[0] = '\0';
  return 1;
}

long long tfs_litert_ctx_runs(void* p) { return p ? ((tfs_litert_ctx*)p)->runs : -1; }

static LiteRtStatus kernel_init(void* user_data, const void* init_data, size_t init_data_size) {
  (void)init_data;
  tfs_litert_ctx* ctx = (tfs_litert_ctx*)user_data;
  /* The op's format keeps every parameter in the blob; custom options must be empty. */
  if (ctx && init_data_size != 0) {
    char msg[160];
    snprintf(msg, sizeof msg, "custom options must be empty (%s format version %d keeps every "
             "parameter in the parameter blob)", ctx->op->name, ctx->op->format_version);
    set_error(ctx, "%s", msg);
  }
  return kLiteRtStatusOk;
}

static LiteRtStatus kernel_output_layouts(void* user_data, size_t n_in, const LiteRtLayout* in,
                                          size_t n_out, LiteRtLayout* out) {
  tfs_litert_ctx* ctx = (tfs_litert_ctx*)user_data;
  if (ctx && ctx->op->output_layout) { /* the op's own shape rule (tfs_litert_common.h) */
    if (n_out != 1 || n_in != 2 || ctx->op->output_layout(&in[0], &in[1], &out[0]) != 0) {
      set_error(ctx, "%s", "node has the wrong number of inputs/outputs or bad shapes");
      return kLiteRtStatusErrorInvalidArgument;
    }
    return kLiteRtStatusOk;
  }
  if (n_out != 1 || n_in != 2 || in[0].rank < 1 || in[0].rank > 8 || in[1].rank != 2 ||
      in[1].dimensions[0] < 1) {
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

/* Element count and type of a buffer, checked against the bytes it really has. */
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
  const size_t esize = tfs_elem_size(type.element_type); /* 0: never accepted, validation says */
  if (esize && count > bytes / esize) return -1; /* the layout claims more than the buffer has */
  t->count = count;
  t->elem = type.element_type;
  t->data = NULL;
  return 0;
}

static const void* find_cached(const tfs_litert_ctx* ctx, const void* blob) {
  for (size_t i = 0; i < ctx->cache_len; ++i)
    if (ctx->keys[i] == blob) return ctx->nodes + i * ctx->stride;
  return NULL;
}

/* First sight of a node: the op unpacks, validates and packs its parameter blob; cache it. */
static const void* validate_and_cache(tfs_litert_ctx* ctx, LiteRtTensorBuffer blob_buf,
                                      const void* blob) {
  LiteRtRankedTensorType type;
  size_t bytes = 0;
  if (ctx->get_type(blob_buf, &type) != kLiteRtStatusOk ||
      ctx->get_size(blob_buf, &bytes) != kLiteRtStatusOk) {
    set_error(ctx, "%s", "cannot read the parameter blob's type and size");
    return NULL;
  }
  if (type.element_type != TFS_ELEM_UINT8 || (!ctx->op->check_blob_layout && type.layout.rank != 2)) {
    set_error(ctx, "%s", "input 1 (the parameter blob) must be a 2-D uint8 tensor");
    return NULL;
  }
  if (ctx->cache_len == ctx->cache_cap) {
    const size_t cap = ctx->cache_cap ? 2 * ctx->cache_cap : 8;
    const void** keys = (const void**)realloc((void*)ctx->keys, cap * sizeof *keys);
    if (keys) ctx->keys = keys;
    unsigned char* nodes = keys ? (unsigned char*)realloc(ctx->nodes, cap * ctx->stride) : NULL;
    if (!nodes) {
      set_error(ctx, "%s", "out of memory");
      return NULL;
    }
    ctx->nodes = nodes;
    ctx->cache_cap = cap;
  }
  unsigned char* node = ctx->nodes + ctx->cache_len * ctx->stride;
  memset(node, 0, ctx->stride);
  int32_t out = 0;
  char err[400];
  tfs_tensor sections[TFS_LITERT_MAX_SECTIONS];
  size_t n_sections = 0;
  if (ctx->op->unpack(blob, bytes, sections, &n_sections, err, sizeof err) != TFS_OK ||
      ctx->op->prepare(node, sections, n_sections, &out, err, sizeof err) != TFS_OK) {
    set_error(ctx, "invalid node: %s", err);
    return NULL;
  }
  if (ctx->op->check_blob_layout ? ctx->op->check_blob_layout(node, &type.layout) != 0
                                 : type.layout.dimensions[0] != out) {
    if (ctx->op->release) ctx->op->release(node);
    set_error(ctx, "%s", ctx->op->check_blob_layout
                             ? "the parameter blob's shape does not match the node's geometry"
                             : "the parameter blob's first dimension must equal the layer's out");
    return NULL;
  }
  ctx->keys[ctx->cache_len++] = blob;
  return node;
}

static LiteRtStatus kernel_run(void* user_data, size_t n_in, const LiteRtTensorBuffer* inputs,
                               size_t n_out, LiteRtTensorBuffer* outputs) {
  tfs_litert_ctx* ctx = (tfs_litert_ctx*)user_data;
  if (!ctx) return kLiteRtStatusErrorInvalidArgument;
  ctx->runs++;
  if (n_out != 1 || n_in != 2) {
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
  const void* node = find_cached(ctx, blob);
  if (!node) node = validate_and_cache(ctx, inputs[1], blob);
  if (!node) return kLiteRtStatusErrorInvalidArgument;
  int32_t batch = 0;
  size_t ws = 0;
  char err[400];
  if (ctx->op->check_io(node, &x, &y, &batch, &ws, err, sizeof err) != TFS_OK) {
    set_error(ctx, "invalid run: %s", err);
    return kLiteRtStatusErrorInvalidArgument;
  }
  if (ws > ctx->workspace_cap) {
    /* 64-byte aligned: the SIMD kernels' 32-byte input loads then never split a cache line. The
     * old contents need not survive (the workspace is scratch for one run). */
    void* grown = NULL;
    if (posix_memalign(&grown, 64, ws) != 0) {
      set_error(ctx, "%s", "out of memory for the int8 workspace");
      return kLiteRtStatusErrorRuntimeFailure;
    }
    free(ctx->workspace);
    ctx->workspace = grown;
    ctx->workspace_cap = ws;
  }
  if (ctx->op->compute(node, xp, yp, batch, ctx->workspace, *ctx->op->impl) != TFS_OK) {
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

const LiteRtCustomOpKernel* tfs_litert_kernel(void) { return &kKernel; }

double tfs_now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
