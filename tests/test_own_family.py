"""A model family of the user's own (examples/wgan_gp.py, outside the package): refused in one line
where it breaks the contract; found through an installed package's entry point; swept from Python
by run_sweep. (Its sweeps on two nodes, from the CLI with best, infer, rescore and the dashboard on
the results, and from the example notebook under a real Jupyter kernel, are in tests/test_cluster.py.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, assert_one_line_error, run_cli
from trainables.errors import BadInput

EXAMPLE = ROOT / "examples" / "wgan_gp.py"


def test_a_family_that_breaks_the_contract_is_refused_before_ray_starts(tmp_path):
    broken = tmp_path / "broken_family.py"
    broken.write_text(EXAMPLE.read_text().replace("    def train_step(", "    def train_step_typo("))
    proc = run_cli("orchestrator.sweep", "wgan_gp", "--family-module", str(broken), "--storage", str(tmp_path))
    assert_one_line_error(proc, "--family-module", "define train_step")
    assert not (tmp_path / "wgan_gp").exists()
    proc = run_cli("orchestrator.sweep", "wgan_gp", "--family-module", str(tmp_path / "missing.py"))
    assert_one_line_error(proc, "no such file")
    (tmp_path / "empty_module.py").write_text("x = 1\n")
    proc = run_cli("orchestrator.sweep", "wgan_gp", "--family-module", str(tmp_path / "empty_module.py"))
    assert_one_line_error(proc, "defines no model family", "@register_family")
    nameless = tmp_path / "nameless.py"
    nameless.write_text(EXAMPLE.read_text().replace('name = "wgan_gp"', 'name = "wgan gp"'))
    assert_one_line_error(run_cli("orchestrator.sweep", "wgan_gp", "--family-module", str(nameless)),
                          "name must be an identifier")


def test_its_search_space_is_found_beside_it_or_asked_for(tmp_path):
    alone = tmp_path / "wgan_gp.py"
    shutil.copy(EXAMPLE, alone)  # without its wgan_gp.toml
    proc = run_cli("orchestrator.sweep", "wgan_gp", "--family-module", str(alone), "--storage", str(tmp_path))
    assert_one_line_error(proc, "has no search space", str(tmp_path / "wgan_gp.toml"), "--space")
    listed = run_cli("orchestrator.sweep", "--list", "--family-module", str(EXAMPLE))
    assert listed.returncode == 0 and "wgan_gp: WGAN-GP" in listed.stdout and "gp_weight: loguniform" in listed.stdout


def test_an_installed_packages_entry_point_adds_its_families(tmp_path):
    """`[project.entry-points."gen_orchestrator.families"]` of an installed package: its families
    are known to every command without --family-module (here a package on PYTHONPATH, with the
    dist-info metadata pip would write)."""
    shutil.copy(EXAMPLE, tmp_path / "my_gans.py")
    shutil.copy(EXAMPLE.with_suffix(".toml"), tmp_path / "wgan_gp.toml")
    info = tmp_path / "my_gans-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-gans\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[gen_orchestrator.families]\nwgan_gp = my_gans\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    listed = subprocess.run([sys.executable, "-m", "orchestrator.sweep", "--list"], capture_output=True, text=True,
                            cwd=ROOT, env=env, timeout=120)
    assert listed.returncode == 0 and "wgan_gp: WGAN-GP" in listed.stdout, listed.stderr
    (info / "entry_points.txt").write_text("[gen_orchestrator.families]\nwgan_gp = no_such_module\n")
    broken = subprocess.run([sys.executable, "-m", "orchestrator.sweep", "wgan_gp"], capture_output=True, text=True,
                            cwd=ROOT, env=env, timeout=120)
    assert_one_line_error(broken, "entry point wgan_gp = no_such_module", "No module named")


@pytest.mark.slow
def test_run_sweep_from_python_leaves_the_callers_ray_up(ray_address, tmp_path, caplog):
    """run_sweep: typed options in, the experiment out (leaderboard, best checkpoint loaded, the
    re-scored table, the dashboard); a Ray the caller started stays up; progress goes through logging."""
    import logging

    import ray

    from orchestrator import SweepOptions, run_sweep

    ray.init(address=ray_address, logging_level="WARNING")
    try:
        with caplog.at_level(logging.INFO, logger="orchestrator"):
            result = run_sweep(SweepOptions("wgan_gp", family_module=[str(EXAMPLE)], dataset="digits", trials=2,
                                            max_steps=40, eval_every=20, eval_samples=300, storage=str(tmp_path),
                                            name="py", rescore_top=1, set={"latent_dim": 32}))
        assert ray.is_initialized()  # not shut down: the caller started it
        assert result.exit_code == 0 and result.location.local == tmp_path / "py"
        board = result.leaderboard
        assert len(board) == 2 and set(board["latent_dim"]) == {32}
        assert result.rescored["trial"].iloc[0] == board["trial"].iloc[0]
        assert result.dashboard and result.dashboard.is_file()
        assert result.load_best().sample(4).shape == (4, 1, 16, 16)
        said = [r.getMessage() for r in caplog.records]
        assert any("2 of 2 trials done" in m for m in said) and any(m.startswith("best checkpoint:") for m in said)
        # a family defined in __main__ (a notebook cell): no file to import, so its class goes to the
        # trials by value; its space is given (there is no file to find it beside)
        exec(compile(EXAMPLE.read_text().replace('name = "wgan_gp"', 'name = "wgan_cell"'), "<cell>", "exec"),
             {"__name__": "__main__"})
        with pytest.raises(BadInput, match="defined in __main__"):
            run_sweep("wgan_cell", dataset="digits", storage=str(tmp_path))
        cell = run_sweep("wgan_cell", space=str(EXAMPLE.with_suffix(".toml")), dataset="digits", trials=1,
                         max_steps=20, eval_every=20, storage=str(tmp_path), name="cell", rescore_top=1,
                         no_dashboard=True)
        assert cell.exit_code == 0 and len(cell.best_checkpoints) == 1 and len(cell.rescored) == 1
        config = json.loads((cell.best_checkpoints[0].local / "config.json").read_text())
        assert config["family_source"]["module"] == "__main__" and config["family_source"]["file"] is None
    finally:
        ray.shutdown()
    for bad in ({"trials": 0}, {"rescore_top": 0.5}, {"scheduler": None}, {"image_size": "3x"},
                {"fid_features": "weights.bin"}):
        with pytest.raises(BadInput):
            SweepOptions("wgan_gp", **bad)


def test_a_family_file_in_the_cache_of_remote_experiments_is_never_imported(cache_dir):
    """An experiment's files are data: a sweep.json or checkpoint that names a .py file mirrored
    from a remote experiment (under the cache) is refused, never imported."""
    from trainables.models import family_for
    from trainables.family import UnknownFamily

    planted = cache_dir / "remote" / "s3" / "bucket" / "exp" / "planted_family.py"
    planted.parent.mkdir(parents=True)
    ran = cache_dir / "ran"
    planted.write_text(f"open({str(ran)!r}, 'w').write('imported')\n")
    with pytest.raises(UnknownFamily, match="cache of remote experiments"):
        family_for("planted", {"module": "planted_family", "file": str(planted)})
    assert not ran.exists()
