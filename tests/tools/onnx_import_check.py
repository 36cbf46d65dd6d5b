#!/usr/bin/env python3
"""Writes the ONNX import fixtures: models defined here in torch (Debian's python3-torch),
exported with torch.onnx.export, with one input and torch's float64 outputs for it.
    onnx_import_check.py WORK_DIR
WORK_DIR/<name>.onnx, <name>.input.f64 (raw doubles), <name>.input.npy (the same input as a
(C, H, W) array, for `pfhe encrypt`), <name>.expected.txt (one per line); for the LeNet, the
residual CNN and the patch CNN also 20 more inputs and their logits (<name>.<i>.npy,
<name>.<i>.expected.txt)."""
import os
import sys

import numpy

import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import train_fashion_mnist as fashion  # noqa: E402  (its HerPN, as trained)


class LeNetSquare(nn.Module):
    """A LeNet-style CNN with x^2 activations and average pooling."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 6, 5, padding=2), nn.BatchNorm2d(6)
        self.conv2, self.bn2 = nn.Conv2d(6, 16, 5), nn.BatchNorm2d(16)
        self.fc1, self.fc2 = nn.Linear(16 * 5 * 5, 32), nn.Linear(32, 10)

    def forward(self, x):
        x = nn.functional.avg_pool2d(self.bn1(self.conv1(x)) ** 2, 2)
        x = self.bn2(self.conv2(x))
        x = nn.functional.avg_pool2d(x * x, 2)
        x = torch.flatten(x, 1)
        return self.fc2(0.5 * self.fc1(x))


class SmallResidual(nn.Module):
    """Two residual blocks with x^2 activations, a strided convolution and global pooling."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.a, self.bna = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.down, self.bnd = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16)
        self.b, self.bnb = nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.bn0(self.stem(x))
        x = x + self.bna(self.a(x * x))
        x = self.bnd(self.down(x))
        x = x + self.bnb(self.b(x * x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class WithMatMul(nn.Module):
    """A head written as x @ W + b (MatMul then Add in ONNX) instead of a Linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.w = nn.Parameter(torch.randn(4, 3) * 0.5)
        self.b = nn.Parameter(torch.randn(3) * 0.1)

    def forward(self, x):
        y = torch.flatten(nn.functional.adaptive_avg_pool2d(self.conv(x) ** 2, 1), 1)
        return y @ self.w + self.b


class PatchNet(nn.Module):
    """A PatchCNN written in torch: a 2x2 grid of 8x8 patches (Slice of the input), each
    through its own small CNN, the features concatenated (Concat) into one linear head."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(3, 4, 3, padding=1, bias=False) for _ in range(4)])
        self.bns = nn.ModuleList([nn.BatchNorm2d(4) for _ in range(4)])
        self.fc = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x):
        feats = []
        for p, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            r, c = divmod(p, 2)
            y = bn(conv(x[:, :, 8 * r:8 * r + 8, 8 * c:8 * c + 8]))
            feats.append(torch.flatten(nn.functional.avg_pool2d(y * y, 4), 1))
        return self.fc(torch.cat(feats, 1))


class ChannelWindows(nn.Module):
    """The input split into a 2x2 grid of patches (torch.split of the height, then of the
    width), then per patch:
    torch.split and a slice of the channels read by convolutions, torch.cat of feature maps
    along the channels read by a convolution (an Inception-style block); the patches' pooled
    features concatenated into the head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.a, self.b = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 4, 1)
        self.c = nn.Conv2d(3, 2, 3, padding=1)
        self.mix = nn.Conv2d(10, 4, 3, padding=1)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        pooled = []
        for patch in (p for rows in torch.split(x, 8, dim=2) for p in torch.split(rows, 8, dim=3)):
            y = self.stem(patch)
            p, q = torch.split(y, [2, 4], dim=1)
            z = self.mix(torch.cat([self.a(p) ** 2, self.b(q), self.c(y[:, 3:])], 1))
            pooled.append(torch.flatten(nn.functional.adaptive_avg_pool2d(z, 1), 1))
        return self.fc(torch.cat(pooled, 1))


class HerPNNet(nn.Module):
    """CryptoFace's HerPN as tools/train_fashion_mnist.py writes it in torch (BatchNorms of
    ones_like(x), of x and of (x*x - 1)/sqrt 2, summed, scaled and shifted per channel): a
    stem, one HerPNConv block with a strided shortcut, the HerPN pooling, a linear head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.block = fashion.HerPNConv(4, 8, 2)
        self.pool = fashion.HerPNPool(8)
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        return self.fc(self.pool(self.block(self.conv(x))))


class DeepResidual(nn.Module):
    """Seven residual blocks x + conv(x^2 / 4) on 4 channels: depth 16, deeper than the
    levels between bootstraps of `pfhe compile --bootstrap` (at most 12), so one bootstrap
    is placed."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.blocks = nn.ModuleList(nn.Conv2d(4, 4, 3, padding=1) for _ in range(7))
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.stem(x)
        for conv in self.blocks:
            x = x + conv(0.25 * x * x)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def external_data_copies(work):
    """residual.onnx again with every weight in one external file (ext/), and a copy whose
    first tensor points outside its directory (bad/): what onnx.save_model writes for large
    models, and a tampered location."""
    import onnx  # Debian's python3-onnx

    model = onnx.load(f"{work}/residual.onnx")
    for sub in ("ext", "bad"):
        os.makedirs(f"{work}/{sub}", exist_ok=True)
    onnx.save_model(model, f"{work}/ext/residual.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                    location="residual.weights", size_threshold=0)
    tampered = onnx.load(f"{work}/ext/residual.onnx", load_external_data=False)
    for entry in tampered.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "../ext/residual.weights"
    onnx.save_model(tampered, f"{work}/bad/residual.onnx")


class WithRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return torch.relu(self.conv(x))


class WithReshape(nn.Module):
    """A flattening written as a reshape to (1, -1): a constant shape, imported as Flatten."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 2, 3, padding=1), nn.Linear(2 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(nn.functional.avg_pool2d(self.conv(x) ** 2, 2).reshape(1, -1))


class After(nn.Module):
    """A convolution followed by `op` (an operator pfhe must refuse by name)."""

    def __init__(self, op):
        super().__init__()
        self.conv, self.op = nn.Conv2d(1, 2, 3, padding=1), op

    def forward(self, x):
        return self.op(self.conv(x))


# What pfhe refuses, each with the ONNX operator the refusal must name (torch 1.13, opset
# 13): non-polynomial activations, max pooling, softmax, division by a value, a channel
# concatenation that is the output, channel slices multiplied together.
REFUSALS = {
    "relu": (torch.relu, "Relu"),
    "sigmoid": (torch.sigmoid, "Sigmoid"),
    "tanh": (torch.tanh, "Tanh"),
    "silu": (nn.functional.silu, "Sigmoid"),
    "leaky_relu": (nn.functional.leaky_relu, "LeakyRelu"),
    "elu": (nn.functional.elu, "Elu"),
    "softplus": (nn.functional.softplus, "Softplus"),
    "hardsigmoid": (nn.functional.hardsigmoid, "HardSigmoid"),
    "maxpool": (lambda y: nn.functional.max_pool2d(y, 2), "MaxPool"),
    "softmax": (lambda y: torch.softmax(torch.flatten(y, 1), 1), "Softmax"),
    "log_softmax": (lambda y: torch.log_softmax(torch.flatten(y, 1), 1), "LogSoftmax"),
    "divide": (lambda y: y / (y * y + 1), "Div"),
    "concat": (lambda y: torch.cat([y, y * 0.5], 1), "Concat"),
    "slice": (lambda y: y[:, :1] * y[:, 1:], "Slice"),
}


def randomize_batch_norms(model, gen):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=gen) * 0.2)
            m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.data.copy_(torch.randn(c, generator=gen) * 0.1)
        if isinstance(m, fashion.HerPN):
            c = m.weight.numel()
            m.weight.data.copy_(torch.rand(c, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=gen) * 0.1)


def export(model, shape, work, name, gen):
    model.eval()
    x = torch.randn(1, *shape, generator=gen)
    torch.onnx.export(model, x, f"{work}/{name}.onnx", opset_version=13)
    with torch.no_grad():  # float32 weights, evaluated in float64: what pfhe's float64 forward computes
        y = model.double()(x.double()).reshape(-1)
    x.double().numpy().tofile(f"{work}/{name}.input.f64")
    numpy.save(f"{work}/{name}.input.npy", x.double().numpy().reshape(shape))
    with open(f"{work}/{name}.expected.txt", "w") as f:
        f.writelines(f"{v:.17g}\n" for v in y.tolist())


def main():
    work = sys.argv[1]
    gen = torch.Generator().manual_seed(7)
    torch.manual_seed(7)
    lenet, residual, patches, herpn = LeNetSquare(), SmallResidual(), PatchNet(), HerPNNet()
    for m in (lenet, residual, patches, herpn):
        randomize_batch_norms(m, gen)
    export(lenet, (1, 28, 28), work, "lenet", gen)
    export(residual, (3, 16, 16), work, "residual", gen)
    export(patches, (3, 16, 16), work, "patches", gen)
    export(herpn, (3, 16, 16), work, "herpn", gen)
    export(ChannelWindows(), (3, 16, 16), work, "windows", gen)
    export(DeepResidual(), (1, 8, 8), work, "deep", gen)
    export(WithMatMul(), (2, 8, 8), work, "matmul", gen)
    external_data_copies(work)
    with open(f"{work}/refusals.txt", "w") as f:
        for name, (op, onnx_op) in REFUSALS.items():
            export(After(op), (1, 8, 8), work, f"refuse_{name}", gen)
            f.write(f"refuse_{name} {onnx_op}\n")
    export(WithReshape(), (1, 8, 8), work, "reshape", gen)


if __name__ == "__main__":
    main()
