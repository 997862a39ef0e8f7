/* Kernel core under AddressSanitizer + UndefinedBehaviorSanitizer: random valid layers of every
 * g / dtype / shape (ragged tails, empty rows, in < g) and both col_idx widths (uint8 where a row's
 * groups fit, uint16), every available path vs the portable one at batch 1, 3, 37 and 70 (the
 * last two through the SpMM kernels where the manifest lists one), and corrupt metadata that
 * must be rejected. Built and run by tests/test_kernels_sanitizers.py. */
#include "tfs_testgen.h"

static uint32_t rng_state = 12345u;
static uint32_t rnd(void) { return tfs_rnd(&rng_state); }

/* col_idx entries (group indices) of either width. */
static void set_col(unsigned char* col, int wide, int32_t k, uint32_t v) {
  if (wide) { const uint16_t u = (uint16_t)v; memcpy(col + 2 * (size_t)k, &u, 2); }
  else col[k] = (unsigned char)v;
}
static uint32_t get_col(const unsigned char* col, int wide, int32_t k) {
  if (!wide) return col[k];
  uint16_t u;
  memcpy(&u, col + 2 * (size_t)k, 2);
  return u;
}

int main(void) {
  static const int32_t gs[5] = {1, 2, 4, 8, 16};
  static const int32_t shapes[][2] = {{64, 16}, {45, 19}, {7, 9}, {130, 33}, {1, 1}, {300, 100}};
  int cases = 0, rejected_count = 0;
  for (int dtype = 0; dtype < 2; ++dtype)
    for (int gi = 0; gi < 5; ++gi)
      for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; ++si)
      for (int wide = 0; wide < 2; ++wide) {
        const int32_t in = shapes[si][0], out = shapes[si][1], g = gs[gi];
        const int32_t per_row = (in + g - 1) / g;
        if (!wide && per_row > 256) continue; /* uint8 group indices cannot address the row */
        const size_t cbytes = wide ? 2 : 1;
        int32_t* row_ptr = (int32_t*)malloc(sizeof(int32_t) * (size_t)(out + 1));
        unsigned char* col = (unsigned char*)malloc(cbytes * (size_t)(out * per_row) + 2);
        int32_t n = 0;
        row_ptr[0] = 0;
        for (int32_t r = 0; r < out; ++r) {
          for (int32_t c = 0; c < per_row; ++c)
            if (rnd() % 100 < 30) set_col(col, wide, n++, (uint32_t)c);
          row_ptr[r + 1] = n;
        }
        const size_t esize = dtype ? 1 : 4;
        unsigned char* values = (unsigned char*)malloc((size_t)n * (size_t)g * esize + 1);
        for (size_t i = 0; i < (size_t)n * (size_t)g; ++i) {
          if (dtype) values[i] = (unsigned char)rnd();
          else { const float f = (float)((int32_t)(rnd() % 2001) - 1000) / 1000.0f; memcpy(values + 4 * i, &f, 4); }
        }
        int32_t meta[16] = {0};
        meta[0] = TFS_GSFC_FORMAT_VERSION; meta[1] = in; meta[2] = out; meta[3] = g; meta[4] = n; meta[5] = dtype;
        tfs_tensor t[9] = {
            {NULL, 0, 0},
            {values, (size_t)n * (size_t)g, dtype ? TFS_ELEM_INT8 : TFS_ELEM_FLOAT32},
            {col, (size_t)n, wide ? TFS_ELEM_UINT16 : TFS_ELEM_UINT8},
            {row_ptr, (size_t)out + 1, TFS_ELEM_INT32},
            {meta, 16, TFS_ELEM_INT32}};
        tfs_make_quant(dtype, out, meta, t + 5, &rng_state);
        const size_t n_in = dtype ? 9 : 6;
        if (tfs_check_valid_layer(t, n_in, &cases)) return 1;
        /* Corruptions: each must be rejected. */
        int32_t saved;
        TFS_EXPECT_REJECT(saved = meta[3]; meta[3] = 3, meta[3] = saved);
        TFS_EXPECT_REJECT(saved = meta[2]; meta[2] = out + 1, meta[2] = saved);
        TFS_EXPECT_REJECT(saved = row_ptr[out]; row_ptr[out] = n + 1, row_ptr[out] = saved);
        if (n > 0) {
          /* one past the row's last group; a repeated index */
          TFS_EXPECT_REJECT(saved = (int32_t)get_col(col, wide, n - 1); set_col(col, wide, n - 1, (uint32_t)per_row),
                        set_col(col, wide, n - 1, (uint32_t)saved));
          int32_t r2 = 0; /* a row with two groups, if any */
          while (r2 < out && row_ptr[r2 + 1] - row_ptr[r2] < 2) ++r2;
          if (r2 < out) {
            const int32_t k = row_ptr[r2] + 1;
            TFS_EXPECT_REJECT(saved = (int32_t)get_col(col, wide, k); set_col(col, wide, k, get_col(col, wide, k - 1)),
                          set_col(col, wide, k, (uint32_t)saved));
          }
        }
        TFS_EXPECT_REJECT(saved = t[2].elem; t[2].elem = TFS_ELEM_INT8, t[2].elem = saved);
        TFS_EXPECT_REJECT(t[2].count += 1, t[2].count -= 1);
        tfs_free_data(t + 5, 4);
        free(row_ptr); free(col); free(values);
      }
  tfs_report(cases, rejected_count);
  return 0;
}
