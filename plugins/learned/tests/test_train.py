"""Training from a store filled by real tiny-model runs: cards, the split, decode/train agreement, errors."""

from __future__ import annotations

import json
import shutil
import sqlite3

import numpy as np
import pytest
from learned_support import PROMPTS, log_runs, make_policy

from cascade.cli import main
from cascade.errors import CascadeError
from cascade.store import Store
from cascade.store.queries.training import training_rows
from cascade_learned.train import TrainConfig, train


def rows_of(url, **kw):
    with Store.open(url, create=False) as store:
        return training_rows(store, **kw)


def test_training_rows_are_the_logged_drafts_with_context(logged):
    rows = rows_of(logged["url"], run_ids=logged["runs"])
    assert len(rows) > 200 and len(rows.prompts) == len(PROMPTS)
    c = rows.columns
    assert not np.isnan(c["q_margin"]).any() and not np.isnan(c["agree"]).any()  # revision 0004 columns filled
    assert max(c["sequence_position"]) > 0 and set(np.unique(c["accepted"])) <= {0, 1}
    assert "decisions" in rows.query and rows.sha256() == rows_of(logged["url"], run_ids=logged["runs"]).sha256()
    with pytest.raises(CascadeError, match="no run 999"):
        rows_of(logged["url"], run_ids=[999])
    with pytest.raises(CascadeError, match="no finished run of policy 'nope'"):
        rows_of(logged["url"], policy="nope")


def test_cards_say_what_was_trained_and_how_it_did(heads):
    card = json.loads((heads["qp-lr"] / "card.json").read_text())
    assert card["head"] == "deferral" and card["model"] == "logistic" and card["feature_set"] == "qp"
    assert card["features"][0] == "q_x" and "log_ratio" in card["features"]
    assert "log p(argmax p)" in card["label"]["definition"] and card["data"]["sha256"]
    assert card["sklearn_version"] and card["skops_version"] and card["created_at"]
    h = card["heldout"]
    assert 0 <= h["roc_auc"] <= 1 and 0 <= h["pr_auc"] <= 1 and 0 <= h["calibration"]["brier"] <= 1
    assert "chow (-max q)" in h["baselines"] and h["calibration"]["bins"]
    assert card["folded_max_abs_diff"] < 1e-9  # the JSON head scores exactly as scikit-learn did
    q = json.loads((heads["q-lr"] / "card.json").read_text())
    assert not {"p_x", "p_max", "d_tv", "agree", "log_ratio"} & set(q["features"])
    acc = json.loads((heads["acc-lr"] / "card.json").read_text())
    assert acc["label"]["positive"] == "accepted" and "max_q" in acc["heldout"]["baselines"]
    assert (heads["qp-hgb"] / "model.skops").is_file()
    # no prompt on both sides of the split
    assert (
        card["data"]["heldout_prompts"] >= 1
        and card["data"]["train_rows"] + card["data"]["heldout_rows"] == card["data"]["rows_used"]
    )


def test_decode_time_scores_equal_scores_from_the_logged_columns(fam, logged, heads, tmp_path):
    """The rule's r at decode time, logged as `deferred`, is 1[score ≥ α] of the same head applied to the
    store's columns: training and decoding build the features with one function."""
    from cascade_learned.rule import LearnedRule, Options

    alpha = 0.5
    pol = make_policy(tmp_path / "p.yaml", fam, rule="learned", alpha=alpha, rule_options={"path": str(heads["qp-lr"])})
    with Store.open(logged["url"]) as store:
        run = log_runs(store, pol, PROMPTS[:6])
    rows = rows_of(logged["url"], run_ids=[run])
    rule = LearnedRule(alpha, Options(path=heads["qp-lr"]))
    score = rule.critical_alpha({k: np.asarray(v) for k, v in rows.columns.items()})
    deferred = np.asarray(rows.columns["deferred"])
    assert 0 < deferred.mean() < 1  # both kinds of decision happened
    near = np.abs(score - alpha) < 1e-5  # float32 features at decode time vs the stored float64
    assert (deferred[~near] == (score[~near] >= alpha)).all()


def test_too_few_rows_one_class_and_bad_options_are_clear(logged, tmp_path):
    rows = rows_of(logged["url"], run_ids=logged["runs"][:1])
    with pytest.raises(CascadeError, match="at least 100000 are needed"):
        train(rows, TrainConfig("deferral", "qp", "logistic", "bad", min_rows=100000), tmp_path / "a", say=print)
    with pytest.raises(CascadeError, match="one class only"):
        train(
            rows, TrainConfig("deferral", "qp", "logistic", "bad", margin=1e9, min_rows=10), tmp_path / "b", say=print
        )
    with pytest.raises(CascadeError, match="not a label of the deferral head"):
        train(rows, TrainConfig("deferral", "qp", "logistic", "accepted"), tmp_path / "c", say=print)
    with pytest.raises(CascadeError, match="drafter-side features only"):
        train(rows, TrainConfig("acceptance", "qp", "logistic", "accepted"), tmp_path / "d", say=print)


def test_features_the_logged_drafter_never_produced_are_refused(fam, logged, tmp_path):
    # a deterministic drafter (n-gram lookup) logs no q: a head reading q cannot be trained on it
    url = f"sqlite:///{tmp_path / 'ngram.db'}"
    pol = make_policy(tmp_path / "ng.yaml", fam, rule="token_v3", alpha=0.5, plugin="ngram")
    with Store.open(url) as store:
        log_runs(store, pol, PROMPTS)
    with pytest.raises(CascadeError, match=r"q_x.*never produced them.*deterministic"):
        train(rows_of(url), TrainConfig("deferral", "q", "logistic", "bad", min_rows=10), tmp_path / "h", say=print)
    # rows logged before revision 0004 have NULL in its columns
    old = tmp_path / "old.db"
    shutil.copy(logged["url"].removeprefix("sqlite:///"), old)
    with sqlite3.connect(old) as conn:
        conn.execute("UPDATE decisions SET q_margin = NULL, q_rank = NULL, agree = NULL")
    with pytest.raises(CascadeError, match=r"q_margin, q_rank.*revision 0004"):
        train(
            rows_of(f"sqlite:///{old}"),
            TrainConfig("deferral", "qp", "logistic", "bad", min_rows=10),
            tmp_path / "o",
            say=print,
        )


def test_the_train_command(logged, tmp_path, capsys):
    out = tmp_path / "cmd"
    runs = ",".join(map(str, logged["runs"]))
    assert (
        main(
            [
                "rules",
                "train",
                "--store",
                logged["url"],
                "--runs",
                runs,
                "--model",
                "hgb",
                "--min-rows",
                "100",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert (out / "card.json").is_file() and (out / "model.skops").is_file()
    assert "held-out ROC-AUC" in capsys.readouterr().err  # progress on stderr
    assert main(["rules", "train", "--store", logged["url"], "--runs", "x", "--out", str(out)]) == 2
    assert "comma-separated run ids" in capsys.readouterr().err


def test_the_train_command_reads_the_default_store_without_store(logged, tmp_path, capsys, monkeypatch):
    """No --store: the store `cascade run` logs to ($CASCADE_STORE here), named on stdout."""
    monkeypatch.setenv("CASCADE_STORE", logged["url"])
    out = tmp_path / "default"
    runs = ",".join(map(str, logged["runs"]))
    assert main(["rules", "train", "--runs", runs, "--min-rows", "100", "--out", str(out)]) == 0
    assert (out / "card.json").is_file()
    assert f"reading the decision store {logged['url']}" in capsys.readouterr().out


def test_excluded_features_are_left_out(logged, tmp_path):
    rows = rows_of(logged["url"], run_ids=logged["runs"])
    card = train(
        rows,
        TrainConfig("deferral", "q", "logistic", "bad", min_rows=100, exclude=("recent_acceptance",)),
        tmp_path / "x",
        say=print,
    )
    assert "recent_acceptance" not in card["features"] and "q_max" in card["features"]
    with pytest.raises(CascadeError, match="not in the q features"):
        train(rows, TrainConfig("deferral", "q", "logistic", "bad", exclude=("p_x",)), tmp_path / "y", say=print)
