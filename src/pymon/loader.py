"""From a config file to a running config: YAML or a mon.cf (converted in memory), read
in a forked child, with the plugins it names. Above both `model` and `mon`, so that
neither has to know the other."""

from __future__ import annotations

import asyncio
import os

from pymon.engine import plugin_loading
from pymon.engine.plugin_loading import Plugins
from pymon.model import forked
from pymon.model.config import Config, ConfigError, PluginsFor, parse_config, read_source


def load_config(path: str | os.PathLike[str], *, plugins: PluginsFor | None = None) -> Config:
    file = str(path)
    text = read_source(file, f"{file}:1:1")
    from pymon.mon import moncf  # here, in the forked child (load_all): the daemon need not hold it and PyYAML

    if moncf.is_moncf(file, text):  # a mon.cf (by name or content) is converted in memory: see moncf.py
        return moncf.load(text, file, plugins=plugins)
    if not any(ln.strip() and not ln.lstrip().startswith("#") for ln in text.splitlines()):
        # a file caught mid-write (truncated, not yet filled) would stop every check
        raise ConfigError([f"{file}:1:1: config is empty: nothing to monitor"])
    return parse_config(text, file, plugins=plugins)


def load_all(path: str) -> tuple[Config, Plugins]:
    """Config and plugins together: the plugin dirs come from the config, and the
    config's monitor/alert names are only valid once the plugins are known. The file is
    read and checked in a forked child (forked.py: the heap that reading leaves behind
    stays there); the plugins it named are then loaded here, where they run."""
    try:
        cfg = forked.call(_checked_config, path)
    except forked.ChildDied as e:
        raise ConfigError([f"{path}:1:1: cannot read config: {e}"]) from None
    return cfg, _plugins(cfg)


async def load_all_async(path: str) -> tuple[Config, Plugins]:
    """`load_all` for a reload in the running daemon: the child is forked from the loop's
    thread, and the plugins are imported in an executor thread, off the loop."""
    try:
        cfg = await forked.call_async(_checked_config, path)
    except forked.ChildDied as e:
        raise ConfigError([f"{path}:1:1: cannot read config: {e}"]) from None
    return cfg, await asyncio.get_running_loop().run_in_executor(None, _plugins, cfg)


def _plugins(cfg: Config) -> Plugins:
    found = plugin_loading.load(cfg.mondir, cfg.alertdir)
    if found.errors:  # a plugin file that changed between the two reads
        raise ConfigError(found.errors)
    return found


def _checked_config(path: str) -> Config:
    loading = plugin_loading.Loading()
    try:
        cfg = load_config(path, plugins=loading)
    except ConfigError as e:
        raise ConfigError(loading.errors + e.problems) from None
    if loading.errors:
        raise ConfigError(loading.errors)
    return cfg
