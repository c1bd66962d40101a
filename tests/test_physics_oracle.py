"""The shared physics conventions against a textbook far-field model, and the model's loss at the truth.

Issue 11 asked why the PINN returns an object whose phase anti-correlates with the truth.
A convention error that both backends share (a conjugate, a flipped or one-pixel-rolled
pattern, a transposed probe, swapped ``(x, y)`` or negated offsets) would make the data
fit a transformed object better than the true one.  These tests pin the opposite, with
NumPy only:

1. the simulator's diffraction equals the textbook model ``|fftshift(fft2(P * O_patch))| / N``
   with patches cut by plain slicing at integer positions, and does **not** equal it for
   ``conj(O)``, a flipped / flipped-and-rolled pattern, or a transposed object;
2. the model's own Poisson NLL (grouped data, ``coords_relative``, the probe normalised as
   the workflows do, ``reference.physics.forward_physics``) is lowest for the true object
   and higher for every transformed variant.

The probe (the ``asymmetric_probe`` fixture) is deliberately asymmetric (no transpose,
point or conjugate symmetry), so that each variant is distinguishable.  The
independent-engine check (pty-chi) is in ``tests/test_classical_oracle.py`` (slow tier);
the measurements behind both are in ``specs/physics.md`` §21.
"""

from __future__ import annotations

import numpy as np
import pytest

from ptycho import params
from ptycho import probe as probe_mod
from ptycho.config.config import ModelConfig, TrainingConfig
from ptycho.raw_data import RawData
from ptycho.reference import physics
from ptycho.simulation import make_object, make_scan, simulate_diffraction, substream
from ptycho.workflows import common

N = 32


def _object_and_scan(M: int = 64, size: int = 80, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    obj = make_object("grf", size, substream(seed, "object"))
    xy = make_scan("random", M, obj.shape, N, substream(seed, "scan"))
    return obj, xy


def textbook_amplitude(obj: np.ndarray, probe: np.ndarray, xy_int: np.ndarray) -> np.ndarray:
    """``|fftshift(fft2(P * O[y-N/2:y+N/2, x-N/2:x+N/2]))| / N`` at integer ``(x, y)``: float64 ``[M, N, N]``."""
    n = probe.shape[0]
    out = np.empty((len(xy_int), n, n))
    for k, (x, y) in enumerate(np.asarray(xy_int, dtype=int)):
        patch = obj[y - n // 2 : y + n // 2, x - n // 2 : x + n // 2]
        out[k] = np.abs(np.fft.fftshift(np.fft.fft2(probe * patch))) / n
    return out


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_simulator_equals_the_textbook_far_field_model_and_no_transformed_one(asymmetric_probe):
    obj, xy = _object_and_scan()
    xy_int = np.rint(xy)
    P = asymmetric_probe
    data = simulate_diffraction(obj, P, xy_int, nphotons=None).diff3d.astype(np.float64)
    assert _rel(data, textbook_amplitude(obj, P, xy_int)) < 1e-5

    flip = data[:, ::-1, ::-1]  # k -> -k is [::-1] plus a one-pixel roll for even N
    variants = {
        "conj(O)": textbook_amplitude(np.conj(obj), P, xy_int),
        "conj(P)": textbook_amplitude(obj, np.conj(P), xy_int),
        "P transposed": textbook_amplitude(obj, P.T, xy_int),
        "O transposed, (x, y) swapped": textbook_amplitude(obj.T, P, xy_int[:, ::-1]),
        "pattern flipped": flip,
        "pattern flipped and rolled": np.roll(flip, 1, axis=(1, 2)),
        "pattern transposed": np.swapaxes(data, 1, 2),
    }
    for name, amp in variants.items():
        assert _rel(amp, data) > 0.05, name


def _container(obj: np.ndarray, P: np.ndarray, xy: np.ndarray, nphotons: float, gridsize: int):
    sim = simulate_diffraction(obj, P, xy, nphotons=nphotons, rng=substream(1, "noise"))
    raw = RawData.from_coords_without_pc(
        xy[:, 0], xy[:, 1], sim.diff3d, sim.probe, np.zeros(len(xy), np.int64), objectGuess=obj,
        diffraction_is="amplitude",
    )
    config = TrainingConfig(
        model=ModelConfig(N=N, gridsize=gridsize), nphotons=nphotons, n_groups=len(xy), subsample_seed=0
    )
    return common.create_ptycho_data_container(raw, config), config


@pytest.mark.parametrize("gridsize", [1, 2])
def test_model_loss_is_lowest_at_the_true_object(gridsize, asymmetric_probe):
    obj, xy = _object_and_scan()
    P = asymmetric_probe
    container, config = _container(obj, P, xy, 1e7, gridsize)
    params.cfg["probe_scale"] = config.model.probe_scale
    probe = probe_mod.set_probe_guess(None, container.probe)[..., 0]  # what the workflows give the model
    scale = common.set_intensity_scale(config)
    y_true = (scale * container.X.astype(np.float64)) ** 2
    keep = physics.center_mask(N)[None, :, :, None]  # the decoder's patches reach the canvas through this window

    def nll(patches: np.ndarray, offsets: np.ndarray = container.coords_nominal, p: np.ndarray = probe) -> float:
        out = physics.forward_physics(
            (keep * patches).astype(np.complex64), offsets, p, np.log(scale), N=N, gridsize=gridsize,
            object_big=True, probe_mask=False, gaussian_smoothing_sigma=0.0,
        )
        pred = out["pred_intensity"].astype(np.float64)
        pred *= y_true.sum() / pred.sum()  # the object's overall scale is free
        return float(np.mean(pred - y_true * np.log(pred)))

    Y = container.Y
    truth = nll(Y)
    flip = Y[:, ::-1, ::-1]
    variants = {
        "conj(O)": nll(np.conj(Y)),
        "O flipped": nll(flip),
        "O flipped and rolled": nll(np.roll(flip, 1, axis=(1, 2))),
        "conj(O) flipped and rolled (twin)": nll(np.conj(np.roll(flip, 1, axis=(1, 2)))),
        "O transposed": nll(np.swapaxes(Y, 1, 2)),
        "conj(probe)": nll(Y, p=np.conj(probe)),
        "probe transposed": nll(Y, p=probe.T),
    }
    if gridsize > 1:
        variants["offsets negated"] = nll(Y, -container.coords_nominal)
        variants["offsets (x, y) swapped"] = nll(Y, container.coords_nominal[:, :, ::-1, :])
    # Poisson noise at 1e7 photons moves the NLL by O(1) per pixel; every variant costs far more.
    for name, value in variants.items():
        assert value - truth > 10.0, (name, value - truth)
