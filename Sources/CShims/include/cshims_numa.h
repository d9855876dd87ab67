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

/* Binds the calling thread to node `node`: its CPU affinity to the node's CPUs
 * (sched_setaffinity) and its memory policy to MPOL_PREFERRED on the node (set_mempolicy).
 * Both are per thread, inherited by threads it makes and kept across execve. Returns 0 or -errno. */
int cshims_numa_bind_this_thread(int node);
/* The calling thread's memory policy (get_mempolicy): its mode (MPOL_DEFAULT 0, PREFERRED 1,
 * BIND 2, INTERLEAVE 3, LOCAL 4) and the nodes of its mask (bit n: node n, nodes 0-63).
 * Returns 0 or -errno. */
int cshims_numa_policy_of_this_thread(int *mode, uint64_t *nodes);
/* The CPUs the calling thread may run on (sched_getaffinity), up to `max`; count or -errno. */
int cshims_numa_affinity_of_this_thread(int *cpus, int max);
#endif
