/*
 * echo_floor.c -- the "C floor" of `python -m uvcffi.bench`.
 *
 * A single-threaded, level-triggered epoll echo server with nothing in it but
 * the system calls an echo needs.  Two uses:
 *   - calibration: if the load generator cannot push this server to 100% of
 *     its CPU, the client (not the server) is the limit, and loops that come
 *     close to the floor's round trips/s are marked client-bound;
 *   - a reference row: its CPU per round trip is the floor no loop can beat
 *     (nearly all of it kernel time).
 *
 * It speaks the same control protocol on stdin/stdout as server.py, so the
 * harness drives both alike:
 *   prints "READY <port|path>" once listening;
 *   stdin "start" -> snapshot getrusage(RUSAGE_SELF);
 *   stdin "stop"  -> print "RUSAGE <utime> <stime> <wall> <nivcsw>" since "start"
 *                    (nivcsw: involuntary context switches, i.e. CPU contention);
 *   stdin "rss"   -> print "RSS <bytes>";
 *   stdin "quit" or EOF -> exit.
 *
 * usage: echo_floor -t tcp|unix|udp [-a HOST:PORT|PATH]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define BUF (256 * 1024)

typedef struct {
    int fd;
    char *pend; /* unsent tail of the last read, when the socket was full */
    size_t plen, poff;
} conn_t;

static int g_ep, g_lfd, g_type; /* 0 tcp, 1 unix, 2 udp */
static char g_buf[BUF];
static struct rusage g_ru0;
static struct timespec g_t0;

static double tv(struct timeval t) { return t.tv_sec + t.tv_usec / 1e6; }

static void ctl_line(char *line) {
    if (!strncmp(line, "start", 5)) {
        getrusage(RUSAGE_SELF, &g_ru0);
        clock_gettime(CLOCK_MONOTONIC, &g_t0);
    } else if (!strncmp(line, "stop", 4)) {
        struct rusage ru;
        struct timespec t1;
        getrusage(RUSAGE_SELF, &ru);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        printf("RUSAGE %.6f %.6f %.6f %ld\n", tv(ru.ru_utime) - tv(g_ru0.ru_utime),
               tv(ru.ru_stime) - tv(g_ru0.ru_stime),
               (t1.tv_sec - g_t0.tv_sec) + (t1.tv_nsec - g_t0.tv_nsec) / 1e9,
               ru.ru_nivcsw - g_ru0.ru_nivcsw);
    } else if (!strncmp(line, "rss", 3)) {
        long pages = 0, res = 0;
        FILE *f = fopen("/proc/self/statm", "r");
        if (f) {
            if (fscanf(f, "%ld %ld", &pages, &res) != 2) res = 0;
            fclose(f);
        }
        printf("RSS %ld\n", res * sysconf(_SC_PAGESIZE));
    } else if (!strncmp(line, "quit", 4)) {
        exit(0);
    }
    fflush(stdout);
}

static void on_stdin(void) {
    static char acc[256];
    static size_t len;
    ssize_t n = read(0, acc + len, sizeof acc - 1 - len);
    if (n <= 0) exit(0);
    len += (size_t)n;
    acc[len] = 0;
    char *nl;
    while ((nl = strchr(acc, '\n'))) {
        *nl = 0;
        ctl_line(acc);
        len -= (size_t)(nl + 1 - acc);
        memmove(acc, nl + 1, len + 1);
    }
    if (len == sizeof acc - 1) len = 0;
}

static void drop(conn_t *c) {
    epoll_ctl(g_ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->pend);
    free(c);
}

static void on_conn(conn_t *c, unsigned events) {
    if (c->plen) { /* flush the tail first; reading waits until it is gone */
        ssize_t n = send(c->fd, c->pend + c->poff, c->plen - c->poff, MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN) return drop(c);
        if (n > 0) c->poff += (size_t)n;
        if (c->poff < c->plen) return;
        c->plen = c->poff = 0;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &ev);
        return;
    }
    (void)events;
    ssize_t n = recv(c->fd, g_buf, BUF, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN)) return drop(c);
    if (n < 0) return;
    ssize_t w = send(c->fd, g_buf, (size_t)n, MSG_NOSIGNAL);
    if (w < 0 && errno != EAGAIN) return drop(c);
    if (w < 0) w = 0;
    if (w < n) {
        c->pend = realloc(c->pend, (size_t)(n - w));
        memcpy(c->pend, g_buf + w, (size_t)(n - w));
        c->plen = (size_t)(n - w);
        c->poff = 0;
        struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
        epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
}

static void on_udp(void) {
    for (;;) {
        struct sockaddr_storage sa;
        socklen_t sl = sizeof sa;
        ssize_t n = recvfrom(g_lfd, g_buf, BUF, 0, (struct sockaddr *)&sa, &sl);
        if (n < 0) return;
        sendto(g_lfd, g_buf, (size_t)n, 0, (struct sockaddr *)&sa, sl);
    }
}

static void on_accept(void) {
    for (;;) {
        int fd = accept4(g_lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        if (g_type == 0) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        conn_t *c = calloc(1, sizeof *c);
        c->fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(g_ep, EPOLL_CTL_ADD, fd, &ev);
    }
}

int main(int argc, char **argv) {
    const char *addr = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "t:a:")) != -1) {
        if (opt == 't') g_type = !strcmp(optarg, "unix") ? 1 : !strcmp(optarg, "udp") ? 2 : 0;
        else if (opt == 'a') addr = optarg;
        else return 64;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    char where[200];
    if (g_type == 1) {
        if (!addr) return 64;
        struct sockaddr_un un = {.sun_family = AF_UNIX};
        snprintf(un.sun_path, sizeof un.sun_path, "%s", addr);
        unlink(addr);
        g_lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (bind(g_lfd, (struct sockaddr *)&un, sizeof un) < 0) { perror("bind"); return 1; }
        snprintf(where, sizeof where, "%s", addr);
    } else {
        struct sockaddr_in in = {.sin_family = AF_INET};
        in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        g_lfd = socket(AF_INET, (g_type == 2 ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;
        setsockopt(g_lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(g_lfd, (struct sockaddr *)&in, sizeof in) < 0) { perror("bind"); return 1; }
        socklen_t sl = sizeof in;
        getsockname(g_lfd, (struct sockaddr *)&in, &sl);
        snprintf(where, sizeof where, "%d", ntohs(in.sin_port));
    }
    if (g_type != 2 && listen(g_lfd, 4096) < 0) { perror("listen"); return 1; }
    g_ep = epoll_create1(EPOLL_CLOEXEC);
    /* data.ptr NULL marks the listener, &g_lfd marks stdin. */
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(g_ep, EPOLL_CTL_ADD, g_lfd, &ev);
    struct epoll_event evi = {.events = EPOLLIN, .data.ptr = &g_lfd};
    epoll_ctl(g_ep, EPOLL_CTL_ADD, 0, &evi);
    printf("READY %s\n", where);
    fflush(stdout);
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(g_ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == NULL) {
                if (g_type == 2) on_udp();
                else on_accept();
            } else if (p == &g_lfd) {
                on_stdin();
            } else {
                on_conn(p, evs[i].events);
            }
        }
    }
}
