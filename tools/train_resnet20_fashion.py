#!/usr/bin/env python3
"""Train a ResNet-20 style HerPN network on Fashion-MNIST and export it as a pfhe graph model.

The deep-network acceptance model of the bootstrapping issue: a 3x3 stem convolution, three
stages of three residual blocks (16, 32, 64 channels; the first block of stages 2 and 3
strides 2 with a 1x1 convolution + BatchNorm shortcut), CryptoFace's HerPN activation (a
quadratic, HE-friendly, trainable like a BatchNorm + ReLU) before each convolution of a
block, a final HerPN, global average pooling and a linear head: 40 levels deep encrypted,
far more than one modulus chain holds, so pfhe's compiler places bootstraps. 28x28 images
padded to 32x32 (background -1), one channel, pixels mapped to [-1, 1] as pfhe's image
loader does. CPU only (Debian's python3-torch); data: Debian's dataset-fashion-mnist.

    /usr/bin/python3 tools/train_resnet20_fashion.py OUT_DIR [--epochs 3] [--seed 1]

Writes OUT_DIR/resnet20_fashion.pfhm (the graph model file, docs/MODEL_FORMAT.md),
OUT_DIR/resnet20_fashion.ckpt (state_dict) and OUT_DIR/resnet20_fashion.json (plaintext test
accuracy on all 10,000 test images, the first test images' logits for a cross-check).
"""
import json
import os
import sys
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_cryptoface import write_model_file  # noqa: E402
from train_fashion_mnist import (HerPN, HerPNConv, accuracy, load_fashion_mnist, train,  # noqa: E402
                                 training_arguments)

STAGES = [(16, 1), (32, 2), (64, 2)]
BLOCKS_PER_STAGE = 3
CLASSES = 10
EPS = 1e-5


def to_input(images):
    """uint8 (N, 28, 28) -> float (N, 1, 32, 32) in [-1, 1], padded with the background -1."""
    x = torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0)
    return nn.functional.pad(x, (2, 2, 2, 2), value=-1.0)[:, None].contiguous()


class ResNet20(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, STAGES[0][0], 3, 1, 1, bias=False)
        layers, c = [], STAGES[0][0]
        for out, stride in STAGES:
            for b in range(BLOCKS_PER_STAGE):
                layers.append(HerPNConv(c, out, stride if b == 0 else 1))
                c = out
        self.layers = nn.ModuleList(layers)
        self.herpn = HerPN(c)
        self.linear = nn.Linear(c, CLASSES)

    def forward(self, x):
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x)
        x = nn.functional.adaptive_avg_pool2d(self.herpn(x), 1)
        return self.linear(torch.flatten(x, 1))


def graph_nodes(model):
    """The model as pfhe graph nodes (docs/MODEL_FORMAT.md); node names are the modules'."""
    nodes = [{"name": "input", "op": "Input", "inputs": [], "shape": [1, 32, 32]}]

    def add(node):
        nodes.append(node)
        return len(nodes) - 1

    def conv(name, m, x):
        return add({"name": name, "op": "Conv2d", "inputs": [x], "in_channels": m.in_channels,
                    "out_channels": m.out_channels, "kernel": m.kernel_size[0], "stride": m.stride[0],
                    "padding": m.padding[0]})

    def herpn(name, m, x):
        return add({"name": name, "op": "HerPN", "inputs": [x], "channels": m.weight.numel(), "eps": EPS})

    x = conv("stem", model.stem, 0)
    for j, block in enumerate(model.layers):
        p = f"layers.{j}"
        z = herpn(f"{p}.herpn1", block.herpn1, x)
        y = conv(f"{p}.conv1", block.conv1, z)
        y = herpn(f"{p}.herpn2", block.herpn2, y)
        y = conv(f"{p}.conv2", block.conv2, y)
        s = z
        if len(block.shortcut) > 0:
            s = conv(f"{p}.shortcut.0", block.shortcut[0], z)
            s = add({"name": f"{p}.shortcut.1", "op": "BatchNorm", "inputs": [s],
                     "channels": block.shortcut[1].num_features, "eps": EPS, "affine": True})
        x = add({"name": f"{p}.add", "op": "Add", "inputs": [y, s]})
    x = herpn("herpn", model.herpn, x)
    x = add({"name": "gap", "op": "AdaptiveAvgPool2d", "inputs": [x], "output_size": 1})
    x = add({"name": "flatten", "op": "Flatten", "inputs": [x]})
    add({"name": "linear", "op": "Linear", "inputs": [x], "in_features": model.linear.in_features,
         "out_features": model.linear.out_features})
    return nodes


def write_graph(path, model):
    tensors = {k: v.detach().double() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    write_model_file(path, {"architecture": "graph", "nodes": graph_nodes(model)}, tensors)


def main():
    args = training_arguments(__doc__)
    x_train, y_train, x_test, y_test = load_fashion_mnist(to_input)
    model = ResNet20()
    start = time.time()
    train(model, x_train, y_train, x_test, y_test, args.epochs)
    acc = accuracy(model, x_test, y_test)
    torch.save({"state_dict": model.state_dict()}, os.path.join(args.out_dir, "resnet20_fashion.ckpt"))
    write_graph(os.path.join(args.out_dir, "resnet20_fashion.pfhm"), model.double().eval())
    with torch.no_grad():
        logits = model(x_test[:4].double()).tolist()
    report = {"plaintext_test_accuracy": acc, "test_images": len(x_test), "epochs": args.epochs,
              "seed": args.seed, "train_seconds": round(time.time() - start, 1), "first_test_logits": logits,
              "command": "/usr/bin/python3 tools/train_resnet20_fashion.py OUT_DIR --epochs "
                         f"{args.epochs} --seed {args.seed}"}
    with open(os.path.join(args.out_dir, "resnet20_fashion.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps({k: v for k, v in report.items() if k != "first_test_logits"}))


if __name__ == "__main__":
    main()
