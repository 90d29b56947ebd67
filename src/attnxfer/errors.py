"""The exceptions the command line turns into one line instead of a traceback."""


class AttnxferError(ValueError):
    """A user error: the message says what was wrong and what to do about it.

    Library code raises this instead of letting a deep torch or timm traceback escape; the CLI
    prints its message on one line and exits with status 2.
    """


class Stopped(Exception):
    """Training was asked to stop by a signal (SIGTERM, or SIGINT: Ctrl-C) and did, after saving
    a checkpoint of the step it had reached; the same command with ``--resume auto`` continues
    from there. The CLI prints the message and exits with status 128 + ``signum``, as the
    signal's default would."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
