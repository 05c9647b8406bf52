"""What ns-render and ns-viewer show for a bare camera: which images a camera-only render is conditioned on.

A camera alone does not say which object to show. ``CameraRenders`` chooses the source view (the viewer's controls, a
click on a training camera, ``ns-render --camera-idx``, or the config's default), keeps the last one encoded, and
renders the NeRF outputs and, when asked, a diffusion sample. The pipeline owns it and hands its ``render`` to the
model, whose ``get_outputs_for_camera`` nerfstudio's tools call. It is an ``nn.Module`` without weights only so that
nerfstudio's viewer, which looks for controls among the pipeline's modules, finds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.viewer.viewer_elements import ViewerCheckbox, ViewerDropdown, ViewerNumber
from torch import Tensor, nn

from genvs_ns import checks
from genvs_ns.data.dataset import SRNDataset
from genvs_ns.errors import GeNVSError
from genvs_ns.geometry import intrinsics_matrix
from genvs_ns.model.genvs_model import GeNVSModel
from genvs_ns.model.network import Conditioning
from genvs_ns.sampling import DEFAULT_STEPS, TUNED_CPU_SAMPLING, SamplerSettings, default_sampling
from genvs_ns.sampling.views import known_per_sample, render_views, sources_as_known


@dataclass
class CameraRenderConfig:
    """ns-render / ns-viewer: what a camera-only render is conditioned on, and its diffusion sample."""

    object: int = 0
    """Without --camera-idx: the object (index in the evaluation split) to condition on."""
    source_view: int = 64
    """Without --camera-idx: the source view of that object (view index; the object's first view where it does not
    exist)."""
    sample_steps: int = DEFAULT_STEPS
    """Denoiser steps (default sampler) of the "sample" output (0: NeRF outputs only)."""
    seed: int = 0
    """Seed of the "sample" output (the same for every frame)."""

    def check(self, prefix: str = "--pipeline.renders.") -> None:
        for name in ("object", "source_view", "sample_steps"):
            checks.at_least(prefix + name.replace("_", "-"), getattr(self, name), 0)
        checks.seed(prefix + "seed", self.seed)


class CameraRenders(nn.Module):
    def __init__(
        self,
        model: GeNVSModel,
        eval_dataset: SRNDataset,
        train_dataset: SRNDataset,
        config: CameraRenderConfig,
        sampling: SamplerSettings = TUNED_CPU_SAMPLING,
        training: bool = False,
    ) -> None:
        super().__init__()
        # A plain reference: registered as a submodule, the model would appear twice in the pipeline's state dict.
        self.__dict__["_model"] = model
        self._datasets = {"eval": eval_dataset, "train": train_dataset}
        self._cache: Dict[Tuple[str, int], Conditioning] = {}
        self.config = config
        self.sampling = sampling  # the method's default sampler
        # ns-viewer shows these; elsewhere they keep the config's values.
        self.viewer_split = ViewerDropdown(
            "Objects from",
            "eval",
            ["eval", "train"],
            hint="Split the object index counts in (clicking a training camera switches to 'train')",
        )
        self.viewer_object = ViewerNumber(
            "Object", config.object, hint="Object whose source view conditions the render"
        )
        self.viewer_source_view = ViewerNumber(
            "Source view", config.source_view, hint="View index of that object used as input (first view if absent)"
        )
        # Off while training: a connected browser would hold the training lock for a whole sample every frame (15 to
        # 25 U-Net passes); a click turns it on. ns-viewer and ns-render of a trained model show it by default.
        self.viewer_sample = ViewerCheckbox(
            "Diffusion sample",
            config.sample_steps > 0 and not training,
            hint=f"Add the 'sample' output ({config.sample_steps} steps)",
        )
        # The viewer passes the index of the last clicked training camera with every render (0 before any click).
        self._viewer_camera_idx = 0

    def _in_viewer(self) -> bool:
        # The viewer builds GUI handles for the controls; ns-render and scripts never do.
        return self.viewer_object.gui_handle is not None

    def control_source_image(self, clamp: bool = False) -> Tuple[str, int]:
        """Split and image index that the controls (or the config) choose: view ``Source view`` of object ``Object``,
        or the object's first view where that view does not exist. An object out of range is an error, or with
        ``clamp`` (a number typed into the viewer) moved to the nearest one."""
        split = str(self.viewer_split.value)
        ds = self._datasets[split]
        obj = int(self.viewer_object.value)
        if not 0 <= obj < ds.num_objects:
            if not clamp:
                raise GeNVSError(
                    f"object {obj} out of range: the {split} split has {ds.num_objects} objects "
                    f"(0-{ds.num_objects - 1})"
                )
            obj = min(max(obj, 0), ds.num_objects - 1)
            self.viewer_object.value = obj
        return split, ds.view_image(obj, int(self.viewer_source_view.value))

    def _select_training_image(self, image_index: int) -> None:
        """A click on a training camera in the viewer: its object and view become the controls' choice."""
        ds = self._datasets["train"]
        if not 0 <= image_index < len(ds):
            return
        self.viewer_split.value = "train"
        self.viewer_object.value = int(ds.object_index[image_index])
        self.viewer_source_view.value = int(ds.view_index[image_index])

    def conditioning_for_image(self, split: str, image_index: int) -> Conditioning:
        """One image of ``split`` encoded (EMA weights) as the source view; the last one is cached."""
        ds = self._datasets[split]
        if not 0 <= image_index < len(ds):
            raise GeNVSError(f"camera index {image_index} out of range: {len(ds)} {split} images")
        key = (split, image_index)
        if key not in self._cache:
            device = self._model.device
            image = ds.image(image_index)[None, None].to(device)
            c2w, K = ds.c2w[image_index][None, None].to(device), ds.K[image_index][None, None].to(device)
            with torch.no_grad():
                self._cache = {key: self._model.encode(image, c2w, K)}
        return self._cache[key]

    def _camera_source(self, camera: Cameras) -> Tuple[str, int]:
        metadata = camera.metadata or {}
        index = metadata.get("cam_idx")
        index = int(index.flatten()[0]) if isinstance(index, Tensor) else index
        if self._in_viewer():
            # Every viewer render carries the last clicked training camera; only a new click changes the controls.
            if index is not None and index != self._viewer_camera_idx:
                self._viewer_camera_idx = index
                self._select_training_image(index)
            # An exception here would end the viewer's render thread: a mistyped object is clamped instead.
            return self.control_source_image(clamp=True)
        # ns-render --camera-idx N: image N of the evaluation split.
        return ("eval", int(index)) if index is not None else self.control_source_image()

    @torch.no_grad()
    def render(self, camera: Cameras) -> Dict[str, Tensor]:
        """``[H, W, C]`` outputs for one camera: rgb, depth, accumulation and, when switched on, sample."""
        model = self._model
        split, index = self._camera_source(camera)
        cond = self.conditioning_for_image(split, index)
        camera = camera.to(model.device)
        c2w = camera.camera_to_worlds.reshape(1, 3, 4)
        K = intrinsics_matrix(*(x.reshape(1) for x in (camera.fx, camera.fy, camera.cx, camera.cy)))
        hw = (int(camera.height.flatten()[0]), int(camera.width.flatten()[0]))
        generator = torch.Generator(device=model.device).manual_seed(self.config.seed)
        sampling = default_sampling(self.config.sample_steps, self.sampling) if self.viewer_sample.value else None
        known = None
        if sampling is not None and known_per_sample(model) > 0:  # the source view, for a jointly trained denoiser
            ds, device = self._datasets[split], model.device
            known = sources_as_known(
                model,
                ds.image(index)[None, None].to(device),
                ds.c2w[index][None, None].to(device),
                ds.K[index][None, None].to(device),
            )
        out = render_views(model, cond, c2w, K, target_hw=hw, sampling=sampling, generator=generator, known=known)
        return {k: v[0].permute(1, 2, 0) for k, v in out.images().items()}
