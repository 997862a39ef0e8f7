/* TFS_GROUP_SPARSE_FC: the packed copy the x86 SIMD kernels run on (tfs_gsfc_pack).
 *
 * Rows with a random number of groups make a row-at-a-time loop mispredict its exit and
 * remainder branches on nearly every row, which costs more than the arithmetic at 90 %+
 * sparsity. So the SIMD kernels run on a packed copy: rows sorted by their number of full groups
 * (descending) and cut into blocks of 8 "slots"; within a block, step t holds group t of each of
 * the 8 rows side by side (zero-weight padding where a row is shorter; sorting keeps the padding
 * to a few %). A block is then one loop with a fixed trip count and 8 independent accumulator
 * chains; the only data-dependent branch is the block's loop exit. Ragged tail groups stay in
 * the model's layout and are added per slot in scalar code.
 */
#include <stdlib.h>
#include <string.h>

#include "tfs_gsfc_internal.h"

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

/* The AArch64 float32 kernels (tfs_gsfc_neon.c) load each group's x with a register offset
 * (LDR Q, [x, w, uxtw]), from byte offsets read two at a time (LDP): no 16-bit field extract and
 * no address add per group. And in layers without ragged tails every block gets at least one
 * step (a block of rows without full groups: one padding step), so that those kernels need no
 * test for an empty block. Other architectures get neither. */
static int has_xoff(const tfs_gsfc_layer* L) {
#if defined(__aarch64__)
  return L->dtype == TFS_DTYPE_F32;
#else
  (void)L;
  return 0;
#endif
}

/* 1 if every block gets at least one step (see has_xoff): layers without ragged tails (so
 * in >= g, and padding's x[0 .. g - 1] exists); the kernels keep the test where there are tails. */
static int min_one_step(const tfs_gsfc_layer* L) { return has_xoff(L) && L->in_full == L->in; }

static int64_t pack_entries_bound(const tfs_gsfc_layer* L) {
  /* Rows sorted by length descending: a block's padding is at most 8 * (its max length - the
   * next block's max length); the sum telescopes to 8 * the longest row <= 8 * ceil(in / g).
   * Plus one step per block where empty blocks get one. */
  const int64_t blocks = ((int64_t)L->out + TFS_GSFC_BLOCK_ROWS - 1) / TFS_GSFC_BLOCK_ROWS;
  return (int64_t)L->n_groups + (int64_t)TFS_GSFC_BLOCK_ROWS * (((int64_t)L->in + L->g - 1) / L->g) +
         (min_one_step(L) ? (int64_t)TFS_GSFC_BLOCK_ROWS * blocks : 0);
}

size_t tfs_gsfc_packed_bound(const tfs_gsfc_layer* L) {
  const size_t n_blocks = ((size_t)L->out + TFS_GSFC_BLOCK_ROWS - 1) / TFS_GSFC_BLOCK_ROWS;
  const size_t slots = n_blocks * TFS_GSFC_BLOCK_ROWS;
  const size_t entries = (size_t)pack_entries_bound(L);
  const size_t wsize = L->dtype == TFS_DTYPE_I8 ? 1 : 4;
  return align64(slots * sizeof(int32_t)) * 6 + align64((n_blocks + 1) * sizeof(int64_t)) +
         align64(entries * sizeof(uint16_t)) + align64(entries * (size_t)L->g * wsize) +
         (has_xoff(L) ? align64(entries * sizeof(uint32_t)) : 0) +
         align64((size_t)L->out * sizeof(int64_t));
}

static int cmp_i64(const void* a, const void* b) {
  const int64_t x = *(const int64_t*)a, y = *(const int64_t*)b;
  return (x > y) - (x < y);
}

static int32_t full_groups(const tfs_gsfc_layer* L, int32_t r) {
  const int32_t k0 = L->row_ptr[r], k1 = L->row_ptr[r + 1];
  return tfs_gsfc_full_end(L, k0, k1) - k0;
}

int tfs_gsfc_pack(const tfs_gsfc_layer* L, void* mem, size_t bytes, tfs_gsfc_packed* P) {
  if (L == NULL || mem == NULL || P == NULL || ((uintptr_t)mem % 64) != 0 ||
      bytes < tfs_gsfc_packed_bound(L))
    return TFS_ERR_INVALID;
  const int32_t R = TFS_GSFC_BLOCK_ROWS, g = L->g;
  const int32_t n_blocks = (int32_t)(((int64_t)L->out + R - 1) / R);
  const size_t slots = (size_t)n_blocks * R;
  const int64_t bound = pack_entries_bound(L);
  const size_t wsize = L->dtype == TFS_DTYPE_I8 ? 1 : 4;
  char* p = (char*)mem;
  int32_t* perm = (int32_t*)(void*)p;   p += align64(slots * sizeof(int32_t));
  int32_t* tail = (int32_t*)(void*)p;   p += align64(slots * sizeof(int32_t));
  int32_t* bias = (int32_t*)(void*)p;   p += align64(slots * sizeof(int32_t));
  float* scale = (float*)(void*)p;      p += align64(slots * sizeof(float));
  int32_t* bias_u8 = (int32_t*)(void*)p; p += align64(slots * sizeof(int32_t));
  int32_t* bias_s8 = (int32_t*)(void*)p; p += align64(slots * sizeof(int32_t));
  int64_t* off = (int64_t*)(void*)p;    p += align64(((size_t)n_blocks + 1) * sizeof(int64_t));
  uint16_t* col = (uint16_t*)(void*)p;  p += align64((size_t)bound * sizeof(uint16_t));
  char* w = p;                          p += align64((size_t)bound * (size_t)g * wsize);
  uint32_t* xoff = NULL;
  if (has_xoff(L)) { xoff = (uint32_t*)(void*)p; p += align64((size_t)bound * sizeof(uint32_t)); }
  int64_t* keys = (int64_t*)(void*)p;

  /* Sort rows by number of full groups, descending (ties: row order, for determinism). */
  for (int32_t r = 0; r < L->out; ++r)
    keys[r] = ((int64_t)(65536 - full_groups(L, r)) << 32) | (int64_t)r;
  qsort(keys, (size_t)L->out, sizeof(int64_t), cmp_i64);
  for (size_t s = 0; s < slots; ++s) {
    const int32_t r = s < (size_t)L->out ? (int32_t)(keys[s] & 0xFFFFFFFF) : -1;
    perm[s] = r;
    /* Each slot's bias (float32 or int32: 4 bytes either way) and int8 out_scale, so that the
     * SIMD epilogue loads them instead of gathering (gathers are slow on AMD cores). */
    if (r >= 0) memcpy(&bias[s], (const char*)L->bias + 4 * (size_t)r, 4);
    else bias[s] = 0;
    scale[s] = (r >= 0 && L->dtype == TFS_DTYPE_I8) ? L->scale[r] : 0.0f;
    tail[s] = (r >= 0 && full_groups(L, r) != L->row_ptr[r + 1] - L->row_ptr[r]) ? L->row_ptr[r + 1] - 1 : -1;
    /* int8: the bias of a kernel that multiplies u = x + 128 as uint8 by the int8 weights (VNNI
     * takes u8 x s8): sum w (x - zp) = sum w u - (128 + zp) sum w over the full groups. */
    uint32_t wsum = 0;
    if (r >= 0 && L->dtype == TFS_DTYPE_I8)
      for (int64_t j = (int64_t)L->row_ptr[r] * g; j < ((int64_t)L->row_ptr[r] + full_groups(L, r)) * g; ++j)
        wsum += (uint32_t)(int32_t)((const int8_t*)L->values)[j];
    bias_u8[s] = (int32_t)((uint32_t)bias[s] - (uint32_t)(128 + L->in_zp) * wsum);
    /* The same for kernels on the raw int8 x (SDOT takes s8 x s8): - zp * sum w. */
    bias_s8[s] = (int32_t)((uint32_t)bias[s] - (uint32_t)L->in_zp * wsum);
  }
  off[0] = 0;
  for (int32_t b = 0; b < n_blocks; ++b) {
    int32_t steps = 0;
    for (int32_t i = 0; i < R; ++i) {
      const int32_t r = perm[b * R + i];
      if (r >= 0 && full_groups(L, r) > steps) steps = full_groups(L, r);
    }
    if (steps == 0 && min_one_step(L)) steps = 1;
    off[b + 1] = off[b] + (int64_t)steps * R;
    if (off[b + 1] > bound) return TFS_ERR_INVALID; /* cannot happen (see the bound) */
    for (int32_t t = 0; t < steps; ++t) {
      for (int32_t i = 0; i < R; ++i) {
        const int64_t e = off[b] + (int64_t)t * R + i;
        const int32_t r = perm[b * R + i];
        char* we = w + (size_t)e * (size_t)g * wsize;
        if (r >= 0 && t < full_groups(L, r)) {
          const int32_t k = L->row_ptr[r] + t;
          col[e] = (uint16_t)tfs_gsfc_col(L, k); /* < in <= 65536 */
          memcpy(we, (const char*)L->values + (size_t)k * (size_t)g * wsize, (size_t)g * wsize);
        } else {
          /* Padding: zero weights at column 0, a full group (padding exists only when some row
           * has a full group, or by min_one_step: in >= g either way). */
          col[e] = 0;
          memset(we, 0, (size_t)g * wsize);
        }
        if (xoff != NULL) xoff[e] = 4u * col[e];
      }
    }
  }
  P->n_blocks = n_blocks;
  P->perm = perm;
  P->tail = tail;
  P->bias = bias;
  P->scale = scale;
  P->bias_u8 = bias_u8;
  P->bias_s8 = bias_s8;
  P->blk_off = off;
  P->col = col;
  P->w = w;
  P->xoff = xoff;
  return TFS_OK;
}
