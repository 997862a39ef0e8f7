/* Kernel core under AddressSanitizer + UndefinedBehaviorSanitizer: random valid layers of every
 * g / dtype / shape (ragged tails, empty rows, in < g), every available path vs the portable one,
 * and corrupt metadata that must be rejected. Built and run by tests/test_kernels_sanitizers.py. */
#include "gsfc_testgen.h"

static uint32_t rng_state = 12345u;
static uint32_t rnd(void) { return tfs_rnd(&rng_state); }

int main(void) {
  static const int32_t gs[5] = {1, 2, 4, 8, 16};
  static const int32_t shapes[][2] = {{64, 16}, {45, 19}, {7, 9}, {130, 33}, {1, 1}, {300, 100}};
  int cases = 0, rejected_count = 0;
  for (int dtype = 0; dtype < 2; ++dtype)
    for (int gi = 0; gi < 5; ++gi)
      for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; ++si) {
        const int32_t in = shapes[si][0], out = shapes[si][1], g = gs[gi];
        const int32_t per_row = (in + g - 1) / g;
        int32_t* row_ptr = (int32_t*)malloc(sizeof(int32_t) * (size_t)(out + 1));
        uint16_t* col = (uint16_t*)malloc(sizeof(uint16_t) * (size_t)(out * per_row) + 2);
        int32_t n = 0;
        row_ptr[0] = 0;
        for (int32_t r = 0; r < out; ++r) {
          for (int32_t c = 0; c < per_row; ++c)
            if (rnd() % 100 < 30) col[n++] = (uint16_t)(c * g);
          row_ptr[r + 1] = n;
        }
        const size_t esize = dtype ? 1 : 4;
        unsigned char* values = (unsigned char*)malloc((size_t)n * (size_t)g * esize + 1);
        for (size_t i = 0; i < (size_t)n * (size_t)g; ++i) {
          if (dtype) values[i] = (unsigned char)rnd();
          else { const float f = (float)((int32_t)(rnd() % 2001) - 1000) / 1000.0f; memcpy(values + 4 * i, &f, 4); }
        }
        int32_t meta[16] = {0};
        meta[0] = 1; meta[1] = in; meta[2] = out; meta[3] = g; meta[4] = n; meta[5] = dtype;
        unsigned char* bias = (unsigned char*)malloc((size_t)out * 4);
        int32_t* mult = (int32_t*)malloc((size_t)out * 4);
        int32_t* shift = (int32_t*)malloc((size_t)out * 4);
        float* scale = (float*)malloc((size_t)out * 4);
        tfs_fill_quant(dtype, out, meta, bias, mult, shift, scale, &rng_state);
        tfs_tensor t[9] = {
            {NULL, 0, 0},
            {values, (size_t)n * (size_t)g, dtype ? TFS_ELEM_INT8 : TFS_ELEM_FLOAT32},
            {col, (size_t)n, TFS_ELEM_UINT16},
            {row_ptr, (size_t)out + 1, TFS_ELEM_INT32},
            {meta, 16, TFS_ELEM_INT32},
            {bias, (size_t)out, dtype ? TFS_ELEM_INT32 : TFS_ELEM_FLOAT32},
            {mult, (size_t)out, TFS_ELEM_INT32},
            {shift, (size_t)out, TFS_ELEM_INT32},
            {scale, (size_t)out, TFS_ELEM_FLOAT32}};
        const size_t n_in = dtype ? 9 : 6;
        for (int32_t batch = 1; batch <= 3; batch += 2) {
          int rejected = 0;
          if (tfs_run_all_paths(t, n_in, batch, (uint32_t)(cases + 1), &rejected)) return 1;
          if (rejected) { fprintf(stderr, "valid layer rejected: in %d out %d g %d\n", in, out, g); return 1; }
          ++cases;
        }
        /* The same layer through a parameter blob, as models carry it. */
        if (tfs_blob_round_trip(t, n_in, tfs_gsfc_unpack_params, tfs_run_all_paths)) return 1;
        /* Corruptions: each must be rejected. */
        int32_t saved;
        int rejected = 0;
#define EXPECT_REJECT(stmt, undo)                                                   \
        stmt; tfs_run_all_paths(t, n_in, 1, 7u, &rejected); undo;                     \
        if (!rejected) { fprintf(stderr, "corruption accepted: %s\n", #stmt); return 1; } \
        ++rejected_count;
        EXPECT_REJECT(saved = meta[3]; meta[3] = 3, meta[3] = saved)
        EXPECT_REJECT(saved = meta[2]; meta[2] = out + 1, meta[2] = saved)
        EXPECT_REJECT(saved = row_ptr[out]; row_ptr[out] = n + 1, row_ptr[out] = saved)
        if (n > 0) {
          EXPECT_REJECT(saved = col[n - 1]; col[n - 1] = (uint16_t)(in + 1), col[n - 1] = (uint16_t)saved)
        }
        EXPECT_REJECT(t[2].count += 1, t[2].count -= 1)
        free(row_ptr); free(col); free(values); free(bias); free(mult); free(shift); free(scale);
      }
  printf("OK: %d layers on portable + arm_dsp (emulated)%s%s, %d corruptions rejected\n", cases,
         tfs_gsfc_impl_available(TFS_IMPL_AVX2) ? " + avx2" : "",
         tfs_gsfc_impl_available(TFS_IMPL_AVX512) ? " + avx512" : "", rejected_count);
  return 0;
}
