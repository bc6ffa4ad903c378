"""Exceptions that carry a message a user can act on."""


class QInsightError(Exception):
    """Base class for every error qinsight raises on purpose."""


class ModelLoadError(QInsightError):
    """The checkpoint could not be found, downloaded, validated or loaded; the message says what to do."""


class ImageInputError(QInsightError):
    """One input image is unusable; the judge records it on that item and carries on with the batch."""


class MissingDependencyError(QInsightError, ImportError):
    """An optional extra that this feature needs is not installed; the message says which."""


class UsageError(QInsightError, ValueError):
    """An argument outside what it allows (a batch size of 0, an unknown strategy); the message names it.

    A ``ValueError`` too, so code that caught ``ValueError`` keeps working; the command line maps it to
    exit code 2, unlike a ``ValueError`` from a bug, which it lets surface with its traceback.
    """
