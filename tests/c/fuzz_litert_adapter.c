/* libFuzzer target over the LiteRT adapter plumbing (tfs_litert_common.c) with each op's table
 * (TFS_GROUP_SPARSE_FC, TFS_NM_SPARSE_FC), driven the way LiteRT drives it: Init, then
 * GetOutputLayouts, then Run twice (the second run takes the node cache) on tensor buffers
 * served by fake LiteRt* accessors. The input is a parameter blob from a model plus a few bytes
 * of shapes and types, so whatever a corrupt .tflite can hand the adapter is exercised under
 * ASan + UBSan (clang -fsanitize=fuzzer,address,undefined). Input layout:
 *   byte 0: bit 0 op (0 group-sparse, 1 N:M), bit 1 int8 activations, bit 2 custom options,
 *           bit 3 blob tensor of the wrong type
 *   byte 1: batch; bytes 2-3: in (little-endian); byte 4: out; bytes 5-6: the blob's first dim
 *   bytes 7..: the parameter blob
 * tests/test_fuzz_validator.py seeds the corpus with valid blobs of both ops and runs it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../tflite_export/kernels/tfs_litert_common.h"

const tfs_litert_op* tfs_gsfc_litert_op(void);
const tfs_litert_op* tfs_nm_litert_op(void);

typedef struct {
  LiteRtRankedTensorType type;
  void* mem;
  size_t size;
} fake_buffer;

static LiteRtStatus get_type(LiteRtTensorBuffer b, LiteRtRankedTensorType* t) {
  *t = ((fake_buffer*)b)->type;
  return kLiteRtStatusOk;
}
static LiteRtStatus get_size(LiteRtTensorBuffer b, size_t* size) {
  *size = ((fake_buffer*)b)->size;
  return kLiteRtStatusOk;
}
static LiteRtStatus host_memory(LiteRtTensorBuffer b, void** mem) {
  *mem = ((fake_buffer*)b)->mem;
  return kLiteRtStatusOk;
}

/* A rank-2 buffer of d0 x d1 elements of elem_size bytes, 64-byte aligned as LiteRT's are. */
static fake_buffer make(int elem, size_t elem_size, int32_t d0, int32_t d1, const void* init,
                        size_t init_len) {
  fake_buffer b;
  memset(&b, 0, sizeof b);
  b.type.element_type = elem;
  b.type.layout.rank = 2;
  b.type.layout.dimensions[0] = d0;
  b.type.layout.dimensions[1] = d1;
  b.size = (size_t)d0 * (size_t)d1 * elem_size;
  const size_t alloc = (b.size + 63) / 64 * 64 + 64;
  b.mem = aligned_alloc(64, alloc);
  memset(b.mem, 0x11, alloc);
  if (init) memcpy(b.mem, init, init_len < b.size ? init_len : b.size);
  return b;
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 8) return 0;
  const uint8_t mode = data[0];
  const int32_t batch = 1 + data[1] % 4;
  const int32_t in = 1 + (int32_t)((data[2] | data[3] << 8) % 600);
  const int32_t out = 1 + data[4] % 64;
  const int32_t blob_d0 = 1 + (int32_t)((data[5] | data[6] << 8) % 256);
  const uint8_t* blob = data + 7;
  const size_t blob_len = size - 7;
  const int int8 = (mode & 2) != 0;
  const int elem = int8 ? TFS_ELEM_INT8 : TFS_ELEM_FLOAT32;
  const size_t esize = int8 ? 1 : 4;

  fake_buffer x = make(elem, esize, batch, in, NULL, 0);
  for (size_t i = 0; i < x.size; ++i) ((uint8_t*)x.mem)[i] = (uint8_t)(i * 37u + 5u);
  if (!int8)  /* finite floats: the kernels' arithmetic, not NaN payloads, is under test */
    for (int32_t i = 0; i < batch * in; ++i) ((float*)x.mem)[i] = (float)(i % 17) - 8.0f;
  /* The blob as a [d0, len / d0] uint8 tensor (LiteRT gives the whole buffer's bytes). */
  const int32_t d1 = (int32_t)(blob_len / (size_t)blob_d0);
  fake_buffer p = make((mode & 8) ? TFS_ELEM_INT8 : TFS_ELEM_UINT8, 1, blob_d0, d1 > 0 ? d1 : 1,
                       blob, blob_len);
  if (d1 <= 0) p.type.layout.dimensions[1] = 0;
  fake_buffer y = make(elem, esize, batch, out, NULL, 0);

  const tfs_litert_op* op = (mode & 1) ? tfs_nm_litert_op() : tfs_gsfc_litert_op();
  void* ctx = tfs_litert_ctx_create(op, (void*)get_type, (void*)get_size, (void*)host_memory);
  if (!ctx) abort();
  const LiteRtCustomOpKernel* k = tfs_litert_kernel();
  k->Init(ctx, (mode & 4) ? "x" : NULL, (mode & 4) ? 1 : 0);
  LiteRtLayout in_layouts[2] = {x.type.layout, p.type.layout}, out_layout;
  k->GetOutputLayouts(ctx, 2, in_layouts, 1, &out_layout);
  LiteRtTensorBuffer inputs[2] = {&x, &p}, outputs[1] = {&y};
  char msg[512];
  for (int run = 0; run < 2; ++run) {
    k->Run(ctx, 2, inputs, 1, outputs);
    tfs_litert_ctx_take_error(ctx, msg, sizeof msg);
  }
  if (tfs_litert_ctx_runs(ctx) != 2) abort();
  k->Destroy(ctx);
  tfs_litert_ctx_destroy(ctx);
  free(x.mem);
  free(p.mem);
  free(y.mem);
  return 0;
}
