/* Cortex-M4 benchmark firmware: for each LeNet-300-100 int8 layer (data in the generated
 * layers_data.h), run the dense CMSIS-NN-style baseline, our group-sparse kernel (TFS_IMPL_AUTO =
 * the DSP path on this core) and the portable C kernel, each between two tfs_mark() calls that the
 * counting plugin uses as segment boundaries, and check every output against the host's. */
#include <stdio.h>
#include <string.h>

#include "dense_baseline.h"
#include "layers_data.h"
#include "tfs_group_sparse_fc.h"

__attribute__((noinline)) void tfs_mark(void) { __asm__ volatile("" ::: "memory"); }

static int8_t g_y[BENCH_MAX_OUT];
static int16_t g_ws[BENCH_MAX_IN + 32] __attribute__((aligned(16)));

static int check(const char* what, int layer, const int8_t* want, int32_t n) {
  for (int32_t i = 0; i < n; ++i)
    if (g_y[i] != want[i]) {
      printf("MISMATCH %s layer %d at %ld: %d vs host %d\n", what, layer, (long)i, g_y[i], want[i]);
      return 1;
    }
  return 0;
}

int main(void) {
  int bad = 0;
  char err[128];
  for (int l = 0; l < BENCH_N_LAYERS; ++l) {
    const bench_layer* B = &kBenchLayers[l];
    tfs_gsfc_layer L;
    if (tfs_gsfc_validate_layer(B->tensors, TFS_GSFC_NUM_INPUTS_I8, &L, err, sizeof err) != TFS_OK) {
      printf("layer %d rejected: %s\n", l, err);
      return 2;
    }
    L.requant = TFS_REQUANT_FIXED_POINT; /* TFLite Micro's arithmetic */
    const tfs_tensor x = {B->x, (size_t)L.in, TFS_ELEM_INT8}, y = {g_y, (size_t)L.out, TFS_ELEM_INT8};
    int32_t batch = 0;
    if (tfs_gsfc_validate_io(&L, &x, &y, &batch, err, sizeof err) != TFS_OK ||
        tfs_gsfc_workspace_size(&L, batch) > sizeof g_ws) {
      printf("layer %d: bad io: %s\n", l, err);
      return 2;
    }
    memset(g_y, 0, sizeof g_y);
    tfs_mark();
    dense_fc_s8(&B->dense, B->x, g_y);
    tfs_mark();
    bad |= check("dense", l, B->y, L.out);
    memset(g_y, 0, sizeof g_y);
    tfs_mark();
    const int rc1 = tfs_gsfc_compute(&L, NULL, B->x, g_y, batch, g_ws, TFS_IMPL_AUTO);
    tfs_mark();
    bad |= rc1 != TFS_OK || check("sparse-dsp", l, B->y, L.out);
    memset(g_y, 0, sizeof g_y);
    tfs_mark();
    const int rc2 = tfs_gsfc_compute(&L, NULL, B->x, g_y, batch, g_ws, TFS_IMPL_PORTABLE);
    tfs_mark();
    bad |= rc2 != TFS_OK || check("sparse-portable", l, B->y, L.out);
  }
  printf(bad ? "FAILED: outputs differ from the host\n" : "OK: every output bit-exact with the host\n");
  return bad;
}
