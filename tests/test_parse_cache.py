"""The srn dataparser's parse cache: a second parse reads no pose or image, gives the same cameras, re-parses only
what changed, still catches a damaged file, and never writes into the data folder."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from conftest import first_instance

import genvs_ns.data.srn_files as srn_files
from genvs_ns.data.srn_dataparser import SRNDataParserConfig
from genvs_ns.errors import DataError


def parse(data, split="train", **config):
    return SRNDataParserConfig(data=data, **config).setup().get_dataparser_outputs(split=split)


def _no_reading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("parsed a file the cache holds")

    monkeypatch.setattr(srn_files, "read_pose", refuse)
    monkeypatch.setattr(srn_files, "image_size", refuse)


def _same(a, b):
    assert a.image_filenames == b.image_filenames
    assert a.metadata["object_ids"] == b.metadata["object_ids"]
    for name in ("camera_to_worlds", "fx", "fy", "cx", "cy", "width", "height"):
        assert torch.equal(getattr(a.cameras, name), getattr(b.cameras, name)), name
    assert torch.equal(a.metadata["view_index"], b.metadata["view_index"])


def test_a_second_parse_reads_nothing_and_gives_the_same_cameras(toy_copy, monkeypatch, capsys):
    snapshot = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in toy_copy.rglob("*")}
    uncached = parse(toy_copy, parse_cache=False)
    first = parse(toy_copy)
    _same(first, uncached)
    _no_reading(monkeypatch)
    capsys.readouterr()
    second = parse(toy_copy, downscale_factor=2)  # settings applied after parsing do not need a new parse
    assert re.search(
        r"checked 48 train images of 8 objects in .* s, 8 objects from the parse cache ", capsys.readouterr().err
    )
    assert torch.equal(second.cameras.camera_to_worlds, first.cameras.camera_to_worlds)
    assert torch.equal(second.cameras.fx, first.cameras.fx / 2)
    assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in toy_copy.rglob("*")} == snapshot


def test_a_changed_file_reparses_its_object_only(toy_copy, capsys):
    parse(toy_copy)
    inst = first_instance(toy_copy)
    pose = inst / "pose" / "000001.txt"
    m = np.loadtxt(pose)
    m[:3, 3] *= 1.1  # the camera moved back
    np.savetxt(pose, m, fmt="%.9f")
    capsys.readouterr()
    out = parse(toy_copy)
    assert "7 objects from the parse cache" in capsys.readouterr().err
    row = out.image_filenames.index(inst / "rgb" / "000001.png")
    # OpenCV -> OpenGL flips columns 1 and 2; the translation column is unchanged.
    np.testing.assert_allclose(out.cameras.camera_to_worlds[row, :, 3].numpy(), m[:3, 3], rtol=1e-6)


def test_a_file_damaged_after_caching_still_fails_naming_it(toy_copy):
    parse(toy_copy)
    image = first_instance(toy_copy) / "rgb" / "000002.png"
    image.write_bytes(image.read_bytes()[:-40])
    with pytest.raises(DataError, match=re.escape(f"{image}: unreadable or truncated image")):
        parse(toy_copy)


def test_objects_parsed_without_verification_are_verified_when_asked(toy_copy, monkeypatch):
    parse(toy_copy, verify_images=False)
    seen = []
    real = srn_files.image_size
    monkeypatch.setattr(srn_files, "image_size", lambda path, verify=True: seen.append(verify) or real(path, verify))
    parse(toy_copy)
    assert len(seen) == 48 and all(seen)
    seen.clear()
    parse(toy_copy, verify_images=False)  # verified entries serve unverified runs too
    assert not seen


def test_an_unusable_cache_is_a_warning_not_a_failure(toy_copy, tmp_path, monkeypatch, capsys):
    blocked = tmp_path / "not_a_folder"
    blocked.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))  # the cache folder cannot be made under a file
    first = parse(toy_copy)
    assert "parse cache not written" in capsys.readouterr().err
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_dir))
    parse(toy_copy)
    (cache_file,) = (cache_dir / "genvs-ns" / "srn").iterdir()
    cache_file.write_text("{not json")
    _same(parse(toy_copy), first)
    assert "unreadable" in capsys.readouterr().err
