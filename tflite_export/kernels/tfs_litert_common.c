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

/* One cached node: its parameter blob's address (the key) and the op's state of each of its
 * layers (one, or the layers of a fused chain: tfs_litert_common.h). */
typedef struct {
  const void* key;
  size_t n_layers;
  unsigned char* layers; /* [n_layers * stride] the op's node state per layer */
  int32_t* outs;         /* [n_layers] each layer's output width */
} cached_node;

typedef struct {
  const tfs_litert_op* op;
  GetTensorTypeFn get_type;
  GetSizeFn get_size;
  HostMemoryFn host_memory;
  int error;
  char message[512];
  cached_node* cache;
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

/* Releases the first `n` prepared layers of a node and frees its arrays. */
static void free_node(const tfs_litert_ctx* ctx, cached_node* node, size_t n) {
  if (ctx->op->release)
    for (size_t i = 0; i < n; ++i) ctx->op->release(node->layers + i * ctx->stride);
  free(node->layers);
  free(node->outs);
}

void tfs_litert_ctx_destroy(void* p) {
  tfs_litert_ctx* ctx = (tfs_litert_ctx*)p;
  if (!ctx) return;
  for (size_t i = 0; i < ctx->cache_len; ++i)
    free_node(ctx, &ctx->cache[i], ctx->cache[i].n_layers);
  free(ctx->cache);
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

static const cached_node* find_cached(const tfs_litert_ctx* ctx, const void* blob) {
  for (size_t i = 0; i < ctx->cache_len; ++i)
    if (ctx->cache[i].key == blob) return &ctx->cache[i];
  return NULL;
}

static uint32_t read_u32(const unsigned char* p) {
  uint32_t v;
  memcpy(&v, p, sizeof v); /* little-endian, as every supported target is */
  return v;
}

/* Where each layer's blob lies inside the node's blob: the whole blob for a plain node, the
 * chain directory's entries for a fused one (bounds-checked). Returns the number of layers, or 0
 * with a message in err. */
static size_t layer_blobs(const unsigned char* blob, size_t bytes, size_t* offsets, size_t* sizes,
                          char* err, size_t err_len) {
  if (bytes < TFS_BLOB_HEADER_BYTES || read_u32(blob) != TFS_CHAIN_MAGIC) {
    offsets[0] = 0;
    sizes[0] = bytes;
    return 1;
  }
  const uint32_t n = read_u32(blob + 4);
  if (n < 2 || n > TFS_CHAIN_MAX_LAYERS) {
    snprintf(err, err_len, "fused chain of %u layers; allowed 2..%d", (unsigned)n,
             TFS_CHAIN_MAX_LAYERS);
    return 0;
  }
  const size_t dir_end = TFS_BLOB_HEADER_BYTES + (size_t)n * TFS_BLOB_ENTRY_BYTES;
  if (dir_end > bytes) {
    snprintf(err, err_len, "fused chain directory (%zu bytes) past the blob's %zu", dir_end, bytes);
    return 0;
  }
  for (uint32_t i = 0; i < n; ++i) {
    const unsigned char* e = blob + TFS_BLOB_HEADER_BYTES + (size_t)i * TFS_BLOB_ENTRY_BYTES;
    const size_t off = read_u32(e), len = read_u32(e + 4);
    if (off % TFS_BLOB_ALIGN != 0 || off < dir_end || off > bytes || len > bytes - off) {
      snprintf(err, err_len, "fused chain layer %u: blob at offset %zu, %zu bytes, not a %d-byte "
               "aligned range past the directory inside the blob's %zu bytes", (unsigned)i, off,
               len, TFS_BLOB_ALIGN, bytes);
      return 0;
    }
    offsets[i] = off;
    sizes[i] = len;
  }
  return n;
}

/* First sight of a node: the op unpacks, validates and packs each layer's blob; cache it. */
static const cached_node* validate_and_cache(tfs_litert_ctx* ctx, LiteRtTensorBuffer blob_buf,
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
  char err[400];
  size_t offsets[TFS_CHAIN_MAX_LAYERS], sizes[TFS_CHAIN_MAX_LAYERS];
  const size_t n = layer_blobs((const unsigned char*)blob, bytes, offsets, sizes, err, sizeof err);
  if (n == 0) {
    set_error(ctx, "invalid node: %s", err);
    return NULL;
  }
  if (ctx->cache_len == ctx->cache_cap) {
    const size_t cap = ctx->cache_cap ? 2 * ctx->cache_cap : 8;
    cached_node* grown = (cached_node*)realloc(ctx->cache, cap * sizeof *grown);
    if (!grown) {
      set_error(ctx, "%s", "out of memory");
      return NULL;
    }
    ctx->cache = grown;
    ctx->cache_cap = cap;
  }
  cached_node node = {blob, n, (unsigned char*)calloc(n, ctx->stride),
                      (int32_t*)calloc(n, sizeof(int32_t))};
  if (!node.layers || !node.outs) {
    free_node(ctx, &node, 0);
    set_error(ctx, "%s", "out of memory");
    return NULL;
  }
  for (size_t i = 0; i < n; ++i) {
    tfs_tensor sections[TFS_LITERT_MAX_SECTIONS];
    size_t n_sections = 0;
    const unsigned char* sub = (const unsigned char*)blob + offsets[i];
    if (ctx->op->unpack(sub, sizes[i], sections, &n_sections, err, sizeof err) != TFS_OK ||
        ctx->op->prepare(node.layers + i * ctx->stride, sections, n_sections, &node.outs[i], err,
                         sizeof err) != TFS_OK) {
      free_node(ctx, &node, i);
      if (n == 1) {
        set_error(ctx, "invalid node: %s", err);
      } else {
        char msg[460];
        snprintf(msg, sizeof msg, "fused chain layer %zu: %s", i, err);
        set_error(ctx, "invalid node: %s", msg);
      }
      return NULL;
    }
  }
  if (ctx->op->check_blob_layout ? (n != 1 || ctx->op->check_blob_layout(node.layers, &type.layout) != 0)
                                 : type.layout.dimensions[0] != node.outs[n - 1]) {
    free_node(ctx, &node, n);
    set_error(ctx, "%s", ctx->op->check_blob_layout
                             ? "the parameter blob's shape does not match the node's geometry"
                         : n == 1 ? "the parameter blob's first dimension must equal the layer's out"
                                  : "the parameter blob's first dimension must equal the last layer's out");
    return NULL;
  }
  ctx->cache[ctx->cache_len] = node;
  return &ctx->cache[ctx->cache_len++];
}

/* A workspace of at least `bytes`, 64-byte aligned: the SIMD kernels' 32-byte input loads then
 * never split a cache line. The old contents need not survive (scratch for one run). */
static void* workspace(tfs_litert_ctx* ctx, size_t bytes) {
  if (bytes > ctx->workspace_cap) {
    void* grown = NULL;
    if (posix_memalign(&grown, 64, bytes) != 0) return NULL;
    free(ctx->workspace);
    ctx->workspace = grown;
    ctx->workspace_cap = bytes;
  }
  return ctx->workspace;
}

static size_t round64(size_t n) { return (n + 63) / 64 * 64; }

/* A fused chain's run: layer i reads the previous layer's output from one of two intermediate
 * buffers in the workspace (after the largest per-layer scratch) and writes the other; the first
 * reads x, the last writes y. Every layer's activations and output are checked first, as a
 * plain node's are; the batch is y's element count over the last layer's out, and each layer
 * must agree on it (so each layer's in equals the previous one's out). */
static LiteRtStatus run_chain(tfs_litert_ctx* ctx, const cached_node* node, const tfs_tensor* x,
                              const tfs_tensor* y, void* yp) {
  const size_t n = node->n_layers, esize = tfs_elem_size(x->elem);
  const size_t out_last = (size_t)node->outs[n - 1];
  if (esize == 0 || y->count % out_last != 0) {
    set_error(ctx, "%s", "invalid run: the output is not a whole batch of the last layer's out");
    return kLiteRtStatusErrorInvalidArgument;
  }
  const size_t batch = y->count / out_last;
  size_t inter = 0, scratch = 0;
  for (size_t i = 0; i + 1 < n; ++i) {
    const size_t out = (size_t)node->outs[i];
    if (batch > SIZE_MAX / 4 / out) {
      set_error(ctx, "%s", "invalid run: batch too large for the fused chain");
      return kLiteRtStatusErrorInvalidArgument;
    }
    if (round64(batch * out * esize) > inter) inter = round64(batch * out * esize);
  }
  /* Check every layer on descriptions of its real input and output (the intermediate buffers'
   * addresses are not known before the workspace is sized: y's, which is as aligned, stands in;
   * check_io reads no data). */
  tfs_tensor xi = *x, yi;
  for (size_t i = 0; i < n; ++i) {
    yi.elem = x->elem;
    yi.count = batch * (size_t)node->outs[i];
    yi.data = y->data;
    int32_t b = 0;
    size_t ws = 0;
    char err[400];
    if (ctx->op->check_io(node->layers + i * ctx->stride, &xi, &yi, &b, &ws, err, sizeof err) !=
        TFS_OK) {
      char msg[460];
      snprintf(msg, sizeof msg, "fused chain layer %zu: %s", i, err);
      set_error(ctx, "invalid run: %s", msg);
      return kLiteRtStatusErrorInvalidArgument;
    }
    if ((size_t)b != batch) {
      set_error(ctx, "%s", "invalid run: the fused chain's layers disagree on the batch (a "
                "layer's in is not the previous layer's out)");
      return kLiteRtStatusErrorInvalidArgument;
    }
    if (ws > scratch) scratch = ws;
    xi = yi;
  }
  scratch = round64(scratch);
  if (scratch > SIZE_MAX - 2 * inter) {
    set_error(ctx, "%s", "invalid run: workspace too large");
    return kLiteRtStatusErrorRuntimeFailure;
  }
  unsigned char* ws = (unsigned char*)workspace(ctx, scratch + 2 * inter);
  if (!ws) {
    set_error(ctx, "%s", "out of memory for the workspace");
    return kLiteRtStatusErrorRuntimeFailure;
  }
  void* buf[2] = {ws + scratch, ws + scratch + inter};
  const void* in = x->data;
  for (size_t i = 0; i < n; ++i) {
    void* out = i + 1 == n ? yp : buf[i % 2];
    if (ctx->op->compute(node->layers + i * ctx->stride, in, out, (int32_t)batch, ws,
                         *ctx->op->impl) != TFS_OK) {
      set_error(ctx, "%s", "the selected kernel implementation is not available on this CPU");
      return kLiteRtStatusErrorRuntimeFailure;
    }
    in = out;
  }
  return kLiteRtStatusOk;
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
  const cached_node* node = find_cached(ctx, blob);
  if (!node) node = validate_and_cache(ctx, inputs[1], blob);
  if (!node) return kLiteRtStatusErrorInvalidArgument;
  if (node->n_layers > 1) return run_chain(ctx, node, &x, &y, yp);
  int32_t batch = 0;
  size_t ws = 0;
  char err[400];
  if (ctx->op->check_io(node->layers, &x, &y, &batch, &ws, err, sizeof err) != TFS_OK) {
    set_error(ctx, "invalid run: %s", err);
    return kLiteRtStatusErrorInvalidArgument;
  }
  void* scratch = workspace(ctx, ws);
  if (ws && !scratch) {
    set_error(ctx, "%s", "out of memory for the int8 workspace");
    return kLiteRtStatusErrorRuntimeFailure;
  }
  if (ctx->op->compute(node->layers, xp, yp, batch, scratch, *ctx->op->impl) != TFS_OK) {
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
