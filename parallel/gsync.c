/* Bucketed non-blocking gradient all-reduces (see gsync.h). */
#include "gsync.h"

#include <stdlib.h>
#include <string.h>

void gsync_init(Gsync *s, int max_buckets) {
    memset(s, 0, sizeof *s);
    s->cap = max_buckets;
    s->buckets = calloc((size_t)max_buckets, sizeof *s->buckets);
    s->req = calloc((size_t)max_buckets, sizeof *s->req);
    s->started = calloc((size_t)max_buckets, sizeof *s->started);
    SL_CHECK(s->buckets && s->req && s->started, "out of memory");
    for (int i = 0; i < max_buckets; i++)
        s->req[i] = MPI_REQUEST_NULL;
}

void gsync_free(Gsync *s) {
    free(s->buckets);
    free(s->req);
    free(s->started);
    memset(s, 0, sizeof *s);
}

int gsync_add(Gsync *s, MPI_Comm comm, float *buf, size_t n, GridBytes cat) {
    SL_CHECK(s->n < s->cap, "more than %d gradient buckets", s->cap);
    SL_CHECK(n < (size_t)1 << 31, "gradient bucket of %zu floats is too large for one call", n);
    s->buckets[s->n] = (GsyncBucket){comm, buf, n, cat};
    return s->n++;
}

void gsync_start(Gsync *s, Grid *g, int i) {
    GsyncBucket *b = &s->buckets[i];
    SL_CHECK(!s->started[i], "gradient bucket %d started twice", i);
    s->started[i] = 1;
    int size = 1;
    MPI_Comm_size(b->comm, &size);
    if (b->n == 0 || size == 1) return;
    int rc =
        MPI_Iallreduce(MPI_IN_PLACE, b->buf, (int)b->n, MPI_FLOAT, MPI_SUM, b->comm, &s->req[i]);
    SL_CHECK(rc == MPI_SUCCESS, "MPI_Iallreduce failed (%d)", rc);
    g->bytes[b->cat] += b->n * sizeof(float);
    g->calls[b->cat]++;
}

void gsync_wait(Gsync *s, Grid *g) {
    for (int i = 0; i < s->n; i++)
        if (!s->started[i]) gsync_start(s, g, i);
    int rc = MPI_Waitall(s->n, s->req, MPI_STATUSES_IGNORE);
    SL_CHECK(rc == MPI_SUCCESS, "MPI_Waitall failed (%d)", rc);
    for (int i = 0; i < s->n; i++) {
        s->started[i] = 0;
        s->req[i] = MPI_REQUEST_NULL;
    }
}
