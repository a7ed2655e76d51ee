"""Deterministic pre-tokenised JSONL for the reference and MPI tests (one row a line on stdout):
ROWS rows of LO..HI random ids below VOCAB from random.Random(SEED), optionally with masked
prompts (labels -100 on the first k tokens) or packed documents.

The draws are made in a fixed order per mode, so a given command line always writes the same
bytes (the tests' tolerances were measured on these rows):
  --mask none        no labels
  --mask fixed:K     odd rows: labels mask the first K tokens (no draw)
  --mask odd:A:B     odd rows: k = randint(A, B) drawn after the ids, labels mask k tokens
  --mask all:A:B     every row draws k = randint(A, B) after the ids; odd rows use it
  --zero-and-split   row 2 has no counted label at all; row 4 holds two documents (a split
                     drawn after its ids, position_ids restart, each first token unlabelled)
  --packed           each row: 3 documents of randint(5,12), randint(4,9), randint(3,8) ids,
                     position_ids restarting at 0, the first token of each unlabelled
"""
import argparse
import json
import random
import sys


def rows(seed, n_rows, lo, hi, vocab, mask="none", packed=False, zero_and_split=False):
    rng = random.Random(seed)
    kind, *arg = mask.split(":")
    for i in range(n_rows):
        if packed:
            ids, pos, lab = [], [], []
            for n in (rng.randint(5, 12), rng.randint(4, 9), rng.randint(3, 8)):
                d = [rng.randrange(vocab) for _ in range(n)]
                ids += d
                pos += list(range(n))
                lab += [-100] + d[1:]
            yield {"input_ids": ids, "labels": lab, "position_ids": pos}
            continue
        n = rng.randint(lo, hi)
        ids = [rng.randrange(vocab) for _ in range(n)]
        row = {"input_ids": ids}
        if kind == "all":
            k = rng.randint(int(arg[0]), int(arg[1]))
        if i % 2 and kind != "none":
            if kind == "fixed":
                k = int(arg[0])
            elif kind == "odd":
                k = rng.randint(int(arg[0]), int(arg[1]))
            row["labels"] = [-100] * k + ids[k:]
        if zero_and_split and i == 2:
            row["labels"] = [-100] * n
        if zero_and_split and i == 4:
            a = rng.randint(3, n - 3)
            row["position_ids"] = list(range(a)) + list(range(n - a))
            row["labels"] = [-100] + ids[1:a] + [-100] + ids[a + 1:]
        yield row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--len", type=int, nargs=2, metavar=("LO", "HI"), default=(10, 30))
    ap.add_argument("--vocab", type=int, required=True)
    ap.add_argument("--mask", default="none", help="none | fixed:K | odd:A:B | all:A:B")
    ap.add_argument("--packed", action="store_true")
    ap.add_argument("--zero-and-split", action="store_true")
    a = ap.parse_args()
    if a.mask.split(":")[0] not in ("none", "fixed", "odd", "all"):
        ap.error(f"--mask {a.mask}: none, fixed:K, odd:A:B or all:A:B")
    for r in rows(a.seed, a.rows, a.len[0], a.len[1], a.vocab, a.mask, a.packed, a.zero_and_split):
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
