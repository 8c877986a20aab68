/*
 * Socketmap load generator (and a trivial echo socketmap server to measure its own ceiling).
 *
 * Why C: a Python client spends about as much CPU per request as the daemons under test, so on
 * a 2-core machine it would measure itself. One thread, epoll, non-blocking sockets; every
 * connection sends one request and waits for its reply before the next (as Postfix's
 * dict_sockmap does). Latency of every answer is recorded; a JSON summary goes to stdout.
 *
 *   loadgen client HOST PORT CONNS KEYFILE MODE ARG [MAPNAME]
 *     MODE "time": run ARG seconds, cycling through the keys (each connection starts at its
 *                  own offset); MODE "once": every key is sent exactly once, keys dealt round
 *                  robin to the connections; MODE "each": every connection sends every key once.
 *   loadgen echo HOST PORT   answers every request with a fixed OK reply, forever.
 *
 * With LOADGEN_TRACE=FILE in the environment the client also writes one line per answer to
 * FILE, in the order answers came: when its request was sent (µs after the start) and its
 * latency (µs); which answers are the slow ones says more than a percentile.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF 65536

typedef struct {
    int fd;
    size_t next;      /* index into the key list */
    size_t step;      /* "once": stride between this connection's keys */
    uint64_t sent_at; /* ns, 0 when idle */
    char in[BUF];
    size_t in_len;
    int done;
} conn_t;

static char **keys;
static size_t nkeys;
static const char *mapname = "postfix";
static uint64_t *lat;
static size_t nlat, caplat;
static uint64_t n_ok, n_notfound, n_other;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void load_keys(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) die(path);
    size_t cap = 1024;
    keys = malloc(cap * sizeof *keys);
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (!*line) continue;
        if (nkeys == cap) keys = realloc(keys, (cap *= 2) * sizeof *keys);
        keys[nkeys++] = strdup(line);
    }
    fclose(f);
    if (!nkeys) {
        fprintf(stderr, "no keys in %s\n", path);
        exit(2);
    }
}

static int connect_to(const char *host, int port) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) die("inet_pton");
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect");
    return fd;
}

static void write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            die("write");
        }
        p += w;
        n -= (size_t)w;
    }
}

static void send_request(conn_t *c) {
    char msg[2048], frame[2100];
    int len = snprintf(msg, sizeof msg, "%s %s", mapname, keys[c->next % nkeys]);
    int flen = snprintf(frame, sizeof frame, "%d:%s,", len, msg);
    c->sent_at = now_ns();
    write_all(c->fd, frame, (size_t)flen);
}

/* Returns the length of a complete netstring at the start of buf (payload at *payload), or 0. */
static size_t parse_netstring(const char *buf, size_t n, const char **payload, size_t *plen) {
    size_t i = 0, len = 0;
    while (i < n && buf[i] >= '0' && buf[i] <= '9') len = len * 10 + (size_t)(buf[i++] - '0');
    if (i == n) return 0;
    if (buf[i] != ':') {
        fprintf(stderr, "bad netstring from server\n");
        exit(3);
    }
    if (n < i + 1 + len + 1) return 0;
    *payload = buf + i + 1;
    *plen = len;
    return i + 1 + len + 1;
}

static uint64_t *sent_offsets; /* per answer, parallel to lat (before sorting): for the trace */

static void record(uint64_t ns, uint64_t sent_offset, const char *payload, size_t plen) {
    if (nlat == caplat) {
        caplat = caplat ? caplat * 2 : 1 << 20;
        lat = realloc(lat, caplat * sizeof *lat);
        sent_offsets = realloc(sent_offsets, caplat * sizeof *sent_offsets);
    }
    sent_offsets[nlat] = sent_offset;
    lat[nlat++] = ns;
    if (plen >= 2 && !memcmp(payload, "OK", 2))
        n_ok++;
    else if (plen >= 8 && !memcmp(payload, "NOTFOUND", 8))
        n_notfound++;
    else
        n_other++;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(double p) {
    if (!nlat) return 0;
    size_t i = (size_t)(p * (double)(nlat - 1) + 0.5);
    return (double)lat[i] / 1000.0;
}

static int run_client(const char *host, int port, int nconn, const char *keyfile, const char *mode,
                      double seconds) {
    load_keys(keyfile);
    int once = !strcmp(mode, "once"), each = !strcmp(mode, "each");
    int ep = epoll_create1(0);
    conn_t *conns = calloc((size_t)nconn, sizeof *conns);
    int active = 0;
    uint64_t start = now_ns();
    uint64_t deadline = start + (uint64_t)(seconds * 1e9);
    for (int i = 0; i < nconn; i++) {
        conn_t *c = &conns[i];
        c->fd = connect_to(host, port);
        c->step = once ? (size_t)nconn : 1;
        c->next = once ? (size_t)i : each ? 0 : ((size_t)i * nkeys) / (size_t)nconn;
        if (once && c->next >= nkeys) {
            c->done = 1;
            continue;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
        active++;
    }
    start = now_ns();
    deadline = start + (uint64_t)(seconds * 1e9);
    for (int i = 0; i < nconn; i++)
        if (!conns[i].done) send_request(&conns[i]);
    struct epoll_event evs[256];
    while (active > 0) {
        int n = epoll_wait(ep, evs, 256, 1000);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int e = 0; e < n; e++) {
            conn_t *c = evs[e].data.ptr;
            ssize_t r = read(c->fd, c->in + c->in_len, BUF - c->in_len);
            if (r <= 0) {
                if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
                fprintf(stderr, "server closed a connection\n");
                exit(3);
            }
            c->in_len += (size_t)r;
            const char *payload;
            size_t plen, used;
            while ((used = parse_netstring(c->in, c->in_len, &payload, &plen))) {
                uint64_t t = now_ns();
                record(t - c->sent_at, c->sent_at - start, payload, plen);
                memmove(c->in, c->in + used, c->in_len - used);
                c->in_len -= used;
                c->next += c->step;
                int finished = (once || each) ? c->next >= nkeys : t >= deadline;
                if (finished) {
                    c->done = 1;
                    active--;
                    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                    break;
                }
                send_request(c);
            }
        }
    }
    double elapsed = (double)(now_ns() - start) / 1e9;
    for (int i = 0; i < nconn; i++) close(conns[i].fd);
    const char *trace = getenv("LOADGEN_TRACE");
    if (trace) {
        FILE *f = fopen(trace, "w");
        if (!f) die("LOADGEN_TRACE");
        for (size_t k = 0; k < nlat; k++)
            fprintf(f, "%.1f %.1f\n", (double)sent_offsets[k] / 1000.0, (double)lat[k] / 1000.0);
        fclose(f);
    }
    qsort(lat, nlat, sizeof *lat, cmp_u64);
    printf("{\"connections\": %d, \"answers\": %zu, \"seconds\": %.6f, \"qps\": %.1f, "
           "\"p50_us\": %.1f, \"p90_us\": %.1f, \"p99_us\": %.1f, \"max_us\": %.1f, "
           "\"ok\": %llu, \"notfound\": %llu, \"other\": %llu}\n",
           nconn, nlat, elapsed, (double)nlat / elapsed, pct(0.5), pct(0.9), pct(0.99),
           nlat ? (double)lat[nlat - 1] / 1000.0 : 0.0, (unsigned long long)n_ok,
           (unsigned long long)n_notfound, (unsigned long long)n_other);
    return 0;
}

/* ---- trivial echo socketmap server: the load generator's own ceiling ---------------------- */

typedef struct {
    int fd;
    char in[BUF];
    size_t in_len;
} econn_t;

static int run_echo(const char *host, int port) {
    static const char body[] = "OK secure match=mx1.example.test:mx2.example.test servername=hostname";
    char reply[128];
    int rlen = snprintf(reply, sizeof reply, "%zu:%s,", sizeof body - 1, body);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) die("inet_pton");
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind");
    if (listen(ls, 512) < 0) die("listen");
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    fprintf(stdout, "ready\n");
    fflush(stdout);
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int e = 0; e < n; e++) {
            econn_t *c = evs[e].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    econn_t *nc = calloc(1, sizeof *nc);
                    nc->fd = fd;
                    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            ssize_t r = read(c->fd, c->in + c->in_len, BUF - c->in_len);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                close(c->fd);
                free(c);
                continue;
            }
            c->in_len += (size_t)r;
            const char *payload;
            size_t plen, used;
            while ((used = parse_netstring(c->in, c->in_len, &payload, &plen))) {
                write_all(c->fd, reply, (size_t)rlen);
                memmove(c->in, c->in + used, c->in_len - used);
                c->in_len -= used;
            }
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 4 && !strcmp(argv[1], "echo")) return run_echo(argv[2], atoi(argv[3]));
    if (argc >= 8 && !strcmp(argv[1], "client")) {
        if (argc >= 9) mapname = argv[8];
        return run_client(argv[2], atoi(argv[3]), atoi(argv[4]), argv[5], argv[6], atof(argv[7]));
    }
    fprintf(stderr,
            "usage: loadgen client HOST PORT CONNS KEYFILE time|once|each SECONDS [MAPNAME]\n"
            "       loadgen echo HOST PORT\n");
    return 64;
}
