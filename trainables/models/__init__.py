"""One file per model family; importing this package registers them all (every module in it).
The registry is read here, after the imports, so that trainables/family.py imports no model."""

import contextlib
import importlib
import importlib.util
import pkgutil
import sys
import sysconfig
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

from trainables.errors import BadInput
from trainables.family import FAMILIES, ModelFamily, UnknownFamily, register_family
from trainables.storage import cache_root
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
    trials, infer and rescore import it again: its module, the file it was read from, and whether
    an installed package holds it (every node has that one already). None for a built-in family.
    A family defined in __main__ (a notebook cell, the script itself) has no file to import."""
    module = type(family).__module__
    if module.startswith(f"{__name__}."):
        return None
    file = getattr(sys.modules.get(module), "__file__", None) if module != "__main__" else None
    installed = bool(file) and any(Path(file).resolve().is_relative_to(Path(p).resolve())
                                   for p in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    return {"module": module, "file": str(Path(file).resolve()) if file else None, "installed": installed}


def family_for(name: str, source: dict | None = None, defined=None) -> ModelFamily:
    """get_family, first importing a family of the user's own from where its sweep or checkpoint
    says it came from: its module by name (a trial's node has it through Ray's runtime_env, an
    installed package everywhere), else its file; `defined`: the class itself, for one defined in
    __main__ (shipped to the trials by value). A family that is not there is refused in one line,
    as is a file in the cache of remote experiments (an experiment names it: data, never code)."""
    if name not in FAMILIES and defined is not None:
        register_family(defined)
    if name not in FAMILIES and source and source.get("module") != "__main__":
        module, file = source.get("module"), source.get("file")
        with user_code(f"model family {name!r} from {file or module}"):
            try:
                loaded = importlib.import_module(module)
                if getattr(loaded, "__file__", None) is None:  # a folder of that name (a namespace package)
                    sys.modules.pop(module)
            except ImportError:
                pass
            if name not in FAMILIES and file:
                if not Path(file).is_file():
                    raise UnknownFamily(f"model family {name!r} came from {file}, which is not here; pass "
                                        f"--family-module with its file")
                if Path(file).resolve().is_relative_to(cache_root().resolve()):
                    raise UnknownFamily(f"model family {name!r}: {file} is in the cache of remote experiments, "
                                        f"which is never imported; pass --family-module with your own copy")
                import_file(Path(file), module if module not in sys.modules else None)
    if name not in FAMILIES and source:
        where = "a notebook or script's __main__" if source.get("module") == "__main__" else source.get("module")
        raise UnknownFamily(f"model family {name!r} came from {where}, which is not here; pass --family-module "
                            f"with its file")
    return get_family(name)


@contextlib.contextmanager
def user_code(what: str):
    """The user's module failing as it is imported (a syntax error, a missing dependency, a family
    breaking the contract): one line, as bad input."""
    try:
        yield
    except BadInput:
        raise
    except Exception as e:
        message = " ".join(str(e).split()) or type(e).__name__
        raise BadInput(f"{what}: {type(e).__name__}: {message}") from None


def load_family_module(text: str) -> list[str]:
    """--family-module: a .py file or a module name, imported; its register_family calls register
    its families (checked, so that a family breaking the contract is refused here, in one line).
    Returns the names of the families it defines (a package: those of its submodules too)."""
    if text.endswith(".py") and not Path(text).is_file():
        raise BadInput(f"--family-module {text}: no such file")
    try:
        with user_code(f"--family-module {text}"):
            module = import_file(Path(text)) if text.endswith(".py") else importlib.import_module(text)
    except BadInput as e:
        if "ModuleNotFoundError" in str(e) and not text.endswith(".py"):
            raise BadInput(f"{e.args[0]} (give a .py file, or put its folder on PYTHONPATH)") from None
        raise
    names = [n for n, f in FAMILIES.items()
             if type(f).__module__ == module.__name__ or type(f).__module__.startswith(module.__name__ + ".")]
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
    for point in entry_points(group=ENTRY_POINTS):
        try:
            loaded = point.load()
        except Exception as e:
            raise BadInput(f"entry point {point.name} = {point.value} ({ENTRY_POINTS}): {type(e).__name__}: "
                           f"{' '.join(str(e).split())}") from None
        if isinstance(loaded, type) and issubclass(loaded, ModelFamily) and loaded.name not in FAMILIES:
            register_family(loaded)
    _entry_points_loaded = True
