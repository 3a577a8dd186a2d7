"""Built-in alerts; each module registers itself on import."""

from . import log  # noqa: F401
