"""Deterministic inputs of a scenario: the same bytes for every backend.

:func:`write_inputs` (called by the runner, which imports neither framework) writes into the
scenario directory ``RUN/<sid>/``:

``scenario.json``
    :meth:`Scenario.to_json` (canonical JSON).
``inputs.npz`` (byte-deterministic, :func:`conformance.record.write_npz`)
    ``x_scaled`` float32 ``[B, N, N, C]``
        ``intensity_scale * X_full`` of the first ``B`` groups (the network input).
    ``positions`` float32 ``[B, 1, 2, C]``
        their ``coords_relative`` ((x, y) pixels, from the core grouping ``RawData.generate_grouped_data``),
        plus ``DataSpec.shift_xy`` for off-centre scenarios.
    ``probe`` complex64 ``[N, N]``
        ``normalize_probe(probeGuess, probe_scale)``: what ``ptycho.probe.set_probe_guess`` stores.
    ``intensity_scale`` float64 ``[]``
        ``sqrt(nphotons) / (N/2)``.
    ``coords_offsets`` float64 ``[B, 1, 2, 1]``
        the group centroids (object pixels).
    ``weights/<canonical name>`` float32
        ``init_canonical_weights(spec, seed, log(intensity_scale), probe)``: the shared initial weights.
    ``batches/<i>/x_scaled``, ``batches/<i>/positions``
        ``i < k_steps``: the training batches of ``train_k_steps`` (groups ``B (i+1) .. B (i+2) - 1``).
    ``ops/<op>/<arg>``
        the arguments of every physics op of :data:`OP_SIGNATURES` (0-d arrays for scalars), in the
        reference's layouts, built from the scenario's data (object patches ``Y`` at the true
        positions, their canvas, the exit wave, ...); ``B * C >= 64`` scenarios reassemble that many
        patches.
    ``e2e/object_truth`` complex64 ``[S, S]``, ``e2e/mask`` bool ``[S, S]`` (e2e scenarios)
        the ground-truth object at every test group centroid, stitched exactly as the workflows
        stitch their predictions (``ptycho.workflows.common.stitch``, M = :data:`STITCH_M`), and the
        pixels some group covers.
``train.npz``, ``test.npz`` (e2e scenarios)
    one simulated scan of one object split into a training and a test scan (``RawData.to_file``;
    the same content on every run, though ``np.savez`` stamps the zip with the time).

Everything derives from ``DataSpec.seed`` (simulation sub-streams, grouping, initial weights).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from conformance.record import write_npz
from conformance.scenarios import Scenario
from ptycho import conventions
from ptycho.atomic import atomic_write_bytes
from ptycho.canonical_weights import init_canonical_weights
from ptycho.network_spec import network_spec_from_config
from ptycho.raw_data import RawData
from ptycho.reference import physics as ref
from ptycho.simulate import simulate_dataset
from ptycho.workflows.common import create_ptycho_data_container, stitch

__all__ = [
    "INPUTS_NAME",
    "OP_SIGNATURES",
    "SCENARIO_NAME",
    "SCAN_SPACING",
    "STITCH_M",
    "TEST_NAME",
    "TRAIN_NAME",
    "Inputs",
    "read_inputs",
    "simulate",
    "write_inputs",
]

INPUTS_NAME = "inputs.npz"
SCENARIO_NAME = "scenario.json"
TRAIN_NAME = "train.npz"
TEST_NAME = "test.npz"
#: Central crop of every object when stitching (the workflows' default ``M``).
STITCH_M = 20
#: Scan density (pixels per position, ``ptycho.simulate`` ``scan_spacing``): dense enough that the
#: offsets of a gridsize-3 group stay within the canvas margin ``(P - N)/2``.
SCAN_SPACING = 3.0
#: Sigma of the ``gaussian_smooth3x3`` op test when the scenario's smoothing is off (0 is the identity).
_OP_SIGMA = 0.75

#: op -> (positional argument names, keyword argument names), as ``ptycho.reference.physics`` names
#: them: every op both parity APIs implement (``ptycho_tf.parity_api.PHYSICS_OPS`` and
#: ``ptycho_torch.parity_api.PHYSICS_OPS``).
OP_SIGNATURES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "translate": (("images", "offsets"), ()),
    "reassemble_patches": (("patches", "positions", "P"), ()),
    "extract_patches": (("canvas", "positions", "N"), ()),
    "trim": (("canvas", "N"), ()),
    "pad_object": (("patch", "P"), ()),
    "pad_to": (("images", "P"), ()),
    "center_crop": (("images", "n"), ()),
    "illuminate": (("patches", "probe"), ("probe_mask", "gaussian_smoothing_sigma")),
    "diffract": (("psi",), ()),
    "diffract_channels": (("psi",), ()),
    "gaussian_smooth3x3": (("images", "sigma"), ()),
    "combine_complex": (("amp", "phase"), ()),
    "reassemble_position": (("obj", "global_offsets", "M"), ()),
    "poisson_nll": (("y_true_intensity", "y_pred_intensity"), ()),
    "mean_absolute_error": (("a", "b"), ()),
    "normalize_x_full": (("diffraction",), ()),
}


# --------------------------------------------------------------------------- simulation
def _n_positions(scenario: Scenario) -> int:
    """Scan positions to simulate: enough distinct group seeds for ``B * (1 + k_steps)`` groups."""
    if scenario.data.n_positions is not None:
        return scenario.data.n_positions
    return max(32, scenario.batch * (1 + scenario.k_steps) + 8)


def _subset(raw: RawData, idx: np.ndarray) -> RawData:
    return RawData(
        raw.xcoords[idx], raw.ycoords[idx], raw.xcoords_start[idx], raw.ycoords_start[idx], raw.diff3d[idx],
        raw.probeGuess, raw.scan_index[idx], objectGuess=raw.objectGuess, metadata=raw.metadata,
        diffraction_is="amplitude", bad_pixels=raw.bad_pixels,
    )


def bad_pixel_mask(N: int, count: int, seed: int) -> np.ndarray | None:
    """``count`` distinct detector pixels marked bad (bool ``[N, N]``, seeded), or None for 0."""
    if not count:
        return None
    mask = np.zeros(N * N, dtype=bool)
    mask[np.random.default_rng([seed, 7]).choice(N * N, size=count, replace=False)] = True
    return mask.reshape(N, N)


def _with_bad_pixels(raw: RawData, mask: np.ndarray) -> RawData:
    """``raw`` with the mask set and hot values (10 x the data maximum) at the bad pixels."""
    d = raw.diff3d.copy()
    d[:, mask] = 10.0 * float(d.max())
    return RawData(raw.xcoords, raw.ycoords, raw.xcoords_start, raw.ycoords_start, d, raw.probeGuess,
                   raw.scan_index, objectGuess=raw.objectGuess, metadata=raw.metadata, diffraction_is="amplitude",
                   bad_pixels=mask)


def simulate(scenario: Scenario) -> tuple[RawData, RawData | None]:
    """The scenario's simulated scan ``(train, test)``; ``test`` is None unless ``n_test_positions`` is set.

    One object and one scan of ``n_positions + n_test_positions`` positions
    (``ptycho.simulate.simulate_dataset``, seed ``DataSpec.seed``), split in scan order; with
    ``DataSpec.bad_pixels`` the detector mask of :func:`bad_pixel_mask` and hot values there.
    """
    d = scenario.data
    n_train = _n_positions(scenario)
    n_test = d.n_test_positions or 0
    raw = simulate_dataset(d.N, n_train + n_test, object_kind=d.object_kind, nphotons=d.nphotons, seed=d.seed,
                           scan_spacing=SCAN_SPACING)
    mask = bad_pixel_mask(d.N, d.bad_pixels, d.seed)
    if mask is not None:
        raw = _with_bad_pixels(raw, mask)
    if not n_test:
        return raw, None
    idx = np.arange(n_train + n_test)
    return _subset(raw, idx[:n_train]), _subset(raw, idx[n_train:])


# --------------------------------------------------------------------------- op arguments
def _op_arguments(
    scenario: Scenario, Y: np.ndarray, positions: np.ndarray, x_scaled: np.ndarray, diffraction: np.ndarray,
    offsets: np.ndarray, probe: np.ndarray,
) -> dict[str, dict[str, Any]]:
    """``{op: {arg: value}}`` for every op of :data:`OP_SIGNATURES`, from the scenario's first batch."""
    d, m = scenario.data, scenario.model_config()
    N, P = d.N, d.P
    canvas = ref.reassemble_patches(Y, positions, P)
    flat = conventions.channels_to_flat(Y)
    psi = ref.illuminate(Y, probe, probe_mask=m.probe_mask, gaussian_smoothing_sigma=m.gaussian_smoothing_sigma)
    pred_amp = (np.float32(0.9) * x_scaled + np.float32(0.5)).astype(np.float32)  # a positive stand-in prediction
    return {
        "translate": {"images": flat, "offsets": conventions.positions_to_flat(positions)},
        "reassemble_patches": {"patches": Y, "positions": positions, "P": P},
        "extract_patches": {"canvas": canvas, "positions": positions, "N": N},
        "trim": {"canvas": canvas, "N": N},
        "pad_object": {"patch": np.ascontiguousarray(Y[..., :1]), "P": P},
        "pad_to": {"images": flat, "P": P},
        "center_crop": {"images": flat, "n": N // 2},
        "illuminate": {"patches": Y, "probe": probe, "probe_mask": bool(m.probe_mask),
                       "gaussian_smoothing_sigma": float(m.gaussian_smoothing_sigma)},
        "diffract": {"psi": conventions.channels_to_flat(psi)},
        "diffract_channels": {"psi": psi},
        "gaussian_smooth3x3": {"images": Y, "sigma": float(m.gaussian_smoothing_sigma) or _OP_SIGMA},
        "combine_complex": {"amp": np.abs(Y).astype(np.float32), "phase": np.angle(Y).astype(np.float32)},
        "reassemble_position": {"obj": ref.trim(canvas, N), "global_offsets": offsets, "M": min(STITCH_M, N)},
        "poisson_nll": {"y_true_intensity": (x_scaled**2).astype(np.float32),
                        "y_pred_intensity": (pred_amp**2).astype(np.float32)},
        "mean_absolute_error": {"a": x_scaled, "b": pred_amp},
        "normalize_x_full": {"diffraction": diffraction},
    }


# --------------------------------------------------------------------------- writing
def _group(raw: RawData, scenario: Scenario, n_groups: int) -> dict[str, Any]:
    d = scenario.data
    return raw.generate_grouped_data(d.N, K=d.K, nsamples=n_groups, seed=d.seed, gridsize=d.gridsize)


def _positions(grouped: Mapping[str, Any], scenario: Scenario) -> np.ndarray:
    """``coords_relative`` (+ the off-centre shift) as float32; ``ValueError`` beyond the canvas margin."""
    pos = np.asarray(grouped["coords_relative"], dtype=np.float64).copy()
    d = scenario.data
    if d.offsets == "off_centre":
        pos[:, :, conventions.X_INDEX, :] += d.shift_xy[0]
        pos[:, :, conventions.Y_INDEX, :] += d.shift_xy[1]
    worst = float(np.max(np.abs(pos)))
    if worst > d.margin:
        raise ValueError(
            f"scenario {scenario.id}: an offset of {worst:.3f} px exceeds the canvas margin (P - N)/2 = {d.margin} "
            "px; lower shift_xy or K, or raise n_positions (denser scan, closer neighbours)"
        )
    return pos.astype(np.float32)


def _e2e_truth(test: RawData, scenario: Scenario) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth aligned with the stitched test reconstruction, and its coverage mask."""
    container = create_ptycho_data_container(test, scenario.training_config(), seed=scenario.data.seed)
    centroids = conventions.positions_to_flat(container.global_offsets)
    truth = ref.object_patches(test.objectGuess, centroids, scenario.data.N)[..., None]
    # the truth's groups agree by construction: stitch them as they are
    _, _, stitched = stitch(truth, container.global_offsets, STITCH_M, align_phases=False)
    _, _, cover = stitch(np.ones_like(truth), container.global_offsets, STITCH_M, align_phases=False)
    return stitched[..., 0].astype(np.complex64), np.abs(cover[..., 0]) > 0.5


def write_inputs(scenario: Scenario, directory: str | PathLike) -> Path:
    """Write the scenario's inputs into ``directory`` (created) and return it (module docstring).

    Deterministic: the same scenario gives byte-identical ``inputs.npz`` and ``scenario.json``.
    ``ValueError`` when an (off-centre) offset leaves the canvas margin ``(P - N)/2``.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    d, B, k = scenario.data, scenario.batch, scenario.k_steps
    train, test = simulate(scenario)
    grouped = _group(train, scenario, B * (1 + k))
    n_got = len(grouped["nn_indices"])
    if n_got < B * (1 + k):
        raise ValueError(f"scenario {scenario.id}: grouping gave {n_got} groups, need B * (1 + k_steps) = "
                         f"{B * (1 + k)}; raise n_positions")
    scale = conventions.intensity_scale(d.nphotons, d.N)
    x_all = (np.asarray(grouped["X_full"], np.float32) * np.float32(scale)).astype(np.float32)
    pos_all = _positions(grouped, scenario)
    model = scenario.model_config()
    probe = ref.normalize_probe(train.probeGuess, model.probe_scale).astype(np.complex64)
    weights = init_canonical_weights(network_spec_from_config(model), seed=d.seed, log_scale=math.log(scale),
                                     probe=probe)
    main = slice(0, B)
    arrays: dict[str, np.ndarray] = {
        "x_scaled": x_all[main],
        "positions": pos_all[main],
        "probe": probe,
        "intensity_scale": np.float64(scale),
        "coords_offsets": np.asarray(grouped["coords_offsets"][main], np.float64),
    }
    arrays.update({f"weights/{name}": w for name, w in weights.items()})
    if train.bad_pixels is not None:
        arrays["bad_pixels"] = train.bad_pixels
    for i in range(k):
        sl = slice(B * (i + 1), B * (i + 2))
        arrays[f"batches/{i}/x_scaled"] = x_all[sl]
        arrays[f"batches/{i}/positions"] = pos_all[sl]
    ops = _op_arguments(scenario, np.asarray(grouped["Y"][main], np.complex64), pos_all[main], x_all[main],
                        np.asarray(grouped["diffraction"][main], np.float32), arrays["coords_offsets"], probe)
    for op, args in ops.items():
        arrays.update({f"ops/{op}/{name}": np.asarray(v) for name, v in args.items()})
    if test is not None:
        arrays["e2e/object_truth"], arrays["e2e/mask"] = _e2e_truth(test, scenario)
        train.to_file(out / TRAIN_NAME)
        test.to_file(out / TEST_NAME)
    write_npz(out / INPUTS_NAME, arrays)
    atomic_write_bytes(out / SCENARIO_NAME, scenario.to_json().encode())
    return out


# --------------------------------------------------------------------------- reading
def _scalar(a: np.ndarray) -> Any:
    return a.item() if a.ndim == 0 else a


@dataclass(frozen=True)
class Inputs:
    """The inputs of one scenario read back (all arrays loaded; they are small)."""

    directory: Path
    scenario: Scenario
    arrays: dict[str, np.ndarray]

    @property
    def x_scaled(self) -> np.ndarray:
        return self.arrays["x_scaled"]

    @property
    def positions(self) -> np.ndarray:
        return self.arrays["positions"]

    @property
    def probe(self) -> np.ndarray:
        return self.arrays["probe"]

    @property
    def intensity_scale(self) -> float:
        return float(self.arrays["intensity_scale"])

    @property
    def bad_pixels(self) -> np.ndarray | None:
        """The detector mask bool ``[N, N]`` of a bad-pixel scenario, else None."""
        return self.arrays.get("bad_pixels")

    @property
    def loss_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``loss_and_grads`` / ``train_steps`` besides the loss weights."""
        return {} if self.bad_pixels is None else {"bad_pixels": self.bad_pixels}

    @property
    def weights(self) -> dict[str, np.ndarray]:
        """The canonical initial weights ``{canonical name: float32 array}``."""
        return {k.split("/", 1)[1]: v for k, v in self.arrays.items() if k.startswith("weights/")}

    @property
    def batches(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The ``k_steps`` training batches ``(x_scaled, positions)``."""
        return [(self.arrays[f"batches/{i}/x_scaled"], self.arrays[f"batches/{i}/positions"])
                for i in range(self.scenario.k_steps)]

    def op_call(self, op: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``(args, kwargs)`` of physics op ``op`` (0-d arrays become Python scalars)."""
        positional, keywords = OP_SIGNATURES[op]
        args = tuple(_scalar(self.arrays[f"ops/{op}/{n}"]) for n in positional)
        return args, {n: _scalar(self.arrays[f"ops/{op}/{n}"]) for n in keywords}

    @property
    def train_file(self) -> Path:
        return self.directory / TRAIN_NAME

    @property
    def test_file(self) -> Path:
        return self.directory / TEST_NAME


def read_inputs(directory: str | PathLike) -> Inputs:
    """Read ``scenario.json`` and ``inputs.npz`` of a scenario directory written by :func:`write_inputs`."""
    directory = Path(directory)
    scenario = Scenario.from_json((directory / SCENARIO_NAME).read_text())
    with np.load(directory / INPUTS_NAME, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return Inputs(directory, scenario, arrays)
