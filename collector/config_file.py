"""The collector's one configuration file: ``collector.toml`` into ``CollectorSettings``.

Loaded by pydantic-settings' own ``TomlConfigSettingsSource``, ordered by
``settings_customise_sources`` so that command-line flags beat environment variables, which
beat the file, which beats the defaults. The file's keys are the settings' own field names
(``collector/collector.sample.toml`` explains each); ``[liveness]`` is ``LivenessSettings``
and ``[[forwarding.destinations]]`` are validated by the forwarding settings models.

Every problem comes back as one line naming where the bad value came from
(``/etc/campuswatch/collector.toml: liveness.flap_treshold: Extra inputs are not permitted``),
so a typo in the file is an error at start, never a setting silently ignored.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    TomlConfigSettingsSource,
)

from campuswatch.collector.settings import CollectorSettings, LivenessSettings

SAMPLE_CONFIG: Final = Path(__file__).resolve().parent / "collector.sample.toml"
ENV_PREFIX: Final = "CW_COLLECTOR_"


class ConfigFileError(ValueError):
    """The settings cannot be used; ``problems`` holds one line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


class _NestedEnvSource(PydanticBaseSettingsSource):
    """``CW_LIVENESS_*`` as the ``liveness`` table, placed above the file's ``[liveness]``.

    A nested settings class validated from the file's table never reads its own environment
    variables, so without this a ``[liveness]`` table would silently beat them."""

    def __init__(
        self, settings_cls: type[BaseSettings], field_name: str, nested: type[BaseSettings]
    ) -> None:
        super().__init__(settings_cls)
        self._field_name = field_name
        self._nested_env = EnvSettingsSource(nested)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything is produced in __call__

    def __call__(self) -> dict[str, Any]:
        values = self._nested_env()
        return {self._field_name: values} if values else {}


def read_toml(path: Path) -> dict[str, Any]:
    """The file's tables, or ConfigFileError with one line (unreadable, not TOML)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigFileError([f"{path}: no such file"]) from None
    except OSError as exc:
        raise ConfigFileError([f"{path}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigFileError([f"{path}: not UTF-8 text: {exc.reason}"]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError([f"{path}: not valid TOML: {exc}"]) from None


def _settings_class(config: Path | None) -> type[CollectorSettings]:
    """CollectorSettings whose sources are flags > environment > ``config`` > defaults."""

    class CollectorFileSettings(CollectorSettings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources = [
                init_settings,
                env_settings,
                _NestedEnvSource(settings_cls, "liveness", LivenessSettings),
            ]
            if config is not None:
                # deep_merge would not matter: sources are merged key by key already.
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config))
            return tuple(sources)

    CollectorFileSettings.__name__ = CollectorSettings.__name__
    CollectorFileSettings.__qualname__ = CollectorSettings.__qualname__
    return CollectorFileSettings


def load_collector_settings(
    config: Path | None, overrides: Mapping[str, object] | None = None
) -> CollectorSettings:
    """Settings from flags (``overrides``), environment, ``config`` and defaults.

    Raises ConfigFileError listing every problem, one line each, naming the file and the key
    (or the environment variable or flag) the bad value came from."""
    flags = {key: value for key, value in (overrides or {}).items() if value is not None}
    file_data = read_toml(config) if config is not None else {}
    try:
        return _settings_class(config)(**flags)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigFileError(
            [_describe(error, config, file_data, flags) for error in exc.errors()]
        ) from None


def _describe(
    error: Mapping[str, Any],
    config: Path | None,
    file_data: Mapping[str, Any],
    flags: Mapping[str, object],
) -> str:
    location: tuple[int | str, ...] = tuple(error.get("loc", ()))
    message = str(error.get("msg", "invalid"))
    if not location:
        # A check across fields (model validator): no single key to name.
        where = str(config) if config is not None else "settings"
        return f"{where}: {message.removeprefix('Value error, ')}"
    top = str(location[0])
    key = _key_path(location, file_data)
    if top in flags:
        origin = f"command line (--{top.replace('_', '-')})"
    elif _from_environment(location):
        origin = f"environment ({_env_name(location)})"
    elif config is not None and top in file_data:
        origin = str(config)
    else:
        origin = "settings"
    return f"{origin}: {key}: {message.removeprefix('Value error, ')}"


def _key_path(location: tuple[int | str, ...], data: Mapping[str, Any]) -> str:
    """``forwarding.destinations[0].options.hots``: the loc as the file spells it.

    Pydantic puts a discriminated union's tag (``syslog``) into the loc; the file has no
    such key, so it is left out wherever the data does not have it."""
    parts: list[str] = []
    node: Any = data
    for index, element in enumerate(location):
        last = index == len(location) - 1
        if isinstance(element, int):
            parts.append(f"[{element}]")
            node = node[element] if isinstance(node, list) and element < len(node) else None
            continue
        if isinstance(node, dict) and element not in node and not last and parts:
            continue  # a union tag
        parts.append(f".{element}" if parts else element)
        node = node.get(element) if isinstance(node, dict) else None
    return "".join(parts)


def _env_name(location: tuple[int | str, ...]) -> str:
    field = str(location[0])
    if field == "admin_token":
        return "CW_ADMIN_TOKEN"
    if field == "liveness" and len(location) > 1:
        return f"CW_LIVENESS_{str(location[1]).upper()}"
    return f"{ENV_PREFIX}{field.upper()}"


def _from_environment(location: tuple[int | str, ...]) -> bool:
    return _env_name(location) in {name.upper() for name in os.environ}
