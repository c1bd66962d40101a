"""Exception types that say what is wrong, where, and how to fix it.

Every error raised for bad user input names the file (when there is one), the
field, what was found, and the fix.  Each class also derives from the built-in
exception a caller would naturally catch (``ValueError``, ``FileNotFoundError``),
so code written against upstream PtychoPINN keeps working.
"""

from __future__ import annotations

from os import PathLike
from typing import Any


class PtychoError(Exception):
    """Base class of every error ptychopinn raises on purpose."""


def _compose(message: str, file: str | PathLike | None, field: str | None, fix: str | None) -> str:
    where = []
    if file is not None:
        where.append(str(file))
    if field is not None:
        where.append(f"field '{field}'")
    text = (": ".join(where) + ": " if where else "") + message
    if fix:
        text += f". Fix: {fix}"
    return text


class LocatedError(PtychoError, ValueError):
    """Base of the errors that point at a place: ``file``, ``field`` and the ``fix``."""

    def __init__(
        self,
        message: str,
        *,
        file: str | PathLike | None = None,
        field: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.file = None if file is None else str(file)
        self.field = field
        self.fix = fix
        super().__init__(_compose(message, file, field, fix))


class DataContractError(LocatedError):
    """Input data (an NPZ file or arrays) violates the data contract in ``specs/data.md``."""


class ConfigError(PtychoError, ValueError):
    """A configuration value is outside what the field allows (``specs/config.md``)."""

    def __init__(self, field: str, value: Any, allowed: str, *, fix: str | None = None) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        msg = f"{field}={value!r} is invalid: expected {allowed}"
        if fix:
            msg += f". Fix: {fix}"
        super().__init__(msg)


class BundleError(PtychoError, ValueError):
    """A ``wts.h5.zip`` model bundle cannot be loaded (``specs/bundle.md``).

    ``member`` names the archive member at fault (``'params.json'``, ``'autoencoder/model.keras'``)
    and ``field`` the value inside it (a JSON path such as ``network.n_filters_scale``, an HDF5
    dataset name); the message reads ``<file>: member '<member>': field '<field>': <what>. Fix: ...``.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | PathLike | None = None,
        fix: str | None = None,
        member: str | None = None,
        field: str | None = None,
    ) -> None:
        self.file = None if file is None else str(file)
        self.fix = fix
        self.member = member
        self.field = field
        if member is not None:
            message = f"member '{member}': " + (f"field '{field}': " if field is not None else "") + message
        elif field is not None:
            message = f"field '{field}': {message}"
        super().__init__(_compose(message, file, None, fix))


class BundleFormatError(BundleError):
    """The archive is truncated, not a zip, misses a member, or has a malformed manifest."""


class BundleBackendMismatchError(BundleError):
    """The bundle was written by the other backend than the loader that was called."""


class BundleVersionError(BundleError):
    """The bundle's format version is newer than this code understands."""


class UnsafeBundleError(BundleError):
    """The archive holds something that loading would have to execute or that escapes its directory."""


class BundleSchemaError(BundleFormatError):
    """A value in ``manifest.json`` or ``params.json`` has the wrong type, is outside its allowed
    values or bounds, or the JSON nests too deeply (``ptycho.bundle_schema``)."""


class BundleInconsistentError(BundleFormatError):
    """Members of the bundle contradict each other (manifest vs params.json, vs the canonical
    weights, or a model stored under the wrong role)."""


class BundleTooLargeError(UnsafeBundleError):
    """A member is, or inflates to, more bytes than the manifest declares or the format allows."""


class BackendUnavailableError(PtychoError, RuntimeError):
    """The selected backend's framework is not installed."""


class CanonicalWeightsError(LocatedError):
    """A canonical weight file or weight dict does not match its network spec (``specs/canonical-weights.md``).

    ``field`` names the offending parameter (canonical name) or file attribute.
    """
