"""Built-in alerts; each module registers itself on import."""

from . import log, lvs  # noqa: F401
