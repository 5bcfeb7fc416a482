"""Batched, per-image random augmentation of uint8 CIFAR batches on their own device.

The paper's (authors' code) training pipeline, torchvision on PIL images one at a time:

    RandomCrop(32, padding=4) -> RandomHorizontalFlip(0.5) -> RandomAffine(degrees=10)
    -> RandomRotation(20) -> ColorJitter(0.2, 0.2, 0.1, 0.1) -> ToTensor -> Normalize

is reproduced here on a whole batch at once, every image with its own random parameters:

- crop + flip: one index gather from the uint8 batch (zero padding = pixels outside the
  image read as 0);
- the two rotations (uniform in [-10, 10] and [-20, 20] degrees, about the image centre)
  are composed into ONE rotation by their sum, applied with a single ``affine_grid`` +
  ``grid_sample`` (nearest, zero fill, as torchvision's defaults). Deviation: torchvision
  resamples twice (two nearest-neighbour roundings); we resample once, which is slightly
  sharper. The angle distribution (sum of the two uniforms) is the same;
- colour jitter in torchvision's semantics: brightness factor in [0.8, 1.2], contrast
  [0.8, 1.2], saturation [0.9, 1.1], hue shift [-0.1, 0.1], the four applied in a random
  order drawn PER IMAGE (as torchvision's ``ColorJitter`` draws one per call, i.e. per
  image). It works in float on [0, 1] (torchvision's tensor path) whereas the authors' PIL
  path rounds to uint8 after each step; hue goes through RGB -> HSV -> RGB in torch;
- Normalize with the CIFAR mean/std of the authors' code.

All random numbers come from an explicit CPU ``torch.Generator`` (then moved to the batch's
device), so a seed gives the same parameters on CPU and CUDA.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
AUGMENT_MODES = ("none", "flip_crop", "paper")

CROP_PADDING = 4
AFFINE_DEGREES = 10.0
ROTATION_DEGREES = 20.0
BRIGHTNESS = 0.2
CONTRAST = 0.2
SATURATION = 0.1
HUE = 0.1

# Colour-jitter operation ids, in torchvision's ColorJitter numbering.
BRIGHTNESS_OP, CONTRAST_OP, SATURATION_OP, HUE_OP = 0, 1, 2, 3
# ITU-R 601-2 luma, as PIL's convert("L") (the authors jittered PIL images).
_LUMA = (0.299, 0.587, 0.114)


@functools.lru_cache(maxsize=32)
def _channel_constant(
    values: tuple[float, ...], device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    # Built once per device: creating it per batch would be a host-to-device copy each time.
    return torch.tensor(values, dtype=dtype, device=device).view(1, len(values), 1, 1)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (0..255) or float (0..1) NCHW images -> float32 normalised with the CIFAR stats."""
    if images.dtype == torch.uint8:
        images = images.to(torch.float32).div_(255.0)
    mean = _channel_constant(CIFAR_MEAN, images.device, images.dtype)
    std = _channel_constant(CIFAR_STD, images.device, images.dtype)
    return (images - mean) / std


def crop_and_flip(
    images: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    flip: torch.Tensor,
    padding: int = CROP_PADDING,
) -> torch.Tensor:
    """Per-image random crop of the zero-padded image, then optional horizontal flip.

    ``top``/``left`` (B,) are the crop offsets in the padded image, in [0, 2 * padding]
    (``padding`` = no shift); ``flip`` (B,) bool. Works for any dtype; returns a new tensor.
    """
    batch, channels, height, width = images.shape
    device = images.device
    rows = top.to(device).view(-1, 1) - padding + torch.arange(height, device=device)
    cols = left.to(device).view(-1, 1) - padding + torch.arange(width, device=device)
    # Flipping the crop = reading its columns right to left.
    cols = torch.where(flip.to(device).view(-1, 1), cols.flip(1), cols)
    rows_inside = ((rows >= 0) & (rows < height)).view(batch, height, 1)
    cols_inside = ((cols >= 0) & (cols < width)).view(batch, 1, width)
    inside = rows_inside & cols_inside  # False on the zero padding
    row_index = rows.clamp(0, height - 1).view(batch, height, 1)
    col_index = cols.clamp(0, width - 1).view(batch, 1, width)
    flat_index = row_index * width + col_index
    flat_index = flat_index.view(batch, 1, height * width).expand(batch, channels, -1)
    gathered = images.reshape(batch, channels, height * width).gather(2, flat_index)
    gathered = gathered.view(batch, channels, height, width)
    return torch.where(inside.view(batch, 1, height, width), gathered, gathered.new_zeros(()))


def rotate(images: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each float image by its angle (counter-clockwise, about the centre).

    Nearest-neighbour sampling and zero fill, like torchvision's ``rotate`` defaults.
    """
    radians = degrees.to(device=images.device, dtype=images.dtype) * (math.pi / 180.0)
    cos, sin = torch.cos(radians), torch.sin(radians)
    zero = torch.zeros_like(cos)
    # affine_grid maps each OUTPUT location to the INPUT location it reads from (inverse map);
    # in image coordinates (y down) a counter-clockwise turn reads from [[c, -s], [s, c]] q.
    theta = torch.stack(
        [torch.stack([cos, -sin, zero], dim=1), torch.stack([sin, cos, zero], dim=1)], dim=1
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def _per_image(factor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return factor.to(device=like.device, dtype=like.dtype).view(-1, 1, 1, 1)


def _blend(images: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    factor = _per_image(factor, images)
    return (factor * images + (1.0 - factor) * other).clamp_(0.0, 1.0)


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """Luma of float RGB images, (B, 1, H, W)."""
    red, green, blue = images.unbind(dim=1)
    return (_LUMA[0] * red + _LUMA[1] * green + _LUMA[2] * blue).unsqueeze(1)


def adjust_brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale towards black: factor 1 = identity, 0 = black."""
    return _blend(images, torch.zeros((), dtype=images.dtype, device=images.device), factor)


def adjust_contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the image's mean grey level: factor 1 = identity, 0 = uniform grey."""
    mean = grayscale(images).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(images, mean, factor)


def adjust_saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the grey version of the image: factor 1 = identity, 0 = greyscale."""
    return _blend(images, grayscale(images), factor)


def rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    """Float RGB in [0, 1] -> HSV with h, s, v in [0, 1] (hue in turns), shape kept."""
    red, green, blue = images.unbind(dim=1)
    value = images.amax(dim=1)
    chroma = value - images.amin(dim=1)
    # Grey pixels (chroma 0) get hue 0 and saturation 0; the +1 only avoids dividing by 0.
    safe_chroma = chroma + (chroma == 0).to(images.dtype)
    saturation = chroma / (value + (value == 0).to(images.dtype))
    # Hue sector by which channel is largest (ties: red before green before blue); masks
    # as 0/1 factors, cheaper than nested torch.where on the CPU.
    red_is_max = red == value
    green_is_max = (green == value) & ~red_is_max
    blue_is_max = ~(red_is_max | green_is_max)
    hue_sixths = (
        red_is_max.to(images.dtype) * ((green - blue) / safe_chroma)
        + green_is_max.to(images.dtype) * ((blue - red) / safe_chroma + 2.0)
        + blue_is_max.to(images.dtype) * ((red - green) / safe_chroma + 4.0)
    )
    hue = torch.remainder(hue_sixths / 6.0, 1.0)
    return torch.stack([hue, saturation, value], dim=1)


# Phase of each output channel on the hue circle (in sixths), for hsv_to_rgb.
_HSV_CHANNEL_PHASE = (5.0, 3.0, 1.0)


def hsv_to_rgb(images: torch.Tensor) -> torch.Tensor:
    """HSV (all in [0, 1]) -> float RGB in [0, 1]; inverse of :func:`rgb_to_hsv`.

    Closed form: channel = v - v * s * clamp(min(k, 4 - k), 0, 1) with
    k = (phase + 6 h) mod 6, phase 5/3/1 for red/green/blue; the piecewise-linear hexcone
    without per-sector branches.
    """
    hue, saturation, value = images[:, 0:1], images[:, 1:2], images[:, 2:3]
    phase = _channel_constant(_HSV_CHANNEL_PHASE, images.device, images.dtype)
    k = torch.remainder(phase + 6.0 * hue, 6.0)
    weight = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return value - value * saturation * weight


def adjust_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by ``shift`` turns (in [-0.5, 0.5]); 0 = identity up to rounding."""
    hsv = rgb_to_hsv(images)
    hue = (hsv[:, 0] + shift.to(device=images.device, dtype=images.dtype).view(-1, 1, 1)) % 1.0
    return hsv_to_rgb(torch.stack([hue, hsv[:, 1], hsv[:, 2]], dim=1)).clamp_(0.0, 1.0)


_JITTER_OPS = {
    BRIGHTNESS_OP: adjust_brightness,
    CONTRAST_OP: adjust_contrast,
    SATURATION_OP: adjust_saturation,
    HUE_OP: adjust_hue,
}


def color_jitter(
    images: torch.Tensor,
    brightness: torch.Tensor,
    contrast: torch.Tensor,
    saturation: torch.Tensor,
    hue: torch.Tensor,
    order: torch.Tensor,
) -> torch.Tensor:
    """Apply the four colour adjustments to float [0, 1] images, each image in its own order.

    ``order`` (B, 4) holds a permutation of the op ids (BRIGHTNESS_OP, ...) per image. The
    images are processed in groups (position, op); the groups are formed on the host from a
    CPU ``order``, so a CUDA batch needs no device synchronisation here.
    """
    factors = torch.stack([brightness, contrast, saturation, hue], dim=1)
    factors = factors.to(images.device, images.dtype, non_blocking=True)
    order_host = order.cpu()
    groups: list[tuple[int, torch.Tensor]] = []
    for position in range(order_host.shape[1]):
        for op in _JITTER_OPS:
            chosen = (order_host[:, position] == op).nonzero().flatten()
            if chosen.numel():
                groups.append((op, chosen))
    out = images.clone()
    if not groups:
        return out
    # One host-to-device copy for all the groups' indices.
    all_indices = torch.cat([chosen for _, chosen in groups])
    all_indices = all_indices.to(images.device, non_blocking=True)
    start = 0
    for op, chosen in groups:
        index = all_indices[start : start + chosen.numel()]
        start += chosen.numel()
        factor = factors[:, op].index_select(0, index)
        out.index_copy_(0, index, _JITTER_OPS[op](out.index_select(0, index), factor))
    return out


@dataclass
class PaperAugmentParams:
    """The random parameters of one batch of the paper's augmentation (all shape (B,...))."""

    top: torch.Tensor  # int64, crop offset in the padded image
    left: torch.Tensor  # int64
    flip: torch.Tensor  # bool
    degrees: torch.Tensor  # float32, RandomAffine angle + RandomRotation angle
    brightness: torch.Tensor  # float32 factor
    contrast: torch.Tensor  # float32 factor
    saturation: torch.Tensor  # float32 factor
    hue: torch.Tensor  # float32 shift in turns
    order: torch.Tensor  # int64 (B, 4), per-image order of the colour ops

    def select(self, keep: slice) -> PaperAugmentParams:
        """The parameters of the images at ``keep`` (a shard of the batch)."""
        return PaperAugmentParams(
            **{name: getattr(self, name)[keep] for name in self.__dataclass_fields__}
        )

    def to(self, device: torch.device) -> PaperAugmentParams:
        """A copy on ``device`` made with ONE host-to-device transfer (``order`` stays put)."""
        if torch.device(device).type == "cpu":
            return self
        scalars = [self.top, self.left, self.flip, self.degrees, self.brightness]
        scalars += [self.contrast, self.saturation, self.hue]
        # float32 holds the small integers (offsets, flags) exactly.
        packed = torch.stack([t.to(torch.float32) for t in scalars], dim=1)
        moved = packed.to(device, non_blocking=True).unbind(dim=1)
        return PaperAugmentParams(
            top=moved[0].to(torch.int64),
            left=moved[1].to(torch.int64),
            flip=moved[2] > 0.5,
            degrees=moved[3],
            brightness=moved[4],
            contrast=moved[5],
            saturation=moved[6],
            hue=moved[7],
            order=self.order,  # color_jitter groups images on the host
        )


def _uniform(batch: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(batch, generator=generator)


def sample_paper_params(
    batch: int, generator: torch.Generator, padding: int = CROP_PADDING
) -> PaperAugmentParams:
    """Draw one batch of parameters (on the CPU, from ``generator``)."""
    top = torch.randint(0, 2 * padding + 1, (batch,), generator=generator)
    left = torch.randint(0, 2 * padding + 1, (batch,), generator=generator)
    flip = torch.rand(batch, generator=generator) < 0.5
    degrees = _uniform(batch, -AFFINE_DEGREES, AFFINE_DEGREES, generator) + _uniform(
        batch, -ROTATION_DEGREES, ROTATION_DEGREES, generator
    )
    brightness = _uniform(batch, 1.0 - BRIGHTNESS, 1.0 + BRIGHTNESS, generator)
    contrast = _uniform(batch, 1.0 - CONTRAST, 1.0 + CONTRAST, generator)
    saturation = _uniform(batch, 1.0 - SATURATION, 1.0 + SATURATION, generator)
    hue = _uniform(batch, -HUE, HUE, generator)
    order = torch.rand(batch, 4, generator=generator).argsort(dim=1)
    return PaperAugmentParams(
        top, left, flip, degrees, brightness, contrast, saturation, hue, order
    )


def apply_paper_augment(images: torch.Tensor, params: PaperAugmentParams) -> torch.Tensor:
    """uint8 batch -> augmented float batch in [0, 1] (not yet normalised)."""
    params = params.to(images.device)
    cropped = crop_and_flip(images, params.top, params.left, params.flip)
    unit = cropped.to(torch.float32).div_(255.0)
    rotated = rotate(unit, params.degrees)
    return color_jitter(
        rotated, params.brightness, params.contrast, params.saturation, params.hue, params.order
    )


def augment_batch(
    images: torch.Tensor,
    mode: str,
    generator: torch.Generator,
    *,
    shard: tuple[int, slice] | None = None,
) -> torch.Tensor:
    """Augment a uint8 (B, 3, H, W) batch per image and normalise it (float32, same device).

    ``mode``: "none" (normalise only, for evaluation), "flip_crop" (RandomCrop(32, 4) +
    horizontal flip) or "paper" (the full pipeline above). ``generator`` is a CPU generator.
    ``shard`` = (global batch size, this shard's slice of it): ``images`` are that slice of a
    global batch; the parameters of the whole global batch are drawn (so ``generator``
    advances as for the whole batch) and the slice's are applied, so the shards of all
    processes together are the batch one process would have made.
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"expected a uint8 NCHW batch, got {images.dtype} {tuple(images.shape)}")
    if mode == "none":
        return normalize(images)
    batch, keep = shard if shard is not None else (images.shape[0], slice(None))
    if mode == "flip_crop":
        top = torch.randint(0, 2 * CROP_PADDING + 1, (batch,), generator=generator)[keep]
        left = torch.randint(0, 2 * CROP_PADDING + 1, (batch,), generator=generator)[keep]
        flip = (torch.rand(batch, generator=generator) < 0.5)[keep]
        packed = torch.stack([top, left, flip.to(torch.int64)]).to(images.device, non_blocking=True)
        return normalize(crop_and_flip(images, packed[0], packed[1], packed[2].bool()))
    if mode == "paper":
        params = sample_paper_params(batch, generator)
        if images.shape[0] == 0:  # an empty shard: the draws above still advance the stream
            return normalize(images)
        if shard is not None:
            params = params.select(keep)
        return normalize(apply_paper_augment(images, params))
    raise ValueError(f"unknown augment mode {mode!r}; expected one of {list(AUGMENT_MODES)}")
