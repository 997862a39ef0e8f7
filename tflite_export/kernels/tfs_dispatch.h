/* Kernel dispatch: the instruction sets and kernels of the manifest (tfs_kernels.inc), the CPU
 * feature probes, a mask that switches instruction sets off (tests), and the choice of kernel
 * for a layer. Implemented in tfs_dispatch.c; the ops' compute entry points
 * (tfs_gsfc_compute, tfs_nmfc_compute) are thin wrappers over tfs_select_kernel.
 */
#ifndef TFS_DISPATCH_H_
#define TFS_DISPATCH_H_

#include <stddef.h>
#include <stdint.h>

#include "tfs_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* TFS_OP_GSMM: TFS_GROUP_SPARSE_FC's kernels for many rows at once (SpMM), which
 * tfs_gsfc_compute prefers from TFS_GSMM_MIN_BATCH rows where the manifest lists one. */
/* TFS_OP_GSCD: TFS_GROUP_SPARSE_CONV2D's float32 direct path (tfs_gsconv_set_direct). */
enum { TFS_OP_GSFC = 0, TFS_OP_NMFC = 1, TFS_OP_GSMM = 2, TFS_OP_GSCD = 3, TFS_N_OPS = 4 };
enum { TFS_LAYOUT_MODEL = 0, TFS_LAYOUT_PACKED = 1 };

/* Every kernel: y[batch, out] = act(x * W^T + bias) for a validated layer (tfs_gsfc_layer or
 * tfs_nmfc_layer), its packed copy (NULL for MODEL-layout kernels), and the op's workspace;
 * GSCD: y = act(conv(x)) for a tfs_gsconv_layer, batch images. */
typedef void (*tfs_kernel_fn)(const void* layer, const void* packed, const void* x, void* y,
                              int32_t batch, void* workspace);

/* One manifest line. */
typedef struct {
  int op, dtype, g, impl, layout; /* TFS_OP_*, TFS_DTYPE_*, 0 = any g, TFS_IMPL_*, TFS_LAYOUT_* */
  tfs_kernel_fn fn;
  const char* name;
} tfs_kernel_entry;

/* The kernel the op would run for a layer of (dtype, g) with `impl` (TFS_IMPL_AUTO: the best
 * available instruction set that allows auto-selection). have_packed: whether the caller has a
 * packed copy (AUTO only considers kernels whose layout it can serve). Sets *rc to TFS_OK, or
 * TFS_ERR_UNSUPPORTED (impl unknown or not available on this CPU) or TFS_ERR_INVALID (the
 * chosen kernel needs a packed copy); returns NULL unless TFS_OK. */
const tfs_kernel_entry* tfs_select_kernel(int op, int dtype, int g, int impl, int have_packed,
                                          int* rc);

/* 1 if the implementation can run here (its probe, its parent's, and not disabled). */
int tfs_impl_available(int impl);

/* What TFS_IMPL_AUTO resolves to on this CPU (before per-layer fallbacks). */
int tfs_impl_best(void);

/* ---- Introspection for the Python side and the tests ---- */
/* Name ("avx2", ...) of an implementation code; NULL for a code the manifest does not have. */
const char* tfs_impl_name(int impl);
/* The CPU features it needs, as text (for skip messages); NULL for an unknown code. */
const char* tfs_impl_features(int impl);
/* The implementation it falls back to (TFS_IMPL_AUTO for none). */
int tfs_impl_parent(int impl);
/* Number of kernel lines and line i (NULL past the end). */
int tfs_kernel_count(void);
const tfs_kernel_entry* tfs_kernel_at(int i);
/* Index of the line tfs_select_kernel picks; < 0: -TFS_ERR_UNSUPPORTED or -TFS_ERR_INVALID. */
int tfs_kernel_index(int op, int dtype, int g, int impl, int have_packed);

/* Switch implementations off, as if the CPU lacked them: `names` is a comma-separated list of
 * manifest names ("avx512,avx_vnni"; "" switches everything back on). Disabling an ISA also
 * disables the ISAs whose parent chain passes through it. The environment variable
 * TFS_KERNELS_DISABLE, read once at the first query, sets the same mask. Returns TFS_OK, or
 * TFS_ERR_INVALID for an unknown name or "portable" (the mask is then unchanged). */
int tfs_impl_disable(const char* names);

/* Every kernel of the manifest, declared with the common signature (defined in its ISA's file). */
#define TFS_KERNEL(OP, DTYPE, G, ISA, FN, LAYOUT) \
  void FN(const void* layer, const void* packed, const void* x, void* y, int32_t batch, void* ws);
#include "tfs_kernels.inc"
#undef TFS_KERNEL

#ifdef __cplusplus
}
#endif

#endif /* TFS_DISPATCH_H_ */
