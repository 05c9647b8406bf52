"""Rendering and sampling an evaluation plan's batches: target views of several objects in one batch, each object's
source views encoded once."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

import torch
from jaxtyping import Float
from torch import Tensor

from genvs_ns.data.dataset import SRNDataset
from genvs_ns.evaluation.protocol import Item, ObjectViews, image_seed
from genvs_ns.model.genvs_model import GeNVSModel
from genvs_ns.model.network import Conditioning
from genvs_ns.sampling import SamplerSettings
from genvs_ns.sampling.views import known_per_sample, render_views, sources_as_known


@dataclass
class RenderedBatch:
    items: list[Item]
    nerf: Float[Tensor, "items 3 H W"]
    """The NeRF RGB, on the CPU, one row per item."""
    sample: Float[Tensor, "items 3 H W"] | None
    """With a sampler, the diffusion samples, on the CPU."""
    seconds: float
    """Wall time of the batch, its objects' encoding included."""


class _Encodings:
    """Each object's source views encoded once (one encoder call per object, so that its volumes do not depend on
    which objects a batch mixes), kept only while the current batch needs them."""

    def __init__(self, model: GeNVSModel, ds: SRNDataset) -> None:
        self.model, self.ds, self.kept = model, ds, {}

    @torch.no_grad()
    def conditioning(self, items: list[Item]) -> Conditioning:
        device = self.model.device
        needed = {item.obj.index: item.obj for item in items}
        self.kept = {k: v for k, v in self.kept.items() if k in needed}
        for index, obj in needed.items():
            if index not in self.kept:
                self.kept[index] = self._encode(obj, device)
        parts = [self.kept[item.obj.index] for item in items]
        return Conditioning(
            torch.cat([p.volumes for p in parts]),
            torch.cat([p.c2w for p in parts]),
            torch.cat([p.K for p in parts]),
            parts[0].image_hw,
        )

    def _encode(self, obj: ObjectViews, device: torch.device) -> Conditioning:
        sources = list(obj.sources)
        images = torch.stack([self.ds.image(i) for i in sources])[None].to(device)
        return self.model.encode(images, self.ds.c2w[sources][None].to(device), self.ds.K[sources][None].to(device))


def render_batches(
    model: GeNVSModel,
    ds: SRNDataset,
    batches: list[list[Item]],
    sampling: SamplerSettings | None,
    seed: int,
) -> Iterator[RenderedBatch]:
    """The NeRF render (and with ``sampling`` the diffusion sample) of every item of ``batches``, batch by batch.

    Each image's sampling noise comes from its own generator (``image_seed``): an image is the same draw whichever
    images share its batch."""
    device = model.device
    encodings = _Encodings(model, ds)
    for items in batches:
        start = time.perf_counter()
        cond = encodings.conditioning(items)
        images = [item.image for item in items]
        generators = [
            torch.Generator(device=device).manual_seed(image_seed(seed, item.obj.index, int(ds.view_index[item.image])))
            for item in items
        ]
        # A jointly trained denoiser's known views: each object's first source views, as many as it needs and every
        # object of the batch has.
        count = min([known_per_sample(model)] + [len(item.obj.sources) for item in items])
        known = None
        if sampling is not None and count > 0:
            sources = torch.tensor([list(item.obj.sources)[:count] for item in items])
            pixels = torch.stack([torch.stack([ds.image(int(i)) for i in row]) for row in sources]).to(device)
            known = sources_as_known(model, pixels, ds.c2w[sources].to(device), ds.K[sources].to(device))
        outputs = render_views(
            model, cond, ds.c2w[images].to(device), ds.K[images].to(device), sampling=sampling, generator=generators,
            known=known,
        )  # fmt: skip
        # Only what is scored leaves the device: depth, accumulation and the feature image stay behind.
        sample = outputs.sample.float().cpu() if outputs.sample is not None else None
        yield RenderedBatch(items, outputs.rgb.float().cpu(), sample, time.perf_counter() - start)
