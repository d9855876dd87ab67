/* Why: Swift's Glibc module lacks sys/eventfd.h and sys/timerfd.h, and struct epoll_event is
 * packed on x86-64 (12 bytes), which these pass as plain fields and byte arrays. */
#ifndef CSHIMS_EVENTS_H
#define CSHIMS_EVENTS_H
#include <stdint.h>

/* eventfd(initial, EFD_CLOEXEC | EFD_NONBLOCK, plus EFD_SEMAPHORE when semaphore != 0). */
int cshims_eventfd(unsigned int initial, int semaphore);
/* timerfd_create(clock, TFD_CLOEXEC | TFD_NONBLOCK). */
int cshims_timerfd_create(int clock);
/* timerfd_settime / timerfd_gettime on struct itimerspec laid out as 4 int64 fields
 * (interval seconds, nanoseconds, value seconds, nanoseconds). */
int cshims_timerfd_settime(int fd, int flags, const int64_t setting[4], int64_t old[4]);
int cshims_timerfd_gettime(int fd, int64_t current[4]);
/* epoll_create1(EPOLL_CLOEXEC). */
int cshims_epoll_create(void);
/* epoll_ctl with the event given as its two fields (ignored for EPOLL_CTL_DEL). */
int cshims_epoll_ctl(int epfd, int operation, int fd, uint32_t events, uint64_t data);
/* epoll_wait without waiting, at most 1,024 events, written packed (12 bytes each) to out. */
int cshims_epoll_collect(int epfd, uint8_t *out, int max_events);
/* tee(2) of what a pipe holds into another pipe, without waiting: the bytes stay in the first. */
long cshims_pipe_tee(int from, int to);
extern const int CSHIMS_EPOLL_CTL_ADD;
extern const int CSHIMS_EPOLL_CTL_DEL;
extern const int CSHIMS_EPOLL_CTL_MOD;
#endif
