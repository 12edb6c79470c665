"""A first run that does not wait on numba: one signature per kernel, compiled ahead, cached where it can be."""

from __future__ import annotations

import importlib
import os
import tempfile
from pathlib import Path

import numba
import numpy as np
import pytest

from scip import _numbacache
from scip.features import _groups, extract, warmup
from scip.features.crops import extract_crops
from scip.features.volume import extract_volumes

FEATURE_MODULES = ("_glcm", "_groups", "_shape_kernels", "_stats", "intensity", "texture", "shape", "volume")


def _dispatchers() -> dict[str, object]:
    out = {}
    for name in FEATURE_MODULES:
        module = importlib.import_module(f"scip.features.{name}")
        for attr, value in vars(module).items():
            if isinstance(value, numba.core.registry.CPUDispatcher) and value.py_func.__module__ == module.__name__:
                out[f"{name}.{attr}"] = value
    # Compiled on first use, so not a module attribute.
    out["_groups._counting_sort"] = _groups.counting_sort()
    out["_groups._label_counts"] = _groups.label_counts()
    return out


def _labels(shape=(90, 90), dtype=np.int32) -> np.ndarray:
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, dtype)
    k = 1
    for r in range(12, shape[0] - 10, 22):
        for c in range(12, shape[1] - 10, 22):
            labels[(rr - r) ** 2 + ((cc - c) * (1 + k % 2)) ** 2 <= 64 + 9 * (k % 3)] = k
            k += 1
    labels[2, 2] = k  # a one-pixel object: texture directions without a pair
    return labels


def test_warmup_compiles_every_specialization_the_families_reach():
    """After compile_kernels, extracting from any pixel dtype, label dtype or entry point adds no signature
    to any kernel: every kernel called from Python is in KERNELS, with the signature it is called with."""
    warmup.compile_kernels()
    kernels = _dispatchers()
    before = {name: list(d.signatures) for name, d in kernels.items()}
    assert {k.name for k in warmup.KERNELS} <= set(kernels)
    rng = np.random.default_rng(0)
    for dtype in (np.uint8, np.uint16, np.int32, np.float32, np.float64, bool):
        for ldtype in (np.int32, np.uint16, np.int64):
            pixels = (rng.random((2, 90, 90)) * 200).astype(dtype)
            extract(pixels, _labels(dtype=ldtype), families=["shape", "intensity", "texture", "bbox"],
                    distances=(1, 3), gray_levels=16, intensity_range=[(0, 100), (0, 200)])
    labels = _labels()
    crops = [rng.random((2, 30, 30)).astype(np.float32) for _ in range(3)]
    masks = [labels[i * 22: i * 22 + 30, :30] > 0 for i in range(3)]
    extract_crops(crops, masks, ["a", "b"], families=["shape", "intensity", "texture", "bbox"],
                  backgrounds=[~m for m in masks], band_masks=masks)
    volume = np.zeros((5, 20, 20), bool)
    volume[1:4, 5:15, 4:12] = True
    extract_volumes([rng.random((1, 5, 20, 20)).astype(np.uint16)], [volume], ["a"])
    after = {name: list(d.signatures) for name, d in kernels.items()}
    grown = {name: after[name][len(before[name]):] for name in kernels if after[name] != before[name]}
    assert not grown, f"kernels compiled for signatures the warm-up does not know: {grown}"


def _check_one_signature() -> None:
    warmup.compile_kernels()
    extract(np.ones((1, 40, 40), np.float32), _labels((40, 40)))
    many = {name: d.signatures for name, d in _dispatchers().items() if len(d.signatures) > 1}
    assert not many, f"kernels with more than one compiled specialization: {many}"


def test_one_signature_per_kernel():
    """The literal-free call sites: no helper is compiled once per constant it is called with.

    In a process of its own: other tests compile the variants a kernel gets on
    first use of unusual input (a background band wider than 15 px), which
    this process would then hold too.
    """
    import subprocess
    import sys

    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            "import test_first_run; test_first_run._check_one_signature()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def test_kernels_for_and_assign():
    texture = {k.name for k in warmup.kernels_for(["texture"])}
    assert "_glcm.haralick_runs" in texture and "_shape_kernels.shape_kernel" not in texture
    assert warmup.kernels_for([]) == []
    assert warmup.kernels_for("bbox") == []  # bbox groups pixels with numpy: nothing to compile
    assert "_groups._counting_sort" in {k.name for k in warmup.kernels_for(["shape"])}
    shares = warmup.assign(warmup.KERNELS, 3)
    assert sorted(k.name for s in shares for k in s) == sorted(k.name for k in warmup.KERNELS)
    costs = [sum(k.cost for k in s) for s in shares]
    # Longest first onto the lightest share: no share exceeds the mean by more than the largest kernel.
    assert max(costs) <= sum(costs) / 3 + max(k.cost for k in warmup.KERNELS)
    assert [len(s) for s in warmup.assign(warmup.KERNELS[:2], 4)].count(0) == 2
    with pytest.raises(ValueError, match="at least one"):
        warmup.assign(warmup.KERNELS, 0)
    for n in (2, 3, 4):
        share_of = {k.name: i for i, s in enumerate(warmup.assign(warmup.KERNELS, n)) for k in s}
        bundled = [k.name for k in warmup.KERNELS if k.bundle == "selection"]
        assert len(bundled) == 2 and len({share_of[b] for b in bundled}) == 1


def _compiled_callees(dispatcher) -> set[str]:
    """Every function compiled on its own that ``dispatcher``'s code reaches through module globals.

    Functions inlined into their callers (``inline="always"``) are not compiled on their own.
    """
    from numba.core.dispatcher import Dispatcher

    seen: set[str] = set()
    todo = [dispatcher]
    while todo:
        fn = todo.pop().py_func
        for name in fn.__code__.co_names:
            target = fn.__globals__.get(name)
            if isinstance(target, Dispatcher) and target.targetoptions.get("inline") != "always":
                key = f"{target.py_func.__module__}.{target.py_func.__qualname__}"
                if key not in seen:
                    seen.add(key)
                    todo.append(target)
    return seen


def test_kernels_that_share_compiled_helpers_are_bundled():
    # Two kernels in different shares that call one helper each compile it: the bundles must say so.
    callees = {k.name: _compiled_callees(k.dispatcher) for k in warmup.KERNELS}
    assert callees["intensity._run_median"] & callees["_stats._run_stats"]
    for a in warmup.KERNELS:
        for b in warmup.KERNELS:
            shared = callees[a.name] & callees[b.name]
            if a.name < b.name and shared:
                assert a.bundle is not None and a.bundle == b.bundle, (a.name, b.name, sorted(shared))


def test_kernels_call_no_numba_overloads_that_cost_compile_time():
    """Issue 18: on an empty cache numba compiles each overload it meets once per argument types and flag
    set (kernels and helpers differ), and types an ``inline="always"`` function again at every call site.
    The kernels and the helpers they reach allocate with np.empty only and compare instead of min/max."""
    from numba.core.dispatcher import Dispatcher

    costly = {"min", "max", "zeros", "full", "ones", "arange", "finfo", "zeros_like", "full_like"}
    for kernel in warmup.KERNELS:
        reached = [kernel.dispatcher]
        for key in _compiled_callees(kernel.dispatcher):
            module, name = key.rsplit(".", 1)
            reached.append(getattr(importlib.import_module(module), name))
        for dispatcher in reached:
            fn = dispatcher.py_func
            called = costly & set(fn.__code__.co_names)
            assert not called, (fn.__qualname__, sorted(called))
            for name in fn.__code__.co_names:
                target = fn.__globals__.get(name)
                if isinstance(target, Dispatcher):
                    assert target.targetoptions.get("inline") != "always", (fn.__qualname__, name)


def test_compile_kernels_names_an_unknown_kernel():
    with pytest.raises(ValueError, match="'nope'.*_glcm.haralick_runs"):
        warmup.compile_kernels(["nope"])
    assert set(warmup.compile_kernels(["_groups._counting_sort"])) == {"_groups._counting_sort"}


def test_cache_dir_keeps_numbas_choice_where_it_works(tmp_path):
    user_cache = tmp_path / "home" / ".cache" / "numba"
    package = tmp_path / "site-packages" / "scip"
    temp = tmp_path / "tmp"
    writable = {package / "features" / "__pycache__", user_cache}

    def choose(env=None, ok=writable):
        return _numbacache.choose_cache_dir(env or {}, package, user_cache, temp, "1000", lambda p: p in ok)

    assert choose() is None                                   # in-tree __pycache__
    assert choose(ok={user_cache}) is None                    # read-only install: numba's per-user folder
    assert choose(ok=set()) == temp / "scip-numba-cache-1000"  # nothing writable: the temp folder, per user
    assert choose(env={"NUMBA_CACHE_DIR": "/mine"}, ok=set()) is None  # the user's choice stands


def test_can_create(tmp_path):
    assert _numbacache._can_create(tmp_path / "a" / "b")
    (tmp_path / "file").write_text("x")
    assert not _numbacache._can_create(tmp_path / "file")
    assert not _numbacache._can_create(tmp_path / "file" / "below")


def test_numba_user_cache_dir_follows_numba():
    from numba.misc.appdirs import user_cache_dir

    assert _numbacache.numba_user_cache_dir() == Path(user_cache_dir("numba", appauthor=False))
    assert _numbacache.numba_user_cache_dir({"HOME": "/h", "XDG_CACHE_HOME": "/x"}, "linux") == Path("/x/numba")
    assert _numbacache.numba_user_cache_dir({"HOME": "/h"}, "darwin") == Path("/h/Library/Caches/numba")


def test_configure_sets_the_variable_and_numbas_config(monkeypatch, tmp_path):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setattr(numba.core.config, "CACHE_DIR", numba.core.config.CACHE_DIR)
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(_numbacache, "_can_create", lambda p: False)
    chosen = _numbacache.configure()
    assert chosen == tmp_path / f"scip-numba-cache-{_numbacache._user()}"
    assert os.environ["NUMBA_CACHE_DIR"] == str(chosen) == numba.core.config.CACHE_DIR
    monkeypatch.setattr(_numbacache, "_can_create", lambda p: True)
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    assert _numbacache.configure() is None and "NUMBA_CACHE_DIR" not in os.environ


class _FakeFuture:
    def __init__(self, status, value=None):
        self.status, self.value = status, value

    def result(self):
        return self.value

    def exception(self):
        return self.value


class _FakeClient:
    """What start_warming uses of a distributed Client: workers with resources, submit with a preferred worker."""

    def __init__(self, workers: dict[str, dict], outcomes: tuple = ()):
        self.workers, self.outcomes, self.submitted = workers, list(outcomes), []

    def scheduler_info(self, n_workers=-1):
        return {"workers": {a: {"resources": r} for a, r in self.workers.items()}}

    def submit(self, func, names, rest, workers, allow_other_workers, pure):
        # a preference: a share must not wait forever for a worker that died
        assert allow_other_workers is True and len(workers) == 1
        self.submitted.append((workers[0], names, rest))
        if self.outcomes:
            return self.outcomes.pop(0)
        return _FakeFuture("finished", func(names, rest))


def test_warm_workers_gives_each_feature_worker_its_own_share(monkeypatch, caplog):
    from scip.engine import warm
    from scip.engine.cluster import CPU, GPU, Routing, Session

    monkeypatch.setattr(warm, "_compile_share", lambda names, rest: {n: 0.0 for n in names})
    client = _FakeClient({"tcp://a": {CPU: 1}, "tcp://b": {CPU: 2}, "tcp://g": {GPU: 1}})
    session = Session(client, Routing({GPU: 1}, {CPU: 1}))
    seconds = warm.warm_workers(session, ["shape", "texture"])
    wanted = {k.name for k in warmup.kernels_for(["shape", "texture"])}
    assert set(seconds) == wanted
    assert {w for w, _, _ in client.submitted} == {"tcp://a", "tcp://b"}  # not the GPU worker: it runs no features
    shares = [set(names) for _, names, _ in client.submitted]
    assert not shares[0] & shares[1] and shares[0] | shares[1] == wanted
    # after its own share, each worker goes through the other's from its end
    (_, first, first_rest), (_, second, second_rest) = client.submitted
    assert first_rest == second[::-1] and second_rest == first[::-1]
    assert warm.warm_workers(Session(None), ["texture"]) is None


def test_a_share_goes_on_through_the_others_kernels_it_has_not_done(monkeypatch):
    from scip.engine import warm
    from scip.features import warmup as wu

    calls = []
    monkeypatch.setattr(wu, "compile_kernels", lambda names: calls.append(list(names)) or {n: len(calls) for n in names})
    seconds = warm._compile_share(["a", "b"], ["d", "c", "b"])  # not on a worker: nothing to secede from
    assert calls == [["a", "b"], ["d", "c"]]
    assert seconds == {"a": 1, "b": 1, "d": 2, "c": 2}
    shares = [[_Named("a"), _Named("b")], [_Named("c")], [_Named("d"), _Named("e")]]
    assert warm._rest(shares, 0) == ["c", "e", "d"] and warm._rest(shares, 1) == ["e", "d", "b", "a"]


class _Named:
    def __init__(self, name):
        self.name = name


def test_a_share_whose_worker_died_is_not_waited_for(caplog):
    from scip.engine import warm
    from scip.engine.cluster import CPU, Routing, Session

    class KilledWorker(Exception):
        pass

    class Later(_FakeFuture):  # finishes on the third look
        looks = 0

        @property
        def status(self):
            Later.looks += 1
            return "finished" if Later.looks >= 3 else "pending"

        @status.setter
        def status(self, value):
            pass

    workers = {"tcp://a": {CPU: 1}, "tcp://b": {CPU: 1}, "tcp://c": {CPU: 1}, "tcp://d": {CPU: 1}}
    outcomes = (_FakeFuture("lost"), _FakeFuture("error", KilledWorker("died")), Later(None, {"k": 1.5}),
                _FakeFuture("error", OSError("disk gone")))
    client = _FakeClient(workers, outcomes)
    with caplog.at_level("INFO", logger="scip"):
        seconds = warm.start_warming(Session(client, Routing(None, {CPU: 1})), ["shape", "intensity", "texture"]).wait(poll=0)
    assert seconds == {"k": 1.5} and Later.looks >= 3
    levels = {r.getMessage().split("(")[1].split(")")[0]: r.levelname for r in caplog.records if "share" in r.getMessage()}
    assert levels == {"lost": "INFO", "KilledWorker: died": "INFO", "OSError: disk gone": "WARNING"}
    client = _FakeClient({"tcp://a": {}}, (_FakeFuture("error", OSError("worker gone")),))
    with caplog.at_level("WARNING", logger="scip"):
        assert warm.warm_workers(Session(client, Routing()), ["texture"]) is None
    assert "compile on first use" in caplog.text and "worker gone" in caplog.text


def _scattered_labels() -> np.ndarray:
    # 143 pixels: 17 blocks of 8 that the compiled sort skips or scans, then 7 it takes one by one;
    # labels in all of them, the last pixel's a label of its own
    rng = np.random.default_rng(3)
    labels = rng.integers(1, 6, (13, 11)) * (rng.random((13, 11)) < 0.3)
    labels[-1, -1] = 9
    return labels


@pytest.mark.parametrize("labels", [_labels(), _labels((57, 33), np.uint16), np.zeros((5, 5), np.int32),
                                    np.array([[0, 7, 7], [3, 0, 7]], np.int64), _scattered_labels(),
                                    # a run of label 5 that resumes after a skipped block of background
                                    np.array([[0] * 5 + [5] * 4 + [0] * 23 + [5] * 3 + [2] * 9 + [5]], np.int32)])
def test_grouping_pixels_with_numpy_gives_the_compiled_groups(labels):
    # bbox-only extraction groups with numpy (never loading numba); the table must not depend on it.
    compiled, plain = _groups.group_pixels(labels), _groups.group_pixels(labels, compiled=False)
    for field in ("ids", "starts", "counts", "index"):
        assert np.array_equal(getattr(compiled, field), getattr(plain, field)), field
    pixels = np.arange(labels.size, dtype=np.float32).reshape((1, *labels.shape))
    with_intensity = extract(pixels, labels, families=["bbox", "intensity"])
    alone = extract(pixels, labels, families=["bbox"])
    assert with_intensity[alone.columns].equals(alone)


def _early(tmp_path, code: str, families=("texture",), workers: int = 3):
    """An EarlyCompile whose process runs ``code`` (instead of compiling), as start_early would build it."""
    import subprocess
    import sys
    import time

    from scip.engine import warm

    err = tmp_path / "early.log"
    with open(err, "w") as f:
        process = subprocess.Popen([sys.executable, "-c", code], stderr=f)
    return warm.EarlyCompile(process, tuple(families), workers, err, time.perf_counter())


def test_early_compile_takes_the_largest_share_and_the_workers_the_others(tmp_path, monkeypatch):
    from scip.engine import warm
    from scip.engine.cluster import CPU, Routing, Session

    families = ["shape", "intensity", "texture"]
    kernels = warmup.kernels_for(families)
    share = warm.early_share(families, 2)
    assert share == [k.name for k in warmup.assign(kernels, 3)[0]] == ["_shape_kernels.shape_kernel"]
    monkeypatch.setattr(warm, "_compile_share", lambda names, rest: {n: 0.0 for n in names})
    client = _FakeClient({"tcp://a": {CPU: 1}, "tcp://b": {CPU: 1}})
    early = _early(tmp_path, "pass", families, 2)
    seconds = warm.start_warming(Session(client, Routing(None, {CPU: 1})), families, early).wait(poll=0)
    assert early.wait()
    assert set(seconds) == {k.name for k in kernels} - set(share)  # the workers leave the early share alone
    assert not {n for _, names, rest in client.submitted for n in names + rest} & set(share)


def test_start_early_compiles_its_share_into_the_cache(tmp_path, monkeypatch, caplog):
    from scip.config import load_config
    from scip.engine import warm

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cache"))
    config = load_config({"input": {"path": str(tmp_path)}, "features": {"families": ["texture", "bbox"]},
                          "cluster": {"workers": 3}})
    monkeypatch.delenv("NUMBA_OPT", raising=False)
    early = warm.start_early(config)
    assert early.names == warm.early_share(["texture", "bbox"], 3) == ["_glcm.haralick_runs"]
    assert early.process.args[-1].endswith("_compile_early('texture,bbox', '3')")
    with caplog.at_level("INFO", logger="scip"):
        assert early.wait()
    assert "1 feature kernel(s) compiled beside the driver" in caplog.text
    cached = {p.name.split("-")[0] for p in (tmp_path / "cache").rglob("*.nbi")}
    assert "_glcm.haralick_runs" in cached and "_shape_kernels.shape_kernel" not in cached
    assert not early.stderr.exists()
    # nothing to start where the workers may not share this machine's cache, or nothing is compiled
    for cluster, families in (({"scheduler": "tcp://127.0.0.1:8786"}, ["texture"]), ({}, ["bbox"])):
        config = load_config({"input": {"path": str(tmp_path)}, "features": {"families": families},
                              "cluster": cluster})
        assert warm.start_early(config) is None


def test_a_failed_early_compile_is_logged_and_left_to_first_use(tmp_path, caplog):
    early = _early(tmp_path, "raise SystemExit('no compiler here')")
    with caplog.at_level("WARNING", logger="scip"):
        assert early.wait() is False
    assert "exit code 1: no compiler here" in caplog.text and "compile on first use" in caplog.text


def test_run_stops_an_early_compile_it_cannot_use(tmp_path, blobs_tiff):
    from scip.run import run

    early = _early(tmp_path, "import time; time.sleep(60)")
    config = {"input": {"path": str(blobs_tiff)}, "cluster": {"scheduler": "synchronous"},
              "output": {"path": str(tmp_path / "out")}}
    run(config, progress=False, early=early)  # computed in this process: no workers share the early share
    assert early.process.poll() is not None and not early.stderr.exists()


def test_compiler_environment_keeps_the_users_level():
    assert _numbacache.compiler_environment({}) == {"NUMBA_OPT": _numbacache.COMPILE_OPT}
    assert _numbacache.compiler_environment({"NUMBA_OPT": "3"}) == {}
