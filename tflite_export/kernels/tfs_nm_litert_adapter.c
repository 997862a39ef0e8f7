/* LiteRT adapter for TFS_NM_SPARSE_FC: the LiteRtCustomOpKernel vtable over tfs_nm_sparse_fc.c.
 *
 * Same contract as the group-sparse adapter (tfs_litert_adapter.c; facts in
 * shared/notes/litert-custom-ops.md): the LiteRt* functions arrive as pointers from the Python
 * runtime, failures go to the context's error slot (LiteRT ignores Run's status), one context per
 * loaded model is shared by all nodes of this op, and validated layers are cached by the
 * addresses of their constant tensors. Kept in its own file so the two ops evolve separately.
 */
#define _POSIX_C_SOURCE 200112L

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tfs_nm_sparse_fc.h"

/* ---- The LiteRT C API types touched here (ai-edge-litert 2.3.0), pinned by static_asserts. */
typedef int LiteRtStatus;
typedef void* LiteRtTensorBuffer;

typedef struct {
  unsigned int rank : 7;
  unsigned int has_strides : 1;
  int32_t dimensions[8];
  uint32_t strides[8];
} NmLiteRtLayout;

typedef struct {
  int element_type;
  NmLiteRtLayout layout;
} NmLiteRtRankedTensorType;

typedef struct {
  LiteRtStatus (*Init)(void*, const void*, size_t);
  LiteRtStatus (*GetOutputLayouts)(void*, size_t, const NmLiteRtLayout*, size_t, NmLiteRtLayout*);
  LiteRtStatus (*Run)(void*, size_t, const LiteRtTensorBuffer*, size_t, LiteRtTensorBuffer*);
  LiteRtStatus (*Destroy)(void*);
} NmLiteRtCustomOpKernel;

_Static_assert(sizeof(NmLiteRtLayout) == 68, "LiteRtLayout must be 68 bytes (ai-edge-litert 2.3.0)");
_Static_assert(sizeof(NmLiteRtRankedTensorType) == 72, "LiteRtRankedTensorType must be 72 bytes");

enum { kOk = 0, kInvalidArgument = 1, kRuntimeFailure = 3 };

typedef LiteRtStatus (*GetTensorTypeFn)(LiteRtTensorBuffer, NmLiteRtRankedTensorType*);
typedef LiteRtStatus (*GetSizeFn)(LiteRtTensorBuffer, size_t*);
typedef LiteRtStatus (*HostMemoryFn)(LiteRtTensorBuffer, void**);

typedef struct {
  const void* blob; /* the node's parameter blob, the cache key */
  tfs_nmfc_layer layer;
} nm_cached;

typedef struct {
  GetTensorTypeFn get_type;
  GetSizeFn get_size;
  HostMemoryFn host_memory;
  int error;
  char message[512];
  nm_cached* cache;
  size_t cache_len, cache_cap;
  void* workspace;
  size_t workspace_cap;
  long long runs;
} nm_ctx;

static int g_nm_impl = TFS_IMPL_AUTO;

int tfs_nm_set_impl(int impl) {
  if (!tfs_gsfc_impl_available(impl)) return TFS_ERR_UNSUPPORTED;
  g_nm_impl = impl;
  return TFS_OK;
}

static void set_error(nm_ctx* ctx, const char* fmt, const char* detail) {
  if (ctx->error) return; /* the first error is the cause */
  ctx->error = 1;
  snprintf(ctx->message, sizeof ctx->message, fmt, detail);
}

void* tfs_nm_litert_ctx_create(void* get_type, void* get_size, void* host_memory) {
  if (!get_type || !get_size || !host_memory) return NULL;
  nm_ctx* ctx = (nm_ctx*)calloc(1, sizeof *ctx);
  if (!ctx) return NULL;
  ctx->get_type = (GetTensorTypeFn)get_type;
  ctx->get_size = (GetSizeFn)get_size;
  ctx->host_memory = (HostMemoryFn)host_memory;
  return ctx;
}

void tfs_nm_litert_ctx_destroy(void* p) {
  nm_ctx* ctx = (nm_ctx*)p;
  if (!ctx) return;
  free(ctx->cache);
  free(ctx->workspace);
  free(ctx);
}

int tfs_nm_litert_ctx_take_error(void* p, char* buf, size_t len) {
  nm_ctx* ctx = (nm_ctx*)p;
  if (!ctx || !ctx->error) return 0;
  if (buf && len) snprintf(buf, len, "%s", ctx->message);
  ctx->error = 0;
  ctx->message[0] = '\0';
  return 1;
}

long long tfs_nm_litert_ctx_runs(void* p) { return p ? ((nm_ctx*)p)->runs : -1; }

static LiteRtStatus nm_init(void* user_data, const void* init_data, size_t size) {
  (void)init_data;
  if (user_data && size != 0) set_error((nm_ctx*)user_data, "%s", "custom options must be empty (format version 1)");
  return kOk;
}

static LiteRtStatus nm_output_layouts(void* user_data, size_t n_in, const NmLiteRtLayout* in,
                                      size_t n_out, NmLiteRtLayout* out) {
  nm_ctx* ctx = (nm_ctx*)user_data;
  if (n_out != 1 || n_in != TFS_NMFC_NODE_INPUTS || in[0].rank < 1 || in[0].rank > 8 ||
      in[1].rank != 2 || in[1].dimensions[0] < 1) {
    if (ctx) set_error(ctx, "%s", "node has the wrong number of inputs/outputs or bad ranks");
    return kInvalidArgument;
  }
  /* out = the blob's first dimension (FORMAT.md "Parameter blob"). */
  NmLiteRtLayout o;
  memset(&o, 0, sizeof o);
  o.rank = in[0].rank;
  for (unsigned i = 0; i < o.rank; ++i) o.dimensions[i] = in[0].dimensions[i];
  o.dimensions[o.rank - 1] = in[1].dimensions[0];
  out[0] = o;
  return kOk;
}

/* Element count and type of a buffer, checked against the bytes it really has. */
static int describe(nm_ctx* ctx, LiteRtTensorBuffer buf, tfs_tensor* t) {
  NmLiteRtRankedTensorType type;
  size_t bytes = 0, count = 1, esize = 0;
  if (ctx->get_type(buf, &type) != kOk || ctx->get_size(buf, &bytes) != kOk) return -1;
  for (unsigned i = 0; i < type.layout.rank; ++i) {
    const int32_t d = type.layout.dimensions[i];
    if (d < 0 || (d != 0 && count > SIZE_MAX / (size_t)d)) return -1;
    count *= (size_t)d;
  }
  switch (type.element_type) {
    case TFS_ELEM_FLOAT32: case TFS_ELEM_INT32: esize = 4; break;
    case TFS_ELEM_INT8: case TFS_ELEM_UINT8: esize = 1; break;
    default: esize = 0; /* never accepted; validation reports it */
  }
  if (esize && count > bytes / esize) return -1;
  t->count = count;
  t->elem = type.element_type;
  t->data = NULL;
  return 0;
}

static const nm_cached* find_cached(const nm_ctx* ctx, const void* blob) {
  for (size_t i = 0; i < ctx->cache_len; ++i)
    if (ctx->cache[i].blob == blob) return &ctx->cache[i];
  return NULL;
}

static const nm_cached* validate_and_cache(nm_ctx* ctx, LiteRtTensorBuffer blob_buf, const void* blob) {
  NmLiteRtRankedTensorType type;
  size_t bytes = 0;
  if (ctx->get_type(blob_buf, &type) != kOk || ctx->get_size(blob_buf, &bytes) != kOk) {
    set_error(ctx, "%s", "cannot read the parameter blob's type and size");
    return NULL;
  }
  if (type.element_type != TFS_ELEM_UINT8 || type.layout.rank != 2) {
    set_error(ctx, "%s", "input 1 (the parameter blob) must be a 2-D uint8 tensor");
    return NULL;
  }
  tfs_tensor t[TFS_NMFC_NUM_INPUTS_I8];
  size_t n = 0;
  tfs_nmfc_layer layer;
  char err[400];
  if (tfs_nmfc_unpack_params(blob, bytes, t, &n, err, sizeof err) != TFS_OK ||
      tfs_nmfc_validate_layer(t, n, &layer, err, sizeof err) != TFS_OK) {
    set_error(ctx, "invalid node: %s", err);
    return NULL;
  }
  if (type.layout.dimensions[0] != layer.out) {
    set_error(ctx, "%s", "the parameter blob's first dimension must equal the layer's out");
    return NULL;
  }
  if (ctx->cache_len == ctx->cache_cap) {
    const size_t cap = ctx->cache_cap ? 2 * ctx->cache_cap : 8;
    nm_cached* grown = (nm_cached*)realloc(ctx->cache, cap * sizeof *grown);
    if (!grown) {
      set_error(ctx, "%s", "out of memory");
      return NULL;
    }
    ctx->cache = grown;
    ctx->cache_cap = cap;
  }
  nm_cached* c = &ctx->cache[ctx->cache_len++];
  c->blob = blob;
  c->layer = layer;
  return c;
}

static LiteRtStatus nm_run(void* user_data, size_t n_in, const LiteRtTensorBuffer* inputs,
                           size_t n_out, LiteRtTensorBuffer* outputs) {
  nm_ctx* ctx = (nm_ctx*)user_data;
  if (!ctx) return kInvalidArgument;
  ctx->runs++;
  if (n_out != 1 || n_in != TFS_NMFC_NODE_INPUTS) {
    set_error(ctx, "%s", "node must have 2 inputs (activations, parameter blob) and 1 output");
    return kInvalidArgument;
  }
  void *xp = NULL, *blob = NULL, *yp = NULL;
  if (ctx->host_memory(inputs[0], &xp) != kOk || ctx->host_memory(inputs[1], &blob) != kOk ||
      ctx->host_memory(outputs[0], &yp) != kOk) {
    set_error(ctx, "%s", "an input or the output is not a host-memory tensor buffer");
    return kRuntimeFailure;
  }
  tfs_tensor x, y;
  if (describe(ctx, inputs[0], &x) != 0 || describe(ctx, outputs[0], &y) != 0) {
    set_error(ctx, "%s", "cannot describe the activations or the output buffer");
    return kRuntimeFailure;
  }
  x.data = xp;
  y.data = yp;
  const nm_cached* node = find_cached(ctx, blob);
  if (!node) node = validate_and_cache(ctx, inputs[1], blob);
  if (!node) return kInvalidArgument;
  int32_t batch = 0;
  char err[400];
  if (tfs_nmfc_validate_io(&node->layer, &x, &y, &batch, err, sizeof err) != TFS_OK) {
    set_error(ctx, "invalid run: %s", err);
    return kInvalidArgument;
  }
  const size_t ws = tfs_nmfc_workspace_size(&node->layer, batch);
  if (ws > ctx->workspace_cap) {
    void* grown = realloc(ctx->workspace, ws);
    if (!grown) {
      set_error(ctx, "%s", "out of memory for the int8 workspace");
      return kRuntimeFailure;
    }
    ctx->workspace = grown;
    ctx->workspace_cap = ws;
  }
  if (tfs_nmfc_compute(&node->layer, x.data, yp, batch, ctx->workspace, g_nm_impl) != TFS_OK) {
    set_error(ctx, "%s", "the selected kernel implementation is not available on this CPU");
    return kRuntimeFailure;
  }
  return kOk;
}

static LiteRtStatus nm_destroy(void* user_data) {
  (void)user_data; /* the context outlives the compiled model; Python frees it afterwards */
  return kOk;
}

static const NmLiteRtCustomOpKernel kNmKernel = {nm_init, nm_output_layouts, nm_run, nm_destroy};

/* The vtable handed to LiteRtAddCustomOpKernelOption for "TFS_NM_SPARSE_FC". */
const void* tfs_nm_litert_kernel(void) { return &kNmKernel; }
