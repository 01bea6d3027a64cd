"""The YAML configuration: the commented example, strict validation, and problems with locations."""

from __future__ import annotations

import re
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
from apigee_tls_exporter.config import Config, ConfigError, load_config, parse_duration
from pydantic import BaseModel

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "apigee-tls-exporter.yml"


def models_in(annotation: object) -> Iterator[type[BaseModel]]:
    """The pydantic models an annotation refers to (``list[LogConfig]`` -> LogConfig)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from models_in(arg)


def field_paths(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Every key of ``model``, nested ones as ``pairing.window``."""
    for name, info in model.model_fields.items():
        yield prefix + name
        for sub in models_in(info.annotation):
            yield from field_paths(sub, f"{prefix}{name}.")


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "config.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    return caught.value.problems


def locations(tmp_path: Path, text: str) -> list[str]:
    return [p.split(": ", 1)[0] for p in problems(tmp_path, text)]


# --- the example ---------------------------------------------------------------------------------


def test_example_config_is_valid() -> None:
    """``config/apigee-tls-exporter.yml`` loads without a problem."""
    assert isinstance(load_config(str(EXAMPLE)), Config)


def test_example_config_states_the_defaults() -> None:
    """Every value in the example is the default: the file behaves like no file at all."""
    expected = Config()
    assert expected == load_config(str(EXAMPLE))


def test_example_config_names_every_key() -> None:
    """Every Config key, nested ones included, appears in the example (set or commented)."""
    text = EXAMPLE.read_text()
    keys = {path.rsplit(".", 1)[-1] for path in field_paths(Config)}
    present = {k for k in keys if re.search(rf"^[ #]*(?:- )?{k}:", text, re.MULTILINE)}
    expected: set[str] = set()
    assert expected == keys - present


def test_example_config_comments_every_top_level_key() -> None:
    """Each top-level key of the example is preceded by a comment explaining it."""
    lines = EXAMPLE.read_text().splitlines()
    uncommented = []
    for i, line in enumerate(lines):
        key = re.match(r"(\w+):", line)
        if key is None:
            continue
        before = [x for x in lines[:i] if x.strip()]
        if not before or not before[-1].startswith("#"):
            uncommented.append(key.group(1))
    expected: list[str] = []
    assert expected == uncommented


# --- validation ----------------------------------------------------------------------------------


def test_empty_file_is_the_default_config(tmp_path: Path) -> None:
    """An empty file is a valid config with every default."""
    path = tmp_path / "config.yml"
    path.write_text("")
    expected = Config()
    assert expected == load_config(str(path))


def test_durations_accept_units(tmp_path: Path) -> None:
    """``pairing.window`` takes a duration with a unit."""
    path = tmp_path / "config.yml"
    path.write_text("pairing:\n  window: 500ms\n")
    expected = 0.5
    assert expected == load_config(str(path)).pairing.window


def test_unknown_top_level_key_is_reported_with_its_name(tmp_path: Path) -> None:
    """A misspelt key is an error, not ignored."""
    expected = ["listne: unknown key"]
    assert expected == problems(tmp_path, "listne: ':9847'\n")


def test_unknown_nested_key_is_reported_with_its_path(tmp_path: Path) -> None:
    """An unknown key inside a section names the section."""
    expected = ["pairing.windw: unknown key"]
    assert expected == problems(tmp_path, "pairing:\n  windw: 2s\n")


def test_unknown_key_in_a_list_item_is_reported_with_its_index(tmp_path: Path) -> None:
    """An unknown key in the n-th log names that entry."""
    text = "logs:\n  - path: /var/log/a.log\n  - path: /var/log/b.log\n    rotate: x\n"
    expected = ["logs[1].rotate: unknown key"]
    assert expected == problems(tmp_path, text)


def test_bad_type_is_reported_with_its_location(tmp_path: Path) -> None:
    """A value of the wrong type is reported at its key."""
    expected = ["max_series"]
    assert expected == locations(tmp_path, "max_series: many\n")


def test_bad_choice_is_reported_with_its_location(tmp_path: Path) -> None:
    """A value outside a fixed set of choices is reported at its key."""
    expected = ["log_level"]
    assert expected == locations(tmp_path, "log_level: loud\n")


def test_bad_duration_is_reported_with_its_location(tmp_path: Path) -> None:
    """A duration that is not one is reported at its key, with an example of a good one."""
    expected = ["pairing.window: expected a duration such as 30s, 5m or 1h, got '2 parsecs'"]
    assert expected == problems(tmp_path, "pairing:\n  window: 2 parsecs\n")


def test_zero_duration_is_reported(tmp_path: Path) -> None:
    """A pairing window of no time at all is an error."""
    expected = ["pairing.window: a duration must be positive"]
    assert expected == problems(tmp_path, "pairing:\n  window: 0s\n")


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", ".NaN", ".Inf"])
@pytest.mark.parametrize(
    ("where", "key"),
    [
        ("pairing:\n  window: {}\n", "pairing.window"),
        (
            "alerts:\n  client_certificate_rejected:\n    window: {}\n",
            "alerts.client_certificate_rejected.window",
        ),
        (
            "alerts:\n  handshake_failures:\n    resolve_after: {}\n",
            "alerts.handshake_failures.resolve_after",
        ),
    ],
    ids=["pairing-window", "alert-window", "alert-resolve-after"],
)
def test_nan_or_infinite_window_is_reported(
    tmp_path: Path, where: str, key: str, value: str
) -> None:
    """A pairing or alert window of NaN or infinity is a config error at its key (NaN passes
    every comparison, so "must be positive" alone lets it through)."""
    messages = problems(tmp_path, where.format(value))
    expected = [f"{key}: a duration must be a finite number of seconds"]
    assert expected == messages


def test_unknown_time_zone_is_reported(tmp_path: Path) -> None:
    """A time zone that is not an IANA name is reported at ``timezone``."""
    expected = ["timezone: unknown time zone 'Mars/Olympus_Mons'"]
    assert expected == problems(tmp_path, "timezone: Mars/Olympus_Mons\n")


def test_bad_listen_address_is_reported(tmp_path: Path) -> None:
    """A listen address without a port is reported at ``listen``."""
    expected = ["listen"]
    assert expected == locations(tmp_path, "listen: localhost\n")


def test_missing_log_path_is_reported(tmp_path: Path) -> None:
    """A log entry without its path is reported at that entry."""
    expected = ["logs[0].path: Field required"]
    assert expected == problems(tmp_path, "logs:\n  - rotated: /var/log/x.*\n")


def test_every_problem_is_listed(tmp_path: Path) -> None:
    """All problems of a file are reported together, each with its location."""
    text = "max_series: many\nmax_line_bytes: 10\npairing:\n  window: soon\nextra: 1\n"
    expected = ["extra", "max_line_bytes", "max_series", "pairing.window"]
    assert expected == sorted(locations(tmp_path, text))


def test_invalid_yaml_is_reported_with_line_and_column(tmp_path: Path) -> None:
    """Broken YAML is reported with the line and column where parsing failed."""
    expected = ["line 3, column 5: invalid YAML: mapping values are not allowed here"]
    assert expected == problems(tmp_path, "pairing:\n  window: 2s\n   x: 1\n")


def test_top_level_that_is_not_a_mapping_is_reported(tmp_path: Path) -> None:
    """A file holding a list instead of keys is reported as such."""
    expected = ["(top level): expected a mapping of keys to values"]
    assert expected == problems(tmp_path, "- listen: ':9847'\n")


def test_missing_file_is_reported(tmp_path: Path) -> None:
    """A config file that does not exist is one problem, naming the file."""
    path = tmp_path / "absent.yml"
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    expected = (str(path), ["file not found"])
    assert expected == (caught.value.source, caught.value.problems)


# --- durations -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1w", 604800.0),
        ("1d12h", 129600.0),
        ("1m30s", 90.0),
        (2, 2.0),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    """A duration with a unit (or several parts, as `scan --since` takes them), or a number of
    seconds, is read as seconds."""
    assert seconds == parse_duration(text)


@pytest.mark.parametrize(
    "text",
    ["2 parsecs", "s", "-1s", "1y", "1d 12h", True, 0, "0s", "", float("nan"), float("inf")],
)
def test_parse_duration_rejects_what_is_not_a_positive_duration(text: object) -> None:
    """Anything but a positive duration is a ValueError."""
    with pytest.raises(ValueError):
        parse_duration(text)
