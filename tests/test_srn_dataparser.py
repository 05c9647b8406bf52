"""The ``srn`` dataparser on toy data and on hand-made malformed folders."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import first_instance
from PIL import Image

from genvs_ns.data.images import load_rgb
from genvs_ns.data.srn_dataparser import SRNDataParserConfig
from genvs_ns.errors import DataError


def parse(data: Path, split: str = "train", **config):
    return SRNDataParserConfig(data=data, **config).setup().get_dataparser_outputs(split=split)


def test_registered_with_nerfstudio_and_cameras_look_at_origin(toy_root, capsys):
    from nerfstudio.plugins.registry_dataparser import discover_dataparsers

    config = discover_dataparsers()[0]["srn"]
    # What per-scene methods get (ns-train nerfacto ... srn): one object's folder, a scene; a data set is refused.
    config.data = toy_root
    # ns-train nerfacto calls it directly: a command's entry, so one line and exit 1, no traceback.
    with pytest.raises(SystemExit) as stop:
        config.setup().get_dataparser_outputs(split="train")
    assert stop.value.code == 1
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ": error:" in ln]
    assert re.search(rf": error: {re.escape(str(toy_root))}: holds many objects: .* genvs and genvs-tiny$", line)
    config.data = first_instance(toy_root)
    assert config.setup().get_dataparser_outputs(split="train").metadata["object_ids"] == [config.data.name]
    config.data, config.single_object = toy_root, False  # the genvs datamanager's
    out = config.setup().get_dataparser_outputs(split="train")
    c2w = out.cameras.camera_to_worlds
    position = c2w[:, :, 3]
    torch.testing.assert_close(position.norm(dim=-1), torch.full((len(c2w),), 1.3))
    # nerfstudio (OpenGL) cameras look along their -z axis, i.e. +z points away from the origin.
    torch.testing.assert_close(c2w[:, :, 2], position / 1.3, atol=1e-5, rtol=0)
    assert torch.allclose(out.cameras.fx, torch.tensor(131.25 * 32 / 128))
    assert torch.allclose(out.cameras.cx, torch.tensor(16.0))
    assert out.cameras.width.unique().tolist() == [32]
    assert len(out.image_filenames) == 8 * 6
    assert out.metadata["object_index"].tolist() == [i for i in range(8) for _ in range(6)]
    assert out.metadata["view_index"].tolist() == list(range(6)) * 8
    assert (out.metadata["near"], out.metadata["far"], out.metadata["category"]) == (0.8, 1.8, "cars")
    aabb = out.scene_box.aabb
    assert (aabb[0] < position.min(0).values).all() and (aabb[1] > position.max(0).values).all()
    assert out.cameras.metadata["object_index"].shape == (48, 1)


def test_splits_of_a_root_folder(toy_root):
    ids = {s: parse(toy_root, s).metadata["object_ids"] for s in ("train", "val", "test")}
    assert [len(ids[s]) for s in ("train", "val", "test")] == [8, 1, 1]
    assert ids["val"] == [p.name for p in (toy_root / "cars_val").iterdir()]


def test_without_val_split_holds_out_ten_percent_deterministically(toy_copy):
    shutil.rmtree(toy_copy / "cars_val")
    train = parse(toy_copy, "train").metadata["object_ids"]
    val = parse(toy_copy, "val").metadata["object_ids"]
    assert len(train) == 7 and len(val) == 1 and not set(train) & set(val)
    assert parse(toy_copy, "val").metadata["object_ids"] == val


def test_single_split_folder_and_single_instance(toy_root):
    split = toy_root / "cars_train"
    train, val, test = (parse(split, s).metadata["object_ids"] for s in ("train", "val", "test"))
    assert len(train) == 7 and len(val) == 1 and len(test) == 8
    inst = first_instance(toy_root)
    for s in ("train", "val", "test"):
        out = parse(inst, s)
        assert out.metadata["object_ids"] == [inst.name] and len(out.image_filenames) == 6
        assert out.metadata["category"] == "cars"


def test_nested_chairs_layout_uses_chairs_near_far(toy_root, tmp_path):
    for split in ("train", "val", "test"):
        shutil.copytree(toy_root / f"cars_{split}", tmp_path / f"chairs_{split}" / f"chairs_2.0_{split}")
    out = parse(tmp_path, "train")
    assert len(out.metadata["object_ids"]) == 8
    assert (out.metadata["near"], out.metadata["far"], out.metadata["category"]) == (1.25, 2.75, "chairs")
    out = parse(tmp_path, "train", near=1.0, far=2.0)
    assert (out.metadata["near"], out.metadata["far"]) == (1.0, 2.0)


def test_unpadded_names_rgba_and_per_view_intrinsics(toy_copy):
    inst = first_instance(toy_copy)
    for name in ("000001", "000004"):
        (inst / "rgb" / f"{name}.png").rename(inst / "rgb" / f"{int(name)}.png")
        (inst / "pose" / f"{name}.txt").rename(inst / "pose" / f"{int(name)}.txt")
    # RGBA with a transparent black background composites to white.
    rgb = np.asarray(Image.open(inst / "rgb" / "000000.png"))
    alpha = np.where((rgb == 255).all(-1), 0, 255).astype(np.uint8)
    rgba = np.concatenate([np.where(alpha[..., None] == 0, 0, rgb), alpha[..., None]], -1)
    Image.fromarray(rgba, "RGBA").save(inst / "rgb" / "000000.png")
    np.testing.assert_allclose(load_rgb(inst / "rgb" / "000000.png"), rgb / 255.0, atol=1e-6)
    # A per-view K for 512-px renders is ignored; one that fits the 32-px image is used.
    (inst / "intrinsics").mkdir()
    (inst / "intrinsics" / "000000.txt").write_text("525 0 256\n0 525 256\n0 0 1\n")
    (inst / "intrinsics" / "000002.txt").write_text("40 0 16\n0 41 16\n0 0 1\n")
    out = parse(toy_copy, "train")
    first = out.metadata["object_index"] == 0
    assert out.metadata["view_index"][first].tolist() == list(range(6))
    names = [p.name for p, keep in zip(out.image_filenames, first) if keep]
    assert names == ["000000.png", "1.png", "000002.png", "000003.png", "4.png", "000005.png"]
    fx, fy = out.cameras.fx[first, 0].tolist(), out.cameras.fy[first, 0].tolist()
    assert fx[0] == pytest.approx(32.8125) and (fx[2], fy[2]) == (40.0, 41.0)


def test_downscale_rescales_intrinsics(toy_root):
    out = parse(toy_root, "train", downscale_factor=2)
    assert out.cameras.width.unique().tolist() == [16]
    assert torch.allclose(out.cameras.fx, torch.tensor(131.25 * 16 / 128))
    assert torch.allclose(out.cameras.cx, torch.tensor(8.0))
    full = load_rgb(out.image_filenames[0])
    half = load_rgb(out.image_filenames[0], size=(16, 16))
    np.testing.assert_allclose(half, full.reshape(16, 2, 16, 2, 3).mean((1, 3)), atol=1 / 255)


def test_instance_with_one_view_is_skipped_with_a_warning(toy_copy, capsys):
    inst = first_instance(toy_copy)
    for p in sorted((inst / "rgb").iterdir())[1:]:
        p.unlink()
    out = parse(toy_copy, "train")
    assert inst.name not in out.metadata["object_ids"] and len(out.metadata["object_ids"]) == 7
    assert f"{inst}: skipped" in capsys.readouterr().err.replace("\n", "")


def _break(kind: str, root: Path) -> tuple[Path, str]:
    """Damage the toy copy in one way; returns the file the error must name and a word it must say."""
    inst = first_instance(root)
    image = inst / "rgb" / "000002.png"
    pose = inst / "pose" / "000002.txt"
    if kind == "missing pose":
        pose.unlink()
        return image, "no pose"
    if kind == "short pose":
        pose.write_text("1 0 0 0\n0 1 0 0\n0 0 1 0\n")
        return pose, "16 numbers"
    if kind == "non-finite pose":
        pose.write_text(pose.read_text().replace(pose.read_text().split()[3], "nan", 1))
        return pose, "non-finite"
    if kind == "not orthonormal":
        m = np.loadtxt(pose)
        m[:3, :3] *= 2
        np.savetxt(pose, m)
        return pose, "orthonormal"
    if kind == "missing intrinsics":
        (inst / "intrinsics.txt").unlink()
        return inst / "intrinsics.txt", "missing"
    if kind == "malformed intrinsics":
        (inst / "intrinsics.txt").write_text("32.8 16 16 0.\n0. 0. 0.\n")
        return inst / "intrinsics.txt", "malformed"
    if kind == "unreadable image":
        image.write_bytes(b"this is not a png")
        return image, "unreadable"
    if kind == "truncated image":
        image.write_bytes(image.read_bytes()[:-40])
        return image, "truncated"
    if kind == "wrong image size":
        Image.open(image).resize((16, 16)).save(image)
        return image, "16x16"
    if kind == "empty instance":
        (root / "cars_train" / "0000empty").mkdir()
        return root / "cars_train" / "0000empty", "empty instance"
    if kind == "empty split":
        for p in (root / "cars_train").iterdir():
            shutil.rmtree(p)
        return root / "cars_train", "empty split"
    raise AssertionError(kind)


BAD_CASES = [
    "missing pose",
    "short pose",
    "non-finite pose",
    "not orthonormal",
    "missing intrinsics",
    "malformed intrinsics",
    "unreadable image",
    "truncated image",
    "wrong image size",
    "empty instance",
    "empty split",
]


@pytest.mark.parametrize("kind", BAD_CASES)
def test_bad_input_fails_with_one_line_naming_the_file(kind, toy_copy):
    path, word = _break(kind, toy_copy)
    with pytest.raises(DataError) as info:
        parse(toy_copy, "train")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert word in message
    assert info.value.path == path


def test_parsing_and_loading_never_write_into_the_data_folder(toy_root):
    def snapshot():
        return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in toy_root.rglob("*")}

    before = snapshot()
    for split in ("train", "val", "test"):
        out = parse(toy_root, split, downscale_factor=2)
        for f in out.image_filenames[:3]:
            load_rgb(f, size=(16, 16))
    assert snapshot() == before


def test_under_ddp_only_rank_zero_reads_every_image(toy_root, monkeypatch):
    """~211k PNGs for SRN cars: verified once (rank 0), not by every rank at once; the time is reported."""
    import torch.distributed as dist

    import genvs_ns.data.srn_dataparser as module

    seen = []
    real = module.read_instance
    monkeypatch.setattr(
        module, "read_instance", lambda folder, verify, warn: seen.append(verify) or real(folder, verify, warn)
    )
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    for rank, expected in [(0, True), (1, False)]:
        monkeypatch.setattr(dist, "get_rank", lambda group=None, r=rank: r)
        seen.clear()
        SRNDataParserConfig(data=toy_root, parse_cache=False).setup().get_dataparser_outputs("train")
        assert seen and set(seen) == {expected}
