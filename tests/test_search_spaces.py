import subprocess
import sys

import pytest
from ray import tune

from conftest import ROOT
from search_spaces import SpaceError, default_space_path, load_space, parse_overrides, parse_space
from trainables.models import get_family

KNOWN = set(get_family("dcgan").defaults)


def test_shipped_dcgan_space_parses_to_tune_domains():
    space = load_space(default_space_path("dcgan"), KNOWN)
    assert set(space) == {"lr_g", "lr_d", "beta1", "latent_dim", "batch_size", "diffaug"}
    assert isinstance(space["lr_g"], tune.search.sample.Float)
    assert space["latent_dim"].categories == [16, 32, 64, 128]


def test_fixed_values_and_inclusive_int_bounds():
    space = parse_space('width = 32\n[latent_dim]\ndistribution = "int"\nlow = 8\nhigh = 8\n', KNOWN)
    assert space["width"] == 32
    assert {space["latent_dim"].sample() for _ in range(20)} == {8}


@pytest.mark.parametrize("text, message", [
    ('[lr_g]\ndistribution = "loguniform"\nlow = 1e-3\nhigh = 1e-4\n', "empty range"),
    ('[lr_g]\ndistribution = "loguniform"\nlow = 0\nhigh = 1e-4\n', "low > 0"),
    ('[lr_g]\ndistribution = "uniform"\nlow = "a"\nhigh = 1\n', "must be a number"),
    ('[lr_g]\ndistribution = "gaussian"\nlow = 0\nhigh = 1\n', "distribution must be one of"),
    ('[lr_g]\ndistribution = "uniform"\nlow = 0\n', "missing 'high'"),
    ('[lr_g]\ndistribution = "uniform"\nlow = 0\nhigh = 1\nstep = 2\n', "unknown field"),
    ('[latent_dim]\ndistribution = "int"\nlow = 1.5\nhigh = 4\n', "must be an integer"),
    ('[latent_dim]\ndistribution = "choice"\nvalues = []\n', "non-empty list"),
    ('[latent_dim]\ndistribution = "choice"\nvalues = [1, 1]\n', "duplicates"),
    ('[learning_rate]\ndistribution = "uniform"\nlow = 0\nhigh = 1\n', "unknown hyperparameter"),
    ("width = 32\n", "searches nothing"),
    ("[lr_g\n", "not valid TOML"),
])
def test_invalid_spaces_are_refused_with_a_reason(text, message):
    with pytest.raises(SpaceError, match=message):
        parse_space(text, KNOWN)


VAE = get_family("vae").defaults


@pytest.mark.parametrize("pair, value", [
    ("latent_dim=32", 32), ("latent_dim=1_000", 1000), ("beta=2", 2), ("beta=0.5", 0.5), ("arch=conv", "conv"),
    ("arch=1", "1"), ('recon="mse"', "mse"),
])
def test_set_values_of_the_defaults_type_are_taken(pair, value):
    key = pair.partition("=")[0]
    assert parse_overrides([pair], VAE) == {key: value}
    assert type(parse_overrides([pair], VAE)[key]) is type(value)


@pytest.mark.parametrize("pair, message", [
    ("latent_dim=abc", "latent_dim must be an integer"),
    ("latent_dim=8.0", "latent_dim must be an integer"),
    ("latent_dim=true", "latent_dim must be an integer"),
    ("beta=x", "beta must be a number"),
    ("lr=false", "lr must be a number"),
    ("latent_dim", "expected KEY=VALUE"),
    ("depth=3", "unknown hyperparameter"),
])
def test_set_values_of_another_type_are_refused(pair, message):
    with pytest.raises(SpaceError, match=message):
        parse_overrides([pair], VAE)


def test_set_booleans_need_true_or_false():
    assert parse_overrides(["flag=true"], {"flag": False}) == {"flag": True}
    with pytest.raises(SpaceError, match="flag must be true or false"):
        parse_overrides(["flag=1"], {"flag": False})


def test_set_string_must_be_one_of_the_spaces_choices():
    path = default_space_path("vae")
    assert load_space(path, set(VAE), parse_overrides(["arch=conv"], VAE))["arch"] == "conv"
    with pytest.raises(SpaceError, match="arch=cnn: must be one of mlp, conv"):
        load_space(path, set(VAE), parse_overrides(["arch=cnn"], VAE))
    # numbers may be fixed outside the choices the space samples from
    assert load_space(path, set(VAE), {"batch_size": 48})["batch_size"] == 48


def test_read_space_gives_plain_data_without_ray():
    script = ("import sys; from search_spaces import read_space, default_space_path; import dashboards.figures; "
              "space = read_space(default_space_path('vae').read_text(), overrides={'arch': 'conv'}); "
              "print(space['lr']['distribution'], space['arch'], space['recon']); "
              "assert not [m for m in sys.modules if m == 'ray' or m.startswith('ray.')]")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["loguniform", "conv", "bce"]


def test_the_dashboard_reads_the_sweeps_space_with_search_spaces():
    from dashboards.figures import search_space

    searched, fixed = search_space({"space_toml": default_space_path("vae").read_text(), "overrides": {"arch": "conv"}})
    assert set(searched) == {"lr", "latent_dim", "beta", "batch_size"} and searched["lr"]["low"] == 2e-4
    assert fixed == {"recon": "bce", "arch": "conv"}
    assert search_space({"space_toml": "[lr\n"}) == ({}, {})
