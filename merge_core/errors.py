"""One exception type for every problem a user can fix.

Nodes and the CLI catch `MergeError` and show its text as is, so the text must name the input and the
reason in words a user understands; it never leaks a torch traceback.
"""
import difflib


class MergeError(ValueError):
    """A merge cannot run as asked. `where` names the input (recipe field, node input, file)."""

    def __init__(self, where: str, reason: str):
        self.where = where
        self.reason = reason
        super().__init__(f"{where}: {reason}" if where else reason)

    def at(self, prefix: str) -> "MergeError":
        """The same error, located one level further out (e.g. a node name in front of an input)."""
        return MergeError(f"{prefix} {self.where}".strip(), self.reason)


class MergeInterrupted(Exception):
    """The user asked to stop. Raised between keys; no partial output is left behind."""


def suggest(value: str, choices, listing: str = "Choices", shown: int = 30) -> str:
    """What follows "unknown X 'value'" in a message: the closest matches first (a typo is the usual cause),
    then the choices themselves, the first `shown` of a long list."""
    choices = list(choices)
    if not choices:
        return "; there are none to choose from"
    close = difflib.get_close_matches(value, choices, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else "."
    listed = ", ".join(choices[:shown]) + (f", … ({len(choices)} in all)" if len(choices) > shown else "")
    return f"{hint} {listing}: {listed}"
