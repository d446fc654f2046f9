"""One exception type for bad input: the CLI prints its message as one line, never a traceback."""


class BeftError(Exception):
    """Bad input or an impossible request. The message names what is wrong and what is valid."""


def choices_error(what: str, value, valid) -> BeftError:
    """The standard 'unknown X' error, listing the valid choices."""
    return BeftError(f"unknown {what} {value!r}; valid: {', '.join(map(str, valid))}")
