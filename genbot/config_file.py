"""A commented ``bot.toml`` generated from the settings models (``genbot init``).

Every key comes from :class:`genbot.config.Settings` and its sections, with its description as
the comment and its default as the value, so the file cannot drift from what genbot reads.
Keys whose default depends on the machine (``data_dir``, ``plugins_dir``) or is unset are written
commented out; the Discord token is never written (it is read only from ``DISCORD_TOKEN``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomli_w
from pydantic import BaseModel

from genbot.config import DEFAULT_CONFIG_FILE, Settings
from genbot.errors import ConfigError

HEADER = """\
# genbot runtime configuration, written by `genbot init`. Every value below is the default; edit
# what you need and delete the rest if you like.
#
# Environment variables override this file: GENBOT_<KEY>, and GENBOT_<SECTION>__<KEY> for the
# sections, e.g. GENBOT_DATA_DIR=/srv/genbot or GENBOT_ENGINE__MAX_QUEUE=64. Another file can be
# chosen with GENBOT_CONFIG=/path/to/bot.toml. Unknown keys (here or GENBOT_*) are an error.
# Relative paths are relative to the folder this file is in.
#
# The Discord token is never stored here: set the DISCORD_TOKEN environment variable.
"""
# Written commented out, with an example value: their defaults depend on the machine.
EXAMPLES = {"data_dir": "data", "plugins_dir": "plugins"}
NEVER_WRITTEN = {"discord_token"}


def config_template() -> str:
    """The text of a commented ``bot.toml`` holding every setting at its default."""
    lines = [HEADER]
    _section(Settings, [], lines)
    return "\n".join(lines).rstrip() + "\n"


def write_config_file(folder: Path | None = None, *, force: bool = False) -> Path:
    """Write ``bot.toml`` into ``folder`` (default: the current one); ConfigError if one is there unless ``force``."""
    path = (folder or Path.cwd()) / DEFAULT_CONFIG_FILE
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists (pass --force to overwrite it)")
    path.write_text(config_template(), encoding="utf-8")
    return path


def _section(model: type[BaseModel], where: list[str], lines: list[str]) -> None:
    """The keys of one model, then its sub-sections as ``[a.b]`` tables."""
    sections: list[tuple[str, type[BaseModel], str]] = []
    for name, field in model.model_fields.items():
        if name in NEVER_WRITTEN:
            continue
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            sections.append((name, kind, field.description or ""))
            continue
        lines.append(f"# {field.description}")
        default = field.get_default(call_default_factory=True)
        if name in EXAMPLES and not where:
            lines.append(f"# {_toml(name, EXAMPLES[name])}")
        elif default is None:
            lines.append(f"# {name} = (unset)")
        else:
            lines.append(_toml(name, default))
        lines.append("")
    for name, kind, description in sections:
        table = [*where, name]
        lines.append(f"[{'.'.join(table)}]")
        lines.append(f"# {description}")
        doc = (kind.__doc__ or "").strip().splitlines()
        if doc and doc[0] != description:
            lines.append(f"# {doc[0]}")
        lines.append("")
        _section(kind, table, lines)


def _toml(name: str, value: Any) -> str:
    """``name = value`` in TOML."""
    if isinstance(value, Path):
        value = str(value)
    return tomli_w.dumps({name: value}).strip()
