"""Security: checkpoints and experiments are data, never code; paths in their metadata can't make a
command write outside its destination; the dashboard loads nothing from the network; nothing
binds a server to a public interface by default."""

from __future__ import annotations

import html.parser
import io
import json
import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT, assert_one_line_error, run_cli
from orchestrator import best, infer, sweep
from trainables.experiment import load_experiment
from dashboards import build as dashboards_build
from test_bad_input import best_checkpoint, cli, hashes
from trainables.checkpoints import CheckpointError, load_checkpoint, load_training_state
from trainables.models import get_family


@pytest.fixture()
def experiment(tiny_experiment) -> Path:
    return tiny_experiment


# --- (a) no unpickling of what a checkpoint or an experiment holds ------------------------------

class RunsShell:
    """Unpickling this runs a shell command (pickle calls os.system)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class OpensFile:
    """Unpickling this creates a file (pickle calls builtins.open)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def malicious_payloads(marker: Path) -> dict[str, bytes]:
    """Pickles that would create `marker`: plain pickles and torch.save's zip format."""
    payloads = {}
    for name, obj in (("system", RunsShell(marker)), ("open", OpensFile(marker))):
        payloads[f"{name}-pickle"] = pickle.dumps(obj)
        buffer = io.BytesIO()
        torch.save({"step": 10, "optimizers": {"g": obj}}, buffer)
        payloads[f"{name}-torch"] = buffer.getvalue()
    return payloads


def test_the_payloads_do_run_when_unpickled(tmp_path):
    """The control: what the tests below plant really creates the marker once unpickled."""
    for name, payload in malicious_payloads(tmp_path / "marker").items():
        pickle.loads(payload) if name.endswith("pickle") else torch.load(io.BytesIO(payload), weights_only=False)
        assert (tmp_path / "marker").exists(), name
        (tmp_path / "marker").unlink()


def test_a_malicious_training_state_is_refused_not_run(experiment, tmp_path):
    """The --resume path (trainables.loop restores through load_training_state) refuses it."""
    marker = tmp_path / "pwned"
    source = best_checkpoint(experiment)
    config = json.loads((source / "config.json").read_text())
    family = get_family(config["model"])
    for name, payload in malicious_payloads(marker).items():
        folder = Path(shutil.copytree(source, tmp_path / name))
        (folder / "training_state.pt").write_bytes(payload)
        modules = family.build({**family.defaults, **config["hp"]}, config["data"])
        with pytest.raises(CheckpointError, match=r"training_state.pt is refused: it (would call|holds more than)") as e:
            load_training_state(folder, modules, {})
        assert len(str(e.value).splitlines()) == 1
        assert not marker.exists(), name
    # the untouched state still loads
    modules = family.build({**family.defaults, **config["hp"]}, config["data"])
    assert load_training_state(source, modules, {}) == config["step"]


@pytest.mark.parametrize("planted", ["training_state.pt", "model.safetensors", "config.json", "metrics.json",
                                     "samples.png", "evaluation.json", "model.pt", "model.pkl"])
def test_infer_never_runs_a_planted_pickle(capsys, experiment, tmp_path, planted):
    marker = tmp_path / "pwned"
    folder = Path(shutil.copytree(best_checkpoint(experiment), tmp_path / "ckpt"))
    (folder / planted).write_bytes(malicious_payloads(marker)["system-torch" if planted.endswith(".pt") else "system-pickle"])
    out = tmp_path / "out.png"
    proc = cli(capsys, infer.main, str(folder), "sample", "--n", "4", "--device", "cpu", "--out", str(out))
    if planted in ("model.safetensors", "config.json"):  # what loading reads: refused
        assert_one_line_error(proc, "model.safetensors is damaged" if planted == "model.safetensors" else "not readable JSON")
    else:  # never read for inference
        assert proc.returncode == 0, proc.stderr
    assert not marker.exists()


def test_infer_refuses_a_malicious_checkpoint_through_the_real_command(experiment, tmp_path):
    marker = tmp_path / "pwned"
    folder = Path(shutil.copytree(best_checkpoint(experiment), tmp_path / "ckpt"))
    (folder / "model.safetensors").write_bytes(malicious_payloads(marker)["open-pickle"])
    proc = run_cli("orchestrator.infer", str(folder), "sample", "--device", "cpu", "--out", str(tmp_path / "o.png"))
    assert_one_line_error(proc, "model.safetensors is damaged")
    assert not marker.exists() and not (tmp_path / "o.png").exists()


def test_reading_an_experiment_never_unpickles_tune_state(capsys, experiment, tmp_path):
    """best and the dashboard read JSON only: Tune's pickles (tuner.pkl, params.pkl, searcher
    state) may hold anything and are left alone."""
    marker = tmp_path / "pwned"
    copy = Path(shutil.copytree(experiment, tmp_path / "exp"))
    payload = malicious_payloads(marker)["system-pickle"]
    for pkl in [*copy.rglob("*.pkl"), copy / "tuner.pkl"]:
        pkl.write_bytes(payload)
    assert cli(capsys, best.main, str(copy), "--dst", str(tmp_path / "best")).returncode == 0
    assert cli(capsys, dashboards_build.main, str(copy), "--out", str(tmp_path / "d.html")).returncode == 0
    assert not marker.exists()


def test_no_code_path_unpickles_freely():
    """Static check of the sources: torch.load only with weights_only=True, numpy without pickles,
    YAML safely, and pickle only through the restricted CIFAR unpickler."""
    problems = []
    for path in sorted(p for d in ("orchestrator", "trainables", "dashboards", "search_spaces")
                       for p in (ROOT / d).rglob("*.py")):
        source = path.read_text()
        for call in re.finditer(r"torch\.load\(([^()]|\([^()]*\))*\)", source):
            if "weights_only=True" not in call.group(0):
                problems.append(f"{path.name}: {call.group(0)}")
        problems += [f"{path.name}: {m.group(0)}" for m in re.finditer(r"allow_pickle\s*=\s*True|yaml\.load\(|"
                                                                           r"yaml\.unsafe_load|dill\.|cloudpickle\.load", source)]
        if re.search(r"pickle\.loads?\(|pickle\.Unpickler\b", source) and path != ROOT / "trainables" / "datasets" / "cifar.py":
            problems.append(f"{path.name}: unpickles")
    assert problems == []


# --- (b) paths in metadata can't lead writes outside the destination ----------------------------

def tree(root: Path) -> dict[str, str]:
    """Every entry under root: file hashes, and links with their targets."""
    entries = hashes(root)
    entries.update({str(p.relative_to(root)): f"-> {os.readlink(p)}" for p in root.rglob("*") if p.is_symlink()})
    entries.update({str(p.relative_to(root)) + "/": "dir" for p in root.rglob("*") if p.is_dir() and not p.is_symlink()})
    return entries


def changed(before: dict, after: dict) -> set[str]:
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def checkpoint_dirs(experiment: Path) -> list[Path]:
    return sorted(p for p in experiment.glob("checkpoints/*/checkpoint_*") if p.is_dir())


def hostile_copy(experiment: Path, root: Path) -> Path:
    """A copy of the experiment whose JSON metadata names paths out of every folder: trial and
    experiment names, steps, checkpoint and data paths, relative (../..) and absolute."""
    copy = Path(shutil.copytree(experiment, root / "storage" / "exp"))
    evil_abs = str(root / "outside" / "evil")
    spec = json.loads((copy / "sweep.json").read_text())
    spec.update(name="../../../evil", space_file=evil_abs, data_root="../../evil", dataset="../../evil")
    (copy / "sweep.json").write_text(json.dumps(spec))
    for trial in copy.glob("run_trial_*"):
        params = json.loads((trial / "params.json").read_text())
        (trial / "params.json").write_text(json.dumps({**params, "name": "../../evil", "path": evil_abs}))
        rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
        for row in rows:
            row.update(trial_id="../../evil", checkpoint_dir_name=evil_abs, logdir="../../evil")
        (trial / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for i, ckpt in enumerate(checkpoint_dirs(copy)):
        metrics = json.loads((ckpt / "metrics.json").read_text())
        metrics.update(step=["../../evil", evil_abs][i % 2], trial_id="../../evil", path=evil_abs)
        (ckpt / "metrics.json").write_text(json.dumps(metrics))
        config = json.loads((ckpt / "config.json").read_text())
        config.update(experiment="../../evil", trial_id=evil_abs, dataset="../../evil")
        (ckpt / "config.json").write_text(json.dumps(config))
    return copy


def test_best_writes_only_into_its_destination(capsys, experiment, tmp_path):
    copy = hostile_copy(experiment, tmp_path)
    before = tree(tmp_path)
    proc = cli(capsys, best.main, str(copy), "--top", "2", "--dst", str(tmp_path / "dst"))
    assert proc.returncode == 0, proc.stderr
    assert {k for k in changed(before, tree(tmp_path)) if not k.startswith("dst")} == set()
    names = sorted(p.name for p in (tmp_path / "dst").iterdir())
    assert len(names) == 3 and names[0] == "best.json", names
    assert all(re.fullmatch(r"rank[12]-[0-9a-f_]+-step-1", n) for n in names[1:]), names  # steps were not numbers
    # default destination: EXPERIMENT/best, and nothing else
    before = tree(tmp_path)
    assert cli(capsys, best.main, str(copy)).returncode == 0
    assert {k for k in changed(before, tree(tmp_path)) if not k.startswith("storage/exp/best")} == set()


def test_best_refuses_a_planted_link_out_of_the_experiment(capsys, experiment, tmp_path):
    copy = hostile_copy(experiment, tmp_path)
    (tmp_path / "outside").mkdir()
    (copy / "best").symlink_to(tmp_path / "outside", target_is_directory=True)
    before = tree(tmp_path)
    assert_one_line_error(cli(capsys, best.main, str(copy)), "leads outside", "remove it or pass another --dst")
    assert changed(before, tree(tmp_path)) == set()
    # links planted inside a destination are replaced, not written through
    (copy / "best").unlink()
    (copy / "best").mkdir()
    (copy / "best" / "best.json").symlink_to(tmp_path / "outside" / "best.json")
    for rank, (trial, ckpt) in enumerate(load_experiment(copy).ranked_checkpoints()[:2], start=1):
        name = best.SAFE.sub("_", f"rank{rank}-{trial.trial_id}-step{ckpt.step}")
        (copy / "best" / name).symlink_to(tmp_path / "outside", target_is_directory=True)
    before = tree(tmp_path / "outside")
    assert cli(capsys, best.main, str(copy), "--top", "2").returncode == 0
    assert tree(tmp_path / "outside") == before
    assert not (copy / "best" / "best.json").is_symlink()


def test_dashboard_writes_only_its_page(capsys, experiment, tmp_path):
    copy = hostile_copy(experiment, tmp_path)
    (tmp_path / "outside").mkdir()
    # a link where the page's temporary file used to go: following it would write outside
    (copy / "dashboard.html.tmp").symlink_to(tmp_path / "outside" / "written-through.html")
    before = tree(tmp_path)
    assert cli(capsys, dashboards_build.main, str(copy)).returncode == 0
    assert changed(before, tree(tmp_path)) == {"storage/exp/dashboard.html"}
    assert cli(capsys, dashboards_build.main, str(copy), "--out", str(tmp_path / "dst" / "page.html")).returncode == 0
    assert {k for k in changed(before, tree(tmp_path)) if not k.startswith("dst")} == {"storage/exp/dashboard.html"}
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == ["page.html"]


def test_infer_writes_only_its_output(capsys, experiment, tmp_path):
    copy = hostile_copy(experiment, tmp_path)
    checkpoint = checkpoint_dirs(copy)[-1]
    before = tree(tmp_path)
    out = tmp_path / "dst" / "grid.png"
    out.parent.mkdir()
    for mode in ("sample", "interpolate"):
        proc = cli(capsys, infer.main, str(checkpoint), mode, "--n", "4", "--steps", "3", "--device", "cpu",
                   "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        assert changed(before, tree(tmp_path)) == {"dst/", "dst/grid.png"}
    assert load_checkpoint(checkpoint, "cpu").sample(2).shape[0] == 2


def test_resume_of_an_experiment_whose_name_leads_elsewhere(capsys, experiment, tmp_path):
    copy = hostile_copy(experiment, tmp_path)
    before = tree(tmp_path)
    proc = cli(capsys, sweep.main, "dcgan", "--resume", "--name", copy.name, "--storage", str(copy.parent))
    assert_one_line_error(proc, "names the experiment '../../../evil'", "resume it under its own name")
    assert changed(before, tree(tmp_path)) == set()


# --- (c) no network: the page loads nothing from outside, nothing listens publicly --------------

class Resources(html.parser.HTMLParser):
    """Every URL a page's tags would load, and its CSS."""
    ATTRIBUTES = {"src", "href", "srcset", "data", "poster", "background", "action", "formaction", "xlink:href",
                  "manifest", "codebase", "ping"}

    def __init__(self):
        super().__init__()
        self.urls, self.css, self.tags = [], [], []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._in_style = tag == "style"
        for name, value in attrs:
            if name in self.ATTRIBUTES and value:
                self.urls.append((tag, name, value))
            if name == "style" and value:
                self.css.append(value)

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.css.append(data)


def test_dashboard_loads_no_external_resource(capsys, experiment, tmp_path):
    copy = Path(shutil.copytree(experiment, tmp_path / "exp"))
    spec = json.loads((copy / "sweep.json").read_text())
    hostile = '<script src="https://evil.example/x.js"></script><img src=http://evil.example/p.png>'
    spec.update(name=hostile, dataset=hostile, space_file=hostile)
    (copy / "sweep.json").write_text(json.dumps(spec))
    for trial in copy.glob("run_trial_*"):
        params = json.loads((trial / "params.json").read_text())
        (trial / "params.json").write_text(json.dumps({**params, "width": hostile}))
    out = tmp_path / "page.html"
    assert cli(capsys, dashboards_build.main, str(copy), "--out", str(out)).returncode == 0
    page = out.read_text()
    parsed = Resources()
    parsed.feed(page)
    external = [(tag, name, value) for tag, name, value in parsed.urls
                if not (value.startswith("data:") or value.startswith("#"))]
    assert external == [], external[:5]
    assert "link" not in parsed.tags and "iframe" not in parsed.tags and "object" not in parsed.tags
    for script in re.finditer(r"<script\b[^>]*>", page):
        assert "src" not in script.group(0), script.group(0)  # plotly.js and the page's script are inline
    for css in parsed.css:
        assert "@import" not in css and not re.search(r"url\(\s*['\"]?\s*(https?:)?//", css), css[:200]
    assert "evil.example" not in "".join(v for _, _, v in parsed.urls)
    assert "&lt;script src=&quot;https://evil.example" in page  # shown as text, escaped


def test_nothing_binds_a_public_interface_by_default():
    """Ray's dashboard is started on 127.0.0.1 (a local Ray by the sweep, the cluster heads by
    cluster*.yaml); no code or config names 0.0.0.0; the project runs no server of its own."""
    public = re.compile(r"0\.0\.0\.0|\[?::\]?(?=:\d)|dashboard[-_]host\s*=\s*(?!['\"]?(?:127\.0\.0\.1|localhost))")
    for path in sorted(p for d in ("orchestrator", "trainables", "dashboards", "search_spaces")
                       for p in (ROOT / d).rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            assert not public.search(code), f"{path.name}:{number}: {line.strip()}"
            assert not re.search(r"\b(HTTPServer|socketserver|serve_forever|uvicorn|flask|\.listen\()", code), \
                f"{path.name}:{number}: {line.strip()}"
    assert 'dashboard_host="127.0.0.1"' in (ROOT / "orchestrator" / "cluster.py").read_text()  # init_ray
    for name in ("cluster.yaml", "cluster-onprem.yaml"):
        config = yaml.safe_load((ROOT / name).read_text())
        commands = [c for key in ("head_start_ray_commands", "worker_start_ray_commands", "setup_commands",
                                  "head_setup_commands", "worker_setup_commands", "initialization_commands")
                    for c in config.get(key) or []]
        assert not [c for c in commands if public.search(c)], name
        heads = [c for c in config["head_start_ray_commands"] if "ray start" in c and "--head" in c]
        assert heads and all("--dashboard-host=127.0.0.1" in c for c in heads), name
