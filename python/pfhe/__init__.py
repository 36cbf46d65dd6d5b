"""pfhe: private inference of neural networks under fully homomorphic encryption (RNS-CKKS).

Orion's flow, on numpy arrays; the secret key lives in the Client object only:

    net = pfhe.from_torch(model, example_input)   # or pfhe.from_onnx("model.onnx")
    net.fit(calibration_batch)                    # (B, C, H, W): every node's range
    compiled = net.compile()                      # 128-bit parameters from the depth
    client = pfhe.Client(compiled.spec)           # new secret key
    ct = client.encrypt(x)                        # x: (C, H, W)
    out = compiled.run(ct, keys=client.evaluation_keys(), executor="fork", workers=2)
    logits = client.decrypt(out)

Every object saves and loads in the formats of the `pfhe` command-line tool (docs/CLI.md).
Errors are ValueError (bad input: shapes, unsupported operators, corrupt files, keys of
another model) or RuntimeError (a failure while running), with pfhe's message.
"""
import os
import tempfile

from ._pfhe import (Ciphertext, Client, CompiledModel, EvaluationKeys, Model, Spec,  # noqa: F401
                    from_onnx, load_model)

__all__ = ["Ciphertext", "Client", "CompiledModel", "EvaluationKeys", "Model", "Spec", "from_onnx", "from_torch",
           "load_compiled", "load_model"]

# The opset torch.onnx.export writes by default in Debian's python3-torch (1.13), which the
# importer is tested with.
ONNX_OPSET = 13


def from_torch(module, example_input, opset_version=ONNX_OPSET):
    """A torch.nn.Module as a pfhe Model: exported with torch.onnx.export (in eval mode, on
    `example_input`, a tensor of shape (1, C, H, W)) and imported as from_onnx does."""
    import torch  # only this function needs torch

    was_training = module.training
    module.eval()
    try:
        with tempfile.TemporaryDirectory() as work:
            path = os.path.join(work, "model.onnx")
            with torch.no_grad():
                torch.onnx.export(module, example_input, path, opset_version=opset_version)
            return from_onnx(path)
    finally:
        module.train(was_training)


def load_compiled(directory):
    """A compiled model saved by CompiledModel.save or written by `pfhe compile`."""
    return CompiledModel.load(directory)
