/* A C feed handler for ring/tests/c_abi.rs: attaches to the socket in argv[1], publishes
 * argv[2] events with every field, and checks the error paths of the C ABI. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: publish SOCKET COUNT\n");
        return 2;
    }
    long count = atol(argv[2]);
    rim_producer *p = NULL;
    CHECK(rim_producer_attach(argv[1], "c-feed", 1 << 16, &p), RIM_OK);
    CHECK(rim_producer_attach(NULL, "x", 4096, &p), RIM_ERR_ARGUMENT);

    uint32_t node, status, topic, bid, ask, same;
    const char *node_id = "rim:equity:nyse:IBM.N";
    CHECK(rim_producer_intern(p, RIM_KIND_NODE_ID, node_id, strlen(node_id), &node), RIM_OK);
    CHECK(rim_producer_intern(p, RIM_KIND_STATUS, "OK", 2, &status), RIM_OK);
    CHECK(rim_producer_intern(p, RIM_KIND_SOURCE_TOPIC, "feed.c", 6, &topic), RIM_OK);
    CHECK(rim_producer_intern(p, RIM_KIND_METRIC_NAME, "bid", 3, &bid), RIM_OK);
    CHECK(rim_producer_intern(p, RIM_KIND_METRIC_NAME, "ask", 3, &ask), RIM_OK);
    CHECK(rim_producer_intern(p, RIM_KIND_METRIC_NAME, "bid", 3, &same), RIM_OK);
    if (same != bid) {
        fprintf(stderr, "interning twice gave %u then %u\n", bid, same);
        return 1;
    }
    CHECK(rim_producer_intern(p, RIM_KIND_NODE_ID, "not-a-node", 10, &same), RIM_ERR_INVALID);
    CHECK(rim_producer_intern(p, 9, "x", 1, &same), RIM_ERR_ARGUMENT);

    rim_metric metrics[2];
    rim_event ev;
    char id[32];
    for (long i = 0; i < count; i++) {
        memset(&ev, 0, sizeof ev);
        metrics[0].name = bid;
        metrics[0].value = 100.0 + (double)i;
        metrics[1].name = ask;
        metrics[1].value = 100.5 + (double)i;
        int n = snprintf(id, sizeof id, "c-%ld", i);
        ev.node = node;
        ev.status = status;
        ev.source_topic = topic;
        ev.flags = RIM_HAS_EVENT_ID | RIM_HAS_PRICE | RIM_HAS_SOURCE_TOPIC | (i % 2 ? RIM_HAS_STRESS : 0);
        ev.timestamp = 1764000000000LL + i;
        ev.price = (double)i / 4.0;
        ev.stress = 0.5;
        ev.event_id = id;
        ev.event_id_len = (size_t)n;
        ev.metrics = metrics;
        ev.metric_count = 2;
        int rc;
        while ((rc = rim_producer_publish(p, &ev)) == RIM_ERR_FULL) {
        }
        CHECK(rc, RIM_OK);
    }
    /* Refusals: a duplicate metric, a symbol of the wrong kind, a non-finite price. */
    metrics[1].name = bid;
    CHECK(rim_producer_publish(p, &ev), RIM_ERR_INVALID);
    metrics[1].name = ask;
    ev.status = node;
    CHECK(rim_producer_publish(p, &ev), RIM_ERR_INVALID);
    ev.status = status;
    ev.price = 1.0 / 0.0;
    CHECK(rim_producer_publish(p, &ev), RIM_ERR_INVALID);
    CHECK(rim_producer_publish(p, NULL), RIM_ERR_ARGUMENT);
    /* Durability: a position never reached times out; the end becomes durable once the
       consumer (the test, standing in for the daemon's journal) says so. */
    uint64_t end = rim_producer_position(p);
    CHECK(rim_producer_wait_durable(p, end + 4096, 1000000ULL), 0);
    CHECK(rim_producer_wait_durable(NULL, end, 1000ULL), 0);
    CHECK(rim_producer_wait_durable(p, end, 30000000000ULL), 1);
    if (rim_producer_durable_position(p) < end) {
        fprintf(stderr, "durable position %llu < %llu\n", (unsigned long long)rim_producer_durable_position(p),
                (unsigned long long)end);
        return 1;
    }
    /* What the consumer refused, read once it has consumed everything. */
    rim_verdicts v;
    CHECK(rim_producer_verdicts(NULL, &v), RIM_ERR_ARGUMENT);
    CHECK(rim_producer_verdicts(p, NULL), RIM_ERR_ARGUMENT);
    CHECK(rim_producer_verdicts(p, &v), RIM_OK);
    printf("rejected=%llu duplicates=%llu event_time_ahead=%llu\n", (unsigned long long)v.rejected,
           (unsigned long long)v.duplicates, (unsigned long long)v.event_time_ahead);
    printf("position=%llu\n", (unsigned long long)rim_producer_position(p));
    rim_producer_close(p);
    return 0;
}
