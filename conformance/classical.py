"""An independent classical ptychography engine (pty-chi) on the project's data, as an oracle.

pty-chi (``ptychi``, Argonne's maintained PyTorch ptychography library) is a second,
independent implementation of the far-field forward model and of iterative solvers
(LSQML, ePIE, ...).  This module maps the project's conventions onto it, so the
tests can check that

* the project's forward model ``physics.diffract(probe * physics.object_patches(obj, xy, N))``
  equals pty-chi's forward model of the same object, probe and positions (a convention
  error that both backends share, such as a conjugate, a flipped or transposed pattern,
  a swapped ``(x, y)`` or a negated offset, breaks this equality), and
* pty-chi reconstructs the project's simulated data with the simulator's phase sign and
  geometry (the benchmark also uses it as the classical baseline).

Convention map (measured in ``tests/test_classical_oracle.py``):

=====================  ==========================================  ==============================================
quantity               this project                                 pty-chi
=====================  ==========================================  ==============================================
patch origin           ``start = pos - N/2`` (pixel ``N/2`` on pos)  ``start = pos + origin - (N - 1)/2``
positions              ``(x, y)`` object pixels                     ``position_x_px``, ``position_y_px`` about
                                                                    ``origin = round(shape/2) - 0.5``
                       so ``pos_ptychi = pos - 0.5 - origin`` per axis
far field              ``sqrt(fftshift(|fft2 psi|^2) / N^2)``       ``|fft2 psi|^2`` (unnormalised, DC at [0, 0]);
                       (amplitude, DC at ``(N/2, N/2)``)            data given centred and ``fft_shift=True``
=====================  ==========================================  ==============================================

So pty-chi's intensity is ``N**2 * ifftshift(diffract(...)**2)``.

pty-chi imports ``torchvision`` only for ``torchvision.transforms.GaussianBlur`` (an
optional smoothing we never enable).  The only torchvision wheel on the package index is
the CUDA build, whose import fails next to the CPU torch this project pins, and which
would also change what lightning/torchmetrics import; so pty-chi is installed with
``pip install --no-deps ptychi==2.2.0`` plus its light dependencies (the ``oracle``
extra), and :func:`import_ptychi` supplies a stand-in ``torchvision.transforms`` module
whose ``GaussianBlur`` raises when used, only when torchvision itself cannot be imported.
"""

from __future__ import annotations

import importlib
import sys
import types
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "PTYCHI_VERSION",
    "ClassicalResult",
    "import_ptychi",
    "ptychi_forward_intensity",
    "ptychi_positions",
    "ptychi_reconstruct",
]

#: The pty-chi release this adapter was written and measured against.
PTYCHI_VERSION: str = "2.2.0"


class _TorchvisionUnavailableBlur:
    """Stand-in for ``torchvision.transforms.GaussianBlur``: pty-chi only builds it for options we never set."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(
            "torchvision is not importable here; this pty-chi option needs it (pip install torchvision)"
        )


def _drop_torchvision_modules() -> None:
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]


def _stand_in_torchvision() -> bool:
    """Put a stand-in ``torchvision.transforms`` in ``sys.modules`` unless the real one imports; True if placed."""
    try:
        importlib.import_module("torchvision.transforms")
        return False
    except Exception:  # noqa: BLE001 - a CUDA-only torchvision beside a CPU torch raises RuntimeError
        _drop_torchvision_modules()
    tv = types.ModuleType("torchvision")
    tr = types.ModuleType("torchvision.transforms")
    tr.GaussianBlur = _TorchvisionUnavailableBlur  # type: ignore[attr-defined]
    tv.transforms = tr  # type: ignore[attr-defined]
    sys.modules["torchvision"] = tv
    sys.modules["torchvision.transforms"] = tr
    return True


def import_ptychi() -> Any:
    """Import and return ``ptychi.api`` (raises ``ImportError`` when pty-chi is not installed).

    The stand-in torchvision lives in ``sys.modules`` only while pty-chi is imported (its
    ``ptychi.utils`` binds ``GaussianBlur`` at import); it is removed afterwards, so other
    libraries in the process (lightning, torchmetrics) still see torchvision as absent.
    """
    importlib.import_module("ptychi")  # ImportError here: not installed
    placed = _stand_in_torchvision()
    try:
        return importlib.import_module("ptychi.api")
    finally:
        if placed:
            _drop_torchvision_modules()


def ptychi_positions(xy: np.ndarray, object_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """pty-chi's ``(position_x_px, position_y_px)`` for the project's ``(x, y)`` positions ``[M, 2]``.

    ``pos_ptychi = pos - 0.5 - (round(size / 2) - 0.5)`` per axis (see the module table).
    """
    xy = np.asarray(xy, dtype=np.float64)
    H, W = object_shape
    origin_y, origin_x = round(H / 2) - 0.5, round(W / 2) - 0.5
    return xy[:, 0] - 0.5 - origin_x, xy[:, 1] - 0.5 - origin_y


def _task(
    intensity: np.ndarray,
    probe: np.ndarray,
    xy: np.ndarray,
    obj0: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    algorithm: str,
) -> Any:
    api = import_ptychi()
    from ptychi.api.task import PtychographyTask

    opts = api.LSQMLOptions() if algorithm == "lsqml" else api.EPIEOptions()
    opts.data_options.fft_shift = True  # our patterns have DC at (N/2, N/2)
    opts.object_options.optimizable = True
    opts.probe_options.optimizable = False
    opts.probe_position_options.optimizable = False
    opts.reconstructor_options.num_epochs = int(epochs)
    opts.reconstructor_options.batch_size = int(batch_size)
    opts.reconstructor_options.default_device = api.Devices.CPU
    px, py = ptychi_positions(xy, obj0.shape)
    return PtychographyTask(
        opts,
        diffraction_data=np.asarray(intensity, dtype=np.float32),
        object_data=np.asarray(obj0, dtype=np.complex64)[None],
        probe_data=np.asarray(probe, dtype=np.complex64)[None, None],
        probe_position_x_px=px,
        probe_position_y_px=py,
    )


def ptychi_forward_intensity(obj: np.ndarray, probe: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """pty-chi's predicted intensity of ``obj`` ``[H, W]`` under ``probe`` ``[N, N]`` at ``xy`` ``[M, 2]``.

    Returned in the project's layout and units: float64 ``[M, N, N]``, DC at ``(N/2, N/2)``,
    divided by ``N**2``, so it is comparable with ``physics.diffract(...)**2``.
    """
    import torch

    N = int(np.asarray(probe).shape[-1])
    xy = np.asarray(xy, dtype=np.float64)
    dummy = np.ones((xy.shape[0], N, N), dtype=np.float32)
    task = _task(dummy, probe, xy, obj, epochs=1, batch_size=xy.shape[0], algorithm="lsqml")
    with torch.no_grad():
        y = task.reconstructor.forward_model.forward(torch.arange(xy.shape[0])).cpu().numpy()
    return np.fft.fftshift(y.astype(np.float64), axes=(-2, -1)) / N**2


@dataclass(frozen=True)
class ClassicalResult:
    """A pty-chi reconstruction: complex64 ``obj`` ``[H, W]`` on the project's object grid, wall ``seconds``."""

    obj: np.ndarray
    seconds: float


def ptychi_reconstruct(
    diffraction: np.ndarray,
    probe: np.ndarray,
    xy: np.ndarray,
    object_shape: tuple[int, int],
    *,
    epochs: int = 20,
    batch_size: int = 32,
    algorithm: str = "lsqml",
) -> ClassicalResult:
    """Reconstruct the object from diffraction **amplitudes** ``[M, N, N]`` with the known probe and positions.

    The object starts flat (ones); probe and positions are fixed (the PINN also gets
    both).  ``algorithm`` is ``'lsqml'`` (default) or ``'epie'``.  Runs on the CPU.
    """
    import time

    if algorithm not in ("lsqml", "epie"):
        raise ValueError(f"algorithm must be 'lsqml' or 'epie', got {algorithm!r}")
    amp = np.asarray(diffraction, dtype=np.float64)
    if amp.ndim != 3:
        raise ValueError(f"diffraction must be [M, N, N] amplitudes, got shape {amp.shape}")
    start = time.perf_counter()
    task = _task(
        amp**2, probe, xy, np.ones(object_shape, np.complex64), epochs=epochs, batch_size=batch_size,
        algorithm=algorithm,
    )
    task.run()
    obj = task.get_data_to_cpu("object", as_numpy=True)[0]
    return ClassicalResult(np.asarray(obj, dtype=np.complex64), time.perf_counter() - start)
