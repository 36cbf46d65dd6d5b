#!/usr/bin/python3
"""Real face photographs for pfhe's real-image checks, from Debian's python3-skimage.

scikit-image ships a subset of Labeled Faces in the Wild (skimage/data/lfw_subset.npy:
100 grey-scale 25x25 face crops, then 100 non-faces). This writes the faces as RGB PNGs
(grey replicated over the three channels):
    OUT/calibration/face_000.png ... face_079.png   (the BatchNorm calibration set)
    OUT/held_out/face_080.png ... face_099.png      (never seen by calibration)
pfhe resizes them to the model's input side when it reads them.

    /usr/bin/python3 tools/lfw_faces.py OUT [--calibration N]
"""
import argparse
import pathlib
import sys

import numpy as np
from skimage import io

LFW = pathlib.Path("/usr/lib/python3/dist-packages/skimage/data/lfw_subset.npy")
FACES = 100  # the first 100 entries of lfw_subset are faces


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--calibration", type=int, default=80, help="faces for calibration (the rest are held out)")
    args = parser.parse_args()
    if not LFW.exists():
        sys.exit(f"lfw_faces: {LFW} not found (apt-get install python3-skimage)")
    if not 1 <= args.calibration < FACES:
        sys.exit(f"lfw_faces: --calibration must be in [1, {FACES - 1}]")
    faces = np.load(LFW)[:FACES]
    if faces.ndim != 3 or faces.min() < 0 or faces.max() > 1:
        sys.exit(f"lfw_faces: unexpected contents of {LFW}: shape {faces.shape}")
    for sub in ("calibration", "held_out"):
        (args.out / sub).mkdir(parents=True, exist_ok=True)
    for i, face in enumerate(faces):
        pixels = np.repeat((face * 255).round().astype(np.uint8)[:, :, None], 3, axis=2)
        sub = "calibration" if i < args.calibration else "held_out"
        io.imsave(args.out / sub / f"face_{i:03d}.png", pixels, check_contrast=False)
    print(f"lfw_faces: {args.calibration} calibration and {FACES - args.calibration} held-out faces in {args.out}")


if __name__ == "__main__":
    main()
