"""One file per model family; importing this package registers them all (every module in it).
The registry is read here, after the imports, so that trainables/family.py imports no model."""

import importlib
import importlib.util
import pkgutil
import sys
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

from trainables.errors import BadInput
from trainables.family import FAMILIES, ModelFamily, UnknownFamily, register_family
from trainables.layout import COST_METRICS

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def get_family(name: str) -> ModelFamily:
    if name not in FAMILIES:
        load_entry_points()
    if name not in FAMILIES:
        raise UnknownFamily(f"unknown model {name!r}; known: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]


def all_families() -> dict[str, ModelFamily]:
    load_entry_points()
    return dict(sorted(FAMILIES.items()))


def metric_descriptions(model: str) -> dict[str, str]:
    """What each metric and loss of family `model` means, for the experiment's sweep.json: the
    dashboard reads its labels from there without importing torch and the families."""
    family = get_family(model)
    return {**{name: family.metric_descriptions[name] for name in (*family.metric_names, *family.loss_names)},
            **COST_METRICS}


# --- families of the user's own -------------------------------------------------------------------
ENTRY_POINTS = "gen_orchestrator.families"  # an installed package's families: `[project.entry-points."..."]`
_entry_points_loaded = False


def family_source(family: ModelFamily) -> dict | None:
    """Where a family of the user's own comes from, kept in sweep.json and every checkpoint so that
    trials, best, infer and rescore import it again: its module, and the file it was read from.
    None for a built-in family."""
    module = type(family).__module__
    if module.startswith(f"{__name__}."):
        return None
    file = getattr(sys.modules.get(module), "__file__", None)
    return {"module": module, "file": str(Path(file).resolve()) if file else None}


def family_for(name: str, source: dict | None = None) -> ModelFamily:
    """get_family, first importing a family of the user's own from where its sweep or checkpoint
    says it came from: its module by name (a trial's node has it through Ray's runtime_env), else
    its file; a family that is no longer there is refused in one line."""
    if name not in FAMILIES and source:
        module, file = source.get("module"), source.get("file")
        try:
            if getattr(importlib.import_module(module), "__file__", None) is None:
                sys.modules.pop(module)  # a folder of that name (a namespace package), not the module
                raise ImportError(module)
        except ImportError:
            if not (file and Path(file).is_file()):
                raise UnknownFamily(f"model family {name!r} came from {file or module}, which is not here; "
                                    f"pass --family-module with its file") from None
            import_file(Path(file), module)
    return get_family(name)


def load_family_module(text: str) -> list[str]:
    """--family-module: a .py file or a module name, imported; its register_family calls register
    its families (checked, so that a family breaking the contract is refused here, in one line).
    Returns the names of the families it defines."""
    try:
        if text.endswith(".py"):
            if not Path(text).is_file():
                raise BadInput(f"--family-module {text}: no such file")
            module = import_file(Path(text))
        else:
            module = importlib.import_module(text)
    except BadInput:
        raise
    except ModuleNotFoundError as e:
        raise BadInput(f"--family-module {text}: no module named {e.name!r} (give a .py file, or put its folder "
                       f"on PYTHONPATH)") from None
    except Exception as e:  # the module's own error, e.g. check_family's
        message = " ".join(str(e).split()) or type(e).__name__
        raise BadInput(f"--family-module {text}: {message}") from None
    names = [n for n, f in FAMILIES.items() if type(f).__module__ == module.__name__]
    if not names:
        raise BadInput(f"--family-module {text} defines no model family: decorate a ModelFamily subclass with "
                       f"@register_family (docs/extending.md)")
    return names


def import_file(path: Path, name: str | None = None) -> ModuleType:
    """A module of the user's own, imported from its file under its file name (as Ray's runtime_env
    makes it importable on every node), once."""
    path, name = path.resolve(), name or path.stem
    loaded = sys.modules.get(name)
    if loaded is not None:
        if Path(getattr(loaded, "__file__", "") or "").resolve() != path:
            raise BadInput(f"--family-module {path}: the module name {name!r} is taken by {loaded.__name__} "
                           f"({getattr(loaded, '__file__', 'built in')}); rename the file")
        return loaded
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_entry_points() -> None:
    """The families that installed packages declare in the ENTRY_POINTS group: each entry point
    names a module that registers its families, or a ModelFamily subclass. Loaded once."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for point in entry_points(group=ENTRY_POINTS):
        try:
            loaded = point.load()
        except Exception as e:
            raise BadInput(f"entry point {point.name} = {point.value} ({ENTRY_POINTS}): {type(e).__name__}: "
                           f"{' '.join(str(e).split())}") from None
        if isinstance(loaded, type) and issubclass(loaded, ModelFamily) and loaded.name not in FAMILIES:
            register_family(loaded)
