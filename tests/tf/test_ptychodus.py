"""Ptychodus 1.7's PtychoPINN plug-in, unmodified, driving this project end to end.

Everything Ptychodus-side is Ptychodus' own code (the ``test`` extra installs ``ptychodus==1.7.0``):
``PtychoPINNReconstructorLibrary`` builds the ``'PINN'`` reconstructor from its settings; its
``export_training_data`` is ``ptychodus.api.io.save_ptychopinn_training_data`` (detector counts
as they are, here ``uint16``, with bad pixels inpainted and recorded in ``bad_pixels``, and the
probe as a ``(1, N, N)`` mode stack); ``train`` builds the ``TrainingConfig`` parent-side with
``ModelConfig(N=0)``, pickles the ``TrainPayload`` across a ``spawn`` context and runs
``run_train`` in the child, which assigns ``N`` and calls ``run_cdi_example``, ``model_manager.save``
and ``save_outputs``; ``reconstruct`` spawns ``run_reconstruct`` (``load_inference_bundle``,
``generate_grouped_data``, ``loader.load``, ``model.predict``, ``tf_helper.reassemble_position``).
The child processes inherit ``PYTHONPATH``, so they run this checkout.

Measured on the shared 2-core machine: 5-10 minutes (two spawned children each import TensorFlow
and Ptychodus; training 30 epochs x 4 batches of 16), hence ``slow``.  The stitched amplitude
Pearson against the true object was 0.358 after 30 epochs (0.168 after 8); an untrained model
scores within +-0.2 (``tests/tf/test_workflow.py``), so the threshold is 0.25.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

pytest.importorskip("ptychodus", reason="Ptychodus is in the test extra: pip install -e .[test]")

from ptycho.evaluation import score_stitched  # noqa: E402
from ptycho.raw_data import RawData  # noqa: E402
from ptycho.simulate import simulate_dataset  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.tf]

N = 32
#: Object-plane pixel size handed to Ptychodus (any value works: positions round-trip through it).
PIXEL_M = 10e-9
#: Stitched amplitude Pearson a trained model clears (measured 0.358; untrained within +-0.2).
AMP_PEARSON_THRESHOLD = 0.25


def _reconstruct_input(raw: RawData, counts: np.ndarray, bad: np.ndarray):
    """A Ptychodus ``ReconstructInput`` of the simulated scan, built with Ptychodus' own classes."""
    from ptychodus.api.geometry import PixelGeometry
    from ptychodus.api.object import Object, ObjectCenter
    from ptychodus.api.probe import ProbeSequence
    from ptychodus.api.probe_positions import ProbePosition, ProbePositionSequence
    from ptychodus.api.product import Product, ProductMetadata
    from ptychodus.api.reconstruct import ReconstructInput

    H, W = raw.objectGuess.shape
    # Ptychodus maps x_m -> (x_m - centre_x) / pixel + (W - 1) / 2: invert that for our pixel positions
    positions = ProbePositionSequence([
        ProbePosition(i, (x - (W - 1) / 2) * PIXEL_M, (y - (H - 1) / 2) * PIXEL_M)
        for i, (x, y) in enumerate(zip(raw.xcoords, raw.ycoords, strict=True))
    ])
    geometry = PixelGeometry(PIXEL_M, PIXEL_M)
    product = Product(
        metadata=ProductMetadata(name="sim", comments="", detector_distance_m=2.0, photon_energy_eV=10000.0,
                                 probe_photon_count=0.0, exposure_time_s=0.0, mass_attenuation_m2_per_kg=0.0,
                                 tomography_angle_deg=0.0),
        probe_positions=positions,
        probes=ProbeSequence(raw.probeGuess[None].astype(np.complex128), None, geometry),
        object_=Object(raw.objectGuess.astype(np.complex128), geometry, ObjectCenter(0.0, 0.0)),
        losses=[],
    )
    return ReconstructInput(diffraction_patterns=counts, bad_pixels=bad, product=product)


def test_ptychodus_plugin_trains_and_reconstructs_on_integer_counts(tmp_path, caplog):
    from ptychodus.api.settings import SettingsRegistry
    from ptychodus.model.ptychopinn.core import PtychoPINNReconstructorLibrary

    raw = simulate_dataset(N=N, n_positions=64, nphotons=1e6, seed=7)
    counts = np.rint(raw.diff3d.astype(np.float64) ** 2).astype(np.uint16)  # what the detector gives
    bad = np.zeros((N, N), bool)
    bad[[2, 9, 20, 20, 31], [30, 4, 11, 12, 0]] = True
    counts[:, bad] = 60000  # hot / dead pixels as recorded; Ptychodus' exporter inpaints and flags them

    library = PtychoPINNReconstructorLibrary(SettingsRegistry(), is_developer_mode_enabled=False)
    pinn = next(r for r in library if r.name == "PINN")
    library.model_settings.n_filters_scale.set_value(1)
    library.training_settings.nepochs.set_value(30)
    library.training_settings.batch_size.set_value(16)
    library.training_settings.nphotons.set_value(1e6)
    library.inference_settings.n_nearest_neighbors.set_value(7)
    library.inference_settings.n_samples.set_value(64)

    data_in = _reconstruct_input(raw, counts, bad)
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    out.mkdir()
    pinn.export_training_data(inp / "train_data.npz", data_in)
    pinn.export_training_data(inp / "test_data.npz", data_in)

    with np.load(inp / "train_data.npz") as z:  # what Ptychodus hands over
        assert z["diff3d"].dtype == np.uint16 and z["probeGuess"].shape == (1, N, N)
        assert np.array_equal(z["bad_pixels"], bad) and int(z["diff3d"][:, bad].max()) < 60000
    exported = RawData.from_file(inp / "train_data.npz")
    np.testing.assert_allclose(exported.xcoords, raw.xcoords, atol=1e-9)
    assert np.array_equal(exported.bad_pixels, bad)

    with caplog.at_level(logging.INFO):
        outputs = list(pinn.train(inp, out))
    assert len(outputs) == 1 and pinn.is_model_loaded()
    assert (out / "wts.h5.zip").is_file()
    counts_lines = [r for r in caplog.records if "read as photon counts" in r.getMessage()]
    assert counts_lines, "the child's log line about integer counts was not forwarded"

    results = list(pinn.reconstruct(data_in))
    assert len(results) == 1
    obj = results[0].product.object_.get_layer(0)
    assert obj.ndim == 2 and np.all(np.isfinite(obj))

    # the stitched object against the truth, on the grid run_reconstruct stitched it on (M=20)
    from ptycho import params
    from ptycho.config.config import ModelConfig, TrainingConfig
    from ptycho.workflows.common import create_ptycho_data_container

    snap = params.snapshot()
    try:
        cfg = TrainingConfig(model=ModelConfig(N=N, gridsize=1), n_groups=64, neighbor_count=7)
        container = create_ptycho_data_container(RawData.from_file(inp / "test_data.npz"), cfg)
    finally:
        params.restore(snap)
    score = score_stitched(obj[..., None], raw.objectGuess, container.global_offsets, N, M=20)
    print(f"Ptychodus PINN on uint16 counts: amplitude Pearson {score['amp_pearson']:.3f}, "
          f"phase Pearson {score['phase_pearson']:.3f}")
    assert score["amp_pearson"] > AMP_PEARSON_THRESHOLD
