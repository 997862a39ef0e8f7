/* libFuzzer target over the TFS_NM_SPARSE_FC validator (clang, -fsanitize=fuzzer,address,
 * undefined). The bytes become meta, tensor sizes, positions and values; whatever the validator
 * accepts runs on every path with exactly-sized buffers, so an accepted-but-unsafe layer crashes
 * under ASan/UBSan and a path disagreeing with the portable kernel aborts.
 * Run by tests/test_nm_sanitizers.py. */
#include "nm_testgen.h"


int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tfs_reader r = {data, size, 0};
  if (size < 8) return 0;
  int32_t meta[16] = {0};
  const uint32_t mode = tfs_rd(&r, 1);
  if (mode & 1) {
    for (int i = 0; i < 16; ++i) meta[i] = (int32_t)tfs_rd(&r, 4);
  } else {
    meta[0] = (mode & 0x80) ? (int32_t)tfs_rd(&r, 1) : 1;
    meta[1] = (int32_t)(tfs_rd(&r, 2) % 300) + ((mode & 0x20) ? 0 : 4 - (int32_t)(tfs_rd(&r, 2) % 300) % 4);
    meta[2] = 1 + (int32_t)(tfs_rd(&r, 1) % 40);
    meta[3] = (mode & 0x10) ? (int32_t)(tfs_rd(&r, 1) % 5) : 2;
    meta[4] = (mode & 0x08) ? (int32_t)(tfs_rd(&r, 1) % 9) : 4;
    meta[5] = (int32_t)(tfs_rd(&r, 1) % 3 == 0);
    meta[6] = (int32_t)(tfs_rd(&r, 1) % 5);
    if (meta[5]) {
      meta[7] = (int32_t)(int8_t)tfs_rd(&r, 1); meta[8] = (int32_t)(int8_t)tfs_rd(&r, 1);
      meta[9] = (int32_t)(int8_t)tfs_rd(&r, 1); meta[10] = 127;
    }
    if (mode & 0x40) meta[11 + tfs_rd(&r, 1) % 5] = (int32_t)tfs_rd(&r, 1);
  }
  const int dtype = meta[5] == 1;
  const int64_t in = meta[1] > 0 && meta[1] < 5000 ? meta[1] : 4;
  const int64_t out = meta[2] > 0 && meta[2] < 4000 ? meta[2] : 1;
  size_t cnt[8];
  const int64_t want[8] = {0, out * (in / 2), out * ((in / 4 + 1) / 2), 16, out, out, out, out};
  for (int i = 1; i < 8; ++i) {
    const uint32_t d = tfs_rd(&r, 1);
    const int64_t c = want[i] + ((d & 0xF0) == 0 ? (int64_t)(d & 3) - 1 : 0);
    cnt[i] = c < 0 ? 0 : (size_t)c;
  }
  int32_t* meta_buf = (int32_t*)malloc(cnt[3] * 4 + 4);
  for (size_t i = 0; i < cnt[3]; ++i) meta_buf[i] = i < 16 ? meta[i] : 0;
  unsigned char* values = (unsigned char*)malloc(cnt[1] * 4 + 1);
  for (size_t i = 0; i < cnt[1]; ++i) {
    const int8_t v = (int8_t)tfs_rd(&r, 1);
    if (dtype) values[i] = (unsigned char)v;
    else { const float f = (float)v / 16.0f; memcpy(values + 4 * i, &f, 4); }
  }
  uint8_t* idx = (uint8_t*)malloc(cnt[2] + 1);
  static const uint8_t pairs[6] = {0x4, 0x8, 0xC, 0x9, 0xD, 0xE};
  const int raw_idx = tfs_rd(&r, 1) & 1;
  for (size_t i = 0; i < cnt[2]; ++i)
    idx[i] = raw_idx ? (uint8_t)tfs_rd(&r, 1) : (uint8_t)(pairs[tfs_rd(&r, 1) % 6] | (pairs[tfs_rd(&r, 1) % 6] << 4));
  if (!raw_idx && ((in / 4) & 1)) { /* well-formed: clear each row's unused high nibble */
    const size_t stride = (size_t)((in / 4 + 1) / 2);
    for (size_t i = stride - 1; i < cnt[2]; i += stride) idx[i] &= 0x0F;
  }
  unsigned char* bias = (unsigned char*)malloc(cnt[4] * 4 + 1);
  for (size_t i = 0; i < cnt[4]; ++i) {
    if (dtype) { const int32_t b = (int32_t)tfs_rd(&r, 4); memcpy(bias + 4 * i, &b, 4); }
    else { const float b = (float)(int8_t)tfs_rd(&r, 1); memcpy(bias + 4 * i, &b, 4); }
  }
  int32_t* mult = (int32_t*)malloc(cnt[5] * 4 + 4);
  int32_t* shift = (int32_t*)malloc(cnt[6] * 4 + 4);
  float* scale = (float*)malloc(cnt[7] * 4 + 4);
  for (size_t i = 0; i < cnt[5]; ++i) mult[i] = (int32_t)tfs_rd(&r, 4);
  for (size_t i = 0; i < cnt[6]; ++i) shift[i] = (int32_t)(int8_t)tfs_rd(&r, 1);
  const int raw_scales = (tfs_rd(&r, 1) & 0x0F) == 0;
  for (size_t i = 0; i < cnt[7]; ++i) {
    if (raw_scales) { const uint32_t b = tfs_rd(&r, 4); memcpy(&scale[i], &b, 4); }
    else scale[i] = (float)tfs_rd(&r, 1) / 1000.0f;
  }
  const int bad_type = (tfs_rd(&r, 1) & 0x1F) == 0;
  tfs_tensor t[8] = {
      {NULL, 0, 0},
      {values, cnt[1], dtype ? TFS_ELEM_INT8 : TFS_ELEM_FLOAT32},
      {idx, cnt[2], bad_type ? TFS_ELEM_INT8 : TFS_ELEM_UINT8},
      {meta_buf, cnt[3], TFS_ELEM_INT32},
      {bias, cnt[4], dtype ? TFS_ELEM_INT32 : TFS_ELEM_FLOAT32},
      {mult, cnt[5], TFS_ELEM_INT32},
      {shift, cnt[6], TFS_ELEM_INT32},
      {scale, cnt[7], TFS_ELEM_FLOAT32}};
  const uint32_t pick = tfs_rd(&r, 1) & 0x3F;
  const size_t n_in = pick == 0 ? 6 : (dtype ? 8 : 5);
  int rejected = 0;
  const int32_t batch = 1 + (int32_t)(tfs_rd(&r, 1) % 3);
  if ((tfs_rd(&r, 1) & 1) && !bad_type) { /* blob mode, as the model carries the arrays */
    if (tfs_fuzz_blob(&r, t, n_in, batch, (uint32_t)size, tfs_nmfc_unpack_params, tfs_nm_run_all_paths))
      abort();
  } else if (tfs_nm_run_all_paths(t, n_in, batch, (uint32_t)size, &rejected)) {
    abort();
  }
  free(meta_buf); free(values); free(idx); free(bias); free(mult); free(shift); free(scale);
  return 0;
}
