"""The one exception type for mistakes a user can fix."""


class AttnxferError(ValueError):
    """A user error: the message says what was wrong and what to do about it.

    Library code raises this instead of letting a deep torch or timm traceback escape; the CLI
    prints its message on one line and exits with status 2.
    """
