"""Export facenet-pytorch 2.6.0's MTCNN networks (PNet, RNet, ONet) to the ONNX files wsense ships in
wsense/safety/mtcnn/, which `wsense.safety.mtcnn` runs without torch. Needs torch, onnx and facenet-pytorch;
run it again only to remake the files:

    python -m wsense.safety.mtcnn_export [--out wsense/safety/mtcnn]

Each file is checked against its torch network on random input before it replaces the shipped one.
"""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

from wsense.io import atomic_path

MODEL_DIR = Path(__file__).resolve().parent / "mtcnn"
OPSET = 17
TOLERANCE = 1e-4


def networks() -> dict:
    """name -> (torch network, example input, dynamic input axes, output names), as MTCNN builds them."""
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

    return {
        # PNet is fully convolutional: one pass over a whole pyramid level, any size.
        "pnet": (PNet(), (2, 3, 40, 52), {0: "images", 2: "height", 3: "width"}, ["offsets", "probs"]),
        "rnet": (RNet(), (2, 3, 24, 24), {0: "crops"}, ["offsets", "probs"]),
        "onet": (ONet(), (2, 3, 48, 48), {0: "crops"}, ["offsets", "landmarks", "probs"]),
    }


def export_network(network, shape: tuple[int, ...], dynamic: dict, outputs: list[str], path: Path) -> Path:
    import torch

    example = torch.rand(shape) * 2 - 1
    axes = {"pixels": dynamic, **{name: {0: dynamic[0]} for name in outputs}}
    if 2 in dynamic:  # PNet's outputs are maps over the input
        axes.update({name: {0: dynamic[0], 2: "rows", 3: "columns"} for name in outputs})
    with atomic_path(path) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(network.eval(), (example,), str(tmp), dynamo=False, opset_version=OPSET,
                          input_names=["pixels"], output_names=outputs, dynamic_axes=axes)
    path.chmod(0o644)  # package data: readable by whoever installs it (the temporary file was private)
    return path


def largest_difference(network, path: Path, shape: tuple[int, ...], seed: int = 0) -> float:
    """The largest absolute difference between the torch network and the ONNX file on random input."""
    import onnxruntime
    import torch

    pixels = np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)
    with torch.no_grad():
        expected = [t.numpy() for t in network.eval()(torch.from_numpy(pixels))]
    found = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"pixels": pixels})
    return max(float(np.abs(a - b).max()) for a, b in zip(expected, found))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=MODEL_DIR, help="folder of the .onnx files")
    args = parser.parse_args(argv)
    for name, (network, shape, dynamic, outputs) in networks().items():
        path = export_network(network, shape, dynamic, outputs, args.out / f"{name}.onnx")
        # Another batch and (for PNet) another size than the export's example: the axes must really be dynamic.
        check = (5, 3, 61, 37) if name == "pnet" else (5, *shape[1:])
        difference = largest_difference(network, path, check)
        if difference > TOLERANCE:
            path.unlink()
            raise SystemExit(f"{path}: the export differs from the torch network by {difference:.2g}")
        print(f"{path}: {path.stat().st_size / 1e6:.2f} MB, within {difference:.1g} of torch")


if __name__ == "__main__":
    main()
