"""File readers: NIfTI volumes to slices (and back), the official RegGAN ``.npy`` layout, PNG.

Convention:
    Slices are ``(N, 1, H, W)`` float32 tensors. NIfTI volumes are first brought to the closest
    RAS+ orientation (axis 0 towards the patient's Right, 1 Anterior, 2 Superior), then sliced
    along ``axis`` (0 sagittal, 1 coronal, 2 axial) and laid out in neurological convention: the
    later remaining axis runs up the rows (anterior or superior at the top), the earlier one
    along the columns (patient's left on the image's left for axial and coronal slices, posterior
    on the left for sagittal ones). ``slice_index`` counts from the inferior (axial), posterior
    (coronal) or left (sagittal) end.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from torch import Tensor

from regcorrect._checks import as_scalar, check_choice, is_int
from regcorrect.data.normalize import NormalizeMethod, normalize_intensity
from regcorrect.data.paired import PairedSlices

__all__ = [
    "NiftiSlices",
    "read_nifti_slices",
    "write_nifti_like",
    "read_npy_pairs",
    "read_png",
    "write_png",
]

_RAS = nib.orientations.axcodes2ornt(("R", "A", "S"))


def _existing_file(path: str | Path, name: str) -> Path:
    if not isinstance(path, (str, Path)):
        raise TypeError(f"{name} must be a str or pathlib.Path, got {type(path).__name__}")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{name} {str(path)!r} does not exist or is not a file")
    return path


def _check_axis(axis: int) -> int:
    if not is_int(axis) or as_scalar(axis) not in (0, 1, 2):
        raise ValueError(f"axis must be one of [0, 1, 2], got {axis!r}")
    return int(as_scalar(axis))  # type: ignore[call-overload]


def _finite(array: np.ndarray, what: str) -> np.ndarray:
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise ValueError(f"{what} must be finite, but it holds {bad} NaN/inf values")
    return array


def _volume_to_slices(volume: np.ndarray, axis: int) -> np.ndarray:
    """RAS volume ``(X, Y, Z)`` -> display slices ``(N, H, W)``."""
    stack = np.moveaxis(volume, axis, 0)  # (N, P, Q): P, Q the remaining axes in order
    return np.ascontiguousarray(np.flip(np.swapaxes(stack, 1, 2), axis=1))  # rows: Q flipped


def _slices_to_volume(slices: np.ndarray, axis: int) -> np.ndarray:
    """Inverse of :func:`_volume_to_slices`."""
    stack = np.swapaxes(np.flip(slices, axis=1), 1, 2)
    return np.ascontiguousarray(np.moveaxis(stack, 0, axis))


def _load_ras(path: Path) -> tuple[nib.Nifti1Image, np.ndarray, np.ndarray]:
    """Load a volume reoriented to RAS+; also return its orientation (for writing back)."""
    try:
        image = nib.load(str(path))
    except Exception as error:  # nibabel raises several types for unreadable files
        raise ValueError(f"path {str(path)!r} is not a readable NIfTI file: {error}") from error
    data = np.asarray(image.dataobj, dtype=np.float32)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"path {str(path)!r} must hold a 3-D volume, got array shape {data.shape}")
    _finite(data, f"the volume in {str(path)!r}")
    orientation = nib.io_orientation(image.affine)
    transform = nib.orientations.ornt_transform(orientation, _RAS)
    return image, nib.orientations.apply_orientation(data, transform), orientation


@dataclass(frozen=True)
class NiftiSlices:
    """Slices of a NIfTI volume and what is needed to write results back.

    Attributes:
        slices: float32 ``(N, 1, H, W)``; raw intensities, or ``[-1, 1]`` when normalised.
        slice_index: int64 ``(N,)``, index along ``axis`` of the RAS-reoriented volume.
        axis: the RAS axis sliced along (0 sagittal, 1 coronal, 2 axial).
        affine: ``(4, 4)`` voxel-to-world matrix of the file as stored.
        header: the file's NIfTI header.
        spacing: pixel size ``(row, column)`` in millimetres.
    """

    slices: Tensor
    slice_index: Tensor
    axis: int
    affine: np.ndarray
    header: nib.Nifti1Header
    spacing: tuple[float, float]


def read_nifti_slices(
    path: str | Path,
    *,
    axis: int = 2,
    normalize: NormalizeMethod | None = None,
    percentiles: tuple[float, float] = (0.5, 99.5),
) -> NiftiSlices:
    """Read a 3-D NIfTI volume (``.nii`` / ``.nii.gz``) as a stack of 2-D slices.

    Args:
        path: file path (str or Path).
        axis: RAS axis to slice along: ``0`` sagittal, ``1`` coronal, ``2`` axial (default).
        normalize: ``None`` keeps the stored intensities (scaling applied); ``"minmax"`` or
            ``"percentile"`` maps the volume to ``[-1, 1]`` with :func:`normalize_intensity`
            (bounds over all non-zero voxels of the volume, zero voxels become ``-1``).
        percentiles: bounds for ``normalize="percentile"``.

    Returns:
        :class:`NiftiSlices` with ``slices`` of shape ``(N, 1, H, W)`` (see the module
        convention for the orientation) and the affine and header for :func:`write_nifti_like`.

    Raises:
        ValueError: missing file, not a 3-D volume (a trailing singleton 4th axis is accepted),
            non-finite values, or a bad ``axis`` / ``normalize``.
    """
    path = _existing_file(path, "path")
    _check_axis(axis)
    if normalize is not None:
        check_choice(normalize, "normalize", ("minmax", "percentile"))
    image, volume, orientation = _load_ras(path)
    slices = torch.from_numpy(_volume_to_slices(volume, axis)).unsqueeze(1)
    if normalize is not None:
        slices = normalize_intensity(slices, method=normalize, percentiles=percentiles)
    ras_zooms = np.empty(3)
    ras_zooms[orientation[:, 0].astype(int)] = image.header.get_zooms()[:3]
    cols, rows = (a for a in (0, 1, 2) if a != axis)
    return NiftiSlices(
        slices=slices,
        slice_index=torch.arange(slices.shape[0]),
        axis=axis,
        affine=image.affine.copy(),
        header=image.header.copy(),
        spacing=(float(ras_zooms[rows]), float(ras_zooms[cols])),
    )


def _as_numpy(value: Tensor | np.ndarray, name: str) -> np.ndarray:
    if isinstance(value, Tensor):
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise TypeError(
            f"{name} must be a torch.Tensor or numpy.ndarray, got {type(value).__name__}"
        )
    if value.dtype.kind not in "biuf":  # bool, integers, floats: not complex or objects
        raise TypeError(f"{name} must hold real numbers or booleans, got dtype {value.dtype}")
    return value


def write_nifti_like(
    volume: Tensor | np.ndarray,
    reference_path: str | Path,
    out_path: str | Path,
    *,
    axis: int = 2,
) -> Path:
    """Write slices back as a NIfTI volume on the grid of a reference file.

    The inverse of :func:`read_nifti_slices`: the slices are restacked along ``axis``, the RAS
    reorientation is undone, and the result is saved as float32 with the reference's affine and
    header, so that it overlays the reference in any viewer.

    Args:
        volume: slices ``(N, 1, H, W)`` or ``(N, H, W)`` in the orientation returned by
            :func:`read_nifti_slices` with the same ``axis`` (e.g. translated outputs).
        reference_path: the NIfTI file the slices were read from (or one on the same grid).
        out_path: where to write (``.nii`` or ``.nii.gz``); parent folders must exist.
        axis: the ``axis`` used when reading.

    Returns:
        ``out_path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: missing reference or output folder, non-finite values, or a slice stack whose
            shape does not match the reference grid.
    """
    array = _as_numpy(volume, "volume").astype(np.float32)
    reference_path = _existing_file(reference_path, "reference_path")
    if not isinstance(out_path, (str, Path)):
        raise TypeError(f"out_path must be a str or pathlib.Path, got {type(out_path).__name__}")
    out_path = Path(out_path)
    if not out_path.parent.is_dir():
        raise ValueError(f"out_path folder {str(out_path.parent)!r} does not exist")
    _check_axis(axis)
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 3:
        raise ValueError(f"volume must be (N, 1, H, W) or (N, H, W), got shape {array.shape}")
    _finite(array, "volume")
    reference, ras_volume, orientation = _load_ras(reference_path)
    expected = _volume_to_slices(ras_volume, axis).shape
    if array.shape != expected:
        raise ValueError(
            f"volume must have shape {expected} (N, H, W) to match {str(reference_path)!r} "
            f"sliced along axis {axis}, got {array.shape}"
        )
    back = nib.orientations.ornt_transform(_RAS, orientation)
    data = nib.orientations.apply_orientation(_slices_to_volume(array, axis), back)
    header = reference.header.copy()
    header.set_data_dtype(np.float32)
    out = nib.Nifti1Image(data.astype(np.float32), reference.affine, header=header)
    out.header.set_slope_inter(1.0, 0.0)
    nib.save(out, str(out_path))
    return out_path


def _existing_dir(path: Path, name: str) -> Path:
    if not path.is_dir():
        raise ValueError(f"{name} {str(path)!r} does not exist or is not a folder")
    return path


def _name_list(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... and {len(names) - limit} more" if len(names) > limit else "")


def _load_npy_slice(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise ValueError(f"file {str(path)!r} is not a readable .npy array: {error}") from error
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    real = np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    if array.ndim != 2 or not real:
        raise ValueError(
            f"file {str(path)!r} must hold a numeric 2-D slice (H, W) or (1, H, W), "
            f"got {array.dtype} array of shape {array.shape}"
        )
    array = _finite(array.astype(np.float32), f"file {str(path)!r}")
    low, high = float(array.min()), float(array.max())
    if low < -1.0 - 1e-3 or high > 1.0 + 1e-3:
        raise ValueError(
            f"file {str(path)!r} must hold values in [-1, 1], got [{low:.4g}, {high:.4g}]; "
            "normalise it first (regcorrect.data.normalize_intensity)"
        )
    return np.clip(array, -1.0, 1.0)


def read_npy_pairs(root: str | Path) -> PairedSlices:
    """Read the official RegGAN layout: ``root/A/*.npy`` (source) and ``root/B/*.npy`` (target).

    Files are matched by name (``A/0001.npy`` with ``B/0001.npy``) and returned in sorted name
    order. Each file holds one slice ``(H, W)`` (or ``(1, H, W)``) already in ``[-1, 1]`` with the
    background at ``-1``; all slices must share one shape.

    Args:
        root: the folder that contains ``A/`` and ``B/`` (str or Path).

    Returns:
        :class:`PairedSlices` with ``mask = (source > -1) | (target > -1)``,
        ``slice_index = arange(N)`` and ``names`` the matched file names.

    Raises:
        ValueError: missing ``root``, ``A/`` or ``B/``; no ``.npy`` files; names present on one
            side only (all listed); a file that is not a finite 2-D slice in ``[-1, 1]``; slices
            of different shapes.
    """
    if not isinstance(root, (str, Path)):
        raise TypeError(f"root must be a str or pathlib.Path, got {type(root).__name__}")
    root = _existing_dir(Path(root), "root")
    folders = {side: _existing_dir(root / side, f"folder {side}/ in root") for side in "AB"}
    names = {side: sorted(p.name for p in folders[side].glob("*.npy")) for side in "AB"}
    for side in "AB":
        if not names[side]:
            raise ValueError(f"folder {str(folders[side])!r} holds no .npy files")
    only_a = sorted(set(names["A"]) - set(names["B"]))
    only_b = sorted(set(names["B"]) - set(names["A"]))
    if only_a or only_b:
        raise ValueError(
            "A/ and B/ must hold the same file names; "
            f"only in A/: [{_name_list(only_a)}]; only in B/: [{_name_list(only_b)}]"
        )
    sources, targets = [], []
    for name in names["A"]:
        source = _load_npy_slice(folders["A"] / name)
        target = _load_npy_slice(folders["B"] / name)
        first = sources[0].shape if sources else source.shape
        for side, array in (("A", source), ("B", target)):
            if array.shape != first:
                raise ValueError(
                    f"all slices must share one shape {first}, got {array.shape} in {side}/{name}"
                )
        sources.append(source)
        targets.append(target)
    source = torch.from_numpy(np.stack(sources)).unsqueeze(1)
    target = torch.from_numpy(np.stack(targets)).unsqueeze(1)
    return PairedSlices(
        source=source,
        target=target,
        mask=(source > -1) | (target > -1),
        slice_index=torch.arange(len(sources)),
        names=tuple(names["A"]),
    )


def read_png(path: str | Path) -> Tensor:
    """Read a PNG image as one grey slice in ``[-1, 1]`` (black ``-1``, white ``1``).

    8- and 16-bit grey, grey+alpha, RGB and RGBA files are accepted; colour is converted to grey
    with the ITU-R 601 luma weights (alpha is ignored).

    Args:
        path: file path (str or Path).

    Returns:
        float32 tensor ``(1, 1, H, W)``.

    Raises:
        ValueError: missing or unreadable file.
    """
    import matplotlib.image  # lazy: only PNG users pay for it

    path = _existing_file(path, "path")
    try:
        array = matplotlib.image.imread(str(path), format="png")
    except Exception as error:  # Pillow raises several types for broken files
        raise ValueError(f"path {str(path)!r} is not a readable PNG file: {error}") from error
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 3:
        if array.shape[2] in (2, 4):  # drop alpha
            array = array[..., :-1]
        if array.shape[2] == 3:
            array = array @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        else:
            array = array[..., 0]
    if array.ndim != 2:
        raise ValueError(f"path {str(path)!r} must hold a 2-D image, got array shape {array.shape}")
    return torch.from_numpy(array * 2.0 - 1.0)[None, None].contiguous()


def write_png(image: Tensor | np.ndarray, path: str | Path, *, bits: int = 8) -> Path:
    """Write one slice in ``[-1, 1]`` as a grey PNG (``-1`` black, ``1`` white; values clipped).

    Args:
        image: ``(H, W)``, ``(1, H, W)`` or ``(1, 1, H, W)``.
        path: output file (str or Path); its folder must exist.
        bits: 8 or 16 bits per pixel.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    from PIL import Image  # lazy: Pillow comes with matplotlib

    array = _as_numpy(image, "image").astype(np.float32)
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"image must be (H, W), (1, H, W) or (1, 1, H, W), got {array.shape}")
    _finite(array, "image")
    check_choice(bits, "bits", (8, 16))
    if not isinstance(path, (str, Path)):
        raise TypeError(f"path must be a str or pathlib.Path, got {type(path).__name__}")
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"path folder {str(path.parent)!r} does not exist")
    top = 255 if bits == 8 else 65535
    levels = np.round((np.clip(array, -1.0, 1.0) + 1.0) / 2.0 * top)
    Image.fromarray(levels.astype(np.uint8 if bits == 8 else np.uint16)).save(path, format="PNG")
    return path
