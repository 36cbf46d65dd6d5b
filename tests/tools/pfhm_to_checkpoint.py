#!/usr/bin/env python3
"""Test helper: write a pfhe model file back as a CryptoFace-style PyTorch checkpoint
({"state_dict": {"model.<name>": tensor, ...}} with num_batches_tracked entries), so that
the exporter can be tested without CryptoFace's own checkpoints."""
import json
import struct
import sys

import torch


def main():
    src, dst = sys.argv[1], sys.argv[2]
    data = open(src, "rb").read()
    assert data[:4] == b"PFHM", "not a pfhe model"
    _, json_len, count = struct.unpack("<IQQ", data[4:24])
    arch = json.loads(data[24:24 + json_len])
    start = 24 + json_len  # the data section, then pfhe's 16-byte checksum trailer
    floats = struct.unpack(f"<{count}f", data[start:start + 4 * count])
    sd = {}
    for t in arch["tensors"]:
        n = 1
        for d in t["shape"]:
            n *= d
        values = floats[t["offset"]:t["offset"] + n]
        sd["model." + t["name"]] = torch.tensor(values, dtype=torch.float32).reshape(t["shape"])
        if t["name"].endswith("running_var"):
            sd["model." + t["name"].replace("running_var", "num_batches_tracked")] = torch.tensor(100)
    torch.save({"state_dict": sd, "epoch": 1}, dst)
    print(" ".join(repr(v) for v in arch["l2"]))


if __name__ == "__main__":
    main()
