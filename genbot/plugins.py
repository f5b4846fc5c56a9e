"""Plugin discovery: bundled folders under ``plugins_dir`` and ``genbot`` entry points.

* A bundled plugin is a sub-folder of ``plugins_dir`` holding ``plugin.toml`` (a model folder)
  and/or ``plugin.py``. A folder without code is registered through :class:`FolderGenerator`, a
  built-in plugin that offers the folder as a generator, so built-ins use the same hooks as
  everyone else. A folder with ``plugin.py`` is that module's to register (it knows its own folder
  from ``__file__`` and may pass a custom loader).
* A third-party package lists a module under ``[project.entry-points.genbot]``.
* ``plugins_enabled`` (``GENBOT_PLUGINS``) names the plugins to load: folder names and entry-point
  names. Unset loads all.
* Where each hook is called: ``register_generators`` by the registry (every front end),
  ``register_routes`` by the API app (:func:`add_routes`), ``register_cogs`` by the Discord bot,
  ``register_commands`` by the ``genbot`` CLI (:func:`add_commands`).

Nothing a plugin does can stop start-up: an import error, a hook that raises or a name clash is
logged with the reason, recorded in :attr:`LoadedPlugins.failures`, and the rest load. A plugin
whose hook raised is unregistered, so none of its other hooks is called after that.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from genbot import hookspecs
from genbot.config import Settings
from genbot.errors import GenbotError
from genbot.hookspecs import GeneratorSpec, hookimpl
from genbot.networks.card import CARD_FILE

log = logging.getLogger("genbot.plugins")

ENTRY_POINT_GROUP = "genbot"
CODE_FILE = "plugin.py"


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded or whose hook raised."""

    name: str
    source: str  # "bundled:<folder>" or "entrypoint:<distribution>"
    error: str


@dataclass(frozen=True)
class OfferedGenerator:
    """A generator some plugin registered, not yet loaded."""

    spec: GeneratorSpec
    plugin: str
    source: str


@dataclass
class LoadedPlugins:
    """The plugin manager with every plugin that loaded, plus the ones that did not."""

    manager: pluggy.PluginManager
    sources: dict[str, str] = field(default_factory=dict)  # plugin name -> source
    failures: list[PluginFailure] = field(default_factory=list)

    def add(self, plugin: object, name: str, source: str) -> None:
        """Register ``plugin``; a hook that matches no spec (a typo) is a failure, not a no-op."""
        self.manager.register(plugin, name=name)
        try:
            self.manager.check_pending()
        except pluggy.PluginValidationError:
            self.manager.unregister(name=name)
            raise
        self.sources[name] = source

    def fail(self, name: str, source: str, error: BaseException | str) -> None:
        """Log and record that plugin ``name`` is skipped: none of its hooks is called from now on."""
        reason = error if isinstance(error, str) else describe_error(error)
        log.warning("plugin %s (%s) skipped: %s", name, source, reason)
        self.failures.append(PluginFailure(name, source, reason))
        if self.manager.get_plugin(name) is not None:
            self.manager.unregister(name=name)


class FolderGenerator:
    """Built-in plugin for a code-free bundled folder: offers the folder as a generator."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @hookimpl
    def register_generators(self, register: Callable[[GeneratorSpec | Path], None]) -> None:
        """Offer this plugin's folder."""
        register(self.folder)


def new_plugin_manager() -> pluggy.PluginManager:
    """An empty ``genbot`` plugin manager that knows every hook."""
    manager = pluggy.PluginManager("genbot")
    manager.add_hookspecs(hookspecs)
    return manager


def load_plugins(settings: Settings) -> LoadedPlugins:
    """Register every enabled bundled folder and entry point; failures are recorded, not raised."""
    plugins = LoadedPlugins(new_plugin_manager())
    folders = bundled_folders(settings.plugins_dir)
    eps = list(entry_points(group=ENTRY_POINT_GROUP))
    wanted = _enabled_filter(settings.plugins_enabled, [f.name for f in folders] + [ep.name for ep in eps])
    for folder in filter(lambda f: wanted(f.name), folders):
        _load_folder(plugins, folder)
    for ep in filter(lambda ep: wanted(ep.name), eps):
        _load_entry_point(plugins, ep)
    return plugins


def bundled_folders(plugins_dir: Path) -> list[Path]:
    """Sub-folders of ``plugins_dir`` that hold a plugin, sorted by name."""
    if not plugins_dir.is_dir():
        log.warning("plugins folder %s does not exist; no bundled plugins", plugins_dir)
        return []
    return sorted(
        d for d in plugins_dir.iterdir() if d.is_dir() and ((d / CARD_FILE).is_file() or (d / CODE_FILE).is_file())
    )


def _enabled_filter(enabled: list[str] | None, available: Iterable[str]) -> Callable[[str], bool]:
    """A predicate for plugin names; warns about enabled names that match no plugin."""
    if enabled is None:
        return lambda name: True
    missing = sorted(set(enabled) - set(available))
    if missing:
        log.warning("plugins_enabled names %s, which no plugin has", ", ".join(missing))
    chosen = set(enabled)
    return lambda name: name in chosen


def _load_folder(plugins: LoadedPlugins, folder: Path) -> None:
    """Register a bundled folder: its ``plugin.py`` module, or the built-in folder plugin."""
    source = f"bundled:{folder}"
    try:
        plugin = import_folder_module(folder) if (folder / CODE_FILE).is_file() else FolderGenerator(folder)
        plugins.add(plugin, folder.name, source)
    except Exception as e:  # plugin code may raise anything; it must not stop start-up
        plugins.fail(folder.name, source, e)


def import_folder_module(folder: Path) -> ModuleType:
    """Import ``folder/plugin.py`` under a module name unique to that folder."""
    digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:10]
    stem = re.sub(r"\W", "_", folder.name)
    name = f"genbot_plugin_{stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, folder / CODE_FILE)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {folder / CODE_FILE}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling inside the module look themselves up here
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _load_entry_point(plugins: LoadedPlugins, ep: EntryPoint) -> None:
    """Import and register one entry point (what ``load_setuptools_entrypoints`` does, one at a time)."""
    source = f"entrypoint:{ep.dist.name if ep.dist else ep.value}"
    try:
        plugins.add(ep.load(), ep.name, source)
    except Exception as e:  # a broken third-party package is skipped like a broken folder
        plugins.fail(ep.name, source, e)


def collect_generators(plugins: LoadedPlugins) -> list[OfferedGenerator]:
    """Call each plugin's ``register_generators``; a plugin whose hook raises offers nothing."""
    offered: list[OfferedGenerator] = []
    for impl in plugins.manager.hook.register_generators.get_hookimpls():
        source = plugins.sources.get(impl.plugin_name, "unknown")
        try:
            specs = _generators_of(impl)
        except Exception as e:  # plugin code
            plugins.fail(impl.plugin_name, source, e)
            continue
        offered += [OfferedGenerator(spec, impl.plugin_name, source) for spec in specs]
    return offered


def call_each(plugins: LoadedPlugins, hook: str, **kwargs: Any) -> None:
    """Call every plugin's ``hook`` (``register_commands``, …); one that raises is recorded and skipped."""
    for impl in getattr(plugins.manager.hook, hook).get_hookimpls():
        try:
            _call_impl(impl, **kwargs)
        except Exception as e:  # plugin code
            plugins.fail(impl.plugin_name, plugins.sources.get(impl.plugin_name, "unknown"), e)


def add_commands(plugins: LoadedPlugins, cli: Any) -> None:
    """Let every plugin add its commands to the ``genbot`` Typer app (``register_commands``)."""
    call_each(plugins, "register_commands", cli=cli)


def add_routes(plugins: LoadedPlugins, app: Any) -> None:
    """Let every plugin add its HTTP endpoints to the API app (``register_routes``)."""
    call_each(plugins, "register_routes", app=app)


SOURCE_KINDS = {
    "bundled": "bundled folder",
    "version": "data folder",
    "folder": "data folder",
    "entrypoint": "package",
}


def source_kind(source: str) -> str:
    """Where a plugin or generator came from, in words: bundled folder, data folder or package."""
    return SOURCE_KINDS.get(source.split(":", 1)[0], "unknown")


def _generators_of(impl: pluggy.HookImpl) -> list[GeneratorSpec]:
    """What one plugin's ``register_generators`` registers."""
    specs: list[GeneratorSpec] = []
    # Called one plugin at a time (not through manager.hook) so one that raises skips only itself.
    _call_impl(impl, register=lambda offer: specs.append(as_spec(offer)))
    return specs


def _call_impl(impl: pluggy.HookImpl, **kwargs: Any) -> Any:
    """Call one hook implementation with the arguments it declares (as pluggy does)."""
    return impl.function(*(kwargs[name] for name in impl.argnames))


def as_spec(offer: GeneratorSpec | Path | str) -> GeneratorSpec:
    """A ``GeneratorSpec`` from what a plugin passed to ``register``."""
    if isinstance(offer, GeneratorSpec):
        return offer
    if isinstance(offer, str | Path):
        return GeneratorSpec(Path(offer))
    raise TypeError(f"register() takes a folder path or a GeneratorSpec, not {type(offer).__name__}")


def describe_error(error: BaseException) -> str:
    """The reason shown for a failed plugin: genbot's own errors as is, others with their type."""
    return str(error) if isinstance(error, GenbotError) else f"{type(error).__name__}: {error}"
