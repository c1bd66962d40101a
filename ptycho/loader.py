"""Grouped data as the models consume it: ``PtychoDataContainer`` and ``load``.

Backend-neutral: the container holds NumPy arrays in the data-contract layout
(channels-last ``[B, N, N, C]``, positions ``[B, 1, 2, C]``).  Keras accepts them
as they are; the PyTorch backend converts them with the layout converters in
:mod:`ptycho.conventions`.  ``ptycho.loader.load(lambda: ds, probe, which=None,
create_split=False)`` is part of the Ptychodus contract.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from os import PathLike
from typing import Any

import numpy as np

from ptycho import params
from ptycho.errors import DataContractError


class PtychoDataContainer:
    """Model-ready arrays of one dataset split.

    Attributes (``B`` groups, ``C = gridsize**2`` channels, ``N`` pixels):

    - ``X`` float32 ``[B, N, N, C]``: normalised diffraction amplitude ``X_full``.
    - ``Y_I``, ``Y_phi`` float32 ``[B, N, N, C]``: ground-truth object amplitude and phase
      at each scan position (ones and zeros when the dataset has no object).
    - ``Y`` complex64 ``[B, N, N, C]`` (property): ``Y_I * exp(i Y_phi)``.
    - ``coords_nominal`` (alias ``coords``), ``coords_true`` float32 ``[B, 1, 2, C]``:
      relative offsets ``coords_start_relative`` fed to the model.
    - ``local_offsets`` float64 ``[B, 1, 2, C]``: ``coords_relative``.
    - ``global_offsets`` float64 ``[B, 1, 2, 1]``: group centroids ``coords_offsets`` in
      object pixels, (x, y); what stitching uses.
    - ``nn_indices`` int64 ``[B, C]``: scan indices of each group's members.
    - ``probe`` complex64 ``[N, N]``: the dataset's probe guess (not normalised).
    - ``norm_Y_I`` float: ``sqrt(nphotons / mean_{b,c} sum X**2)`` (kept for upstream
      compatibility; unused by training).
    - ``X_full_norm`` float or None: the factor that turned diffraction into ``X``.
    - ``sample_indices``: indices into the raw data when it was subsampled, else None.
    - ``bad_pixels`` bool ``[N, N]`` or None: detector pixels that were not measured
      (True); both backends leave them out of the diffraction losses.
    """

    def __init__(
        self,
        X: np.ndarray,
        Y_I: np.ndarray,
        Y_phi: np.ndarray,
        norm_Y_I: float,
        YY_full: np.ndarray | None,
        coords_nominal: np.ndarray,
        coords_true: np.ndarray,
        nn_indices: np.ndarray,
        global_offsets: np.ndarray,
        local_offsets: np.ndarray,
        probeGuess: np.ndarray,
        *,
        X_full_norm: float | None = None,
        sample_indices: np.ndarray | None = None,
        bad_pixels: np.ndarray | None = None,
    ) -> None:
        self.X = np.asarray(X, dtype=np.float32)
        self.Y_I = np.asarray(Y_I, dtype=np.float32)
        self.Y_phi = np.asarray(Y_phi, dtype=np.float32)
        self.norm_Y_I = norm_Y_I
        self.YY_full = YY_full
        self.coords_nominal = np.asarray(coords_nominal, dtype=np.float32)
        self.coords_true = np.asarray(coords_true, dtype=np.float32)
        self.nn_indices = np.asarray(nn_indices, dtype=np.int64)
        self.global_offsets = np.asarray(global_offsets, dtype=np.float64)
        self.local_offsets = np.asarray(local_offsets, dtype=np.float64)
        self.probe = np.asarray(probeGuess, dtype=np.complex64)
        self.X_full_norm = X_full_norm
        self.sample_indices = sample_indices
        self.bad_pixels = None if bad_pixels is None else np.asarray(bad_pixels, dtype=bool)
        self._check()

    def _check(self) -> None:
        B, N, N2, C = self.X.shape
        expect = {
            "Y_I": (B, N, N, C),
            "Y_phi": (B, N, N, C),
            "coords_nominal": (B, 1, 2, C),
            "coords_true": (B, 1, 2, C),
            "local_offsets": (B, 1, 2, C),
            "global_offsets": (B, 1, 2, 1),
            "nn_indices": (B, C),
        }
        for name, shape in expect.items():
            got = getattr(self, name).shape
            if got != shape:
                raise DataContractError(
                    f"shape {got} does not match X {self.X.shape}: expected {shape}",
                    field=name,
                    fix="build the container from one generate_grouped_data result",
                )
        if N != N2 or self.probe.shape != (N, N):
            raise DataContractError(
                f"probe shape {self.probe.shape} does not match the {N}x{N2} patterns", field="probeGuess"
            )
        if self.bad_pixels is not None and self.bad_pixels.shape != (N, N):
            raise DataContractError(
                f"bad_pixels shape {self.bad_pixels.shape} does not match the {N}x{N2} patterns",
                field="bad_pixels",
                fix="pass the [N, N] detector mask of the same dataset",
            )

    @property
    def coords(self) -> np.ndarray:
        """Alias of ``coords_nominal``."""
        return self.coords_nominal

    @property
    def Y(self) -> np.ndarray:
        """Complex ground truth ``Y_I * exp(i Y_phi)``, complex64 ``[B, N, N, C]``."""
        return (self.Y_I * np.exp(1j * self.Y_phi)).astype(np.complex64)

    @property
    def gridsize(self) -> int:
        return math.isqrt(self.X.shape[-1])

    def __len__(self) -> int:
        return self.X.shape[0]

    def subset(self, indices: np.ndarray) -> PtychoDataContainer:
        """A container holding only the groups at ``indices`` (in that order)."""
        idx = np.asarray(indices)
        return PtychoDataContainer(
            self.X[idx], self.Y_I[idx], self.Y_phi[idx], self.norm_Y_I, self.YY_full,
            self.coords_nominal[idx], self.coords_true[idx], self.nn_indices[idx],
            self.global_offsets[idx], self.local_offsets[idx], self.probe,
            X_full_norm=self.X_full_norm,
            sample_indices=None if self.sample_indices is None else np.asarray(self.sample_indices)[idx],
            bad_pixels=self.bad_pixels,
        )

    def to_npz(self, path: str | PathLike) -> None:
        """Write every array attribute to an NPZ file (no pickles)."""
        extra = {} if self.bad_pixels is None else {"bad_pixels": self.bad_pixels}
        np.savez(
            path, X=self.X, Y_I=self.Y_I, Y_phi=self.Y_phi, norm_Y_I=np.float64(self.norm_Y_I),
            coords_nominal=self.coords_nominal, coords_true=self.coords_true, nn_indices=self.nn_indices,
            global_offsets=self.global_offsets, local_offsets=self.local_offsets, probe=self.probe, **extra,
        )


def norm_Y_I(X: np.ndarray, nphotons: float) -> float:
    """``sqrt(nphotons / mean_{b,c} sum_{h,w} X**2)`` (upstream ``diffsim.scale_nphotons``)."""
    energy = float(np.mean(np.sum(np.asarray(X, dtype=np.float64) ** 2, axis=(1, 2))))
    return math.sqrt(float(nphotons) / energy) if energy > 0 else math.inf


def load(
    cb: Callable[[], Any],
    probeGuess: np.ndarray,
    which: str | None = None,
    create_split: bool = False,
) -> PtychoDataContainer:
    """Turn a ``generate_grouped_data`` result into a :class:`PtychoDataContainer`.

    ``cb()`` returns the grouped dict, or ``(dict, train_fraction)`` when
    ``create_split`` is set; then ``which='train'`` keeps the first
    ``int(B * train_fraction)`` groups and ``which='test'`` the rest.
    """
    if create_split:
        dset, train_frac = cb()
        if which not in ("train", "test"):
            raise ValueError(f"which={which!r} is invalid with create_split=True: expected 'train' or 'test'")
    else:
        dset, train_frac = cb(), None
    if not isinstance(dset, Mapping):
        raise TypeError(f"the callback must return the dict of generate_grouped_data, got {type(dset).__name__}")
    for key in ("X_full", "coords_offsets", "coords_relative", "coords_start_relative", "nn_indices"):
        if key not in dset:
            raise DataContractError(
                "missing from the grouped data", field=key, fix="pass the output of RawData.generate_grouped_data"
            )
    X = np.asarray(dset["X_full"], dtype=np.float32)
    B = X.shape[0]
    sl = slice(None)
    if create_split:
        n_train = int(B * float(train_frac))
        sl = slice(0, n_train) if which == "train" else slice(n_train, None)

    Y = dset.get("Y")
    if Y is None:
        Y_I, Y_phi = np.ones_like(X), np.zeros_like(X)
    else:
        Y = np.asarray(Y)
        if Y.shape[-1] != X.shape[-1]:
            raise DataContractError(
                f"Y has {Y.shape[-1]} channels but X has {X.shape[-1]}", field="Y",
                fix="group Y and X with the same gridsize",
            )
        Y_I, Y_phi = np.abs(Y).astype(np.float32), np.angle(Y).astype(np.float32)
    Xs = X[sl]
    sample_indices = dset.get("sample_indices")
    return PtychoDataContainer(
        Xs, Y_I[sl], Y_phi[sl], norm_Y_I(Xs, params.get("nphotons")), None,
        np.asarray(dset["coords_start_relative"])[sl], np.asarray(dset["coords_start_relative"])[sl],
        np.asarray(dset["nn_indices"])[sl], np.asarray(dset["coords_offsets"])[sl],
        np.asarray(dset["coords_relative"])[sl], probeGuess,
        X_full_norm=dset.get("X_full_norm"),
        sample_indices=None if sample_indices is None else np.asarray(sample_indices)[sl],
        bad_pixels=dset.get("bad_pixels"),
    )
