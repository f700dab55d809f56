/*
 * loadgen.c -- the load generator of `python -m uvcffi.bench`.
 *
 * Written in C on plain epoll so that the client costs a small, fixed amount of
 * CPU per round trip and can drive a server harder than any Python loop can:
 * the benchmark measures the server, not the client.  It is calibrated against
 * echo_floor.c (a trivial C server); when the client's own CPU is saturated it
 * says so (cpu= on the result line) and the harness marks the cell.
 *
 * Modes
 *   ping-pong (default): C connections, one request in flight on each; a
 *     request is SIZE bytes sent, and it is done when SIZE bytes came back.
 *     Warm up for W seconds, then print "start", measure for D seconds,
 *     print "stop" and one "result ..." line.  The harness reads the server's
 *     own CPU accounting between "start" and "stop".
 *   idle (-i): open C connections (a window of them at a time so the server's
 *     backlog never overflows), prove each one with a 1-byte echo, print
 *     "connected N", then wait for a line or EOF on stdin and close them all
 *     with RST (so no TIME_WAIT piles up on the client between runs).
 *
 * Transports: -t tcp (-a HOST:PORT), -t unix (-a PATH), -t udp (-a HOST:PORT).
 * For UDP a lost datagram is resent after 200 ms (counted as "lost"); each
 * datagram carries a sequence number so that a late reply is not miscounted.
 *
 * Every phase is bounded in time (-T, default 60 s), so nothing can hang.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

enum { T_TCP, T_UNIX, T_UDP };

typedef struct {
    int fd;
    int state;       /* ping-pong: 0 sending/receiving; idle: see IDLE_* */
    size_t sent;     /* bytes of the current request written */
    size_t rcvd;     /* bytes of the current reply read */
    uint64_t t0;     /* when the current request started (ns) */
    uint32_t seq;    /* UDP: sequence number of the datagram in flight */
    int want_out;    /* EPOLLOUT currently requested */
} conn_t;

static int g_type = T_TCP;
static const char *g_addr = "127.0.0.1:0";
static int g_conns = 10;
static size_t g_size = 1024;
static double g_warm = 0.5, g_dur = 2.0, g_timeout = 60.0;
static int g_idle = 0;
static int g_window = 128;

static struct sockaddr_storage g_sa;
static socklen_t g_salen;

static char *g_payload;
static char *g_rbuf;
#define RBUF_SIZE (256 * 1024)

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static long g_nivcsw; /* involuntary context switches at the last cpu_secs() */

static double cpu_secs(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    g_nivcsw = ru.ru_nivcsw;
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void die(const char *what) {
    printf("error %s: %s\n", what, strerror(errno));
    fflush(stdout);
    exit(2);
}

static void parse_addr(void) {
    memset(&g_sa, 0, sizeof g_sa);
    if (g_type == T_UNIX) {
        struct sockaddr_un *un = (struct sockaddr_un *)&g_sa;
        un->sun_family = AF_UNIX;
        if (strlen(g_addr) >= sizeof un->sun_path) {
            printf("error unix path too long\n");
            exit(2);
        }
        strcpy(un->sun_path, g_addr);
        g_salen = sizeof *un;
        return;
    }
    char host[64];
    const char *colon = strrchr(g_addr, ':');
    if (!colon || (size_t)(colon - g_addr) >= sizeof host) {
        printf("error bad address %s\n", g_addr);
        exit(2);
    }
    memcpy(host, g_addr, colon - g_addr);
    host[colon - g_addr] = 0;
    struct sockaddr_in *in = (struct sockaddr_in *)&g_sa;
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)atoi(colon + 1));
    /* Traffic stays on this machine: only loopback addresses are accepted. */
    if (inet_pton(AF_INET, host, &in->sin_addr) != 1 ||
        (ntohl(in->sin_addr.s_addr) >> 24) != 127) {
        printf("error only 127.0.0.0/8 addresses are allowed, got %s\n", host);
        exit(2);
    }
    g_salen = sizeof *in;
}

static void raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int new_socket(void) {
    int dom = g_type == T_UNIX ? AF_UNIX : AF_INET;
    int typ = g_type == T_UDP ? SOCK_DGRAM : SOCK_STREAM;
    int fd = socket(dom, typ | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (g_type == T_TCP) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

static void set_events(int ep, conn_t *c, int want_out) {
    if (c->want_out == want_out) return;
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = want_out;
}

/* ------------------------------------------------------------------ */
/* ping-pong                                                           */

static uint64_t *g_lat;     /* latencies (ns) of requests completed in the window */
static size_t g_nlat, g_caplat;
static int g_measuring;
static uint64_t g_rt_window, g_lost;

static void record(uint64_t ns) {
    if (!g_measuring) return;
    g_rt_window++;
    if (g_nlat == g_caplat) {
        g_caplat = g_caplat ? g_caplat * 2 : 65536;
        g_lat = realloc(g_lat, g_caplat * sizeof *g_lat);
        if (!g_lat) die("realloc");
    }
    g_lat[g_nlat++] = ns;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Write as much of the request as the socket takes.  Returns -1 on error. */
static int pump_send(int ep, conn_t *c) {
    if (g_type == T_UDP) {
        memcpy(g_payload, &c->seq, sizeof c->seq);
        ssize_t n = send(c->fd, g_payload, g_size, 0);
        if (n < 0 && errno != EAGAIN && errno != ENOBUFS) return -1;
        c->sent = g_size; /* if the send was dropped, the resend timer covers it */
        return 0;
    }
    while (c->sent < g_size) {
        ssize_t n = send(c->fd, g_payload + c->sent, g_size - c->sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN) break;
            if (errno == EINTR) continue;
            return -1;
        }
        c->sent += (size_t)n;
    }
    set_events(ep, c, c->sent < g_size);
    return 0;
}

static int start_request(int ep, conn_t *c, uint64_t t) {
    c->sent = c->rcvd = 0;
    c->t0 = t;
    c->seq++;
    return pump_send(ep, c);
}

static int on_readable(int ep, conn_t *c) {
    /* MSG_TRUNC on TCP discards the bytes in the kernel without copying them
     * out: the client only needs to count the echo, not look at it.  At
     * 100 KiB this more than doubles what one client CPU can drive (measured:
     * the C floor went from 47% to 99% busy).  sendfile() for the sending
     * side was tried too and made things slower. */
    int rflags = g_type == T_TCP ? MSG_TRUNC : 0;
    for (;;) {
        ssize_t n = recv(c->fd, g_rbuf, RBUF_SIZE, rflags);
        if (n < 0) {
            if (errno == EAGAIN) return 0;
            if (errno == EINTR) continue;
            return -1;
        }
        if (n == 0) {
            errno = ECONNRESET;
            return -1;
        }
        if (g_type == T_UDP) {
            uint32_t seq;
            if ((size_t)n != g_size) continue;
            memcpy(&seq, g_rbuf, sizeof seq);
            if (seq != c->seq) continue; /* a late reply to a resent datagram */
            uint64_t t = now_ns();
            record(t - c->t0);
            if (start_request(ep, c, t) < 0) return -1;
            continue;
        }
        c->rcvd += (size_t)n;
        if (c->rcvd > g_size) {
            errno = EPROTO; /* the server sent more than was asked */
            return -1;
        }
        if (c->rcvd == g_size && c->sent == g_size) {
            uint64_t t = now_ns();
            record(t - c->t0);
            if (start_request(ep, c, t) < 0) return -1;
        }
    }
}

static int run_pingpong(void) {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    conn_t *cs = calloc((size_t)g_conns, sizeof *cs);
    uint64_t deadline = now_ns() + (uint64_t)(g_timeout * 1e9);
    for (int i = 0; i < g_conns; i++) {
        conn_t *c = &cs[i];
        c->fd = new_socket();
        if (c->fd < 0) die("socket");
        if (connect(c->fd, (struct sockaddr *)&g_sa, g_salen) < 0 && errno != EINPROGRESS)
            die("connect");
        /* Wait for the handshake (TCP/unix) so the first request isn't lost. */
        if (g_type != T_UDP) {
            struct pollfd p = {.fd = c->fd, .events = POLLOUT};
            int r = poll(&p, 1, 10000);
            int err = 0;
            socklen_t el = sizeof err;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
            if (r <= 0 || err) {
                errno = r <= 0 ? ETIMEDOUT : err;
                die("connect");
            }
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    }
    uint64_t t_begin = now_ns();
    for (int i = 0; i < g_conns; i++)
        if (start_request(ep, &cs[i], t_begin) < 0) die("send");

    uint64_t t_start = t_begin + (uint64_t)(g_warm * 1e9);
    uint64_t t_stop = t_start + (uint64_t)(g_dur * 1e9);
    uint64_t m_start = 0, m_stop = 0;
    double cpu0 = 0, cpu1 = 0;
    long ivcsw0 = 0;
    struct epoll_event evs[256];
    const char *fail = NULL;
    int fail_errno = 0;

    for (;;) {
        uint64_t t = now_ns();
        if (!g_measuring && !m_start && t >= t_start) {
            g_measuring = 1;
            m_start = t;
            cpu0 = cpu_secs();
            ivcsw0 = g_nivcsw;
            printf("start\n");
            fflush(stdout);
        }
        if (g_measuring && t >= t_stop) {
            g_measuring = 0;
            m_stop = t;
            cpu1 = cpu_secs();
            printf("stop\n");
            fflush(stdout);
            break;
        }
        if (t >= deadline) {
            fail = "timeout";
            break;
        }
        if (g_type == T_UDP) {
            /* Resend a datagram that has been waiting for 200 ms. */
            for (int i = 0; i < g_conns; i++)
                if (t - cs[i].t0 > 200000000ull) {
                    g_lost++;
                    cs[i].t0 = t;
                    pump_send(ep, &cs[i]);
                }
        }
        uint64_t next = g_measuring ? t_stop : t_start;
        int ms = next > t ? (int)((next - t) / 1000000ull) + 1 : 0;
        if (ms > 50) ms = 50;
        int n = epoll_wait(ep, evs, 256, ms);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                if (on_readable(ep, c) < 0) {
                    fail = "recv";
                    fail_errno = errno;
                    break;
                }
            }
            if ((evs[i].events & EPOLLOUT) && c->sent < g_size) {
                if (pump_send(ep, c) < 0) {
                    fail = "send";
                    fail_errno = errno;
                    break;
                }
            }
        }
        if (fail) break;
    }
    if (fail) {
        printf("error %s: %s (after %llu round trips in the window)\n", fail,
               fail_errno ? strerror(fail_errno) : "no reply in time",
               (unsigned long long)g_rt_window);
        fflush(stdout);
        return 2;
    }
    double secs = (m_stop - m_start) / 1e9;
    double p50 = 0, p99 = 0, mean = 0;
    if (g_nlat) {
        qsort(g_lat, g_nlat, sizeof *g_lat, cmp_u64);
        p50 = g_lat[g_nlat / 2] / 1e3;
        p99 = g_lat[(size_t)((g_nlat - 1) * 0.99)] / 1e3;
        double s = 0;
        for (size_t i = 0; i < g_nlat; i++) s += g_lat[i];
        mean = s / g_nlat / 1e3;
    }
    printf("result rt=%llu secs=%.6f p50_us=%.2f p99_us=%.2f mean_us=%.2f lost=%llu cpu=%.4f"
           " nivcsw=%ld\n",
           (unsigned long long)g_rt_window, secs, p50, p99, mean,
           (unsigned long long)g_lost, secs > 0 ? (cpu1 - cpu0) / secs : 0.0, g_nivcsw - ivcsw0);
    fflush(stdout);
    /* RST instead of FIN: no TIME_WAIT left behind on the client side. */
    struct linger lg = {1, 0};
    for (int i = 0; i < g_conns; i++) {
        if (g_type == T_TCP) setsockopt(cs[i].fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(cs[i].fd);
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* idle connections (memory per connection)                            */

enum { IDLE_NEW, IDLE_CONNECTING, IDLE_PINGED, IDLE_DONE };

static int run_idle(void) {
    raise_nofile();
    int ep = epoll_create1(EPOLL_CLOEXEC);
    conn_t *cs = calloc((size_t)g_conns, sizeof *cs);
    uint64_t t_begin = now_ns();
    uint64_t deadline = t_begin + (uint64_t)(g_timeout * 1e9);
    int next = 0, inflight = 0, done = 0, done_before = 0;
    /* A server that accepts but never answers would otherwise cost the whole
     * -T timeout: give up after 10 s without a single new connection done. */
    uint64_t last_progress = t_begin;
    struct epoll_event evs[256];
    const char *fail = NULL;
    int fail_errno = 0;
    while (done < g_conns) {
        while (inflight < g_window && next < g_conns) {
            conn_t *c = &cs[next++];
            c->fd = new_socket();
            if (c->fd < 0) {
                fail = "socket";
                fail_errno = errno;
                break;
            }
            if (connect(c->fd, (struct sockaddr *)&g_sa, g_salen) < 0 && errno != EINPROGRESS) {
                fail = "connect";
                fail_errno = errno;
                break;
            }
            c->state = IDLE_CONNECTING;
            struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
            epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
            inflight++;
        }
        if (fail) break;
        uint64_t t = now_ns();
        if (done != done_before) {
            done_before = done;
            last_progress = t;
        }
        if (t >= deadline || t - last_progress > 10000000000ull) {
            fail = "timeout";
            break;
        }
        int n = epoll_wait(ep, evs, 256, 50);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < n && !fail; i++) {
            conn_t *c = evs[i].data.ptr;
            if (c->state == IDLE_CONNECTING) {
                int err = 0;
                socklen_t el = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err) {
                    fail = "connect";
                    fail_errno = err;
                    break;
                }
                if (send(c->fd, "x", 1, MSG_NOSIGNAL) != 1) {
                    fail = "send";
                    fail_errno = errno;
                    break;
                }
                c->state = IDLE_PINGED;
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            } else if (c->state == IDLE_PINGED) {
                char b;
                ssize_t r = recv(c->fd, &b, 1, 0);
                if (r == 1) {
                    c->state = IDLE_DONE;
                    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                    inflight--;
                    done++;
                } else if (r == 0 || errno != EAGAIN) {
                    fail = "recv";
                    fail_errno = r == 0 ? ECONNRESET : errno;
                    break;
                }
            }
        }
        if (fail) break;
    }
    if (fail)
        printf("error %s: %s (connected %d of %d)\n", fail,
               fail_errno ? strerror(fail_errno) : "not all connected in time", done, g_conns);
    else
        printf("connected %d secs=%.3f\n", done, (now_ns() - t_begin) / 1e9);
    fflush(stdout);
    if (!fail) {
        /* Hold the connections until the harness has read the server's RSS. */
        struct pollfd p = {.fd = 0, .events = POLLIN};
        poll(&p, 1, (int)(g_timeout * 1000));
    }
    struct linger lg = {1, 0};
    for (int i = 0; i < next; i++) {
        if (cs[i].fd > 0) {
            setsockopt(cs[i].fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            close(cs[i].fd);
        }
    }
    return fail ? 2 : 0;
}

int main(int argc, char **argv) {
    int opt;
    while ((opt = getopt(argc, argv, "t:a:c:s:w:d:T:iW:")) != -1) {
        switch (opt) {
        case 't':
            g_type = !strcmp(optarg, "unix") ? T_UNIX : !strcmp(optarg, "udp") ? T_UDP : T_TCP;
            break;
        case 'a': g_addr = optarg; break;
        case 'c': g_conns = atoi(optarg); break;
        case 's': g_size = (size_t)atol(optarg); break;
        case 'w': g_warm = atof(optarg); break;
        case 'd': g_dur = atof(optarg); break;
        case 'T': g_timeout = atof(optarg); break;
        case 'i': g_idle = 1; break;
        case 'W': g_window = atoi(optarg); break;
        default:
            fprintf(stderr, "usage: loadgen -t tcp|unix|udp -a ADDR [-c CONNS] [-s SIZE] "
                            "[-w WARMUP] [-d SECS] [-T TIMEOUT] [-i [-W WINDOW]]\n");
            return 64;
        }
    }
    if (g_conns < 1 || g_size < 8 || g_window < 1) {
        fprintf(stderr, "loadgen: need -c >= 1, -s >= 8, -W >= 1\n");
        return 64;
    }
    parse_addr();
    g_payload = malloc(g_size);
    g_rbuf = malloc(RBUF_SIZE);
    for (size_t i = 0; i < g_size; i++) g_payload[i] = (char)('a' + i % 26);
    if (g_idle) return run_idle();
    return run_pingpong();
}
