"""upgrader: safe upgrade and patch orchestration for enterprise middleware."""

__version__ = "0.1.0"
