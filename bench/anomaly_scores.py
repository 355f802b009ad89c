"""What moves one-class ROC-AUC on Fashion-MNIST (issue 19, item 1; docs/results.md): one process,
no Ray. For each normal class, the `vae_anomaly` family's VAE trained on that class alone (its own
build, optimizer and train_step), then several anomaly scores of all 10,000 held-out images:

- elbo: negative ELBO at the posterior mean (the family's `neg_elbo`); recon: reconstruction alone;
- iwae16: the importance-weighted bound with 16 posterior samples (Burda et al. 2016);
- knn_z / maha: distance of the posterior mean to the training images' (5 nearest; Mahalanobis);
- pixel_1nn: distance to the nearest training image in pixel space (no model: a baseline);
- elbo+pixel: the sum of the two scores' ranks;
- with --rotation-steps N: a classifier of the 8 flips x quarter turns trained N steps on the class
  (Golan & El-Yaniv 2018's idea with fewer transforms): `rotation` = its summed NLL of the true
  transform, `elbo+rotation` = the sum of both scores, each standardised on 2000 training images.

    python bench/anomaly_scores.py [--classes 0 1 ...] [--steps 600] [--arch mlp] [--beta 0.1]
                                   [--latent 16] [--hidden 512] [--rotation-steps 0]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.classification import binary_auroc

import common  # noqa: F401  (puts the project on sys.path)
from trainables.datasets import load_dataset
from trainables.models import get_family
from trainables.models.vae import RECON, heldout_terms


def iwae(vae, x, hp, k=16):
    """Negative importance-weighted bound, per image."""
    out = []
    for part in x.split(500):
        mu, logvar = vae.encode(part)
        weights = []
        for _ in range(k):
            eps = torch.randn_like(mu)
            z = mu + eps * (0.5 * logvar).exp()
            nll = RECON[hp["recon"]](vae.decode(z).float(), (part + 1) / 2)
            weights.append(-nll - 0.5 * z.pow(2).sum(1) + 0.5 * eps.pow(2).sum(1) + 0.5 * logvar.sum(1))
        out.append(math.log(k) - torch.logsumexp(torch.stack(weights), 0))
    return torch.cat(out)


def transforms(x):
    """The 8 flips x quarter turns of a batch, in a fixed order."""
    return [torch.rot90(x.flip(3) if flip else x, r, (2, 3)) for flip in (False, True) for r in range(4)]


def rotation_scores(x_train, images, steps, generator):
    """Train a small CNN to tell the 8 transforms apart on the normal class; per-image summed NLL."""
    net = nn.Sequential(nn.Conv2d(1, 32, 3, 1, 1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(32, 64, 3, 1, 1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(64, 128, 3, 1, 1), nn.BatchNorm2d(128), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(128, 8))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(steps):
        batch = x_train[torch.randint(len(x_train), (32,), generator=generator)]
        loss = F.cross_entropy(net(torch.cat(transforms(batch))), torch.arange(8).repeat_interleave(32))
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()

    @torch.no_grad()
    def score(x):
        return -sum(torch.cat([F.log_softmax(net(p), 1)[:, i] for p in t.split(1000)])
                    for i, t in enumerate(transforms(x)))
    return score(images), score(x_train[:2000])


def ranks(s):
    return s.argsort().argsort().double()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--classes", type=int, nargs="*", default=list(range(10)))
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--arch", default="mlp")
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--latent", type=int, default=16)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--rotation-steps", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    family, data = get_family("vae_anomaly"), load_dataset("fashion_mnist")
    test = torch.tensor(data.test_x).float() / 127.5 - 1
    labels = torch.tensor(data.test_y)
    table = {}
    for c in args.classes:
        torch.manual_seed(0)
        generator = torch.Generator().manual_seed(0)
        hp = {**family.defaults, "arch": args.arch, "beta": args.beta, "latent_dim": args.latent,
              "hidden": args.hidden, "normal_class": c}
        x = torch.tensor(family.prepare_data(data, hp).train_x).float() / 127.5 - 1
        modules = family.build(hp, data.info())
        optimizers = family.optimizers(modules, hp)
        start = time.perf_counter()
        for _ in range(args.steps):
            family.train_step(modules, optimizers, {"x": x[torch.randint(len(x), (64,), generator=generator)]}, hp)
        vae = modules["vae"].eval()
        with torch.no_grad():
            recon, kl = heldout_terms(vae, test, hp)
            mu_train = torch.cat([vae.encode(part)[0] for part in x.split(1000)])
            mu_test = torch.cat([vae.encode(part)[0] for part in test.split(1000)])
            knn = torch.cdist(mu_test, mu_train).topk(5, largest=False).values.mean(1)
            centred = mu_test - mu_train.mean(0)
            precision = torch.linalg.inv(torch.cov(mu_train.T) + 1e-4 * torch.eye(mu_train.shape[1]))
            pixel = torch.cdist(test.flatten(1), x.flatten(1)).min(1).values
            scores = {"elbo": recon + kl, "recon": recon, "iwae16": iwae(vae, test, hp),
                      "knn_z": knn, "maha": (centred @ precision * centred).sum(1), "pixel_1nn": pixel,
                      "elbo+pixel": ranks(recon + kl) + ranks(pixel)}
        if args.rotation_steps:
            rotation, rotation_train = rotation_scores(x, test, args.rotation_steps, generator)
            with torch.no_grad():
                elbo_train = sum(heldout_terms(vae, x[:2000], hp))
            scores["rotation"] = rotation
            scores["elbo+rotation"] = ((recon + kl - elbo_train.mean()) / elbo_train.std()
                                       + (rotation - rotation_train.mean()) / rotation_train.std())
        anomalous = (labels != c).long()
        table[c] = {k: round(float(binary_auroc(ranks(v) / len(v), anomalous)), 4) for k, v in scores.items()}
        print(json.dumps({"class": c, **table[c], "seconds": round(time.perf_counter() - start, 1)}), flush=True)
    means = {k: round(statistics.mean(table[c][k] for c in table), 4) for k in table[args.classes[0]]}
    print(json.dumps({"mean": means, **vars(args)}))


if __name__ == "__main__":
    main()
