import numpy as np
import pytest

from scip.reduce.quantiles import QuantileSearch, exact_quantiles, from_keys, to_keys

QS = [0.0, 0.01, 0.25, 0.5, 0.75, 0.99, 1.0]


def drive(parts, qs=QS, max_values=1_000_000, bins=4096, order=None):
    """Run the search in-process; return it and the most values gathered in one round."""
    search = QuantileSearch(qs, max_values=max_values, bins=bins)
    gathered = []
    while (request := search.request()) is not None:
        partials = [QuantileSearch.partial(request, p) for p in parts]
        if order is not None:
            partials = [partials[i] for i in order]
        combined = QuantileSearch.combine(partials)
        gathered.append(combined.n_collected)
        search.update(combined)
    return search, max(gathered)


def expected(parts, qs=QS):
    values = np.concatenate([np.ravel(p) for p in parts]).astype(np.float64)
    return np.quantile(values[~np.isnan(values)], qs)


def assert_exact(result, parts, qs=QS):
    got = [result[float(q)] for q in qs]
    want = expected(parts, qs).tolist()
    assert got == want


def test_keys_order_and_round_trip():
    x = np.array([-np.inf, -1e308, -2.5, -5e-324, 0.0, 5e-324, 1.0, 1.5, 1e308, np.inf])
    k = to_keys(x)
    assert (np.diff(k.astype(object)) > 0).all()
    assert from_keys(k).tolist() == x.tolist()
    assert to_keys(np.array([-0.0]))[0] == to_keys(np.array([0.0]))[0]
    nan_keys = to_keys(np.array([np.nan, -np.nan]))
    assert all(nk > k[-1] or nk < k[0] for nk in nan_keys)


def test_random_floats_unequal_partitions_with_empty():
    rng = np.random.default_rng(0)
    x = rng.lognormal(size=200_000)
    cuts = [0, 3, 3, 50_000, 50_001, 199_000]
    parts = np.split(x, cuts)  # sizes 0, 3, 0, 49997, 1, 148999, 1000
    assert any(p.size == 0 for p in parts)
    search, _ = drive(parts)
    assert_exact(search.result, parts)
    assert search.n == x.size
    assert search.rounds == 2  # binades, then one collect round


def test_uint16_heavy_ties():
    rng = np.random.default_rng(1)
    img = rng.poisson(40, size=(300, 300)).astype(np.uint16)
    img[:150] = 0  # half the pixels are background
    img[200:, :50] = 65535  # saturated
    parts = [img[:100], img[100:250], img[250:]]
    # max_values small against the ties: equal values must be resolved from
    # the bins, not by gathering them
    search, gathered = drive(parts, max_values=1000)
    assert_exact(search.result, parts)
    assert gathered <= 1000
    assert search.result[0.25] == 0.0 and search.result[1.0] == 65535.0


def test_uint16_full_range_quantiles_between_values():
    rng = np.random.default_rng(2)
    parts = [rng.integers(0, 65536, size=n).astype(np.uint16) for n in (10, 70_000, 9_999)]
    qs = [0.0, 0.001, 0.013, 0.5, 0.987, 0.99, 1.0]
    search, _ = drive(parts, qs=qs, max_values=100)
    assert_exact(search.result, parts, qs)
    assert any(v != int(v) for v in search.result.values())  # interpolated


def test_all_equal_values():
    parts = [np.full(1000, 3.25), np.full(7, 3.25), np.empty(0)]
    search, gathered = drive(parts, max_values=0)
    assert_exact(search.result, parts)
    assert search.rounds == 1 and gathered == 0


@pytest.mark.parametrize("max_values", [0, 10])
def test_tiny_max_values_forces_refinement(max_values):
    rng = np.random.default_rng(3)
    x = rng.random(20_000)
    # values packed in a narrow range, so the first bins hold many of them
    x = 1.0 + x * 1e-9
    parts = np.array_split(x, 5)
    search, gathered = drive(parts, max_values=max_values, bins=16)
    assert search.rounds > 3
    assert gathered <= max_values
    assert_exact(search.result, parts)


def test_negative_and_huge_magnitudes():
    rng = np.random.default_rng(4)
    x = np.concatenate([
        rng.standard_normal(5000) * 1e300,
        -rng.random(5000) * 1e-300,
        rng.random(100) * 5e-324 * 4,  # subnormals
        [-1.7e308, 1.7e308, -0.0, 0.0],
    ])
    rng.shuffle(x)
    parts = np.array_split(x, 4)
    for max_values in (1_000_000, 50):
        search, _ = drive(parts, max_values=max_values)
        assert_exact(search.result, parts)


def test_nans_ignored():
    rng = np.random.default_rng(5)
    x = rng.standard_normal(10_000)
    x[rng.random(x.size) < 0.3] = np.nan
    x[0] = -np.nan
    parts = np.array_split(x, 3) + [np.array([np.nan, np.nan])]
    search, _ = drive(parts, max_values=100)
    assert search.n == int((~np.isnan(x)).sum())
    got = [search.result[q] for q in QS]
    assert got == np.nanquantile(x, QS).tolist()


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_infinities_like_numpy():
    parts = [np.array([1.0, np.inf, 2.0]), np.array([-np.inf, np.inf])]
    search, _ = drive(parts)
    np.testing.assert_array_equal([search.result[q] for q in QS], expected(parts))


def test_single_value_and_q_bounds():
    search, _ = drive([np.array([7.0])], qs=[0.0, 0.3, 1.0])
    assert search.result == {0.0: 7.0, 0.3: 7.0, 1.0: 7.0}


def test_no_values_gives_nan():
    for parts in ([], [np.empty(0)], [np.empty(0), np.array([np.nan])]):
        result = exact_quantiles(parts, [0.0, 0.5, 1.0])
        assert list(result) == [0.0, 0.5, 1.0]
        assert all(np.isnan(v) for v in result.values())


def test_exact_quantiles_convenience():
    rng = np.random.default_rng(6)
    parts = [rng.standard_normal((30, 40)), rng.standard_normal(17)]
    assert_exact(exact_quantiles(parts, QS, max_values=20), parts)


def summaries_equal(a, b):
    assert a.round == b.round and len(a.summaries) == len(b.summaries)
    for s, t in zip(a.summaries, b.summaries):
        assert s.counts.tolist() == t.counts.tolist()
        assert s.lows.tolist() == t.lows.tolist()
        assert s.highs.tolist() == t.highs.tolist()
        assert sorted(s.keys.tolist()) == sorted(t.keys.tolist())


def test_combine_is_associative_and_order_independent():
    rng = np.random.default_rng(7)
    parts = [rng.integers(0, 500, size=n).astype(np.float64) for n in (0, 1000, 30, 4000, 7)]
    search = QuantileSearch(QS, max_values=300, bins=64)
    while (request := search.request()) is not None:
        p = [QuantileSearch.partial(request, x) for x in parts]
        flat = QuantileSearch.combine(p)
        tree = QuantileSearch.combine([QuantileSearch.combine(p[3:]), QuantileSearch.combine([p[2], p[0], p[1]])])
        reordered = QuantileSearch.combine(p[::-1])
        summaries_equal(flat, tree)
        summaries_equal(flat, reordered)
        search.update(reordered)
    assert search.rounds > 2
    assert_exact(search.result, parts)
    assert drive(parts, max_values=300, bins=64, order=[4, 2, 0, 3, 1])[0].result == search.result


def test_gathered_values_bounded():
    rng = np.random.default_rng(8)
    parts = [rng.standard_normal(n) for n in (20_000, 5, 40_000)]
    for max_values in (0, 1, 100, 5000):
        search, gathered = drive(parts, qs=[0.001, 0.1, 0.5, 0.9, 0.999], max_values=max_values, bins=256)
        assert gathered <= max_values
        assert_exact(search.result, parts, [0.001, 0.1, 0.5, 0.9, 0.999])


def test_changed_partitions_are_detected():
    rng = np.random.default_rng(9)
    x = rng.random(10_000)
    search = QuantileSearch([0.5], max_values=10)
    search.update(QuantileSearch.partial(search.request(), x))
    with pytest.raises(ValueError, match="expected"):
        search.update(QuantileSearch.partial(search.request(), x[:-1]))


def test_invalid_arguments():
    with pytest.raises(ValueError):
        QuantileSearch([1.5])
    with pytest.raises(ValueError):
        QuantileSearch([0.5], bins=100)
    with pytest.raises(RuntimeError):
        QuantileSearch([0.5]).result


def test_interpolation_bit_for_bit():
    # Sparse values with wide gaps and many quantiles: numpy's two-sided
    # interpolation (a + d t below t = 0.5, b - d (1 - t) above) rounds
    # differently from a one-sided formula for many of these.
    rng = np.random.default_rng(11)
    parts = [rng.integers(0, 65536, size=n).astype(np.uint16) for n in (13, 0, 24)]
    parts.append(rng.random(20) * 1e5)
    qs = np.sort(rng.random(300)).tolist()
    search, _ = drive(parts, qs=qs, max_values=5)
    assert_exact(search.result, parts, qs)
