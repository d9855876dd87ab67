#!/usr/bin/env bash
# Is the machine stalling, or the engine? Runs one SCHED_FIFO thread per CPU (priority 99),
# each waking every millisecond, for SECONDS seconds, and prints every wake-up later than
# THRESHOLD_MS (and each CPU's count and worst at the end), with wall-clock times to set beside
# a load run's per-second windows (`startedAt` in its JSON). A host that takes a core away shows
# here; a stall of the engine's threads does not (README, "Load runs": "Where the tails come from").
#   sudo scripts/stall-probe.sh 60 2 &  scripts/load-sweep.sh
set -euo pipefail
seconds=${1:-60}
threshold=${2:-2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/probe.c" <<'C'
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
static long threshold_ns;
static double seconds;
static double wall(void) { struct timespec t; clock_gettime(CLOCK_REALTIME, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static void *probe(void *arg) {
    int cpu = (int)(long)arg;
    cpu_set_t set; CPU_ZERO(&set); CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    struct sched_param param = { .sched_priority = 99 };
    if (pthread_setschedparam(pthread_self(), SCHED_FIFO, &param)) perror("SCHED_FIFO (needs root)");
    struct timespec next; clock_gettime(CLOCK_MONOTONIC, &next);
    double end = wall() + seconds; long wakes = 0, late = 0, worst = 0;
    while (wall() < end) {
        next.tv_nsec += 1000000;
        if (next.tv_nsec >= 1000000000) { next.tv_nsec -= 1000000000; next.tv_sec++; }
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
        struct timespec now; clock_gettime(CLOCK_MONOTONIC, &now);
        long lateness = (now.tv_sec - next.tv_sec) * 1000000000L + (now.tv_nsec - next.tv_nsec);
        wakes++;
        if (lateness > worst) worst = lateness;
        if (lateness > threshold_ns) { late++; printf("%.6f cpu%d %.3f ms late\n", wall(), cpu, lateness / 1e6); fflush(stdout); next = now; }
    }
    printf("cpu%d: %ld wake-ups, %ld late, worst %.3f ms\n", cpu, wakes, late, worst / 1e6);
    return NULL;
}
int main(int argc, char **argv) {
    seconds = atof(argv[1]); threshold_ns = (long)(atof(argv[2]) * 1e6);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    pthread_t threads[256];
    for (long i = 0; i < cpus && i < 256; i++) pthread_create(&threads[i], NULL, probe, (void *)i);
    for (long i = 0; i < cpus && i < 256; i++) pthread_join(threads[i], NULL);
    return 0;
}
C
cc -O2 -pthread "$work/probe.c" -o "$work/probe"
"$work/probe" "$seconds" "$threshold"
