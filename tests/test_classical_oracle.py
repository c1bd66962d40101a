"""An independent engine as the oracle of the shared physics: pty-chi (slow tier).

pty-chi is a maintained ptychography library with its own far-field forward model and
solvers (``conformance/classical.py`` maps our conventions onto it).  If both backends
shared a convention error (conjugate, flipped or transposed pattern, swapped ``(x, y)``,
negated offsets), the parity gate could not see it; these tests can:

* the project's NumPy forward model equals pty-chi's on the same object, probe and
  positions, to float32 rounding, and differs from it for the transformed variants;
* pty-chi's LSQML reconstructs the project's own simulated data (the demo's simulator at
  N=32, seed 0, a 256-position scan; the README demo scans 512) with the simulator's phase
  sign and geometry: positive amplitude and phase correlation with the truth and a
  registration shift under half a pixel.

Installed by CI with ``pip install --no-deps ptychi==2.2.0`` plus the ``oracle`` extra
(``conformance/classical.py`` says why ``--no-deps``).
"""

from __future__ import annotations

import numpy as np
import pytest

from ptycho.evaluation import pearson, score_pair
from ptycho.reference import physics
from ptycho.simulate import simulate_dataset
from ptycho.simulation import make_object, make_scan, substream

N = 32

pytestmark = [pytest.mark.slow, pytest.mark.torch]

classical = pytest.importorskip("conformance.classical")
try:
    classical.import_ptychi()
except ImportError as exc:  # pragma: no cover - depends on the environment
    pytest.skip(f"pty-chi is not installed ({exc}); pip install --no-deps ptychi==2.2.0", allow_module_level=True)


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_project_forward_model_equals_ptychi_forward_model(asymmetric_probe):
    obj = make_object("grf", 80, substream(5, "object"))
    xy = np.rint(make_scan("random", 48, obj.shape, N, substream(5, "scan")))  # no interpolation on either side
    P = asymmetric_probe
    ours = physics.diffract(P[None] * physics.object_patches(obj, xy, N)).astype(np.float64) ** 2
    theirs = classical.ptychi_forward_intensity(obj, P, xy)
    assert theirs.shape == ours.shape
    assert _rel(theirs, ours) < 1e-5

    flip = ours[:, ::-1, ::-1]
    variants = {
        "conj(O)": classical.ptychi_forward_intensity(np.conj(obj), P, xy),
        "O transposed, (x, y) swapped": classical.ptychi_forward_intensity(obj.T, P, xy[:, ::-1]),
        "positions mirrored about the scan centre": classical.ptychi_forward_intensity(
            obj, P, 2 * np.rint(xy.mean(axis=0)) - xy
        ),
        "pattern flipped and rolled": np.roll(flip, 1, axis=(1, 2)),
        "pattern transposed": np.swapaxes(ours, 1, 2),
    }
    for name, intensity in variants.items():
        assert _rel(intensity, theirs) > 0.05, name


def test_ptychi_reconstructs_the_simulator_truth_with_its_phase_sign_and_geometry():
    raw = simulate_dataset(N=32, n_positions=256, seed=0)  # the demo's simulator, a smaller scan
    obj = raw.objectGuess
    xy = np.stack([raw.xcoords, raw.ycoords], axis=1)
    result = classical.ptychi_reconstruct(raw.diff3d, raw.probeGuess, xy, obj.shape, epochs=20)
    mask = np.zeros(obj.shape, dtype=bool)  # the scanned region (patch centres)
    lo, hi = int(np.ceil(xy.min())), int(np.floor(xy.max()))
    mask[lo : hi + 1, lo : hi + 1] = True
    score = score_pair(result.obj, obj, mask)
    assert abs(score["shift_x"]) < 0.5 and abs(score["shift_y"]) < 0.5, score
    aligned = result.obj * np.exp(-1j * score["global_phase"])
    amp_r = pearson(np.abs(result.obj), np.abs(obj), mask)
    phase_r = pearson(np.angle(aligned), np.angle(obj), mask)
    # measured: amplitude 0.98, phase 0.81 after 20 epochs (0.97 / 0.71 after 10)
    assert amp_r > 0.9, amp_r
    assert phase_r > 0.7, phase_r
