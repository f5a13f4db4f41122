"""One exception type for every problem a user can fix.

Nodes and the CLI catch `MergeError` and show its text as is, so the text must name the input and the
reason in words a user understands; it never leaks a torch traceback.
"""


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
