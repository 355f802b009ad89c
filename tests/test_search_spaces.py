import pytest
from ray import tune

from search_spaces import SpaceError, default_space_path, load_space, parse_space
from trainables.family import get_family

KNOWN = set(get_family("dcgan").defaults)


def test_shipped_dcgan_space_parses_to_tune_domains():
    space = load_space(default_space_path("dcgan"), KNOWN)
    assert set(space) == {"lr_g", "lr_d", "beta1", "latent_dim", "batch_size"}
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
