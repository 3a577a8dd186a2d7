"""Finding monitors and alerts: built-ins, drop-in `*.py` files, legacy executables.

Lookup order for a name: an executable of that name in the drop-in dirs (an
operator's own script always wins), then a registered plugin (built-in or drop-in
`*.py`). A broken drop-in is reported as `FILE:LINE: msg` and never takes the
daemon down; world-writable dirs or files are refused, since anything there runs
with the daemon's privileges.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import stat
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymon import plugin
from pymon.plugin import Alert, Monitor, Registry, param_problems

_seq = itertools.count()


@dataclass
class Plugins:
    registry: Registry
    mondirs: list[Path]
    alertdirs: list[Path]
    errors: list[str] = field(default_factory=list)
    _monitors: dict[str, Path | Monitor | None] = field(default_factory=dict, repr=False, compare=False)

    def executable(self, name: str, dirs: list[Path]) -> Path | None:
        if "/" in name:
            return None
        for d in dirs:
            p = d / name
            if p.is_file() and os.access(p, os.X_OK) and not _world_writable(p):
                return p
        return None

    def monitor(self, name: str) -> Path | Monitor | None:
        """`http.monitor` with no such script falls back to the native `http`,
        which takes mon's options as `argv`. Looked up once per name (every check asks):
        like mon, a script added to the mondir is found at the next reload."""
        if name in self._monitors:
            return self._monitors[name]
        found = self.executable(name, self.mondirs) or self.registry.monitors.get(name)
        if found is None and name.endswith(".monitor"):
            found = self.registry.monitors.get(name.removesuffix(".monitor"))
        self._monitors[name] = found
        return found

    def problems(self, kind: str, name: str, params: dict[str, Any]) -> list[str]:
        """Param problems a native plugin can tell at load time (legacy scripts: none)."""
        found = self.monitor(name) if kind == "monitor" else self.alert(name)
        if not isinstance(found, (Monitor, Alert)):
            return []
        from pymon.alerts import PARAM_VALIDATORS as ALERT_VALIDATORS
        from pymon.probes import PARAM_VALIDATORS as PROBE_VALIDATORS

        return param_problems(found, params, PROBE_VALIDATORS if kind == "monitor" else ALERT_VALIDATORS)

    def alert(self, name: str) -> Path | Alert | None:
        """`lvs.alert`/`ipvs.alert` with no such script means the built-in `lvs`."""
        found = self.executable(name, self.alertdirs) or self.registry.alerts.get(name)
        if found is None and name in ("lvs.alert", "ipvs.alert"):
            found = self.registry.alerts.get("lvs")
        elif found is None and name.endswith(".alert"):
            found = self.registry.alerts.get(name.removesuffix(".alert"))
        return found


def builtins() -> Registry:
    """The built-in probes and alerts register themselves when first imported."""
    importlib.import_module("pymon.probes")
    importlib.import_module("pymon.alerts")
    return plugin.current


class Loading:
    """config.PluginsFor: loads the plugins from the dirs a config names while the config
    is built, so the builder can check plugin names and params in the same pass."""

    def __init__(self) -> None:
        self.found: Plugins | None = None

    def __call__(self, mondirs: list[Path], alertdirs: list[Path]) -> Plugins:
        self.found = load(mondirs, alertdirs)
        return self.found

    @property
    def errors(self) -> list[str]:
        return self.found.errors if self.found is not None else []


def load(mondirs: list[Path], alertdirs: list[Path]) -> Plugins:
    base = builtins()
    fresh = base.copy()
    errors: list[str] = []
    saved, plugin.current = plugin.current, fresh
    try:
        for d in dict.fromkeys(mondirs + alertdirs):
            errors += _load_dir(d)
    finally:
        plugin.current = saved
    return Plugins(fresh, mondirs, alertdirs, errors)


def _world_writable(p: Path) -> bool:
    return _unsafe(p) is not None


def _unsafe(p: Path) -> str | None:
    """Why code at `p` could be replaced by any local user, or None. The symlink's
    target is what runs, so it is the target that is checked (symlinks are followed),
    and with it every directory above it: one that is world-writable lets anyone rename
    the file away and put their own in its place, unless it is sticky (/tmp: only the
    file's owner may rename or delete it). Owners are not checked: pymon's own user
    owning its plugins is the common, safe case."""
    try:
        real = Path(os.path.realpath(p))
        st = real.stat()
    except (OSError, ValueError):
        return None  # gone: the caller's own checks say so
    if st.st_mode & stat.S_IWOTH and not (stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX):
        return f"{real} is world-writable" if real == p.absolute() else f"{p} -> {real} is world-writable"
    for parent in real.parents:
        try:
            mode = parent.stat().st_mode
        except OSError:
            continue
        if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
            return f"{parent} (above {real}) is world-writable without the sticky bit"
    return None


def _load_dir(d: Path) -> list[str]:
    if not d.is_dir():
        return []
    why = _unsafe(d)
    if why:
        return [f"{d}:0: plugin directory is world-writable ({why}); refusing to load anything from it (chmod o-w)"]
    errors = []
    for f in sorted(d.glob("*.py")):
        why = _unsafe(f)
        if why:
            errors.append(f"{f}:0: plugin file is world-writable ({why}); refusing to load it (chmod o-w)")
            continue
        err = _import(f)
        if err:
            errors.append(err)
    for f in sorted(d.iterdir()):  # legacy scripts: skipped by executable(), so say why here
        if f.suffix != ".py" and f.is_file() and os.access(f, os.X_OK):
            why = _unsafe(f)
            if why:
                errors.append(f"{f}:0: script is world-writable ({why}); refusing to run it (chmod o-w)")
    return errors


def _import(f: Path) -> str | None:
    name = f"pymon_dropin_{f.stem}_{next(_seq)}"
    spec = importlib.util.spec_from_file_location(name, f)
    if spec is None or spec.loader is None:
        return f"{f}:0: cannot load as a Python module"
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except plugin.PluginError as e:
        return str(e)
    except SyntaxError as e:
        return f"{f}:{e.lineno or 0}: syntax error: {e.msg}"
    except BaseException as e:  # noqa: BLE001 - anything a plugin throws is its error, not ours
        if isinstance(e, (KeyboardInterrupt,)):
            raise
        line = next((fr.lineno for fr in reversed(traceback.extract_tb(e.__traceback__))
                     if fr.filename == str(f)), 0)
        return f"{f}:{line}: cannot load plugin: {type(e).__name__}: {e}"
    finally:
        sys.modules.pop(name, None)
    return None
