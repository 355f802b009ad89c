"""How much a ddpm sweep reading moves with its sample seed, at half and all of the held-out count
(issue 19, item 2; docs/results.md): each checkpoint is read 4 times per share, as the sweep reads
it (the family's evaluate: 10 DDIM steps, 1000 Fashion-MNIST held-out images).

    python bench/ddpm_readings.py CHECKPOINT [CHECKPOINT ...]
"""

import json
import statistics
import sys

import torch

import common  # noqa: F401  (puts the project on sys.path)
from trainables.checkpoints import load_checkpoint
from trainables.datasets import load_dataset
from trainables.features import Evaluator, feature_network

SEEDS = 4

if __name__ == "__main__":
    torch.set_num_threads(2)
    data = load_dataset("fashion_mnist")
    evaluator = Evaluator(data, 1000, *feature_network("classifier", data, log=lambda _: None), torch.device("cpu"))
    for checkpoint in sys.argv[1:]:
        model = load_checkpoint(checkpoint)
        hp = {**model.family.defaults, **model.hp}
        row = {"checkpoint": checkpoint}
        for share in (0.5, 1.0):
            fids = [model.family.evaluate(model.modules, {**hp, "eval_sample_share": share}, evaluator, seed).scores["fid"]
                    for seed in range(SEEDS)]
            row[share] = {"mean": round(statistics.mean(fids), 1), "std": round(statistics.stdev(fids), 1),
                          "readings": [round(f, 1) for f in fids]}
        print(json.dumps(row), flush=True)
