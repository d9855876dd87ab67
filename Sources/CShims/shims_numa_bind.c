#define _GNU_SOURCE
#include "cshims_numa.h"

#include <errno.h>
#include <numa.h>
#include <numaif.h>
#include <sched.h>
#include <string.h>

int cshims_numa_bind_this_thread(int node) {
    if (numa_available() < 0) return -ENOSYS;
    if (node < 0 || node > numa_max_node() || node > 63) return -EINVAL;
    struct bitmask *cpus = numa_allocate_cpumask();
    if (!cpus) return -ENOMEM;
    int result = 0;
    if (numa_node_to_cpus(node, cpus) < 0) {
        result = errno ? -errno : -EINVAL;
    } else {
        cpu_set_t set;
        CPU_ZERO(&set);
        int any = 0;
        for (unsigned cpu = 0; cpu < cpus->size && cpu < CPU_SETSIZE; cpu++) {
            if (numa_bitmask_isbitset(cpus, cpu)) { CPU_SET(cpu, &set); any = 1; }
        }
        /* A node with memory but no CPU: keep the affinity, place the memory only. */
        if (any && sched_setaffinity(0, sizeof set, &set) != 0) result = -errno;
    }
    numa_free_cpumask(cpus);
    if (result != 0) return result;
    unsigned long mask = 1UL << node;
    if (set_mempolicy(MPOL_PREFERRED, &mask, sizeof mask * 8 + 1) != 0) return -errno;
    return 0;
}

int cshims_numa_policy_of_this_thread(int *mode, uint64_t *nodes) {
    unsigned long mask[16];
    memset(mask, 0, sizeof mask);
    int got = 0;
    if (get_mempolicy(&got, mask, sizeof mask * 8, 0, 0) != 0) return -errno;
    *mode = got;
    *nodes = mask[0];
    return 0;
}

int cshims_numa_affinity_of_this_thread(int *cpus, int max) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return -errno;
    int count = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && count < max; cpu++) {
        if (CPU_ISSET(cpu, &set)) cpus[count++] = cpu;
    }
    return count;
}
