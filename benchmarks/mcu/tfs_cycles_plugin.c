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
 * Debian's QEMU loads plugins but ships no qemu-plugin.h, so the few API v1 entry points used
 * here are declared below (they match include/qemu/qemu-plugin.h of QEMU 7.2). */
#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb* tb);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void* userdata);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void* userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb* tb);
struct qemu_plugin_insn* qemu_plugin_tb_get_insn(const struct qemu_plugin_tb* tb, size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn* insn);
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn* insn);
char* qemu_plugin_insn_disas(const struct qemu_plugin_insn* insn);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn* insn,
                                            qemu_plugin_vcpu_udata_cb_t cb,
                                            enum qemu_plugin_cb_flags flags, void* userdata);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void* userdata);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

enum { K_ALU, K_LOAD, K_STORE, K_LOAD2, K_MULTI, K_BRANCH, K_DIV, K_VDIV };

typedef struct {
  uint64_t vaddr;
  uint32_t size;
  uint8_t kind;
  uint8_t n_regs;  /* LDM/STM/PUSH/POP register count */
  uint8_t writes_pc;
} insn_info;

#define MAX_SEGMENTS 256
static uint64_t g_mark = 0;
static const char* g_out = "tfs_cycles.txt";
static uint64_t g_insns[MAX_SEGMENTS], g_cycles[MAX_SEGMENTS];
static int g_seg = 0;
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
  if (in->vaddr == g_mark && g_seg < MAX_SEGMENTS - 1) ++g_seg;
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

static void on_tb(qemu_plugin_id_t id, struct qemu_plugin_tb* tb) {
  (void)id;
  const size_t n = qemu_plugin_tb_n_insns(tb);
  for (size_t i = 0; i < n; ++i) {
    struct qemu_plugin_insn* insn = qemu_plugin_tb_get_insn(tb, i);
    insn_info* info = (insn_info*)calloc(1, sizeof *info); /* lives as long as the translation */
    if (info == NULL) abort();
    info->vaddr = qemu_plugin_insn_vaddr(insn);
    info->size = (uint32_t)qemu_plugin_insn_size(insn);
    char* dis = qemu_plugin_insn_disas(insn);
    classify(info, dis ? dis : "");
    free(dis);
    qemu_plugin_register_vcpu_insn_exec_cb(insn, on_exec, QEMU_PLUGIN_CB_NO_REGS, info);
  }
}

static void on_exit(qemu_plugin_id_t id, void* udata) {
  (void)id;
  (void)udata;
  FILE* f = fopen(g_out, "w");
  if (f == NULL) return;
  for (int s = 0; s <= g_seg; ++s)
    fprintf(f, "%llu %llu\n", (unsigned long long)g_insns[s], (unsigned long long)g_cycles[s]);
  fclose(f);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id,
                                                               const void* info, int argc,
                                                               char** argv) {
  (void)info;
  for (int i = 0; i < argc; ++i) {
    if (strncmp(argv[i], "mark=", 5) == 0) g_mark = strtoull(argv[i] + 5, NULL, 0) & ~1ull;
    else if (strncmp(argv[i], "out=", 4) == 0) g_out = argv[i] + 4;
    else { fprintf(stderr, "tfs_cycles_plugin: unknown argument %s\n", argv[i]); return -1; }
  }
  if (g_mark == 0) { fprintf(stderr, "tfs_cycles_plugin: mark=<address> is required\n"); return -1; }
  qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb);
  qemu_plugin_register_atexit_cb(id, on_exit, NULL);
  return 0;
}
