"""Errors PRO raises for bad input. Each message names the file, line or field and how to fix it."""


class ProError(Exception):
    """Base class of PRO's user-facing errors (the CLI prints them without a traceback)."""


class ConfigError(ProError, ValueError):
    """A bad config value, flag or YAML key."""


class DataError(ProError, ValueError):
    """A malformed data file or record."""


class CheckpointError(ProError, FileNotFoundError):
    """A missing or corrupt model folder / checkpoint."""


class TrackingUnavailable(ProError, ConnectionError):
    """The MLflow tracking server does not answer (the message names the URI and how to check it)."""


class ObjectiveMismatchError(ConfigError):
    """Two artifacts disagree on the objectives (their names, number or order); see
    :func:`pro_lib.targets.check_objectives`."""


class ManifestError(CheckpointError):
    """A missing or invalid artifact manifest (``pro_lib.artifacts``): the message names the file, the
    field and how to re-create it."""
