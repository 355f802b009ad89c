"""The names of an experiment's files and folders, defined once for the writers (the sweep, the
loop, Tune's callbacks) and the readers (trainables.experiment, best, the dashboard). Imports
nothing, so every layer may use it.

    STORAGE/NAME/                     one experiment (sweep)
        sweep.json                    SPEC_FILE: everything that defines the sweep (reused by --resume)
        optuna.db                     STUDY_FILE: the Optuna study (TPE's history)
        dashboard.html                DASHBOARD_FILE
        rescore.json                  RESCORE_FILE: the top checkpoints re-scored over several seeds
        status.json                   SWEEP_STATUS: whether the sweep's driver runs, was interrupted or finished
        warm_start.json               WARM_START_FILE: the earlier sweeps that seeded the study (--warm-start)
        run_trial_<id>_.../           Tune's folder of a trial: result.json, progress.csv, params.json, error.txt
        final/run_trial_<id>_.../     the final phase's trials (a Tune experiment of its own, FINAL_DIR)
        checkpoints/<id>/checkpoint_<time>/   a trial's kept checkpoints (files below)
        best/rank<k>-<trial>/         `orchestrator.best`'s copies of the best checkpoints, with best.json
"""

import re

# the experiment
SPEC_FILE = "sweep.json"
STUDY_FILE = "optuna.db"
DASHBOARD_FILE = "dashboard.html"
RESCORE_FILE = "rescore.json"  # orchestrator.rescore: the best checkpoints re-scored over seeds
WARM_START_FILE = "warm_start.json"  # a warm-started sweep: the sweeps that seeded its study, trials seeded and dropped
SWEEP_STATUS = "status.json"  # the sweep's driver: {"status": running|interrupted|finished, "updated": time}
COMPARISON_FILE = "comparison.html"  # dashboards.build of several experiments, in the current folder
CHECKPOINTS_DIR = "checkpoints"  # CHECKPOINTS_DIR/<trial_id>/<checkpoint folder>
BEST_DIR, BEST_FILE = "best", "best.json"
FINAL_DIR = "final"  # the final phase's Tune experiment: the top configurations trained on

# a trial's Tune folder
TRIAL_DIR_PREFIX = "run_trial_"  # Tune names a trial's folder after the trainable, run_trial
TRIAL_ID = re.compile(r"^run_trial_([0-9a-f]{8}|[0-9a-f]{5}_\d{5})_")  # and its id (checked on Ray 2.60)
RESULT_FILE, PROGRESS_FILE, PARAMS_FILE, ERROR_FILE = "result.json", "progress.csv", "params.json", "error.txt"
RESUME_BACKUP = "result-before-resume-"  # result.json kept aside by --resume (Tune rewrites it)
RESTART_BACKUP = "result-before-restart-"  # and when Tune restarts a trial from a checkpoint
# a final trial's start (trainables.settings.FinalStart), in its config beside its hyperparameters;
# before 0.3, two keys: the checkpoint it continues from and the step it trains to
FINAL_START = "final_start"
FINAL_FROM, FINAL_UNTIL = "final_from", "final_until"

# a checkpoint folder (trainables.checkpoints writes it, trainables.storage marks it complete)
CHECKPOINT_PREFIX = "checkpoint_"  # Ray Train's checkpoint folder names, and ours
WEIGHTS, STATE, CONFIG, METRICS, SAMPLES, EVALUATION = (
    "model.safetensors", "training_state.pt", "config.json", "metrics.json", "samples.png", "evaluation.json")
COMPLETE = "complete.json"  # the marker, written last: {"files": {name: bytes}}

# What the loop reports for every family from a trial run's first evaluation on: what its model
# costs at inference. `--objectives OBJECTIVE,COST` searches the trade-off against one (lower is better).
COST_METRICS = {
    "params": "parameters of the network inference runs (the generator; cyclegan's A->B net; vae's decoder)",
    "sample_ms": "milliseconds of inference per image (generate, translate or score), the fastest of 3-20 timed batches "
                 "of 32 on the trial's device and threads, at inference settings (ddpm's sample_steps)",
}

# metrics with a meaning beyond a number
# A trial whose loss became NaN or infinite ends with a report of this metric, the reason: the
# orchestrator's tools show it as errored, the searcher learns it as a bad (pruned) trial.
DIVERGED = "diverged"
# The untrained model's report (step 0) carries this metric (1): its scores are a reference that
# every curve starts from, never a result: the objective's running best (`<objective>_best`, what
# Tune, Optuna and ASHA rank on), the leaderboard, `best`, fANOVA and the plots skip it.
UNTRAINED = "untrained"
# A trial whose checkpoint did not fit its storage reports this metric, what is full and how much
# was needed, and waits: the sweep stops every trial as Ctrl-C would, so `--resume` continues them.
STORAGE_FULL = "storage_full"
