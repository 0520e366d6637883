/*
 * rim_ring.h: publish RimFastEvents to rimd from C or C++.
 *
 * Link with librim_ring.so or librim_ring.a (built by `cargo build --release -p rim-ring`,
 * in target/release/). A producer attaches to the daemon's socket, interns its strings
 * (node ids, statuses, source topics, metric names) once, then publishes events made of
 * numbers. Publishing never blocks: a full ring returns RIM_ERR_FULL. One producer is used
 * by one thread at a time.
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

#ifdef __cplusplus
}
#endif

#endif /* RIM_RING_H */
