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



def test_open_streaming_carries_the_true_object_and_refuses_bad_positions(npz, tmp_path):
    with np.load(npz) as z:
        arrays = {k: z[k] for k in z.files}
    assert open_streaming(npz).objectGuess.shape == arrays["objectGuess"].shape
    short = tmp_path / "short.npz"
    np.savez(short, **{**arrays, "ycoords": arrays["ycoords"][:-1]})
    with pytest.raises(DataContractError, match="ycoords"):
        open_streaming(short)
    nan = tmp_path / "nan.npz"
    xs = arrays["xcoords_start"].copy()
    xs[3] = np.nan
    np.savez(nan, **{**arrays, "xcoords_start": xs})
    with pytest.raises(DataContractError, match="xcoords_start"):
        open_streaming(nan)
    flat = tmp_path / "flat.npz"
    np.savez(flat, **{**arrays, "objectGuess": arrays["objectGuess"].ravel()})
    with pytest.raises(DataContractError, match="objectGuess"):
        open_streaming(flat)
    missing = tmp_path / "missing.npz"
    np.savez(missing, **{k: v for k, v in arrays.items() if k != "probeGuess"})
    with pytest.raises(DataContractError, match="probeGuess"):
        open_streaming(missing)


def _toy_predict(container):
    """A deterministic stand-in for a backend's predict_objects: [k, N, N, 1] from each group's own patterns."""
    from ptycho.streaming import StreamingContainer

    if isinstance(container, StreamingContainer):
        x = container.gather_X(np.arange(len(container)))
    else:
        x = container.X
    amp = x[..., :1].astype(np.float64)
    ramp = np.linspace(-1.0, 1.0, x.shape[1])
    return (amp * np.exp(1j * (ramp[None, :, None, None] + 0.1 * amp))).astype(np.complex64)


@pytest.mark.parametrize("gridsize", [1, 2])
def test_streamed_prediction_in_chunks_stitches_like_the_in_memory_prediction(npz, gridsize):
    from ptycho.config.config import InferenceConfig, ModelConfig
    from ptycho.workflows.common import group_streamed, predict_crops, stitch, with_fitted_tilt

    config = InferenceConfig(model=ModelConfig(N=32, gridsize=gridsize), model_path="unused", test_data_file=npz,
                             n_groups=None, subsample_seed=5)
    memory = create_ptycho_data_container(RawData.from_file(npz), config)
    stream = group_streamed(open_streaming(npz), config)
    assert len(stream) == len(memory) == 40  # n_groups None: one group per position
    objects = _toy_predict(memory)
    whole = predict_crops(_toy_predict, memory, 16)
    chunked = predict_crops(_toy_predict, stream, 16, chunk_groups=7)  # 6 chunks, the last one short
    assert chunked.shape == whole.shape == (40, 16, 16, 1) and chunked.dtype == np.complex64
    tilted, tau = with_fitted_tilt(objects, memory)  # both paths fit the common tilt to the same groups
    assert np.all(np.abs(tau) > 1e-3)  # the toy's phase ramp is far from what its patterns call for
    np.testing.assert_array_equal(whole, tilted[:, 8:24, 8:24, :])
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6)
    want = stitch(tilted, memory.global_offsets, 16)[2]
    got = stitch(chunked, stream.global_offsets, 16)[2]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="chunk_groups"):
        predict_crops(_toy_predict, stream, 16, chunk_groups=0)
    with pytest.raises(ValueError, match="M must be"):
        predict_crops(_toy_predict, memory, 15)


def test_open_streaming_reads_no_member_whose_header_lies_about_its_size(npz, tmp_path):
    """A hostile file: xcoords declares 10**9 float64 (8 GB) over 8 bytes of data; refused before allocating."""
    import io
    import zipfile

    with np.load(npz) as z:
        arrays = {k: z[k] for k in z.files if k != "xcoords"}
    path = tmp_path / "lying.npz"
    np.savez(path, **arrays)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (10**9,)})
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("xcoords.npy", buf.getvalue() + b"\0" * 8)
    with pytest.raises(DataContractError, match="xcoords"):
        open_streaming(path)
