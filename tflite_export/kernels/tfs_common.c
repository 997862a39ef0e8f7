/* Shared pieces of the tfscalpel kernel cores; see tfs_common.h. */
#include "tfs_common.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int tfs_fail(char* err, size_t err_len, const char* fmt, ...) {
  if (err != NULL && err_len > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
  }
  return TFS_ERR_INVALID;
}

size_t tfs_elem_size(int elem) {
  switch (elem) {
    case TFS_ELEM_FLOAT32: case TFS_ELEM_INT32: return 4;
    case TFS_ELEM_UINT16: return 2;
    case TFS_ELEM_INT8: case TFS_ELEM_UINT8: return 1;
    default: return 0;
  }
}

int tfs_check_tensor(const tfs_tensor* t, int index, const char* name, int elem, int64_t count,
                     char* err, size_t err_len) {
  if (t->elem != elem)
    return tfs_fail(err, err_len, "input %d (%s): element type %d, expected %d", index, name,
                    t->elem, elem);
  if (count < 0 || (uint64_t)t->count != (uint64_t)count)
    return tfs_fail(err, err_len, "input %d (%s): %zu elements, expected %lld", index, name,
                    t->count, (long long)count);
  if (count > 0 && t->data == NULL)
    return tfs_fail(err, err_len, "input %d (%s): no data", index, name);
  const size_t esize = tfs_elem_size(elem);
  if (esize == 0 || ((uintptr_t)t->data) % esize != 0)
    return tfs_fail(err, err_len, "input %d (%s): data not aligned to its element size", index,
                    name);
  return TFS_OK;
}

int tfs_check_meta_head(const tfs_tensor* inputs, size_t n_inputs, size_t n_f32, size_t n_i8,
                        int meta_index, const char* meta_name, int32_t version,
                        const int32_t** meta, char* err, size_t err_len) {
  int rc;
  if (n_inputs != n_f32 && n_inputs != n_i8)
    return tfs_fail(err, err_len, "%zu inputs, expected %zu (float32) or %zu (int8)", n_inputs,
                    n_f32, n_i8);
  /* meta first: every other check depends on it. */
  if ((rc = tfs_check_tensor(&inputs[meta_index], meta_index, meta_name, TFS_ELEM_INT32,
                             TFS_META_LEN, err, err_len)) != TFS_OK)
    return rc;
  const int32_t* m = (const int32_t*)inputs[meta_index].data;
  if (m[TFS_META_VERSION] != version)
    return tfs_fail(err, err_len, "meta: format version %d, this kernel reads version %d",
                    (int)m[TFS_META_VERSION], (int)version);
  *meta = m;
  return TFS_OK;
}

int tfs_check_meta_common(const int32_t* meta, size_t n_inputs, size_t n_f32, size_t n_i8,
                          char* err, size_t err_len) {
  const int32_t dtype = meta[TFS_META_DTYPE], act = meta[TFS_META_ACTIVATION];
  if (dtype != TFS_DTYPE_F32 && dtype != TFS_DTYPE_I8)
    return tfs_fail(err, err_len, "meta: dtype = %d not 0 (float32) or 1 (int8)", (int)dtype);
  if (act != TFS_ACT_NONE && act != TFS_ACT_RELU && act != TFS_ACT_RELU6)
    return tfs_fail(err, err_len, "meta: fused activation %d not 0, 1 or 3", (int)act);
  const int32_t in_zp = meta[TFS_META_IN_ZP], out_zp = meta[TFS_META_OUT_ZP];
  const int32_t act_min = meta[TFS_META_ACT_MIN], act_max = meta[TFS_META_ACT_MAX];
  if (dtype == TFS_DTYPE_I8) {
    if (in_zp < -128 || in_zp > 127)
      return tfs_fail(err, err_len, "meta: input zero point %d not in [-128, 127]", (int)in_zp);
    if (out_zp < -128 || out_zp > 127)
      return tfs_fail(err, err_len, "meta: output zero point %d not in [-128, 127]", (int)out_zp);
    if (act_min < -128 || act_max > 127 || act_min > act_max)
      return tfs_fail(err, err_len, "meta: activation range [%d, %d] not within [-128, 127]",
                      (int)act_min, (int)act_max);
  } else if (in_zp != 0 || out_zp != 0 || act_min != 0 || act_max != 0) {
    return tfs_fail(err, err_len, "meta: zero points and activation range must be 0 for float32");
  }
  for (int i = TFS_META_RESERVED0; i < TFS_META_LEN; ++i)
    if (meta[i] != 0)
      return tfs_fail(err, err_len, "meta: reserved field %d is %d, not 0", i, (int)meta[i]);
  const size_t want = dtype == TFS_DTYPE_I8 ? n_i8 : n_f32;
  if (n_inputs != want)
    return tfs_fail(err, err_len, "%zu inputs, a %s node has %zu", n_inputs,
                    dtype == TFS_DTYPE_I8 ? "int8" : "float32", want);
  return TFS_OK;
}

int tfs_check_requant_inputs(const tfs_tensor* inputs, int first, const char* const* names,
                             int32_t out, const int32_t** mul_out, const int32_t** sh_out,
                             const float** sc_out, char* err, size_t err_len) {
  static const int kElems[3] = {TFS_ELEM_INT32, TFS_ELEM_INT32, TFS_ELEM_FLOAT32};
  for (int i = 0; i < 3; ++i) {
    const int rc = tfs_check_tensor(&inputs[first + i], first + i, names[first + i], kElems[i],
                                    out, err, err_len);
    if (rc != TFS_OK) return rc;
  }
  const int32_t* mul = (const int32_t*)inputs[first].data;
  const int32_t* sh = (const int32_t*)inputs[first + 1].data;
  const float* sc = (const float*)inputs[first + 2].data;
  for (int32_t r = 0; r < out; ++r) {
    if (mul[r] < 0) return tfs_fail(err, err_len, "out_multiplier[%d] = %d < 0", (int)r, (int)mul[r]);
    if (sh[r] < -31 || sh[r] > 30)
      return tfs_fail(err, err_len, "out_shift[%d] = %d not in [-31, 30]", (int)r, (int)sh[r]);
    /* XNNPACK refuses requantization scales >= 256; NaN fails the comparison too. */
    if (!(sc[r] > 0.0f && sc[r] < 256.0f))
      return tfs_fail(err, err_len, "out_scale[%d] = %g not in (0, 256)", (int)r, (double)sc[r]);
  }
  *mul_out = mul;
  *sh_out = sh;
  *sc_out = sc;
  return TFS_OK;
}

int tfs_check_io(int32_t in, int32_t out, int32_t dtype, const tfs_tensor* x, const tfs_tensor* y,
                 int32_t* batch, char* err, size_t err_len) {
  if (x == NULL || y == NULL || batch == NULL) return tfs_fail(err, err_len, "null argument");
  const int type = dtype == TFS_DTYPE_I8 ? TFS_ELEM_INT8 : TFS_ELEM_FLOAT32;
  if (x->elem != type)
    return tfs_fail(err, err_len, "activations: element type %d, expected %d", x->elem, type);
  if (y->elem != type)
    return tfs_fail(err, err_len, "output: element type %d, expected %d", y->elem, type);
  if (x->count % (size_t)in != 0)
    return tfs_fail(err, err_len, "activations: %zu elements, not a multiple of in = %d",
                    x->count, (int)in);
  const size_t b = x->count / (size_t)in;
  if (b > (size_t)INT32_MAX) return tfs_fail(err, err_len, "activations: batch too large");
  /* b * in * 4 (an int32 workspace) and b * out must fit a size_t. */
  if (b > SIZE_MAX / 4 / (size_t)in || b > SIZE_MAX / (size_t)out || y->count != b * (size_t)out)
    return tfs_fail(err, err_len, "output: %zu elements, expected batch %zu * out %d", y->count,
                    b, (int)out);
  if (b > 0 && (x->data == NULL || y->data == NULL)) return tfs_fail(err, err_len, "no data");
  if (((uintptr_t)x->data | (uintptr_t)y->data) % tfs_elem_size(type) != 0)
    return tfs_fail(err, err_len, "activations or output not aligned to the element size");
  *batch = (int32_t)b;
  return TFS_OK;
}

static int32_t read_i32(const unsigned char* p) {
  int32_t v;
  memcpy(&v, p, sizeof v); /* the format is little-endian, as every supported target is */
  return v;
}

int tfs_unpack_params(const void* blob, size_t bytes, size_t n_f32, size_t n_i8,
                      const char* const* names, tfs_tensor* tensors, size_t* n_tensors, char* err,
                      size_t err_len) {
  if (blob == NULL || tensors == NULL || n_tensors == NULL || names == NULL)
    return tfs_fail(err, err_len, "params blob: null argument");
  /* No alignment demand on the blob itself: runtimes align it differently (LiteRT 64 bytes, a
   * firmware C array 16), and the validators check each section's element alignment. */
  if (bytes < TFS_BLOB_HEADER_BYTES)
    return tfs_fail(err, err_len, "params blob: %zu bytes, shorter than its header", bytes);
  const unsigned char* b = (const unsigned char*)blob;
  if ((uint32_t)read_i32(b) != TFS_BLOB_MAGIC)
    return tfs_fail(err, err_len, "params blob: bad magic 0x%08x", (unsigned)read_i32(b));
  const int32_t n = read_i32(b + 4);
  if (n != (int32_t)n_f32 - 1 && n != (int32_t)n_i8 - 1)
    return tfs_fail(err, err_len, "params blob: %d sections, expected %d (float32) or %d (int8)",
                    (int)n, (int)n_f32 - 1, (int)n_i8 - 1);
  if (read_i32(b + 8) != 0 || read_i32(b + 12) != 0)
    return tfs_fail(err, err_len, "params blob: reserved header fields must be 0");
  const size_t dir_end = TFS_BLOB_HEADER_BYTES + (size_t)n * TFS_BLOB_ENTRY_BYTES;
  if (bytes < dir_end)
    return tfs_fail(err, err_len, "params blob: %zu bytes, shorter than its directory", bytes);
  memset(tensors, 0, n_i8 * sizeof *tensors);
  for (int32_t i = 0; i < n; ++i) {
    const unsigned char* e = b + TFS_BLOB_HEADER_BYTES + (size_t)i * TFS_BLOB_ENTRY_BYTES;
    const int32_t elem = read_i32(e), count = read_i32(e + 4), offset = read_i32(e + 8);
    const char* name = names[i + 1];
    const size_t esize = tfs_elem_size(elem);
    if (esize == 0)
      return tfs_fail(err, err_len, "params blob: section %s has element type %d", name, (int)elem);
    if (count < 0)
      return tfs_fail(err, err_len, "params blob: section %s has count %d", name, (int)count);
    if (read_i32(e + 12) != 0)
      return tfs_fail(err, err_len, "params blob: section %s: reserved field must be 0", name);
    if (offset < 0 || (size_t)offset < dir_end || offset % TFS_BLOB_ALIGN != 0)
      return tfs_fail(err, err_len, "params blob: section %s at offset %d: not a %d-byte aligned "
                      "offset past the directory", name, (int)offset, TFS_BLOB_ALIGN);
    /* count < 2^31 and esize <= 4, so the product fits a 64-bit size_t without overflow. */
    if ((size_t)offset > bytes || (size_t)count * esize > bytes - (size_t)offset)
      return tfs_fail(err, err_len, "params blob: section %s (%d elements at offset %d) runs "
                      "past the blob's %zu bytes", name, (int)count, (int)offset, bytes);
    tensors[i + 1].data = b + offset;
    tensors[i + 1].count = (size_t)count;
    tensors[i + 1].elem = elem;
  }
  *n_tensors = (size_t)n + 1;
  return TFS_OK;
}

int32_t tfs_multiply_by_quantized_multiplier(int32_t acc, int32_t multiplier, int32_t shift) {
  return tfs_mbqm(acc, multiplier, shift);
}
