/* TFS_GROUP_SPARSE_FC: the portable reference kernels (any C99 target; every other path is tested
 * bit-exact against these). They run on the model's group-CSR, row by row. */
#include "tfs_gsfc_internal.h"

void tfs_gsfc_portable_f32(const void* layer, const void* packed, const void* x_, void* y_,
                           int32_t batch, void* ws) {
  const tfs_gsfc_layer* L = (const tfs_gsfc_layer*)layer;
  const float* x = (const float*)x_;
  float* y = (float*)y_;
  const float* vals = (const float*)L->values;
  const float* bias = (const float*)L->bias;
  const int32_t g = L->g, in = L->in;
  (void)packed;
  (void)ws;
  for (int32_t b = 0; b < batch; ++b) {
    const float* xb = x + (size_t)b * in;
    for (int32_t r = 0; r < L->out; ++r) {
      float acc = 0.0f;
      for (int32_t k = L->row_ptr[r]; k < L->row_ptr[r + 1]; ++k) {
        const int32_t c = tfs_gsfc_col(L, k);
        const int32_t n = in - c < g ? in - c : g; /* ragged tail: never read past x[in-1] */
        const float* w = vals + (size_t)k * g;
        for (int32_t j = 0; j < n; ++j) acc += w[j] * xb[c + j];
      }
      y[(size_t)b * L->out + r] = tfs_act_f32(acc + bias[r], L->activation);
    }
  }
}

/* The workspace holds x - input_zp widened to int16. */
void tfs_gsfc_portable_i8(const void* layer, const void* packed, const void* x, void* y_,
                          int32_t batch, void* ws) {
  const tfs_gsfc_layer* L = (const tfs_gsfc_layer*)layer;
  int8_t* y = (int8_t*)y_;
  int16_t* xs = (int16_t*)ws;
  const int8_t* vals = (const int8_t*)L->values;
  const int32_t* bias = (const int32_t*)L->bias;
  const int32_t g = L->g, in = L->in;
  (void)packed;
  tfs_gsfc_widen(L, (const int8_t*)x, xs, (size_t)batch * (size_t)in);
  for (int32_t b = 0; b < batch; ++b) {
    const int16_t* xb = xs + (size_t)b * in;
    for (int32_t r = 0; r < L->out; ++r) {
      uint32_t acc = (uint32_t)bias[r]; /* modulo-2^32 sums (tfs_gsfc_internal.h) */
      for (int32_t k = L->row_ptr[r]; k < L->row_ptr[r + 1]; ++k) {
        const int32_t c = tfs_gsfc_col(L, k);
        const int32_t n = in - c < g ? in - c : g;
        const int8_t* w = vals + (size_t)k * g;
        for (int32_t j = 0; j < n; ++j) acc += (uint32_t)((int32_t)w[j] * xb[c + j]);
      }
      y[(size_t)b * L->out + r] = tfs_gsfc_requant(L, r, (int32_t)acc);
    }
  }
}
