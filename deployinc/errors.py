"""One exception hierarchy for deployinc.

Every error carries a message that names the offending value and a hint that says how to go on. The CLI prints
``error: <message>`` and ``hint: <hint>`` on stderr, without a traceback, and exits with :attr:`exit_code`
(2 for bad input, 1 for a failed check). Any other exception that reaches the CLI is a bug and is reported as one.
"""

from __future__ import annotations


class DeployincError(Exception):
    """Base class: an expected failure with a one-line message and a hint."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # keep the hint when errors cross a process boundary (crash isolation)
        return (type(self), (self.message, self.hint))


class BadInputError(DeployincError):
    """The user gave something deployinc cannot use: a path, a name, a flag value, a file's content."""


class ModelSpecError(BadInputError):
    """A model name or ``module:function`` factory that cannot be resolved."""


class UntrustedCodeError(ModelSpecError):
    """A file names Python code (a ``module:function`` model spec) that the user did not confirm."""


class WeightsError(BadInputError):
    """A weights file that is missing, corrupt, unsafe, or does not fit the model."""


class ConfigError(BadInputError):
    """An export config file with a missing, unknown or ill-typed key."""


class OnnxFileError(BadInputError):
    """An ONNX file that cannot be read safely (empty, truncated, not protobuf, unsafe external data...)."""


class OutputExistsError(BadInputError):
    """An output path exists and ``--force`` was not given."""


class ExportError(DeployincError):
    """The exporter failed on a model; the message says which stage."""


class BackendUnavailable(DeployincError):
    """A runner cannot run here (no GPU, provider or library missing). Reported as *skipped*, never as a result."""


class BackendCrashed(DeployincError):
    """A backend running in an isolated subprocess crashed (a signal, a native abort) or hung past its timeout."""

    exit_code = 1


class CheckFailed(DeployincError):
    """A parity or regression check ran and failed."""

    exit_code = 1


class IncompleteRun(DeployincError):
    """What ran passed, but backends the user asked for could not run (``--allow-skip`` accepts that)."""

    exit_code = 3
