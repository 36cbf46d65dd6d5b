#!/usr/bin/env python3
"""Train a small HerPN PatchCNN on Fashion-MNIST and export it as a pfhe model file and as ONNX.

Same layer types as CryptoFaceNet (HerPN with three affine-free BatchNorms, HerPNConv blocks
with conv shortcuts, HerPNPool, per-patch backbones, one linear head split over patches,
affine-free BatchNorm1d) and CryptoFace's module names, so that tools/export_cryptoface.py
converts it. 28x28 images padded to 32x32 (background -1), 2x2 grid of 16x16 patches,
channels 8, 8, 16 (s2), 32 (s2), 10 classes. CPU only (Debian's python3-torch), a few
minutes on 2 cores. Data: Debian's package dataset-fashion-mnist.

    /usr/bin/python3 tools/train_fashion_mnist.py OUT_DIR [--epochs 3] [--seed 1]

Writes OUT_DIR/fashion_pcnn.ckpt (state_dict), OUT_DIR/fashion_pcnn.pfhm (via the exporter),
OUT_DIR/fashion_pcnn.onnx (torch.onnx.export, opset 13: what `pfhe import` reads) and
OUT_DIR/fashion_pcnn.json (plaintext test accuracy on all 10,000 test images).
"""
import argparse
import gzip
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import torch
from torch import nn

DATA = "/usr/share/datasets/fashion-mnist"
GRID, PATCH, STEM, BLOCKS, CLASSES = 2, 16, 8, [(8, 1), (16, 2), (32, 2)], 10


def read_idx(name):
    with gzip.open(os.path.join(DATA, name), "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def to_input(images):
    """uint8 (N, 28, 28) -> float (N, 3, 32, 32) in [-1, 1], as pfhe's image loader maps pixels."""
    x = torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0)
    x = nn.functional.pad(x, (2, 2, 2, 2), value=-1.0)
    return x[:, None].expand(-1, 3, -1, -1).contiguous()


class HerPN(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.bn0 = nn.BatchNorm2d(c, affine=False)
        self.bn1 = nn.BatchNorm2d(c, affine=False)
        self.bn2 = nn.BatchNorm2d(c, affine=False)
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))

    def forward(self, x):
        y = (self.bn0(torch.ones_like(x)) / math.sqrt(2 * math.pi) + self.bn1(x) / 2
             + self.bn2((x * x - 1) / math.sqrt(2)) / math.sqrt(4 * math.pi))
        return y * self.weight[None, :, None, None] + self.bias[None, :, None, None]


class HerPNConv(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.herpn1 = HerPN(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.herpn2 = HerPN(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        z = self.herpn1(x)
        return self.conv2(self.herpn2(self.conv1(z))) + self.shortcut(z)


class HerPNPool(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.herpn = HerPN(c)

    def forward(self, x):
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.herpn(x), 2), 1)


class Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, STEM, 3, 1, 1, bias=False)
        layers, c = [], STEM
        for out, stride in BLOCKS:
            layers.append(HerPNConv(c, out, stride))
            c = out
        self.layers = nn.ModuleList(layers)
        self.herpnpool = HerPNPool(c)
        self.bn = nn.BatchNorm1d(c * 4)
        self.features = c * 4

    def forward(self, x):
        x = self.conv(x)
        for layer in self.layers:
            x = layer(x)
        return self.bn(self.herpnpool(x))


class PatchCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.nets = nn.ModuleList([Backbone() for _ in range(GRID * GRID)])
        self.linear = nn.Linear(GRID * GRID * self.nets[0].features, CLASSES)
        self.bn = nn.BatchNorm1d(CLASSES, affine=False)

    def forward(self, x):
        feats = []
        for p, net in enumerate(self.nets):
            r, c = divmod(p, GRID)
            feats.append(net(x[:, :, r * PATCH:(r + 1) * PATCH, c * PATCH:(c + 1) * PATCH]))
        return self.bn(self.linear(torch.cat(feats, 1)))


def accuracy(model, x, y, batch=1000):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += (model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
    return correct / len(x)


def training_arguments(doc):
    """OUT_DIR, --epochs, --seed; seeds torch, uses every core, creates OUT_DIR."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    os.makedirs(args.out_dir, exist_ok=True)
    return args


def load_fashion_mnist(prepare):
    """(train images, labels, test images, labels), images through prepare (uint8 -> tensor)."""
    labels = lambda name: torch.from_numpy(read_idx(name).astype(np.int64))  # noqa: E731
    return (prepare(read_idx("train-images-idx3-ubyte.gz")), labels("train-labels-idx1-ubyte.gz"),
            prepare(read_idx("t10k-images-idx3-ubyte.gz")), labels("t10k-labels-idx1-ubyte.gz"))


def train(model, x_train, y_train, x_test, y_test, epochs):
    """Adam with a one-cycle schedule, batches of 128, gradients clipped at 5; prints the test
    accuracy after each epoch."""
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=4e-3, total_steps=epochs * (len(x_train) // 128))
    start = time.time()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x_train))
        for i in range(0, len(x_train) - 127, 128):
            idx = perm[i:i + 128]
            loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}, test accuracy {accuracy(model, x_test, y_test):.4f}, "
              f"{time.time() - start:.0f} s", flush=True)


def main():
    args = training_arguments(__doc__)
    x_train, y_train, x_test, y_test = load_fashion_mnist(to_input)
    model = PatchCNN()
    start = time.time()
    train(model, x_train, y_train, x_test, y_test, args.epochs)
    acc = accuracy(model, x_test, y_test)
    ckpt = os.path.join(args.out_dir, "fashion_pcnn.ckpt")
    torch.save({"state_dict": model.state_dict()}, ckpt)
    pfhm = os.path.join(args.out_dir, "fashion_pcnn.pfhm")
    exporter = os.path.join(os.path.dirname(os.path.abspath(__file__)), "export_cryptoface.py")
    subprocess.run([sys.executable, exporter, ckpt, pfhm, "--patch-size", str(PATCH), "--classifier"], check=True)
    model.eval()
    torch.onnx.export(model, x_test[:1], os.path.join(args.out_dir, "fashion_pcnn.onnx"), opset_version=13)
    report = {"plaintext_test_accuracy": acc, "test_images": len(x_test), "epochs": args.epochs,
              "seed": args.seed, "train_seconds": round(time.time() - start, 1),
              "command": "/usr/bin/python3 tools/train_fashion_mnist.py OUT_DIR --epochs "
                         f"{args.epochs} --seed {args.seed}"}
    with open(os.path.join(args.out_dir, "fashion_pcnn.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
