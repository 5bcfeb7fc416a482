"""Batched, per-image random augmentation of uint8 CIFAR batches on their own device.

The paper's (authors' code) training pipeline, torchvision on PIL images one at a time:

    RandomCrop(32, padding=4) -> RandomHorizontalFlip(0.5) -> RandomAffine(degrees=10)
    -> RandomRotation(20) -> ColorJitter(0.2, 0.2, 0.1, 0.1) -> ToTensor -> Normalize

is reproduced here on a whole batch at once, every image with its own random parameters:

- crop + flip (zero padding = pixels outside the image read as 0) and the rotation;
- the two rotations (uniform in [-10, 10] and [-20, 20] degrees, about the image centre)
  are composed into ONE rotation by their sum, nearest neighbour with zero fill (as
  torchvision's defaults), rounded as ``affine_grid`` + ``grid_sample`` (nearest,
  align_corners=False) do. Deviation: torchvision resamples twice (two nearest-neighbour
  roundings); we resample once, which is slightly sharper. The angle distribution (sum of
  the two uniforms) is the same;
- the fast path does crop, flip and rotation as ONE gather of uint8 pixels
  (:func:`crop_flip_rotate`: each output pixel's source index, computed for the whole batch
  in float32); the readable path (:func:`apply_paper_augment_reference`: crop_and_flip,
  then rotate on floats) gives exactly the same numbers;
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


def rotation_source_pixels(
    degrees: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """For a rotation of each image by its angle (counter-clockwise, about the centre), the
    (row, column) of the input pixel each output pixel reads: two float32 (B, H, W) tensors of
    whole numbers, possibly outside the image (those pixels are fill).

    This DEFINES the nearest-neighbour rounding of both augmentation paths: the output
    pixel's centre, relative to the image centre, turned by the angle, rounded half to even
    (as ``grid_sample(mode="nearest", align_corners=False)``, torchvision's ``rotate``
    default). On 4 million pixels of random angles it picks the same pixels as
    ``affine_grid`` + ``grid_sample`` (tests/test_data.py counts the differences).
    """
    device = degrees.device
    radians = degrees.to(torch.float32) * (math.pi / 180.0)
    cos, sin = torch.cos(radians).view(-1, 1, 1), torch.sin(radians).view(-1, 1, 1)
    # Output pixel centres relative to the image centre (exact in float32).
    across = torch.arange(width, dtype=torch.float32, device=device) - (width - 1) / 2
    down = torch.arange(height, dtype=torch.float32, device=device) - (height - 1) / 2
    across, down = across.view(1, 1, width), down.view(1, height, 1)
    # Inverse map (each OUTPUT pixel reads the INPUT pixel it came from); in image
    # coordinates (y down) a counter-clockwise turn reads from [[c, -s], [s, c]] q.
    cols = (cos * across - sin * down + (width - 1) / 2).round_()
    rows = (sin * across + cos * down + (height - 1) / 2).round_()
    return rows, cols


def rotate(images: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image by its angle (counter-clockwise, about the centre), any dtype.

    Nearest-neighbour sampling (:func:`rotation_source_pixels`) and zero fill, like
    torchvision's ``rotate`` defaults. The readable reference of :func:`crop_flip_rotate`.
    """
    batch, channels, height, width = images.shape
    rows, cols = rotation_source_pixels(degrees.to(images.device), height, width)
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    flat_index = rows.clamp(0, height - 1) * width + cols.clamp(0, width - 1)
    flat_index = flat_index.to(torch.int64).view(batch, 1, -1).expand(batch, channels, -1)
    gathered = images.reshape(batch, channels, height * width).gather(2, flat_index)
    gathered = gathered.view(batch, channels, height, width)
    return torch.where(inside.view(batch, 1, height, width), gathered, gathered.new_zeros(()))


def crop_flip_rotate_index(
    top: torch.Tensor,
    left: torch.Tensor,
    flip: torch.Tensor,
    degrees: torch.Tensor,
    height: int,
    width: int,
    padding: int = CROP_PADDING,
) -> torch.Tensor:
    """Flat source index of every output pixel of crop -> flip -> rotate, (B, H * W) int64.

    Index ``H * W`` stands for the fill value (a pixel the rotation brings in from outside
    the crop, or the crop from the zero padding). All arguments on the same device.
    """
    rows, cols = rotation_source_pixels(degrees, height, width)  # in the flipped crop
    flip, top, left = flip.view(-1, 1, 1), top.view(-1, 1, 1), left.view(-1, 1, 1)
    cols = torch.where(flip, (width - 1) - cols, cols)  # in the crop, before its flip
    # A crop pixel (r, c) is padded-image pixel (top + r, left + c), i.e. image pixel
    # (top - padding + r, ...): inside both the crop and the image on a per-image range.
    row_shift = (top - padding).to(torch.float32)
    col_shift = (left - padding).to(torch.float32)
    inside = (rows >= (-row_shift).clamp(min=0)) & (rows < (height - row_shift).clamp(max=height))
    inside &= (cols >= (-col_shift).clamp(min=0)) & (cols < (width - col_shift).clamp(max=width))
    # Whole numbers below 2**24: exact in float32.
    flat = (rows + row_shift) * width + (cols + col_shift)
    flat = torch.where(inside, flat, float(height * width))
    return flat.to(torch.int64).view(flat.shape[0], height * width)


def crop_flip_rotate(
    images: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    flip: torch.Tensor,
    degrees: torch.Tensor,
    padding: int = CROP_PADDING,
) -> torch.Tensor:
    """``rotate(crop_and_flip(images, top, left, flip), degrees)`` as ONE gather (any dtype).

    The fast path of the paper's geometry: one source index per output pixel
    (:func:`crop_flip_rotate_index`), then a single gather from the images with a zero
    appended as the fill pixel; no float image and no ``grid_sample``. Same pixels as the
    reference, exactly.
    """
    batch, channels, height, width = images.shape
    device = images.device
    index = crop_flip_rotate_index(
        top.to(device),
        left.to(device),
        flip.to(device),
        degrees.to(device),
        height,
        width,
        padding,
    )
    with_fill = torch.cat(
        [images.reshape(batch, channels, height * width), images.new_zeros(batch, channels, 1)],
        dim=2,
    )
    gathered = with_fill.gather(2, index.view(batch, 1, -1).expand(batch, channels, -1))
    return gathered.view(batch, channels, height, width)


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
    """Scale towards black: factor 1 = identity, 0 = black (the blend with black, whose
    ``(1 - factor) * 0`` term adds exactly nothing)."""
    return (_per_image(factor, images) * images).clamp_(0.0, 1.0)


def adjust_contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the image's mean grey level: factor 1 = identity, 0 = uniform grey."""
    mean = grayscale(images).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(images, mean, factor)


def adjust_saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the grey version of the image: factor 1 = identity, 0 = greyscale."""
    return _blend(images, grayscale(images), factor)


def _fraction(turns: torch.Tensor) -> torch.Tensor:
    """``turns mod 1``, in [0, 1]: the same numbers as ``torch.remainder(turns, 1.0)`` (both
    are one rounding of the exact difference), a few times faster on the CPU."""
    return turns - turns.floor()


def _reaches(values: torch.Tensor, ceiling: torch.Tensor | float) -> torch.Tensor:
    """``(values == ceiling)`` as float 1.0/0.0, for ``ceiling - 1 <= values <= ceiling``.

    A nonzero difference never rounds to 0 and stays >= -1, so its floor is -1 exactly
    where the two differ. Float arithmetic only: comparisons and bool-to-float conversions
    are several times slower on the CPU.
    """
    return (values - ceiling).floor_().add_(1.0)


def _rgb_to_hsv_planes(images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Float RGB in [0, 1] -> (hue, saturation, value), each (B, H, W), hue in turns."""
    red, green, blue = images.unbind(dim=1)
    value = images.amax(dim=1)
    chroma = value - images.amin(dim=1)
    # Grey pixels (chroma 0) get hue 0 and saturation 0; the +1 only avoids dividing by 0.
    safe_chroma = chroma + _reaches(-chroma, 0.0)
    saturation = chroma / (value + _reaches(-value, 0.0))
    # Hue sector by which channel is largest (ties: red before green before blue), as 0/1
    # factors: cheaper than torch.where on the CPU.
    red_is_max = _reaches(red, value)
    green_is_max = _reaches(green, value) * (1.0 - red_is_max)
    blue_is_max = 1.0 - red_is_max - green_is_max
    hue_sixths = (
        red_is_max * ((green - blue) / safe_chroma)
        + green_is_max * ((blue - red) / safe_chroma + 2.0)
        + blue_is_max * ((red - green) / safe_chroma + 4.0)
    )
    return _fraction(hue_sixths / 6.0), saturation, value


def rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    """Float RGB in [0, 1] -> HSV with h, s, v in [0, 1] (hue in turns), shape kept."""
    return torch.stack(_rgb_to_hsv_planes(images), dim=1)


# Phase of each output channel on the hue circle (in sixths), for hsv_to_rgb.
_HSV_CHANNEL_PHASE = (5.0, 3.0, 1.0)


def _hsv_planes_to_rgb(
    hue: torch.Tensor, saturation: torch.Tensor, value: torch.Tensor
) -> torch.Tensor:
    """(B, H, W) hue, saturation, value planes -> float RGB (B, 3, H, W)."""
    hue, saturation, value = hue.unsqueeze(1), saturation.unsqueeze(1), value.unsqueeze(1)
    phase = _channel_constant(_HSV_CHANNEL_PHASE, hue.device, hue.dtype)
    k = phase + 6.0 * hue  # in [1, 12) for hue in [0, 1]
    # k mod 6, the same numbers as torch.remainder(k, 6.0) (k - 6 is exact for k in [4, 12),
    # and floor(k - 5) is >= 1 exactly where k >= 6), a few times faster on the CPU.
    k = k - 6.0 * (k - 5.0).floor_().clamp_(0.0, 1.0)
    weight = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return value - value * saturation * weight


def hsv_to_rgb(images: torch.Tensor) -> torch.Tensor:
    """HSV (all in [0, 1]) -> float RGB in [0, 1]; inverse of :func:`rgb_to_hsv`.

    Closed form: channel = v - v * s * clamp(min(k, 4 - k), 0, 1) with
    k = (phase + 6 h) mod 6, phase 5/3/1 for red/green/blue; the piecewise-linear hexcone
    without per-sector branches.
    """
    return _hsv_planes_to_rgb(*images.unbind(dim=1))


def adjust_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by ``shift`` turns (in [-0.5, 0.5]); 0 = identity up to rounding."""
    hue, saturation, value = _rgb_to_hsv_planes(images)
    hue = _fraction(hue + shift.to(device=images.device, dtype=images.dtype).view(-1, 1, 1))
    return _hsv_planes_to_rgb(hue, saturation, value).clamp_(0.0, 1.0)


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

    ``order`` (B, 4) holds a permutation of the op ids (BRIGHTNESS_OP, ...) per image. At
    each position the batch is rearranged so that the images of each op form one slice
    (one ``index_select`` of the whole batch), each op runs on its slice, and a final
    ``index_select`` restores the batch order: the same numbers as applying the ops image by
    image, without the slow scattered writes of ``index_copy_``. The arrangements are
    worked out on the host from a CPU ``order``, so a CUDA batch needs no device
    synchronisation here.
    """
    order_host = order.cpu()
    batch, positions = order_host.shape
    if batch == 0 or positions == 0:
        return images.clone()
    factors = torch.stack([brightness, contrast, saturation, hue], dim=1)
    factors = factors.to(images.device, images.dtype, non_blocking=True)
    # arrangement[p][i]: the image at row i while the ops of position p run (grouped by op).
    arrangements = [order_host[:, p].sort(stable=True).indices for p in range(positions)]
    group_sizes = [
        torch.bincount(order_host[:, p], minlength=len(_JITTER_OPS)) for p in range(positions)
    ]
    # moves[p] takes the rows from arrangement p - 1 (the batch order for p = 0) to p; the
    # last one back to the batch order.
    inverses = [arrangement.argsort() for arrangement in arrangements]
    moves = [arrangements[0]]
    moves += [inverses[p - 1][arrangements[p]] for p in range(1, positions)]
    moves.append(inverses[-1])
    # One host-to-device copy for all the indices.
    indices = torch.cat(moves + arrangements).to(images.device, non_blocking=True)
    moves_on_device = indices[: batch * (positions + 1)].view(positions + 1, batch)
    arrangements_on_device = indices[batch * (positions + 1) :].view(positions, batch)
    out = images
    for position in range(positions):
        out = out.index_select(0, moves_on_device[position])
        arranged_factors = factors.index_select(0, arrangements_on_device[position])
        pieces, start = [], 0
        for op, size in zip(_JITTER_OPS, group_sizes[position].tolist(), strict=True):
            if size:
                rows = slice(start, start + size)
                pieces.append(_JITTER_OPS[op](out[rows], arranged_factors[rows, op]))
                start += size
        out = torch.cat(pieces) if len(pieces) > 1 else pieces[0]
    return out.index_select(0, moves_on_device[positions])


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
    """uint8 batch -> augmented float batch in [0, 1] (not yet normalised).

    Crop, flip and rotation in one uint8 gather (:func:`crop_flip_rotate`); the same
    numbers as :func:`apply_paper_augment_reference`.
    """
    params = params.to(images.device)
    geometry = crop_flip_rotate(images, params.top, params.left, params.flip, params.degrees)
    unit = geometry.to(torch.float32).div_(255.0)
    return color_jitter(
        unit, params.brightness, params.contrast, params.saturation, params.hue, params.order
    )


def apply_paper_augment_reference(images: torch.Tensor, params: PaperAugmentParams) -> torch.Tensor:
    """The readable form of :func:`apply_paper_augment`, one transform after the other."""
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
