/* uvcffi C core: the libuv loop, the event array, the read arena and handle slots.
 *
 * Every libuv callback is C that appends a fixed-size record to the event array; Python
 * drains the array after uvc_run_once() returns.  No Python runs inside uv_run().
 *
 * Handles are named by integer slots.  A slot's memory is owned by C and freed in the libuv
 * close callback, which emits UVC_EV_CLOSED; the slot number itself is only reused after the
 * next uvc_run_once(), so Python can never see an event of an old handle under a new owner.
 *
 * The text between the "cffi-begin" and "cffi-end" markers is what build_ffi.py hands to
 * cffi's cdef(): keep it plain declarations (no macros, no includes).
 */
#ifndef UVC_CORE_H
#define UVC_CORE_H

#include <stdint.h>
#include <stddef.h>
#include <uv.h>

/* cffi-begin */
/* Event kinds.  The transport modules own the meaning of a, b and c for their kinds. */
enum {
    UVC_EV_READ = 1,        /* slot, a = arena offset, b = length                        */
    UVC_EV_EOF = 2,         /* slot                                                      */
    UVC_EV_READ_ERROR = 3,  /* slot, a = uv error                                        */
    UVC_EV_WRITE_DONE = 4,  /* slot, a = status, b = bytes the request carried          */
    UVC_EV_SHUTDOWN = 5,    /* slot, a = status                                          */
    UVC_EV_CONNECT = 6,     /* slot, a = status                                          */
    UVC_EV_ACCEPT = 7,      /* slot = server, a = status, b = new slot (or -1)           */
    UVC_EV_CLOSED = 8,      /* slot: its memory is gone; the last event of that slot     */
    UVC_EV_POLL = 9,        /* slot = the fd set, a = fd, b = UVC_READABLE|UVC_WRITABLE  */
    UVC_EV_SIGNAL = 10,     /* a = signal number (read from Python's wakeup fd)          */
    UVC_EV_EXIT = 11,       /* slot, a = exit status, b = terminating signal             */
    UVC_EV_DNS = 12,        /* slot = request, a = status                                */
    UVC_EV_UDP_RECV = 13,   /* slot, a = arena offset, b = length, c = sockaddr offset   */
    UVC_EV_UDP_SEND = 14,   /* slot, a = status, b = bytes                               */
    UVC_EV_FS = 15,         /* slot = request, a = result                                */
    UVC_EV_FD_LOST = 16,    /* slot, a = uv error: its fd was closed under the loop      */
    UVC_EV_READABLE = 17,   /* slot: data (or EOF, or an error) waits; see uvc_read_into */
    UVC_EV_WRITE_QUEUED = 18, /* slot: held writes went to libuv's queue (uvc_stream_flush) */
    UVC_EV_USER = 19        /* first kind free for new modules                           */
};

enum {
    UVC_READABLE = 1,
    UVC_WRITABLE = 2,
    UVC_DISCONNECT = 4
};

/* One event: kind, slot, a, b, c, all int64 so Python can unpack the array in one call. */
#define UVC_EVENT_WORDS 5

/* Counters for loop.stats(), kept by the C core at the cost of an increment where the
 * thing happens.  Times are libuv's loop clock (milliseconds, CLOCK_MONOTONIC). */
enum {
    UVC_EV_KINDS = 32,          /* event kinds counted (kinds above are counted as the last) */
    UVC_SLOW_RING = 64          /* the last slow iterations remembered, for tracing       */
};
typedef struct {
    uint64_t iterations;
    uint64_t events[UVC_EV_KINDS];   /* by kind */
    uint64_t idle_ms;                /* time uvc_run_once spent waiting (timeout != 0) */
    uint64_t bytes_read;             /* by stream and UDP handles */
    uint64_t bytes_written;
    uint64_t slow_iterations;        /* Python ran longer than slow_ms between two runs */
    uint64_t slow_start_ms[UVC_SLOW_RING];     /* ring: when each began, loop clock */
    uint64_t slow_duration_ms[UVC_SLOW_RING];
    uint64_t now_ms;                 /* the loop clock when uvc_stats copied this */
} uvc_stats_t;

typedef struct uvc_loop_s uvc_loop_t;

/* A new loop, or NULL with errno set (ENOMEM; EMFILE or ENFILE when its fds cannot be
 * made: libuv's epoll fd and eventfd, the signal socketpair). */
uvc_loop_t *uvc_loop_new(void);
/* Close every handle, run their close callbacks and close the libuv loop.  The struct
 * stays valid (every call on it then fails with UV_EBADF, wake-ups are ignored) until
 * uvc_loop_free, so a late call from another thread cannot touch freed memory.  Lookups
 * still running in libuv's thread pool are not waited for: a thread of the core's waits for
 * them and then finishes closing the libuv loop (uvc_loop_free leaves the freeing to it). */
void uvc_loop_close(uvc_loop_t *L);
/* Free the struct (closing it first if needed). */
void uvc_loop_free(uvc_loop_t *L);

/* Run one libuv iteration.  timeout_ms < 0 blocks until an event, 0 only polls.
 * Returns how many events were recorded (see uvc_events()).  The arena and the event
 * array are valid until the next call. */
int uvc_run_once(uvc_loop_t *L, int64_t timeout_ms);
/* Copy the loop's counters into ``out``. */
void uvc_stats(uvc_loop_t *L, uvc_stats_t *out);
/* Python's time between two runs counted as a slow iteration (slow_callback_duration);
 * also called when a run starts, so the time the loop was not running is not counted. */
void uvc_set_slow_ms(uvc_loop_t *L, int64_t ms);
/* Test-only: sleep ``usec`` between arming the wake-up timer and running libuv in every
 * uvc_run_once with a positive timeout, so a test can make the timer fall due before libuv
 * polls (the window the timer callback's uv_stop closes). */
void uvc_test_set_arm_delay(uvc_loop_t *L, int64_t usec);
/* Test-only: in every uvc_wakeup that finds the loop open, write a byte to ``fd`` and then
 * sleep ``usec`` before waking the loop, so a test can close the loop inside that window
 * (the byte wakes it: a reader on the other end stops it). */
void uvc_test_set_wakeup_pause(uvc_loop_t *L, int fd, int64_t usec);
int64_t *uvc_events(uvc_loop_t *L);
/* Events the array holds before it must grow (and uvc_events() moves). */
int uvc_events_capacity(uvc_loop_t *L);
/* How many uvc_run_once calls have run libuv (uvc_stats' iterations), and how many events
 * the last of them recorded.  For an exception raised in Python as uvc_run_once returned
 * (a signal handler's: Ctrl-C's KeyboardInterrupt), before its return value was used:
 * Python keeps that run's events for the next run of the loop rather than lose them. */
uint64_t uvc_run_count(uvc_loop_t *L);
int uvc_event_count(uvc_loop_t *L);
char *uvc_arena(uvc_loop_t *L);
size_t uvc_arena_size(uvc_loop_t *L);
/* The loop's receive buffer, UVC_RECV_MAX bytes, for the reads Python makes itself
 * (sock_recv, and a stream's reads in read-into mode, uvc_stream_recv): each read is copied
 * out before the next one, so they share it.  NULL when out of memory. */
#define UVC_RECV_MAX 262144
char *uvc_recv_buffer(uvc_loop_t *L);
/* Copy ``len`` bytes of a read from the arena (at ``off``) to ``dst``.  Not just memcpy:
 * for large copies glibc uses REP MOVSB, which on AMD Zen runs ~16x slower when
 * (dst - src) mod 4096 is 1..63 (measured: 100 KiB in 34 us against 2 us), a distance a
 * protocol's fixed buffer meets on every read when reads are whole pages. */
void uvc_arena_copy(uvc_loop_t *L, int64_t off, char *dst, size_t len);

/* Wake a loop blocked in uvc_run_once from any thread (coalesced by libuv). */
int uvc_wakeup(uvc_loop_t *L);
/* The fd Python's signal.set_wakeup_fd() should write to; its bytes become UVC_EV_SIGNAL. */
int uvc_signal_fd(uvc_loop_t *L);
/* Test-only: libuv's epoll fd (tests read its registrations from /proc). */
int uvc_backend_fd(uvc_loop_t *L);
int uvc_loop_fork(uvc_loop_t *L);
/* Test-only: slots in use by handles Python opened (the loop's own fd set is not counted);
 * tests read it to see that every handle of theirs is gone. */
int uvc_active_slots(uvc_loop_t *L);

/* Close a handle slot (any kind).  Its UVC_EV_CLOSED event follows. */
int uvc_close(uvc_loop_t *L, int slot);
/* The fd behind a handle, or a negative uv error. */
int uvc_fileno(uvc_loop_t *L, int slot);

const char *uvc_strerror(int err);
unsigned int uvc_libuv_version(void);
/* cffi-end */

/* ---- for the C modules only (not part of the cffi interface) ---- */

/* Every handle struct starts with this header, followed (anywhere) by its uv handle. */
typedef struct uvc_base_s {
    uvc_loop_t *loop;
    uv_handle_t *handle;          /* points into the same allocation */
    int slot;
    void (*on_free)(struct uvc_base_s *);   /* extra cleanup before free(), may be NULL */
    int guard_fd;                 /* uvc_fdguard.h: the fd guarded for this slot, or -1 */
    int faulted;                  /* uvc_fdguard.h: cut off from libuv (its fd was closed) */
} uvc_base_t;

struct uvc_loop_s {
    uv_loop_t uv;
    uv_timer_t timer;             /* the one timer: wakes uv_run for the next Python timer */
    uv_async_t async;             /* call_soon_threadsafe */
    uv_poll_t signal_poll;        /* watches the read end of Python's signal wakeup fd */
    int signal_fds[2];

    int64_t *events;
    int nevents, events_cap;

    char *arena;
    size_t arena_used, arena_size;

    uvc_base_t **slots;
    int nslots;
    int *free_slots;              /* ready for reuse */
    int nfree;
    int *dead_slots;              /* freed during this run; reusable from the next run */
    int ndead, dead_cap;
    int active;
    int closed;                   /* set atomically: see uvc_wakeup */
    int wakers;                   /* uvc_wakeup calls under way (atomic) */
    int reaping;                  /* closed with lookups in flight: a thread finishes closing */
    int free_requested;           /* uvc_loop_free came while reaping: the thread frees */
    uvc_base_t *fdset;            /* uvc_fdset.c: the set of fds the loop does not own */
    int64_t polls;                /* uvc_run_once calls so far: the fd set stamps its events */
    char *recv_buffer;            /* uvc_recv_buffer (allocated on first use) */
    int64_t last_recv;            /* uvc_stream_recv's last result (uvc_stream_last_recv) */
    uvc_stats_t stats;
    uint64_t last_return_ms;      /* loop clock when uvc_run_once last returned (0: never) */
    uint64_t slow_ms;
    int64_t test_arm_delay_us;    /* uvc_test_set_arm_delay */
    int test_wakeup_fd;           /* uvc_test_set_wakeup_pause (0: off) */
    int64_t test_wakeup_pause_us;
    uv_prepare_t guard_prepare;   /* uvc_fdguard.c: runs just before libuv's poll */
    struct uvc_guard_entry *guard;  /* by fd */
    int guard_cap;
    int *guard_faults;            /* slots cut off outside uv_run, told at the next run */
    int nguard_faults, guard_faults_cap;
    /* uvc_stream.c: the writes streams hold until the end of an iteration (uvc_hold_writes) */
    int holding;                  /* Python runs the loop: small writes are held */
    uv_thread_t hold_thread;      /* the thread that runs it: only its writes are held */
    uv_pid_t hold_pid;            /* a forked child does not send its parent's held bytes */
    char *hold_buf;               /* their bytes, every stream's, reset by each flush */
    size_t hold_used, hold_cap;
    int *hold_slots;              /* the streams to look at when the iteration ends */
    int nhold, hold_cap_slots;
};

/* uvc_stream.c: send what the streams hold (uvc_hold_writes), and tell Python of the bytes
 * that had to be queued (UVC_EV_WRITE_QUEUED); uvc_run_once calls it before polling. */
void uvc_hold_flush_all(uvc_loop_t *L, int emit);
/* uvc_stream.c: forget every stream's held bytes (a forked child: its parent sends them). */
void uvc_hold_drop_all(uvc_loop_t *L);

/* Allocate a zeroed handle struct of `size` bytes whose uv handle lives at `handle`
 * offset; registers it in a slot.  Returns NULL when out of memory. */
void *uvc_handle_alloc(uvc_loop_t *L, size_t size, size_t handle_offset);
/* Free a handle that was allocated but never initialised by libuv (init failed). */
void uvc_handle_discard(void *h);
uvc_base_t *uvc_slot_get(uvc_loop_t *L, int slot);
void uvc_emit(uvc_loop_t *L, int kind, int slot, int64_t a, int64_t b, int64_t c);
/* libuv alloc_cb handing out arena space (zero bytes when full: libuv then reports
 * UV_ENOBUFS and the fd is read again on the next iteration). */
void uvc_arena_alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf);
/* Copy bytes into the arena; returns the offset or -1 when full. */
int64_t uvc_arena_put(uvc_loop_t *L, const void *data, size_t len);
/* Take ``len`` bytes from arena_used on.  Every claim starts on a cache line: the kernel
 * copies a read with REP MOVSB, slow when the destination lies 1..63 bytes past the source
 * modulo a page (see uvc_arena_copy), and socket data mostly starts on a cache line (a
 * 100 KiB recv measured 46 us into +16 bytes against 12 us into +0 or +64). */
void uvc_arena_claim(uvc_loop_t *L, size_t len);
/* The close callback every slot handle uses. */
void uvc_close_cb(uv_handle_t *handle);

#endif
