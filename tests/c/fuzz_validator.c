/* libFuzzer target over a custom op's metadata and format validator (clang,
 * -fsanitize=fuzzer,address,undefined): TFS_GROUP_SPARSE_FC, or TFS_NM_SPARSE_FC when built with
 * -DTFS_TEST_OP_NM (tfs_testgen.h). The input bytes become meta, the tensor sizes and the tensor
 * contents; whatever the validator accepts is run on every path with exactly-sized buffers, so an
 * accepted-but-unsafe layer shows up as an ASan/UBSan crash, and a path disagreeing with the
 * portable kernel aborts. Run by tests/test_fuzz_validator.py and tests/test_nm_sanitizers.py.
 *
 * Arrays (tfs_tensor t[]): 1 values, 2 .. TFS_FUZZ_META - 1 the op's structure arrays, then meta,
 * bias, multiplier, shift, scale. Each op below supplies its meta fields 0, 1, 3 and 4, the array
 * sizes its meta implies, and its structure arrays. */
#include "tfs_testgen.h"

#ifdef TFS_TEST_OP_NM
/* TFS_NM_SPARSE_FC: [indices] (2-bit positions, 4 bits per window). */
#define TFS_FUZZ_META 3

static void op_meta(tfs_reader* r, uint32_t mode, int32_t* meta) {
  meta[0] = (mode & 0x80) ? (int32_t)tfs_rd(r, 1) : TFS_NMFC_FORMAT_VERSION;
  meta[1] = (int32_t)(tfs_rd(r, 2) % 300) + ((mode & 0x20) ? 0 : 4 - (int32_t)(tfs_rd(r, 2) % 300) % 4);
  meta[3] = (mode & 0x10) ? (int32_t)(tfs_rd(r, 1) % 5) : 2;
  meta[4] = (mode & 0x08) ? (int32_t)(tfs_rd(r, 1) % 9) : 4;
}

/* Element counts of values and indices that meta implies. */
static void op_want(const int32_t* meta, int64_t out, int64_t* want) {
  const int64_t in = meta[1] > 0 && meta[1] < 5000 ? meta[1] : 4;
  want[1] = out * (in / 2);
  want[2] = out * ((in / 4 + 1) / 2);
}

/* Position bytes: raw, or well-formed pairs; *bad_type: sometimes a wrong element type. */
static void op_structure(tfs_reader* r, const int32_t* meta, const size_t* cnt, tfs_tensor* t,
                         int* bad_type) {
  const int64_t in = meta[1] > 0 && meta[1] < 5000 ? meta[1] : 4;
  uint8_t* idx = (uint8_t*)malloc(cnt[2] + 1);
  static const uint8_t pairs[6] = {0x4, 0x8, 0xC, 0x9, 0xD, 0xE};
  const int raw_idx = tfs_rd(r, 1) & 1;
  for (size_t i = 0; i < cnt[2]; ++i)
    idx[i] = raw_idx ? (uint8_t)tfs_rd(r, 1) : (uint8_t)(pairs[tfs_rd(r, 1) % 6] | (pairs[tfs_rd(r, 1) % 6] << 4));
  if (!raw_idx && ((in / 4) & 1)) { /* well-formed: clear each row's unused high nibble */
    const size_t stride = (size_t)((in / 4 + 1) / 2);
    for (size_t i = stride - 1; i < cnt[2]; i += stride) idx[i] &= 0x0F;
  }
  *bad_type = (tfs_rd(r, 1) & 0x1F) == 0;
  const tfs_tensor ti = {idx, cnt[2], *bad_type ? TFS_ELEM_INT8 : TFS_ELEM_UINT8};
  t[2] = ti;
}

#else
/* TFS_GROUP_SPARSE_FC: [col_idx, row_ptr] (CSR over groups of g inputs). */
#define TFS_FUZZ_META 4

static void op_meta(tfs_reader* r, uint32_t mode, int32_t* meta) {
  static const int32_t gs[6] = {1, 2, 4, 8, 16, 3};
  meta[0] = (mode & 0x80) ? (int32_t)tfs_rd(r, 1) : TFS_GSFC_FORMAT_VERSION;
  meta[1] = 1 + (int32_t)(tfs_rd(r, 2) % 200);
  meta[3] = gs[tfs_rd(r, 1) % 6];
  meta[4] = (int32_t)(tfs_rd(r, 2) % 400);
}

static int64_t op_g(const int32_t* meta) { return meta[3] > 0 && meta[3] <= 16 ? meta[3] : 1; }
static int64_t op_groups(const int32_t* meta) { return meta[4] >= 0 && meta[4] < 4000 ? meta[4] : 0; }

/* Element counts of values, col_idx and row_ptr that meta implies. */
static void op_want(const int32_t* meta, int64_t out, int64_t* want) {
  want[1] = op_groups(meta) * op_g(meta);
  want[2] = op_groups(meta);
  want[3] = out + 1;
}

static void set_u16(unsigned char* p, size_t i, uint32_t v) {
  const uint16_t u = (uint16_t)v;
  memcpy(p + 2 * i, &u, 2);
}

/* col_idx (group indices, uint8 or uint16) and row_ptr: raw, or a well-formed structure with an
 * occasional flipped entry; *bad_type: sometimes col_idx typed int32. */
static void op_structure(tfs_reader* r, const int32_t* meta, const size_t* cnt, tfs_tensor* t,
                         int* bad_type) {
  const int64_t g = op_g(meta), ng = op_groups(meta);
  const int narrow = (int)(tfs_rd(r, 1) & 1);
  unsigned char* col = (unsigned char*)malloc(cnt[2] * 2 + 2);
#define SET_COL(i, v) (narrow ? (void)(col[i] = (unsigned char)(v)) : set_u16(col, (i), (uint32_t)(v)))
  int32_t* row_ptr = (int32_t*)malloc(cnt[3] * 4 + 4);
  if (tfs_rd(r, 1) & 1) { /* raw indices */
    for (size_t i = 0; i < cnt[2]; ++i) SET_COL(i, tfs_rd(r, narrow ? 1 : 2));
    for (size_t i = 0; i < cnt[3]; ++i) row_ptr[i] = (int32_t)(tfs_rd(r, 2) % (uint32_t)(ng + 2));
  } else {             /* well-formed structure with an occasional flipped entry */
    const int64_t in = meta[1] > 0 ? meta[1] : 1, per_row = (in + g - 1) / g;
    size_t k = 0;
    for (size_t rr = 0; rr < cnt[3]; ++rr) {
      row_ptr[rr] = (int32_t)k;
      if (rr + 1 == cnt[3]) break;
      for (int64_t c = 0; c < per_row && k < cnt[2]; ++c)
        if (tfs_rd(r, 1) & 1) { SET_COL(k, c); ++k; }
    }
    for (; k < cnt[2]; ++k) SET_COL(k, 0);
    if (tfs_rd(r, 1) == 0 && cnt[2]) SET_COL(tfs_rd(r, 2) % cnt[2], tfs_rd(r, 2));
  }
#undef SET_COL
  *bad_type = (tfs_rd(r, 1) & 0x1F) == 0;
  const tfs_tensor tc[2] = {
      {col, cnt[2], *bad_type ? TFS_ELEM_INT32 : narrow ? TFS_ELEM_UINT8 : TFS_ELEM_UINT16},
      {row_ptr, cnt[3], TFS_ELEM_INT32}};
  memcpy(t + 2, tc, sizeof tc);
}
#endif

#define TFS_FUZZ_ARRAYS (TFS_FUZZ_META + 5) /* with the activations' slot 0 */

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tfs_reader r = {data, size, 0};
  if (size < 8) return 0;
  int32_t meta[16] = {0};
  const uint32_t mode = tfs_rd(&r, 1);
  if (mode & 1) { /* fully raw meta: exercises every range check */
    for (int i = 0; i < 16; ++i) meta[i] = (int32_t)tfs_rd(&r, 4);
  } else {        /* plausible meta with small perturbations: reaches the deep checks */
    op_meta(&r, mode, meta);
    meta[2] = 1 + (int32_t)(tfs_rd(&r, 1) % 40);
    meta[5] = (int32_t)(tfs_rd(&r, 1) % 3 == 0);
    meta[6] = (int32_t)(tfs_rd(&r, 1) % 5);
    if (meta[5]) {
      meta[7] = (int32_t)(int8_t)tfs_rd(&r, 1); meta[8] = (int32_t)(int8_t)tfs_rd(&r, 1);
      meta[9] = (int32_t)(int8_t)tfs_rd(&r, 1); meta[10] = 127;
    }
    if (mode & 0x40) meta[11 + tfs_rd(&r, 1) % 5] = (int32_t)tfs_rd(&r, 1);
  }
  const int dtype = meta[5] == 1;
  const int64_t out = meta[2] > 0 && meta[2] < 4000 ? meta[2] : 1;
  /* Array sizes: usually what meta implies, sometimes off by a little. */
  size_t cnt[TFS_FUZZ_ARRAYS];
  int64_t want[TFS_FUZZ_ARRAYS] = {0};
  op_want(meta, out, want);
  want[TFS_FUZZ_META] = 16;
  for (int i = TFS_FUZZ_META + 1; i < TFS_FUZZ_ARRAYS; ++i) want[i] = out;
  for (int i = 1; i < TFS_FUZZ_ARRAYS; ++i) {
    const uint32_t d = tfs_rd(&r, 1);
    const int64_t c = want[i] + ((d & 0xF0) == 0 ? (int64_t)(d & 3) - 1 : 0);
    cnt[i] = c < 0 ? 0 : (size_t)c;
  }
  const size_t* q = cnt + TFS_FUZZ_META; /* meta, bias, multiplier, shift, scale */
  int32_t* meta_buf = (int32_t*)malloc(q[0] * 4 + 4);
  for (size_t i = 0; i < q[0]; ++i) meta_buf[i] = i < 16 ? meta[i] : 0;
  unsigned char* values = (unsigned char*)malloc(cnt[1] * 4 + 1);
  for (size_t i = 0; i < cnt[1]; ++i) {
    const int8_t v = (int8_t)tfs_rd(&r, 1);
    if (dtype) values[i] = (unsigned char)v;
    else { const float f = (float)v / 16.0f; memcpy(values + 4 * i, &f, 4); }
  }
  tfs_tensor t[TFS_FUZZ_ARRAYS];
  int bad_type = 0;
  op_structure(&r, meta, cnt, t, &bad_type);
  unsigned char* bias = (unsigned char*)malloc(q[1] * 4 + 1);
  for (size_t i = 0; i < q[1]; ++i) {
    if (dtype) { const int32_t b = (int32_t)tfs_rd(&r, 4); memcpy(bias + 4 * i, &b, 4); }
    else { const float b = (float)(int8_t)tfs_rd(&r, 1); memcpy(bias + 4 * i, &b, 4); }
  }
  int32_t* mult = (int32_t*)malloc(q[2] * 4 + 4);
  int32_t* shift = (int32_t*)malloc(q[3] * 4 + 4);
  float* scale = (float*)malloc(q[4] * 4 + 4);
  /* multipliers: mostly non-negative (reaches the kernels), sometimes any int32 */
  const uint32_t mult_mask = (tfs_rd(&r, 1) & 0x0F) == 0 ? 0xFFFFFFFFu : 0x7FFFFFFFu;
  for (size_t i = 0; i < q[2]; ++i) mult[i] = (int32_t)(tfs_rd(&r, 4) & mult_mask);
  for (size_t i = 0; i < q[3]; ++i) shift[i] = (int32_t)(int8_t)tfs_rd(&r, 1);
  const int raw_scales = (tfs_rd(&r, 1) & 0x0F) == 0; /* mostly plausible scales, sometimes raw bits */
  for (size_t i = 0; i < q[4]; ++i) {
    if (raw_scales) { const uint32_t b = tfs_rd(&r, 4); memcpy(&scale[i], &b, 4); }
    else scale[i] = (float)tfs_rd(&r, 1) / 1000.0f;
  }
  const tfs_tensor head[2] = {{NULL, 0, 0}, {values, cnt[1], dtype ? TFS_ELEM_INT8 : TFS_ELEM_FLOAT32}};
  const tfs_tensor tail[5] = {
      {meta_buf, q[0], TFS_ELEM_INT32},
      {bias, q[1], dtype ? TFS_ELEM_INT32 : TFS_ELEM_FLOAT32},
      {mult, q[2], TFS_ELEM_INT32},
      {shift, q[3], TFS_ELEM_INT32},
      {scale, q[4], TFS_ELEM_FLOAT32}};
  memcpy(t, head, sizeof head);
  memcpy(t + TFS_FUZZ_META, tail, sizeof tail);
  /* How many arrays the node passes: float32 ends after bias, int8 after scale; sometimes one
   * more than float32 (a count neither dtype accepts). */
  const size_t n_f32 = TFS_FUZZ_META + 2;
  const size_t n_in = (tfs_rd(&r, 1) & 0x3F) == 0 ? n_f32 + 1 : (dtype ? (size_t)TFS_FUZZ_ARRAYS : n_f32);
  int rejected = 0;
  const int32_t batch = 1 + (int32_t)(tfs_rd(&r, 1) % 3);
  /* Blob mode, as the model carries the arrays (not with bad_type: the builder copies count *
   * element size bytes, which a retyped buffer does not hold). */
  if ((tfs_rd(&r, 1) & 1) && !bad_type) {
    if (tfs_fuzz_blob(&r, t, n_in, batch, (uint32_t)size)) abort();
  } else if (tfs_run_all_paths(t, n_in, batch, (uint32_t)size, &rejected)) {
    abort();
  }
  tfs_free_data(t + 1, TFS_FUZZ_ARRAYS - 1);
  return 0;
}
