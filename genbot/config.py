"""Runtime settings: ``bot.toml`` overridden by ``GENBOT_*`` environment variables.

Where the file comes from: the ``path`` given to :func:`load_settings`, else ``$GENBOT_CONFIG``,
else ``./bot.toml`` if it exists, else no file (defaults + environment). Relative paths in the
file are taken relative to the file's folder, so ``data_dir = "data"`` means the same folder
whatever directory the bot is started from. Without ``data_dir`` anywhere (no file, no
``GENBOT_DATA_DIR``) the data folder is the user data folder (platformdirs), so an installed
genbot run from any directory keeps one database. ``genbot.config_file`` renders a commented
``bot.toml`` from the fields' descriptions (``genbot init``).

Unknown keys fail loudly, in the file and in the environment (``GENBOT_FOO`` is an error, not a
silently ignored typo). Nested sections are reached with ``__``: ``GENBOT_ENGINE__MAX_QUEUE=64``.
Two names are special: ``GENBOT_PLUGINS`` (a comma list) sets ``plugins_enabled``, and the Discord
token is read only from ``DISCORD_TOKEN`` so it never lands in a file that might be committed.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from genbot.errors import ConfigError
from genbot.resources import bundled_plugins_dir

ENV_PREFIX = "GENBOT_"
CONFIG_ENV = "GENBOT_CONFIG"
PLUGINS_ENV = "GENBOT_PLUGINS"
TOKEN_ENV = "DISCORD_TOKEN"
DEFAULT_CONFIG_FILE = "bot.toml"
# Environment names under the prefix that are not settings: the config path itself, and the
# project's own tools, which name their variables GENBOT_TEST_* (the test suite, e.g.
# GENBOT_TEST_DATABASE_URL) or GENBOT_BENCH_* (bench/, e.g. GENBOT_BENCH_RAW_ANCHOR). Every other
# GENBOT_* name must be a setting, so a typo fails loudly.
_NOT_SETTINGS = ("genbot_config", "genbot_test_", "genbot_bench_")
# Fields whose environment name is not GENBOT_<FIELD>.
_ENV_NAMES = {"plugins_enabled": PLUGINS_ENV, "discord_token": TOKEN_ENV}
_PATH_FIELDS = ("data_dir", "plugins_dir")
_MASK = "********"

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def default_data_dir() -> Path:
    """The user data folder (``~/.local/share/genbot`` on Linux, ``~/Library/Application Support/genbot`` on macOS)."""
    import platformdirs

    return platformdirs.user_data_path("genbot", appauthor=False)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SamplingSettings(_Section):
    """Defaults for parameters a request leaves out, and the limits every request must respect."""

    temperature: float = Field(default=0.8, ge=0.0, description="Default sampling temperature (0 = argmax).")
    top_k: int = Field(default=0, ge=0, description="Default top-k cut-off (0 = off).")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Default nucleus (top-p) cut-off (1.0 = off).")
    length: int = Field(default=400, ge=1, description="Default number of characters to generate.")
    max_length: int = Field(default=5000, ge=1, description="Most characters one request may generate.")
    max_prompt_chars: int = Field(default=4000, ge=0, description="Longest prompt accepted, in characters.")
    context_chars: int = Field(
        default=2000,
        ge=1,
        description="Characters of a stored generation (or a chat) a continuation reads (capped by max_prompt_chars).",
    )
    max_temperature: float = Field(default=5.0, gt=0.0, description="Highest temperature a request may ask for.")

    @model_validator(mode="after")
    def _defaults_within_limits(self) -> SamplingSettings:
        if self.length > self.max_length:
            raise ValueError(f"length {self.length} is above max_length {self.max_length}")
        if self.temperature > self.max_temperature:
            raise ValueError(f"temperature {self.temperature} is above max_temperature {self.max_temperature}")
        return self


PrimeChoice = Literal["auto", "fp32", "bf16", "fp16", "onednn", "steps", "native", "native_fp16"]
StepChoice = Literal["auto", "fp32", "fp16", "onednn", "bf16", "rowwise", "rowwise_fp16", "native", "native_fp16"]


class EngineSettings(_Section):
    """How the generation engine batches streams."""

    max_streams_per_model: int = Field(default=128, ge=1, description="Streams one model advances per batched step.")
    max_queue: int = Field(default=256, ge=0, description="Streams that may wait for a slot before requests get Busy.")
    torch_threads: int = Field(default=1, ge=1, description="Threads torch uses for CPU inference.")
    batch_invariant: bool = Field(
        default=True,
        description="Same seed, same text alone or batched (false: a lone stream runs ~1.3x faster).",
    )
    prime_path: PrimeChoice = Field(
        default="auto",
        description=(
            "How prompts are read: auto (measured per model at load), fp32, bf16 copy, fp16 (FBGEMM),"
            " onednn (oneDNN float32, layer by layer), steps (one character at a time through the step kernel),"
            " native / native_fp16 (genbot's own kernels, float32 or float16 weights; needs a C compiler)."
        ),
    )
    step_path: StepChoice = Field(
        default="auto",
        description=(
            "How streams are stepped: auto (measured per model at load), fp32, fp16 (FBGEMM),"
            " onednn (oneDNN float32), bf16 (oneDNN bfloat16 weights and products, float32 state and head:"
            " fast with bf16 instructions), rowwise (float32, one row at a time: exact on any CPU, slow for"
            " many streams), rowwise_fp16 (the same through FBGEMM float16: half the bytes per character),"
            " native / native_fp16 (genbot's own kernels: every layer, the head and the sampling of a run of"
            " characters in one call; float32 or float16 weights; needs a C compiler)."
        ),
    )
    native: bool = Field(
        default=True,
        description=(
            "Build genbot's native kernels with this machine's C compiler (once, cached) and let auto choose"
            " them where they measure faster; false: never build or use them."
        ),
    )
    paths_cache: Path | None = Field(
        default=None,
        description=(
            "File the measured serving paths are kept in (default: engine-paths.json in data_dir);"
            " several data folders on one machine may share one file and measure once."
        ),
    )
    max_concurrent_captions: int = Field(
        default=2, ge=1, description="Images one process captions at once; more get Busy (HTTP 503 + Retry-After)."
    )


class VersionsSettings(_Section):
    """When a newly trained model version goes live, and how fast servers notice."""

    auto_activate: Literal["if_better", "always", "never"] = Field(
        default="if_better", description="Activate a new version: if its val loss beats the active one, always, never."
    )
    poll_seconds: float = Field(default=5.0, gt=0.0, description="How often servers check for a newly active version.")


class StorageSettings(_Section):
    """How long stored generations, job events and daily usage are kept (0 = forever)."""

    keep_days: int = Field(
        default=0, ge=0, description="Prune generations, finished jobs' events and usage older than this (0 = off)."
    )
    keep_rows: int = Field(default=0, ge=0, description="Keep only the newest this many generations (0 = off).")


class JobsSettings(_Section):
    """How workers run background jobs (leases, polling, retries, training threads)."""

    lease_seconds: float = Field(
        default=30.0,
        gt=0.0,
        description="A worker's claim on a job lasts this long unless renewed; then others take it.",
    )
    heartbeat_seconds: float = Field(default=5.0, gt=0.0, description="How often a worker renews its job's lease.")
    poll_seconds: float = Field(
        default=2.0, gt=0.0, description="How often idle workers and the scheduler look for work."
    )
    max_attempts: int = Field(default=3, ge=1, description="Claims a job gets (crashes, lost workers) before it fails.")
    train_threads: int = Field(default=1, ge=1, description="Torch threads of each training child process.")
    nproc: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Training processes per job (torchrun ranks, e.g. one per GPU) unless the job asks for --nproc.",
    )
    max_nproc: int = Field(
        default=8,
        ge=1,
        le=64,
        description="Most training processes a job may ask for (--nproc from the CLI, API, Discord, schedules).",
    )
    max_steps: int = Field(default=1_000_000, ge=1, le=2**31 - 1, description="Largest --steps budget a job may ask.")
    max_epochs: float = Field(default=1000.0, gt=0.0, description="Largest --epochs budget a job may ask.")
    max_seconds: float = Field(
        default=7 * 86_400.0, gt=0.0, description="Largest --seconds budget a job may ask (default: a week)."
    )
    max_batch_chars: int = Field(
        default=262_144,
        ge=1,
        description="Largest batch x block (characters per step) a job may ask; memory grows with it.",
    )

    @model_validator(mode="after")
    def _heartbeat_within_lease(self) -> JobsSettings:
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ValueError(
                f"heartbeat_seconds {self.heartbeat_seconds} must be below lease_seconds {self.lease_seconds}"
            )
        if self.nproc > self.max_nproc:
            raise ValueError(f"nproc {self.nproc} must be at most max_nproc {self.max_nproc}")
        return self


class ApiSettings(_Section):
    """The HTTP API server (``genbot api``): where it listens, keys, limits and caps."""

    host: str = Field(default="127.0.0.1", description="Address to bind; non-loopback needs require_keys.")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port to listen on (0 = any free port).")
    require_keys: bool = Field(
        default=False, description="Every request needs a Bearer API key (must be true off loopback)."
    )
    max_body_bytes: int = Field(default=1024 * 1024, ge=1, description="Largest JSON request body, in bytes.")
    max_upload_bytes: int = Field(
        default=100 * 1024 * 1024, ge=1, description="Largest corpus upload (one request), in bytes."
    )
    rate_per_minute: int = Field(default=120, ge=0, description="Requests per minute per API key (0 = no limit).")
    daily_chars: int = Field(
        default=0, ge=0, description="Characters per UTC day per API key unless its quota says otherwise (0 = none)."
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description='Host names requests may name besides loopback ones and the bind address ("*" = any).',
    )
    unkeyed_admin: bool = Field(
        default=False, description="Without require_keys, callers sending no key may use the admin routes."
    )
    metrics_key: str = Field(default="", description="If set, GET /metrics needs 'Authorization: Bearer <it>'.")
    bad_keys_per_minute: int = Field(
        default=20, ge=0, description="Invalid API keys per minute per client address before 429 (0 = no limit)."
    )
    playground: bool = Field(default=True, description="Serve the web playground at / (false: the API alone).")


class DiscordQuotaSettings(_Section):
    """Default limits for Discord users and guilds without a stored quota (0 = no limit)."""

    user_chars_per_day: int = Field(default=20000, ge=0, description="Characters one user may generate per UTC day.")
    user_concurrent: int = Field(default=2, ge=0, description="Generations one user may run at once.")
    user_cooldown_s: float = Field(default=3.0, ge=0.0, description="Seconds between two requests of one user.")
    guild_chars_per_day: int = Field(default=0, ge=0, description="Characters one guild may generate per UTC day.")
    guild_concurrent: int = Field(default=8, ge=0, description="Generations one guild may run at once.")


class DiscordSettings(_Section):
    """The Discord bot (``genbot discord``, or ``genbot serve`` when DISCORD_TOKEN is set)."""

    edit_interval_s: float = Field(
        default=1.0, ge=0.2, description="Seconds between two edits of a streaming reply (Discord asks ~1/s)."
    )
    owner_ids: list[int] = Field(
        default_factory=list, description="Bot owners besides the application's owner or team (global /admin powers)."
    )
    admin_role_id: int | None = Field(
        default=None, description="Role (by id) whose members are server admins, besides Manage Server."
    )
    mention_trigger: bool = Field(default=False, description="Answer '@genbot prompt' messages in channels.")
    mention_model: str = Field(default="", description="Model for mention replies; empty: the first loaded one.")
    guild_ids: list[int] = Field(
        default_factory=list, description="Sync commands to these guilds (instant); empty: global commands."
    )
    max_corpus_bytes: int = Field(default=8 * 1024 * 1024, ge=1, description="Largest /admin corpus-add attachment.")
    shard_count: int | None = Field(
        default=None, ge=1, description="Gateway shards of the whole application; unset: Discord's recommendation."
    )
    shard_ids: list[int] | None = Field(
        default=None, description="Shards this process runs (needs shard_count); unset: all of them."
    )
    quotas: DiscordQuotaSettings = Field(default_factory=DiscordQuotaSettings, description="Default quotas.")

    @model_validator(mode="after")
    def _shards_within_count(self) -> DiscordSettings:
        """shard_ids name shards of shard_count, each once (discord.py would fail only at connect)."""
        if self.shard_ids is None:
            return self
        if self.shard_count is None:
            raise ValueError("discord.shard_ids needs discord.shard_count (the total of every process's shards)")
        if not self.shard_ids:
            raise ValueError("discord.shard_ids is empty: list this process's shards, or leave it unset for all")
        wrong = [i for i in self.shard_ids if not 0 <= i < self.shard_count]
        if wrong:
            raise ValueError(f"discord.shard_ids {wrong} outside 0..{self.shard_count - 1} (shard_count)")
        if len(set(self.shard_ids)) != len(self.shard_ids):
            raise ValueError("discord.shard_ids lists a shard twice")
        return self


# pydantic-settings builds its sources inside the class, with no per-call argument for the TOML
# file; load_settings passes the path for one construction through this context variable.
_TOML_FILE: ContextVar[Path | None] = ContextVar("genbot_toml_file", default=None)


class Settings(BaseSettings):
    """Everything genbot reads from ``bot.toml`` and the environment."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_assignment=True
    )

    data_dir: Path = Field(
        default_factory=lambda: default_data_dir(),
        description="Folder for the database, corpora, checkpoints and jobs (unset: the user data folder).",
    )
    plugins_dir: Path = Field(
        default_factory=bundled_plugins_dir,
        description="Folder of generator plugins, one sub-folder each (unset: the ones bundled with genbot).",
    )
    plugins_enabled: list[str] | None = Field(
        default=None, description="Only these plugins load (env GENBOT_PLUGINS, comma-separated); unset loads all."
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy database URL; unset uses the SQLite file genbot.db in data_dir."
    )
    discord_token: SecretStr | None = Field(
        default=None, description="Discord bot token; read only from the DISCORD_TOKEN environment variable."
    )
    log_level: LogLevel = Field(default="INFO", description="Level of genbot's log messages.")
    sampling: SamplingSettings = Field(default_factory=SamplingSettings, description="Sampling defaults and limits.")
    engine: EngineSettings = Field(default_factory=EngineSettings, description="Generation engine sizes.")
    corpus_max_bytes: int = Field(
        default=100 * 1024 * 1024, ge=1, description="Largest corpus `genbot corpus add` accepts, in bytes."
    )
    versions: VersionsSettings = Field(
        default_factory=VersionsSettings, description="Model version activation policy and live pickup."
    )
    jobs: JobsSettings = Field(default_factory=JobsSettings, description="Background job workers and schedules.")
    storage: StorageSettings = Field(
        default_factory=StorageSettings, description="Retention of the stored history (the daily prune)."
    )
    discord: DiscordSettings = Field(default_factory=DiscordSettings, description="Discord bot pacing, admins, quotas.")
    api: ApiSettings = Field(default_factory=ApiSettings, description="HTTP API server, keys and limits.")

    _config_file: Path | None = PrivateAttr(None)

    @field_validator(*_PATH_FIELDS, mode="after")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # Absolute at load time, so a later chdir (or a subprocess) sees the same folder.
        return value.expanduser().absolute()

    @field_validator("plugins_enabled", mode="before")
    @classmethod
    def _split_names(cls, value: Any) -> Any:
        # The environment gives "a,b"; the file gives a list. An empty string means "load none".
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments, then the environment, then ``bot.toml`` (no .env, no secrets dir)."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, _GenbotEnvSource(settings_cls)]
        toml_file = _TOML_FILE.get()
        if toml_file is not None:
            sources.append(_BotTomlSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    @property
    def config_file(self) -> Path | None:
        """The ``bot.toml`` these settings were read from, if any."""
        return self._config_file

    @property
    def effective_database_url(self) -> str:
        """``database_url``, or the async SQLite URL of ``genbot.db`` in ``data_dir``."""
        if self.database_url:
            return self.database_url
        from sqlalchemy.engine import URL

        path = str(self.data_dir / "genbot.db")
        return URL.create("sqlite+aiosqlite", database=path).render_as_string(hide_password=False)

    def masked_dump(self) -> dict[str, Any]:
        """All settings as plain data, with the token and database password masked (for display)."""
        data = self.model_dump(mode="json")
        data["discord_token"] = _MASK if self.discord_token else None
        data["database_url"] = _mask_url(self.database_url) if self.database_url else None
        data["effective_database_url"] = _mask_url(self.effective_database_url)
        data["config_file"] = str(self.config_file) if self.config_file else None
        return data


class _GenbotEnvSource(EnvSettingsSource):
    """The standard ``GENBOT_*`` source, plus the special names and a check for unknown ones."""

    def __call__(self) -> dict[str, Any]:
        """Values from the environment, after rejecting names that set nothing."""
        _reject_unknown_env(self.env_vars)
        data = super().__call__()
        for field, env_name in _ENV_NAMES.items():
            value = self.env_vars.get(env_name.lower() if not self.case_sensitive else env_name)
            if value is not None:
                data[field] = value
        return data


class _BotTomlSource(TomlConfigSettingsSource):
    """``bot.toml``, with paths made relative to the file and the token refused."""

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        data = super()._read_file(file_path)
        if any(key.lower() == "discord_token" for key in data):
            raise ConfigError(
                f"{file_path}: discord_token must not be stored in the file; set the {TOKEN_ENV} environment variable"
            )
        folder = Path(file_path).parent
        for key in _PATH_FIELDS:
            if isinstance(data.get(key), str):
                data[key] = str(folder / Path(data[key]).expanduser())
        return data


def _known_env_names() -> set[str]:
    """Lower-case environment names that set a top-level field (sections add ``__<key>``)."""
    names = {f"{ENV_PREFIX}{field}".lower() for field in Settings.model_fields if field not in _ENV_NAMES}
    return names | {PLUGINS_ENV.lower()}


def _display_name(env_name: str) -> str:
    """``GENBOT_ENGINE__<KEY>`` for a section, the plain upper-case name otherwise."""
    field = Settings.model_fields.get(env_name[len(ENV_PREFIX) :].lower())
    is_section = field is not None and isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
    return f"{env_name.upper()}__<KEY>" if is_section else env_name.upper()


def _reject_unknown_env(env_vars: Mapping[str, str | None]) -> None:
    """Raise ``ConfigError`` naming each ``GENBOT_*`` variable that matches no setting."""
    known = _known_env_names()
    unknown = sorted(
        key.upper()
        for key in env_vars
        if key.lower().startswith(ENV_PREFIX.lower())
        and not key.lower().startswith(_NOT_SETTINGS)
        and key.lower().split("__", 1)[0] not in known
    )
    if unknown:
        hint = f"; set the token with {TOKEN_ENV}" if f"{ENV_PREFIX}DISCORD_TOKEN" in unknown else ""
        names = ", ".join(sorted(map(_display_name, known)))
        raise ConfigError(f"unknown environment variable(s) {', '.join(unknown)}{hint} (known: {names})")


def _find_config_file(path: Path | None) -> Path | None:
    """The explicit path, else ``$GENBOT_CONFIG``, else ``./bot.toml`` if present, else none."""
    if path is None and os.environ.get(CONFIG_ENV):
        path = Path(os.environ[CONFIG_ENV])
    if path is None:
        default = Path(DEFAULT_CONFIG_FILE)
        return default.absolute() if default.is_file() else None
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{path}: configuration file not found")
    return path.absolute()


def load_settings(path: Path | None = None) -> Settings:
    """Read settings from the config file and the environment; raises ``ConfigError``."""
    toml_file = _find_config_file(path)
    token = _TOML_FILE.set(toml_file)
    try:
        settings = Settings()
    except ValidationError as e:
        raise ConfigError(_describe(e, toml_file)) from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{toml_file}: not valid TOML ({e})") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{toml_file}: cannot be read ({e})") from e
    finally:
        _TOML_FILE.reset(token)
    settings._config_file = toml_file
    return settings


def _describe(error: ValidationError, toml_file: Path | None) -> str:
    """One line per problem, each naming where the bad value came from and the key."""
    lines = ["invalid configuration:"]
    for err in error.errors():
        loc = tuple(str(part) for part in err["loc"])
        problem = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        lines.append(f"  {_origin(loc, toml_file)}: {problem}")
    return "\n".join(lines)


def _origin(loc: tuple[str, ...], toml_file: Path | None) -> str:
    """Where a key's value came from: the environment variables that set it (env wins), else the file."""
    env_name = (_ENV_NAMES.get(loc[0]) if len(loc) == 1 else None) or ENV_PREFIX + "__".join(loc).upper()
    # A section-level error (e.g. length above max_length) may come from any variable inside it.
    from_env = sorted(k.upper() for k in os.environ if k.upper() == env_name or k.upper().startswith(env_name + "__"))
    if from_env:
        return f"environment variable {', '.join(from_env)}"
    key = ".".join(loc) if loc else "(settings)"
    return f"{toml_file}: {key}" if toml_file else key


def _mask_url(url: str) -> str:
    """``url`` with any password replaced by asterisks."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", f":{_MASK}@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
