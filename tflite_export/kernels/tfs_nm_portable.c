/* TFS_NM_SPARSE_FC: the portable reference kernels (every other path is tested bit-exact
 * against them). */
#include "tfs_nm_internal.h"

void tfs_nmfc_portable_f32(const void* layer, const void* packed, const void* x_, void* y_,
                           int32_t batch, void* ws) {
  TFS_NM_KERNEL_BEGIN(float, float, float);
  for (int32_t r = 0; r < L->out; ++r)
    for (int32_t b = 0; b < batch; ++b)
      y[(size_t)b * L->out + r] = tfs_act_f32(bias[r] + tfs_nm_row_f32(L, r, x + (size_t)b * L->in, 0, L->in / 4), L->activation);
}

/* The workspace holds x - input_zp as int32. */
void tfs_nmfc_portable_i8(const void* layer, const void* packed, const void* x_, void* y_,
                          int32_t batch, void* ws) {
  TFS_NM_KERNEL_BEGIN(int8_t, int8_t, int32_t);
  int32_t* xs = (int32_t*)ws;
  tfs_nm_widen(L, x, xs, (size_t)batch * (size_t)L->in);
  for (int32_t r = 0; r < L->out; ++r)
    for (int32_t b = 0; b < batch; ++b) {
      const uint32_t acc = (uint32_t)bias[r] + tfs_nm_row_i8(L, r, xs + (size_t)b * L->in, 0, L->in / 4);
      y[(size_t)b * L->out + r] = tfs_nm_requant(L, r, (int32_t)acc);
    }
}
