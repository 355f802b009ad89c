"""Declarative search spaces: one TOML file per model family, parsed into Ray Tune domains.

A table is a searched hyperparameter, a bare value a fixed one. Bare values come first: after a
[table] line, TOML reads every key as the table's own.

    width = 64                  # fixed for every trial

    [lr_g]                      # searched: log-uniform between low and high
    distribution = "loguniform"
    low = 5e-5
    high = 1e-3

    [latent_dim]                # searched: one of the values
    distribution = "choice"
    values = [16, 32, 64, 128]

Distributions: uniform, loguniform (floats, low < high), int, logint (integers, low <= high,
both inclusive), choice (a non-empty list of numbers, strings or booleans).

`read_space` checks a file and returns plain data (no Ray: the dashboard reads spaces with it);
`parse_space` / `load_space` turn that into Ray Tune domains, importing ray.tune only then.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

from trainables.errors import BadInput

HERE = Path(__file__).parent


class SpaceError(BadInput):
    """A search-space file that can't be used; the message names the file and the key."""


def default_space_path(model: str) -> Path:
    """A built-in family's search space."""
    return HERE / f"{model}.toml"


def space_path(family) -> Path:
    """A family's search space by default: a built-in one's here; one of the user's own in the TOML
    file named after the family beside its module (e.g. wgan_gp.toml beside wgan_gp.py)."""
    import sys

    if type(family).__module__ == "__main__":
        raise SpaceError(f"model family {family.name} is defined in __main__ (a notebook or script): give its search "
                         f"space, --space FILE (space= in SweepOptions)")
    module = sys.modules.get(type(family).__module__)
    file = getattr(module, "__file__", None)
    if type(family).__module__.startswith("trainables.models.") or not file:
        return default_space_path(family.name)
    path = Path(file).with_name(f"{family.name}.toml")
    if not path.is_file():
        raise SpaceError(f"model family {family.name} has no search space: write {path} beside {Path(file).name} "
                         f"(docs/extending.md) or pass --space")
    return path


def _number(where: str, spec: dict, key: str, integer: bool) -> float:
    if key not in spec:
        raise SpaceError(f"{where}: missing {key!r}")
    value = spec[key]
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise SpaceError(f"{where}: {key!r} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if not math.isfinite(value):  # TOML has inf and nan: no range to sample from
        raise SpaceError(f"{where}: {key!r} must be a finite number, got {value!r}")
    return value


def _check_table(where: str, spec: dict) -> dict:
    """A searched hyperparameter's table, checked; returned as it is."""
    kind = spec.get("distribution")
    allowed = {"uniform", "loguniform", "int", "logint", "choice"}
    if kind not in allowed:
        raise SpaceError(f"{where}: distribution must be one of {', '.join(sorted(allowed))}, got {kind!r}")
    fields = {"distribution", "values"} if kind == "choice" else {"distribution", "low", "high"}
    extra = set(spec) - fields
    if extra:
        raise SpaceError(f"{where}: unknown field(s) {', '.join(sorted(extra))} for {kind}")
    if kind == "choice":
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise SpaceError(f"{where}: 'values' must be a non-empty list")
        if not all(isinstance(v, (int, float, str, bool)) for v in values):
            raise SpaceError(f"{where}: 'values' may hold only numbers, strings and booleans")
        if len(set(map(repr, values))) != len(values):
            raise SpaceError(f"{where}: 'values' has duplicates")
        return spec
    integer = kind in ("int", "logint")
    low, high = _number(where, spec, "low", integer), _number(where, spec, "high", integer)
    if (low > high) if integer else (low >= high):
        raise SpaceError(f"{where}: empty range, low {low} must be below high {high}")
    if kind.startswith("log") and low <= 0:
        raise SpaceError(f"{where}: {kind} needs low > 0, got {low}")
    return spec


def _domain(spec: dict):
    """A checked table -> its Ray Tune domain."""
    from ray import tune

    kind, low, high = spec["distribution"], spec.get("low"), spec.get("high")
    if kind == "choice":
        return tune.choice(spec["values"])
    if kind == "uniform":
        return tune.uniform(low, high)
    if kind == "loguniform":
        return tune.loguniform(low, high)
    # tune.randint excludes its upper bound; the file's high is inclusive
    return tune.lograndint(low, high + 1) if kind == "logint" else tune.randint(low, high + 1)


def _typed(key: str, text: str, default):
    """A --set value read as TOML (numbers, booleans, quoted strings), else as plain text, and
    checked against the type of the family's default (None: anything goes)."""
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    if isinstance(default, str):
        return value if isinstance(value, str) else text
    if isinstance(default, bool):
        wanted, ok = "true or false", isinstance(value, bool)
    elif isinstance(default, int):
        wanted, ok = "an integer", isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        wanted, ok = "a number", isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        return value
    if not ok:
        raise SpaceError(f"--set {key}={text}: {key} must be {wanted} (its default is {default!r})")
    return value


def parse_overrides(pairs: list[str], defaults: dict | set) -> dict:
    """`--set KEY=VALUE` pairs -> {key: value}. `defaults` is the family's {hyperparameter: default}:
    a value must have its default's type (int, float (an int will do), bool, str); given only the
    names, any value is taken."""
    defaults = defaults if isinstance(defaults, dict) else dict.fromkeys(defaults)
    out = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SpaceError(f"--set {pair!r}: expected KEY=VALUE")
        if key not in defaults:
            raise SpaceError(f"--set {key}: unknown hyperparameter; known: {', '.join(sorted(defaults))}")
        out[key] = _typed(key, text.strip(), defaults[key])
    return out


def read_space(text: str, known: set[str] | None = None, source: str = "search space",
               overrides: dict | None = None) -> dict:
    """TOML text -> {name: its checked table (searched) or its value (fixed)}, plain data, no Ray.
    `known` are the family's hyperparameters (None: any name); `overrides` (from --set) fix values,
    replacing what the file says about them; a string the file offers as a choice must be one of them."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpaceError(f"{source}: not valid TOML ({e})") from None
    space = {}
    for name, spec in raw.items():
        where = f"{source}: {name}"
        if known is not None and name not in known:
            raise SpaceError(f"{where}: unknown hyperparameter; known: {', '.join(sorted(known))}")
        if isinstance(spec, dict):
            space[name] = _check_table(where, spec)
        elif isinstance(spec, (int, float, str, bool)):
            space[name] = spec
        else:
            raise SpaceError(f"{where}: must be a table or a single value, got {spec!r}")
    for name, value in (overrides or {}).items():
        table = space.get(name)
        choices = table.get("values", []) if isinstance(table, dict) else []
        if isinstance(value, str) and choices and all(isinstance(c, str) for c in choices) and value not in choices:
            raise SpaceError(f"--set {name}={value}: must be one of {', '.join(choices)} ({source})")
        space[name] = value
    if not any(isinstance(v, dict) for v in space.values()):
        raise SpaceError(f"{source}: searches nothing; give at least one hyperparameter a distribution")
    return space


def defaults_point(space: dict, defaults: dict) -> tuple[dict | None, str]:
    """The family's defaults of the searched hyperparameters of `space` (read_space's), to try as a
    sweep's first trial: (the point, "") where every default lies in its distribution, else (None,
    why not)."""
    point = {}
    for name, table in space.items():
        if not isinstance(table, dict):
            continue
        value = defaults[name]
        if table["distribution"] == "choice":
            fits = value in table["values"]
            what = f"one of {table['values']}"
        else:
            integer = table["distribution"] in ("int", "logint")
            fits = (isinstance(value, (int, float)) and not isinstance(value, bool) and table["low"] <= value <= table["high"]
                    and (not integer or float(value).is_integer()))
            what = f"in [{table['low']:g}, {table['high']:g}]"
        if not fits:
            return None, f"{name}'s default {value!r} is not {what}"
        point[name] = value
    return point, ""


def parse_space(text: str, known: set[str], source: str = "search space", overrides: dict | None = None) -> dict:
    """TOML text -> {name: Tune domain or fixed value}; `known` are the family's hyperparameters;
    `overrides` (from --set) fix values, replacing what the file says about them."""
    space = read_space(text, known, source, overrides)
    return {name: _domain(v) if isinstance(v, dict) else v for name, v in space.items()}


def load_space(path: str | Path, known: set[str], overrides: dict | None = None) -> dict:
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise SpaceError(f"search space {path}: cannot read ({e.strerror if isinstance(e, OSError) else e})") from None
    return parse_space(text, known, str(path), overrides)


def describe(space: dict) -> dict[str, str]:
    """A short readable form of each entry, for --list, sweep.json and the dashboard."""
    from ray import tune

    out = {}
    for name, value in space.items():
        if isinstance(value, tune.search.sample.Categorical):
            out[name] = f"choice {value.categories}"
        elif isinstance(value, tune.search.sample.Domain):
            sampler = type(value.get_sampler()).__name__.lower()
            kind = "log" if "log" in sampler else ""
            bounds = (value.lower, value.upper - 1) if isinstance(value, tune.search.sample.Integer) else (value.lower, value.upper)
            out[name] = f"{kind}{'int' if isinstance(value, tune.search.sample.Integer) else 'uniform'} [{bounds[0]:g}, {bounds[1]:g}]"
        else:
            out[name] = f"fixed {value!r}"
    return out
