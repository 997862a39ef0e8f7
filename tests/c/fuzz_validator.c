/* libFuzzer target over the TFS_GROUP_SPARSE_FC metadata and format validator (clang,
 * -fsanitize=fuzzer,address,undefined). The input bytes become meta, the tensor sizes and the
 * tensor contents; whatever the validator accepts is packed and run on every path with
 * exactly-sized buffers, so an accepted-but-unsafe layer shows up as an ASan/UBSan crash, and a
 * path disagreeing with the portable kernel aborts. Run by tests/test_fuzz_validator.py. */
#include "gsfc_testgen.h"

static void set_u16(unsigned char* p, size_t i, uint32_t v) {
  const uint16_t u = (uint16_t)v;
  memcpy(p + 2 * i, &u, 2);
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tfs_reader r = {data, size, 0};
  if (size < 8) return 0;
  static const int32_t gs[6] = {1, 2, 4, 8, 16, 3};
  int32_t meta[16] = {0};
  const uint32_t mode = tfs_rd(&r, 1);
  if (mode & 1) { /* fully raw meta: exercises every range check */
    for (int i = 0; i < 16; ++i) meta[i] = (int32_t)tfs_rd(&r, 4);
  } else {        /* plausible meta with small perturbations: reaches the deep checks */
    meta[0] = (mode & 0x80) ? (int32_t)tfs_rd(&r, 1) : TFS_GSFC_FORMAT_VERSION;
    meta[1] = 1 + (int32_t)(tfs_rd(&r, 2) % 200);
    meta[2] = 1 + (int32_t)(tfs_rd(&r, 1) % 40);
    meta[3] = gs[tfs_rd(&r, 1) % 6];
    meta[4] = (int32_t)(tfs_rd(&r, 2) % 400);
    meta[5] = (int32_t)(tfs_rd(&r, 1) % 3 == 0);
    meta[6] = (int32_t)(tfs_rd(&r, 1) % 5);
    if (meta[5]) {
      meta[7] = (int32_t)(int8_t)tfs_rd(&r, 1); meta[8] = (int32_t)(int8_t)tfs_rd(&r, 1);
      meta[9] = (int32_t)(int8_t)tfs_rd(&r, 1); meta[10] = 127;
    }
    if (mode & 0x40) meta[11 + tfs_rd(&r, 1) % 5] = (int32_t)tfs_rd(&r, 1);
  }
  const int dtype = meta[5] == 1;
  const int64_t g = meta[3] > 0 && meta[3] <= 16 ? meta[3] : 1;
  const int64_t ng = meta[4] >= 0 && meta[4] < 4000 ? meta[4] : 0;
  const int64_t out = meta[2] > 0 && meta[2] < 4000 ? meta[2] : 1;
  /* Tensor sizes: usually what meta implies, sometimes off by a little. */
  size_t cnt[9];
  const int64_t want[9] = {0, ng * g, ng, out + 1, 16, out, out, out, out};
  for (int i = 1; i < 9; ++i) {
    const uint32_t d = tfs_rd(&r, 1);
    int64_t c = want[i] + ((d & 0xF0) == 0 ? (int64_t)(d & 3) - 1 : 0);
    cnt[i] = c < 0 ? 0 : (size_t)c;
  }
  cnt[4] = (tfs_rd(&r, 1) & 0xF0) == 0 ? 15 : 16;
  int32_t* meta_buf = (int32_t*)malloc(cnt[4] * 4 + 4);
  memcpy(meta_buf, meta, cnt[4] * 4);
  unsigned char* values = (unsigned char*)malloc(cnt[1] * 4 + 1);
  for (size_t i = 0; i < cnt[1] * (dtype ? 1 : 4); ++i) values[i] = (unsigned char)tfs_rd(&r, 1);
  if (!dtype) for (size_t i = 0; i < cnt[1]; ++i) { const float f = (float)(int8_t)values[i] / 16.0f; memcpy(values + 4 * i, &f, 4); }
  /* col_idx: group indices, uint8 or uint16 (format version 2). */
  const int narrow = (int)(tfs_rd(&r, 1) & 1);
  unsigned char* col = (unsigned char*)malloc(cnt[2] * 2 + 2);
#define SET_COL(i, v) (narrow ? (void)(col[i] = (unsigned char)(v)) : set_u16(col, (i), (uint32_t)(v)))
  int32_t* row_ptr = (int32_t*)malloc(cnt[3] * 4 + 4);
  if (tfs_rd(&r, 1) & 1) { /* raw indices */
    for (size_t i = 0; i < cnt[2]; ++i) SET_COL(i, tfs_rd(&r, narrow ? 1 : 2));
    for (size_t i = 0; i < cnt[3]; ++i) row_ptr[i] = (int32_t)(tfs_rd(&r, 2) % (uint32_t)(ng + 2));
  } else {             /* well-formed structure with an occasional flipped entry */
    const int64_t in = meta[1] > 0 ? meta[1] : 1, per_row = (in + g - 1) / g;
    size_t k = 0;
    for (size_t rr = 0; rr < cnt[3]; ++rr) {
      row_ptr[rr] = (int32_t)k;
      if (rr + 1 == cnt[3]) break;
      for (int64_t c = 0; c < per_row && k < cnt[2]; ++c)
        if (tfs_rd(&r, 1) & 1) { SET_COL(k, c); ++k; }
    }
    for (; k < cnt[2]; ++k) SET_COL(k, 0);
    if (tfs_rd(&r, 1) == 0 && cnt[2]) SET_COL(tfs_rd(&r, 2) % cnt[2], tfs_rd(&r, 2));
  }
  unsigned char* bias = (unsigned char*)malloc(cnt[5] * 4 + 1);
  for (size_t i = 0; i < cnt[5]; ++i) {
    if (dtype) { const int32_t b = (int32_t)tfs_rd(&r, 4); memcpy(bias + 4 * i, &b, 4); }
    else { const float b = (float)(int8_t)tfs_rd(&r, 1); memcpy(bias + 4 * i, &b, 4); }
  }
  int32_t* mult = (int32_t*)malloc(cnt[6] * 4 + 4);
  int32_t* shift = (int32_t*)malloc(cnt[7] * 4 + 4);
  float* scale = (float*)malloc(cnt[8] * 4 + 4);
  for (size_t i = 0; i < cnt[6]; ++i) mult[i] = (int32_t)(tfs_rd(&r, 4) & 0x7FFFFFFF);
  for (size_t i = 0; i < cnt[7]; ++i) shift[i] = (int32_t)(int8_t)tfs_rd(&r, 1);
  const int raw_scales = (tfs_rd(&r, 1) & 0x0F) == 0; /* mostly plausible scales, sometimes raw bits */
  for (size_t i = 0; i < cnt[8]; ++i) {
    if (raw_scales) { const uint32_t b = tfs_rd(&r, 4); memcpy(&scale[i], &b, 4); }
    else scale[i] = (float)tfs_rd(&r, 1) / 1000.0f;
  }
  const int e_types = (int)(tfs_rd(&r, 1) & 0x1F) == 0;
  tfs_tensor t[9] = {
      {NULL, 0, 0},
      {values, cnt[1], dtype ? TFS_ELEM_INT8 : TFS_ELEM_FLOAT32},
      {col, cnt[2], e_types ? TFS_ELEM_INT32 : narrow ? TFS_ELEM_UINT8 : TFS_ELEM_UINT16},
      {row_ptr, cnt[3], TFS_ELEM_INT32},
      {meta_buf, cnt[4], TFS_ELEM_INT32},
      {bias, cnt[5], dtype ? TFS_ELEM_INT32 : TFS_ELEM_FLOAT32},
      {mult, cnt[6], TFS_ELEM_INT32},
      {shift, cnt[7], TFS_ELEM_INT32},
      {scale, cnt[8], TFS_ELEM_FLOAT32}};
  const size_t n_in = (tfs_rd(&r, 1) & 0x3F) == 0 ? 7 : (dtype ? 9 : 6);
  int rejected = 0;
  const int32_t batch = 1 + (int32_t)(tfs_rd(&r, 1) % 3);
  /* Blob mode (not with e_types: the builder copies count * element size bytes, which a
   * retyped buffer does not hold). */
  if ((tfs_rd(&r, 1) & 1) && !e_types) {
    if (tfs_fuzz_blob(&r, t, n_in, batch, (uint32_t)size, tfs_gsfc_unpack_params, tfs_run_all_paths))
      abort();
  } else if (tfs_run_all_paths(t, n_in, batch, (uint32_t)size, &rejected)) {
    abort();
  }
  free(meta_buf); free(values); free(col); free(row_ptr); free(bias); free(mult); free(shift); free(scale);
  return 0;
}
