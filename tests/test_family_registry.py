"""Registration is checked when a family's or a dataset's module is imported: a broken entry fails
there with one clear message, not in every trial of a sweep."""

import json

import pytest

from trainables.datasets import DATASETS, register_dataset
from trainables.family import FAMILIES, ModelFamily, register_family
from trainables.layout import COST_METRICS
from trainables.models import all_families, get_family, metric_descriptions


def keeps(*args):
    """A method of the contract, defined (what it does is not checked at registration)."""


def family(**attributes) -> type[ModelFamily]:
    return type("Broken", (ModelFamily,), {"name": "broken", "description": "a test family",
                                           "defaults": {"batch_size": 8}, "build": keeps, "optimizers": keeps,
                                           "train_step": keeps, "generate": keeps, **attributes})


@pytest.mark.parametrize("attributes, fragment", [
    ({"name": "dcgan"}, "'dcgan' is registered already"),
    ({"name": "not-a-name"}, "name must be an identifier"),
    ({"name": ""}, "name must be an identifier"),
    ({"description": " "}, "description is empty"),
    ({"data_kind": "video"}, "data_kind must be one of images, paired, unpaired"),
    ({"objective": "accuracy"}, "objective 'accuracy' is not one of metric_names"),
    ({"mode": "lower"}, "mode must be 'min' or 'max'"),
    ({"metric_names": "fid"}, "metric_names must be a tuple of names"),
    ({"defaults": {"lr": 1e-3}}, "defaults must be a dict of every hyperparameter, batch_size included"),
    ({"mutable": ("lr",)}, "mutable names hyperparameters without a default: ['lr']"),
    ({"loss_names": ("loss_x",)}, "metric_descriptions must describe every metric and loss; missing: ['loss_x']"),
    ({"train_step": ModelFamily.train_step}, "define train_step"),
    ({"build": ModelFamily.build, "optimizers": ModelFamily.optimizers}, "define build, optimizers"),
    ({"generate": ModelFamily.generate}, "define generate"),
])
def test_a_family_that_breaks_the_contract_is_refused_at_registration(attributes, fragment):
    with pytest.raises(ValueError, match="model family Broken: ") as refused:
        register_family(family(**attributes))
    assert fragment in str(refused.value)
    assert "broken" not in FAMILIES


def test_only_model_families_register():
    with pytest.raises(TypeError, match="subclass of ModelFamily"):
        register_family(dict)


def test_the_registry_is_read_through_trainables_models():
    assert list(all_families()) == sorted(FAMILIES) and get_family("dcgan") is FAMILIES["dcgan"]
    with pytest.raises(ValueError, match="unknown model 'nosuch'; known: cgan, "):
        get_family("nosuch")


def test_every_family_describes_what_it_reports_for_sweep_json():
    for name, family in all_families().items():
        described = json.loads(json.dumps(metric_descriptions(name)))
        assert list(described) == [*family.metric_names, *family.loss_names, *COST_METRICS]
        assert all(text.strip() for text in described.values())


@pytest.mark.parametrize("name, loader, error, fragment", [
    ("digits", lambda root: None, ValueError, "dataset 'digits' is registered twice"),
    ("my-data", lambda root: None, ValueError, "must be an identifier"),
    ("my_data", "not a function", TypeError, "the loader must be callable"),
])
def test_a_bad_dataset_registration_is_refused(name, loader, error, fragment):
    with pytest.raises(error, match=fragment):
        register_dataset(name, "help")(loader)
    assert "my_data" not in DATASETS
