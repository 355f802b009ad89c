"""Does each feature space pass the FID paper's disturbance tests (issue 28)? For every dataset the
project can score (the labeled built-ins, a labeled and an unlabeled image folder, paired and
unpaired sets, each kind of folder too) and every feature space that applies to it: the floor
(another real split against the held-out images), Gaussian noise, blur, black rectangles and
salt-and-pepper at 4 levels, mode dropping (half, then a quarter of the classes or k-means
clusters), the untrained generator of each family that applies, and a DCGAN trained a few
hundred steps (what the sweep's first ASHA rungs rank). FID in each space, on as many images as a
sweep evaluates on (1000, or every held-out image of a smaller set). Results printed as a
markdown table and written to bench/results/metric_validity.json.

    python bench/metric_validity.py [--only NAME ...] [--spaces rotation,random,simclr] [--trained-steps 100,300]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT

import numpy as np
import torch

from trainables.datasets import load_dataset
from trainables.feature_checks import full_check, reference_split
from trainables.feature_networks import FeatureExtractor, to_float
from trainables.features import Evaluator, SampleQuality, build_feature_network, feature_network
from trainables.models import get_family

EVAL_SAMPLES = 1000  # what a sweep evaluates on by default
UNLABELED_SPACES = ("rotation", "random", "simclr")
FAMILIES = {"images": ("gan", "dcgan", "vae", "cgan", "siamese_gan"), "paired": ("sketch2image",),
            "unpaired": ("cyclegan",)}


def write_pngs(folder: Path, images: np.ndarray) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image[0], mode="L").save(folder / f"{i:05d}.png")


def labeled_folder(root: Path) -> Path:
    """Fashion-MNIST's first 4 classes as class sub-folders, 300 training and 100 test images each."""
    fashion = load_dataset("fashion_mnist")
    for c in range(4):
        for split, x, y, n in (("train", fashion.train_x, fashion.train_y, 300), ("test", fashion.test_x, fashion.test_y, 100)):
            write_pngs(root / split / fashion.classes[c].replace("/", "-"), x[y == c][:n])
    return root


def unlabeled_folder(root: Path) -> Path:
    """The README's example for your own images: signature-like 32x64 canvases, train/ val/ test/."""
    from trainables.datasets.example_folder import build

    build(root)
    return root


def paired_folder(root: Path) -> Path:
    """Fashion-MNIST images and their edge sketches as two folders of matching names (1200 pairs)."""
    edges = load_dataset("fashion_mnist_edges")
    write_pngs(root / "sketches", edges.train_a[:1200])
    write_pngs(root / "photos", edges.train_x[:1200])
    return root


def unpaired_folder(root: Path) -> Path:
    """Sneakers -> ankle boots as trainA/ trainB/ testA/ testB/ (600 and 200 images per domain)."""
    fashion = load_dataset("fashion_mnist")
    for d, c in (("A", 7), ("B", 9)):
        write_pngs(root / f"train{d}", fashion.train_x[fashion.train_y == c][:600])
        write_pngs(root / f"test{d}", fashion.test_x[fashion.test_y == c][:200])
    return root


# name -> (dataset, how its --data-root is made, loader options, feature spaces)
DATASETS = {
    "fashion_mnist": ("fashion_mnist", None, {}, ("classifier", "simclr")),
    "digits": ("digits", None, {}, ("classifier",)),
    "labeled folder": ("image_folder", labeled_folder, {"image_size": 28}, ("classifier", "simclr")),
    "unlabeled folder": ("image_folder", unlabeled_folder, {"image_size": (32, 64)}, UNLABELED_SPACES),
    "fashion_mnist_edges (paired)": ("fashion_mnist_edges", None, {}, ("classifier",)),
    "sneaker2boot (unpaired)": ("sneaker2boot", None, {}, ("classifier",)),
    "paired folders": ("paired_folders", paired_folder, {"image_size": 28}, UNLABELED_SPACES),
    "unpaired folders": ("unpaired_folders", unpaired_folder, {"image_size": 28}, UNLABELED_SPACES),
}


def untrained_readings(data, state: dict, meta: dict, n: int, kind: str) -> dict[str, float]:
    """FID of each applicable family's untrained model (its defaults, seed 0), as its sweep's
    step-0 evaluation reads it."""
    out = {}
    evaluator = Evaluator(data.evaluated_on_val(), n, state, meta, torch.device("cpu"))  # its real features once
    for name in FAMILIES[kind]:
        family = get_family(name)
        hp = dict(family.defaults)
        try:
            torch.manual_seed(0)
            modules = {k: m.eval() for k, m in family.build(hp, data.info()).items()}
        except Exception as e:  # a family that can't train on this data (e.g. cgan without classes)
            print(f"  {name}: skipped ({type(e).__name__}: {e})", flush=True)
            continue
        torch.manual_seed(1234)
        out[name] = family.evaluate(modules, hp, evaluator, 1234).scores["fid"]
    return out


def trained_generators(data, steps: list[int]) -> dict[int, torch.Tensor]:
    """A DCGAN (its defaults, seed 0) trained on the data's images: its samples after each of `steps`."""
    family = get_family("dcgan")
    hp = dict(family.defaults)
    torch.manual_seed(0)
    modules = family.build(hp, data.info())
    optimizers = family.optimizers(modules, hp)
    rng = np.random.default_rng(0)
    samples, done = {}, 0
    for target in sorted(steps):
        for _ in range(target - done):
            index = np.sort(rng.choice(len(data.train_x), min(hp["batch_size"], len(data.train_x)), replace=False))
            batch = {"x": to_float(torch.from_numpy(data.train_x[index])), "y": torch.from_numpy(data.train_y[index])}
            family.train_step(modules, optimizers, batch, hp)
        done = target
        for m in modules.values():
            m.eval()
        samples[target] = family.generate(modules, EVAL_SAMPLES, hp, 1234)
        for m in modules.values():
            m.train()
    return samples


def measure(name: str, spaces: list[str] | None, trained_steps: list[int], work: Path) -> list[dict]:
    dataset, make_root, options, default_spaces = DATASETS[name]
    root = make_root(work / name.replace(" ", "_")) if make_root else None
    data = load_dataset(dataset, root, options=options)
    evaluated = data.evaluated_on_val()
    real = evaluated.test_x
    n = min(EVAL_SAMPLES, len(real))
    kind = "paired" if data.paired else "unpaired" if data.train_a is not None else "images"
    # another real split: training images, evenly spaced, as many as the held-out ones scored against
    pool_index = np.linspace(0, len(data.train_x) - 1, min(len(data.train_x), 4 * n)).astype(int)
    pool = to_float(torch.from_numpy(data.train_x[pool_index]))
    reference = reference_split(data.train_x, n)  # as the sweep's check takes it
    labels = data.train_y[pool_index] if len(data.classes) > 1 and not data.multilabel else None
    samples = trained_generators(data, trained_steps) if trained_steps else {}
    rows = []
    for space in spaces or default_spaces:
        start = time.perf_counter()
        state, meta = feature_network(space, data, log=lambda m: print("  " + m, flush=True), data_root=root,
                                      data_options=options)
        made = time.perf_counter() - start
        network = build_feature_network(state, meta)
        quality = SampleQuality(network, real[:n], torch.device("cpu"))
        verdict = full_check(quality, reference, pool, labels, FeatureExtractor(network),
                             untrained_readings(data, state, meta, n, kind))
        trained = {steps: quality(images[:n])["fid"] for steps, images in samples.items()}
        row = {"dataset": name, "loaded_as": dataset, "space": meta["name"], "images": n,
               "network_seconds": round(made, 1), "check_seconds": round(time.perf_counter() - start - made, 1),
               **verdict.as_json(), "trained_dcgan": {str(k): round(v, 4) for k, v in trained.items()}}
        row["trained_beats_untrained"] = trained_beats_untrained(row)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def trained_beats_untrained(row: dict) -> bool | None:
    """What the sweep's first rungs need: every trained DCGAN reading below every untrained model's."""
    trained, untrained = row.get("trained_dcgan"), row.get("untrained")
    return max(trained.values()) < min(untrained.values()) if trained and untrained else None


def table(rows: list[dict]) -> str:
    """The docs/results.md table: one row per dataset and feature space."""
    def seq(values):
        return " < ".join(f"{v:.3g}" for v in values)

    lines = ["| dataset | feature space | n | floor | noise | blur | rectangles | salt & pepper | modes (1/2, 1/4) | "
             "untrained generators | DCGAN trained (steps: FID) | passes | trained below every untrained |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["sequences"]
        untrained = ", ".join(f"{k} {v:.3g}" for k, v in r["untrained"].items())
        trained = ", ".join(f"{k}: {v:.3g}" for k, v in r.get("trained_dcgan", {}).items())
        lines.append(f"| {r['dataset']} | {r['space']} | {r['images']} | {r['floor']:.3g} | {seq(s['noise'])} | "
                     f"{seq(s['blur'])} | {seq(s['rectangles'])} | {seq(s['salt_pepper'])} | {seq(s['modes'])} | "
                     f"{untrained} | {trained} | {'yes' if r['passed'] else 'no: ' + '; '.join(r['failures'])} | "
                     f"{ {True: 'yes', False: '**no**', None: ''}[trained_beats_untrained(r)]} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="*", choices=list(DATASETS), help="these datasets only (default: all)")
    p.add_argument("--spaces", help="comma-separated feature spaces (default: each dataset's own list)")
    p.add_argument("--trained-steps", default="100,300", help="DCGAN training steps whose samples are scored too")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--table", metavar="JSON", help="print the table of an earlier run's results and stop")
    args = p.parse_args()
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return 0
    torch.set_num_threads(args.threads)
    steps = [int(s) for s in args.trained_steps.split(",") if s]
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name in args.only or DATASETS:
            print(f"== {name}", flush=True)
            try:
                rows += measure(name, args.spaces.split(",") if args.spaces else None, steps, Path(work))
            except Exception as e:  # a dataset not on this machine (MNIST, CIFAR-10, CelebA) is reported, not fatal
                print(f"  {name}: not measured ({type(e).__name__}: {e})", flush=True)
    out = ROOT / "bench" / "results" / "metric_validity.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    print(table(rows))
    return 0 if rows and all(not math.isnan(r["floor"]) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
