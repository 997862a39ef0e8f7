/* Test driver for the AArch64 NEON kernels of both custom ops (tfs_gsfc_neon.c, tfs_nm_neon.c),
 * run under qemu-aarch64 by tests/test_neon_qemu.py.
 *
 *   neon_driver CASES OUT [nm]
 *
 * CASES holds test cases back to back, each: int32 batch, int32 requant (TFS_REQUANT_*),
 * int32 blob bytes, int32 x bytes, the node's parameter blob (FORMAT.md), x. For each case the
 * driver unpacks and validates the layer and runs three kernels, each into an exactly sized heap
 * block:
 * - TFS_GROUP_SPARSE_FC (default): the portable kernel (tfs_gsfc_compute, TFS_IMPL_PORTABLE), the
 *   NEON kernel of the layer's dtype and g, and the SDOT kernel (int8, if the core has the
 *   dot-product extension), the NEON ones on the layer's packed copy (tfs_gsfc_pack, made as the
 *   runtime adapters make it when a node is prepared);
 * - TFS_NM_SPARSE_FC (`nm`): tfs_nmfc_compute with TFS_IMPL_PORTABLE, TFS_IMPL_NEON, and
 *   TFS_IMPL_NEON_DOT if the core has the dot product (the manifest lists no N:M kernel for it, so
 *   its parent's, NEON's, must run).
 * It appends the three outputs (y bytes each; the third zero-filled when not run) to OUT, prints
 * "dotprod=<0|1> cases=<n>" and exits 0, or prints what failed and exits 1. The test compares the
 * outputs with numpy's and with each other; benchmarks/cortex_a/bench_cortex_a.py runs the same
 * driver under the counting plugin.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../tflite_export/kernels/tfs_dispatch.h"
#include "../../tflite_export/kernels/tfs_group_sparse_fc.h"
#include "../../tflite_export/kernels/tfs_nm_sparse_fc.h"

/* The manifest's kernel signature (tfs_kernel_fn, tfs_dispatch.h). Index 0, 1, 2 = g 4, 8, 16. */
typedef void (*kernel_fn)(const void*, const void*, const void*, void*, int32_t, void*);
static const kernel_fn kF32[3] = {tfs_gsfc_neon_f32_g4, tfs_gsfc_neon_f32_g8, tfs_gsfc_neon_f32_g16};
static const kernel_fn kI8[3] = {tfs_gsfc_neon_i8_g4, tfs_gsfc_neon_i8_g8, tfs_gsfc_neon_i8_g16};
static const kernel_fn kDot[3] = {tfs_gsfc_neon_i8_dot_g4, tfs_gsfc_neon_i8_dot_g8,
                                  tfs_gsfc_neon_i8_dot_g16};

/* Segment boundary for benchmarks/cortex_a/tfs_a64_cycles_plugin.c (every execution of its first
 * instruction starts a new segment): per case, segment 4i + 1 is the portable kernel, 4i + 2 the
 * NEON kernel (FMLA / SMLAL), 4i + 3 the SDOT kernel (empty without the dot product). */
__attribute__((noinline)) void tfs_mark(void) { __asm__ volatile("" ::: "memory"); }

static int g_slot(int32_t g) { return g == 4 ? 0 : g == 8 ? 1 : g == 16 ? 2 : -1; }

static void* must_malloc(size_t n) {
  void* p = malloc(n ? n : 1);
  if (p == NULL) { fprintf(stderr, "out of memory\n"); exit(1); }
  return p;
}

static int read_exact(FILE* f, void* p, size_t n) { return fread(p, 1, n, f) == n; }

/* One case's input. */
typedef struct {
  int index;
  int32_t batch, requant;
  void* blob;
  size_t blob_bytes, x_bytes;
  unsigned char* x;
} case_in;

/* TFS_GROUP_SPARSE_FC: the three runs into y[0..2] (y_bytes each); 0 on success. */
static int run_gsfc(const case_in* c, unsigned char** y, size_t* y_bytes, int dot) {
  tfs_tensor t[TFS_GSFC_NUM_INPUTS_I8];
  size_t n_t = 0;
  char err[256] = "";
  tfs_gsfc_layer L;
  if (tfs_gsfc_unpack_params(c->blob, c->blob_bytes, t, &n_t, err, sizeof err) != TFS_OK ||
      tfs_gsfc_validate_layer(t, n_t, &L, err, sizeof err) != TFS_OK) {
    fprintf(stderr, "case %d: layer rejected: %s\n", c->index, err);
    return 1;
  }
  L.requant = c->requant;
  const int slot = g_slot(L.g);
  const size_t esize = L.dtype == TFS_DTYPE_I8 ? 1 : 4;
  if (slot < 0 || c->x_bytes != (size_t)c->batch * (size_t)L.in * esize) {
    fprintf(stderr, "case %d: g = %d or x size not supported\n", c->index, (int)L.g);
    return 1;
  }
  const size_t bound = tfs_gsfc_packed_bound(&L);
  void* mem = NULL;
  tfs_gsfc_packed P;
  if (posix_memalign(&mem, 64, bound ? bound : 64) != 0 ||
      tfs_gsfc_pack(&L, mem, bound, &P) != TFS_OK) {
    fprintf(stderr, "case %d: packing failed\n", c->index);
    return 1;
  }
  *y_bytes = (size_t)c->batch * (size_t)L.out * esize;
  for (int i = 0; i < 3; ++i) y[i] = (unsigned char*)memset(must_malloc(*y_bytes), 0, *y_bytes);
  const size_t ws_bytes = tfs_gsfc_workspace_size(&L, c->batch);
  void* ws = ws_bytes ? must_malloc(ws_bytes) : NULL;
  /* The three runs, each between two marks (segments 1, 2, 3 of the case; see tfs_mark). */
  int bad = 0;
  tfs_mark();
  bad |= tfs_gsfc_compute(&L, NULL, c->x, y[0], c->batch, ws, TFS_IMPL_PORTABLE) != TFS_OK;
  tfs_mark();
  (L.dtype == TFS_DTYPE_F32 ? kF32 : kI8)[slot](&L, &P, c->x, y[1], c->batch, ws);
  tfs_mark();
  /* The SDOT kernels do not use the workspace: NULL proves it. */
  if (L.dtype == TFS_DTYPE_I8 && dot) kDot[slot](&L, &P, c->x, y[2], c->batch, NULL);
  tfs_mark();
  if (bad) fprintf(stderr, "case %d: the portable kernel failed\n", c->index);
  free(ws);
  free(mem);
  return bad;
}

/* TFS_NM_SPARSE_FC: the three runs through the manifest's dispatch; 0 on success. */
static int run_nm(const case_in* c, unsigned char** y, size_t* y_bytes, int dot) {
  tfs_tensor t[TFS_NMFC_NUM_INPUTS_I8];
  size_t n_t = 0;
  char err[256] = "";
  tfs_nmfc_layer L;
  if (tfs_nmfc_unpack_params(c->blob, c->blob_bytes, t, &n_t, err, sizeof err) != TFS_OK ||
      tfs_nmfc_validate_layer(t, n_t, &L, err, sizeof err) != TFS_OK) {
    fprintf(stderr, "case %d: layer rejected: %s\n", c->index, err);
    return 1;
  }
  L.requant = c->requant;
  const size_t esize = L.dtype == TFS_DTYPE_I8 ? 1 : 4;
  if (c->x_bytes != (size_t)c->batch * (size_t)L.in * esize) {
    fprintf(stderr, "case %d: x size does not match the layer\n", c->index);
    return 1;
  }
  *y_bytes = (size_t)c->batch * (size_t)L.out * esize;
  for (int i = 0; i < 3; ++i) y[i] = (unsigned char*)memset(must_malloc(*y_bytes), 0, *y_bytes);
  const size_t ws_bytes = tfs_nmfc_workspace_size(&L, c->batch);
  void* ws = ws_bytes ? must_malloc(ws_bytes) : NULL;
  int bad = 0;
  tfs_mark();
  bad |= tfs_nmfc_compute(&L, c->x, y[0], c->batch, ws, TFS_IMPL_PORTABLE) != TFS_OK;
  tfs_mark();
  bad |= tfs_nmfc_compute(&L, c->x, y[1], c->batch, ws, TFS_IMPL_NEON) != TFS_OK;
  tfs_mark();
  if (dot) bad |= tfs_nmfc_compute(&L, c->x, y[2], c->batch, ws, TFS_IMPL_NEON_DOT) != TFS_OK;
  tfs_mark();
  if (bad) fprintf(stderr, "case %d: a kernel was refused\n", c->index);
  free(ws);
  return bad;
}

/* Runs one case; 0 on success, -1 at the end of the file. */
static int run_case(int index, FILE* in, FILE* out, int dot, int nm) {
  int32_t head[4];
  if (!read_exact(in, head, sizeof head)) return -1; /* end of file */
  case_in c = {index, head[0], head[1], NULL, (size_t)head[2], (size_t)head[3], NULL};
  if (posix_memalign(&c.blob, 64, c.blob_bytes ? c.blob_bytes : 64) != 0) return 1;
  c.x = (unsigned char*)must_malloc(c.x_bytes);
  if (!read_exact(in, c.blob, c.blob_bytes) || !read_exact(in, c.x, c.x_bytes)) {
    fprintf(stderr, "case %d: truncated case file\n", index);
    return 1;
  }
  unsigned char* y[3] = {NULL, NULL, NULL};
  size_t y_bytes = 0;
  int bad = (nm ? run_nm : run_gsfc)(&c, y, &y_bytes, dot);
  for (int i = 0; i < 3 && !bad; ++i)
    if (fwrite(y[i], 1, y_bytes, out) != y_bytes) bad = 1;
  for (int i = 0; i < 3; ++i) free(y[i]);
  free(c.x);
  free(c.blob);
  return bad;
}

int main(int argc, char** argv) {
  const int nm = argc == 4 && strcmp(argv[3], "nm") == 0;
  if (argc != 3 && !nm) {
    fprintf(stderr, "usage: %s CASES OUT [nm]\n", argv[0]);
    return 2;
  }
  FILE* in = fopen(argv[1], "rb");
  FILE* out = fopen(argv[2], "wb");
  if (in == NULL || out == NULL) {
    fprintf(stderr, "cannot open %s or %s\n", argv[1], argv[2]);
    return 2;
  }
  const int dot = tfs_impl_available(TFS_IMPL_NEON_DOT); /* the manifest's probe */
  int n = 0, rc;
  while ((rc = run_case(n, in, out, dot, nm)) == 0) ++n;
  fclose(in);
  if (fclose(out) != 0 || rc > 0) return 1;
  printf("dotprod=%d cases=%d\n", dot, n);
  return 0;
}
