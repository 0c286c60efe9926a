from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from regcorrect.data import (
    PairedSlices,
    read_nifti_slices,
    read_npy_pairs,
    read_png,
    write_nifti_like,
    write_png,
)

SHAPE = (6, 7, 8)  # X (towards Right), Y (Anterior), Z (Superior) in RAS


def ras_volume() -> np.ndarray:
    volume = np.arange(1, np.prod(SHAPE) + 1, dtype=np.float32).reshape(SHAPE)
    return volume


def save(volume: np.ndarray, path: Path, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(volume, affine), str(path))
    return path


# An LPS-stored file: array axis 0 runs to the Left, 1 to Posterior, 2 Superior; 2 mm along axis 1.
LPS_AFFINE = np.diag([-1.0, -2.0, 3.0, 1.0])


def lps_from_ras(volume: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(volume[::-1, ::-1, :])


class TestReadNiftiSlices:
    def test_axial_orientation(self, tmp_path: Path) -> None:
        volume = np.zeros(SHAPE, np.float32)
        volume[0, SHAPE[1] - 1, 4] = 1.0  # patient's far left, most anterior, axial index 4
        path = save(lps_from_ras(volume), tmp_path / "v.nii.gz", LPS_AFFINE)
        read = read_nifti_slices(str(path), axis=2)
        assert read.slices.shape == (8, 1, 7, 6)  # (Z, 1, Y, X)
        assert read.slices.dtype == torch.float32
        assert torch.equal(read.slices[4, 0].nonzero(), torch.tensor([[0, 0]]))  # top-left
        assert read.spacing == (2.0, 1.0)
        assert np.array_equal(read.affine, LPS_AFFINE)

    @pytest.mark.parametrize(("axis", "shape"), [(0, (6, 1, 8, 7)), (1, (7, 1, 8, 6))])
    def test_other_axes(self, tmp_path: Path, axis: int, shape: tuple[int, ...]) -> None:
        volume = np.zeros(SHAPE, np.float32)
        volume[2, 3, SHAPE[2] - 1] = 1.0  # most superior voxel -> top row
        path = save(volume, tmp_path / "v.nii", np.eye(4))
        read = read_nifti_slices(path, axis=axis)
        assert read.slices.shape == shape
        index = (2, 3)[axis]
        assert read.slices[index, 0, 0].max() == 1.0

    @pytest.mark.parametrize("axis", [0, 1, 2])
    def test_round_trip(self, tmp_path: Path, axis: int) -> None:
        stored = lps_from_ras(ras_volume())
        reference = save(stored, tmp_path / "ref.nii.gz", LPS_AFFINE)
        read = read_nifti_slices(reference, axis=axis)
        out = write_nifti_like(read.slices * 2.0, reference, tmp_path / "out.nii.gz", axis=axis)
        written = nib.load(str(out))
        np.testing.assert_array_equal(np.asarray(written.dataobj), stored * 2.0)
        np.testing.assert_array_equal(written.affine, LPS_AFFINE)
        assert written.get_data_dtype() == np.float32

    def test_normalize_and_singleton_4d(self, tmp_path: Path) -> None:
        volume = ras_volume()
        volume[0] = 0.0
        path = save(volume[..., None], tmp_path / "v4.nii", np.eye(4))
        slices = read_nifti_slices(path, normalize="minmax").slices
        assert slices.min() == -1 and slices.max() == 1
        assert bool((slices[:, 0, :, 0] == -1).all())  # the zero plane x = 0 is the left column

    def test_exception(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="does not exist"):
            read_nifti_slices(tmp_path / "missing.nii")
        volume = save(np.ones(SHAPE, np.float32), tmp_path / "ok.nii", np.eye(4))
        for axis in (1.0, True):  # 1.0 == True == 1, but neither is an axis
            with pytest.raises(ValueError, match="axis must be one of"):
                read_nifti_slices(volume, axis=axis)
        with pytest.raises(ValueError, match="3-D"):
            read_nifti_slices(
                save(np.zeros((4, 5, 6, 2), np.float32), tmp_path / "a.nii", np.eye(4))
            )
        with pytest.raises(ValueError, match="3-D"):
            read_nifti_slices(save(np.zeros((4, 5), np.float32), tmp_path / "b.nii", np.eye(4)))
        bad = np.ones(SHAPE, np.float32)
        bad[1, 1, 1] = np.nan
        with pytest.raises(ValueError, match="finite"):
            read_nifti_slices(save(bad, tmp_path / "c.nii", np.eye(4)))
        reference = save(ras_volume(), tmp_path / "d.nii", np.eye(4))
        with pytest.raises(ValueError, match="axis"):
            read_nifti_slices(reference, axis=3)
        with pytest.raises(ValueError, match="shape"):
            write_nifti_like(torch.zeros(8, 1, 6, 7), reference, tmp_path / "e.nii")
        with pytest.raises(ValueError, match="folder"):
            write_nifti_like(torch.zeros(8, 1, 7, 6), reference, tmp_path / "no" / "e.nii")
        with pytest.raises(TypeError, match="path"):
            read_nifti_slices(3)  # type: ignore[arg-type]


def make_npy_root(root: Path, names: dict[str, list[str]], shape: tuple[int, ...] = (5, 4)) -> Path:
    for side, files in names.items():
        (root / side).mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(files):
            value = np.full(shape, -1.0, np.float32)
            value[..., 1:3, 1:3] = (i + 1) / 10 if side == "A" else -(i + 1) / 10
            np.save(root / side / name, value)
    return root


class TestReadNpyPairs:
    def test_values(self, tmp_path: Path) -> None:
        root = make_npy_root(tmp_path, {"A": ["b.npy", "a.npy"], "B": ["a.npy", "b.npy"]})
        pairs = read_npy_pairs(str(root))
        assert isinstance(pairs, PairedSlices)
        assert pairs.names == ("a.npy", "b.npy")
        assert pairs.source.shape == (2, 1, 5, 4) and pairs.mask.dtype == torch.bool
        assert pairs.source[0, 0, 1, 1] == pytest.approx(0.2)  # a.npy was the 2nd file written
        assert pairs.target[1, 0, 1, 1] == pytest.approx(-0.2)
        assert int(pairs.mask.sum()) == 2 * 4
        assert torch.equal(pairs.slice_index, torch.arange(2))

    def test_channel_axis_accepted(self, tmp_path: Path) -> None:
        root = make_npy_root(tmp_path, {"A": ["x.npy"], "B": ["x.npy"]}, shape=(1, 5, 4))
        assert read_npy_pairs(root).source.shape == (1, 1, 5, 4)

    def test_name_mismatch_lists_names(self, tmp_path: Path) -> None:
        root = make_npy_root(tmp_path, {"A": ["1.npy", "2.npy"], "B": ["1.npy", "3.npy"]})
        with pytest.raises(ValueError, match=r"only in A/: \[2.npy\]; only in B/: \[3.npy\]"):
            read_npy_pairs(root)

    def test_complex_slices_are_refused(self, tmp_path: Path) -> None:
        root = make_npy_root(tmp_path, {"A": ["1.npy"], "B": ["1.npy"]})
        np.save(root / "B" / "1.npy", np.full((4, 4), 0.5 + 5j, np.complex64))
        with pytest.raises(ValueError, match="must hold a numeric 2-D slice.*complex64"):
            read_npy_pairs(root)

    def test_exception(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="root"):
            read_npy_pairs(tmp_path / "missing")
        (tmp_path / "A").mkdir()
        with pytest.raises(ValueError, match="B/"):
            read_npy_pairs(tmp_path)
        (tmp_path / "B").mkdir()
        with pytest.raises(ValueError, match="no .npy"):
            read_npy_pairs(tmp_path)
        np.save(tmp_path / "A" / "s.npy", np.zeros((2, 5, 4), np.float32))
        np.save(tmp_path / "B" / "s.npy", np.zeros((5, 4), np.float32))
        with pytest.raises(ValueError, match="2-D"):
            read_npy_pairs(tmp_path)
        np.save(tmp_path / "A" / "s.npy", np.full((5, 4), np.inf, np.float32))
        with pytest.raises(ValueError, match="finite"):
            read_npy_pairs(tmp_path)
        np.save(tmp_path / "A" / "s.npy", np.full((5, 4), 200.0, np.float32))
        with pytest.raises(ValueError, match=r"\[-1, 1\]"):
            read_npy_pairs(tmp_path)
        np.save(tmp_path / "A" / "s.npy", np.zeros((5, 3), np.float32))
        with pytest.raises(ValueError, match="one shape"):
            read_npy_pairs(tmp_path)


class TestPng:
    @pytest.mark.parametrize(("bits", "tolerance"), [(8, 1 / 255), (16, 1 / 65535)])
    def test_round_trip(self, tmp_path: Path, bits: int, tolerance: float) -> None:
        image = torch.linspace(-1, 1, 12 * 9).reshape(1, 1, 12, 9)
        path = write_png(image, str(tmp_path / "x.png"), bits=bits)
        read = read_png(path)
        assert read.shape == (1, 1, 12, 9) and read.dtype == torch.float32
        assert torch.allclose(read, image, atol=tolerance + 1e-6)

    def test_rgb_to_grey(self, tmp_path: Path) -> None:
        rgb = np.zeros((4, 5, 3), np.uint8)
        rgb[..., 1] = 255  # pure green
        Image.fromarray(rgb).save(tmp_path / "g.png")
        assert torch.allclose(read_png(tmp_path / "g.png"), torch.full((1, 1, 4, 5), 0.587 * 2 - 1))

    def test_exception(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="does not exist"):
            read_png(tmp_path / "missing.png")
        (tmp_path / "text.png").write_text("not a png")
        with pytest.raises(ValueError, match="readable PNG"):
            read_png(tmp_path / "text.png")
        with pytest.raises(ValueError, match="image"):
            write_png(torch.zeros(2, 3, 4), tmp_path / "y.png")


def test_boolean_volumes_are_written(tmp_path: Path) -> None:
    reference = save(np.ones(SHAPE, np.float32), tmp_path / "ref.nii", np.eye(4))
    mask = read_nifti_slices(reference, axis=2).slices > 0.5
    written = write_nifti_like(mask, reference, tmp_path / "mask.nii.gz", axis=2)
    assert np.asarray(nib.load(written).dataobj).shape == SHAPE
    with pytest.raises(TypeError, match="real numbers or booleans"):
        write_png(np.full((4, 4), 1j), tmp_path / "c.png")
