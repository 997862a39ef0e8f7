/* Cortex-M4 benchmark firmware: for each int8 layer of a model (data in the generated
 * layers_data.h), run the dense CMSIS-NN-style baseline and our group-sparse kernel
 * (TFS_IMPL_AUTO = the DSP path on this core), each between two tfs_mark() calls that the
 * counting plugin uses as segment boundaries, and check every output against the host's.
 *
 * Three measured segments per layer:
 *   FC:   dense kernel | group-sparse DSP kernel | group-sparse portable C kernel
 *   conv: im2col + dense kernel | im2col + group-sparse DSP kernel | im2col alone
 * A conv layer runs as im2col + an FC kernel over its output positions, a tile of positions at a
 * time (the same im2col and FC core TFS_GROUP_SPARSE_CONV2D runs, tfs_gsconv_compute.c). */
#include <stdio.h>
#include <string.h>

#include "dense_baseline.h"
#include "tfs_im2col.h"
#include "layers_data.h"
#include "tfs_group_sparse_fc.h"

__attribute__((noinline)) void tfs_mark(void) { __asm__ volatile("" ::: "memory"); }

static int8_t g_y[BENCH_MAX_Y];
static int16_t g_ws[BENCH_WS_BYTES / 2] __attribute__((aligned(16)));
static int8_t g_patch[BENCH_PATCH_BYTES] __attribute__((aligned(16)));

static int check(const char* what, int layer, const int8_t* want, int32_t n) {
  for (int32_t i = 0; i < n; ++i)
    if (g_y[i] != want[i]) {
      printf("MISMATCH %s layer %d at %ld: %d vs host %d\n", what, layer, (long)i, g_y[i], want[i]);
      return 1;
    }
  return 0;
}

/* Conv = im2col of a tile of output positions + the dense kernel, one position at a time. */
static void conv_dense(const bench_layer* B, int8_t* y) {
  const int32_t K = B->dense.in, out = B->dense.out;
  for (int32_t p0 = 0; p0 < B->positions; p0 += B->tile) {
    const int32_t n = B->positions - p0 < B->tile ? B->positions - p0 : B->tile;
    tfs_im2col_s8(&B->geom, B->x, p0, n, g_patch);
    for (int32_t i = 0; i < n; ++i) dense_fc_s8(&B->dense, g_patch + (size_t)i * K, y + (size_t)(p0 + i) * out);
  }
}

/* Conv = im2col of a tile of output positions + the group-sparse kernel on the tile (batch n). */
static int conv_sparse(const bench_layer* B, const tfs_gsfc_layer* L, int8_t* y) {
  int rc = TFS_OK;
  for (int32_t p0 = 0; p0 < B->positions; p0 += B->tile) {
    const int32_t n = B->positions - p0 < B->tile ? B->positions - p0 : B->tile;
    tfs_im2col_s8(&B->geom, B->x, p0, n, g_patch);
    rc |= tfs_gsfc_compute(L, NULL, g_patch, y + (size_t)p0 * L->out, n, g_ws, TFS_IMPL_AUTO);
  }
  return rc;
}

/* The im2col share of both conv paths, measured alone. */
static void conv_im2col_only(const bench_layer* B) {
  for (int32_t p0 = 0; p0 < B->positions; p0 += B->tile) {
    const int32_t n = B->positions - p0 < B->tile ? B->positions - p0 : B->tile;
    tfs_im2col_s8(&B->geom, B->x, p0, n, g_patch);
  }
}

/* A conv layer's three segments (kept out of main so that the FC segments compile as before). */
__attribute__((noinline)) static int run_conv(const bench_layer* B, const tfs_gsfc_layer* L, int l,
                                              int32_t n_y) {
  int bad = 0;
  memset(g_y, 0, sizeof g_y);
  tfs_mark();
  conv_dense(B, g_y);
  tfs_mark();
  bad |= check("conv-dense", l, B->y, n_y);
  memset(g_y, 0, sizeof g_y);
  tfs_mark();
  const int rc = conv_sparse(B, L, g_y);
  tfs_mark();
  bad |= rc != TFS_OK || check("conv-sparse-dsp", l, B->y, n_y);
  tfs_mark();
  conv_im2col_only(B);
  tfs_mark();
  return bad;
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
    /* io checked for one kernel call: batch 1 (FC) or one tile of patches (conv) */
    const tfs_tensor x = {B->is_conv ? (const void*)g_patch : (const void*)B->x,
                          (size_t)B->tile * (size_t)L.in, TFS_ELEM_INT8};
    const tfs_tensor y = {g_y, (size_t)B->tile * (size_t)L.out, TFS_ELEM_INT8};
    const int32_t n_y = B->positions * L.out;
    int32_t batch = 0;
    if (tfs_gsfc_validate_io(&L, &x, &y, &batch, err, sizeof err) != TFS_OK ||
        tfs_gsfc_workspace_size(&L, batch) > sizeof g_ws || (size_t)n_y > sizeof g_y ||
        (B->is_conv && (size_t)B->tile * (size_t)L.in > sizeof g_patch)) {
      printf("layer %d: bad io: %s\n", l, err);
      return 2;
    }
    if (B->is_conv) {
      bad |= run_conv(B, &L, l, n_y);
      continue;
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
