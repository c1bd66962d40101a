"""python -m ptycho_torch.inference: outputs, gridsize from the bundle, readable errors."""

from __future__ import annotations

import numpy as np
import pytest

from ptycho.bundle import write_bundle
from ptycho_torch import inference as infer_cli

pytestmark = pytest.mark.torch


class TestInferenceCLI:
    def test_writes_stitched_amplitude_and_phase(self, trained_gs2, sim_npz, tmp_path, capsys):
        bundle_dir, _results, _ = trained_gs2
        out = tmp_path / "infer"
        rc = infer_cli.cli_main(["--model_path", str(bundle_dir), "--test_data", str(sim_npz), "--output_dir",
                                 str(out), "--n_groups", "12", "--accelerator", "cpu", "--batch_size", "5"])
        assert rc == 0, capsys.readouterr().err
        with np.load(out / "reconstruction.npz") as npz:
            amp, phase, obj = npz["amplitude"], npz["phase"], npz["object"]
            assert int(npz["n_groups"]) == 12
        assert amp.ndim == 2 and amp.shape == phase.shape == obj.shape and obj.dtype == np.complex64
        assert np.all(np.isfinite(amp)) and amp.max() > 0
        np.testing.assert_allclose(np.abs(obj), amp, rtol=1e-6)
        assert (out / "amplitude.png").stat().st_size > 0 and (out / "phase.png").stat().st_size > 0
        assert "reconstructed 12 group(s)" in capsys.readouterr().out

    def test_n_images_alias_and_quiet(self, trained_gs2, sim_npz, tmp_path, capsys):
        bundle_dir, _results, _ = trained_gs2
        with pytest.warns(DeprecationWarning, match="--n_images"):
            rc = infer_cli.cli_main(["--model_path", str(bundle_dir), "--test_data", str(sim_npz), "--output_dir",
                                     str(tmp_path), "--n_images", "8", "--quiet"])
        assert rc == 0 and capsys.readouterr().out == ""

    def test_missing_files_print_readable_errors(self, trained_gs2, sim_npz, tmp_path, capsys):
        bundle_dir, _results, _ = trained_gs2
        assert infer_cli.cli_main(["--model_path", str(tmp_path / "nope"), "--test_data", str(sim_npz),
                                   "--output_dir", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and "nope" in err and "Traceback" not in err
        assert infer_cli.cli_main(["--model_path", str(bundle_dir), "--test_data", str(tmp_path / "x.npz"),
                                   "--output_dir", str(tmp_path / "o")]) == 2
        assert "x.npz" in capsys.readouterr().err

    def test_tensorflow_bundle_prints_a_readable_error(self, sim_npz, tmp_path, capsys):
        (tmp_path / "tf").mkdir()
        write_bundle(
            tmp_path / "tf",
            backend="tensorflow",
            model_payloads={"autoencoder": {"model.keras": b"k"}, "diffraction_to_obj": {"model.keras": b"k"}},
            params_snapshot={"N": 32},
            canonical_weights=b"not used",
            network={"N": 32, "gridsize": 1, "n_filters_scale": 1, "object_big": True, "probe_big": True,
                     "pad_object": True, "amp_activation": "sigmoid"},
            physics={"canvas_size": 42, "probe_mask": False, "gaussian_smoothing_sigma": 0.0},
            intensity_scale=1.0,
            framework={"tensorflow": "2"},
        )
        rc = infer_cli.cli_main(["--model_path", str(tmp_path / "tf"), "--test_data", str(sim_npz),
                                 "--output_dir", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert rc == 2 and "tensorflow" in err and "pytorch" in err and "Traceback" not in err

    def test_bad_flag_value(self, capsys):
        with pytest.raises(SystemExit) as exc:
            infer_cli.cli_main(["--model_path", "a", "--test_data", "b", "--output_dir", "c", "--precision", "8"])
        assert exc.value.code == 2


def test_unified_inference_cli_reads_the_backend_from_the_bundle(trained_gs2, sim_npz, tmp_path, capsys):
    """``ptycho_inference`` without ``--backend`` on a torch bundle: the manifest's backend is used."""
    from ptycho.cli import inference as unified

    bundle_dir, _results, _ = trained_gs2
    rc = unified.main(["--model_path", str(bundle_dir), "--test_data", str(sim_npz), "--output_dir",
                       str(tmp_path), "--n_groups", "8", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "reconstruction.npz").is_file()


def test_streamed_inference_cli_equals_in_memory(trained_gs2, sim_npz, tmp_path, capsys):
    """``--stream`` on both inference CLIs (gridsize 2): the reconstruction of the in-memory path."""
    from ptycho.cli import inference as unified

    bundle_dir, _results, _ = trained_gs2
    common = ["--model_path", str(bundle_dir), "--test_data", str(sim_npz), "--n_groups", "12", "--quiet"]
    runs = {
        "memory": (infer_cli.cli_main, ["--accelerator", "cpu"]),
        "stream": (infer_cli.cli_main, ["--accelerator", "cpu", "--stream"]),
        "unified_stream": (unified.main, ["--stream"]),
    }
    for name, (main, extra) in runs.items():
        assert main([*common, "--output_dir", str(tmp_path / name), *extra]) == 0, capsys.readouterr().err
    with np.load(tmp_path / "memory" / "reconstruction.npz") as npz:
        want = npz["object"]
    with np.load(tmp_path / "stream" / "reconstruction.npz") as npz:
        np.testing.assert_allclose(npz["object"], want, rtol=1e-4, atol=1e-5)
    with np.load(tmp_path / "unified_stream" / "reconstruction.npz") as npz:
        assert npz["object"].shape[0] > 0 and np.all(np.isfinite(npz["object"]))
