"""nerfstudio DataParser for SRN ShapeNet folders (``--data`` of ``ns-train``), registered as ``srn``.

This module is loaded by nerfstudio's dataparser discovery while ``nerfstudio.configs`` is still importing, so it must
not import datamanager (or any ``nerfstudio.configs``) code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Type

import numpy as np
import torch
import torch.distributed as dist
import tyro
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.plugins.registry_dataparser import DataParserSpecification
from rich.console import Console

from genvs_ns.data.parse_cache import ParseCache, signature
from genvs_ns.data.srn_files import NEAR_FAR, SPLITS, read_instance, resolve_layout, split_instances
from genvs_ns.errors import DataError, exits_on_user_error

# Reports go to stderr: genvs-data-info prints JSON on stdout, which must stay parseable.
CONSOLE = Console(stderr=True)


@dataclass
class SRNDataParserConfig(DataParserConfig):
    """SRN ShapeNet cars / chairs: a root of cars_train|val|test folders, one split folder, or one instance."""

    _target: Type = field(default_factory=lambda: SRNDataParser)
    data: Path = Path("data/srn_cars")
    """Root holding cars_train / cars_val / cars_test (or chairs_*), a split folder, or an instance folder."""
    category: Literal["auto", "cars", "chairs", "mixed"] = "auto"
    """Object category; "auto" reads it from the folder names. Chooses the default near/far."""
    near: float | None = None
    """Where the object begins, seen from the data's cameras (default per category: cars and toy mixed 0.8, chairs
    1.25). With far it gives the radius of the object's sphere around the origin, (far - near) / 2; each camera's
    planes are its distance minus and plus that radius, so cameras at other distances see the same sphere."""
    far: float | None = None
    """Where the object ends, seen from the data's cameras (default per category: cars and toy mixed 1.8, chairs
    2.75)."""
    downscale_factor: int = 1
    """Integer factor to shrink images by on load (e.g. 2 turns 128 px into 64 px); intrinsics are rescaled."""
    verify_images: bool = True
    """Read every image file once while parsing so truncated files fail now, not hours into training."""
    parse_cache: bool = True
    """Keep parsed objects in ~/.cache/genvs-ns/srn (never in the data folder), re-parsing only objects whose files
    changed: a full SRN split starts in seconds instead of minutes."""
    max_objects: int | None = None
    """Use only the first N objects of each split (sorted by id): quick experiments and bounded evaluation."""
    single_object: bool = False
    """Take one object's folder only. True in the srn dataparser of per-scene methods (ns-train nerfacto ... srn),
    which would blend every object of a data set into one scene; the genvs methods learn across objects."""


@dataclass
class SRNDataParser(DataParser):
    """Parses SRN folders into nerfstudio cameras (OpenGL axes) with per-image object and view indices."""

    config: SRNDataParserConfig

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        if self.config.downscale_factor < 1:
            raise DataError(self.config.data, f"downscale_factor must be >= 1, got {self.config.downscale_factor}")
        layout = resolve_layout(self.config.data, self.config.category)
        category = layout.category if self.config.category == "auto" else self.config.category
        if category not in NEAR_FAR:
            CONSOLE.print(f"[yellow]genvs-ns: category of {self.config.data} unknown; using the cars near/far")
            category = "cars"
        near, far = NEAR_FAR[category]
        near = self.config.near if self.config.near is not None else near
        far = self.config.far if self.config.far is not None else far
        if not 0 <= near < far:
            raise DataError(self.config.data, f"near ({near}) must be >= 0 and below far ({far})")

        if self.config.single_object and layout.kind != "instance":
            raise DataError(
                self.config.data,
                "holds many objects: with a per-scene method (nerfacto, ...) the srn dataparser takes one object's "
                "folder (.../cars_train/<id>); many objects are for the generalizable methods genvs and genvs-tiny",
            )
        folders = split_instances(layout, split)  # type: ignore[arg-type]
        if self.config.max_objects is not None:
            folders = folders[: self.config.max_objects]
        # Under DDP every rank parses; one reading every PNG is enough (~211k for SRN cars), the others read headers.
        verify = self.config.verify_images and (not dist.is_initialized() or dist.get_rank() == 0)
        start = time.perf_counter()

        def warn(msg: str) -> None:
            CONSOLE.print(f"[yellow]{msg}", soft_wrap=True)

        cache = ParseCache.for_data(self.config.data, warn=warn) if self.config.parse_cache else None
        instances = []
        for folder in folders:
            folder_signature = signature(folder) if cache else ""
            inst = cache.get(folder, folder_signature, verify) if cache else None
            if inst is None:
                inst = read_instance(folder, verify, warn=warn)
                if inst is not None and cache:
                    cache.put(inst, folder_signature, verify)
            if inst is not None:
                instances.append(inst)
        if cache and (not dist.is_initialized() or dist.get_rank() == 0):
            cache.save()
        count = sum(len(inst.views) for inst in instances)
        said = f"{count} {split} images of {len(instances)} objects in {time.perf_counter() - start:.1f} s"
        if cache:
            said += f", {cache.hits} objects from the parse cache {cache.path}"
        CONSOLE.print(f"genvs-ns: {'checked' if verify else 'read'} {said}", soft_wrap=True)
        if not instances:
            raise DataError(self.config.data, f"no {split} object has at least 2 views")

        factor = self.config.downscale_factor
        c2w, fx, fy, cx, cy, width, height, object_index, view_index, filenames = ([] for _ in range(10))
        for obj, inst in enumerate(instances):
            for view in inst.views:
                w, h = view.width // factor, view.height // factor
                k = view.intrinsics.scaled(w / view.width, h / view.height)
                c2w.append(view.c2w_opengl[:3])
                fx.append(k.fx)
                fy.append(k.fy)
                cx.append(k.cx)
                cy.append(k.cy)
                width.append(w)
                height.append(h)
                object_index.append(obj)
                view_index.append(view.index)
                filenames.append(view.image)

        def column(values, dtype=torch.float32) -> torch.Tensor:
            return torch.tensor(np.asarray(values), dtype=dtype)[:, None]

        object_index_t = column(object_index, torch.long)
        view_index_t = column(view_index, torch.long)
        cameras = Cameras(
            camera_to_worlds=torch.tensor(np.stack(c2w), dtype=torch.float32),
            fx=column(fx),
            fy=column(fy),
            cx=column(cx),
            cy=column(cy),
            width=column(width, torch.long),
            height=column(height, torch.long),
            camera_type=CameraType.PERSPECTIVE,
            metadata={"object_index": object_index_t, "view_index": view_index_t},
        )
        distances = np.linalg.norm(np.stack(c2w)[:, :, 3], axis=-1)
        radius = float(distances.max())
        middle = float(np.median(distances))
        if abs((near + far) / 2 - middle) > 0.05 * (far - near):
            CONSOLE.print(
                f"[yellow]genvs-ns: {self.config.data}: near/far ({near}, {far}) are not centred on the cameras'"
                f" distance ({middle:.2f}); each camera samples its distance -/+ {(far - near) / 2:.2f}"
            )
        half = max(radius, far) * 1.05
        return DataparserOutputs(
            image_filenames=filenames,
            cameras=cameras,
            alpha_color=torch.ones(3),
            scene_box=SceneBox(aabb=torch.tensor([[-half] * 3, [half] * 3], dtype=torch.float32)),
            metadata={
                "object_index": object_index_t[:, 0],
                "view_index": view_index_t[:, 0],
                "object_ids": [inst.instance_id for inst in instances],
                "object_folders": [inst.folder for inst in instances],
                "near": near,
                "far": far,
                "category": category,
                "downscale_factor": factor,
            },
        )


class SceneSRNDataParser(SRNDataParser):
    """The srn dataparser as per-scene methods get it: their ns-train calls it directly, so here a user's mistake
    becomes one line and an exit (the genvs methods' pipeline does that for theirs)."""

    @exits_on_user_error
    def get_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        return super().get_dataparser_outputs(split, **kwargs)


SRN_DESCRIPTION = "SRN ShapeNet cars/chairs (root of split folders, one split folder, or one instance folder)"

# What other methods get (ns-train nerfacto ... srn): one object, a scene; genvs's datamanager has its own default.
srn_dataparser = DataParserSpecification(
    config=SRNDataParserConfig(_target=SceneSRNDataParser, single_object=True), description=SRN_DESCRIPTION
)

if TYPE_CHECKING:
    SRNDataParserChoice = SRNDataParserConfig
else:
    # nerfstudio's dataparsers are subcommands (`ns-train nerfacto nerfstudio-data --downscale-factor 2`). The genvs
    # datamanager takes only this one; as a union of one (tyro pads it with a hidden None) it reads the same way:
    # `ns-train genvs-tiny --data D srn --downscale-factor 2`.
    SRNDataParserChoice = tyro.conf.OmitSubcommandPrefixes[
        tyro.extras.subcommand_type_from_defaults(
            {"srn": SRNDataParserConfig()}, descriptions={"srn": SRN_DESCRIPTION}, prefix_names=False
        )
    ]
