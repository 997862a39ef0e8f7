/* Kernel dispatch: instruction-set table and CPU probes built from the manifest
 * (tfs_kernels.inc), the disable mask, the choice of kernel per layer, and the ops' compute
 * entry points. See tfs_dispatch.h. */
#include "tfs_dispatch.h"

#include <stdlib.h>
#include <string.h>

#include "tfs_group_sparse_fc.h"
#include "tfs_gsfc_internal.h"
#include "tfs_nm_sparse_fc.h"

/* A probe for a feature every compiler's __builtin_cpu_supports knows; other probes are
 * functions in their ISA's file, declared by the manifest's TFS_PROBE lines. */
#if TFS_X86
#define TFS_X86_CPU(feature) __builtin_cpu_supports(feature)
#else
#define TFS_X86_CPU(feature) 0
#endif
#define TFS_PROBE(fn) int fn(void);
#include "tfs_kernels.inc"
#undef TFS_PROBE

/* ---- Instruction sets ---- */

typedef struct {
  int impl, parent, auto_ok;
  const char* name;
  const char* features;
} isa_info;

static const isa_info kIsas[] = {
#define TFS_ISA(NAME, code, str, PARENT, auto_ok, probe, features) \
  {TFS_IMPL_##NAME, TFS_IMPL_##PARENT, auto_ok, str, features},
#define TFS_IMPL_NONE TFS_IMPL_AUTO /* the parent of the root */
#include "tfs_kernels.inc"
#undef TFS_ISA
};
#define N_ISAS ((int)(sizeof kIsas / sizeof kIsas[0]))

static const isa_info* isa(int impl) {
  for (int i = 0; i < N_ISAS; ++i)
    if (kIsas[i].impl == impl) return &kIsas[i];
  return NULL;
}

/* The probes' results, once: bit `impl` set if the CPU has that instruction set's features. */
static unsigned probe_all(void) {
  unsigned m = 0;
#define TFS_ISA(NAME, code, str, PARENT, auto_ok, probe, features) \
  if (probe) m |= 1u << (code);
#include "tfs_kernels.inc"
#undef TFS_ISA
  return m;
}

/* The kernel choice per (op, dtype, g, impl, have_packed), cached: the compute entry points are
 * called once per node and run, and a walk over the manifest costs ~0.1 us. Entry = manifest
 * index + 1, or -error; 0 = not computed yet. Cleared whenever the mask changes. */
#define N_G_SLOTS 6 /* g = any, 1, 2, 4, 8, 16 */
static int16_t g_choice[TFS_N_OPS][2][N_G_SLOTS][TFS_IMPL_LIMIT][2];

/* Bits of the available implementations (probe, parent chain, mask); 0 = not computed yet.
 * Written only with complete values, so a race computes the same word twice. */
static unsigned g_available;
static unsigned g_disabled;
static int g_env_read;

static unsigned available_mask(void) {
  if (!g_env_read) {
    g_env_read = 1;
#if defined(__unix__) || defined(__APPLE__) || defined(_WIN32)
    const char* env = getenv("TFS_KERNELS_DISABLE");
    if (env != NULL && tfs_impl_disable(env) != TFS_OK) g_disabled = 0;
#endif
  }
  if (g_available == 0) {
    const unsigned probed = probe_all() & ~g_disabled;
    unsigned m = 1u << TFS_IMPL_PORTABLE;
    /* Parents come later in the table (best first): resolve from the end. */
    for (int i = N_ISAS - 1; i >= 0; --i) {
      const isa_info* s = &kIsas[i];
      const int parent_ok = s->parent == TFS_IMPL_AUTO || ((m >> s->parent) & 1u);
      if (parent_ok && ((probed >> s->impl) & 1u)) m |= 1u << s->impl;
    }
    g_available = m;
  }
  return g_available;
}

int tfs_impl_available(int impl) {
  if (impl == TFS_IMPL_AUTO) return 1;
  if (impl < 0 || impl >= TFS_IMPL_LIMIT || isa(impl) == NULL) return 0;
  return (int)((available_mask() >> impl) & 1u);
}

int tfs_impl_best(void) {
  for (int i = 0; i < N_ISAS; ++i)
    if (kIsas[i].auto_ok && tfs_impl_available(kIsas[i].impl)) return kIsas[i].impl;
  return TFS_IMPL_PORTABLE;
}

const char* tfs_impl_name(int impl) {
  const isa_info* s = isa(impl);
  return s != NULL ? s->name : NULL;
}

const char* tfs_impl_features(int impl) {
  const isa_info* s = isa(impl);
  return s != NULL ? s->features : NULL;
}

int tfs_impl_parent(int impl) {
  const isa_info* s = isa(impl);
  return s != NULL ? s->parent : TFS_IMPL_AUTO;
}

int tfs_impl_disable(const char* names) {
  if (names == NULL) return TFS_ERR_INVALID;
  unsigned mask = 0;
  const char* p = names;
  while (*p != '\0') {
    const char* end = strchr(p, ',');
    const size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
    if (len > 0) {
      int found = 0;
      for (int i = 0; i < N_ISAS; ++i)
        if (strlen(kIsas[i].name) == len && strncmp(kIsas[i].name, p, len) == 0 &&
            kIsas[i].impl != TFS_IMPL_PORTABLE) {
          mask |= 1u << kIsas[i].impl;
          found = 1;
        }
      if (!found) return TFS_ERR_INVALID;
    }
    p += len;
    if (*p == ',') ++p;
  }
  g_env_read = 1; /* an explicit call overrides the environment */
  g_disabled = mask;
  g_available = 0;
  memset(g_choice, 0, sizeof g_choice);
  return TFS_OK;
}

/* ---- Kernels ---- */

enum { F32 = TFS_DTYPE_F32, I8 = TFS_DTYPE_I8, GSFC = TFS_OP_GSFC, NMFC = TFS_OP_NMFC, GSMM = TFS_OP_GSMM,
       GSCD = TFS_OP_GSCD,
       MODEL = TFS_LAYOUT_MODEL, PACKED = TFS_LAYOUT_PACKED };

static const tfs_kernel_entry kKernels[] = {
#define TFS_KERNEL(OP, DTYPE, G, ISA, FN, LAYOUT) \
  {OP, DTYPE, G, TFS_IMPL_##ISA, LAYOUT, FN, #FN},
#include "tfs_kernels.inc"
#undef TFS_KERNEL
};
#define N_KERNELS ((int)(sizeof kKernels / sizeof kKernels[0]))

int tfs_kernel_count(void) { return N_KERNELS; }

const tfs_kernel_entry* tfs_kernel_at(int i) {
  return i >= 0 && i < N_KERNELS ? &kKernels[i] : NULL;
}

/* First line for (op, dtype, g) on `impl` or, failing that, on its parents; -1 if none. */
static int resolve(int op, int dtype, int g, int impl, int have_packed, int auto_mode) {
  for (int s = impl; s != TFS_IMPL_AUTO; s = tfs_impl_parent(s))
    for (int i = 0; i < N_KERNELS; ++i) {
      const tfs_kernel_entry* k = &kKernels[i];
      if (k->impl != s || k->op != op || k->dtype != dtype || (k->g != 0 && k->g != g)) continue;
      /* AUTO without a packed copy passes over the kernels that need one. */
      if (auto_mode && k->layout == TFS_LAYOUT_PACKED && !have_packed) continue;
      return i;
    }
  return -1;
}

static int kernel_index_uncached(int op, int dtype, int g, int impl, int have_packed) {
  if (impl == TFS_IMPL_AUTO) {
    const int i = resolve(op, dtype, g, tfs_impl_best(), have_packed, 1);
    return i >= 0 ? i : -TFS_ERR_UNSUPPORTED;
  }
  if (!tfs_impl_available(impl)) return -TFS_ERR_UNSUPPORTED;
  const int i = resolve(op, dtype, g, impl, have_packed, 0);
  if (i < 0) return -TFS_ERR_UNSUPPORTED;
  if (kKernels[i].layout == TFS_LAYOUT_PACKED && !have_packed) return -TFS_ERR_INVALID;
  return i;
}

static int g_slot(int g) {
  switch (g) {
    case 0: return 0;
    case 1: return 1;
    case 2: return 2;
    case 4: return 3;
    case 8: return 4;
    case 16: return 5;
    default: return -1;
  }
}

int tfs_kernel_index(int op, int dtype, int g, int impl, int have_packed) {
  const int gs = g_slot(g);
  if (op < 0 || op >= TFS_N_OPS || (dtype != TFS_DTYPE_F32 && dtype != TFS_DTYPE_I8) ||
      impl < 0 || impl >= TFS_IMPL_LIMIT || gs < 0)
    return -TFS_ERR_UNSUPPORTED;
  (void)available_mask(); /* reads TFS_KERNELS_DISABLE before the first choice is cached */
  int16_t* c = &g_choice[op][dtype][gs][impl][have_packed != 0];
  if (*c == 0) {
    const int i = kernel_index_uncached(op, dtype, g, impl, have_packed != 0);
    *c = (int16_t)(i >= 0 ? i + 1 : i);
  }
  return *c > 0 ? *c - 1 : *c;
}

const tfs_kernel_entry* tfs_select_kernel(int op, int dtype, int g, int impl, int have_packed,
                                          int* rc) {
  const int i = tfs_kernel_index(op, dtype, g, impl, have_packed);
  *rc = i >= 0 ? TFS_OK : -i;
  return i >= 0 ? &kKernels[i] : NULL;
}

/* ---- The ops' entry points ---- */

int tfs_gsfc_impl_available(int impl) { return tfs_impl_available(impl); }

int tfs_gsfc_best_impl(void) { return tfs_impl_best(); }

int tfs_gsfc_batched_min_rows(void) { return TFS_GSMM_MIN_BATCH; }

int tfs_gsfc_compute(const tfs_gsfc_layer* L, const tfs_gsfc_packed* P, const void* x, void* y,
                     int32_t batch, void* workspace, int impl) {
  int rc;
  if (batch >= TFS_GSMM_MIN_BATCH) { /* many rows (a Transformer's batch * seq): SpMM if listed */
    const tfs_kernel_entry* m = tfs_select_kernel(TFS_OP_GSMM, L->dtype, L->g, impl, P != NULL, &rc);
    if (m != NULL) {
      m->fn(L, m->layout == TFS_LAYOUT_PACKED ? P : NULL, x, y, batch, workspace);
      return TFS_OK;
    }
  }
  const tfs_kernel_entry* k = tfs_select_kernel(TFS_OP_GSFC, L->dtype, L->g, impl, P != NULL, &rc);
  if (k == NULL) return rc;
  if (batch > 0) k->fn(L, k->layout == TFS_LAYOUT_PACKED ? P : NULL, x, y, batch, workspace);
  return TFS_OK;
}

int tfs_nmfc_compute(const tfs_nmfc_layer* L, const void* x, void* y, int32_t batch,
                     void* workspace, int impl) {
  int rc;
  const tfs_kernel_entry* k = tfs_select_kernel(TFS_OP_NMFC, L->dtype, 0, impl, 0, &rc);
  if (k == NULL) return rc;
  if (batch > 0) k->fn(L, NULL, x, y, batch, workspace);
  return TFS_OK;
}
