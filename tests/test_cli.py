"""Bad input: one line on stderr, exit code 2, no traceback. These fail before Ray starts."""

import pytest

from conftest import assert_one_line_error, run_cli


def test_list_shows_models_with_dataset_objective_and_space():
    proc = run_cli("orchestrator.sweep", "--list")
    assert proc.returncode == 0, proc.stderr
    assert "dcgan:" in proc.stdout and "default dataset: fashion_mnist" in proc.stdout
    assert "objective: fid (min)" in proc.stdout and "lr_g: loguniform" in proc.stdout


def test_help_explains_every_option():
    proc = run_cli("orchestrator.sweep", "--help")
    for option in ("--trials", "--max-steps", "--dataset", "--data-root", "--storage", "--name", "--address",
                   "--cpus-per-worker", "--gpus-per-worker", "--workers-per-trial", "--max-concurrent",
                   "--scheduler", "--searcher", "--torch-trainer", "--seed", "--quick", "--resume", "--list"):
        assert option in proc.stdout


@pytest.mark.parametrize("args, fragment", [
    (["nosuchmodel"], "unknown model 'nosuchmodel'"),
    (["dcgan", "--trials", "0"], "--trials: must be 1 or more"),
    (["dcgan", "--trials", "-3"], "--trials"),
    (["dcgan", "--trials", "many"], "expected a whole number"),
    (["dcgan", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["dcgan", "--scheduler", "hyperband"], "invalid choice"),
    (["dcgan", "--searcher", "grid"], "invalid choice"),
    (["dcgan", "--grace-period", "100", "--scheduler", "fifo"], "--grace-period tunes --scheduler asha"),
    (["dcgan", "--reduction-factor", "1"], "--reduction-factor must be 2 or more"),
    (["dcgan", "--max-steps", "600", "--grace-period", "601"], "--grace-period 601 is more than a trial's 600 steps"),
    (["dcgan", "--no-multivariate", "--searcher", "random"], "--multivariate tunes --searcher tpe"),
])
def test_bad_sweep_arguments(args, fragment):
    assert_one_line_error(run_cli("orchestrator.sweep", *args), fragment)


def test_missing_dataset_with_no_way_to_get_it(tmp_path):
    proc = run_cli("orchestrator.sweep", "dcgan", "--data-root", str(tmp_path), "--storage", str(tmp_path / "exp"))
    assert_one_line_error(proc, "no fashion_mnist idx files")


def test_invalid_search_space_file(tmp_path):
    space = tmp_path / "space.toml"
    space.write_text('[lr_g]\ndistribution = "loguniform"\nlow = 1\nhigh = 0.1\n')
    assert_one_line_error(run_cli("orchestrator.sweep", "dcgan", "--space", str(space)), "empty range")


def test_inception_features_without_torch_fidelity_say_how_to_get_them(tmp_path):
    proc = run_cli("orchestrator.sweep", "dcgan", "--dataset", "digits", "--fid-features", "inception",
                   "--storage", str(tmp_path))
    assert_one_line_error(proc, "needs torch-fidelity")


def test_resume_of_an_experiment_that_does_not_exist(tmp_path):
    proc = run_cli("orchestrator.sweep", "dcgan", "--resume", "--name", "nothing-here", "--storage", str(tmp_path))
    assert_one_line_error(proc, "nothing to resume")


def test_infer_and_best_on_missing_or_broken_paths(tmp_path):
    assert_one_line_error(run_cli("orchestrator.infer", str(tmp_path / "missing"), "sample"), "does not exist")
    (tmp_path / "config.json").write_text("{not json")
    assert_one_line_error(run_cli("orchestrator.infer", str(tmp_path), "sample"), "not readable JSON")
    assert_one_line_error(run_cli("orchestrator.best", str(tmp_path)), "not an experiment directory")


def test_set_value_of_the_wrong_type_is_refused_before_anything_starts(tmp_path):
    proc = run_cli("orchestrator.sweep", "vae", "--set", "latent_dim=abc", "--storage", str(tmp_path))
    assert_one_line_error(proc, "--set latent_dim=abc", "must be an integer")
    assert list(tmp_path.iterdir()) == []
