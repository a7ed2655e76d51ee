/* TensorBoard event files: OUT/events.out.tfevents.<unix time>.<host name>, a TFRecord
 * stream of Event protobufs (train/tboard.proto) that TensorBoard reads as scalar charts.
 * Record framing (TFRecord): uint64 LE length, masked CRC-32C of those 8 bytes, the data,
 * masked CRC-32C of the data; mask(c) = ((c >> 15) | (c << 17)) + 0xa282ead8.
 * World rank 0 writes; every record is flushed, so a crash loses at most the record being
 * written. A write error is a warning (once) and never stops training. */
#ifndef SHARDLORA_TRAIN_TBOARD_H
#define SHARDLORA_TRAIN_TBOARD_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "trainer.h"

/* Bytes of one record's Event (an Event of TBOARD_MAX_SCALARS short tags is far smaller). */
#define TBOARD_MAX_EVENT 4096
#define TBOARD_MAX_SCALARS 16

typedef struct {
    FILE *f;    /* NULL: not open (other ranks, or it could not be created) */
    char *path; /* the event file (malloc'd) */
    int failed; /* a write failed: warned once, nothing more is written */
    uint8_t rec[12 + TBOARD_MAX_EVENT + 4]; /* one framed record: header, Event, CRC */
} TBoard;

/* One scalar: a tag ("train/loss") and its value (stored as a float32). */
typedef struct {
    const char *tag;
    double value;
} TBoardScalar;

/* Creates a new event file in dir (another name if one of this second and host exists) and
 * writes its first Event, file_version "brain.Event:2", then a SessionLog START at
 * first_step: TensorBoard drops the events of steps >= first_step it read from the older
 * files of dir, which this run writes again (a resumed run's steps after its checkpoint;
 * everything, for a fresh run in a used directory), as metrics.jsonl drops those lines.
 * Returns 0 (with a warning, tb left closed) when the file cannot be created. */
int tboard_open(TBoard *tb, const char *dir, int64_t first_step);
void tboard_close(TBoard *tb);

/* One Event at `step` with a summary of the n scalars (n <= TBOARD_MAX_SCALARS), stamped
 * with the current time. Non-finite values are written as they are (TensorBoard draws NaN
 * as a gap). Nothing when tb is closed or has failed. */
void tboard_scalars(TBoard *tb, int64_t step, const TBoardScalar *v, int n);

/* A step's scalars, under the tags Hugging Face's Trainer uses where it has one:
 * train/loss, train/learning_rate, train/grad_norm, train/epoch, and train/tokens_per_s,
 * train/mfu (a fraction). */
void tboard_train(TBoard *tb, const TrainerStep *s, double epoch, double lr, double tps,
                  double mfu);
/* An evaluation's: eval/loss, eval/perplexity. */
void tboard_eval(TBoard *tb, int64_t step, double loss);

/* A TFRecord frame of the len bytes at data into out (room for len + 16 bytes); returns the
 * frame's length. */
size_t tboard_frame(uint8_t *out, const uint8_t *data, size_t len);

#endif
