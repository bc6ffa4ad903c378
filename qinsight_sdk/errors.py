"""Exceptions that carry a message a user can act on."""


class QInsightError(Exception):
    """Base class for every error qinsight raises on purpose."""


class ModelLoadError(QInsightError):
    """The checkpoint could not be found, downloaded, validated or loaded; the message says what to do."""


class ImageInputError(QInsightError):
    """One input image is unusable; the judge records it on that item and carries on with the batch."""


class MissingDependencyError(QInsightError, ImportError):
    """An optional extra that this feature needs is not installed; the message says which."""
