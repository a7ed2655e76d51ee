#!/usr/bin/env python3
"""Reads a training run's TensorBoard event files and metrics.csv without shardlora's code
and compares them with its metrics.jsonl.

Event files: the TFRecord framing is parsed here (uint64 LE length, masked CRC-32C of the
length, data, masked CRC-32C of the data) with a CRC-32C implemented here and checked on
the standard vector; each record is decoded with python3-protobuf from tb_event.proto (this
directory), which protoc compiles into a temporary directory. Checked: every CRC; each file
opens with file_version "brain.Event:2" and has one SessionLog START, at step 1 in the
first file and at the resume step in a resumed run's; after TensorBoard's purge rule (a START at step S drops the events of
steps >= S read before) there is one train event per step and one eval event per
evaluation, with the values of metrics.jsonl at float32 precision.
metrics.csv: the header, then the rows in the order of metrics.jsonl's lines (a step row
per step line, an eval row per eval line), with the same numbers.

usage: tracking_check.py OUT --files N [--resumed-at STEP]
"""
import argparse
import glob
import importlib
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

CSV_HEADER = ("step,epoch,loss,lr,grad_norm,tokens,tokens_per_s,mfu,skipped,"
              "eval_loss,eval_ppl,eval_tokens")
# metrics.jsonl key -> (TensorBoard tag, how many digits metrics.jsonl keeps: ("rel", r) for
# %.Ng, ("abs", a) for %.Nf)
TRAIN_TAGS = {
    "loss": ("train/loss", ("rel", 1e-8)),
    "lr": ("train/learning_rate", ("rel", 1e-8)),
    "grad_norm": ("train/grad_norm", ("rel", 1e-8)),
    "epoch": ("train/epoch", ("rel", 1e-5)),
    "tokens_per_s": ("train/tokens_per_s", ("abs", 5e-4)),
    "mfu": ("train/mfu", ("abs", 5e-6)),
}
EVAL_TAGS = {"eval_loss": ("eval/loss", ("rel", 1e-8)),
             "eval_ppl": ("eval/perplexity", ("rel", 1e-8))}


def crc32c_table():
    """CRC-32C (Castagnoli): reflected polynomial 0x82F63B78, one byte at a time."""
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


TABLE = crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked(c):
    """TFRecord's mask of a stored CRC."""
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def records(path):
    """Every record's data in the file; raises on a bad CRC or a truncated record."""
    b = open(path, "rb").read()
    off, out = 0, []
    while off < len(b):
        assert off + 12 <= len(b), f"{path}: truncated header at byte {off}"
        n, hcrc = struct.unpack_from("<QI", b, off)
        assert hcrc == masked(crc32c(b[off:off + 8])), f"{path}: length CRC at byte {off}"
        assert off + 12 + n + 4 <= len(b), f"{path}: truncated record at byte {off}"
        data = b[off + 12:off + 12 + n]
        (dcrc,) = struct.unpack_from("<I", b, off + 12 + n)
        assert dcrc == masked(crc32c(data)), f"{path}: data CRC of the record at byte {off}"
        out.append(data)
        off += 12 + n + 4
    return out


def load_pb2():
    here = os.path.dirname(os.path.abspath(__file__))
    tmp = tempfile.mkdtemp(prefix="tbcheck-")
    subprocess.run(["protoc", f"--proto_path={here}", f"--python_out={tmp}", "tb_event.proto"],
                   check=True)
    sys.path.insert(0, tmp)
    return importlib.import_module("tb_event_pb2")


def close(a, b, tol):
    """b (float32 or double) against metrics.jsonl's printed a, within the printed digits."""
    if a is None:
        return math.isnan(b)
    kind, t = tol
    slack = abs(a) * 1.2e-7  # float32's half ulp and a little
    return abs(a - b) <= (t * abs(a) if kind == "rel" else t) + slack


def read_file_events(path, pb2):
    """The decoded events of one file, with its first event checked."""
    evs = []
    for data in records(path):
        e = pb2.Event()
        e.ParseFromString(data)
        assert 1.7e9 < e.wall_time < 4e9, f"{path}: wall_time {e.wall_time}"
        evs.append(e)
    assert evs and evs[0].WhichOneof("what") == "file_version", f"{path}: no file_version first"
    assert evs[0].file_version == "brain.Event:2", f"{path}: {evs[0].file_version!r}"
    return evs


def read_events(out, pb2, nfiles, resumed_at):
    """TensorBoard's view: tag -> {step: value} after the purge rule; also the record count."""
    files = sorted(glob.glob(os.path.join(out, "events.out.tfevents.*")))
    assert len(files) == nfiles, f"{len(files)} event files, expected {nfiles}: {files}"
    view, nrec = {}, 0
    for i, path in enumerate(files):
        evs = read_file_events(path, pb2)
        nrec += len(evs)
        starts, seen = [], set()
        for e in evs:
            kind = e.WhichOneof("what")
            if kind == "session_log":
                assert e.session_log.status == pb2.SessionLog.START, f"{path}: {e.session_log}"
                for tag in view:
                    view[tag] = {s: v for s, v in view[tag].items() if s < e.step}
                starts.append(e.step)
            elif kind == "summary":
                for v in e.summary.value:
                    assert v.WhichOneof("value") == "simple_value", f"{path}: {v}"
                    assert (v.tag, e.step) not in seen, f"{path}: two events of {v.tag} at step {e.step}"
                    seen.add((v.tag, e.step))
                    view.setdefault(v.tag, {})[e.step] = v.simple_value
        want = [1] if i == 0 else [resumed_at]
        assert starts == want, f"{path}: SessionLog START at {starts}, want {want}"
    return view, nrec


def check_events(out, rows, pb2, nfiles, resumed_at):
    view, nrec = read_events(out, pb2, nfiles, resumed_at)
    train = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "eval_loss" in r]
    for key, (tag, tol) in list(TRAIN_TAGS.items()) + list(EVAL_TAGS.items()):
        want = train if key in TRAIN_TAGS else evals
        got = view.get(tag, {})
        assert sorted(got) == [r["step"] for r in want], \
            f"{tag}: steps {sorted(got)}, metrics.jsonl has {[r['step'] for r in want]}"
        for r in want:
            assert close(r[key], got[r["step"]], tol), f"{tag} at step {r['step']}: {got[r['step']]} vs {r[key]}"
    return nrec, len(train), len(evals)


def num(s):
    return None if s == "" else float(s)


def check_csv(out, rows):
    lines = open(os.path.join(out, "metrics.csv")).read().splitlines()
    assert lines[0] == CSV_HEADER, f"metrics.csv header: {lines[0]!r}"
    assert lines.count(CSV_HEADER) == 1, "metrics.csv has a second header"
    body = [dict(zip(CSV_HEADER.split(","), l.split(","))) for l in lines[1:]]
    assert len(body) == len(rows), f"metrics.csv: {len(body)} rows, metrics.jsonl {len(rows)} lines"
    for c, r in zip(body, rows):
        assert set(c) == set(CSV_HEADER.split(",")), f"metrics.csv row {c}"
        assert int(c["step"]) == r["step"] and close(r["epoch"], float(c["epoch"]), ("rel", 1e-5)), (c, r)
        if "loss" in r:
            for k, (_, tol) in TRAIN_TAGS.items():
                v = float(c[k])
                assert (r[k] is None and math.isnan(v)) or close(r[k], v, tol), f"step {r['step']} {k}: {c[k]} vs {r[k]}"
            assert int(c["tokens"]) == r["tokens"], (c, r)
            assert int(c["skipped"]) == int(r.get("skipped", False)), (c, r)
            assert c["eval_loss"] == c["eval_ppl"] == c["eval_tokens"] == "", c
        else:
            for k, (_, tol) in EVAL_TAGS.items():
                assert close(r[k], float(c[k]), tol), f"step {r['step']} {k}: {c[k]} vs {r[k]}"
            assert int(c["eval_tokens"]) == r["eval_tokens"]
            assert all(c[k] == "" for k in ("loss", "lr", "grad_norm", "tokens", "skipped")), c
    return len(body)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--files", type=int, required=True, help="event files expected in OUT")
    ap.add_argument("--resumed-at", type=int, default=None,
                    help="the resume step of the last file (its SessionLog START)")
    a = ap.parse_args()
    assert crc32c(b"123456789") == 0xE3069283, "CRC-32C test vector"
    rows = [json.loads(l) for l in open(os.path.join(a.out, "metrics.jsonl")) if l.strip()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == sorted(set(steps)), f"metrics.jsonl train steps {steps}"
    resumed = [r["step"] for r in rows if r.get("resumed")]
    want_resumed = [] if a.resumed_at is None else [a.resumed_at]
    assert resumed == want_resumed, f"metrics.jsonl: resumed at {resumed}, want {want_resumed}"
    pb2 = load_pb2()
    nrec, nt, ne = check_events(a.out, rows, pb2, a.files, a.resumed_at)
    ncsv = check_csv(a.out, rows)
    print(f"{a.out}: {a.files} event file(s), {nrec} records, CRCs OK; {nt} train and {ne} eval "
          f"events = metrics.jsonl; metrics.csv: {ncsv} rows = metrics.jsonl")


if __name__ == "__main__":
    main()
