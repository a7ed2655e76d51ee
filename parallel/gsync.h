/* Gradient synchronisation in buckets (DESIGN.md §4): each bucket is one non-blocking
 * all-reduce (MPI_Iallreduce, in place) started as soon as its gradients are final (a layer's
 * backward in the last micro-batch), so communication overlaps the rest of the backward;
 * gsync_wait completes them all before the optimizer step. Buffers and requests are set up
 * once; nothing is allocated per step. */
#ifndef SHARDLORA_PARALLEL_GSYNC_H
#define SHARDLORA_PARALLEL_GSYNC_H

#include <stddef.h>

#include "grid.h"

typedef struct {
    MPI_Comm comm;
    float *buf;
    size_t n;
    GridBytes cat;
} GsyncBucket;

typedef struct {
    int n, cap;
    GsyncBucket *buckets;
    MPI_Request *req; /* [cap] */
    int *started;     /* [cap] */
} Gsync;

void gsync_init(Gsync *s, int max_buckets);
void gsync_free(Gsync *s);
/* Declares a bucket at setup; returns its index. Zero-length buckets are allowed (no-ops). */
int gsync_add(Gsync *s, MPI_Comm comm, float *buf, size_t n, GridBytes cat);
/* Starts bucket i (once per step). On a communicator of size 1 it is a no-op. */
void gsync_start(Gsync *s, Grid *g, int i);
/* Starts every bucket not started yet, then waits for all of them. */
void gsync_wait(Gsync *s, Grid *g);

#endif
