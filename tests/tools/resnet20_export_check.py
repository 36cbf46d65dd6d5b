#!/usr/bin/env python3
"""Contract test of tools/train_resnet20_fashion.py's graph export: an untrained ResNet20 with
non-trivial BatchNorm statistics is written as a pfhe graph model; writes the input and
torch's float64 logits for model_tool graph-logits to reproduce.

    resnet20_export_check.py REPO OUT_DIR
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(sys.argv[1], "tools"))
from train_resnet20_fashion import ResNet20, write_graph  # noqa: E402

out = sys.argv[2]
torch.manual_seed(3)
model = ResNet20()
model.train()
with torch.no_grad():
    for _ in range(3):  # running statistics away from (0, 1)
        model(torch.randn(8, 1, 32, 32) * 0.7 + 0.1)
model = model.double().eval()
write_graph(os.path.join(out, "resnet20.pfhm"), model)
x = torch.rand(1, 1, 32, 32, dtype=torch.float64) * 2 - 1
x.numpy().astype("<f8").tofile(os.path.join(out, "input.f64"))
with torch.no_grad():
    np.savetxt(os.path.join(out, "expected.txt"), model(x)[0].numpy(), fmt="%.17g")
