#!/usr/bin/env python3
"""Convert a CryptoFace PatchCNN checkpoint (PyTorch state_dict) into a pfhe model file.

Usage (Debian's python3-torch):
    /usr/bin/python3 tools/export_cryptoface.py CHECKPOINT.ckpt OUT.pfhm --patch-size 32 \
        [--l2 A B C]

The state_dict uses CryptoFace's module names: nets.{p}.conv, nets.{p}.layers.{j}.herpn1/
conv1/herpn2/conv2/shortcut.0/shortcut.1, nets.{p}.herpnpool.herpn, nets.{p}.bn, linear,
bn. Strides are not stored in a state_dict; as in CryptoFace, a block whose shortcut is a
convolution halves the resolution (stride 2) and the others keep it (stride 1).
The L2-normalisation polynomial y -> a y^2 + b y + c is taken from --l2, or from the
checkpoint keys l2.a/l2.b/l2.c (or norm.a/...) when present; without either the export
refuses (fit it with pfhe on calibration images instead of guessing). --classifier marks a
model whose head outputs class logits (no normalisation; docs/MODEL_FORMAT.md "task").
The file format is documented in docs/MODEL_FORMAT.md.
"""
import argparse
import json
import re
import struct
import sys

MAGIC = b"PFHM"
VERSION = 1
TRAILER_MAGIC = b"PFHE-XH3"


def load_state_dict(path):
    import torch  # imported here so that --help works without torch

    obj = torch.load(path, map_location="cpu")
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        sys.exit(f"{path}: not a state_dict")
    out = {}
    for key, value in obj.items():
        key = re.sub(r"^(model|module)\.", "", key)
        if key.endswith("num_batches_tracked"):
            continue
        out[key] = value.detach().to(dtype=torch.float64).cpu().numpy()
    return out


def architecture(sd, patch_size, l2, classifier=False):
    nets = sorted({int(m.group(1)) for k in sd for m in [re.match(r"nets\.(\d+)\.", k)] if m})
    if not nets or nets != list(range(len(nets))):
        sys.exit("checkpoint has no nets.0, nets.1, ... backbones")
    grid = int(round(len(nets) ** 0.5))
    if grid * grid != len(nets):
        sys.exit(f"{len(nets)} backbones do not form a square grid")
    stem = sd["nets.0.conv.weight"].shape[0]
    blocks = []
    channels = stem
    j = 0
    while f"nets.0.layers.{j}.conv1.weight" in sd:
        out = sd[f"nets.0.layers.{j}.conv1.weight"].shape[0]
        has_shortcut = f"nets.0.layers.{j}.shortcut.0.weight" in sd
        blocks.append([int(out), 2 if has_shortcut else 1])
        channels = out
        j += 1
    if not blocks:
        sys.exit("checkpoint has no HerPNConv blocks (nets.0.layers.0...)")
    if l2 is None and classifier:
        l2 = [0.0, 0.0, 1.0]  # unused: a classifier's output is its logits
    if l2 is None:
        for prefix in ("l2", "norm", "l2norm"):
            if all(f"{prefix}.{c}" in sd for c in "abc"):
                l2 = [float(sd[f"{prefix}.{c}"].reshape(-1)[0]) for c in "abc"]
        if l2 is None:
            sys.exit("no L2 polynomial in the checkpoint: pass --l2 A B C")
    return {
        "architecture": "cryptoface_pcnn",
        "grid": grid,
        "patch_size": patch_size,
        "embedding": int(sd["linear.weight"].shape[0]),
        "stem_channels": int(stem),
        "blocks": blocks,
        "pool_size": 2,
        "l2": l2,
        "task": "classification" if classifier else "verification",
    }


def write_model_file(path, header, tensors):
    """A pfhe model file (docs/MODEL_FORMAT.md): the JSON header with a "tensors" table,
    then every tensor (name -> array-like, in order) as little-endian float32."""
    floats, entries = [], []
    for name, values in tensors.items():
        entries.append({"name": name, "shape": list(values.shape), "offset": len(floats)})
        floats.extend(float(v) for v in values.reshape(-1))
    text = json.dumps(dict(header, tensors=entries), separators=(",", ":")).encode()
    data = MAGIC + struct.pack("<IQQ", VERSION, len(text), len(floats)) + text + struct.pack(f"<{len(floats)}f", *floats)
    with open(path, "wb") as f:
        f.write(data + checksum_trailer(data))


def checksum_trailer(data):
    """pfhe's file checksum (docs/FORMAT.md): "PFHE-XH3" then XXH3-64 of the data, u64
    little-endian (Debian's python3-xxhash)."""
    import xxhash  # imported here so that --help works without it

    return TRAILER_MAGIC + struct.pack("<Q", xxhash.xxh3_64_intdigest(data))


def write(path, arch, sd):
    write_model_file(path, arch, {k: sd[k] for k in sd if re.match(r"(nets\.\d+\.|linear\.|bn\.)", k)})


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("output")
    p.add_argument("--patch-size", type=int, default=32)
    p.add_argument("--l2", type=float, nargs=3, metavar=("A", "B", "C"))
    p.add_argument("--classifier", action="store_true",
                   help="the head outputs class logits (no L2 normalisation, no matching)")
    args = p.parse_args()
    sd = load_state_dict(args.checkpoint)
    write(args.output, architecture(sd, args.patch_size, args.l2, args.classifier), sd)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
