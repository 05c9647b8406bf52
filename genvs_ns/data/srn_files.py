"""Reading and validating SRN folders (ShapeNet cars / chairs as released with SRN).

Kept free of nerfstudio imports: the toy-data script and quick tests use it, and the dataparser wraps it.
Every problem with the user's files raises :class:`DataError` naming the file; nothing is ever written here.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from genvs_ns.data.images import image_size
from genvs_ns.errors import DataError

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# "cars_train", "chairs_val", and the nested "chairs_2.0_train" of some chairs copies.
SPLIT_DIR_RE = re.compile(r"^(?P<category>[A-Za-z]+)(?:_[\d.]+)?_(?P<split>train|val|test)$")
# pixelNeRF's near/far per category; "mixed" is genvs-toy-data --kind mixed, framed like the toy cars.
NEAR_FAR = {"cars": (0.8, 1.8), "chairs": (1.25, 2.75), "mixed": (0.8, 1.8)}
VAL_FRACTION = 0.1
# OpenCV camera axes (x right, y down, z forward) -> OpenGL / nerfstudio axes (x right, y up, z back).
CV_TO_GL = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass
class Intrinsics:
    fx: float
    fy: float
    cx: float
    cy: float

    def scaled(self, sx: float, sy: float) -> Intrinsics:
        return Intrinsics(self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy)


@dataclass
class View:
    image: Path
    index: int
    c2w_opengl: np.ndarray  # [4, 4]
    intrinsics: Intrinsics  # for the image as stored on disk
    width: int
    height: int


@dataclass
class Instance:
    folder: Path
    views: list[View] = field(default_factory=list)

    @property
    def instance_id(self) -> str:
        return self.folder.name


@dataclass
class Layout:
    """Where the instances of each split live."""

    kind: Literal["root", "split", "instance"]
    category: str | None
    split_dirs: dict[str, Path]  # for "root": the split folders that exist
    folder: Path


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def is_instance_dir(path: Path) -> bool:
    return (path / "rgb").is_dir() or (path / "pose").is_dir() or (path / "intrinsics.txt").is_file()


def _unwrap_nested(split_dir: Path) -> Path:
    """``chairs_train/chairs_2.0_train/<ids>`` -> the inner folder."""
    children = _visible_dirs(split_dir)
    if len(children) == 1 and SPLIT_DIR_RE.match(children[0].name) and not is_instance_dir(children[0]):
        return children[0]
    return split_dir


def _category_from_path(path: Path) -> str | None:
    for part in [path, *path.parents]:
        m = SPLIT_DIR_RE.match(part.name)
        if m:
            return m["category"].lower()
        if part.name.lower() in NEAR_FAR:
            return part.name.lower()
    return None


def resolve_layout(data: Path, category: str = "auto") -> Layout:
    """Recognise a root of split folders, a single split folder, or a single instance folder."""
    data = Path(data)
    if not data.exists():
        raise DataError(data, "does not exist")
    if not data.is_dir():
        raise DataError(data, "is not a folder (expected an SRN root, split or instance folder)")
    if is_instance_dir(data):
        return Layout("instance", _category_from_path(data.parent), {}, data)
    split_dirs: dict[str, dict[str, Path]] = {}
    for child in _visible_dirs(data):
        m = SPLIT_DIR_RE.match(child.name)
        if m and not is_instance_dir(child):
            split_dirs.setdefault(m["category"].lower(), {})[m["split"]] = _unwrap_nested(child)
    if split_dirs:
        if category != "auto":
            if category not in split_dirs:
                raise DataError(data, f"no {category}_train/val/test folders (found {', '.join(sorted(split_dirs))})")
            chosen = category
        elif len(split_dirs) == 1:
            chosen = next(iter(split_dirs))
        else:
            raise DataError(data, f"holds several categories ({', '.join(sorted(split_dirs))}); set --category")
        return Layout("root", chosen, split_dirs[chosen], data)
    inner = _unwrap_nested(data)
    children = _visible_dirs(inner)
    if not children:
        raise DataError(data, "empty split folder: no instance folders in it")
    if any(is_instance_dir(c) for c in children):
        return Layout("split", _category_from_path(inner), {}, inner)
    raise DataError(
        data,
        "not an SRN folder: expected cars_train/ (or chairs_*) split folders, a split folder of instances, "
        "or an instance folder with rgb/ and pose/",
    )


def _holdout(instances: list[Path]) -> tuple[list[Path], list[Path]]:
    """Deterministic 90/10 split, independent of the filesystem's listing order."""
    ordered = sorted(instances, key=lambda p: p.name)
    if len(ordered) < 2:
        return ordered, ordered
    shuffled = ordered.copy()
    random.Random(0).shuffle(shuffled)
    n_val = max(1, round(VAL_FRACTION * len(ordered)))
    val = set(shuffled[:n_val])
    return [p for p in ordered if p not in val], [p for p in ordered if p in val]


def _instances_in(split_dir: Path) -> list[Path]:
    if not split_dir.is_dir():
        raise DataError(split_dir, "split folder does not exist")
    children = _visible_dirs(split_dir)
    if not children:
        raise DataError(split_dir, "empty split folder: no instance folders in it")
    return children


def split_instances(layout: Layout, split: Split) -> list[Path]:
    """Instance folders of a split. Without a val split, val is a deterministic 10% of train."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}")
    if layout.kind == "instance":
        return [layout.folder]
    if layout.kind == "split":
        if split == "test":
            return _instances_in(layout.folder)
        train, val = _holdout(_instances_in(layout.folder))
        return train if split == "train" else val
    dirs = layout.split_dirs
    if "train" not in dirs and split != "test":
        raise DataError(layout.folder, f"no {layout.category}_train folder")
    if split == "train":
        train = _instances_in(dirs["train"])
        return train if "val" in dirs else _holdout(train)[0]
    if split == "val" or "test" not in dirs:
        return _instances_in(dirs["val"]) if "val" in dirs else _holdout(_instances_in(dirs["train"]))[1]
    return _instances_in(dirs["test"])


def _numbers(path: Path, line: str) -> list[float]:
    try:
        return [float(x) for x in line.split()]
    except ValueError:
        raise DataError(path, f"malformed number in {line.strip()!r}") from None


def read_intrinsics_txt(path: Path) -> tuple[Intrinsics, tuple[int, int], bool]:
    """SRN's 4-line form: ``f cx cy 0.`` / grid barycenter / scale / ``H W`` / optional world2cam flag.

    Returns intrinsics, the (width, height) they are for, and whether poses are world-to-camera.
    """
    if not path.is_file():
        raise DataError(path, "missing intrinsics file")
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"unreadable intrinsics file ({exc})") from None
    if len(lines) < 4:
        raise DataError(
            path, f"malformed intrinsics: expected 4 lines (f cx cy 0. / 0. 0. 0. / 1. / H W), got {len(lines)}"
        )
    first = _numbers(path, lines[0])
    hw = _numbers(path, lines[3])
    if len(first) < 3 or len(hw) != 2:
        raise DataError(path, "malformed intrinsics: line 1 must be 'f cx cy 0.' and line 4 'H W'")
    f, cx, cy = first[:3]
    if not all(np.isfinite([f, cx, cy, *hw])) or f <= 0 or min(hw) <= 0:
        raise DataError(path, "malformed intrinsics: focal length and image size must be positive finite numbers")
    world2cam = False
    if len(lines) > 4:
        flag = _numbers(path, lines[4])
        world2cam = bool(flag) and flag[0] != 0
    height, width = int(round(hw[0])), int(round(hw[1]))
    return Intrinsics(f, f, cx, cy), (width, height), world2cam


def read_view_K(path: Path) -> Intrinsics:
    """Per-view ``intrinsics/<name>.txt``: a 3x3 K, row-major."""
    try:
        values = _numbers(path, path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"unreadable intrinsics file ({exc})") from None
    if len(values) != 9 or not np.all(np.isfinite(values)):
        raise DataError(path, f"malformed intrinsics: expected 9 finite numbers (3x3 K), got {len(values)}")
    K = np.array(values).reshape(3, 3)
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise DataError(path, "malformed intrinsics: focal lengths must be positive")
    return Intrinsics(K[0, 0], K[1, 1], K[0, 2], K[1, 2])


def read_pose(path: Path, world2cam: bool = False) -> np.ndarray:
    """16 numbers, row-major 4x4, OpenCV camera-to-world. Returns camera-to-world in OpenGL camera axes."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"unreadable pose file ({exc})") from None
    values = _numbers(path, text)
    if len(values) != 16:
        raise DataError(path, f"malformed pose: expected 16 numbers (4x4 matrix), got {len(values)}")
    m = np.array(values, dtype=np.float64).reshape(4, 4)
    if not np.all(np.isfinite(m)):
        raise DataError(path, "malformed pose: contains non-finite numbers")
    if not np.allclose(m[3], [0, 0, 0, 1], atol=1e-4):
        raise DataError(path, f"malformed pose: last row must be 0 0 0 1, got {' '.join(f'{x:g}' for x in m[3])}")
    R = m[:3, :3]
    err = np.abs(R.T @ R - np.eye(3)).max()
    if err > 1e-3 or np.linalg.det(R) <= 0:
        raise DataError(path, f"malformed pose: rotation is not orthonormal (|R^T R - I| = {err:.3g})")
    if world2cam:
        m = np.linalg.inv(m)
    return m @ CV_TO_GL


def _view_index(stem: str, position: int, all_numeric: bool) -> int:
    return int(stem) if all_numeric else position


def _sort_key(p: Path) -> tuple:
    return (0, int(p.stem), "") if p.stem.isdigit() else (1, 0, p.stem)


def _agrees(k: Intrinsics, width: int, height: int) -> bool:
    """SRN renders put the principal point at the image centre; a K for another resolution puts it elsewhere."""
    return abs(2 * k.cx - width) <= 0.05 * width and abs(2 * k.cy - height) <= 0.05 * height


def read_instance(folder: Path, verify_images: bool = True, warn=print) -> Instance | None:
    """Parse one instance. Returns None (after ``warn``) when it has fewer than 2 views."""
    rgb_dir = folder / "rgb"
    images = sorted(
        (p for p in rgb_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        if rgb_dir.is_dir()
        else [],
        key=_sort_key,
    )
    if not images:
        raise DataError(folder, "empty instance folder: no rgb/*.png images")
    if len(images) < 2:
        warn(f"genvs-ns: warning: {folder}: skipped, it has {len(images)} view (need at least 2)")
        return None
    K_file, K_size, world2cam = read_intrinsics_txt(folder / "intrinsics.txt")
    all_numeric = all(p.stem.isdigit() for p in images)
    instance = Instance(folder)
    for position, image in enumerate(images):
        pose_file = folder / "pose" / f"{image.stem}.txt"
        if not pose_file.is_file():
            raise DataError(image, f"no pose for this image (expected {pose_file})")
        c2w = read_pose(pose_file, world2cam)
        width, height = image_size(image, verify=verify_images)
        candidates = []
        view_K_file = folder / "intrinsics" / f"{image.stem}.txt"
        if view_K_file.is_file():
            view_K = read_view_K(view_K_file)
            candidates.append((view_K_file, view_K, _agrees(view_K, width, height)))
        candidates.append((folder / "intrinsics.txt", K_file, K_size == (width, height)))
        chosen = next((k for _, k, ok in candidates if ok), None)
        if chosen is None:
            said = "; ".join(
                f"{f.name if f.parent == folder else f.relative_to(folder)} is for "
                + (f"{K_size[0]}x{K_size[1]}" if k is K_file else f"~{2 * k.cx:.0f}x{2 * k.cy:.0f}")
                for f, k, _ in candidates
            )
            raise DataError(image, f"image is {width}x{height} but the intrinsics disagree ({said})")
        instance.views.append(View(image, _view_index(image.stem, position, all_numeric), c2w, chosen, width, height))
    return instance
