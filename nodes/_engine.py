"""The engine, imported relatively inside the pack (ComfyUI imports it under its own module name) and
absolutely when the repository root is on sys.path (tests, tools)."""
try:
    from .. import merge_core  # noqa: F401
except ImportError:  # nodes/ imported as a top-level package
    import merge_core  # noqa: F401
