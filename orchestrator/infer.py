"""python -m orchestrator.infer CHECKPOINT_DIR MODE [options]: use a checkpoint.

Modes (a family supports those listed by `python -m orchestrator.sweep --list`):
  sample       a grid of N generated images (--labels for conditional models)
  interpolate  N rows (8) walking the latent space between two points (random, or two --input images)
  arithmetic   latent vector arithmetic on class means, e.g. --expr "Ankle boot - Sneaker + Sandal"
               (first row: the same sum in pixel space; second row: in the latent space)
  reconstruct  N (8) input images and their reconstructions, in pairs of rows of up to 8
  translate    rows of input images (sketches, domain A) and their translations (--direction)
  score        anomaly score of each input image -> CSV (higher = more anomalous)
  roc          ROC curve and ROC-AUC on the held-out split: normal class vs all others -> HTML + JSON

Input images come from --input (files or folders of PNG/JPEG) or, without it, from the held-out
split of the dataset the checkpoint was trained on. Images must have the model's size and channels
unless --resize is given.

From Python:
    from orchestrator.infer import load_checkpoint
    model = load_checkpoint("experiments/NAME/best/rank1-...")   # CPU or GPU, eval mode
    images = model.sample(16, seed=0)                             # (16, C, H, W) in [-1, 1]

Loading reads JSON and safetensors only; it never unpickles anything from the checkpoint.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from trainables.cli import Parser, UsageError, add_family_module, device, load_family_modules, run
from trainables.checkpoints import LoadedModel, load_checkpoint, save_grid
from trainables.layout import BEST_DIR, SPEC_FILE

__all__ = ["load_checkpoint", "LoadedModel"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


# --- inputs ------------------------------------------------------------------------------------

def read_images(paths: list[str], shape: list[int], resize: bool) -> tuple[torch.Tensor, list[str]]:
    """Image files (or folders of them) -> float (N, C, H, W) in [-1, 1] of the model's shape."""
    from PIL import Image, UnidentifiedImageError

    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            files.append(p)
        else:
            raise UsageError(f"--input {p} does not exist")
    if not files:
        raise UsageError(f"no images in {' '.join(paths)}")
    channels, height, width = shape
    images = []
    for f in files:
        try:
            with Image.open(f) as img:
                img.load()
        except (UnidentifiedImageError, OSError) as e:
            raise UsageError(f"{f} is not a readable image ({type(e).__name__})") from None
        got = 1 if img.mode in ("L", "1", "I", "I;16", "F") else 3
        if (img.width, img.height) != (width, height) or got != channels:
            if not resize:
                raise UsageError(f"{f} is {img.width}x{img.height} with {got} channel(s); the model takes "
                                 f"{width}x{height} with {channels} (pass --resize to convert)")
            img = img.resize((width, height), Image.BICUBIC)
        img = img.convert("L" if channels == 1 else "RGB")
        x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(height, width, channels)
        images.append(x.permute(2, 0, 1))
    return torch.stack(images).float().div(127.5).sub(1.0), [str(f) for f in files]


def held_out(model: LoadedModel, args: argparse.Namespace, domain: str = "x"):
    """The checkpoint's dataset, held-out split: (images in [-1, 1], labels, the ImageData)."""
    from trainables.datasets import load_dataset
    from trainables.feature_networks import to_float

    data = model.family.prepare_data(load_dataset(model.info["name"], args.data_root,
                                                  options=model.info.get("options")), model.hp)
    x = data.test_x if domain == "x" else data.test_a
    if x is None:
        raise UsageError(f"dataset {data.name} has no source domain to translate from")
    return to_float(torch.from_numpy(x.copy())), torch.from_numpy(data.test_y.copy()), data


def inputs(model: LoadedModel, args: argparse.Namespace, domain: str = "x") -> torch.Tensor:
    """--input images, else the first N held-out images of `domain` ('a' = source domain)."""
    if args.input:
        shape = model.info["shape_a"] if domain == "a" and model.info.get("shape_a") else model.info["shape"]
        return read_images(args.input, shape, args.resize)[0][:args.n]
    return held_out(model, args, domain)[0][:args.n]


def parse_labels(model: LoadedModel, text: str | None, n: int) -> torch.Tensor | None:
    """--labels: class names or indices (repeated to fill n), or attribute names to switch on;
    refused for a family whose samples take no labels (they would be ignored)."""
    if text is None:
        return None
    if not model.family.conditional:
        raise UsageError(f"--labels: {model.family.name} samples take no labels (a conditional family such as cgan does)")
    classes = model.info["classes"]
    names = [t.strip() for t in text.split(",") if t.strip()]

    def index(name: str) -> int:
        if name in classes:
            return classes.index(name)
        if name.isdigit() and int(name) < len(classes):
            return int(name)
        raise UsageError(f"unknown label {name!r}; the model knows: {', '.join(classes)}")

    if model.info.get("multilabel"):
        labels = torch.zeros(n, len(classes), dtype=torch.uint8)
        for name in names:
            labels[:, index(name)] = 1
        return labels
    if not names:
        raise UsageError("--labels is empty")
    chosen = [index(name) for name in names]
    return torch.tensor([chosen[i % len(chosen)] for i in range(n)])


def label_rows(model: LoadedModel, text: str, n: int) -> tuple[torch.Tensor, list[str], int]:
    """--labels A,B of a class-conditional model: n images (rounded up to fill the rows), each
    label's in rows of their own; returns the labels, each row's name and the row length."""
    labels = parse_labels(model, text, n)
    if model.info.get("multilabel"):
        row = min(n, 8)
        return labels, ["+".join(t.strip() for t in text.split(",") if t.strip())] * -(-n // row), row
    chosen = list(dict.fromkeys(labels.tolist()))
    each = -(-n // len(chosen))
    row = min(each, 8)
    rows_each = -(-each // row)
    ordered = torch.tensor([c for c in chosen for _ in range(rows_each * row)])
    names = [model.info["classes"][c] for c in chosen for _ in range(rows_each)]
    return ordered, names, row


def save_labelled_grid(images: torch.Tensor, names: list[str], row: int, path: Path, upscale: int = 1) -> None:
    """The grid of save_grid, `row` images a row, with each row's name written to its left."""
    from PIL import Image, ImageDraw

    save_grid(images, path, nrow=row, upscale=upscale)
    grid = Image.open(path).convert("RGB")
    margin = 8 + 7 * max(len(name) for name in names)
    labelled = Image.new("RGB", (grid.width + margin, grid.height), "white")
    labelled.paste(grid, (margin, 0))
    draw, height = ImageDraw.Draw(labelled), grid.height / len(names)
    for i, name in enumerate(names):
        draw.text((4, i * height + height / 2 - 5), name, fill="black")
    labelled.save(path)


# --- modes -------------------------------------------------------------------------------------

def sample(model: LoadedModel, args) -> str:
    out = Path(args.out or "samples.png")
    if args.labels is None or not model.family.conditional:
        save_grid(model.sample(args.n, seed=args.seed, labels=parse_labels(model, args.labels, args.n)), out,
                  upscale=args.scale)
        return str(out)
    labels, names, row = label_rows(model, args.labels, args.n)  # each label's images in rows named after it
    save_labelled_grid(model.sample(len(labels), seed=args.seed, labels=labels), names, row, out, upscale=args.scale)
    return str(out)


def interpolate(model: LoadedModel, args) -> str:
    """Each row walks from one latent point to another in --steps; endpoints from --input images
    (encoded; the first two) or random draws (one pair per row, --n rows)."""
    if args.input:
        z = model.encode(inputs(model, args))
        if len(z) < 2:
            raise UsageError("interpolate with --input needs two images")
        ends = z[:2].unsqueeze(0)
    else:
        g = torch.Generator().manual_seed(args.seed)
        ends = torch.randn(args.n, 2, model.family.latent_dim(model.hp), generator=g)
    t = torch.linspace(0, 1, args.steps).view(1, -1, 1)
    path = torch.lerp(ends[:, :1], ends[:, 1:], t).flatten(0, 1)  # rows x steps
    out = Path(args.out or "interpolation.png")
    save_grid(model.decode(path), out, nrow=args.steps, upscale=args.scale)
    return str(out)


def arithmetic(model: LoadedModel, args) -> str:
    """`A - B + C` on the mean image and the mean latent vector of held-out images of each class."""
    terms = [t.strip() for t in args.expr.replace("+", "|+").replace(" - ", "|-").split("|") if t.strip()]
    x, y, data = held_out(model, args)
    if data.multilabel:
        raise UsageError("arithmetic with attributes is not supported yet: use a class-labelled dataset")
    signs, means_x, means_z = [], [], []
    for i, term in enumerate(terms):
        sign = -1.0 if term.startswith("-") else 1.0
        name = term.lstrip("+-").strip()
        if name not in data.classes:
            raise UsageError(f"unknown class {name!r} in --expr; classes: {', '.join(data.classes)}")
        members = x[y == data.classes.index(name)][:args.per_class]
        signs.append(sign)
        means_x.append(members.mean(0))
        means_z.append(model.encode(members).mean(0))
    if len(terms) < 2:
        raise UsageError('--expr needs at least two classes, e.g. "Ankle boot - Sneaker + Sandal"')
    pixel = sum(s * m for s, m in zip(signs, means_x)).clamp(-1, 1)
    latent = sum(s * m for s, m in zip(signs, means_z))
    decoded = model.decode(torch.stack([*means_z, latent]))
    out = Path(args.out or "arithmetic.png")
    save_grid(torch.cat([torch.stack([*means_x, pixel]), decoded]), out, nrow=len(terms) + 1, upscale=args.scale)
    return f"{out}  (row 1: class means and their sum in pixel space; row 2: decoded mean latents and their sum)"


def reconstruct(model: LoadedModel, args) -> str:
    """Rows of up to 8 inputs, each followed by a row of their reconstructions."""
    x = inputs(model, args)
    y = model.decode(model.encode(x))
    cols = min(len(x), 8)
    blank = torch.ones(-len(x) % cols, *x.shape[1:])  # white cells fill the last pair of rows
    x, y = torch.cat([x, blank]), torch.cat([y, blank])
    out = Path(args.out or "reconstructions.png")
    save_grid(torch.cat([t for i in range(0, len(x), cols) for t in (x[i:i + cols], y[i:i + cols])]), out, nrow=cols,
              upscale=args.scale)
    return f"{out}  (rows in pairs: inputs, then their reconstructions)"


def translate(model: LoadedModel, args) -> str:
    source = "a" if args.direction == "a2b" else "x"
    x = inputs(model, args, domain=source)
    y = model.translate(x, args.direction)
    rows = [x, y]
    back = {"a2b": "b2a", "b2a": "a2b"}[args.direction]
    if "b2a" in getattr(model.family, "directions", ("a2b",)):
        rows.append(model.translate(y, back))
    out = Path(args.out or "translations.png")
    save_grid(torch.cat(rows), out, nrow=len(x), upscale=args.scale)
    return f"{out}  (rows: inputs, translations{', translated back' if len(rows) == 3 else ''})"


def score(model: LoadedModel, args) -> str:
    if args.input:
        x, names = read_images(args.input, model.info["shape"], args.resize)
    else:
        x, y, data = held_out(model, args)
        x, names = x[:args.n], [f"held-out #{i} ({data.classes[int(c)]})" for i, c in enumerate(y[:args.n])]
    scores = model.anomaly_score(x)
    out = Path(args.out or "scores.csv")
    out.write_text("image,score\n" + "".join(f"{json.dumps(n)},{s:.6g}\n" for n, s in zip(names, scores.tolist())))
    return str(out)


def roc(model: LoadedModel, args) -> str:
    """ROC on the whole held-out split: the checkpoint's normal class against every other class."""
    import plotly.graph_objects as go
    from torchmetrics.functional.classification import binary_auroc, binary_roc

    x, y, data = held_out(model, args)
    normal = int(model.hp["normal_class"])
    scores = torch.cat([model.anomaly_score(chunk) for chunk in x.split(1000)]).double()
    # torchmetrics reads scores outside [0, 1] as logits and squashes them (large scores tie at 1.0):
    # rescale to [0, 1], which keeps their order and so the ROC
    scores = (scores - scores.min()) / (scores.max() - scores.min()).clamp_min(1e-300)
    anomalous = (y != normal).long()
    auroc = float(binary_auroc(scores, anomalous))
    fpr, tpr, _ = binary_roc(scores, anomalous)
    out = Path(args.out or "roc.html")
    title = f"normal class {data.classes[normal]!r} vs the rest: ROC-AUC {auroc:.4f}"
    fig = go.Figure(go.Scatter(x=fpr.tolist(), y=tpr.tolist(), mode="lines", name="ROC"))
    fig.add_shape(type="line", x0=0, y0=0, x1=1, y1=1, line={"dash": "dot"})
    fig.update_layout(title=title, xaxis_title="false positive rate", yaxis_title="true positive rate")
    fig.write_html(out, include_plotlyjs=True)
    per_class = {data.classes[c]: float(binary_auroc(torch.cat([scores[y == normal], scores[y == c]]),
                                                     torch.cat([torch.zeros(int((y == normal).sum())),
                                                                torch.ones(int((y == c).sum()))]).long()))
                 for c in range(len(data.classes)) if c != normal and (y == c).any()}
    out.with_suffix(".json").write_text(json.dumps({"normal_class": data.classes[normal], "auroc": auroc,
                                                    "auroc_vs_each_class": per_class}, indent=1))
    return f"{out}  ({title})"


MODES = {"sample": sample, "interpolate": interpolate, "arithmetic": arithmetic, "reconstruct": reconstruct,
         "translate": translate, "score": score, "roc": roc}


def check_out(out: Path) -> None:
    """--out is a file in an existing folder: say so before the model is loaded and run."""
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; name the file to write, e.g. {out / 'out.png'}")
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: the folder {out.parent} does not exist; create it or choose another --out")


def check_not_experiment(folder: Path) -> None:
    """An experiment folder instead of a checkpoint: say where its best checkpoint is, or how to get it."""
    if (folder / SPEC_FILE).is_file():
        exported = sorted((folder / BEST_DIR).glob("rank1-*"))
        hint = f"use {exported[0]}" if exported else f"export its best with: python -m orchestrator.best {folder}"
        raise UsageError(f"{folder} is an experiment, not a checkpoint; {hint}")


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m orchestrator.infer", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint directory (from orchestrator.best, or any checkpoint_* folder), or its "
                                        "URI (s3://.../checkpoint_...: downloaded once, to ~/.cache/gen-orchestrator)")
    p.add_argument("mode", choices=sorted(MODES), help="what to do with it")
    p.add_argument("--n", type=int, help="number of images (default 64), rows for interpolate, inputs for "
                                         "reconstruct (default 8)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", help="output file (default: samples.png, interpolation.png, ... per mode)")
    p.add_argument("--scale", type=int, default=1, help="enlarge each image of a PNG K times, nearest neighbour "
                                                        "(e.g. 4 for 16x16 digits; default 1)")
    p.add_argument("--device", type=device, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--labels", help="sample: class names/indices, comma-separated and repeated to fill --n "
                                    "(conditional models); attribute names to switch on for attribute models")
    p.add_argument("--input", nargs="+", help="image files or folders (default: the dataset's held-out split)")
    p.add_argument("--resize", action="store_true", help="resize/convert --input images to the model's shape")
    p.add_argument("--data-root", help="where the checkpoint's dataset lies, for modes that read it")
    p.add_argument("--steps", type=int, default=10, help="interpolate: images per row (default 10)")
    p.add_argument("--sample-steps", type=int,
                   help="sample: denoising steps of diffusion models (default: the checkpoint's sample_steps, 20 unless set)")
    p.add_argument("--expr", default="Ankle boot - Sneaker + Sandal",
                   help='arithmetic: class names joined by + and - (default "Ankle boot - Sneaker + Sandal")')
    p.add_argument("--per-class", type=int, default=200, help="arithmetic: images averaged per class (default 200)")
    p.add_argument("--direction", choices=["a2b", "b2a"], default="a2b",
                   help="translate: a2b = source (sketch, domain A) -> image (domain B), b2a = back (default a2b)")
    add_family_module(p)
    args = p.parse_args(argv)
    load_family_modules(args)
    if args.n is None:
        args.n = 8 if args.mode in ("interpolate", "reconstruct") else 64
    for name in ("n", "steps", "per_class", "scale"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be 1 or more, got {getattr(args, name)}")
    if args.out:
        check_out(Path(args.out))
    check_not_experiment(Path(args.checkpoint))
    model = load_checkpoint(args.checkpoint, args.device)
    if args.sample_steps is not None:
        if args.sample_steps < 1 or "sample_steps" not in model.family.defaults:
            raise UsageError("--sample-steps needs a diffusion model and a number >= 1")
        model.config["hp"] = {**model.hp, "sample_steps": args.sample_steps}
    if args.mode not in model.family.inference_modes:
        raise UsageError(f"{model.family.name} checkpoints support {', '.join(model.family.inference_modes)}, not {args.mode}")
    print(MODES[args.mode](model, args))
    return 0


if __name__ == "__main__":
    run(main)
