/* What the QEMU TCG cycle-counting plugins share (API v1, QEMU 7.2): the plugin API declarations
 * and the segment scheme. Included by mcu/tfs_cycles_plugin.c (Cortex-M4) and
 * cortex_a/tfs_a64_cycles_plugin.c (Neoverse N1), which differ only in how they cost an
 * instruction.
 *
 * Segments: every execution of the instruction at `mark` (the plugin argument mark=0x<addr>)
 * closes the current segment and opens the next; at exit each segment's line is written to
 * `out` (argument out=<file>).
 *
 * The including plugin defines, before this header: TFS_PLUGIN_NAME (for messages),
 * TFS_PLUGIN_DEFAULT_OUT, and `struct insn_info` with at least `uint64_t vaddr; uint32_t size;`;
 * after it: classify() (fills the rest of an insn_info from its disassembly), on_exec() (the
 * per-execution callback, udata = the insn_info; calls tfs_plugin_next_segment) and
 * write_segment() (one segment's line). */
#ifndef TFS_QEMU_PLUGIN_COMMON_H_
#define TFS_QEMU_PLUGIN_COMMON_H_
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Debian's QEMU loads plugins but ships no qemu-plugin.h, so the few API v1 entry points used
 * are declared here (they match include/qemu/qemu-plugin.h of QEMU 7.2). */
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

typedef struct insn_info insn_info;
static void classify(insn_info* info, const char* dis);
static void on_exec(unsigned int vcpu, void* udata);
static void write_segment(FILE* f, int seg);

#define MAX_SEGMENTS 256
static uint64_t g_mark = 0;
static const char* g_out = TFS_PLUGIN_DEFAULT_OUT;
static uint64_t g_insns[MAX_SEGMENTS]; /* instructions executed per segment */
static int g_seg = 0;

/* on_exec: an execution of the marker opens the next segment (the last one takes the rest). */
static inline void tfs_plugin_next_segment(const insn_info* in) {
  if (in->vaddr == g_mark && g_seg < MAX_SEGMENTS - 1) ++g_seg;
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

static void write_counts(qemu_plugin_id_t id, void* udata) {
  (void)id;
  (void)udata;
  FILE* f = fopen(g_out, "w");
  if (f == NULL) return;
  for (int s = 0; s <= g_seg; ++s) write_segment(f, s);
  fclose(f);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id,
                                                               const void* info, int argc,
                                                               char** argv) {
  (void)info;
  for (int i = 0; i < argc; ++i) {
    /* bit 0 cleared: a Thumb function's address has it set, its first instruction does not */
    if (strncmp(argv[i], "mark=", 5) == 0) g_mark = strtoull(argv[i] + 5, NULL, 0) & ~1ull;
    else if (strncmp(argv[i], "out=", 4) == 0) g_out = argv[i] + 4;
    else { fprintf(stderr, TFS_PLUGIN_NAME ": unknown argument %s\n", argv[i]); return -1; }
  }
  if (g_mark == 0) { fprintf(stderr, TFS_PLUGIN_NAME ": mark=<address> is required\n"); return -1; }
  qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb);
  qemu_plugin_register_atexit_cb(id, write_counts, NULL);
  return 0;
}

#endif /* TFS_QEMU_PLUGIN_COMMON_H_ */
