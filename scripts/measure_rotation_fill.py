"""Measure the black-filled area of the paper's augmentation: ours against the authors'.

The authors' code (hank-nguyen/MBT-optimizer, ``utils.py``) applies torchvision's
RandomAffine(10) and then RandomRotation(20) to each PIL image: two nearest-neighbour
resamplings, each filling with black what falls outside the image. Ours
(:mod:`bgd_experiments.data.augment`) applies one rotation by the sum of the two angles, so the
corners the first rotation blackens and the second would bring back into view stay filled
in theirs and not in ours. Both pipelines run on all-white images, so every black pixel is
fill (the zero padding of RandomCrop(32, padding=4) included unless ``--no-crop``).

    python scripts/measure_rotation_fill.py [--images 2000] [--seed 0] [--no-crop]
"""

from __future__ import annotations

import argparse
import json

import torch
from PIL import Image
from torchvision import transforms

from bgd_experiments.data.augment import (
    AFFINE_DEGREES,
    CROP_PADDING,
    ROTATION_DEGREES,
    crop_and_flip,
    rotate,
    sample_paper_params,
)

SIZE = 32


def ours_black_fraction(num_images: int, seed: int, crop: bool = True) -> float:
    """Share of black pixels after our crop + flip + merged rotation of white images."""
    generator = torch.Generator().manual_seed(seed)
    params = sample_paper_params(num_images, generator)
    images = torch.full((num_images, 3, SIZE, SIZE), 255, dtype=torch.uint8)
    if crop:
        images = crop_and_flip(images, params.top, params.left, params.flip)
    rotated = rotate(images.to(torch.float32).div_(255.0), params.degrees)
    return (rotated == 0).all(dim=1).to(torch.float64).mean().item()


def authors_black_fraction(num_images: int, seed: int, crop: bool = True) -> float:
    """Share of black pixels after the authors' torchvision transforms on white images."""
    torch.manual_seed(seed)  # torchvision draws its angles from torch's global generator
    steps: list[object] = []
    if crop:
        steps += [
            transforms.RandomCrop(SIZE, padding=CROP_PADDING),
            transforms.RandomHorizontalFlip(),
        ]
    steps += [
        transforms.RandomAffine(AFFINE_DEGREES),
        transforms.RandomRotation(ROTATION_DEGREES),
        transforms.PILToTensor(),
    ]
    pipeline = transforms.Compose(steps)
    white = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
    black = 0
    for _ in range(num_images):
        black += int((pipeline(white) == 0).all(dim=0).sum())
    return black / (num_images * SIZE * SIZE)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-crop", action="store_true", help="rotations only")
    args = parser.parse_args(argv)
    crop = not args.no_crop
    result = {
        "images": args.images,
        "crop_included": crop,
        "ours_merged_rotation": ours_black_fraction(args.images, args.seed, crop),
        "authors_two_rotations": authors_black_fraction(args.images, args.seed, crop),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
