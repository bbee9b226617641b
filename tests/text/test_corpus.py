"""CPT corpus and SFT examples: train windows only, formats as the probes read them, determinism."""

from __future__ import annotations

import re

import numpy as np
import pytest

from spectra_rec.data import load_dataset, split_dataset
from spectra_rec.data.synthetic import SyntheticConfig, make_synthetic
from spectra_rec.errors import ConfigError
from spectra_rec.testing.data import leak_dataset
from spectra_rec.text import corpus as C
from spectra_rec.text import templates as T

ALL_FORMATS = {"name": 1.0, "yes_no": 1.0, "choice": 1.0, "dg": 1.0}


@pytest.fixture
def leak(tmp_path):
    ds = leak_dataset(tmp_path / "leak")
    split = split_dataset(ds)
    assert all(len(split.heldout_items(u)) == 2 for u in range(ds.n_users))
    return ds, split


def test_heldout_titles_never_reach_cpt_or_sft_text(leak):
    ds, split = leak
    cfg = C.SFTConfig(context_items=50, refs_per_user=8, examples_per_ref=8, mixture=ALL_FORMATS, dg_k=3)
    texts = list(C.cpt_documents(ds, split)) + list(C.tokenizer_texts(ds, split))
    examples = C.sft_examples(ds, split, config=cfg, seed=0)
    assert {e.format for e in examples} == set(C.FORMATS)
    texts += list(C.iter_texts(examples))
    joined = "\n".join(texts)
    assert "Zecret" not in joined
    # The held-out-only category may be named in a question (the vocabulary is global) but never as a
    # positive target: no Yes about it, no name target, no DG list, no letter pointing at it.
    zeta = ds.categories.index("Zeta")
    for e in examples:
        if e.format == "yes_no" and "category Zeta?" in e.prompt:
            assert e.completion == T.answer("No")
        if e.format in ("name", "dg"):
            assert "Zeta" not in e.completion
        if e.format == "choice":
            assert e.completion != T.answer(T.ANSWER_LETTERS[zeta])


def test_every_context_item_and_target_comes_from_the_train_window(synthetic, synthetic_split):
    ds, split = synthetic, synthetic_split
    title_to_item = {str(t): i for i, t in enumerate(ds.item_titles)}
    cfg = C.SFTConfig(context_items=8, refs_per_user=3, examples_per_ref=2, mixture=ALL_FORMATS)
    examples = C.sft_examples(ds, split, config=cfg, seed=1)
    assert len(examples) > 500
    line = re.compile(r"^- (.+?) \(\d+\) \| ", re.M)
    for e in examples:
        train = split.train_items(e.user)
        context = [title_to_item[m] for m in line.findall(e.prompt)]
        assert 1 <= e.ref < len(train)
        # The context is exactly the last N items before the reference, in time order.
        assert context == list(train[max(0, e.ref - cfg.context_items) : e.ref])
        f = C.category_mass(ds, train[e.ref :])
        support = {ds.categories[k] for k in np.flatnonzero(f > 0)}
        if e.format == "name":
            assert e.completion[1:] in support
        elif e.format == "yes_no":
            asked = re.search(r"in the category (.+)\?", e.prompt).group(1)
            # an L1 name (taxonomy question) has support when one of its children has
            asked_support = set(ds.taxonomy.get(asked, [asked])) & support
            assert (e.completion == " Yes") == bool(asked_support)
        elif e.format == "choice":
            options = re.findall(r"^([A-Z])\. (.+)$", e.prompt, re.M)
            assert [c for _, c in options] == list(ds.categories)  # dataset order, letters in order
            assert [l for l, _ in options] == list(T.ANSWER_LETTERS[: ds.K])
            assert dict(options)[e.completion[1:]] in support
        elif e.format == "dg":
            top = e.completion[1:].split(T.LIST_SEPARATOR)
            assert len(top) == cfg.dg_k and len(set(top)) == cfg.dg_k
            order = np.argsort(-f, kind="stable")
            assert f[ds.categories.index(top[0])] == pytest.approx(f[order[0]])
            ranks = [f[ds.categories.index(c)] for c in top]
            assert ranks == sorted(ranks, reverse=True)


def test_heldout_examples_are_evaluation_only_and_read_the_heldout_window(synthetic, synthetic_split):
    ds, split = synthetic, synthetic_split
    ex = C.heldout_examples(ds, split, formats=("name",), per_user=1, seed=0)
    assert len(ex) == len(split.eval_users)
    for e in ex[:50]:
        f = C.category_mass(ds, split.heldout_items(e.user))
        assert f[ds.categories.index(e.completion[1:])] > 0
        assert e.ref == -1


def test_examples_are_deterministic_and_the_mixture_is_honored(synthetic, synthetic_split):
    cfg = C.SFTConfig(refs_per_user=4, examples_per_ref=4, mixture={"name": 3, "yes_no": 1},
                      taxonomy_rate=0.0)  # flat questions only: L1 questions are mostly Yes (few L1s)
    a = C.sft_examples(synthetic, synthetic_split, config=cfg, seed=5)
    b = C.sft_examples(synthetic, synthetic_split, config=cfg, seed=5)
    c = C.sft_examples(synthetic, synthetic_split, config=cfg, seed=6)
    assert a == b and a != c
    share = np.mean([e.format == "name" for e in a])
    assert share == pytest.approx(0.75, abs=0.05)
    yes = [e for e in a if e.format == "yes_no"]
    assert np.mean([e.completion == " Yes" for e in yes]) == pytest.approx(cfg.yes_rate, abs=0.08)


def test_choice_prompts_use_the_probes_anchored_blocks_when_K_exceeds_26(tmp_path):
    ds = load_dataset(make_synthetic(tmp_path / "big", SyntheticConfig(n_users=40, n_items=200, n_l1=4, n_l2=8, seed=2)))
    split = split_dataset(ds)
    assert ds.K == 32
    ex = C.sft_examples(ds, split, config=C.SFTConfig(mixture={"choice": 1.0}, refs_per_user=4), seed=0)
    blocks = T.choice_blocks(ds.K)
    # the probe's layout: category 0 is option A of both blocks, the other 31 fill them in order
    assert blocks == [[0] + list(range(1, 26)), [0] + list(range(26, 32))]
    named = [[ds.categories[k] for k in b] for b in blocks]
    seen = set()
    for e in ex:
        options = re.findall(r"^([A-Z])\. (.+)$", e.prompt, re.M)
        names = [c for _, c in options]
        seen.add(named.index(names))
        assert [l for l, _ in options] == list(T.ANSWER_LETTERS[: len(names)])
    assert seen == {0, 1}
    # the item quiz lists the same blocks, and its answer letter names a category of the item
    docs = C.item_quiz_documents(ds, np.arange(ds.n_items), np.random.default_rng(0))
    for d in docs[:50]:
        options = re.findall(r"^([A-Z])\. (.+)$", d, re.M)
        names = [c for _, c in options]
        assert names in named
        letter = re.findall(r"Answer: ([A-Z])$", d, re.M)[0]
        item_categories = re.search(r"^Item: .* \| (.+)$", d, re.M).group(1).split(", ")
        assert names[T.ANSWER_LETTERS.index(letter)] in item_categories


def test_cpt_corpus_has_profiles_traces_in_time_order_and_only_train_items(synthetic, synthetic_split):
    ds, split = synthetic, synthetic_split
    cfg = C.CorpusConfig(items_per_doc=10, item_lines_per_doc=20)
    docs = C.cpt_documents(ds, split, users=[0, 1, 2], config=cfg, seed=0)
    trace = C.user_documents(ds, split, 0, 10)
    assert trace[0].startswith("User profile: age ")
    assert all(d in docs for d in trace)
    # Concatenated trace documents list the train window in order.
    titles = [m for d in trace for m in re.findall(r"^- (.+?) \(", d, re.M)]
    assert titles == [str(ds.item_titles[i]) for i in split.train_items(0)]
    item_docs = [d for d in docs if d.startswith("Item: ")]
    listed = {m for d in item_docs for m in re.findall(r"^Item: (.+?) \(", d, re.M)}
    expected = {str(ds.item_titles[i]) for i in C.train_item_set(split, [0, 1, 2])}
    assert listed == expected


def test_fit_history_prefix_keeps_the_most_recent_items_and_reports_drops(synthetic, synthetic_split):
    ds, split = synthetic, synthetic_split
    items = split.train_items(0)

    def count(text):
        return len(text.split())

    full, dropped = T.fit_history_prefix(ds, 0, items, count, 10_000)
    assert (full, dropped) == T.history_prefix(ds, 0, items)
    budget = count(T.history_prefix(ds, 0, items[-5:])[0])
    text, dropped = T.fit_history_prefix(ds, 0, items, count, budget)
    assert (text, dropped) == (T.history_prefix(ds, 0, items[-5:])[0], len(items) - 5)
    text, dropped = T.fit_history_prefix(ds, 0, items, count, budget, max_items=3)
    assert (text, dropped) == (T.history_prefix(ds, 0, items[-3:])[0], len(items) - 3)
    text, dropped = T.fit_history_prefix(ds, 0, items, count, 1)  # nothing fits: keep the newest item
    assert dropped == len(items) - 1


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"context_items": 0}, "context_items"),
        ({"mixture": {"names": 1.0}}, "mixture"),
        ({"mixture": {"name": 0.0}}, "mixture"),
        ({"yes_rate": 1.5}, "yes_rate"),
        ({"choice_order": "random"}, "choice_order"),
        ({"horizon": 0}, "horizon"),
        ({"refs_per_row": 0}, "refs_per_row"),
        ({"ref_range": (0.9, 0.5)}, "ref_range"),
        ({"ref_range": (0.2, 1.5)}, "ref_range"),
        ({"history_weight": 1.0}, "history_weight"),  # without readout_loss: no packed rows to ride on
        ({"history_weight": -1.0, "readout_loss": ("name",)}, "history_weight"),
    ],
)
def test_sft_config_rejects_bad_values(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        C.SFTConfig(**kwargs)


def test_item_quiz_answers_are_the_items_own_categories(synthetic, synthetic_split):
    ds, split = synthetic, synthetic_split
    items = C.train_item_set(split)[:80]
    docs = C.item_quiz_documents(ds, items, np.random.default_rng(0))
    assert len(docs) == 80
    answers = {"Yes": 0, "No": 0}
    for i, d in zip(items, docs):
        members = set(ds.item_categories(int(i)))
        assert d.startswith(C.item_line(ds, int(i)) + "\n")
        asked, yn = re.search(r"in the category (.+)\?\nAnswer: (Yes|No)", d).groups()
        assert (yn == "Yes") == (asked in members)
        answers[yn] += 1
        options = dict(re.findall(r"^([A-Z])\. (.+)$", d, re.M))
        letter = re.search(r"category of this item\?\nAnswer: ([A-Z])\n", d).group(1)
        assert options[letter] in members
        assert re.search(r"name a category of this item\.\nAnswer: (.+)\n", d).group(1) in members
        assert "the user" not in d  # item facts only: no user-level question or target
    assert min(answers.values()) > 20


def test_taxonomy_yes_no_examples_ask_the_hierarchical_probes_questions(synthetic, synthetic_split):
    ds, split = synthetic, synthetic_split
    assert ds.taxonomy
    parent = {c: l1 for l1, kids in ds.taxonomy.items() for c in kids}
    cfg = C.SFTConfig(mixture={"yes_no": 1.0}, refs_per_user=4, examples_per_ref=4, taxonomy_rate=0.6)
    ex = C.sft_examples(ds, split, users=range(120), config=cfg, seed=0)
    l1_q = re.compile(r"will the user's next item be in the category (.+)\?\nAnswer:$")
    l2_q = re.compile(r"if the user's next item is in (.+), will it be in the category (.+)\?\nAnswer:$")
    kinds = {"flat": 0, "l1": 0, "l2": 0}
    for e in ex:
        future = split.train_items(e.user)[e.ref:]
        f = C.category_mass(ds, future)
        yes = e.completion == " Yes"
        if m := l2_q.search(e.prompt):
            l1, c = m.groups()
            kinds["l2"] += 1
            assert parent[c] == l1  # a child of the named branch
            assert f[[ds.categories.index(k) for k in ds.taxonomy[l1]]].sum() > 0  # a branch the future enters
            assert yes == (f[ds.categories.index(c)] > 0)
        else:
            name = l1_q.search(e.prompt).group(1)
            if name in ds.taxonomy:
                kinds["l1"] += 1
                assert yes == (f[[ds.categories.index(k) for k in ds.taxonomy[name]]].sum() > 0)
            else:
                kinds["flat"] += 1
                assert yes == (f[ds.categories.index(name)] > 0)
    n = len(ex)
    assert (kinds["l1"] + kinds["l2"]) / n == pytest.approx(0.6, abs=0.05)
    assert kinds["l1"] / n == pytest.approx(0.3, abs=0.05)
    # without a taxonomy nothing changes: the rate draws no random numbers there
    with pytest.raises(ConfigError, match="taxonomy_rate must be in"):
        C.SFTConfig(taxonomy_rate=1.5)


def test_reference_points_of_one_row_share_its_prefix_and_keep_their_own_targets(synthetic, synthetic_split):
    ds, split = synthetic, synthetic_split
    cfg = C.SFTConfig(context_items=8, refs_per_user=2, refs_per_row=3, row_stride=2, examples_per_ref=1)
    points = list(C.reference_points(ds, split, config=cfg, seed=1))
    rows: dict = {}
    for rp in points:
        rows.setdefault((rp.user, rp.row), []).append(rp)
    assert sum(len(r) == 3 for r in rows.values()) > 0.8 * len(rows)
    for (u, r), group in rows.items():
        train = split.train_items(u)
        assert group[-1].ref == r and [p.ref for p in group] == sorted(p.ref for p in group)
        assert all(b.ref - a.ref == cfg.row_stride for a, b in zip(group, group[1:]))
        start = max(0, r - cfg.context_items)
        for rp in group:
            assert group[-1].prefix.startswith(rp.prefix)  # one history pass serves every point of the row
            assert rp.prefix == T.history_prefix(ds, u, train[start : rp.ref])[0]
            np.testing.assert_allclose(rp.target, C.category_mass(ds, train[rp.ref :]) / C.category_mass(ds, train[rp.ref :]).sum())
            mass = C.category_mass(ds, train[start : rp.ref])
            np.testing.assert_allclose(rp.history, mass / mass.sum())  # the history question's target
    # one point per row by default, with row -1
    assert all(rp.row == -1 for rp in C.reference_points(ds, split, config=C.SFTConfig(), seed=1))


def test_target_lift_divides_the_future_mix_by_popularity(synthetic, synthetic_split):
    ds, split = synthetic, synthetic_split
    cfg = C.SFTConfig(context_items=8, refs_per_user=2, examples_per_ref=1)
    plain = list(C.reference_points(ds, split, config=cfg, seed=1))
    lifted = list(C.reference_points(ds, split, config=C.SFTConfig(**{**cfg.to_dict(), "target_lift": 0.5}), seed=1))
    pop = split.category_train_mass / split.category_train_mass.sum()
    assert [(a.user, a.ref, a.prefix) for a in plain] == [(b.user, b.ref, b.prefix) for b in lifted]
    for a, b in zip(plain, lifted):
        want = a.target / np.sqrt(pop)
        np.testing.assert_allclose(b.target, want / want.sum(), rtol=1e-12)
        np.testing.assert_array_equal(a.history, b.history)  # the history question still counts the prompt


def test_ref_range_draws_the_rows_points_late_in_the_window(synthetic, synthetic_split):
    ds, split = synthetic, synthetic_split
    cfg = C.SFTConfig(refs_per_user=3, ref_range=(0.6, 0.9))
    refs = [(rp.ref, len(split.train_items(rp.user))) for rp in C.reference_points(ds, split, config=cfg, seed=0)]
    inside = [0.6 * n <= r <= 0.9 * n for r, n in refs]
    assert len(refs) > 100 and np.mean(inside) > 0.95  # short windows fall back to the point nearest the middle
    assert all(1 <= r < n for r, n in refs)


def _mix_by_hand(ds, items) -> dict:
    """Category shares of ``items`` counted from the item texts (each item's unit split over its categories)."""
    mass: dict = {}
    for i in items:
        cats = ds.item_categories(i)
        for c in cats:
            mass[c] = mass.get(c, 0.0) + 1.0 / len(cats)
    total = sum(mass.values())
    return {c: m / total for c, m in mass.items()}


def test_history_summary_states_the_category_shares_of_the_dropped_items(synthetic, synthetic_split):
    ds, split = synthetic, synthetic_split
    items = split.train_items(0)
    assert len(items) > 10
    text, dropped = T.history_prefix(ds, 0, items, max_items=5, summary=True)
    assert dropped == len(items) - 5
    assert text.replace(T.history_summary(ds, items[:dropped]) + "\n", "") == T.history_prefix(ds, 0, items, max_items=5)[0]
    line = T.history_summary(ds, items[:dropped])
    head, mix = line.rstrip(".").split(": ", 1)
    assert head == f"Earlier, {dropped} items"
    shares = [(c, int(v.rstrip("%"))) for c, v in (part.rsplit(" ", 1) for part in mix.split(", "))]
    expected = _mix_by_hand(ds, items[:dropped])
    assert {c for c, _ in shares} == {c for c in expected if round(100 * expected[c]) > 0}
    masses = [expected[c] for c, _ in shares]
    assert all(a >= b - 1e-12 for a, b in zip(masses, masses[1:]))  # largest first
    for c, pct in shares:
        assert abs(pct - 100 * expected[c]) <= 0.5 + 1e-9
    # nothing dropped: no summary line; summary off: the plain prefix
    assert T.history_prefix(ds, 0, items, summary=True) == T.history_prefix(ds, 0, items)
    assert T.history_summary(ds, []) == ""


def test_fit_history_prefix_sums_up_exactly_the_items_it_drops(synthetic, synthetic_split):
    ds, split = synthetic, synthetic_split
    items = split.train_items(0)

    def count(text):
        return len(text.split())

    budget = count(T.history_prefix(ds, 0, items, max_items=6, summary=True)[0])
    text, dropped = T.fit_history_prefix(ds, 0, items, count, budget, summary=True)
    assert count(text) <= budget and 0 < dropped < len(items)
    assert text == T.history_prefix(ds, 0, items, max_items=len(items) - dropped, summary=True)[0]
    assert T.history_summary(ds, items[:dropped]) in text


def test_summary_rows_share_one_prefix_and_the_history_target_covers_the_whole_history(synthetic, synthetic_split):
    ds, split = synthetic, synthetic_split
    cfg = C.SFTConfig(context_items=8, refs_per_user=2, refs_per_row=3, row_stride=2, examples_per_ref=1,
                      history_summary=True)
    points = list(C.reference_points(ds, split, config=cfg, seed=1))
    rows: dict = {}
    for rp in points:
        rows.setdefault((rp.user, rp.row), []).append(rp)
    summed = 0
    for (u, r), group in rows.items():
        train = split.train_items(u)
        start = max(0, r - cfg.context_items)
        for rp in group:
            assert group[-1].prefix.startswith(rp.prefix)  # one history pass still serves every point
            assert rp.prefix == T.history_prefix(ds, u, train[: rp.ref], max_items=rp.ref - start, summary=True)[0]
            mass = C.category_mass(ds, train[: rp.ref])
            np.testing.assert_allclose(rp.history, mass / mass.sum())
        summed += start > 0
    assert summed > 0.5 * len(rows)  # most rows have older items to sum up
    # the same points and formats as without the summary
    plain = list(C.reference_points(ds, split, config=C.SFTConfig(**{**cfg.to_dict(), "history_summary": False}), seed=1))

    def draws(pts):
        return [(p.user, p.ref, tuple(q[0] for q in p.questions)) for p in pts]

    assert draws(plain) == draws(points)
