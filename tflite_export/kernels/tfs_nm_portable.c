/* TFS_NM_SPARSE_FC: the portable reference kernels (every other path is tested bit-exact
 * against them). */
#include "tfs_nm_internal.h"

void tfs_nmfc_portable_f32(const void* layer, const void* packed, const void* x_, void* y_,
                           int32_t batch, void* ws) {
  const tfs_nmfc_layer* L = (const tfs_nmfc_layer*)layer;
  const float* x = (const float*)x_;
  float* y = (float*)y_;
  (void)packed;
  (void)ws;
  const float* bias = (const float*)L->bias;
  for (int32_t r = 0; r < L->out; ++r)
    for (int32_t b = 0; b < batch; ++b)
      y[(size_t)b * L->out + r] = tfs_act_f32(bias[r] + tfs_nm_row_f32(L, r, x + (size_t)b * L->in, 0, L->in / 4), L->activation);
}

/* The workspace holds x - input_zp as int32. */
void tfs_nmfc_portable_i8(const void* layer, const void* packed, const void* x, void* y_,
                          int32_t batch, void* ws) {
  const tfs_nmfc_layer* L = (const tfs_nmfc_layer*)layer;
  int8_t* y = (int8_t*)y_;
  int32_t* xs = (int32_t*)ws;
  (void)packed;
  tfs_nm_widen(L, (const int8_t*)x, xs, (size_t)batch * (size_t)L->in);
  const int32_t* bias = (const int32_t*)L->bias;
  for (int32_t r = 0; r < L->out; ++r)
    for (int32_t b = 0; b < batch; ++b) {
      const uint32_t acc = (uint32_t)bias[r] + tfs_nm_row_i8(L, r, xs + (size_t)b * L->in, 0, L->in / 4);
      y[(size_t)b * L->out + r] = tfs_nm_requant(L, r, (int32_t)acc);
    }
}
