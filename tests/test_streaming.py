"""ptycho.streaming: memory-mapped patterns, grouping on positions, batches gathered from disk."""

from __future__ import annotations

import numpy as np
import pytest

from ptycho.errors import DataContractError
from ptycho.raw_data import RawData
from ptycho.simulate import simulate_dataset
from ptycho.streaming import PatternFile, convert_npz_member_to_npy, npz_member_location, open_streaming
from ptycho.workflows.common import create_ptycho_data_container


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("stream") / "scan.npz"
    simulate_dataset(N=32, n_positions=40, nphotons=1e6, seed=4).to_file(path)
    return path


def test_an_uncompressed_member_is_read_in_place(npz):
    with np.load(npz) as z:
        full = z["diff3d"]
    patterns = PatternFile.from_npz(npz, "diff3d")
    assert len(patterns) == len(full) and patterns.shape == full.shape
    np.testing.assert_array_equal(patterns[:], full)
    idx = np.array([7, 3, 4, 5, 39, 3])  # unsorted, a run, a repeat, the last row
    np.testing.assert_array_equal(patterns[idx], full[idx])
    np.testing.assert_array_equal(patterns[10:14], full[10:14])
    with pytest.raises(IndexError):
        patterns[np.array([40])]


def test_a_compressed_member_is_refused_with_the_fix_and_can_be_converted(npz, tmp_path):
    with np.load(npz) as z:
        arrays = {k: z[k] for k in z.files}
    packed = tmp_path / "packed.npz"
    np.savez_compressed(packed, **arrays)
    with pytest.raises(DataContractError, match="convert_npz_member_to_npy"):
        npz_member_location(packed, "diff3d")
    npy = convert_npz_member_to_npy(packed, "diff3d", tmp_path / "d.npy")
    data = open_streaming(packed, patterns=npy)
    np.testing.assert_array_equal(data.diff3d[:], arrays["diff3d"])


@pytest.mark.parametrize("gridsize", [1, 2])
def test_streamed_groups_and_batches_equal_the_in_memory_container(npz, gridsize):
    from ptycho.config.config import ModelConfig, TrainingConfig

    config = TrainingConfig(model=ModelConfig(N=32, gridsize=gridsize), n_groups=24, batch_size=8, subsample_seed=3)
    memory = create_ptycho_data_container(RawData.from_file(npz), config, seed=3)
    stream = open_streaming(npz).group(N=32, gridsize=gridsize, K=config.neighbor_count, nsamples=24, seed=3)
    np.testing.assert_array_equal(stream.nn_indices, memory.nn_indices)
    np.testing.assert_array_equal(stream.coords_nominal, memory.coords_nominal)
    np.testing.assert_array_equal(stream.global_offsets, memory.global_offsets)
    assert stream.X_full_norm == pytest.approx(memory.X_full_norm, rel=1e-12)
    idx = np.array([5, 0, 17, 5])
    np.testing.assert_allclose(stream.gather_X(idx, 2.0), 2.0 * memory.X[idx], rtol=1e-6, atol=0)


def test_a_bad_pixel_mask_is_carried_and_left_out_of_the_normalisation(npz, tmp_path):
    from ptycho.config.config import ModelConfig, TrainingConfig

    with np.load(npz) as z:
        arrays = {k: z[k] for k in z.files}
    mask = np.zeros((32, 32), bool)
    mask[:3, :5] = True
    masked = tmp_path / "masked.npz"
    np.savez(masked, **arrays, bad_pixels=mask)
    config = TrainingConfig(model=ModelConfig(N=32, gridsize=1), n_groups=24, batch_size=8, subsample_seed=3)
    memory = create_ptycho_data_container(RawData.from_file(masked), config, seed=3)
    stream = open_streaming(masked).group(N=32, gridsize=1, K=config.neighbor_count, nsamples=24, seed=3)
    np.testing.assert_array_equal(stream.bad_pixels, mask)
    assert stream.X_full_norm == pytest.approx(memory.X_full_norm, rel=1e-12)

