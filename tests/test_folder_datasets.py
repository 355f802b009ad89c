"""CIFAR-10, CelebA and the folder datasets, read from small files written here in each
dataset's own format; plus one short real sweep on an image folder."""

import json
import os
import pickle
import struct

import numpy as np
import pytest
from PIL import Image

from conftest import family_sweep
from trainables.datasets import DatasetError, load_dataset
from trainables.datasets.images import decode_images, image_files

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young").split()


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Each test decodes into its own cache."""
    monkeypatch.setenv("ORCHESTRATOR_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def png(path, value, size=(20, 16), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = value if mode == "L" else (value, 255 - value, 100)
    Image.new(mode, size, colour).save(path)


# --- CIFAR-10 ----------------------------------------------------------------------------------

class Python2Pickler(pickle._Pickler):
    """Writes bytes as Python 2's str (BINSTRING), as cPickle wrote CIFAR-10's real batches."""
    dispatch = dict(pickle._Pickler.dispatch)

    def save_str(self, obj):
        n = len(obj)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj if n < 256 else pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_str


def write_cifar(root, per_batch=20, protocol="python2"):
    """torchvision's cifar-10-batches-py: pickled dicts ({'data': uint8 (N, 3072), 'labels': [...],
    ...}); every pixel of an image is 20 * its label."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def dump(name, obj):
        if protocol == "python2":
            with open(folder / name, "wb") as f:
                Python2Pickler(f, protocol=2).dump(obj)
        else:
            (folder / name).write_bytes(pickle.dumps(obj, protocol=protocol))

    dump("batches.meta", {b"num_cases_per_batch": per_batch, b"label_names": [n.encode() for n in CIFAR_NAMES],
                          b"num_vis": 3072})
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, per_batch)
        dump(name, {b"batch_label": name.encode(), b"labels": labels.tolist(),
                    b"data": np.repeat((labels * 20).astype(np.uint8)[:, None], 3072, axis=1),
                    b"filenames": [f"{i}.png".encode() for i in range(per_batch)]})
    return folder


@pytest.mark.parametrize("protocol", ["python2", 2, 5])
def test_cifar10_reads_the_python_batches(tmp_path, protocol):
    write_cifar(tmp_path, protocol=protocol)
    data = load_dataset("cifar10", tmp_path)
    assert data.train_x.shape == (100, 3, 32, 32) and data.train_x.dtype == np.uint8
    assert data.test_x.shape == (20, 3, 32, 32) and data.train_y.dtype == np.int64
    assert data.classes == CIFAR_NAMES
    assert (data.train_x[:, :, 5, 7] == (data.train_y * 20)[:, None]).all()  # images match their labels


def test_cifar10_class_filter(tmp_path):
    folder = write_cifar(tmp_path)
    data = load_dataset("cifar10_cats_dogs", folder)  # the batches' own folder works too
    assert data.classes == ["cat", "dog"] and set(data.train_y.tolist()) == {0, 1}
    assert set(data.train_x[:, 0, 0, 0].tolist()) == {60, 100}  # only cats (3) and dogs (5)
    assert (data.train_x[:, 0, 0, 0] == np.where(data.train_y == 0, 60, 100)).all()
    ships = load_dataset("cifar10", tmp_path, options={"classes": "ship,bird"})
    assert ships.classes == ["ship", "bird"] and (ships.test_x[:, 0, 0, 0] == np.where(ships.test_y == 0, 160, 40)).all()
    with pytest.raises(DatasetError, match="unknown CIFAR-10 class 'kitten'; known: airplane"):
        load_dataset("cifar10", tmp_path, options={"classes": "cat,kitten"})


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_malicious_cifar_pickle_is_refused(tmp_path):
    folder = write_cifar(tmp_path)
    marker = tmp_path / "pwned"
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil(marker), b"labels": []}))
    with pytest.raises(DatasetError, match=r"data_batch_3 is not a CIFAR batch file.*refused to unpickle (posix|os)\.system"):
        load_dataset("cifar10", tmp_path)
    assert not marker.exists()
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": np.array([Evil(marker)], dtype=object)}))
    with pytest.raises(DatasetError, match="refused"):  # object arrays would unpickle their items
        load_dataset("cifar10", tmp_path)
    assert not marker.exists()


def test_cifar_bad_input(tmp_path):
    with pytest.raises(DatasetError, match="no CIFAR-10 python batches"):
        load_dataset("cifar10", tmp_path)
    folder = write_cifar(tmp_path)
    (folder / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="test_batch is not a CIFAR batch file"):
        load_dataset("cifar10", tmp_path)
    with pytest.raises(DatasetError, match="dataset cifar10 takes no --image-size"):
        load_dataset("cifar10", tmp_path, options={"image_size": 32})


# --- CelebA ------------------------------------------------------------------------------------

def write_celeba(root, n=30, partition=True):
    """img_align_celeba/*.jpg (178x218) + list_attr_celeba.txt in the real format; every third face
    wears eyeglasses and is bright, the others are dark."""
    folder = root / "img_align_celeba"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    lines = [str(n), " ".join(CELEBA_ATTRIBUTES) + " "]
    glasses = CELEBA_ATTRIBUTES.index("Eyeglasses")
    for i in range(n):
        name = f"{i + 1:06d}.jpg"
        values = rng.choice([-1, 1], len(CELEBA_ATTRIBUTES))
        values[glasses] = 1 if i % 3 == 0 else -1
        # a bright or dark face on a mid-grey frame that the center crop removes
        image = np.full((218, 178, 3), 128, np.uint8)
        image[20:198, :] = 220 if values[glasses] == 1 else 30
        Image.fromarray(image).save(folder / name, quality=90)
        lines.append(name + " " + " ".join(f"{v:2d}" for v in values))
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    if partition:
        (root / "list_eval_partition.txt").write_text(
            "\n".join(f"{i + 1:06d}.jpg {0 if i < 24 else 2}" for i in range(n)) + "\n")
    return folder


def test_celeba_attributes_and_partition(tmp_path):
    write_celeba(tmp_path)
    data = load_dataset("celeba", tmp_path, options={"image_size": 32})
    assert data.train_x.shape == (24, 3, 32, 32) and data.test_x.shape == (6, 3, 32, 32)
    assert data.train_x.dtype == np.uint8 and data.train_y.dtype == np.uint8
    assert data.train_y.shape == (24, 40) and data.multilabel and data.classes == CELEBA_ATTRIBUTES
    glasses = data.train_y[:, CELEBA_ATTRIBUTES.index("Eyeglasses")]
    assert glasses.tolist() == [1 if i % 3 == 0 else 0 for i in range(24)]  # file order kept
    brightness = data.train_x.reshape(24, -1).mean(1)
    assert (brightness[glasses == 1] > 200).all() and (brightness[glasses == 0] < 50).all()  # cropped off the frame
    picked = load_dataset("celeba", tmp_path, options={"image_size": 16, "classes": "Smiling,Eyeglasses"})
    assert picked.classes == ["Smiling", "Eyeglasses"] and picked.train_y.shape == (24, 2)
    assert (picked.train_y[:, 1] == glasses).all() and picked.shape == (3, 16, 16)
    wide = load_dataset("celeba", tmp_path, options={"image_size": "16x32"})  # non-square: 16 high, 32 wide
    assert wide.shape == (3, 16, 32) and (wide.train_y == data.train_y).all()


def test_celeba_split_by_attribute(tmp_path):
    write_celeba(tmp_path / "celeba", n=36, partition=False)  # torchvision's layout; ~10% held out
    data = load_dataset("celeba_split", tmp_path, options={"image_size": 16, "fit": "crop"})
    assert data.domains == ("no_Eyeglasses", "Eyeglasses") and not data.paired
    assert data.feature_dataset == "celeba"
    assert len(data.train_x) + len(data.test_x) == 12 and len(data.train_a) + len(data.test_a) == 24
    assert len(data.test_x) == 1 and len(data.test_a) == 3
    assert data.train_x.mean() > 200 and data.train_a.mean() < 50  # B = with eyeglasses
    assert (data.train_y[:, CELEBA_ATTRIBUTES.index("Eyeglasses")] == 1).all()
    smiling = load_dataset("celeba_split", tmp_path, options={"image_size": 16, "attribute": "Smiling"})
    assert smiling.domains == ("no_Smiling", "Smiling")
    with pytest.raises(DatasetError, match="unknown CelebA attribute 'Glasses'; known: 5_o_Clock_Shadow"):
        load_dataset("celeba_split", tmp_path, options={"attribute": "Glasses"})


def test_celeba_bad_input(tmp_path):
    with pytest.raises(DatasetError, match="needs --data-root|no CelebA"):
        load_dataset("celeba", tmp_path)
    folder = write_celeba(tmp_path, n=6, partition=False)
    (folder / "000004.jpg").unlink()
    with pytest.raises(DatasetError, match=r"names 6 images but 1 are missing .*\(first: 000004.jpg\)"):
        load_dataset("celeba", tmp_path)
    (folder / "000004.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match="000004.jpg is not a readable image"):
        load_dataset("celeba", tmp_path)
    text = (tmp_path / "list_attr_celeba.txt").read_text().replace("000002.jpg  1", "000002.jpg  0", 1)
    (tmp_path / "list_attr_celeba.txt").write_text(text.replace("000002.jpg -1", "000002.jpg  0", 1))
    with pytest.raises(DatasetError, match="line 4: expected a file name and 40 values of 1 or -1"):
        load_dataset("celeba", tmp_path)


# --- folders -----------------------------------------------------------------------------------

def test_unpaired_folders(tmp_path):
    root = tmp_path / "horse2zebra"
    for i in range(12):
        png(root / "trainA" / f"h{i:02d}.png", 10 + i, mode="L")  # grey domain A
    for i in range(10):
        png(root / "trainB" / f"z{i:02d}.jpg", 200)
    data = load_dataset("unpaired_folders", root, options={"image_size": 8})
    assert data.domains == ("horse", "zebra") and not data.paired
    # one channel count for both domains (one feature network measures both): RGB, as B is
    assert data.train_a.shape == (11, 3, 8, 8) and data.test_a.shape == (1, 3, 8, 8)
    assert data.train_x.shape == (9, 3, 8, 8) and data.test_x.shape == (1, 3, 8, 8)
    assert (data.train_a[:, 0] == data.train_a[:, 1]).all() and data.train_a.max() < 30
    assert data.train_x.dtype == np.uint8 and data.train_y.tolist() == [1] * 9  # all of domain B
    assert data.classes == ["horse", "zebra"] and data.feature_dataset == "unpaired_folders_rotations"
    for d in "AB":  # with test folders they are the held-out images
        png(root / f"test{d}" / "t0.png", 50)
        png(root / f"test{d}" / "t1.png", 60)
    swapped = load_dataset("unpaired_folders", root, options={"image_size": 8, "swap_domains": True})
    assert swapped.domains == ("zebra", "horse") and len(swapped.train_a) == 10 and len(swapped.train_x) == 12
    assert len(swapped.test_x) == 2 and len(swapped.test_a) == 2
    with pytest.raises(DatasetError, match=r"has split folders \(testA/, testB/\); --heldout-fraction applies only"):
        load_dataset("unpaired_folders", root, options={"image_size": 8, "heldout_fraction": 0.2})
    with pytest.raises(DatasetError, match="unpaired_folders: .*trainA has no trainA/"):
        load_dataset("unpaired_folders", root / "trainA")
    with pytest.raises(DatasetError, match="dataset unpaired_folders needs --data-root"):
        load_dataset("unpaired_folders")


def test_paired_folders_match_by_name(tmp_path):
    for i in range(10):  # sketch i and photo i share a grey level; photos are JPEGs, sketches PNGs
        png(tmp_path / "sketches" / f"s{i}.png", 20 * i, mode="L")
        png(tmp_path / "photos" / f"s{i}.jpg", 20 * i, mode="L")
    data = load_dataset("paired_folders", tmp_path, options={"image_size": 8})
    assert data.paired and data.domains == ("sketches", "photos")  # the sketch folder is the source
    assert data.train_a.shape == data.train_x.shape == (9, 1, 8, 8) and data.test_a.shape == (1, 1, 8, 8)
    assert np.abs(data.train_a.astype(int) - data.train_x.astype(int)).max() <= 2  # pairs in the same order
    assert len(set(data.train_x[:, 0, 0, 0].tolist())) == 9
    named = load_dataset("paired_folders", tmp_path, options={"folders": "photos,sketches", "image_size": 8})
    assert named.domains == ("photos", "sketches")
    # FID/KID's feature network learns the domain and the rotation of both domains' images
    turned = load_dataset("paired_folders_rotations", tmp_path, options={"image_size": 8})
    assert turned.classes[:3] == ["sketches", "photos", "sketches rotated 90"] and len(turned.classes) == 8
    assert len(turned.train_x) == 8 * 9 and np.bincount(turned.train_y).tolist() == [9] * 8
    png(tmp_path / "photos" / "extra.png", 0)
    with pytest.raises(DatasetError, match="mismatched pairs: 1 file name.*'extra' is missing from .*sketches"):
        load_dataset("paired_folders", tmp_path, options={"folders": "sketches,photos"})
    with pytest.raises(DatasetError, match="neither two sub-folders with matching file names"):
        load_dataset("paired_folders", tmp_path)


def test_paired_side_by_side(tmp_path):
    root = tmp_path / "edges2shoes"
    for split, n in (("train", 6), ("val", 2)):
        for i in range(n):
            image = np.zeros((32, 64, 3), np.uint8)
            image[:, :32] = 10 * i  # A (left)
            image[:, 32:] = 255 - 10 * i  # B (right)
            (root / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / split / f"{i}_AB.jpg", quality=95)
    data = load_dataset("paired_folders", root, options={"image_size": 16})
    assert data.paired and data.domains == ("edges", "shoes")
    assert data.train_a.shape == data.train_x.shape == (6, 3, 16, 16) and data.test_x.shape == (2, 3, 16, 16)
    left, right = data.train_a.mean((1, 2, 3)), data.train_x.mean((1, 2, 3))
    assert np.allclose(left, 10 * np.arange(6), atol=2) and np.allclose(right, 255 - 10 * np.arange(6), atol=2)


def test_image_folder_of_signatures(tmp_path):
    """Mixed sizes and modes (mostly grey, one RGB, one RGBA with a transparent background): grey
    as most are, padded to a square with the paper's colour."""
    root = tmp_path / "signatures"
    root.mkdir()
    for i, size in enumerate([(120, 40), (90, 60), (200, 50), (60, 90)] * 3):
        image = Image.new("L", size, 255)
        image.paste(0, (size[0] // 4, size[1] // 2, 3 * size[0] // 4, size[1] // 2 + size[1] // 8))  # a stroke
        image.save(root / f"sig{i:02d}.png")
    colour = Image.new("RGB", (80, 30), (255, 255, 250))
    colour.paste((20, 20, 120), (10, 12, 70, 18))  # blue ink
    colour.save(root / "colour.jpg")
    rgba = Image.new("RGBA", (50, 50), (0, 0, 0, 0))
    rgba.paste((0, 0, 0, 255), (10, 20, 40, 23))
    rgba.save(root / "transparent.png")
    data = load_dataset("image_folder", root, options={"image_size": 24, "fit": "pad"})
    assert data.train_x.shape[1:] == (1, 24, 24) and len(data.train_x) + len(data.test_x) == 14
    assert len(data.test_x) == 1 and data.classes == ["signatures"]
    x = np.concatenate([data.train_x, data.test_x])
    assert (x[:, 0, 0, 0] >= 250).all()  # padding and transparency are paper-white, not black
    assert (x.reshape(14, -1).min(1) < 160).all()  # every signature's stroke survived the resize
    cropped = load_dataset("image_folder", root, options={"image_size": 12, "fit": "stretch"})
    assert cropped.shape == (1, 12, 12)


def test_label_free_folders_get_a_rotation_feature_dataset(tmp_path):
    for i in range(10):
        image = np.full((16, 16), 255, np.uint8)
        image[2:4, 1:3 + i] = 0  # strokes from the top-left corner: their rotation is visible
        Image.fromarray(image).save(tmp_path / f"{i}.png")
    data = load_dataset("image_folder", tmp_path, options={"image_size": 16})
    assert data.feature_dataset == "image_folder_rotations" and data.classes == [tmp_path.name]
    turned = load_dataset(data.feature_dataset, tmp_path, options={"image_size": 16})
    assert turned.classes == [tmp_path.name] + [f"{tmp_path.name} rotated {a}" for a in (90, 180, 270)]
    assert turned.train_x.shape == (36, 1, 16, 16) and turned.train_y.tolist() == [0] * 9 + [1] * 9 + [2] * 9 + [3] * 9
    assert (turned.train_x[:9] == data.train_x).all() and (turned.test_x[:1] == data.test_x).all()
    assert (turned.train_x[9] == np.rot90(data.train_x[0], 1, axes=(1, 2))).all()


def test_image_folder_classes_from_sub_folders(tmp_path):
    for name, value in (("alice", 30), ("bob", 220)):
        for i in range(5):
            png(tmp_path / name / f"{i}.png", value, mode="L")
    data = load_dataset("image_folder", tmp_path, options={"image_size": 8})
    assert data.classes == ["alice", "bob"]
    x, y = np.concatenate([data.train_x, data.test_x]), np.concatenate([data.train_y, data.test_y])
    assert (x[:, 0, 0, 0] == np.where(y == 0, 30, 220)).all()


def test_folder_bad_input(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="image_folder: no images"):
        load_dataset("image_folder", tmp_path / "empty")
    with pytest.raises(DatasetError, match="not a directory"):
        load_dataset("image_folder", tmp_path / "missing")
    png(tmp_path / "one" / "a.png", 1)
    with pytest.raises(DatasetError, match="1 image.*need at least 2"):
        load_dataset("image_folder", tmp_path / "one")
    (tmp_path / "one" / "b.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DatasetError, match="b.png is not a readable image"):
        load_dataset("image_folder", tmp_path / "one")
    # several bad files: all named in one pass (the first ten, and how many), not one a run (issue 30 item 5)
    for i in range(12):
        (tmp_path / "one" / f"c{i:02d}.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DatasetError, match=r"13 of 14 files are not readable images: .*b\.png, .*c00\.png.* \.\.\.; fix or remove"):
        load_dataset("image_folder", tmp_path / "one")
    for i in range(12):
        (tmp_path / "one" / f"c{i:02d}.png").unlink()
    with pytest.raises(DatasetError, match="unknown fit 'zoom'"):
        load_dataset("image_folder", tmp_path / "one", options={"fit": "zoom"})
    with pytest.raises(DatasetError, match="dataset image_folder takes no --attribute"):
        load_dataset("image_folder", tmp_path / "one", options={"attribute": "Eyeglasses"})


def test_decoded_images_are_cached(tmp_path, own_cache):
    for i in range(6):
        png(tmp_path / "imgs" / f"{i}.png", 40 * i)
    files = image_files(tmp_path / "imgs", "test")
    first, grey = decode_images(files, 8)
    assert first.shape == (6, 3, 8, 8) and not grey.any()
    entries = list((own_cache / "decoded").glob("*.npz"))
    assert len(entries) == 1
    # the second load reads the cache, not the files: plant a marker in the cached array
    planted = first.copy()
    planted[0, 0, 0, 0] = 7
    np.savez(entries[0], images=planted, grey=grey)
    assert decode_images(files, 8)[0][0, 0, 0, 0] == 7
    assert decode_images(files, 4)[0].shape == (6, 3, 4, 4)  # other options: another entry
    png(tmp_path / "imgs" / "0.png", 99, size=(21, 16))  # a changed file: decoded again
    again = decode_images(image_files(tmp_path / "imgs", "test"), 8)[0]
    assert again[0, 0, 0, 0] != 7 and len(list((own_cache / "decoded").glob("*.npz"))) == 3


# --- one real sweep ----------------------------------------------------------------------------

@pytest.mark.slow
def test_dcgan_sweeps_an_image_folder(ray_address, tmp_path):
    """A folder dataset end to end: --data-root and its options reach the trials and sweep.json."""
    rng = np.random.default_rng(0)
    (tmp_path / "strokes").mkdir()
    for i in range(200):  # a stroke of random grey and height, and a dot top-left, 16x16
        image = np.full((16, 16), 255, np.uint8)
        r = rng.integers(3, 12)
        image[r:r + 2, 2:14] = rng.integers(0, 120)
        image[1:3, 1:3] = 0
        Image.fromarray(image).save(tmp_path / "strokes" / f"{i:03d}.png")
    space = tmp_path / "space.toml"
    space.write_text('width = 8\nlatent_dim = 8\nbatch_size = 32\n[lr_g]\ndistribution = "loguniform"\n'
                     'low = 1e-4\nhigh = 1e-3\n')
    exp = family_sweep(ray_address, tmp_path / "exp", "dcgan", "--dataset", "image_folder", "--data-root",
                       str(tmp_path / "strokes"), "--image-size", "16", "--fit", "stretch", "--space", str(space),
                       "--skip-feature-check", max_steps=20, eval_every=20)  # 20 held-out images: too few to check
    spec = json.loads((exp / "sweep.json").read_text())
    assert spec["dataset"] == "image_folder" and spec["data_options"] == {"image_size": 16, "fit": "stretch"}
    assert spec["dataset_info"]["shape"] == [1, 16, 16]
    config = json.loads(next(exp.glob("checkpoints/*/checkpoint_*/config.json")).read_text())
    assert config["data"]["options"] == spec["data_options"]  # so infer reloads the same held-out images
    # no labels: SimCLR features of the folder's own images (unchecked, as asked)
    assert spec["feature_network"]["name"] == "simclr-image_folder" and "check" not in spec["feature_network"]
    assert spec["feature_check"] is False
    results = [json.loads(line) for p in exp.glob("run_trial_*/result.json") for line in p.read_text().splitlines()]
    assert len({r["trial_id"] for r in results}) == 2
    assert all(np.isfinite(r["fid"]) for r in results if r["step"] == 20)
    assert all(r["untrained"] == 1 and r["fid"] > 0 for r in results if r["step"] == 0)  # a reference, flagged
