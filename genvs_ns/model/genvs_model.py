"""GeNVS as a nerfstudio ``Model``: wires the network to object batches, losses, metrics and EMA."""

from __future__ import annotations

import copy
from typing import Callable, Dict, List, Sequence, Tuple

import k_diffusion as K
import torch
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.models.base_model import Model
from nerfstudio.utils import colormaps
from torch import Tensor
from torch.nn import Parameter
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from genvs_ns.data.prefetch import ObjectBatch
from genvs_ns.errors import GeNVSError, exits_on_user_error, user_errors_exit
from genvs_ns.geometry import depth_range
from genvs_ns.model.ema import ema_update
from genvs_ns.model.losses import TrainingOutputs, training_losses
from genvs_ns.model.model_config import GeNVSModelConfig  # older config.yml files name it here
from genvs_ns.model.network import Conditioning, GeNVSNetwork
from genvs_ns.model.outputs import ViewRenders
from genvs_ns.model.precision import autocast, autocast_dtype
from genvs_ns.model.renderer import RenderedImages, RenderSettings
from genvs_ns.model.training import training_outputs


class GeNVSModel(Model):
    config: GeNVSModelConfig

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # nerfstudio's device marker never receives a gradient; under DDP, which must see a gradient for every
        # trainable parameter each step, it has to be frozen.
        self.device_indicator_param.requires_grad_(False)

    def populate_modules(self) -> None:
        super().populate_modules()
        self.collider = None  # object batches carry their own near/far
        metadata = self.kwargs.get("metadata", {})
        # What rendering for a user's own picture needs besides the weights, saved with them: near/far, the image size
        # the denoiser was trained at and the world's up direction (the pipeline reads them off the training data).
        self.register_buffer("near_far", torch.tensor([metadata.get("near", 0.8), metadata.get("far", 1.8)]))
        self.register_buffer("image_size", torch.tensor(metadata.get("image_hw", (0, 0)), dtype=torch.long))
        self.register_buffer("world_up", torch.tensor(metadata.get("world_up", (0.0, 0.0, 1.0)), dtype=torch.float32))
        self._near_far: tuple[float, float] | None = None
        self.register_load_state_dict_post_hook(lambda module, keys: setattr(module, "_near_far", None))
        self.net = GeNVSNetwork(self.config)
        # The EMA copy never trains: DDP and the optimizers ignore parameters without requires_grad.
        self.ema = copy.deepcopy(self.net).requires_grad_(False)
        device = torch.device(self.kwargs.get("device", "cpu"))
        if self.config.compile == "on" or (self.config.compile == "auto" and device.type == "cuda"):
            # In place, so the state dict keeps its keys; compiled at the first training step. Shapes are static
            # there (a fixed batch of objects, the images' size), so dynamic=False: the U-Net sees one shape, the
            # encoder one per source-view count (1-3 by default: three graphs, under dynamo's limit of eight).
            self.net.denoiser.denoiser.inner_model.compile(dynamic=False)
            # Eager under autocast, the encoder cast each fp32 weight to bf16 and its gradient back every step (175
            # of the compiled step's 239 tensor casts on the CPU; 1,443 of 22,862 operators: scripts/benchmark.py).
            self.net.encoder.compile(dynamic=False)
            # Eager, each render (ray samples, lookup, field MLP, compositing) was ~1,700 operators forward and ~1,000
            # backward of the step's 20,200; compiled the paper step makes 17,800 and runs 13% faster on the CPU
            # (scripts/benchmark.py). Shapes follow the source-view count and the render (target, warp, auxiliary
            # rays), so dynamo's default: a graph per shape first, then dynamic sizes.
            self.net.compile_render()
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        # Mirrors of ema_updates and of the trainer's step as Python ints: reading a CUDA tensor every step would wait
        # for the GPU. None until the first training callback (after a checkpoint has been loaded).
        self._ema_updates: int | None = None
        # What ns-render and ns-viewer show for a bare camera (which object, which view, a sample or not): a component
        # of the sampling layer that the pipeline hands over (set_camera_renders).
        self._render_camera: Callable[[Cameras], Dict[str, Tensor]] | None = None

    @property
    def near(self) -> float:
        return self._host_near_far()[0]

    @property
    def far(self) -> float:
        return self._host_near_far()[1]

    def _host_near_far(self) -> tuple[float, float]:
        # Read once, not at every step: float() of a CUDA tensor waits for the GPU to finish all queued work.
        if self._near_far is None:
            self._near_far = (float(self.near_far[0]), float(self.near_far[1]))
        return self._near_far

    @property
    def image_hw(self) -> tuple[int, int]:
        """Height and width of the training images (the denoiser's size)."""
        return int(self.image_size[0]), int(self.image_size[1])

    # ---- nerfstudio plumbing -------------------------------------------------------------------------------------

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        return {
            "encoder": list(self.net.encoder.parameters()),
            "field": list(self.net.field.parameters()),
            "denoiser": list(self.net.denoiser.parameters()),
        }

    def get_training_callbacks(
        self, training_callback_attributes: TrainingCallbackAttributes
    ) -> List[TrainingCallback]:
        def update_ema(step: int) -> None:
            if self._ema_updates is None:
                self._ema_updates = int(self.ema_updates)
            sched = K.utils.EMAWarmup(power=self.config.ema_power, max_value=self.config.ema_max_decay)
            sched.last_epoch = self._ema_updates
            ema_update(self.net, self.ema, sched.get_value())
            self._ema_updates += 1
            self.ema_updates.fill_(self._ema_updates)

        return [TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], update_ema)]

    def forward(self, inputs: ObjectBatch) -> TrainingOutputs:
        # nerfstudio's forward runs a collider on ray bundles; object batches go straight to the network.
        return self.get_outputs(inputs)

    def get_outputs(self, inputs: ObjectBatch) -> TrainingOutputs:
        if isinstance(inputs, RayBundle):
            # Rays alone say nothing about which object to show; cameras go through get_outputs_for_camera. Only
            # nerfstudio's per-scene tools (ns-export pointcloud / poisson / tsdf) come here, a command's entry.
            with user_errors_exit():
                raise GeNVSError(
                    "genvs renders need source views, not bare rays: ns-export's pointcloud, poisson and tsdf do not "
                    "apply to a genvs checkpoint; genvs-sample generates the views of an object"
                )
        return training_outputs(self.net, self.config, inputs, self.render_settings(stratified=True), self.autocast)

    # ---- training --------------------------------------------------------------------------------------------

    def render_settings(self, stratified: bool) -> RenderSettings:
        c = self.config
        # The data's near and far are where the object's sphere begins and ends seen from its cameras.
        radius = (self.far - self.near) / 2
        return RenderSettings(radius, c.num_coarse_samples, c.num_importance_samples, stratified)

    def get_metrics_dict(self, outputs: TrainingOutputs, batch: ObjectBatch) -> Dict[str, Tensor]:
        return {"psnr": peak_signal_noise_ratio(outputs.rgb.detach().clamp(0, 1), outputs.target_rgb, data_range=1.0)}

    def get_loss_dict(self, outputs: TrainingOutputs, batch: ObjectBatch, metrics_dict=None) -> Dict[str, Tensor]:
        return training_losses(outputs, self.config)

    # ---- what sampling builds on: encode, render, the denoiser's conditioning ---------------------------------------

    def network(self, use_ema: bool = True) -> GeNVSNetwork:
        """The EMA weights (evaluation, sampling) or the trained ones."""
        return self.ema if use_ema else self.net

    def autocast(self):
        """The model's autocast (precision.py) for its encoder, field MLP and U-Net."""
        return autocast(autocast_dtype(self.config.precision, self.device), self.device)

    def encode(
        self,
        images: Float[Tensor, "batch views 3 H W"],
        c2w: Float[Tensor, "batch views 3 4"],
        K: Float[Tensor, "batch views 3 3"],
        use_ema: bool = True,
    ) -> Conditioning:
        """Source views as feature volumes; the denoiser works at their image size."""
        with self.autocast():
            return self.network(use_ema).encode(images, c2w, K)

    def render(
        self,
        cond: Conditioning,
        target_c2w: Float[Tensor, "batch 3 4"],
        target_K: Float[Tensor, "batch 3 3"],
        target_hw: tuple[int, int] | None = None,
        use_ema: bool = True,
    ) -> ViewRenders:
        """NeRF RGB, depth and accumulation at ``target_hw`` (default: the source image size); ``target_K`` is in
        pixels of ``target_hw``."""
        target_hw = tuple(target_hw or cond.image_hw)
        full = self._render_image(cond, target_c2w, target_K, target_hw, target_hw, use_ema)
        return ViewRenders(full.features[:, :3].clamp(0, 1), full.depth, full.accumulation)

    def render_features(
        self,
        cond: Conditioning,
        target_c2w: Float[Tensor, "batch 3 4"],
        target_K: Float[Tensor, "batch 3 3"],
        target_hw: tuple[int, int] | None = None,
        use_ema: bool = True,
    ) -> Float[Tensor, "batch L h w"]:
        """The feature image the denoiser is conditioned on, at the source image size / ``render_downscale``."""
        target_hw = tuple(target_hw or cond.image_hw)
        return self._render_image(
            cond, target_c2w, target_K, target_hw, self.config.feature_hw(cond.image_hw), use_ema
        ).features

    def denoiser_conditioning(
        self,
        cond: Conditioning,
        target_c2w: Float[Tensor, "batch 3 4"],
        target_K: Float[Tensor, "batch 3 3"],
        target_hw: tuple[int, int] | None = None,
        use_ema: bool = True,
        known: tuple[Tensor, Tensor, Tensor] | None = None,
        edge_margins: Sequence[int] = (),
    ) -> tuple[Float[Tensor, "batch L h w"], Float[Tensor, "batch C H W"]]:
        """The feature image (as ``render_features``) and what the U-Net is conditioned on at the source image size:
        the features upsampled and, for a model trained with warp_known_view, ``known`` (images at the source size,
        c2w, K: ``[batch, known, ...]``, the first view first) warped into each target at its rendered depth, each
        known view's pixels within its ``edge_margins`` (per view) of its silhouette left out."""
        target_hw = tuple(target_hw or cond.image_hw)
        net = self.network(use_ema)
        out = self._render_image(cond, target_c2w, target_K, target_hw, self.config.feature_hw(cond.image_hw), use_ema)
        image = net.upsample(out.features, cond.image_hw)
        if not net.warps:
            return out.features, image
        if known is None:
            raise GeNVSError("this model is conditioned on a known view warped into each new one: none given")
        with self.autocast():
            warped = net.warp_known(
                cond, *known, target_c2w, target_K, target_hw, out, self.render_settings(False), edge_margins
            )
        return out.features, torch.cat([image, warped.to(image.dtype)], dim=1)

    def _render_image(self, cond, c2w, K, target_hw, out_hw, use_ema: bool) -> RenderedImages:
        # Evaluation renders: the EMA (or trained) field, unstratified samples, the model's autocast.
        with self.autocast():
            return self.network(use_ema).render_image(
                cond, c2w, K, target_hw, out_hw, self.render_settings(stratified=False)
            )

    # ---- nerfstudio's camera-only tools (ns-render, ns-viewer) ------------------------------------------------------

    def set_camera_renders(self, render_camera: Callable[[Cameras], Dict[str, Tensor]]) -> None:
        """What get_outputs_for_camera returns for a camera; set by the pipeline (sampling/camera_renders.py)."""
        self._render_camera = render_camera

    @torch.no_grad()
    @exits_on_user_error  # ns-render and ns-viewer render through here
    def get_outputs_for_camera(self, camera: Cameras, obb_box=None) -> Dict[str, Tensor]:
        """Renders for a bare camera, conditioned on a source view that the pipeline's camera renders choose."""
        if self._render_camera is None:
            raise GeNVSError("a camera-only render needs the pipeline (its data set gives the source view)")
        return self._render_camera(camera)

    def get_image_metrics_and_images(
        self, outputs: ViewRenders, batch: ObjectBatch
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        gt = batch.target_image
        metrics = {
            "psnr": float(peak_signal_noise_ratio(outputs.rgb, gt, data_range=1.0)),
            "ssim": float(structural_similarity_index_measure(outputs.rgb, gt, data_range=1.0)),
        }
        row = [batch.source_images[:, 0], gt, outputs.rgb]
        if outputs.sample is not None:
            metrics["sample_psnr"] = float(peak_signal_noise_ratio(outputs.sample, gt, data_range=1.0))
            metrics["sample_ssim"] = float(structural_similarity_index_measure(outputs.sample, gt, data_range=1.0))
            row.append(outputs.sample)
        # As nerfstudio's methods show them: turbo between the target camera's near and far planes, masked by
        # accumulation; "img" is the side-by-side (source | truth | NeRF RGB | sample).
        near, far = depth_range(batch.target_c2w[0, :3, 3], (self.far - self.near) / 2)
        accumulation = outputs.accumulation[0].permute(1, 2, 0)
        depth = colormaps.apply_depth_colormap(
            outputs.depth[0].permute(1, 2, 0), accumulation, near_plane=float(near), far_plane=float(far)
        )
        images = {
            "img": torch.cat(row, dim=-1)[0].permute(1, 2, 0),
            "depth": depth,
            "accumulation": colormaps.apply_colormap(accumulation),
        }
        return metrics, images
