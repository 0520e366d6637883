/* A C client of a real rimd, for tests/c_subscriber.rs, through librim_ring only:
 * publishes events that fire the test's rule and reads the decisions back from the
 * daemon's decision ring, checking the hash chain; then lets the ring lap it and checks
 * that every decision is either read or counted as missed.
 *
 * usage: subscribe SOCKET EVENTS LAP_EVENTS
 *   phase 1: EVENTS events, each one decision, read as they come; one line per decision
 *            on stdout, then "phase1 done"; waits for a line on stdin
 *   phase 2: LAP_EVENTS events published without reading, then the lap is read:
 *            "lapped missed=M read=R" */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rim_ring.h"

#define CHECK(expr, want)                                                              \
    do {                                                                               \
        int got_ = (expr);                                                             \
        if (got_ != (want)) {                                                          \
            fprintf(stderr, "%s:%d: %s = %d (%s), want %d\n", __FILE__, __LINE__, #expr, \
                    got_, rim_status_text(got_), (want));                              \
            return 1;                                                                  \
        }                                                                              \
    } while (0)

#define REQUIRE(cond)                                                              \
    do {                                                                           \
        if (!(cond)) {                                                             \
            fprintf(stderr, "%s:%d: requirement failed: %s\n", __FILE__, __LINE__, #cond); \
            return 1;                                                              \
        }                                                                          \
    } while (0)

static const char *NODE = "rim:sensor:c-sub:t1";
static const uint64_t WAIT_NS = 30000000000ULL; /* a watchdog, not a timing assertion */

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void hex(const uint8_t *h, char *out) {
    for (int i = 0; i < 32; i++) sprintf(out + 2 * i, "%02x", h[i]);
}

typedef struct feed {
    rim_producer *p;
    uint32_t node, status, temp, load;
    int64_t t0;
    long n;
} feed;

/* Publishes event number f->n: temp 90 + n (> 80: the rule fires), load 1. */
static int publish_next(feed *f) {
    rim_metric m[2] = {{f->temp, 90.0 + (double)f->n}, {f->load, 1.0}};
    rim_event ev;
    memset(&ev, 0, sizeof ev);
    ev.node = f->node;
    ev.status = f->status;
    ev.timestamp = f->t0 + f->n;
    ev.metrics = m;
    ev.metric_count = 2;
    int rc;
    while ((rc = rim_producer_publish(f->p, &ev)) == RIM_ERR_FULL) {
    }
    f->n++;
    return rc;
}

static void print_decision(const rim_decision *d) {
    char prev[65], hash[65];
    hex(d->prev_hash, prev);
    hex(d->hash, hash);
    printf("decision\t%llu\t%s\t%s\t%s\t%llu\t%lld\t%llu\t%llu\t%llu\t%s\t%s\t%u", (unsigned long long)d->chain_seq,
           d->rule_id, d->node_id, rim_severity_text(d->severity), (unsigned long long)d->event_seq,
           (long long)d->event_timestamp_ms, (unsigned long long)d->publish_ns, (unsigned long long)d->decided_ns,
           (unsigned long long)d->latency_ns, prev, hash, (unsigned)d->evidence_count);
    for (int i = 0; i < d->evidence_count; i++) printf("\t%s=%.17g", d->evidence[i].label, d->evidence[i].value);
    printf("\n");
}

static int argument_errors(const char *socket) {
    rim_subscriber *s = NULL;
    rim_decision d;
    CHECK(rim_subscriber_attach(NULL, 0, 0, &s), RIM_ERR_ARGUMENT);
    CHECK(rim_subscriber_attach(socket, 0, 1u << 7, &s), RIM_ERR_ARGUMENT);
    CHECK(rim_subscriber_attach(socket, 7, 0, &s), RIM_ERR_ATTACH); /* one shard only */
    CHECK(rim_subscriber_poll(NULL, &d), RIM_ERR_ARGUMENT);
    REQUIRE(rim_subscriber_missed(NULL) == 0 && rim_subscriber_lag(NULL) == 0);
    REQUIRE(strcmp(rim_status_text(RIM_ERR_LAPPED), "unknown status") != 0);
    REQUIRE(strcmp(rim_severity_text(RIM_SEVERITY_CRITICAL), "critical") == 0);
    rim_subscriber_close(NULL);
    return 0;
}

/* Phase 1: every decision read as it comes, checked against what was published. */
static int read_along(rim_subscriber *s, feed *f, long events) {
    rim_decision d;
    uint8_t prev[32];
    uint64_t prev_seq = 0;
    for (long i = 0; i < events; i++) {
        CHECK(publish_next(f), RIM_OK);
        CHECK(rim_subscriber_next(s, &d, WAIT_NS), RIM_OK);
        print_decision(&d);
        REQUIRE(strcmp(d.rule_id, "c-hot") == 0);
        REQUIRE(strcmp(d.node_id, NODE) == 0);
        REQUIRE(d.severity == RIM_SEVERITY_HIGH && (d.flags & RIM_DECISION_SWEEP) == 0);
        REQUIRE(d.event_timestamp_ms == f->t0 + i);
        REQUIRE(d.evidence_count == 2);
        REQUIRE(strcmp(d.evidence[0].label, "metric.temp") == 0 && d.evidence[0].value == 90.0 + (double)i);
        REQUIRE(strcmp(d.evidence[1].label, "metric.load") == 0 && d.evidence[1].value == 1.0);
        REQUIRE(d.publish_ns > 0 && d.decided_ns >= d.publish_ns && d.latency_ns == d.decided_ns - d.publish_ns);
        if (i > 0) REQUIRE(d.chain_seq == prev_seq + 1 && memcmp(d.prev_hash, prev, 32) == 0);
        memcpy(prev, d.hash, 32);
        prev_seq = d.chain_seq;
    }
    CHECK(rim_subscriber_poll(s, &d), RIM_ERR_EMPTY);
    CHECK(rim_subscriber_next(s, &d, 1000000ULL), RIM_ERR_TIMEOUT);
    return 0;
}

/* Phase 2: more decisions than the ring holds, none read until all are published. */
static int lap(rim_subscriber *s, feed *f, long events) {
    for (long i = 0; i < events; i++) CHECK(publish_next(f), RIM_OK);
    struct timespec ms = {0, 1000000};
    for (int waited = 0; rim_subscriber_lag(s) < (uint64_t)events; waited++) {
        REQUIRE(waited < 60000); /* watchdog: the daemon decides each event */
        nanosleep(&ms, NULL);
    }
    rim_decision d;
    CHECK(rim_subscriber_poll(s, &d), RIM_ERR_LAPPED);
    uint64_t missed = rim_subscriber_missed(s);
    REQUIRE(missed > 0);
    long read = 0;
    uint64_t last_ts = 0;
    int rc;
    while ((rc = rim_subscriber_poll(s, &d)) == RIM_OK) {
        read++;
        last_ts = (uint64_t)d.event_timestamp_ms;
    }
    CHECK(rc, RIM_ERR_EMPTY);
    REQUIRE(last_ts == (uint64_t)(f->t0 + f->n - 1));
    printf("lapped missed=%llu read=%ld\n", (unsigned long long)missed, read);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: subscribe SOCKET EVENTS LAP_EVENTS\n");
        return 2;
    }
    const char *socket = argv[1];
    long events = atol(argv[2]), lap_events = atol(argv[3]);
    if (argument_errors(socket)) return 1;

    rim_subscriber *s = NULL;
    CHECK(rim_subscriber_attach(socket, 0, RIM_SUB_VERIFY, &s), RIM_OK);
    feed f = {0};
    f.t0 = now_ms();
    CHECK(rim_producer_attach(socket, "c-sub-feed", 1 << 16, &f.p), RIM_OK);
    CHECK(rim_producer_intern(f.p, RIM_KIND_NODE_ID, NODE, strlen(NODE), &f.node), RIM_OK);
    CHECK(rim_producer_intern(f.p, RIM_KIND_STATUS, "OK", 2, &f.status), RIM_OK);
    CHECK(rim_producer_intern(f.p, RIM_KIND_METRIC_NAME, "temp", 4, &f.temp), RIM_OK);
    CHECK(rim_producer_intern(f.p, RIM_KIND_METRIC_NAME, "load", 4, &f.load), RIM_OK);

    if (read_along(s, &f, events)) return 1;
    printf("phase1 done\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return 1;

    if (lap(s, &f, lap_events)) return 1;
    rim_producer_close(f.p);
    rim_subscriber_close(s);
    return 0;
}
