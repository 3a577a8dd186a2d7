"""From a config file to a running config: YAML or a mon.cf (converted in memory), read
in a forked child, with the plugins it names. Above both `model` and `mon`, so that
neither has to know the other."""

from __future__ import annotations

import asyncio
import os

from pymon.engine import plugin_loading
from pymon.engine.plugin_loading import Plugins
from pymon.model import config, forked
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


CONFIG_TIMEOUT_S = 60.0  # reading a config at start or by check-config; at reload: globals.config_timeout


def load_all(path: str) -> tuple[Config, Plugins]:
    """Config and plugins together: the plugin dirs come from the config, and the
    config's monitor/alert names are only valid once the plugins are known. The file is
    read and checked in a forked child (forked.py: the heap that reading leaves behind
    stays there), killed past its timeout (a plugin that hangs at import, a file that
    never ends); the plugins it named are then loaded here, where they run."""
    try:
        cfg = forked.call(_checked_config, path, False, timeout=CONFIG_TIMEOUT_S)
    except forked.ChildDied as e:
        raise _unreadable(path, e, CONFIG_TIMEOUT_S) from None
    return cfg, _plugins(cfg)


async def load_all_async(path: str, running: Config) -> tuple[Config, Plugins]:
    """`load_all` for a reload in the running daemon: the child is forked from the loop's
    thread, takes the file only once it rests (config.SETTLE_S: a file being rewritten
    in place is not taken half-written) and is killed past `running.config_timeout`; the
    plugins are imported in an executor thread, off the loop. A config without services
    is refused while the running one has some (a file caught mid-write)."""
    try:
        cfg = await forked.call_async(_checked_config, path, True, timeout=running.config_timeout)
    except forked.ChildDied as e:
        raise _unreadable(path, e, running.config_timeout) from None
    if not cfg.services and running.services:
        raise ConfigError([f"{path}:1:1: the new config has no services, the running one has "
                           f"{len(running.services)}: refusing (a file caught mid-write?); stop the "
                           "daemon to monitor nothing"])
    return cfg, await asyncio.get_running_loop().run_in_executor(None, _plugins, cfg)


def _unreadable(path: str, e: forked.ChildDied, timeout: float) -> ConfigError:
    if isinstance(e, forked.TimedOut):
        return ConfigError([f"{path}:1:1: reading the config and importing its plugins took more than "
                            f"{timeout:g}s; killed (a plugin that hangs at import?)"])
    return ConfigError([f"{path}:1:1: cannot read config: {e}"])


def _plugins(cfg: Config) -> Plugins:
    found = plugin_loading.load(cfg.mondir, cfg.alertdir)
    if found.errors:  # a plugin file that changed between the two reads
        raise ConfigError(found.errors)
    return found


def _checked_config(path: str, settle: bool) -> Config:
    config.settle = settle  # in the forked child only
    loading = plugin_loading.Loading()
    try:
        cfg = load_config(path, plugins=loading)
    except ConfigError as e:
        raise ConfigError(loading.errors + e.problems) from None
    if loading.errors:
        raise ConfigError(loading.errors)
    return cfg
