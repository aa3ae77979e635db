"""Error types. Every user-facing failure is one of these, with a one-line message saying what was wrong and what is allowed."""


class PhysvidError(Exception):
    """Base class: the CLI prints `error: <message>` and exits 1 (runtime) or 2 (usage)."""

    exit_code = 1


class ConfigError(PhysvidError, ValueError):
    """A configuration value is out of range or of the wrong type (usage error, exit code 2)."""

    exit_code = 2


class DigitsError(PhysvidError):
    """The MNIST idx file is missing or corrupt."""

    exit_code = 2


class DatasetError(PhysvidError):
    """A dataset on disk is missing, incomplete, corrupt or does not match the request."""


class NotADatasetError(DatasetError):
    """The path given is not a physvid dataset at all (a missing or empty folder): a usage error, exit code 2."""

    exit_code = 2
