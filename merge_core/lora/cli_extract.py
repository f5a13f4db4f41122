"""LoRA sub-commands (filled in by the feature that owns them)."""


def add_parsers(actions) -> None:
    """Add this module's `lora <action>` parsers to `actions`."""
