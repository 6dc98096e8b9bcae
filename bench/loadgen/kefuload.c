/*
 * kefuload: the bench suite's WebSocket load generator (one thread, epoll, no dependencies).
 *
 * Why C: the client must not be the bottleneck. A Python client spends more CPU per message than
 * the servers it measures; this one spends a few microseconds (bench/README.md reports its
 * ceiling, measured against a trivial echo server, in every run).
 *
 * What it speaks: RFC 6455 client frames (masked with a zero key, which is legal and keeps the
 * payload unchanged), text messages that are JSON objects with a "cmid" of the form
 * "<scheduled send time, ns, hex>-<origin connection id, hex>-<counter, hex>". Kefu relays cmid in
 * its `ack` and `msg` frames; the peer hubs relay the whole message, so one parser serves both and
 * every latency is "receive time minus the time the send was SCHEDULED" (open loop: no coordinated
 * omission). Servers may coalesce several messages into one frame separated by '\n' (the gorilla
 * chat example does); each line is parsed.
 *
 * Spec file: one connection per line: "S|R HOST PORT PATH CONV" (S sends, R only receives; PATH
 * includes the query string, e.g. /ws?token=...; CONV is Kefu's conversation id, 0 for peers).
 *
 * With --binary, messages use Kefu's kefu.bin.v1 framing instead (24-byte header + msgpack map with
 * the same cmid); --subprotocol must then name kefu.bin.v1.
 *
 * Modes:
 *   rate    open loop: a global schedule of --rate msg/s spread round-robin over the senders
 *   closed  each sender keeps --window messages in flight (next send on ack): saturation
 *   idle    connect everything, hold --hold seconds (or until SIGTERM), report handshake times
 *   storm   connect everything, drop everything, reconnect everything: time to all re-established
 *
 * Output: JSON lines on stdout ({"event": "connected", ...} when all connections are up, one
 * {"event": "result", ...} at the end, with HDR-style log-linear histograms as sparse bucket lists
 * so several processes merge exactly); progress once per second on stderr.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* ---------- time ---------- */

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double cpu_seconds(void) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return usage.ru_utime.tv_sec + usage.ru_stime.tv_sec +
           (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

/* ---------- log-linear histogram (HdrHistogram layout, 2 significant digits) ----------
 * Values below 128 ns have their own bucket; above, each power of two is split into 64 equal
 * sub-buckets, so a bucket's width is under 1.6 % of its value. */

#define HIST_SUB_BITS 6
#define HIST_BUCKETS (128 + 58 * 64)

typedef struct {
    uint64_t counts[HIST_BUCKETS];
    uint64_t total, min, max;
    double sum;
} histogram_t;

static int hist_index(uint64_t value) {
    if (value < 128) return (int)value;
    int msb = 63 - __builtin_clzll(value);
    int shift = msb - HIST_SUB_BITS;
    int index = 128 + (shift - 1) * 64 + (int)((value >> shift) - 64);
    return index < HIST_BUCKETS ? index : HIST_BUCKETS - 1;
}

static uint64_t hist_lower_bound(int index) {
    if (index < 128) return (uint64_t)index;
    int shift = (index - 128) / 64 + 1;
    uint64_t sub = (uint64_t)((index - 128) % 64) + 64;
    return sub << shift;
}

static void hist_record(histogram_t *h, uint64_t value) {
    h->counts[hist_index(value)]++;
    if (h->total == 0 || value < h->min) h->min = value;
    if (value > h->max) h->max = value;
    h->total++;
    h->sum += (double)value;
}

static void hist_print(const char *name, const histogram_t *h) {
    printf("\"%s\":{\"count\":%llu,\"min\":%llu,\"max\":%llu,\"sum\":%.0f,\"buckets\":[", name,
           (unsigned long long)h->total, (unsigned long long)h->min, (unsigned long long)h->max, h->sum);
    int first = 1;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        if (!h->counts[i]) continue;
        printf("%s[%llu,%llu]", first ? "" : ",", (unsigned long long)hist_lower_bound(i),
               (unsigned long long)h->counts[i]);
        first = 0;
    }
    printf("]}");
}

/* ---------- connections ---------- */

enum { ST_IDLE, ST_CONNECTING, ST_HANDSHAKE, ST_WAIT_WELCOME, ST_READY, ST_CLOSED, ST_FAILED };

typedef struct {
    int fd;
    uint8_t state;
    uint8_t sender;
    uint32_t id;
    uint64_t conv;
    struct sockaddr_in dst;
    char *host_port;
    char *path;
    uint8_t *rbuf;
    uint32_t rlen, rcap;
    uint8_t *wbuf; /* bytes the kernel did not take yet (backpressure) */
    uint32_t wlen, wcap;
    uint64_t connect_start;
    uint32_t counter;
    uint32_t in_flight;
} conn_t;

static conn_t *conns;
static int nconns;
static int *senders;
static int nsenders;
static int epfd;

/* options */
static const char *opt_mode = "rate";
static double opt_rate = 1000, opt_duration = 5, opt_warmup = 1, opt_drain = 3, opt_hold = 5;
static double opt_connect_timeout = 30, opt_pause = 1;
static int opt_window = 1, opt_hello = 0, opt_wait_go = 0, opt_binary = 0, opt_sources = 1, opt_inflight = 500, opt_progress = 1;
static uint32_t opt_id_offset = 0;
static const char *opt_subprotocol = NULL, *opt_origin = NULL;
static int sizes[32] = {24, 60, 120, 60, 300, 40, 90, 800};
static int nsizes = 8;

/* counters */
static uint64_t sent_total, sent_measured, acks_total, deliveries_total, errors_total, closed_by_peer;
static uint64_t connect_failed, handshake_rejected, bytes_in, bytes_out, foreign_messages;
static histogram_t h_ack, h_delivery, h_connect, h_send_lag;
static uint64_t measure_from = 0, measure_until = UINT64_MAX;
static volatile sig_atomic_t stop_requested = 0;
static int printed_errors = 0;
static int connected_count = 0, pending_connects = 0, next_to_connect = 0;

static const char usage[] =
    "usage: kefuload --spec FILE [options]\n"
    "  --spec FILE            one connection per line: S|R HOST PORT PATH CONV\n"
    "  --mode M               rate (open loop), closed (window in flight), idle (hold), storm (drop + reconnect)\n"
    "  --rate N               messages/s over all senders (rate mode)\n"
    "  --window N             messages in flight per sender (closed mode)\n"
    "  --warmup S --duration S --drain S    phases of a load run (seconds)\n"
    "  --hold S               idle mode: how long to hold (SIGTERM ends earlier)\n"
    "  --pause S              storm mode: pause between the drop and the reconnect\n"
    "  --sizes A,B,...        message text sizes in bytes, cycled\n"
    "  --hello                send hello and wait for welcome before a connection counts (Kefu)\n"
    "  --binary               kefu.bin.v1 frames instead of JSON\n"
    "  --subprotocol P --origin O          handshake headers\n"
    "  --sources N            bind source addresses 127.0.1.1..N (28k ephemeral ports each)\n"
    "  --inflight N           handshakes in flight at once\n"
    "  --connect-timeout S    give up on connections not up after S seconds\n"
    "  --id-offset N          first connection id (several processes)\n"
    "  --wait-go              read the CLOCK_MONOTONIC start time (ns) from stdin after connecting\n"
    "  --quiet                no progress on stderr\n";

static void on_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

static void die(const char *msg) {
    fprintf(stderr, "kefuload: %s\n", msg);
    exit(2);
}

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n);
    if (!q) die("out of memory");
    return q;
}

static void epoll_set(conn_t *c, uint32_t events, int op) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(epfd, op, c->fd, &ev) < 0 && op != EPOLL_CTL_DEL) perror("epoll_ctl");
}

static void conn_close(conn_t *c, uint8_t final_state) {
    if (c->fd >= 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    if (c->state == ST_READY) connected_count--;
    if (c->state == ST_CONNECTING || c->state == ST_HANDSHAKE || c->state == ST_WAIT_WELCOME) pending_connects--;
    c->fd = -1;
    c->state = final_state;
    c->rlen = 0;
    c->wlen = 0;
    c->in_flight = 0;
}

/* Queue bytes: write now if nothing is pending, keep the rest for EPOLLOUT. */
static void conn_write(conn_t *c, const void *data, size_t len) {
    const uint8_t *p = data;
    if (c->fd < 0) return;
    if (c->wlen == 0) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                closed_by_peer++;
                conn_close(c, ST_CLOSED);
                return;
            }
            n = 0;
        }
        bytes_out += (uint64_t)n;
        p += n;
        len -= (size_t)n;
        if (len == 0) return;
        epoll_set(c, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
    }
    if (c->wlen + len > c->wcap) {
        c->wcap = (uint32_t)((c->wlen + len) * 2);
        c->wbuf = xrealloc(c->wbuf, c->wcap);
    }
    memcpy(c->wbuf + c->wlen, p, len);
    c->wlen += (uint32_t)len;
}

static void conn_flush(conn_t *c) {
    while (c->wlen) {
        ssize_t n = send(c->fd, c->wbuf, c->wlen, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            closed_by_peer++;
            conn_close(c, ST_CLOSED);
            return;
        }
        bytes_out += (uint64_t)n;
        memmove(c->wbuf, c->wbuf + n, c->wlen - (uint32_t)n);
        c->wlen -= (uint32_t)n;
    }
    epoll_set(c, EPOLLIN, EPOLL_CTL_MOD);
}

/* A client frame: FIN + opcode, MASK bit with a zero key, so the payload goes out unchanged. */
static void send_frame(conn_t *c, int opcode, const char *payload, size_t len) {
    uint8_t frame[16 + 16384];
    size_t h = 0;
    if (len > 16384) len = 16384;
    frame[h++] = (uint8_t)(0x80 | opcode);
    if (len < 126) {
        frame[h++] = (uint8_t)(0x80 | len);
    } else {
        frame[h++] = 0x80 | 126;
        frame[h++] = (uint8_t)(len >> 8);
        frame[h++] = (uint8_t)len;
    }
    memset(frame + h, 0, 4);
    h += 4;
    memcpy(frame + h, payload, len);
    conn_write(c, frame, h + len);
}

static const char filler[] =
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

static void put_le(uint8_t *out, uint64_t value, int bytes) {
    for (int i = 0; i < bytes; i++) out[i] = (uint8_t)(value >> (8 * i));
}

/* msgpack str header for a string of `len` bytes; returns the header size. */
static int msgpack_str_header(uint8_t *out, size_t len) {
    if (len < 32) {
        out[0] = (uint8_t)(0xa0 | len);
        return 1;
    }
    if (len < 256) {
        out[0] = 0xd9;
        out[1] = (uint8_t)len;
        return 2;
    }
    out[0] = 0xda;
    out[1] = (uint8_t)(len >> 8);
    out[2] = (uint8_t)len;
    return 3;
}

/* kefu.bin.v1 send frame: header (type 4, conv) + msgpack {"cmid": ..., "text": ...}. */
static size_t encode_binary_send(uint8_t *out, uint64_t conv, const char *cmid, size_t cmid_len, size_t text_len) {
    size_t n = 24;
    out[n++] = 0x82;
    out[n++] = 0xa4;
    memcpy(out + n, "cmid", 4);
    n += 4;
    n += (size_t)msgpack_str_header(out + n, cmid_len);
    memcpy(out + n, cmid, cmid_len);
    n += cmid_len;
    out[n++] = 0xa4;
    memcpy(out + n, "text", 4);
    n += 4;
    n += (size_t)msgpack_str_header(out + n, text_len);
    for (size_t left = text_len; left > 0;) {
        size_t chunk = left < sizeof filler - 1 ? left : sizeof filler - 1;
        memcpy(out + n, filler, chunk);
        n += chunk;
        left -= chunk;
    }
    out[0] = 1;
    out[1] = 4;
    put_le(out + 2, 0, 2);
    put_le(out + 4, n - 24, 4);
    put_le(out + 8, conv, 8);
    put_le(out + 16, 0, 8);
    return n;
}

static void send_message(conn_t *c, uint64_t scheduled, uint64_t sequence) {
    char msg[8192];
    int text_len = sizes[sequence % (uint64_t)nsizes];
    char cmid[64];
    int cmid_len = snprintf(cmid, sizeof cmid, "%llx-%x-%x", (unsigned long long)scheduled, c->id, c->counter++);
    if (opt_binary) {
        size_t n = encode_binary_send((uint8_t *)msg, c->conv, cmid, (size_t)cmid_len, (size_t)text_len);
        send_frame(c, 2, msg, n);
    } else {
        int n = snprintf(msg, sizeof msg, "{\"t\":\"send\",\"conv\":%llu,\"cmid\":\"%s\",\"text\":\"",
                         (unsigned long long)c->conv, cmid);
        while (text_len > 0 && n < (int)sizeof msg - 8) {
            int chunk = text_len < (int)sizeof filler - 1 ? text_len : (int)sizeof filler - 1;
            if (chunk > (int)sizeof msg - 8 - n) chunk = (int)sizeof msg - 8 - n;
            memcpy(msg + n, filler, (size_t)chunk);
            n += chunk;
            text_len -= chunk;
        }
        msg[n++] = '"';
        msg[n++] = '}';
        send_frame(c, 1, msg, (size_t)n);
    }
    uint64_t actual = now_ns();
    sent_total++;
    c->in_flight++;
    if (scheduled >= measure_from && scheduled < measure_until) {
        sent_measured++;
        hist_record(&h_send_lag, actual > scheduled ? actual - scheduled : 0);
    }
}

/* Minimal JSON field lookup over a server message we know the shape of: finds "key", skips the
 * colon and blanks, returns a pointer to the value (or NULL). Tolerates `"k": v` and `"k":v`. */
static const char *json_field(const char *s, const char *end, const char *key) {
    size_t klen = strlen(key);
    for (const char *p = s; p + klen + 2 < end; p++) {
        p = memchr(p, '"', (size_t)(end - p));
        if (!p || p + klen + 2 >= end) return NULL;
        if (memcmp(p + 1, key, klen) == 0 && p[klen + 1] == '"') {
            const char *v = p + klen + 2;
            while (v < end && (*v == ' ' || *v == ':')) v++;
            return v < end ? v : NULL;
        }
    }
    return NULL;
}

static int json_type_is(const char *type, const char *end, const char *expected) {
    size_t n = strlen(expected);
    return type && *type == '"' && type + 1 + n < end && memcmp(type + 1, expected, n) == 0 && type[1 + n] == '"';
}

enum { MSG_OTHER, MSG_ACK, MSG_MSG, MSG_WELCOME, MSG_ERROR };

/* One server message, whatever its encoding: its kind and its cmid (NUL-terminated, may be empty). */
static void on_server_message(conn_t *c, int kind, const char *cmid, const char *raw, size_t raw_len,
                              uint64_t received) {
    if (cmid[0]) {
        char *after;
        uint64_t scheduled = strtoull(cmid, &after, 16);
        if (*after != '-') return; /* not one of ours (e.g. the setup's "open" message) */
        uint32_t origin = (uint32_t)strtoul(after + 1, &after, 16);
        uint64_t latency = received > scheduled ? received - scheduled : 0;
        int measured = scheduled >= measure_from && scheduled < measure_until;
        if (origin == c->id) {
            if (kind == MSG_MSG) return; /* our own message echoed as msg: not an ack */
            acks_total++;
            if (c->in_flight) c->in_flight--;
            if (measured) hist_record(&h_ack, latency);
            if (strcmp(opt_mode, "closed") == 0 && received < measure_until) {
                while (c->in_flight < (uint32_t)opt_window && c->state == ST_READY) {
                    uint64_t t = now_ns();
                    send_message(c, t, sent_total);
                }
            }
        } else {
            deliveries_total++;
            if (measured) hist_record(&h_delivery, latency);
        }
        return;
    }
    if (kind == MSG_WELCOME && c->state == ST_WAIT_WELCOME) {
        hist_record(&h_connect, received - c->connect_start);
        c->state = ST_READY;
        pending_connects--;
        connected_count++;
        return;
    }
    if (kind == MSG_ERROR) {
        errors_total++;
        if (printed_errors++ < 5) {
            fprintf(stderr, "kefuload: server error on conn %u: ", c->id);
            for (size_t i = 0; i < raw_len && i < 300; i++) fputc(raw[i] >= 32 && raw[i] < 127 ? raw[i] : '.', stderr);
            fputc('\n', stderr);
        }
        return;
    }
    foreign_messages++;
}

static void copy_cmid(char *out, const char *from, size_t len) {
    if (len > 63) len = 63;
    memcpy(out, from, len);
    out[len] = 0;
}

static void on_json_message(conn_t *c, const char *s, size_t len, uint64_t received) {
    const char *end = s + len;
    const char *type = json_field(s, end, "t");
    const char *cmid_value = json_field(s, end, "cmid");
    char cmid[64] = "";
    if (cmid_value && *cmid_value == '"') {
        const char *close = memchr(cmid_value + 1, '"', (size_t)(end - cmid_value - 1));
        if (close) copy_cmid(cmid, cmid_value + 1, (size_t)(close - cmid_value - 1));
    }
    int kind = json_type_is(type, end, "ack")       ? MSG_ACK
               : json_type_is(type, end, "msg")     ? MSG_MSG
               : json_type_is(type, end, "welcome") ? MSG_WELCOME
               : json_type_is(type, end, "error")   ? MSG_ERROR
               : json_type_is(type, end, "send")    ? MSG_ACK /* peers relay our own frame */
                                                    : MSG_OTHER;
    on_server_message(c, kind, cmid, s, len, received);
}

/* kefu.bin.v1: 24-byte little-endian header (version, type, flags, body length, conv, seq), then a
 * msgpack map. Only the type and the "cmid" string matter here; the map is scanned, not decoded. */
static void on_binary_message(conn_t *c, const uint8_t *p, size_t len, uint64_t received) {
    if (len < 24 || p[0] != 1) {
        foreign_messages++;
        return;
    }
    int type = p[1];
    int kind = type == 5 ? MSG_ACK : type == 6 ? MSG_MSG : type == 2 ? MSG_WELCOME : type == 14 ? MSG_ERROR : MSG_OTHER;
    char cmid[64] = "";
    const uint8_t *body = p + 24, *end = p + len;
    const uint8_t *key = memmem(body, (size_t)(end - body), "\xa4" "cmid", 5);
    if (key && key + 6 <= end) {
        const uint8_t *value = key + 5;
        size_t value_len = 0;
        if ((*value & 0xe0) == 0xa0) {
            value_len = *value & 0x1f;
            value += 1;
        } else if (*value == 0xd9 && value + 2 <= end) {
            value_len = value[1];
            value += 2;
        }
        if (value + value_len <= end) copy_cmid(cmid, (const char *)value, value_len);
    }
    on_server_message(c, kind, cmid, (const char *)body, (size_t)(end - body), received);
}

static void on_data_frame(conn_t *c, const uint8_t *payload, size_t len, uint64_t received) {
    const char *p = (const char *)payload, *end = p + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = nl ? nl : end;
        if (line_end > p) on_json_message(c, p, (size_t)(line_end - p), received);
        p = line_end + 1;
    }
}

/* Parse complete server frames from c->rbuf; keep a partial tail for the next read. */
static void parse_frames(conn_t *c, uint64_t received) {
    uint32_t off = 0;
    while (c->state != ST_CLOSED && c->rlen - off >= 2) {
        uint8_t *f = c->rbuf + off;
        int opcode = f[0] & 0x0f;
        int masked = f[1] & 0x80;
        uint64_t len = f[1] & 0x7f;
        uint32_t h = 2;
        if (len == 126) {
            if (c->rlen - off < 4) break;
            len = ((uint64_t)f[2] << 8) | f[3];
            h = 4;
        } else if (len == 127) {
            if (c->rlen - off < 10) break;
            len = 0;
            for (int i = 0; i < 8; i++) len = (len << 8) | f[2 + i];
            h = 10;
        }
        if (len > (64u << 20)) { /* hostile or broken server: drop the connection */
            closed_by_peer++;
            conn_close(c, ST_CLOSED);
            return;
        }
        if (masked) h += 4;
        if ((uint64_t)(c->rlen - off) < h + len) {
            if (h + len > c->rcap) {
                c->rcap = (uint32_t)(h + len);
                c->rbuf = xrealloc(c->rbuf, c->rcap);
            }
            break;
        }
        uint8_t *payload = f + h;
        if (masked) {
            for (uint64_t i = 0; i < len; i++) payload[i] ^= f[h - 4 + (i & 3)];
        }
        if (opcode == 2 && opt_binary) {
            on_binary_message(c, payload, (size_t)len, received);
        } else if (opcode == 1 || opcode == 2 || opcode == 0) {
            on_data_frame(c, payload, (size_t)len, received);
        } else if (opcode == 9) {
            send_frame(c, 10, (const char *)payload, (size_t)len);
        } else if (opcode == 8) {
            closed_by_peer++;
            conn_close(c, ST_CLOSED);
            return;
        }
        off += h + (uint32_t)len;
    }
    if (c->fd < 0) return; /* a handler closed the connection; its buffer is already reset */
    if (off) {
        memmove(c->rbuf, c->rbuf + off, c->rlen - off);
        c->rlen -= off;
    }
}

static void send_upgrade(conn_t *c) {
    char req[4096];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
                     c->path, c->host_port);
    if (opt_subprotocol) n += snprintf(req + n, sizeof req - (size_t)n, "Sec-WebSocket-Protocol: %s\r\n", opt_subprotocol);
    if (opt_origin) n += snprintf(req + n, sizeof req - (size_t)n, "Origin: %s\r\n", opt_origin);
    n += snprintf(req + n, sizeof req - (size_t)n, "\r\n");
    c->state = ST_HANDSHAKE;
    epoll_set(c, EPOLLIN, EPOLL_CTL_MOD);
    conn_write(c, req, (size_t)n);
}

static void on_handshake_bytes(conn_t *c, uint64_t received) {
    uint8_t *end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
    if (!end) return;
    if (c->rlen < 12 || memcmp(c->rbuf + 9, "101", 3) != 0) {
        if (handshake_rejected++ < 3)
            fprintf(stderr, "kefuload: handshake rejected on conn %u: %.*s\n", c->id, 12, (char *)c->rbuf);
        conn_close(c, ST_FAILED);
        connect_failed++;
        return;
    }
    uint32_t header_len = (uint32_t)(end + 4 - c->rbuf);
    memmove(c->rbuf, c->rbuf + header_len, c->rlen - header_len);
    c->rlen -= header_len;
    if (opt_hello) {
        c->state = ST_WAIT_WELCOME;
        if (opt_binary) {
            uint8_t hello[24] = {1, 1, 1}; /* version 1, type hello, flags: empty body */
            send_frame(c, 2, (const char *)hello, sizeof hello);
        } else {
            static const char hello[] = "{\"t\":\"hello\"}";
            send_frame(c, 1, hello, sizeof hello - 1);
        }
    } else {
        hist_record(&h_connect, received - c->connect_start);
        c->state = ST_READY;
        pending_connects--;
        connected_count++;
    }
    if (c->rlen) parse_frames(c, received);
}

static void on_readable(conn_t *c) {
    for (;;) {
        if (c->rcap - c->rlen < 2048) {
            c->rcap = c->rcap ? c->rcap * 2 : 4096;
            c->rbuf = xrealloc(c->rbuf, c->rcap);
        }
        ssize_t n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            n = 0;
        }
        if (n == 0) {
            if (c->state == ST_HANDSHAKE || c->state == ST_WAIT_WELCOME) {
                connect_failed++;
                conn_close(c, ST_FAILED);
            } else {
                closed_by_peer++;
                conn_close(c, ST_CLOSED);
            }
            return;
        }
        bytes_in += (uint64_t)n;
        c->rlen += (uint32_t)n;
        uint64_t received = now_ns();
        if (c->state == ST_HANDSHAKE) on_handshake_bytes(c, received);
        else parse_frames(c, received);
        if (c->state == ST_CLOSED || c->state == ST_FAILED) return;
        if ((size_t)n < 2048) return; /* drained: level-triggered epoll calls again if more arrives */
    }
}

static void start_connect(conn_t *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        connect_failed++;
        c->state = ST_FAILED;
        if (connect_failed < 4) perror("kefuload: socket");
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (opt_sources > 1) {
        /* Spread over 127.0.1.x sources: each source address has its own ~28k ephemeral ports. */
        struct sockaddr_in src = {.sin_family = AF_INET, .sin_port = 0};
        src.sin_addr.s_addr = htonl(0x7f000100u + 1 + (c->id % (uint32_t)opt_sources));
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) perror("kefuload: bind");
    }
    c->fd = fd;
    c->state = ST_CONNECTING;
    c->connect_start = now_ns();
    pending_connects++;
    if (connect(fd, (struct sockaddr *)&c->dst, sizeof c->dst) < 0 && errno != EINPROGRESS) {
        if (connect_failed < 4) perror("kefuload: connect");
        connect_failed++;
        conn_close(c, ST_FAILED);
        return;
    }
    epoll_set(c, EPOLLOUT, EPOLL_CTL_ADD);
}

static void on_event(conn_t *c, uint32_t events) {
    if (c->state == ST_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err || (events & (EPOLLERR | EPOLLHUP))) {
            if (connect_failed < 4) fprintf(stderr, "kefuload: connect: %s\n", strerror(err ? err : ECONNRESET));
            connect_failed++;
            conn_close(c, ST_FAILED);
            return;
        }
        send_upgrade(c);
        return;
    }
    if (events & EPOLLIN) on_readable(c);
    else if (events & (EPOLLERR | EPOLLHUP)) {
        closed_by_peer++;
        conn_close(c, ST_CLOSED);
        return;
    }
    if (c->fd >= 0 && (events & EPOLLOUT)) conn_flush(c);
}

static void poll_once(uint64_t deadline) {
    struct epoll_event events[1024];
    uint64_t now = now_ns();
    struct timespec timeout = {0, 0};
    if (deadline > now) {
        uint64_t wait = deadline - now;
        if (wait > 100000000ull) wait = 100000000ull; /* wake at least every 100 ms */
        timeout.tv_sec = (time_t)(wait / 1000000000ull);
        timeout.tv_nsec = (long)(wait % 1000000000ull);
    }
    int n = epoll_pwait2(epfd, events, 1024, &timeout, NULL);
    for (int i = 0; i < n; i++) {
        conn_t *c = events[i].data.ptr;
        if (c->fd >= 0) on_event(c, events[i].events);
    }
}

static void progress(const char *phase, uint64_t started) {
    if (!opt_progress) return;
    fprintf(stderr, "kefuload[%u] %-8s t=%5.1fs open=%d pending=%d failed=%llu sent=%llu acks=%llu delivered=%llu\n",
            opt_id_offset, phase, (now_ns() - started) / 1e9, connected_count, pending_connects,
            (unsigned long long)connect_failed, (unsigned long long)sent_total, (unsigned long long)acks_total,
            (unsigned long long)deliveries_total);
}

/* Open every connection with at most --inflight handshakes at once; returns seconds taken. */
static double connect_all(const char *phase) {
    uint64_t started = now_ns(), last_progress = started;
    uint64_t give_up = started + (uint64_t)(opt_connect_timeout * 1e9);
    next_to_connect = 0;
    while (!stop_requested) {
        while (next_to_connect < nconns && pending_connects < opt_inflight) start_connect(&conns[next_to_connect++]);
        if (next_to_connect >= nconns && pending_connects == 0) break;
        uint64_t now = now_ns();
        if (now > give_up) break;
        if (now - last_progress > 1000000000ull) {
            progress(phase, started);
            last_progress = now;
        }
        poll_once(now + 10000000ull);
    }
    for (int i = 0; i < nconns; i++) {
        conn_t *c = &conns[i];
        if (c->state == ST_CONNECTING || c->state == ST_HANDSHAKE || c->state == ST_WAIT_WELCOME) {
            connect_failed++;
            conn_close(c, ST_FAILED);
        }
    }
    /* Connections never started before the window closed did not open either: count them, so that
     * conns - connect_failed is the number really open. */
    connect_failed += (uint64_t)(nconns - next_to_connect);
    return (now_ns() - started) / 1e9;
}

static void run_until(uint64_t deadline, const char *phase, uint64_t started) {
    uint64_t last_progress = now_ns();
    while (!stop_requested && now_ns() < deadline) {
        poll_once(deadline);
        if (now_ns() - last_progress > 1000000000ull) {
            progress(phase, started);
            last_progress = now_ns();
        }
    }
}

/* After the schedule: wait for outstanding replies, at most --drain seconds, and stop early once
 * every send was acknowledged and nothing arrived for 300 ms. */
static void run_drain(uint64_t started) {
    uint64_t deadline = now_ns() + (uint64_t)(opt_drain * 1e9);
    uint64_t last_count = acks_total + deliveries_total, quiet_since = now_ns();
    while (!stop_requested && now_ns() < deadline) {
        poll_once(now_ns() + 50000000ull);
        uint64_t count = acks_total + deliveries_total;
        if (count != last_count) {
            last_count = count;
            quiet_since = now_ns();
        } else if (acks_total >= sent_total && now_ns() - quiet_since > 300000000ull) {
            break;
        }
    }
    progress("done", started);
}

static void wait_until(uint64_t start) {
    while (!stop_requested && now_ns() < start) poll_once(start);
}

static void run_open_loop(uint64_t started) {
    uint64_t interval = (uint64_t)(1e9 / opt_rate);
    uint64_t total_messages = nsenders ? (uint64_t)((opt_warmup + opt_duration) * opt_rate) : 0;
    uint64_t schedule_end = started + (uint64_t)((opt_warmup + opt_duration) * 1e9);
    measure_from = started + (uint64_t)(opt_warmup * 1e9);
    measure_until = measure_from + (uint64_t)(opt_duration * 1e9);
    wait_until(started);
    uint64_t k = 0, last_progress = started;
    while (!stop_requested && now_ns() < schedule_end) {
        uint64_t now = now_ns();
        while (k < total_messages && started + k * interval <= now) {
            conn_t *c = &conns[senders[k % (uint64_t)nsenders]];
            if (c->state == ST_READY) send_message(c, started + k * interval, k);
            k++;
        }
        if (now - last_progress > 1000000000ull) {
            progress("load", started);
            last_progress = now;
        }
        poll_once(k < total_messages ? started + k * interval : schedule_end);
    }
    run_drain(started);
}

static void run_closed_loop(uint64_t started) {
    measure_from = started + (uint64_t)(opt_warmup * 1e9);
    measure_until = measure_from + (uint64_t)(opt_duration * 1e9);
    wait_until(started);
    for (int s = 0; s < nsenders; s++) {
        conn_t *c = &conns[senders[s]];
        for (int w = 0; w < opt_window && c->state == ST_READY; w++) send_message(c, now_ns(), sent_total);
    }
    run_until(measure_until, "load", started);
    run_drain(started);
}

static void print_common(const char *mode, double load_cpu, double load_seconds) {
    printf("{\"event\":\"result\",\"mode\":\"%s\",\"conns\":%d,\"senders\":%d,\"open_at_end\":%d,"
           "\"connect_failed\":%llu,\"handshake_rejected\":%llu,\"closed_by_peer\":%llu,\"errors\":%llu,"
           "\"sent\":%llu,\"sent_measured\":%llu,\"acks\":%llu,\"deliveries\":%llu,\"other_messages\":%llu,"
           "\"bytes_in\":%llu,\"bytes_out\":%llu,\"measure_seconds\":%.3f,\"client_cpu_seconds\":%.3f,",
           mode, nconns, nsenders, connected_count, (unsigned long long)connect_failed,
           (unsigned long long)handshake_rejected, (unsigned long long)closed_by_peer,
           (unsigned long long)errors_total, (unsigned long long)sent_total, (unsigned long long)sent_measured,
           (unsigned long long)acks_total, (unsigned long long)deliveries_total,
           (unsigned long long)foreign_messages, (unsigned long long)bytes_in, (unsigned long long)bytes_out,
           load_seconds, load_cpu);
    hist_print("ack", &h_ack);
    printf(",");
    hist_print("delivery", &h_delivery);
    printf(",");
    hist_print("connect", &h_connect);
    printf(",");
    hist_print("send_lag", &h_send_lag);
}

static void load_spec(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) die("cannot open --spec file");
    char line[8192];
    int cap = 0;
    while (fgets(line, sizeof line, f)) {
        char role[4], host[256], spath[7000];
        int port;
        unsigned long long conv;
        if (sscanf(line, "%3s %255s %d %6999s %llu", role, host, &port, spath, &conv) != 5) continue;
        if (nconns == cap) {
            cap = cap ? cap * 2 : 1024;
            conns = xrealloc(conns, sizeof(conn_t) * (size_t)cap);
            senders = xrealloc(senders, sizeof(int) * (size_t)cap);
        }
        conn_t *c = &conns[nconns];
        memset(c, 0, sizeof *c);
        c->fd = -1;
        c->id = opt_id_offset + (uint32_t)nconns;
        c->conv = conv;
        c->sender = role[0] == 'S';
        c->dst.sin_family = AF_INET;
        c->dst.sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &c->dst.sin_addr) != 1) die("spec: HOST must be an IPv4 address");
        char host_port[300];
        snprintf(host_port, sizeof host_port, "%s:%d", host, port);
        c->host_port = strdup(host_port);
        c->path = strdup(spath);
        if (c->sender) senders[nsenders++] = nconns;
        nconns++;
    }
    fclose(f);
    if (nconns == 0) die("spec file has no connections");
}

static void parse_sizes(const char *arg) {
    nsizes = 0;
    for (const char *p = arg; *p && nsizes < 32;) {
        int v = atoi(p);
        if (v < 0 || v > 7000) die("--sizes: each size must be 0..7000");
        sizes[nsizes++] = v;
        p = strchr(p, ',');
        if (!p) break;
        p++;
    }
    if (nsizes == 0) die("--sizes: empty");
}

int main(int argc, char **argv) {
    const char *spec = NULL;
    static struct option options[] = {
        {"spec", required_argument, 0, 's'},        {"mode", required_argument, 0, 'm'},
        {"rate", required_argument, 0, 'r'},        {"duration", required_argument, 0, 'd'},
        {"warmup", required_argument, 0, 'w'},      {"drain", required_argument, 0, 'D'},
        {"hold", required_argument, 0, 'H'},        {"window", required_argument, 0, 'W'},
        {"hello", no_argument, 0, 'h'},             {"subprotocol", required_argument, 0, 'p'},
        {"origin", required_argument, 0, 'o'},      {"sources", required_argument, 0, 'S'},
        {"inflight", required_argument, 0, 'i'},    {"id-offset", required_argument, 0, 'I'},
        {"sizes", required_argument, 0, 'z'},       {"connect-timeout", required_argument, 0, 'T'},
        {"pause", required_argument, 0, 'P'},       {"quiet", no_argument, 0, 'q'},
        {"wait-go", no_argument, 0, 'g'},         {"binary", no_argument, 0, 'b'},
        {"help", no_argument, 0, 'u'},
        {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 's': spec = optarg; break;
        case 'm': opt_mode = optarg; break;
        case 'r': opt_rate = atof(optarg); break;
        case 'd': opt_duration = atof(optarg); break;
        case 'w': opt_warmup = atof(optarg); break;
        case 'D': opt_drain = atof(optarg); break;
        case 'H': opt_hold = atof(optarg); break;
        case 'W': opt_window = atoi(optarg); break;
        case 'h': opt_hello = 1; break;
        case 'p': opt_subprotocol = optarg; break;
        case 'o': opt_origin = optarg; break;
        case 'S': opt_sources = atoi(optarg); break;
        case 'i': opt_inflight = atoi(optarg); break;
        case 'I': opt_id_offset = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'z': parse_sizes(optarg); break;
        case 'T': opt_connect_timeout = atof(optarg); break;
        case 'P': opt_pause = atof(optarg); break;
        case 'q': opt_progress = 0; break;
        case 'g': opt_wait_go = 1; break;
        case 'b': opt_binary = 1; break;
        case 'u': fputs(usage, stdout); return 0;
        default: fputs(usage, stderr); return 2;
        }
    }
    if (!spec) die("--spec FILE is required");
    if (strcmp(opt_mode, "rate") && strcmp(opt_mode, "closed") && strcmp(opt_mode, "idle") && strcmp(opt_mode, "storm"))
        die("--mode must be rate, closed, idle or storm");
    if (opt_rate <= 0 || opt_window < 1 || opt_inflight < 1 || opt_sources < 1) die("bad numeric option");
    load_spec(spec);

    struct rlimit limit;
    getrlimit(RLIMIT_NOFILE, &limit);
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
    if ((rlim_t)nconns + 16 > limit.rlim_cur) die("more connections than this process may hold descriptors: use more processes");
    prctl(PR_SET_TIMERSLACK, 1000UL); /* 1 µs timer slack: scheduled sends leave on time */
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGPIPE, SIG_IGN);
    epfd = epoll_create1(EPOLL_CLOEXEC);

    double connect_seconds = connect_all("connect");
    printf("{\"event\":\"connected\",\"open\":%d,\"failed\":%llu,\"seconds\":%.3f}\n", connected_count,
           (unsigned long long)connect_failed, connect_seconds);
    fflush(stdout);

    uint64_t start_at = now_ns();
    if (opt_wait_go) {
        /* Several processes start their schedules together: the orchestrator writes one line with
         * the CLOCK_MONOTONIC start time in ns (Python's time.monotonic_ns()). */
        char line[64];
        if (!fgets(line, sizeof line, stdin)) die("--wait-go: stdin closed before the start time arrived");
        start_at = strtoull(line, NULL, 10);
    }
    double cpu_before = cpu_seconds();
    uint64_t load_started = now_ns();
    double reconnect_seconds = -1;
    int reconnected = 0;
    if (strcmp(opt_mode, "rate") == 0) {
        run_open_loop(start_at);
    } else if (strcmp(opt_mode, "closed") == 0) {
        run_closed_loop(start_at);
    } else if (strcmp(opt_mode, "idle") == 0) {
        run_until(now_ns() + (uint64_t)(opt_hold * 1e9), "hold", load_started);
    } else if (strcmp(opt_mode, "storm") == 0) {
        for (int i = 0; i < nconns; i++) {
            if (conns[i].fd >= 0) conn_close(&conns[i], ST_IDLE);
            conns[i].state = ST_IDLE;
        }
        connected_count = 0;
        connect_failed = 0;
        memset(&h_connect, 0, sizeof h_connect);
        wait_until(start_at + (uint64_t)(opt_pause * 1e9));
        reconnect_seconds = connect_all("reconnect");
        reconnected = connected_count;
    }
    double load_seconds = (now_ns() - load_started) / 1e9;
    if (measure_until != UINT64_MAX) load_seconds = (measure_until - measure_from) / 1e9;
    double load_cpu = cpu_seconds() - cpu_before;

    print_common(opt_mode, load_cpu, load_seconds);
    printf(",\"connect_seconds\":%.3f,\"reconnect_seconds\":%.3f,\"reconnected\":%d}\n", connect_seconds,
           reconnect_seconds, reconnected);
    fflush(stdout);
    for (int i = 0; i < nconns; i++)
        if (conns[i].fd >= 0) close(conns[i].fd);
    return 0;
}
