#!/usr/bin/env python3
"""Rewrites a shardlora checkpoint manifest.pb with edited fields and a valid header and CRC,
so the reader's own checks (not the CRC) must catch the damage. The Manifest message
(io/checkpoint.proto) is edited at the protobuf wire level, with no protobuf package needed.

usage: manifest_edit.py MANIFEST EDIT
  EDIT: no-tensors | step=N | optimizer-step=N
File layout: magic "SLCKPT01", u64 LE message length, u32 LE CRC-32C of the message, message.
"""
import struct
import sys

# CRC-32C (Castagnoli), reflected polynomial 0x82F63B78
TABLE = []
for n in range(256):
    c = n
    for _ in range(8):
        c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    TABLE.append(c)


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def read_varint(b, i):
    v = shift = 0
    while True:
        x = b[i]
        i += 1
        v |= (x & 0x7F) << shift
        shift += 7
        if not x & 0x80:
            return v, i


def varint(v):
    v &= (1 << 64) - 1  # int64: two's complement, ten bytes when negative
    out = bytearray()
    while True:
        x = v & 0x7F
        v >>= 7
        out.append(x | (0x80 if v else 0))
        if not v:
            return bytes(out)


def fields(msg):
    """[(number, wire type, raw value bytes or int)] in file order."""
    out, i = [], 0
    while i < len(msg):
        key, i = read_varint(msg, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = read_varint(msg, i)
        elif wt == 2:
            n, i = read_varint(msg, i)
            v, i = msg[i:i + n], i + n
        elif wt == 1:
            v, i = msg[i:i + 8], i + 8
        elif wt == 5:
            v, i = msg[i:i + 4], i + 4
        else:
            raise SystemExit(f"wire type {wt} not expected")
        out.append((num, wt, v))
    return out


def encode(fs):
    out = bytearray()
    for num, wt, v in fs:
        out += varint(num << 3 | wt)
        if wt == 0:
            out += varint(v)
        elif wt == 2:
            out += varint(len(v)) + v
        else:
            out += v
    return bytes(out)


def set_varint(fs, num, value):
    fs = [f for f in fs if f[0] != num]
    return fs + [(num, 0, value)]


def main():
    path, edit = sys.argv[1], sys.argv[2]
    b = open(path, "rb").read()
    assert b[:8] == b"SLCKPT01", "not a manifest"
    (n,) = struct.unpack("<Q", b[8:16])
    fs = fields(b[20:20 + n])
    if edit == "no-tensors":
        fs = [f for f in fs if f[0] != 15]
    elif edit.startswith("step="):
        fs = set_varint(fs, 5, int(edit[5:]))
    elif edit.startswith("optimizer-step="):
        opt = [f for f in fs if f[0] == 10][0][2]
        o = set_varint(fields(opt), 2, int(edit[15:]))
        fs = [f if f[0] != 10 else (10, 2, encode(o)) for f in fs]
    else:
        raise SystemExit(f"unknown edit {edit}")
    msg = encode(fs)
    open(path, "wb").write(b"SLCKPT01" + struct.pack("<QI", len(msg), crc32c(msg)) + msg)


main()
