"""The conventions that every part of ptychopinn shares, defined exactly once.

Both backends (TensorFlow in ``ptycho``, PyTorch in ``ptycho_torch``), the NumPy
reference (``ptycho.reference``) and the conformance harness import these names
instead of restating them.  ``specs/conventions.md`` is the prose version; a test
checks the two agree.

Coordinates
    Scan positions are pixels of the object canvas, stored in ``[x, y]`` order:
    ``x`` indexes columns (the last image axis), ``y`` indexes rows.  In a
    positions array of layout ``[B, 1, 2, C]`` axis 2 holds ``(x, y)``.

Offsets
    ``coords_relative = LOCAL_OFFSET_SIGN * (pos - group_centroid)``, i.e. the
    relative offset points *from* a scan position *to* its group centroid.
    ``translate(image, d)`` moves image content by ``+d`` (``+x`` towards larger
    column index, ``+y`` towards larger row index).  Reassembly translates each
    patch by ``REASSEMBLY_SHIFT_SIGN * coords_relative`` (= ``pos - centroid``);
    extraction translates the canvas by ``EXTRACTION_SHIFT_SIGN *
    coords_relative``.

Layouts
    TensorFlow is channels-last: images ``[B, N, N, C]``, positions
    ``[B, 1, 2, C]``.  PyTorch is channels-first: images ``[B, C, N, N]``,
    positions ``[B, C, 1, 2]``.  ``C = gridsize ** 2``.  The *flat* layout used
    inside the physics ops is ``[B * C, N, N]`` in batch-major order (row
    ``b * C + c``), offsets ``[B * C, 2]``.

Fourier transform
    ``A = sqrt(fftshift(|fft2(psi)|**2) / N**2)``: no ``ifftshift`` before the
    FFT, ``fftshift`` after it, so the zero frequency sits at pixel
    ``(N // 2, N // 2)`` and Parseval holds (``sum A**2 == sum |psi|**2``).

Normalisation
    The network input ``X_full`` is the diffraction amplitude scaled so that
    ``mean over (sample, channel) of sum over pixels of X_full**2 == (N/2)**2``.
    The intensity scale is ``s = sqrt(nphotons) / (N/2)``; the network is fed
    ``s * X_full`` and its first layer divides by ``exp(log_scale)``.
"""

from __future__ import annotations

import math

import numpy as np

# --------------------------------------------------------------------------- coordinates
#: Order of the coordinate axis in every positions array.
COORD_ORDER: tuple[str, str] = ("x", "y")
#: Index of x (columns) and y (rows) on the coordinate axis.
X_INDEX: int = 0
Y_INDEX: int = 1
#: ``coords_relative = LOCAL_OFFSET_SIGN * (pos - centroid)``.
LOCAL_OFFSET_SIGN: int = -1
#: ``translate(img, d)`` moves content by ``TRANSLATE_CONTENT_SIGN * d``.
TRANSLATE_CONTENT_SIGN: int = +1
#: Reassembly shifts patch ``c`` by ``REASSEMBLY_SHIFT_SIGN * coords_relative[c]``.
REASSEMBLY_SHIFT_SIGN: int = -1
#: Extraction shifts the canvas by ``EXTRACTION_SHIFT_SIGN * coords_relative[c]``.
EXTRACTION_SHIFT_SIGN: int = +1

# --------------------------------------------------------------------------- layouts
TF_IMAGE_LAYOUT: str = "BHWC"
TORCH_IMAGE_LAYOUT: str = "BCHW"
TF_POSITION_LAYOUT: str = "B1XC"  # [B, 1, 2, C], X = the (x, y) axis
TORCH_POSITION_LAYOUT: str = "BC1X"  # [B, C, 1, 2]

# --------------------------------------------------------------------------- geometry defaults
#: Legacy ``params.cfg['offset']``: nominal spacing in pixels used to size the canvas.
OFFSET: int = 4
#: Legacy ``params.cfg['max_position_jitter']``: canvas margin in pixels.
MAX_POSITION_JITTER: int = 10
#: Supported patch sizes of the default 'cnn' network (8 x 2**k).
SUPPORTED_N: tuple[int, ...] = (32, 64, 128, 256)

# --------------------------------------------------------------------------- physics constants
#: Fourier transform convention (see module docstring).
FFT_IFFTSHIFT_BEFORE: bool = False
FFT_FFTSHIFT_AFTER: bool = True
#: Added to the central-mask count when normalising reassembled patches.
REASSEMBLY_NORM_EPS: float = 1e-3
#: Added to the coverage count when stitching patches into the full object.
STITCH_NORM_EPS: float = 1e-9
#: Number of decoder body channels routed to the border ("outer") branch of a head.
DECODER_C_OUTER: int = 4
#: Phase head activation is ``PHASE_SCALE * tanh``.
PHASE_SCALE: float = math.pi
#: Default probe-normalisation scale (``ModelConfig.probe_scale``).
DEFAULT_PROBE_SCALE: float = 4.0
#: Width parameter of upstream's default probe window, ``std = N / (scale * pi**2)``
#: (legacy ``params.cfg['default_probe_scale']``); not the normalisation scale above.
DEFAULT_PROBE_WINDOW_SCALE: float = 0.7
#: Activations the amplitude head may use (``ModelConfig.amp_activation``).
AMP_ACTIVATIONS: tuple[str, ...] = ("sigmoid", "swish", "softplus", "relu")

# --------------------------------------------------------------------------- optimisation
#: Adam hyper-parameters shared by both backends.  The update is Keras' formula
#: (``ptycho.reference.optim.adam_step``): epsilon is added to ``sqrt(v_t)`` before the
#: bias correction is folded into the step size; the PyTorch backend implements the same.
LEARNING_RATE: float = 1e-3
ADAM_BETA1: float = 0.9
ADAM_BETA2: float = 0.999
ADAM_EPSILON: float = 1e-7
#: Fraction of the training groups held out for validation (the last ones, as Keras'
#: ``validation_split``).
VALIDATION_FRACTION: float = 0.05


def channels(gridsize: int) -> int:
    """Number of channels ``C`` in a group of ``gridsize x gridsize`` scan positions."""
    if int(gridsize) != gridsize or gridsize < 1:
        raise ValueError(f"gridsize={gridsize!r} is invalid: expected a positive integer")
    return int(gridsize) ** 2


def big_n(N: int, gridsize: int, offset: int = OFFSET) -> int:
    """``bigN = N + (gridsize - 1) * offset`` (legacy ``params.get('bigN')``)."""
    return int(N) + (int(gridsize) - 1) * int(offset)


def padded_size(
    N: int, gridsize: int, offset: int = OFFSET, max_position_jitter: int = MAX_POSITION_JITTER
) -> int:
    """Canvas size ``P = N + (gridsize - 1) * offset + max_position_jitter`` in pixels.

    The reassembled object of one group lives on a ``P x P`` canvas; for the
    defaults this is ``N + 10`` at gridsize 1 and ``N + 14`` at gridsize 2.
    """
    return big_n(N, gridsize, offset) + int(max_position_jitter)


def x_full_target_energy(N: int) -> float:
    """Mean per-pattern energy ``sum(X_full**2)`` that normalisation produces: ``(N/2)**2``."""
    return (N / 2.0) ** 2


def intensity_scale(nphotons: float, N: int) -> float:
    """Closed-form intensity scale ``s = sqrt(nphotons) / (N/2)``.

    ``s * X_full`` has a mean photon count (sum of squares per pattern) of
    ``nphotons``.
    """
    if not nphotons > 0:
        raise ValueError(f"nphotons={nphotons!r} is invalid: expected a positive photon count")
    return math.sqrt(float(nphotons)) / (N / 2.0)


# --------------------------------------------------------------------------- layout converters
# NumPy versions; each backend has a tensor version tested against these.


def tf_to_torch_images(a: np.ndarray) -> np.ndarray:
    """``[B, N, N, C]`` -> ``[B, C, N, N]``."""
    return np.ascontiguousarray(np.transpose(a, (0, 3, 1, 2)))


def torch_to_tf_images(a: np.ndarray) -> np.ndarray:
    """``[B, C, N, N]`` -> ``[B, N, N, C]``."""
    return np.ascontiguousarray(np.transpose(a, (0, 2, 3, 1)))


def tf_to_torch_positions(p: np.ndarray) -> np.ndarray:
    """``[B, 1, 2, C]`` -> ``[B, C, 1, 2]``."""
    return np.ascontiguousarray(np.transpose(p, (0, 3, 1, 2)))


def torch_to_tf_positions(p: np.ndarray) -> np.ndarray:
    """``[B, C, 1, 2]`` -> ``[B, 1, 2, C]``."""
    return np.ascontiguousarray(np.transpose(p, (0, 2, 3, 1)))


def channels_to_flat(a: np.ndarray) -> np.ndarray:
    """Channel images ``[B, N, N, C]`` -> flat stack ``[B * C, N, N]`` (row ``b * C + c``)."""
    B, H, W, C = a.shape
    return np.ascontiguousarray(np.transpose(a, (0, 3, 1, 2)).reshape(B * C, H, W))


def flat_to_channels(a: np.ndarray, C: int) -> np.ndarray:
    """Flat stack ``[B * C, N, N]`` -> channel images ``[B, N, N, C]``."""
    K, H, W = a.shape
    if K % C:
        raise ValueError(f"flat stack of {K} images cannot be split into groups of C={C}")
    return np.ascontiguousarray(np.transpose(a.reshape(K // C, C, H, W), (0, 2, 3, 1)))


def positions_to_flat(p: np.ndarray) -> np.ndarray:
    """Positions ``[B, 1, 2, C]`` -> offsets ``[B * C, 2]`` in ``(x, y)`` order, row ``b * C + c``."""
    B, one, two, C = p.shape
    if one != 1 or two != 2:
        raise ValueError(f"positions must have shape [B, 1, 2, C], got {p.shape}")
    return np.ascontiguousarray(np.transpose(p[:, 0, :, :], (0, 2, 1)).reshape(B * C, 2))
