"""One file per model family; importing this package registers them all (every module in it).
The registry is read here, after the imports, so that trainables/family.py imports no model."""

import importlib
import pkgutil

from trainables.family import FAMILIES, ModelFamily, UnknownFamily
from trainables.layout import COST_METRICS

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def get_family(name: str) -> ModelFamily:
    if name not in FAMILIES:
        raise UnknownFamily(f"unknown model {name!r}; known: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]


def all_families() -> dict[str, ModelFamily]:
    return dict(sorted(FAMILIES.items()))


def metric_descriptions(model: str) -> dict[str, str]:
    """What each metric and loss of family `model` means, for the experiment's sweep.json: the
    dashboard reads its labels from there without importing torch and the families."""
    family = get_family(model)
    return {**{name: family.metric_descriptions[name] for name in (*family.metric_names, *family.loss_names)},
            **COST_METRICS}
