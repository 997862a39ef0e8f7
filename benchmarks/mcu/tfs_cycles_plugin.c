/* A QEMU TCG plugin (API v1, QEMU 7.2) that counts the Cortex-M4 instructions executed between
 * calls of one marker function and estimates their cycles from the Cortex-M4 TRM's timing table.
 *
 *   qemu-system-arm ... -plugin ./tfs_cycles_plugin.so,mark=0x<addr of tfs_mark>,out=counts.txt
 *
 * Every execution of the instruction at `mark` closes the current segment and opens the next;
 * at exit one line per segment ("<instructions> <estimated cycles>") is written to `out`.
 * Instruction counts are exact. Cycles assume zero-wait memory and no stalls (1 per ALU / MUL /
 * MLA / SMLAD / SXTB16 / 64-bit MAC; LDR/STR 2, or 1 right after another load/store, LDRD/STRD 3,
 * LDM/STM/PUSH/POP 1+N, taken branch +2 (pipeline refill), VDIV/VSQRT 14, SDIV/UDIV 7): a
 * comparison tool, about +-20 % of real silicon.
 *
 * The plugin API declarations, the segment scheme and the install function are
 * benchmarks/qemu_plugin_common.h's (shared with the Cortex-A plugin). */
#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>

#define TFS_PLUGIN_NAME "tfs_cycles_plugin"
#define TFS_PLUGIN_DEFAULT_OUT "tfs_cycles.txt"

struct insn_info {
  uint64_t vaddr;
  uint32_t size;
  uint8_t kind;
  uint8_t n_regs;  /* LDM/STM/PUSH/POP register count */
  uint8_t writes_pc;
};

#include "../qemu_plugin_common.h"

enum { K_ALU, K_LOAD, K_STORE, K_LOAD2, K_MULTI, K_BRANCH, K_DIV, K_VDIV };

static uint64_t g_cycles[MAX_SEGMENTS];
static const insn_info* g_prev = NULL;

static int count_regs(const char* s) {
  /* "{r4, r5, r6, lr}" or "{r4-r7, lr}" */
  const char* a = strchr(s, '{');
  const char* b = a ? strchr(a, '}') : NULL;
  if (!a || !b) return 1;
  int n = 0;
  for (const char* p = a + 1; p < b;) {
    while (p < b && (*p == ' ' || *p == ',')) ++p;
    if (p >= b) break;
    const char* e = p;
    while (e < b && *e != ',') ++e;
    const char* dash = memchr(p, '-', (size_t)(e - p));
    if (dash) {
      int lo = atoi(p + 1), hi = atoi(dash + 2);
      n += hi >= lo ? hi - lo + 1 : 1;
    } else {
      ++n;
    }
    p = e;
  }
  return n > 0 ? n : 1;
}

static bool starts(const char* m, const char* prefix) { return strncmp(m, prefix, strlen(prefix)) == 0; }

static void classify(insn_info* info, const char* dis) {
  char m[16] = {0};
  size_t i = 0;
  while (dis[i] && !isspace((unsigned char)dis[i]) && i < sizeof m - 1) { m[i] = dis[i]; ++i; }
  const char* ops = dis + i;
  info->kind = K_ALU;
  info->n_regs = 1;
  info->writes_pc = 0;
  if (starts(m, "ldrd") || starts(m, "strd")) {
    info->kind = K_LOAD2;
  } else if (starts(m, "ldm") || starts(m, "stm") || starts(m, "push") || starts(m, "pop") ||
             starts(m, "vpush") || starts(m, "vpop") || starts(m, "vldm") || starts(m, "vstm")) {
    info->kind = K_MULTI;
    info->n_regs = (uint8_t)count_regs(ops);
    info->writes_pc = (starts(m, "pop") || starts(m, "ldm")) && strstr(ops, "pc") != NULL;
  } else if (starts(m, "ldr") || starts(m, "vldr")) {
    info->kind = K_LOAD;
    info->writes_pc = strncmp(ops, " pc", 3) == 0;
  } else if (starts(m, "str") || starts(m, "vstr")) {
    info->kind = K_STORE;
  } else if (starts(m, "sdiv") || starts(m, "udiv")) {
    info->kind = K_DIV;
  } else if (starts(m, "vdiv") || starts(m, "vsqrt")) {
    info->kind = K_VDIV;
  } else if (m[0] == 'b' && !starts(m, "bic") && !starts(m, "bfc") && !starts(m, "bfi") &&
             !starts(m, "bkpt")) {
    info->kind = K_BRANCH; /* b, bl, bx, blx, b<cond>, (cbz/cbnz below) */
  } else if (starts(m, "cbz") || starts(m, "cbnz") || starts(m, "tbb") || starts(m, "tbh")) {
    info->kind = K_BRANCH;
  } else if (strncmp(ops, " pc,", 4) == 0 && (starts(m, "mov") || starts(m, "add"))) {
    info->kind = K_BRANCH;
  }
}

static void on_exec(unsigned int vcpu, void* udata) {
  (void)vcpu;
  const insn_info* in = (const insn_info*)udata;
  /* Close the previous instruction: a branch (or PC write) is taken when the next executed
   * instruction is not the one after it. */
  if (g_prev != NULL && (g_prev->kind == K_BRANCH || g_prev->writes_pc) &&
      in->vaddr != g_prev->vaddr + g_prev->size)
    g_cycles[g_seg] += 2;
  tfs_plugin_next_segment(in);
  const bool after_mem = g_prev != NULL && (g_prev->kind == K_LOAD || g_prev->kind == K_STORE);
  uint64_t c = 1;
  switch (in->kind) {
    case K_LOAD: case K_STORE: c = after_mem ? 1 : 2; break;
    case K_LOAD2: c = 3; break;
    case K_MULTI: c = 1 + in->n_regs; break;
    case K_DIV: c = 7; break;
    case K_VDIV: c = 14; break;
    default: c = 1;
  }
  g_insns[g_seg] += 1;
  g_cycles[g_seg] += c;
  g_prev = in;
}

static void write_segment(FILE* f, int seg) {
  fprintf(f, "%llu %llu\n", (unsigned long long)g_insns[seg], (unsigned long long)g_cycles[seg]);
}
