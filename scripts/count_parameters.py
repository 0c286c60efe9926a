"""Print the trainable parameter counts of every method in every mode as a markdown table.

The table in ``docs/backbones.md`` is this script's output at the paper's configuration (each
method's published defaults, 256×256 images, 1 channel)::

    python scripts/count_parameters.py

The +R modes count R twice: with the default registration settings of ``build_model`` (the
paper's R) and with the optional global affine head (``registration={"affine": True}``). Models are built on the ``meta`` device, so nothing is
allocated and the script runs in seconds.
"""

from __future__ import annotations

import argparse

import torch

from regcorrect import build_model
from regcorrect.backbones import METHODS

MODES = ("c", "c+r", "nc", "nc+r")


def count(method: str, mode: str, **options: object) -> dict[str, int | list[str]]:
    """Trainable parameters per group of ``build_model(method, mode, **options)``."""
    with torch.device("meta"):
        model = build_model(method, mode, **options)
    groups = ("generator", "discriminator", "registration", "all")
    counts: dict[str, int | list[str]] = {g: model.parameter_count(g) for g in groups}
    counts["networks"] = sorted(model.networks)
    return counts


def table(*, in_channels: int, out_channels: int, image_size: int) -> str:
    """The markdown table of all methods × modes (plus Pix2Pix and Pix2Pix+R)."""
    size = {"in_channels": in_channels, "out_channels": out_channels}
    size["image_size"] = (image_size, image_size)  # type: ignore[assignment]
    rows = [
        "| method | mode | networks trained | generators | discriminators | R | total "
        "| total with R's affine head |",
        "|---|---|---|--:|--:|--:|--:|--:|",
    ]
    combinations = [(method, mode) for method in METHODS for mode in MODES]
    combinations += [("cyclegan", "pix2pix"), ("cyclegan", "pix2pix+r")]
    for method, mode in combinations:
        counts = count(method, mode, **size)
        registered = mode.endswith("+r")
        affine = count(method, mode, registration={"affine": True}, **size) if registered else None
        networks = ", ".join(f"`{name}`" for name in counts["networks"])  # type: ignore[union-attr]
        cells = [
            method,
            {"pix2pix": "Pix2Pix", "pix2pix+r": "Pix2Pix+R"}.get(mode, mode.upper()),
            networks,
            f"{counts['generator']:,}",
            f"{counts['discriminator']:,}",
            f"{counts['registration']:,}" if registered else "—",
            f"{counts['all']:,}",
            f"{affine['all']:,}" if affine else "—",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in-channels", type=int, default=1)
    parser.add_argument("--out-channels", type=int, default=1)
    parser.add_argument("--image-size", type=int, default=256)
    args = parser.parse_args()
    print(
        table(
            in_channels=args.in_channels,
            out_channels=args.out_channels,
            image_size=args.image_size,
        )
    )


if __name__ == "__main__":
    main()
