"""One-class VAE anomaly detector: the VAE of vae.py trained only on a "normal" class; an image
the model explains badly is anomalous. Score (higher = more anomalous), with z = the posterior mean:
  score = "neg_elbo": reconstruction NLL + KL (the negative ELBO, beta = 1, in nats);
  score = "recon":    reconstruction NLL alone.
Evaluated by ROC-AUC on held-out images: the normal class against every other class.
`normal_class` and `score` are fixed per sweep (`--set normal_class=3`), not searched.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torchmetrics.functional.classification import binary_auroc, binary_roc

from trainables.errors import BadInput
from trainables.family import EvalResult, register_family
from trainables.models.vae import VAE, check_choice, heldout_terms

SCORES = {  # per-image reconstruction NLL, KL -> anomaly score
    "neg_elbo": lambda recon, kl: recon + kl,
    "recon": lambda recon, kl: recon,
}
BOOTSTRAPS = 1000  # resamples of the held-out images behind a re-scored ROC-AUC's interval
ROC_POINTS = 200  # the ROC curve kept in evaluation.json, at most about this many points


def unit_interval(scores: torch.Tensor) -> torch.Tensor:
    """Scores rescaled to [0, 1], order kept: torchmetrics reads scores outside [0, 1] as logits
    and squashes them with a sigmoid, under which scores in the hundreds of nats all tie at 1.0."""
    scores = scores.double()
    return (scores - scores.min()) / (scores.max() - scores.min()).clamp_min(1e-300)


def decimate(values: torch.Tensor, points: int = ROC_POINTS) -> list[float]:
    """At most `points` evenly spaced entries of a curve, its two ends included."""
    if len(values) <= points:
        return values.tolist()
    return values[torch.linspace(0, len(values) - 1, points).round().long()].tolist()


@register_family
class VAEAnomaly(VAE):
    name = "vae_anomaly"
    description = "one-class VAE anomaly detector: trained on a normal class, scores by negative ELBO or reconstruction error"
    objective = "auroc"
    mode = "max"
    metric_names = ("auroc", "elbo", "recon_heldout", "kl_heldout")  # ELBO & co. on held-out normal images
    metric_descriptions = {**VAE.metric_descriptions, "auroc": (
        "area under the ROC curve of the anomaly score, normal class vs the rest, on held-out images "
        "(higher is better)")}
    # squared error scores anomalies far better than BCE here (Fashion-MNIST, mean ROC-AUC over the
    # classes about 0.90 against 0.75 after 300 steps): a grey pixel costs BCE at least its entropy
    # even when perfectly reconstructed, so BCE ranks images by their grey levels as much as by fit
    defaults = {**VAE.defaults, "recon": "mse", "beta": 0.1, "normal_class": 0, "score": "neg_elbo"}
    inference_modes = ("score", "roc", "reconstruct")

    def check_data(self, info):
        super().check_data(info)
        if info["multilabel"]:
            raise BadInput(f"vae_anomaly needs one class per image; dataset {info['name']!r} has multi-hot attributes")
        if len(info["classes"]) < 2:
            raise BadInput(f"vae_anomaly needs at least two classes (normal vs the rest); {info['name']!r} has "
                           f"{len(info['classes'])}")
        self.normal_class(self.defaults, info["classes"])  # --set overrides are checked in prepare_data

    def normal_class(self, hp: dict, classes: list[str]) -> int:
        c = hp["normal_class"]
        if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < len(classes):
            raise BadInput(f"normal_class must be a class index from 0 to {len(classes) - 1} "
                           f"({', '.join(f'{i}={n}' for i, n in enumerate(classes))}), got {c!r}")
        return c

    def prepare_data(self, data, hp):
        """Train on the normal class only; the held-out split stays whole (normal vs the rest)."""
        if data.multilabel:
            raise BadInput(f"vae_anomaly needs one class per image; dataset {data.name!r} has multi-hot attributes")
        check_choice(hp, "score", SCORES)
        normal = self.normal_class(hp, data.classes)
        keep = data.train_y == normal
        if not keep.any():
            raise BadInput(f"no training images of normal class {normal} ({data.classes[normal]}) in {data.source}")
        return replace(data, train_x=data.train_x[keep], train_y=data.train_y[keep],
                       source=f"{data.source}, class {data.classes[normal]} only")

    def inference_network(self, modules):
        return modules["vae"]  # scoring encodes and decodes

    def inference_call(self, modules, hp, evaluator, n):
        images = evaluator.real()[:n]
        return (lambda: self.anomaly_score(modules, images, hp)), len(images)

    @torch.no_grad()
    def anomaly_score(self, modules, images, hp):
        return SCORES[hp["score"]](*heldout_terms(modules["vae"], images, hp))

    def rescore_details(self, modules, hp, evaluator, seed):
        """For re-scoring: a bootstrap 95% interval of the ROC-AUC over the held-out images (1000
        resamples, torchmetrics' BootStrapper) and the ROC-AUC against each other class alone."""
        from torchmetrics import BootStrapper
        from torchmetrics.classification import BinaryAUROC

        real, labels = evaluator.real(), evaluator.labels
        normal = int(hp["normal_class"])
        scores = unit_interval(self.anomaly_score(modules, real, hp).float()).float()
        anomalous = (labels != normal).long()
        if not 0 < int(anomalous.sum()) < len(anomalous):
            return {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            boot = BootStrapper(BinaryAUROC(), num_bootstraps=BOOTSTRAPS, quantile=torch.tensor([0.025, 0.975]))
            boot.update(scores.cpu(), anomalous.cpu())
            interval = boot.compute()["quantile"].tolist()
        details = {"auroc_boot_low": interval[0], "auroc_boot_high": interval[1]}
        for c, name in enumerate(evaluator.classes):
            pair = (labels == normal) | (labels == c)
            if c != normal and int((labels == c).sum()):
                details[f"auroc_vs_{name}"] = float(binary_auroc(scores[pair], anomalous[pair]))
        return details

    def evaluate(self, modules, hp, evaluator, seed):
        """ROC-AUC of the anomaly score on the held-out images (anomalous = not the normal class);
        samples.png: the 8 most anomalous held-out images, then the 8 least anomalous."""
        real, labels = evaluator.real(), evaluator.labels
        normal = int(hp["normal_class"])
        anomalous = (labels != normal).long()
        scores = self.anomaly_score(modules, real, hp).float()
        if 0 < int(anomalous.sum()) < len(anomalous):
            auroc = float(binary_auroc(unit_interval(scores), anomalous))
            fpr, tpr, _ = binary_roc(unit_interval(scores), anomalous)
        else:  # a held-out slice with one kind of image only: no ROC
            auroc, fpr, tpr = math.nan, torch.zeros(0), torch.zeros(0)
        members = real[labels == normal]
        heldout = self.heldout_scores(modules, hp, members, seed) if len(members) else \
            dict.fromkeys(("elbo", "recon_heldout", "kl_heldout"), math.nan)
        order = scores.argsort(descending=True)
        most, least = order[:8], order.flip(0)[:8]

        def listed(indices):
            return [{"index": int(i), "label": evaluator.classes[int(labels[i])], "score": float(scores[i])}
                    for i in indices]

        artifacts = {"roc": {"fpr": decimate(fpr), "tpr": decimate(tpr), "auroc": auroc},
                     "normal_class": evaluator.classes[normal],
                     "most_anomalous": listed(most), "least_anomalous": listed(least)}
        return EvalResult({"auroc": auroc, **heldout}, torch.cat([real[most], real[least]]), nrow=8,
                          artifacts=artifacts)
