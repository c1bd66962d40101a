"""Building blocks of the deterministic simulator; :mod:`ptycho.simulate` assembles them.

========================  ==========================================================
module                    job
========================  ==========================================================
``rng``                   named, independent random sub-streams from one seed
``objects``               synthetic complex objects ('lines', 'grf')
``probe``                 focused circular aperture with defocus
``scan``                  random and raster scan positions
``diffraction``           forward model, photon scaling and Poisson noise
========================  ==========================================================

NumPy and SciPy only (no TensorFlow, no PyTorch).  ``specs/simulator.md`` is the
prose specification.
"""

from ptycho.simulation.diffraction import DiffractionResult, simulate_diffraction
from ptycho.simulation.objects import OBJECT_KINDS, gaussian_random_field, lines_image, make_object
from ptycho.simulation.probe import default_defocus, make_probe
from ptycho.simulation.rng import STREAM_KEYS, substream
from ptycho.simulation.scan import SCAN_KINDS, make_scan, scan_window

__all__ = [
    "OBJECT_KINDS",
    "SCAN_KINDS",
    "STREAM_KEYS",
    "DiffractionResult",
    "default_defocus",
    "gaussian_random_field",
    "lines_image",
    "make_object",
    "make_probe",
    "make_scan",
    "scan_window",
    "simulate_diffraction",
    "substream",
]
