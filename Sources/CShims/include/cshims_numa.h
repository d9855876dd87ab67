/* Why: libnuma reports topology through bitmask structs and -1 sentinels; these flatten the
 * few queries the engine needs (nodes, their CPUs and memory) into plain integers. */
#ifndef CSHIMS_NUMA_H
#define CSHIMS_NUMA_H
#include <stdint.h>

/* -1 when the kernel has no NUMA support; otherwise the highest node number. */
int cshims_numa_max_node(void);
/* Total and free bytes of node `node`; returns -1 if the node does not exist. */
int cshims_numa_node_memory(int node, int64_t *total, int64_t *free_bytes);
/* Writes the CPU numbers of `node` into `cpus` (up to `max`); returns how many, or -1. */
int cshims_numa_node_cpus(int node, int *cpus, int max);
#endif
