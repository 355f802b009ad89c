"""DiffAugment (trainables.blocks.diff_augment) on real batches, and in the GAN families' steps on
real and generated images alike."""

import math

import pytest
import torch

from conftest import assert_one_line_error, run_cli
from trainables.blocks import diff_augment, diffaug_policies
from trainables.datasets import load_dataset
from trainables.errors import BadInput
from trainables.feature_networks import to_float
from trainables.loop import check_transforms
from trainables.models import all_families, get_family


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    data = load_dataset("digits")
    return to_float(torch.from_numpy(data.train_x[:64]))  # (64, 1, 16, 16) in [-1, 1]


def test_none_is_the_identity_and_unknown_policies_are_refused(batch):
    assert torch.equal(diff_augment(batch, "none"), batch)
    assert diffaug_policies("color+translation+cutout") == ["color", "translation", "cutout"]
    with pytest.raises(BadInput, match="unknown 'rotate'"):
        diffaug_policies("translation+rotate")


def test_translation_shifts_each_image_with_a_zero_border(batch):
    torch.manual_seed(0)
    out = diff_augment(batch, "translation")
    assert out.shape == batch.shape
    side, reach = 16, 2  # up to an eighth of the side
    shifts = []
    for image, moved in zip(batch, out):
        padded = torch.nn.functional.pad(image, [reach] * 4)
        found = [(dy, dx) for dy in range(-reach, reach + 1) for dx in range(-reach, reach + 1)
                 if torch.equal(moved, padded[:, reach + dy:reach + dy + side, reach + dx:reach + dx + side])]
        assert found, "not a shift of its image with a zero border"
        shifts.append(found[0])
    assert len(set(shifts)) > 3  # each image draws its own shift


def test_cutout_zeroes_one_half_sided_square_per_image(batch):
    torch.manual_seed(1)
    shifted = batch + 3.0  # no pixel is zero before the cutout
    out = diff_augment(shifted, "cutout")
    zeroed = out == 0
    kept = ~zeroed
    assert torch.equal(out[kept], shifted[kept])  # the rest is untouched
    counts = zeroed.flatten(1).sum(1)
    assert counts.min() >= 16 and counts.max() <= 64  # an 8x8 square, clipped at the border
    assert len(set(counts.tolist())) > 1 or len({tuple(z.nonzero()[0].tolist()) for z in zeroed}) > 1


def test_color_changes_brightness_and_contrast_per_image_and_is_differentiable(batch):
    torch.manual_seed(2)
    x = batch.clone().requires_grad_(True)
    out = diff_augment(x, "color")
    assert out.shape == batch.shape and torch.isfinite(out).all()
    change = (out - batch).detach()
    assert change.abs().flatten(1).amax(1).min() > 0  # every image changed
    means = (out.detach().mean((1, 2, 3)) - batch.mean((1, 2, 3)))
    assert means.std() > 0.05  # by its own amount
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["gan", "dcgan", "cgan", "siamese_gan"])
def test_the_discriminator_sees_real_and_generated_images_augmented(name, batch):
    """D's inputs, caught by a forward pre-hook, differ from the real batch and from G's output under
    a policy, and equal them without one; G's loss goes through the augmentation too."""
    family = get_family(name)
    data = load_dataset("digits")
    hp = {**family.defaults, "width": 8, "latent_dim": 8, "batch_size": 16}
    torch.manual_seed(0)
    modules = family.build(hp, data.info())
    optimizers = family.optimizers(modules, hp)
    seen, made = [], []
    modules["discriminator"].register_forward_pre_hook(lambda _, args: seen.append([a.detach().clone() for a in args
                                                                                     if a.is_floating_point()]))
    modules["generator"].register_forward_hook(lambda _, __, out: made.append(out.detach().clone()))
    real = batch[:16]
    labeled = {"x": real, "y": torch.from_numpy(data.train_y[:16])}
    for policy, augmented in (("none", False), ("color+translation+cutout", True)):
        seen.clear(), made.clear()
        losses = family.train_step(modules, optimizers, labeled, {**hp, "diffaug": policy})
        assert all(math.isfinite(float(v)) for v in losses.values())
        images = torch.cat([torch.cat(call) for call in seen])  # every image D saw, in both passes
        fake = made[0]
        real_seen = any(torch.equal(images[i], real[j]) for i in range(len(images)) for j in range(3))
        fake_seen = any(torch.equal(images[i], fake[j]) for i in range(len(images)) for j in range(3))
        assert real_seen == fake_seen == (not augmented), (name, policy, real_seen, fake_seen)


def test_saturation_scales_each_pixels_spread_across_its_channels():
    from trainables.blocks import _saturation

    torch.manual_seed(3)
    x = torch.rand(16, 3, 8, 8) * 2 - 1
    spread, spread_out = (t - t.mean(dim=1, keepdim=True) for t in (x, _saturation(x)))
    factor = (spread_out * spread).sum((1, 2, 3)) / (spread ** 2).sum((1, 2, 3))
    assert torch.allclose(spread_out, factor[:, None, None, None] * spread, atol=1e-5)  # one factor per image
    assert 0 <= factor.min() and factor.max() <= 2 and factor.std() > 0.1


@pytest.mark.parametrize("space_text", [
    'diffaug = "color+blur"\n[lr_g]\ndistribution = "loguniform"\nlow = 1e-4\nhigh = 1e-3\n',  # fixed
    '[diffaug]\ndistribution = "choice"\nvalues = ["none", "color+blur"]\n',  # one of a searched choice
])
def test_a_bad_policy_is_refused_before_ray_starts(tmp_path, space_text):
    space = tmp_path / "space.toml"
    space.write_text(space_text)
    proc = run_cli("orchestrator.sweep", "dcgan", "--dataset", "digits", "--space", str(space),
                   "--storage", str(tmp_path / "exp"))
    assert_one_line_error(proc, "diffaug", "unknown 'blur'")
    assert not (tmp_path / "exp").exists()


def test_every_family_with_diffaugment_refuses_an_unknown_policy_in_one_place():
    """check_transforms (the sweep's check before Ray, and each trial's before it trains) refuses
    an unknown policy of every family that has `diffaug`, and takes their defaults."""
    with_policy = [family for family in all_families().values() if "diffaug" in family.defaults]
    assert {f.name for f in with_policy} >= {"gan", "dcgan", "cgan", "siamese_gan", "cyclegan", "sketch2image"}
    for family in with_policy:
        check_transforms(family.defaults)
        with pytest.raises(BadInput, match="unknown 'blur'"):
            check_transforms({**family.defaults, "diffaug": "color+blur"})


@pytest.mark.parametrize("name", ["cyclegan", "sketch2image"])
def test_the_translators_discriminators_see_real_and_translated_images_augmented(name):
    """CycleGAN's two discriminators and sketch2image's conditional one: under a policy no image
    they see is a real or a translated image as it was; without one, both are seen unchanged."""
    family = get_family(name)
    data = load_dataset("digits_edges")
    hp = {**family.defaults, "width": 8, "width_d": 8, "latent_dim": 8, "n_blocks": 1, "batch_size": 8}
    torch.manual_seed(0)
    modules = family.build(hp, data.info())
    optimizers = family.optimizers(modules, hp)
    D = modules["discriminators" if name == "cyclegan" else "discriminator"]
    G = modules["generators" if name == "cyclegan" else "translator"]
    seen, made = [], []
    for d in ([D.a, D.b] if name == "cyclegan" else [D]):
        d.register_forward_pre_hook(lambda _, args: seen.append(args[-1].detach().clone()))
    G.register_forward_hook(lambda _, __, out: made.append(out["fake_b"] if isinstance(out, dict) else out))
    batch = {"x": to_float(torch.from_numpy(data.train_x[:8])), "y": torch.from_numpy(data.train_y[:8]),
             "a": to_float(torch.from_numpy(data.train_a[:8]))}
    for policy, augmented in (("none", False), ("color+translation+cutout", True)):
        seen.clear(), made.clear()
        losses = family.train_step(modules, optimizers, batch, {**hp, "diffaug": policy})
        assert all(math.isfinite(float(v)) for v in losses.values())
        images = torch.cat([s.reshape(-1, *s.shape[-2:]) for s in seen])  # every image plane D saw
        real = batch["x"].reshape(-1, *batch["x"].shape[-2:])
        fake = made[0].detach().reshape(-1, *made[0].shape[-2:])
        real_seen = any(torch.equal(images[i], real[j]) for i in range(len(images)) for j in range(3))
        fake_seen = any(torch.equal(images[i], fake[j]) for i in range(len(images)) for j in range(3))
        assert real_seen == fake_seen == (not augmented), (name, policy, real_seen, fake_seen)
