/*
 * tls_loadgen.c -- the TLS load generator of `python -m uvcffi.bench`.
 *
 * The ping-pong mode of loadgen.c over TLS (OpenSSL): C connections, one request of SIZE
 * bytes in flight on each, done when SIZE bytes came back.  One thread per connection
 * with blocking I/O keeps it short; the threads share the CPU the harness pins this
 * process to.  It speaks loadgen.c's protocol on stdout: "start", "stop", then one
 * "result rt=... secs=... p50_us=... p99_us=... mean_us=... lost=0 cpu=... nivcsw=..."
 * line, or "error <reason>".  The server's certificate is not verified (it is a
 * throwaway self-signed one).
 *
 *   tls_loadgen -a 127.0.0.1:PORT [-c CONNS] [-s SIZE] [-w WARM] [-d SECS] [-T TIMEOUT]
 *
 * Build: cc -O2 -o tls_loadgen tls_loadgen.c -lssl -lcrypto -pthread
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_LAT (1 << 20) /* latencies kept per connection in the window */

typedef struct {
    pthread_t thread;
    int fd;
    SSL *ssl;
    uint64_t rt;      /* round trips completed inside the window */
    uint64_t *lat;    /* their latencies (ns), up to MAX_LAT */
    size_t nlat;
    const char *fail; /* what went wrong, or NULL */
} conn_t;

static struct sockaddr_in g_addr;
static int g_conns = 10;
static size_t g_size = 1024;
static double g_warm = 0.5, g_dur = 1.0, g_timeout = 60.0;
static SSL_CTX *g_ctx;
static atomic_int g_measuring, g_stopping, g_connected;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double cpu_secs(long *nivcsw) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    if (nivcsw)
        *nivcsw = ru.ru_nivcsw;
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int conn_open(conn_t *c) {
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0)
        return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* Blocking I/O bounded in time: a stalled server cannot hang the benchmark. */
    struct timeval tv = {(time_t)g_timeout, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(c->fd, (struct sockaddr *)&g_addr, sizeof g_addr) < 0)
        return -1;
    c->ssl = SSL_new(g_ctx);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1 || SSL_connect(c->ssl) != 1)
        return -1;
    return 0;
}

static void *conn_run(void *arg) {
    conn_t *c = arg;
    char *buf = malloc(g_size), *got = malloc(g_size);
    if (buf == NULL || got == NULL) {
        c->fail = "out of memory";
        return NULL;
    }
    memset(buf, 'x', g_size);
    if (conn_open(c) < 0) {
        c->fail = "connect or TLS handshake failed";
        atomic_fetch_add(&g_connected, 1);
        return NULL;
    }
    atomic_fetch_add(&g_connected, 1);
    while (!atomic_load(&g_stopping)) {
        uint64_t t0 = now_ns();
        int measuring = atomic_load(&g_measuring);
        if (SSL_write(c->ssl, buf, (int)g_size) != (int)g_size) {
            c->fail = "TLS write failed";
            break;
        }
        size_t n = 0;
        while (n < g_size) {
            int r = SSL_read(c->ssl, got + n, (int)(g_size - n));
            if (r <= 0) {
                c->fail = "TLS read failed (no reply in time?)";
                break;
            }
            n += (size_t)r;
        }
        if (c->fail)
            break;
        /* A round trip counts when it started and ended inside the window. */
        if (measuring && atomic_load(&g_measuring)) {
            c->rt++;
            if (c->nlat < MAX_LAT)
                c->lat[c->nlat++] = now_ns() - t0;
        }
    }
    free(buf);
    free(got);
    return NULL;
}

static int parse_addr(const char *text) {
    char host[64];
    const char *colon = strrchr(text, ':');
    if (colon == NULL || (size_t)(colon - text) >= sizeof host)
        return -1;
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = 0;
    if (strncmp(host, "127.", 4) != 0)
        return -1; /* loopback only, as loadgen.c */
    memset(&g_addr, 0, sizeof g_addr);
    g_addr.sin_family = AF_INET;
    g_addr.sin_port = htons((uint16_t)atoi(colon + 1));
    return inet_pton(AF_INET, host, &g_addr.sin_addr) == 1 ? 0 : -1;
}

static void sleep_secs(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

int main(int argc, char **argv) {
    const char *addr = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "a:c:s:w:d:T:")) != -1) {
        switch (opt) {
        case 'a': addr = optarg; break;
        case 'c': g_conns = atoi(optarg); break;
        case 's': g_size = (size_t)atol(optarg); break;
        case 'w': g_warm = atof(optarg); break;
        case 'd': g_dur = atof(optarg); break;
        case 'T': g_timeout = atof(optarg); break;
        default:
            fprintf(stderr, "usage: tls_loadgen -a HOST:PORT [-c CONNS] [-s SIZE] [-w WARM] "
                            "[-d SECS] [-T TIMEOUT]\n");
            return 2;
        }
    }
    if (addr == NULL || parse_addr(addr) < 0 || g_conns < 1 || g_size < 1) {
        printf("error bad arguments (a 127.x.x.x:PORT address, -c >= 1, -s >= 1)\n");
        fflush(stdout);
        return 2;
    }
    /* The connections are shut down under threads that may be writing: EPIPE, not death. */
    signal(SIGPIPE, SIG_IGN);
    g_ctx = SSL_CTX_new(TLS_client_method());
    if (g_ctx == NULL) {
        printf("error cannot make an OpenSSL context\n");
        fflush(stdout);
        return 2;
    }
    SSL_CTX_set_verify(g_ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_mode(g_ctx, SSL_MODE_AUTO_RETRY);

    conn_t *cs = calloc((size_t)g_conns, sizeof *cs);
    for (int i = 0; i < g_conns; i++) {
        cs[i].lat = malloc(sizeof(uint64_t) * MAX_LAT);
        if (cs[i].lat == NULL || pthread_create(&cs[i].thread, NULL, conn_run, &cs[i]) != 0) {
            printf("error cannot start connection %d\n", i);
            fflush(stdout);
            return 2;
        }
    }
    uint64_t deadline = now_ns() + (uint64_t)(g_timeout * 1e9);
    while (atomic_load(&g_connected) < g_conns && now_ns() < deadline)
        sleep_secs(0.005);
    const char *fail = NULL;
    for (int i = 0; i < g_conns && !fail; i++)
        fail = cs[i].fail;
    if (!fail && atomic_load(&g_connected) < g_conns)
        fail = "connections not made in time";

    long ivcsw0 = 0, ivcsw1 = 0;
    double cpu0 = 0, cpu1 = 0, secs = 0;
    if (!fail) {
        sleep_secs(g_warm);
        uint64_t m0 = now_ns();
        cpu0 = cpu_secs(&ivcsw0);
        atomic_store(&g_measuring, 1);
        printf("start\n");
        fflush(stdout);
        sleep_secs(g_dur);
        atomic_store(&g_measuring, 0);
        secs = (now_ns() - m0) / 1e9;
        cpu1 = cpu_secs(&ivcsw1);
        printf("stop\n");
        fflush(stdout);
    }
    atomic_store(&g_stopping, 1);
    for (int i = 0; i < g_conns; i++) {
        if (cs[i].ssl != NULL)
            shutdown(cs[i].fd, SHUT_RDWR); /* wakes a thread blocked in a read */
        pthread_join(cs[i].thread, NULL);
        if (!fail && cs[i].fail && cs[i].rt == 0)
            fail = cs[i].fail;
    }
    if (fail) {
        printf("error %s\n", fail);
        fflush(stdout);
        return 2;
    }
    uint64_t rt = 0;
    size_t nlat = 0;
    for (int i = 0; i < g_conns; i++) {
        rt += cs[i].rt;
        nlat += cs[i].nlat;
    }
    uint64_t *lat = malloc(sizeof(uint64_t) * (nlat ? nlat : 1));
    size_t k = 0;
    for (int i = 0; i < g_conns; i++) {
        memcpy(lat + k, cs[i].lat, sizeof(uint64_t) * cs[i].nlat);
        k += cs[i].nlat;
    }
    double p50 = 0, p99 = 0, mean = 0;
    if (nlat) {
        qsort(lat, nlat, sizeof *lat, cmp_u64);
        p50 = lat[nlat / 2] / 1e3;
        p99 = lat[(size_t)((nlat - 1) * 0.99)] / 1e3;
        double s = 0;
        for (size_t i = 0; i < nlat; i++)
            s += lat[i];
        mean = s / nlat / 1e3;
    }
    printf("result rt=%llu secs=%.6f p50_us=%.2f p99_us=%.2f mean_us=%.2f lost=0 cpu=%.4f"
           " nivcsw=%ld\n",
           (unsigned long long)rt, secs, p50, p99, mean, secs > 0 ? (cpu1 - cpu0) / secs : 0.0,
           ivcsw1 - ivcsw0);
    fflush(stdout);
    return 0;
}
