"""Experiments written before the sweep was split (version 0.2) still resume: Tune unpickles their
searcher and callbacks under the names they had (trainables.ray_trial), and their final trials'
params.json name their start in two keys. (Checked end to end once by hand: a sweep written by
0.2, resumed and extended by 0.3; see docs/architecture.md.)"""

import pickle

from orchestrator import tune_plugins
from trainables.settings import FinalStart


def test_plugins_pickled_under_their_old_module_load_after_legacy_names():
    for plugin in (tune_plugins.SweepProgress(3, "fid", "min"), tune_plugins.KeepResultsOnRestart()):
        old = pickle.dumps(plugin, protocol=0).replace(type(plugin).__module__.encode(), b"trainables.ray_trial")
        assert b"trainables.ray_trial" in old
        tune_plugins.legacy_names()
        assert type(pickle.loads(old)) is type(plugin)


def test_a_final_trials_start_reads_from_either_layout():
    new = FinalStart("s3://b/exp/checkpoints/t/checkpoint_1", 600).config({"lr": 0.1})
    assert FinalStart.split(new) == ({"lr": 0.1}, FinalStart("s3://b/exp/checkpoints/t/checkpoint_1", 600))
    old = {"lr": 0.1, "final_from": "/exp/checkpoints/t/checkpoint_1", "final_until": 60}
    assert FinalStart.split(old) == ({"lr": 0.1}, FinalStart("/exp/checkpoints/t/checkpoint_1", 60))
    assert FinalStart.split({"lr": 0.1}) == ({"lr": 0.1}, None)
    assert FinalStart.split({"lr": 0.1, "final_start": {"until": 5}}) == ({"lr": 0.1}, None)  # damaged: a search trial
