"""Shape-gated split and merge of U-Net nucleus instances (scip.segment.unet.split_merge, via clean_nuclei)."""

import numpy as np

from scip.segment.unet import modelfile
from scip.segment.unet.model import Architecture
from scip.segment.unet.predict import clean_nuclei, labels_from_probabilities
from scip.config.sections import UnetConfig
from scip.segment.unet import split_merge as shape
from scip.segment.unet.split_merge import merge_convex, split_concave

SHAPE = {"split_area": 1.5, "split_h": 1.0, "merge_solidity": 0.93, "merge_area": 5.0, "merge_boundary": 1.5}
SIZE = 160


def disk(centre, radius):
    yy, xx = np.mgrid[:SIZE, :SIZE]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


def bump(centre, sigma):
    yy, xx = np.mgrid[:SIZE, :SIZE]
    return np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * sigma ** 2))


def model(**post):
    """A model file whose postprocess has the split/merge keys ``post`` only (none: no split/merge)."""
    meta = modelfile.default_meta(["nuclei"])
    meta["diameter"] = 24.0
    meta["postprocess"] = {k: v for k, v in meta["postprocess"].items() if not k.startswith(("split_", "merge_"))}
    meta["postprocess"].update(post)
    return modelfile.ModelFile(Architecture(), {}, meta)


def test_the_switch_overrides_the_model_file():
    # split_merge=True applies the selected settings to a file without them; False turns a file's own off.
    pair = [((100, 90), 12), ((100, 110), 12)]
    probs = probabilities(SINGLES + pair, [(c, 5) for c, _ in SINGLES] + [((100, 100), 8)])
    labels = labels_from_probabilities(probs, 0.5, 0.5, 20, 0.2)
    assert SHAPE == shape.DEFAULTS
    assert clean_nuclei(labels, probs, model()).max() == 4
    assert clean_nuclei(labels, probs, model(), split_merge=True).max() == 5
    assert clean_nuclei(labels, probs, model(**SHAPE), split_merge=False).max() == 4
    assert UnetConfig(method="unet", split_merge=True).split_merge is True


def probabilities(objects, peaks):
    """Foreground = the union of ``objects`` (disks); centre = Gaussian bumps at ``peaks`` (centre, sigma)."""
    fg = np.zeros((SIZE, SIZE), bool)
    for c, r in objects:
        fg |= disk(c, r)
    centre = np.zeros((SIZE, SIZE))
    for c, s in peaks:
        centre = np.maximum(centre, bump(c, s))
    return np.stack([fg.astype(np.float32), (centre * fg).astype(np.float32)])


# Three ordinary nuclei (radius 12) that set the image's median size.
SINGLES = [((30, 30), 12), ((30, 130), 12), ((130, 30), 12)]


def test_two_touching_disks_grown_from_one_seed_become_two():
    # Two disks whose centres are 20 px apart (a neck between them) with one centre peak between them: the
    # seeded watershed makes one object of both, as the U-Net does on DSB's touching nuclei.
    pair = [((100, 90), 12), ((100, 110), 12)]
    probs = probabilities(SINGLES + pair, [(c, 5) for c, _ in SINGLES] + [((100, 100), 8)])
    labels = labels_from_probabilities(probs, 0.5, 0.5, 20, 0.2)
    assert labels.max() == 4  # the pair is one object before the split
    out = clean_nuclei(labels, probs, model(**SHAPE))
    assert out.max() == 5
    left, right = out[100, 92], out[100, 108]
    assert left and right and left != right
    # Without the keys the clean-up keeps the merged pair.
    assert clean_nuclei(labels, probs, model()).max() == 4
    # A median area given from outside (a window gets the whole image's) replaces the image's own: against a
    # median 4x this image's the pair is an ordinary object and stays one.
    assert clean_nuclei(labels, probs, model(**SHAPE), median_area=shape.median_area(labels)).max() == 5
    assert clean_nuclei(labels, probs, model(**SHAPE), median_area=4 * shape.median_area(labels)).max() == 4


def test_one_big_convex_disk_cut_by_two_seeds_becomes_one():
    # One disk of radius 22 (3.4x the singles' area) whose centre map has two separate peaks: two pieces, as the
    # U-Net cuts misc-HeLa's and misc-MCC13's large nuclei.
    big = ((105, 105), 22)
    peaks = [((105, 95), 5), ((105, 115), 5)]
    probs = probabilities(SINGLES + [big], [(c, 5) for c, _ in SINGLES] + peaks)
    labels = labels_from_probabilities(probs, 0.5, 0.5, 20, 0.2)
    assert labels.max() == 5
    out = clean_nuclei(labels, probs, model(**SHAPE))
    assert out.max() == 4
    assert len(np.unique(out[disk(*big)])) == 1
    assert clean_nuclei(labels, probs, model()).max() == 5


def test_size_gates_keep_ordinary_objects_as_they_are():
    # Two touching disks of ordinary size next to many others: the pair is not above 1.5x the median, so no split;
    # two touching round nuclei have a union of solidity ~0.88 < 0.93 and a short border, so no merge either.
    many = [((20 + 40 * i, 20 + 40 * j), 10) for i in range(4) for j in range(2)]
    pair = [((120, 110), 10), ((120, 129), 10)]
    probs = probabilities(many + pair, [(c, 4) for c, _ in many + pair])
    labels = labels_from_probabilities(probs, 0.5, 0.5, 20, 0.2)
    assert labels.max() == 10
    np.testing.assert_array_equal(split_concave(labels, 1.5, 1.0), labels)
    np.testing.assert_array_equal(merge_convex(labels, 0.93, 5.0, 1.5), labels)
    np.testing.assert_array_equal(clean_nuclei(labels, probs, model(**SHAPE)), labels)


def test_a_long_shared_border_joins_a_fragment():
    # A half-disk cut off a nucleus along a straight line: the union is convex, but test the border rule alone by
    # asking for a solidity no union can reach.
    labels = np.zeros((SIZE, SIZE), np.int32)
    labels[disk((80, 80), 15)] = 1
    labels[disk((80, 80), 15) & (np.mgrid[:SIZE, :SIZE][1] > 88)] = 2
    labels[disk((20, 20), 12)] = 3
    assert merge_convex(labels, 1.01, 5.0).max() == 3
    assert merge_convex(labels, 1.01, 5.0, boundary=1.0).max() == 2
