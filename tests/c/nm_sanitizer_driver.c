/* TFS_NM_SPARSE_FC core under ASan + UBSan: random valid 2:4 layers of many shapes (odd window
 * counts, in < 16, steps with remainders), float32 and int8, every path vs portable, and each
 * corruption rule rejected. Built and run by tests/test_nm_sanitizers.py. */
#define TFS_TEST_OP_NM
#include "tfs_testgen.h"

static uint32_t rng_state = 777u;
static uint32_t rnd(void) { return tfs_rnd(&rng_state); }

int main(void) {
  static const int32_t shapes[][2] = {{4, 1}, {8, 3}, {20, 5}, {36, 7}, {64, 16}, {100, 10}, {784, 30}, {1028, 9}};
  int cases = 0, rejected_count = 0;
  for (int dtype = 0; dtype < 2; ++dtype)
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; ++si) {
      const int32_t in = shapes[si][0], out = shapes[si][1], windows = in / 4, stride = (windows + 1) / 2;
      const size_t esize = dtype ? 1 : 4, nv = (size_t)out * (size_t)(in / 2);
      unsigned char* values = (unsigned char*)malloc(nv * esize);
      uint8_t* idx = (uint8_t*)calloc((size_t)out * (size_t)stride, 1);
      static const uint8_t pairs[6] = {0x4, 0x8, 0xC, 0x9, 0xD, 0xE}; /* (p0, p1) with p0 < p1 */
      for (int32_t r = 0; r < out; ++r)
        for (int32_t w = 0; w < windows; ++w)
          idx[(size_t)r * stride + w / 2] |= (uint8_t)(pairs[rnd() % 6] << ((w & 1) * 4));
      for (size_t i = 0; i < nv; ++i) {
        if (dtype) values[i] = (unsigned char)rnd();
        else { const float f = (float)((int32_t)(rnd() % 2001) - 1000) / 1000.0f; memcpy(values + 4 * i, &f, 4); }
      }
      int32_t meta[16] = {0};
      meta[0] = TFS_NMFC_FORMAT_VERSION; meta[1] = in; meta[2] = out; meta[3] = 2; meta[4] = 4; meta[5] = dtype;
      tfs_tensor t[8] = {
          {NULL, 0, 0},
          {values, nv, dtype ? TFS_ELEM_INT8 : TFS_ELEM_FLOAT32},
          {idx, (size_t)out * (size_t)stride, TFS_ELEM_UINT8},
          {meta, 16, TFS_ELEM_INT32}};
      tfs_make_quant(dtype, out, meta, t + 4, &rng_state);
      const size_t n_in = dtype ? 8 : 5;
      if (tfs_check_valid_layer(t, n_in, &cases)) return 1;
      int32_t saved;
      uint8_t sb;
      TFS_EXPECT_REJECT(saved = meta[1]; meta[1] = in + 4, meta[1] = saved);
      TFS_EXPECT_REJECT(saved = meta[1]; meta[1] = in + 2, meta[1] = saved);
      TFS_EXPECT_REJECT(saved = meta[2]; meta[2] = out + 1, meta[2] = saved);
      TFS_EXPECT_REJECT(saved = meta[3]; meta[3] = 1, meta[3] = saved);
      TFS_EXPECT_REJECT(sb = idx[0]; idx[0] = (uint8_t)((sb & 0xF0) | 0x1), idx[0] = sb);
      TFS_EXPECT_REJECT(sb = idx[stride - 1]; idx[stride - 1] = (uint8_t)(windows & 1 ? (sb | 0x40) : ((sb & 0x0F) | 0x30)), idx[stride - 1] = sb);
      TFS_EXPECT_REJECT(t[2].count += 1, t[2].count -= 1);
      TFS_EXPECT_REJECT(t[1].count -= 1, t[1].count += 1);
      tfs_free_data(t + 4, 4);
      free(values); free(idx);
    }
  tfs_report(cases, rejected_count);
  return 0;
}
