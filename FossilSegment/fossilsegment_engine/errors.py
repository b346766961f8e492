"""Error types. Every user-facing failure is a :class:`FossilSegmentError` with one clear message."""


class FossilSegmentError(Exception):
    """A problem the user can fix (bad input, missing file, unknown model...). The CLI prints it and exits 2."""


class InputError(FossilSegmentError):
    """An input volume/label/folder is missing, unreadable, or not a usable 3D scalar image."""


class ModelError(FossilSegmentError):
    """A model name or folder is unknown, incomplete, or its weights do not match its config."""


class OutputError(FossilSegmentError):
    """An output cannot be written (exists without --force, folder not writable...)."""


class Cancelled(Exception):
    """Raised inside a long operation when its cancel token is set. Not an error: nothing was written."""


class DeviceError(FossilSegmentError):
    """A requested device or precision is unknown or not available on this computer."""
