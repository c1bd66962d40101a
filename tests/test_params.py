"""Tests of ptycho.params: DEFAULT_CFG, get/set, derived values, snapshot/restore."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest

from ptycho import conventions, params
from ptycho.config.config import (
    KEY_MAPPINGS,
    InferenceConfig,
    ModelConfig,
    TrainingConfig,
    dataclass_to_legacy_dict,
    update_legacy_dict,
)
from ptycho.errors import ConfigError


# --------------------------------------------------------------------------- DEFAULT_CFG
def test_default_cfg_agrees_with_the_dataclass_defaults():
    """Fails if a dataclass default changes without DEFAULT_CFG following (or the reverse)."""
    from_dataclasses = dataclass_to_legacy_dict(TrainingConfig(model=ModelConfig()))
    for key, value in from_dataclasses.items():
        if key in ("train_data_file_path", "test_data_file_path"):
            assert key not in params.DEFAULT_CFG, key
            continue
        assert key in params.DEFAULT_CFG, key
        got = params.DEFAULT_CFG[key]
        assert got == value and type(got) is type(value), key
    debug_default = {f.name: f.default for f in dataclasses.fields(InferenceConfig)}["debug"]
    assert params.DEFAULT_CFG["debug"] is debug_default


def test_default_cfg_is_dataclass_keys_plus_legacy_only_keys():
    dataclass_keys = set(dataclass_to_legacy_dict(TrainingConfig(model=ModelConfig()))) | {"debug"}
    dataclass_keys -= {"train_data_file_path", "test_data_file_path"}
    assert set(params.DEFAULT_CFG) == dataclass_keys | set(params.LEGACY_ONLY_DEFAULTS)
    assert not dataclass_keys & set(params.LEGACY_ONLY_DEFAULTS)
    assert not set(params.DEFAULT_CFG) & set(params.RUNTIME_KEYS + params.DERIVED_KEYS)
    assert not set(params.DEFAULT_CFG) & set(KEY_MAPPINGS)  # only legacy names


def test_geometry_defaults_come_from_conventions():
    assert params.DEFAULT_CFG["offset"] == conventions.OFFSET
    assert params.DEFAULT_CFG["max_position_jitter"] == conventions.MAX_POSITION_JITTER
    assert params.DEFAULT_CFG["probe_scale"] == conventions.DEFAULT_PROBE_SCALE
    assert params.DEFAULT_CFG["h5_path"] == "wts.h5"
    assert params.DEFAULT_CFG["default_probe_scale"] == 0.7


def test_default_probe_scale_matches_the_reference_default_probe():
    from ptycho.conventions import DEFAULT_PROBE_WINDOW_SCALE

    assert params.DEFAULT_CFG["default_probe_scale"] == DEFAULT_PROBE_WINDOW_SCALE


def test_every_key_is_documented():
    expected = set(params.DEFAULT_CFG) | set(params.RUNTIME_KEYS) | set(params.DERIVED_KEYS)
    expected |= {"train_data_file_path", "test_data_file_path", "model_path"}
    assert set(params.KEY_DOCS) == expected
    assert all(doc.strip() for doc in params.KEY_DOCS.values())


def test_reset_restores_defaults_in_place():
    cfg = params.cfg
    params.cfg["N"] = 256
    params.cfg["custom"] = 1
    params.reset()
    assert params.cfg is cfg
    assert params.cfg == params.DEFAULT_CFG
    assert params.cfg is not params.DEFAULT_CFG


# --------------------------------------------------------------------------- get
def test_get_reads_cfg_then_defaults_then_the_default_argument():
    params.cfg["gridsize"] = 3
    assert params.get("gridsize") == 3
    del params.cfg["gridsize"]
    assert params.get("gridsize") == params.DEFAULT_CFG["gridsize"]
    assert "gridsize" not in params.cfg  # the fallback does not write
    assert params.get("no_such_key", 5) == 5
    assert params.get("no_such_key", None) is None


def test_get_missing_key_names_it_and_lists_close_matches():
    with pytest.raises(KeyError) as info:
        params.get("gridsze")
    message = str(info.value)
    assert "'gridsze'" in message and "'gridsize'" in message
    with pytest.raises(KeyError, match="'zzzz'"):
        params.get("zzzz")


# --------------------------------------------------------------------------- derived values
@pytest.mark.parametrize("N, gridsize, bigN, padded", [
    (64, 1, 64, 74), (64, 2, 68, 78), (128, 3, 136, 146), (32, 1, 32, 42), (256, 2, 260, 270),
])
def test_derived_values(N, gridsize, bigN, padded):
    params.set("N", N)
    params.set("gridsize", gridsize)
    assert params.get_bigN() == params.get("bigN") == bigN
    assert params.get_padded_size() == params.get("padded_size") == padded
    assert params.get_padding_size() == params.get("padding_size") == padded - N
    assert params.get_padded_size() == conventions.padded_size(N, gridsize)


def test_derived_values_follow_offset_and_jitter():
    params.set("gridsize", 2)
    params.set("offset", 6)
    params.set("max_position_jitter", 0)
    assert params.get_padded_size() == 64 + 6
    assert params.get_padding_size() == 6


def test_reading_derived_values_never_writes_cfg():
    before = params.snapshot()
    params.get("bigN")
    params.get("padded_size")
    params.get_bigN()
    full = params.params()
    assert params.cfg == before
    assert "bigN" not in params.cfg and "padded_size" not in params.cfg
    assert full["bigN"] == params.get_bigN() and full["padded_size"] == params.get_padded_size()


def test_params_returns_an_independent_copy():
    params.set("probe", np.ones((64, 64, 1), np.complex64))
    full = params.params()
    full["N"] = 999
    full["probe"][0, 0, 0] = 5
    assert params.cfg["N"] == 64
    assert params.cfg["probe"][0, 0, 0] == 1


def test_derived_keys_cannot_be_set():
    with pytest.raises(ConfigError, match="bigN=80"):
        params.set("bigN", 80)


# --------------------------------------------------------------------------- set
def test_set_writes_normalised_values():
    params.set("N", np.int64(128))
    params.set("probe_scale", 2)
    params.set("output_prefix", Path("/tmp/out"))
    params.set("object.big", np.bool_(False))
    params.set("intensity_scale", np.float32(0.5))
    assert params.cfg["N"] == 128 and type(params.cfg["N"]) is int
    assert params.cfg["probe_scale"] == 2.0 and type(params.cfg["probe_scale"]) is float
    assert params.cfg["output_prefix"] == "/tmp/out"
    assert params.cfg["object.big"] is False
    assert params.cfg["intensity_scale"] == 0.5 and type(params.cfg["intensity_scale"]) is float


SET_BAD = [
    ("N", 0), ("N", 100), ("gridsize", 0), ("object.big", "yes"), ("probe.mask", 1), ("nphotons", -1.0),
    ("batch_size", 2.5), ("output_prefix", None), ("model_path", 3), ("backend", "jax"),
    ("amp_activation", "tanh"), ("n_groups", 0), ("offset", -1), ("max_position_jitter", 1.5),
    ("default_probe_scale", 0), ("sim_jitter_scale", -0.1), ("tv_weight", float("nan")),
    ("data_source", "mnist"), ("h5_path", ""), ("outer_offset_train", 0), ("outer_offset_test", -2),
    ("big_gridsize", 0), ("nimgs_train", 0), ("nimgs_test", "3"), ("size", 0), ("set_phi", "no"),
    ("label", 5), ("npseed", -1), ("intensity_scale", 0.0), ("probe", np.ones((4, 4, 1))),
    ("probe", np.ones((4, 5, 1), np.complex64)), ("probe", np.ones((4, 4), np.complex64)),
    ("probe", [[1j]]),
]


@pytest.mark.parametrize("key, value", SET_BAD, ids=[f"{k}-{i}" for i, (k, _) in enumerate(SET_BAD)])
def test_set_rejects_invalid_values_and_leaves_cfg_unchanged(key, value):
    before = params.snapshot()
    with pytest.raises(ConfigError) as info:
        params.set(key, value)
    assert info.value.field == key
    assert str(info.value).startswith(f"{key}=")
    assert info.value.allowed in str(info.value)
    assert params.cfg == before


def test_every_legacy_only_and_runtime_key_is_validated_by_set():
    bad_keys = {k for k, _ in SET_BAD}
    assert set(params.LEGACY_ONLY_DEFAULTS) <= bad_keys
    assert set(params.RUNTIME_KEYS) <= bad_keys


def test_set_accepts_every_default_value():
    for key, value in params.DEFAULT_CFG.items():
        params.set(key, value)
    assert params.cfg == params.DEFAULT_CFG


def test_set_unknown_key_is_written_as_given():
    params.set("timestamp", "2024-01-01")
    assert params.cfg["timestamp"] == "2024-01-01"


def test_set_probe_accepts_complex_n_n_1():
    probe = np.ones((32, 32, 1), np.complex64)
    params.set("probe", probe)
    assert params.get("probe") is probe


def test_validate_finds_invalid_direct_writes():
    params.validate()
    params.cfg["data_source"] = "mnist"
    with pytest.raises(ConfigError, match="data_source='mnist'"):
        params.validate()


# --------------------------------------------------------------------------- snapshot / restore / isolated
def test_snapshot_is_deep_and_restore_is_in_place():
    params.set("probe", np.ones((8, 8, 1), np.complex64))
    snap = params.snapshot()
    cfg = params.cfg
    params.cfg["probe"][0, 0, 0] = 3
    params.set("N", 256)
    params.cfg["extra"] = 1
    assert snap["probe"][0, 0, 0] == 1 and snap["N"] == 64
    params.restore(snap)
    assert params.cfg is cfg
    assert params.cfg["N"] == 64 and "extra" not in params.cfg
    assert params.cfg["probe"][0, 0, 0] == 1
    params.cfg["probe"][0, 0, 0] = 7
    assert snap["probe"][0, 0, 0] == 1  # restore copied, the snapshot stays intact


def test_snapshot_pickles():
    params.set("probe", np.ones((8, 8, 1), np.complex64))
    snap = pickle.loads(pickle.dumps(params.snapshot()))
    assert snap.keys() == params.cfg.keys()


def test_restore_rejects_non_mappings():
    with pytest.raises(TypeError):
        params.restore([("N", 64)])


def test_isolated_undoes_changes_even_on_error():
    cfg = params.cfg
    with params.isolated() as inside:
        assert inside is cfg
        update_legacy_dict(params.cfg, TrainingConfig(model=ModelConfig(N=128, gridsize=2)))
        assert params.get("N") == 128
    assert params.cfg["N"] == 64 and params.cfg["gridsize"] == 1
    with pytest.raises(RuntimeError), params.isolated():
        params.set("N", 256)
        raise RuntimeError("boom")
    assert params.cfg["N"] == 64
    assert params.cfg is cfg


def test_update_legacy_dict_then_derived_padded_size():
    update_legacy_dict(params.cfg, TrainingConfig(model=ModelConfig(N=64, gridsize=2)))
    assert params.get_padded_size() == 78
    update_legacy_dict(params.cfg, InferenceConfig(model=ModelConfig(N=128), model_path=Path("m"),
                                                   test_data_file=Path("t.npz")))
    assert params.get_padded_size() == 138
