"""Property-based tests (hypothesis) of what reads user input: the search-space parser, `--set`,
and the sweep's command line. Random valid input parses to what it says; random invalid input is
refused with BadInput (one line, exit 2 at the command line), never another exception."""

from __future__ import annotations

import argparse
import contextlib
import io
import math
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from ray import tune

from orchestrator.sweep import build_parser
from trainables.cli import non_negative_float, positive_int
from search_spaces import SpaceError, parse_overrides, parse_space
from trainables.errors import BadInput
from trainables.models import get_family

KNOWN = sorted(get_family("dcgan").defaults)
CHECKS = settings(max_examples=60, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# --- TOML text from Python values (tomllib only reads) ------------------------------------------

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
small_int = st.integers(-10**6, 10**6)
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
scalar = st.one_of(small_int, finite, text, st.booleans())


def toml_string(value: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    return '"' + "".join("\\" + c if c in '"\\' else f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7f else c
                         for c in value) + '"'


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, (int, str)):
        return toml_string(value) if isinstance(value, str) else str(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    raise TypeError(value)


def toml(space: dict) -> str:
    """Bare values first (a bare key after a table would belong to it), then one table per dict."""
    lines = [f"{toml_string(k)} = {toml_value(v)}" for k, v in space.items() if not isinstance(v, dict)]
    for key, table in space.items():
        if isinstance(table, dict):
            lines.append(f"[{toml_string(key)}]")
            lines += [f"{toml_string(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


# --- valid spaces -------------------------------------------------------------------------------

@st.composite
def float_range(draw, log: bool):
    low = draw(st.floats(1e-8, 1e3) if log else finite)
    high = draw(st.floats(low, low * 1e4 + 1 if log else low + 1e6, exclude_min=True))
    assume(low < high)
    return {"distribution": "loguniform" if log else "uniform", "low": low, "high": high}


@st.composite
def int_range(draw, log: bool):
    low = draw(st.integers(1, 10**5) if log else small_int)
    return {"distribution": "logint" if log else "int", "low": low, "high": draw(st.integers(low, low + 10**5))}


def unique_values(values: list) -> bool:
    return len(set(map(repr, values))) == len(values)


searched = st.one_of(
    float_range(False), float_range(True), int_range(False), int_range(True),
    st.lists(scalar, min_size=1, max_size=5).filter(unique_values).map(lambda v: {"distribution": "choice", "values": v}))


@st.composite
def valid_space(draw) -> dict:
    names = draw(st.lists(st.sampled_from(KNOWN), min_size=1, max_size=len(KNOWN), unique=True))
    space = {names[0]: draw(searched)}  # at least one searched: a space that searches nothing is refused
    for name in names[1:]:
        space[name] = draw(st.one_of(searched, scalar))
    return space


@CHECKS
@given(valid_space())
def test_valid_spaces_parse_to_tune_domains_with_their_bounds(space):
    parsed = parse_space(toml(space), set(KNOWN))
    assert set(parsed) == set(space)
    for name, spec in space.items():
        domain = parsed[name]
        if not isinstance(spec, dict):
            assert domain == spec or (isinstance(spec, float) and math.isnan(spec))
            continue
        kind = spec["distribution"]
        if kind == "choice":
            assert isinstance(domain, tune.search.sample.Categorical) and domain.categories == spec["values"]
            continue
        integer = kind in ("int", "logint")
        assert isinstance(domain, tune.search.sample.Integer if integer else tune.search.sample.Float)
        assert domain.lower == spec["low"]
        assert domain.upper == (spec["high"] + 1 if integer else spec["high"])  # the file's int bounds are inclusive
        assert ("Log" in type(domain.get_sampler()).__name__) == kind.startswith("log")
        slack = 1e-9 * max(abs(spec["low"]), abs(spec["high"]))  # exp(log(x)) rounds
        for value in domain.sample(size=5):
            assert spec["low"] - slack <= value <= spec["high"] + slack


# --- invalid spaces -----------------------------------------------------------------------------

BAD_NUMBERS = st.one_of(text, st.booleans(), st.lists(small_int, max_size=2), st.just(math.inf), st.just(-math.inf),
                        st.just(math.nan))


@st.composite
def broken_space(draw) -> tuple[str, str]:
    """A valid space with one thing broken; returns (TOML text, a fragment the message must hold)."""
    space = draw(valid_space())
    name = next(iter(space))
    how = draw(st.sampled_from(["type", "empty range", "log low", "unknown distribution", "unknown field",
                                "unknown hyperparameter", "missing bound", "empty choice", "duplicate choice",
                                "not a table"]))
    if how == "type":
        kind = draw(st.sampled_from(["uniform", "loguniform", "int", "logint"]))
        table = draw(int_range(kind == "logint") if kind.endswith("int") else float_range(kind == "loguniform"))
        table = {**table, "distribution": kind}
        bad = draw(BAD_NUMBERS if not kind.endswith("int") else st.one_of(BAD_NUMBERS, st.floats(0.5, 1e6)))
        assume(not (kind.endswith("int") and isinstance(bad, float) and bad.is_integer()))
        space[name] = {**table, draw(st.sampled_from(["low", "high"])): bad}
        fragment = "must be"
    elif how == "empty range":
        kind = draw(st.sampled_from(["uniform", "loguniform", "int", "logint"]))
        integer = kind.endswith("int")
        high = draw(st.integers(1, 10**5) if integer else st.floats(1e-6, 1e6))
        low = draw(st.integers(high + 1, high + 10**5) if integer else st.floats(high, high * 10))  # low >= high
        space[name] = {"distribution": kind, "low": low, "high": high}
        fragment = "empty range"
    elif how == "log low":
        kind = draw(st.sampled_from(["loguniform", "logint"]))
        low = draw(st.integers(-10**5, 0) if kind == "logint" else st.floats(-1e6, 0))
        space[name] = {"distribution": kind, "low": low, "high": draw(st.integers(1, 10**6))}
        fragment = "needs low > 0"
    elif how == "unknown distribution":
        kind = draw(text.filter(lambda t: t not in ("uniform", "loguniform", "int", "logint", "choice")))
        space[name] = {"distribution": kind, "low": 0, "high": 1}
        fragment = "distribution must be one of"
    elif how == "unknown field":
        table = draw(searched)
        key = draw(text.filter(lambda t: t not in table and t not in ("distribution", "low", "high", "values")))
        space[name] = {**table, key: draw(scalar)}
        fragment = "unknown field"
    elif how == "unknown hyperparameter":
        unknown = draw(text.filter(lambda t: t not in KNOWN))
        space[unknown] = draw(st.one_of(searched, scalar))
        fragment = "unknown hyperparameter"
    elif how == "missing bound":
        table = draw(float_range(False))
        del table[draw(st.sampled_from(["low", "high"]))]
        space[name] = table
        fragment = "missing"
    elif how == "empty choice":
        space[name] = {"distribution": "choice", "values": []}
        fragment = "non-empty list"
    elif how == "duplicate choice":
        value = draw(scalar)
        assume(not (isinstance(value, float) and math.isnan(value)))
        space[name] = {"distribution": "choice", "values": [value, *draw(st.lists(scalar, max_size=2)), value]}
        fragment = "duplicates"
    else:
        space[name] = draw(st.lists(small_int, max_size=3))
        fragment = "must be a table or a single value"
    return toml(space), fragment


@CHECKS
@given(broken_space())
def test_invalid_spaces_are_refused_with_a_reason(case):
    source, fragment = case
    with pytest.raises(SpaceError) as refused:
        parse_space(source, set(KNOWN), "space.toml")
    message = refused.value.args[0]
    assert message.startswith("space.toml") and fragment in message, (message, source)


@CHECKS
@given(st.one_of(text, st.text(st.sampled_from('[]="\n.,-+0123456789eafinltrudomhgv _#{}'), max_size=80)))
def test_any_text_parses_or_is_refused_never_crashes(source):
    try:
        space = parse_space(source, set(KNOWN))
    except BadInput as e:
        assert e.args and e.args[0]
    else:
        assert set(space) <= set(KNOWN)


@CHECKS
@given(st.lists(st.one_of(st.text(max_size=20), st.sampled_from(KNOWN).flatmap(
    lambda k: st.text(max_size=10).map(lambda v: f"{k}={v}"))), max_size=4))
def test_set_overrides_parse_or_are_refused(pairs):
    try:
        overrides = parse_overrides(pairs, set(KNOWN))
    except SpaceError as e:
        assert e.args[0].startswith("--set")
    else:
        assert set(overrides) <= set(KNOWN)


# --- command-line validators --------------------------------------------------------------------

number_text = st.one_of(st.integers(-10**12, 10**12).map(str), st.floats().map(repr), st.text(max_size=10),
                        st.sampled_from(["", " 3 ", "1e3", "0x10", "1_000", "nan", "-inf", "+5", "٣", "7\n"]))


@CHECKS
@given(number_text)
def test_positive_int_accepts_exactly_the_whole_numbers_from_one(value):
    try:
        parsed = positive_int(value)
    except argparse.ArgumentTypeError as e:
        assert len(str(e).splitlines()) == 1
        with contextlib.suppress(ValueError):
            assert int(value) < 1
    else:
        assert isinstance(parsed, int) and parsed >= 1 and parsed == int(value)


@CHECKS
@given(number_text)
def test_non_negative_float_accepts_exactly_the_finite_numbers_from_zero(value):
    try:
        parsed = non_negative_float(value)
    except argparse.ArgumentTypeError as e:
        assert len(str(e).splitlines()) == 1
        with contextlib.suppress(ValueError):
            assert not (math.isfinite(float(value)) and float(value) >= 0)
    else:
        assert math.isfinite(parsed) and parsed >= 0 and parsed == float(value)


PARSER = build_parser()
OPTIONS = sorted(o for o in PARSER._option_string_actions if o not in ("-h", "--help", "--list"))
token = st.one_of(st.sampled_from(OPTIONS), st.sampled_from(["dcgan", "vae", "nosuchmodel", "digits"]), number_text,
                  st.text(max_size=15))


def parse(argv: list[str]) -> tuple[object, str]:
    """The sweep's argument parsing in-process: (Namespace or SystemExit, what went to stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            result = build_parser().parse_args(argv)
        except SystemExit as e:
            result = e
    return result, err.getvalue()


@CHECKS
@given(st.lists(token, max_size=8))
def test_garbage_arguments_exit_2_with_one_line(argv):
    result, err = parse(argv)
    if isinstance(result, SystemExit):
        if result.code == 0:  # an abbreviation of --help or --list (e.g. --he) asked for help
            return
        assert result.code == 2, (argv, err)
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, (argv, err)
    else:
        assert err == ""
        for name in ("trials", "max_steps", "eval_every", "log_every", "eval_samples", "subset", "max_concurrent"):
            assert getattr(result, name) is None or getattr(result, name) >= 1
        for name in ("cpus_per_worker", "gpus_per_worker"):  # None: not given (sweep.json's on --resume)
            value = getattr(result, name)
            assert value is None or (math.isfinite(value) and value >= 0)


@CHECKS
@given(st.sampled_from(["--trials", "--max-steps", "--eval-every", "--subset", "--workers-per-trial"]),
       st.integers(-10**9, 0))
def test_zero_or_negative_counts_are_refused(option, value):
    result, err = parse(["dcgan", option, str(value)])
    assert isinstance(result, SystemExit) and result.code == 2
    assert err.count("\n") == 1 and option in err and "must be 1 or more" in err, err


@given(max_steps=st.integers(1, 10_000), eval_every=st.integers(1, 10_000), log_every=st.integers(1, 10_000))
def test_any_budget_fits_its_intervals_and_ashas_grace_period(max_steps, eval_every, log_every):
    """`--max-steps 40` alone (eval-every 250 by default) once crashed ASHA (grace_period > max_t):
    intervals above --max-steps are clamped to it, with a note; others are kept. ASHA's default first
    rung falls on an evaluation."""
    from orchestrator.spec import fit_budget
    from orchestrator.tuners import asha_scheduler, grace_period

    spec = {"max_steps": max_steps, "eval_every": eval_every, "log_every": log_every}
    notes = fit_budget(spec)
    assert spec["eval_every"] == min(eval_every, max_steps) and spec["log_every"] == min(log_every, max_steps)
    assert len(notes) == (eval_every > max_steps) + (log_every > max_steps)
    settings = SimpleNamespace(**spec, grace_period=None, reduction_factor=2)
    asha_scheduler(settings)  # raises if the grace period doesn't fit
    rung = grace_period(settings)  # the first rung falls on an evaluation
    assert rung % spec["eval_every"] == 0 and spec["eval_every"] <= rung <= max(spec["eval_every"], max_steps // 4)
