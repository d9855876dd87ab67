#define _GNU_SOURCE
#include "cshims_events.h"
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <fcntl.h>
#include <limits.h>

const int CSHIMS_EPOLL_CTL_ADD = EPOLL_CTL_ADD;
const int CSHIMS_EPOLL_CTL_DEL = EPOLL_CTL_DEL;
const int CSHIMS_EPOLL_CTL_MOD = EPOLL_CTL_MOD;

int cshims_eventfd(unsigned int initial, int semaphore) {
    return eventfd(initial, EFD_CLOEXEC | EFD_NONBLOCK | (semaphore ? EFD_SEMAPHORE : 0));
}

int cshims_timerfd_create(int clock) { return timerfd_create(clock, TFD_CLOEXEC | TFD_NONBLOCK); }

int cshims_timerfd_settime(int fd, int flags, const int64_t setting[4], int64_t old[4]) {
    struct itimerspec next = { { setting[0], setting[1] }, { setting[2], setting[3] } }, previous;
    int result = timerfd_settime(fd, flags, &next, &previous);
    if (result == 0 && old) {
        old[0] = previous.it_interval.tv_sec; old[1] = previous.it_interval.tv_nsec;
        old[2] = previous.it_value.tv_sec; old[3] = previous.it_value.tv_nsec;
    }
    return result;
}

int cshims_timerfd_gettime(int fd, int64_t current[4]) {
    struct itimerspec now;
    int result = timerfd_gettime(fd, &now);
    if (result == 0) {
        current[0] = now.it_interval.tv_sec; current[1] = now.it_interval.tv_nsec;
        current[2] = now.it_value.tv_sec; current[3] = now.it_value.tv_nsec;
    }
    return result;
}

int cshims_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int cshims_epoll_ctl(int epfd, int operation, int fd, uint32_t events, uint64_t data) {
    struct epoll_event event = { .events = events, .data = { .u64 = data } };
    return epoll_ctl(epfd, operation, fd, operation == EPOLL_CTL_DEL ? NULL : &event);
}

int cshims_epoll_collect(int epfd, uint8_t *out, int max_events) {
    /* One call: a second would return level-triggered events again. */
    struct epoll_event events[1024];
    int found = epoll_wait(epfd, events, max_events < 1024 ? max_events : 1024, 0);
    for (int i = 0; i < found; i++) memcpy(out + 12 * i, &events[i], 12);
    return found;
}

long cshims_pipe_tee(int from, int to) { return tee(from, to, INT_MAX, SPLICE_F_NONBLOCK); }
