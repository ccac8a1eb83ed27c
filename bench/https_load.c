/* The two ends of the proxy benchmarks, cheap enough to leave the cores to the proxies.
 *
 * A Python load client and a uvicorn upstream each took a large share of a 2-core
 * machine, so the proxy workers never had a core each and their scaling could not be
 * seen. This is one single-threaded epoll loop per role, over non-blocking OpenSSL:
 *
 *   https_load client PROXY_PORT HOST:PORT CA_FILE AUTH CONNECTIONS WARMUP SECONDS PATH
 *       N connections to 127.0.0.1:PROXY_PORT, each: CONNECT HOST:PORT (with
 *       "Proxy-Authorization: Basic AUTH" unless AUTH is "-"), TLS verified against
 *       CA_FILE, then keep-alive GET PATH, one at a time, until the time is up.
 *       Prints JSON: answers counted after WARMUP seconds, median and p95 latency, and
 *       the answers per connection (how evenly the proxy served them).
 *   https_load server PORT CERT KEY BODY_FILE
 *       HTTPS on 127.0.0.1:PORT, keep-alive, every request (its Content-Length body read
 *       and dropped) answered 200 with BODY_FILE as application/json.
 *
 * bench/harness.py compiles it with gcc at bench time (libssl-dev). Any failure ends the
 * process with a message on stderr: a benchmark that lost a connection is not a result.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF 16384

static _Noreturn void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    ERR_print_errors_fp(stderr);
    exit(1);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int tcp_socket(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0) die("socket: %s", strerror(errno));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static struct sockaddr_in loopback(int port) {
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return addr;
}

/* Watch fd for reading or writing (level-triggered); ptr comes back with the event. */
static void watch(int ep, int fd, void *ptr, int op, int writing) {
    struct epoll_event ev = {.events = writing ? EPOLLOUT : EPOLLIN, .data.ptr = ptr};
    if (epoll_ctl(ep, op, fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
}

/* What an SSL call that did not complete waits for: 0 read, 1 write; dies on an error. */
static int ssl_wants(SSL *ssl, int ret, const char *what) {
    int err = SSL_get_error(ssl, ret);
    if (err == SSL_ERROR_WANT_READ) return 0;
    if (err == SSL_ERROR_WANT_WRITE) return 1;
    die("%s failed (SSL error %d, errno %s)", what, err, strerror(errno));
}

/* The end of the header block in buf[0..len), or NULL. */
static char *header_end(char *buf, size_t len) {
    char *end = memmem(buf, len, "\r\n\r\n", 4);
    return end ? end + 4 : NULL;
}

/* Content-Length in a header block (case-insensitive name), 0 if there is none. */
static long content_length(const char *head, const char *end) {
    for (const char *p = head; p < end; p++) {
        if ((p == head || p[-1] == '\n') && strncasecmp(p, "content-length:", 15) == 0)
            return strtol(p + 15, NULL, 10);
        if ((p == head || p[-1] == '\n') && strncasecmp(p, "transfer-encoding:", 18) == 0)
            die("chunked bodies are not supported by this benchmark");
    }
    return 0;
}

/* -- the load client ------------------------------------------------------------------ */

enum client_state { C_CONNECTING, C_PROXY_HEAD, C_HANDSHAKE, C_REQUEST, C_RESPONSE };

struct client {
    int fd;
    enum client_state state;
    SSL *ssl;
    char buf[BUF];
    size_t len;          /* bytes in buf */
    size_t sent;         /* bytes of the request (or CONNECT) written */
    double started;      /* when the request in flight was sent */
    long answers;        /* counted answers of this connection */
};

static struct {
    const char *target, *auth, *path;
    SSL_CTX *ctx;
    double warm_until, deadline;
    double *latencies;
    long count, capacity;
    char connect[1024], request[1024];
    size_t connect_len, request_len;
} C;

static void record(struct client *c, double latency, double at) {
    if (at < C.warm_until) return;
    if (C.count == C.capacity) {
        C.capacity = C.capacity ? C.capacity * 2 : 65536;
        C.latencies = realloc(C.latencies, C.capacity * sizeof(double));
        if (!C.latencies) die("out of memory");
    }
    C.latencies[C.count++] = latency;
    c->answers++;
}

/* Drive one connection as far as it goes without blocking; returns 1 to wait for writing. */
static int client_step(struct client *c) {
    for (;;) {
        int ret;
        switch (c->state) {
        case C_CONNECTING: {
            int err = 0;
            socklen_t n = sizeof err;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &n);
            if (err) die("connect to the proxy: %s", strerror(err));
            ssize_t w = write(c->fd, C.connect + c->sent, C.connect_len - c->sent);
            if (w < 0 && (errno == EAGAIN || errno == EINPROGRESS || errno == ENOTCONN)) return 1;
            if (w < 0) die("CONNECT write: %s", strerror(errno));
            c->sent += w;
            if (c->sent < C.connect_len) return 1;
            c->state = C_PROXY_HEAD;
            break;
        }
        case C_PROXY_HEAD: {
            /* The proxy says nothing after its answer to CONNECT until the ClientHello,
             * so whatever is read here is that answer alone. */
            ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - c->len - 1);
            if (r < 0 && errno == EAGAIN) return 0;
            if (r <= 0) die("CONNECT answer: connection closed");
            c->len += r;
            if (!header_end(c->buf, c->len)) break;
            c->buf[c->len] = 0;
            if (strncmp(c->buf, "HTTP/1.1 200", 12) && strncmp(c->buf, "HTTP/1.0 200", 12))
                die("CONNECT refused: %.80s", c->buf);
            c->len = 0;
            c->ssl = SSL_new(C.ctx);
            SSL_set_fd(c->ssl, c->fd);
            SSL_set_tlsext_host_name(c->ssl, "localhost");
            SSL_set1_host(c->ssl, "localhost");
            c->state = C_HANDSHAKE;
            break;
        }
        case C_HANDSHAKE:
            if ((ret = SSL_connect(c->ssl)) != 1) return ssl_wants(c->ssl, ret, "TLS handshake with the proxy");
            c->state = C_REQUEST;
            c->sent = 0;
            c->started = now();
            break;
        case C_REQUEST:
            if ((ret = SSL_write(c->ssl, C.request, C.request_len)) <= 0)
                return ssl_wants(c->ssl, ret, "request write");
            c->state = C_RESPONSE;
            break;
        case C_RESPONSE: {
            if ((ret = SSL_read(c->ssl, c->buf + c->len, sizeof c->buf - c->len)) <= 0)
                return ssl_wants(c->ssl, ret, "response read");
            c->len += ret;
            char *end = header_end(c->buf, c->len);
            if (!end) {
                if (c->len == sizeof c->buf) die("response head too long");
                break;
            }
            if (strncmp(c->buf, "HTTP/1.1 200", 12)) die("answer not 200: %.80s", c->buf);
            size_t whole = (end - c->buf) + content_length(c->buf, end);
            if (whole > sizeof c->buf) die("response too long for this benchmark");
            if (c->len < whole) break;
            if (c->len > whole) die("more than one answer to one request");
            double t = now();
            record(c, t - c->started, c->started);
            c->len = 0;
            if (t >= C.deadline) return -1;
            c->state = C_REQUEST;
            c->started = t;
            break;
        }
        }
    }
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int run_client(int argc, char **argv) {
    if (argc != 10) die("usage: client PROXY_PORT HOST:PORT CA AUTH CONNECTIONS WARMUP SECONDS PATH");
    int proxy_port = atoi(argv[2]), n = atoi(argv[6]);
    double warmup = atof(argv[7]), seconds = atof(argv[8]);
    C.target = argv[3];
    C.auth = argv[5];
    C.path = argv[9];
    C.ctx = SSL_CTX_new(TLS_client_method());
    if (!SSL_CTX_load_verify_locations(C.ctx, argv[4], NULL)) die("cannot load CA %s", argv[4]);
    SSL_CTX_set_verify(C.ctx, SSL_VERIFY_PEER, NULL);
    char auth_line[700] = "";
    if (strcmp(C.auth, "-")) snprintf(auth_line, sizeof auth_line, "Proxy-Authorization: Basic %s\r\n", C.auth);
    C.connect_len = snprintf(C.connect, sizeof C.connect, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s\r\n",
                             C.target, C.target, auth_line);
    C.request_len = snprintf(C.request, sizeof C.request, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n",
                             C.path, C.target);

    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct client *clients = calloc(n, sizeof *clients);
    struct sockaddr_in proxy = loopback(proxy_port);
    C.warm_until = now() + warmup;
    C.deadline = C.warm_until + seconds;
    for (int i = 0; i < n; i++) {
        clients[i].fd = tcp_socket();
        if (connect(clients[i].fd, (struct sockaddr *)&proxy, sizeof proxy) < 0 && errno != EINPROGRESS)
            die("connect: %s", strerror(errno));
        watch(ep, clients[i].fd, &clients[i], EPOLL_CTL_ADD, 1);
    }
    int open = n;
    struct epoll_event events[256];
    while (open > 0) {
        int k = epoll_wait(ep, events, 256, 1000);
        if (k < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
        if (now() > C.deadline + 30) die("answers stopped coming");
        for (int i = 0; i < k; i++) {
            struct client *c = events[i].data.ptr;
            int wants = client_step(c);
            if (wants < 0) {  /* done: the connection's last answer came after the deadline */
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                open--;
            } else {
                watch(ep, c->fd, c, EPOLL_CTL_MOD, wants);
            }
        }
    }
    if (C.count == 0) die("no answers counted");
    qsort(C.latencies, C.count, sizeof(double), cmp_double);
    printf("{\"count\": %ld, \"seconds\": %g, \"median\": %.9f, \"p95\": %.9f, \"per_connection\": [",
           C.count, seconds, C.latencies[C.count / 2], C.latencies[(long)(C.count * 0.95)]);
    for (int i = 0; i < n; i++) printf("%s%ld", i ? ", " : "", clients[i].answers);
    printf("]}\n");
    return 0;
}

/* -- the upstream ----------------------------------------------------------------------- */

enum server_state { S_HANDSHAKE, S_READ, S_WRITE };

struct peer {
    int fd;
    enum server_state state;
    SSL *ssl;
    char buf[BUF];
    size_t len;          /* bytes of requests in buf */
    size_t sent;         /* bytes of the answer written */
};

static char *answer;
static size_t answer_len;

static void peer_close(int ep, struct peer *p) {
    epoll_ctl(ep, EPOLL_CTL_DEL, p->fd, NULL);
    SSL_free(p->ssl);
    close(p->fd);
    free(p);
}

/* Like client_step: 0 wait to read, 1 wait to write, -1 closed. A peer that fails or
 * leaves is only closed: the upstream serves on (the proxy decides when to hang up). */
static int peer_step(struct peer *p) {
    for (;;) {
        int ret, err;
        switch (p->state) {
        case S_HANDSHAKE:
            if ((ret = SSL_accept(p->ssl)) == 1) {
                p->state = S_READ;
                break;
            }
            err = SSL_get_error(p->ssl, ret);
            return err == SSL_ERROR_WANT_READ ? 0 : err == SSL_ERROR_WANT_WRITE ? 1 : -1;
        case S_READ: {
            char *end = header_end(p->buf, p->len);
            if (end) {
                size_t whole = (end - p->buf) + content_length(p->buf, end);
                if (whole > sizeof p->buf) return -1;
                if (p->len >= whole) {  /* one whole request: answer it, keep what follows */
                    memmove(p->buf, p->buf + whole, p->len - whole);
                    p->len -= whole;
                    p->state = S_WRITE;
                    p->sent = 0;
                    break;
                }
            }
            if (p->len == sizeof p->buf) return -1;
            if ((ret = SSL_read(p->ssl, p->buf + p->len, sizeof p->buf - p->len)) > 0) {
                p->len += ret;
                break;
            }
            err = SSL_get_error(p->ssl, ret);
            return err == SSL_ERROR_WANT_READ ? 0 : err == SSL_ERROR_WANT_WRITE ? 1 : -1;
        }
        case S_WRITE:
            if ((ret = SSL_write(p->ssl, answer + p->sent, answer_len - p->sent)) > 0) {
                p->sent += ret;
                if (p->sent == answer_len) p->state = S_READ;
                break;
            }
            err = SSL_get_error(p->ssl, ret);
            return err == SSL_ERROR_WANT_READ ? 0 : err == SSL_ERROR_WANT_WRITE ? 1 : -1;
        }
    }
}

static _Noreturn void run_server(int argc, char **argv) {
    if (argc != 6) die("usage: server PORT CERT KEY BODY_FILE");
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (SSL_CTX_use_certificate_chain_file(ctx, argv[3]) != 1) die("cannot load %s", argv[3]);
    if (SSL_CTX_use_PrivateKey_file(ctx, argv[4], SSL_FILETYPE_PEM) != 1) die("cannot load %s", argv[4]);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);

    FILE *f = fopen(argv[5], "rb");
    if (!f) die("cannot open %s", argv[5]);
    char body[BUF / 2];
    size_t body_len = fread(body, 1, sizeof body, f);
    fclose(f);
    answer = malloc(BUF);
    answer_len = snprintf(answer, BUF, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                          "Content-Length: %zu\r\n\r\n", body_len);
    memcpy(answer + answer_len, body, body_len);
    answer_len += body_len;

    int lfd = tcp_socket(), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = loopback(atoi(argv[2]));
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind: %s", strerror(errno));
    if (listen(lfd, 1024) < 0) die("listen: %s", strerror(errno));
    int ep = epoll_create1(EPOLL_CLOEXEC);
    watch(ep, lfd, NULL, EPOLL_CTL_ADD, 0);
    struct epoll_event events[256];
    for (;;) {
        int k = epoll_wait(ep, events, 256, -1);
        if (k < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < k; i++) {
            struct peer *p = events[i].data.ptr;
            if (p == NULL) {  /* the listener */
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    p = calloc(1, sizeof *p);
                    p->fd = fd;
                    p->ssl = SSL_new(ctx);
                    SSL_set_fd(p->ssl, fd);
                    watch(ep, fd, p, EPOLL_CTL_ADD, 0);
                }
                continue;
            }
            int wants = peer_step(p);
            if (wants < 0) {
                ERR_clear_error();
                peer_close(ep, p);
            } else {
                watch(ep, p->fd, p, EPOLL_CTL_MOD, wants);
            }
        }
    }
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    if (argc > 1 && strcmp(argv[1], "client") == 0) return run_client(argc, argv);
    if (argc > 1 && strcmp(argv[1], "server") == 0) run_server(argc, argv);
    die("usage: https_load client|server ...");
}
