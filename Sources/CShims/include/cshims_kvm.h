/* Why: linux/kvm.h defines its ioctl numbers as function-like macros and kvm_run as nested
 * anonymous unions, neither of which Swift imports; this header exposes both as plain C. */
#ifndef CSHIMS_KVM_H
#define CSHIMS_KVM_H
#include <linux/kvm.h>
#include <stdint.h>
#include <stddef.h>

extern const unsigned long CSHIMS_KVM_GET_API_VERSION;
extern const unsigned long CSHIMS_KVM_CREATE_VM;
extern const unsigned long CSHIMS_KVM_CHECK_EXTENSION;
extern const unsigned long CSHIMS_KVM_GET_VCPU_MMAP_SIZE;
extern const unsigned long CSHIMS_KVM_GET_SUPPORTED_CPUID;
extern const unsigned long CSHIMS_KVM_SET_USER_MEMORY_REGION;
extern const unsigned long CSHIMS_KVM_CREATE_VCPU;
extern const unsigned long CSHIMS_KVM_RUN;
extern const unsigned long CSHIMS_KVM_GET_REGS;
extern const unsigned long CSHIMS_KVM_SET_REGS;
extern const unsigned long CSHIMS_KVM_GET_SREGS;
extern const unsigned long CSHIMS_KVM_SET_SREGS;
extern const unsigned long CSHIMS_KVM_SET_CPUID2;
extern const unsigned long CSHIMS_KVM_GET_XSAVE;
extern const unsigned long CSHIMS_KVM_SET_XSAVE;
extern const unsigned long CSHIMS_KVM_GET_XCRS;
extern const unsigned long CSHIMS_KVM_SET_XCRS;
extern const unsigned long CSHIMS_KVM_GET_MSRS;
extern const unsigned long CSHIMS_KVM_SET_MSRS;
extern const unsigned long CSHIMS_KVM_GET_STATS_FD;

/* The sync-regs block KVM shares in the kvm_run page (KVM_CAP_SYNC_REGS). */
struct kvm_sync_regs *cshims_kvm_run_sync_regs(struct kvm_run *run);
uint64_t *cshims_kvm_run_valid_regs(struct kvm_run *run);
uint64_t *cshims_kvm_run_dirty_regs(struct kvm_run *run);

/* The KVM_EXIT_IO payload: where the port, size and data of an `in`/`out` exit live. */
struct cshims_kvm_io_exit {
    uint8_t direction;
    uint8_t size;
    uint16_t port;
    uint32_t count;
    uint64_t data_offset;
};
struct cshims_kvm_io_exit cshims_kvm_run_io(const struct kvm_run *run);

/* KVM_EXIT_FAIL_ENTRY / KVM_EXIT_INTERNAL_ERROR details for diagnostics. */
uint64_t cshims_kvm_run_fail_entry_reason(const struct kvm_run *run);
uint32_t cshims_kvm_run_internal_suberror(const struct kvm_run *run);

/* kvm_cpuid2 and kvm_msrs end in flexible arrays; these allocate them with room for n entries. */
struct kvm_cpuid2 *cshims_kvm_cpuid2_alloc(uint32_t entries);
struct kvm_msrs *cshims_kvm_msrs_alloc(uint32_t entries);
#endif
