/*
 * rim_ring.h: publish RimFastEvents to rimd and read its decisions back, from C or C++.
 *
 * Link with librim_ring.so or librim_ring.a (built by `cargo build --release -p rim-ring`,
 * in target/release/; `pkg-config --cflags --libs rim_ring` once installed). A producer
 * attaches to the daemon's socket, interns its strings (node ids, statuses, source topics,
 * metric names) once, then publishes events made of numbers. Publishing never blocks: a
 * full ring returns RIM_ERR_FULL. One producer is used by one thread at a time.
 *
 * A subscriber (second half of this file) maps a reflex shard's decision ring read-only
 * and reads decisions at its own pace; the daemon never waits for it.
 */
#ifndef RIM_RING_H
#define RIM_RING_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes. */
#define RIM_OK 0
#define RIM_ERR_FULL 1        /* ring full: retry later */
#define RIM_ERR_TOO_LARGE 2   /* record larger than the ring takes */
#define RIM_ERR_INVALID 3     /* breaks a rule of the data model */
#define RIM_ERR_QUARANTINED 4 /* the daemon quarantined this ring */
#define RIM_ERR_CLOSED 5      /* the daemon closed this ring */
#define RIM_ERR_ATTACH 6      /* attaching to the daemon failed */
#define RIM_ERR_ARGUMENT 7    /* null pointer, bad length or kind */
#define RIM_ERR_INTERNAL 8    /* a bug in the library */

/* Symbol kinds for rim_producer_intern. */
#define RIM_KIND_NODE_ID 1      /* rim:{nodeType}:{namespace}:{localId}, <= 256 bytes */
#define RIM_KIND_METRIC_NAME 2  /* 1..64 bytes */
#define RIM_KIND_STATUS 3       /* <= 64 bytes */
#define RIM_KIND_SOURCE_TOPIC 4 /* <= 249 bytes */

/* rim_event.flags: which optional fields are present. */
#define RIM_HAS_EVENT_ID (1u << 0)
#define RIM_HAS_PRICE (1u << 1)
#define RIM_HAS_VOLUME (1u << 2)
#define RIM_HAS_STRESS (1u << 3)
#define RIM_HAS_SOURCE_TOPIC (1u << 4)

typedef struct rim_producer rim_producer;

typedef struct rim_metric {
    uint32_t name; /* RIM_KIND_METRIC_NAME symbol, unique within the event */
    double value;  /* finite */
} rim_metric;

typedef struct rim_event {
    uint32_t node;          /* RIM_KIND_NODE_ID symbol */
    uint32_t status;        /* RIM_KIND_STATUS symbol */
    uint32_t source_topic;  /* RIM_KIND_SOURCE_TOPIC symbol, if RIM_HAS_SOURCE_TOPIC */
    uint32_t flags;         /* RIM_HAS_* */
    int64_t timestamp;      /* event time, epoch milliseconds */
    double price;           /* if RIM_HAS_PRICE, finite */
    double volume;          /* if RIM_HAS_VOLUME, finite */
    double stress;          /* if RIM_HAS_STRESS, finite */
    uint64_t publish_ns;    /* CLOCK_MONOTONIC ns; 0: stamped by the library */
    const char *event_id;   /* UTF-8, not NUL-terminated, if RIM_HAS_EVENT_ID, <= 128 bytes */
    size_t event_id_len;
    const rim_metric *metrics; /* critical_metrics */
    size_t metric_count;       /* <= 64 */
} rim_event;

/* Attach to the daemon at socket_path and get a ring of `capacity` bytes (power of two). */
int rim_producer_attach(const char *socket_path, const char *name, size_t capacity, rim_producer **out);
/* Define `text` as a symbol of `kind` in this ring (once; later calls return the same). */
int rim_producer_intern(rim_producer *p, int kind, const char *text, size_t len, uint32_t *out);
/* Publish one event; never blocks. */
int rim_producer_publish(rim_producer *p, const rim_event *ev);
/* Ring position just past the last record published / consumed by the daemon. */
uint64_t rim_producer_position(const rim_producer *p);
uint64_t rim_producer_consumed_position(const rim_producer *p);
/* How far the daemon has made this ring's records durable (journaled and synced). */
uint64_t rim_producer_durable_position(const rim_producer *p);
/* What the daemon did not take from this ring, per reason; a record's verdict is counted
   before the consumed position passes it. */
typedef struct rim_verdicts {
    uint64_t rejected;           /* refused for any reason but duplication */
    uint64_t invalid;            /* failed the daemon's validation */
    uint64_t duplicates;         /* an event_id already taken for the node: dropped */
    uint64_t node_table_full;    /* the daemon's node table is full */
    uint64_t event_time_ahead;   /* timestamp too far ahead of the daemon's clock */
    uint64_t event_time_too_old; /* timestamp older than the daemon allows */
    uint64_t node_not_allowed;   /* this ring may not publish for the node (reserved) */
} rim_verdicts;
int rim_producer_verdicts(const rim_producer *p, rim_verdicts *out);
/* Wait up to timeout_ns until every record before pos is durable: 1 when it is, 0 on timeout. */
int rim_producer_wait_durable(const rim_producer *p, uint64_t pos, uint64_t timeout_ns);
/* Say no more records will come, and free the producer. */
void rim_producer_close(rim_producer *p);
/* A static description of a status code. */
const char *rim_status_text(int status);

/* ------------------------------------------------------------------------------------
 * Subscribers: decisions from a reflex shard's broadcast ring.
 *
 * Each reflex shard publishes its decisions on its own ring, in the order of its hash
 * chain. A subscriber maps the ring read-only (it cannot disturb the daemon or other
 * subscribers) and reads at its own pace. If it falls a whole ring behind, the daemon
 * overwrites what it has not read: the next poll returns RIM_ERR_LAPPED and
 * rim_subscriber_missed() grows by the number lost; reading goes on from the oldest
 * decision still intact. After rim_subscriber_attach nothing allocates. One subscriber is
 * used by one thread at a time; open one per thread or per shard.
 *
 *     rim_subscriber *s;
 *     rim_decision d;
 *     if (rim_subscriber_attach("/dev/shm/rimd/rimd.sock", 0, RIM_SUB_VERIFY, &s) != RIM_OK) ...
 *     for (;;) {
 *         int rc = rim_subscriber_next(s, &d, 1000000000ULL);
 *         if (rc == RIM_OK) printf("%s %s %s\n", rim_severity_text(d.severity), d.rule_id, d.node_id);
 *         else if (rc == RIM_ERR_LAPPED) fprintf(stderr, "missed %llu\n", (unsigned long long)rim_subscriber_missed(s));
 *     }
 * ------------------------------------------------------------------------------------ */

/* Subscriber status codes (rim_status_text names them too). */
#define RIM_ERR_EMPTY 16   /* no new decision yet */
#define RIM_ERR_LAPPED 17  /* decisions were lost to this subscriber; see rim_subscriber_missed */
#define RIM_ERR_CORRUPT 18 /* a record that is not a valid decision was skipped */
#define RIM_ERR_CHAIN 19   /* the decision (filled in) breaks the hash chain (RIM_SUB_VERIFY) */
#define RIM_ERR_TIMEOUT 20 /* nothing arrived in time */

/* rim_subscriber_attach flags. */
#define RIM_SUB_FROM_OLDEST (1u << 0) /* start with the oldest decision still in the ring */
#define RIM_SUB_VERIFY (1u << 1)      /* check each decision's SHA-256 and its chain link */

/* Limits of a decision's fields (the record format's). */
#define RIM_RULE_ID_MAX 64
#define RIM_NODE_ID_MAX 256
#define RIM_LABEL_MAX 80
#define RIM_EVIDENCE_MAX 16

/* Severity codes (rim_severity_text names them). */
#define RIM_SEVERITY_INFO 0
#define RIM_SEVERITY_LOW 1
#define RIM_SEVERITY_MEDIUM 2
#define RIM_SEVERITY_HIGH 3
#define RIM_SEVERITY_CRITICAL 4

/* rim_decision.flags */
#define RIM_DECISION_SWEEP (1u << 0)   /* fired by the staleness sweep, not by an event */
#define RIM_DECISION_RESUMED (1u << 1) /* first after the chain resumed at a daemon restart:
                                          its chain_seq may jump (RIM_SUB_VERIFY accepts it) */

typedef struct rim_subscriber rim_subscriber;

/* One input a rule read, with its value (NaN when it was unknown). */
typedef struct rim_evidence {
    char label[RIM_LABEL_MAX + 1]; /* e.g. "metric.temp", "zscore(price)"; NUL-terminated */
    double value;
} rim_evidence;

/* A decision, copied out of the ring: self-contained, valid until the caller reuses it.
 * Strings are UTF-8 and NUL-terminated. The record on the ring: ring/src/decision.rs. */
typedef struct rim_decision {
    uint64_t chain_seq;          /* position in its shard's chain: 1, 2, ... per epoch */
    uint64_t epoch_ns;           /* when the chain began, unix ns */
    uint64_t rule_generation;    /* rule-set generation */
    uint64_t event_seq;          /* ingest's sequence number of the triggering event */
    int64_t event_timestamp_ms;  /* its event time, epoch ms */
    uint64_t publish_ns;         /* producer's publish time, CLOCK_MONOTONIC ns; 0 unknown */
    uint64_t decided_ns;         /* decision time, CLOCK_MONOTONIC ns */
    uint64_t latency_ns;         /* publish (or ingest) -> decision */
    uint32_t shard;              /* reflex shard: one chain per shard */
    uint32_t rule_version;
    uint32_t node_index;         /* dense node index, for this run of the daemon */
    uint8_t severity;            /* RIM_SEVERITY_* */
    uint8_t flags;               /* RIM_DECISION_* */
    uint16_t evidence_count;     /* entries used in evidence[] */
    uint8_t prev_hash[32];       /* SHA-256 of the previous decision (zero for the first) */
    uint8_t hash[32];            /* SHA-256 of this decision's record */
    char rule_id[RIM_RULE_ID_MAX + 1];
    char node_id[RIM_NODE_ID_MAX + 1];
    rim_evidence evidence[RIM_EVIDENCE_MAX];
} rim_decision;

#if defined(__cplusplus) && __cplusplus >= 201103L
static_assert(sizeof(rim_decision) == 2008, "rim_decision layout differs from librim_ring's");
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(sizeof(rim_decision) == 2008, "rim_decision layout differs from librim_ring's");
#endif

/* Attach to the daemon at socket_path as a subscriber of reflex shard `shard` (0 always
 * exists). flags: RIM_SUB_*. RIM_ERR_ATTACH when no daemon answers or it has no such shard. */
int rim_subscriber_attach(const char *socket_path, uint32_t shard, uint32_t flags, rim_subscriber **out);
/* Read the next decision into *out without waiting: RIM_OK, RIM_ERR_EMPTY, RIM_ERR_LAPPED,
 * RIM_ERR_CORRUPT, or (RIM_SUB_VERIFY) RIM_ERR_CHAIN with *out filled in. After a lap or a
 * skipped record the chain check starts afresh at the next decision. */
int rim_subscriber_poll(rim_subscriber *s, rim_decision *out);
/* As rim_subscriber_poll, waiting up to timeout_ns (spin ~50 us, then sleep in slices of
 * at most 100 us); RIM_ERR_TIMEOUT when nothing came. */
int rim_subscriber_next(rim_subscriber *s, rim_decision *out, uint64_t timeout_ns);
/* Decisions lost to laps so far. */
uint64_t rim_subscriber_missed(const rim_subscriber *s);
/* Decisions published but not yet read. */
uint64_t rim_subscriber_lag(const rim_subscriber *s);
/* Ring sequence number of the next decision this subscriber reads. */
uint64_t rim_subscriber_position(const rim_subscriber *s);
/* Detach and free the subscriber. */
void rim_subscriber_close(rim_subscriber *s);
/* A static name of a severity code: "info" ... "critical", "unknown". */
const char *rim_severity_text(uint8_t severity);

#ifdef __cplusplus
}
#endif

#endif /* RIM_RING_H */
