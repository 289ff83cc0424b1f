"""tl_hub.metrics: shipped evaluate modules checked against scikit-learn; user metrics; offline errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

import tl_hub.metrics as tm
from tl_hub.errors import ConfigError, DataError
from tl_hub.metrics import (
    SHIPPED_METRICS,
    compute_metrics,
    greater_is_better,
    load_metric,
    metric_key,
    metric_path,
    top_k_ids,
)


def _random_case(seed: int, num_labels: int, n: int, present: int | None = None):
    rng = np.random.default_rng(seed)
    refs = rng.integers(0, present or num_labels, n)
    logits = rng.normal(size=(n, num_labels)).astype(np.float32)
    logits[np.arange(n), refs] += rng.uniform(0, 2.5, n)  # better than chance, not perfect
    return refs, logits


@pytest.mark.parametrize(
    ("seed", "num_labels", "n", "present"),
    [(0, 3, 50, None), (1, 10, 400, None), (2, 20, 300, None), (3, 10, 120, 6), (4, 2, 30, None),
     (11, 300, 10_000, None)],  # a large eval set: top-5 from ranked ids, not raw scores through Arrow
)
def test_matches_scikit_learn(seed, num_labels, n, present):
    refs, logits = _random_case(seed, num_labels, n, present)
    preds = logits.argmax(axis=1)
    names = [f"class {i}" for i in range(num_labels)]
    r = compute_metrics(preds, refs, names, logits=logits)

    assert r["accuracy"] == pytest.approx(skm.accuracy_score(refs, preds))
    for avg_name, fn in (("precision", skm.precision_score), ("recall", skm.recall_score), ("f1", skm.f1_score)):
        assert r[f"{avg_name}_macro"] == pytest.approx(fn(refs, preds, average="macro", zero_division=0)), avg_name
    p, rec, f1, support = skm.precision_recall_fscore_support(
        refs, preds, labels=list(range(num_labels)), zero_division=0
    )
    assert list(r["per_label"]) == names
    for i, name in enumerate(names):
        assert r["per_label"][name] == pytest.approx(
            {"precision": p[i], "recall": rec[i], "f1": f1[i], "support": int(support[i])}
        )
    assert r["confusion_matrix"] == skm.confusion_matrix(refs, preds, labels=list(range(num_labels))).tolist()
    if num_labels > 5:
        expected = skm.top_k_accuracy_score(refs, logits, k=5, labels=list(range(num_labels)))
        assert r["top5_accuracy"] == pytest.approx(expected)
    else:
        assert "top5_accuracy" not in r
    json.dumps(r)  # JSON-serialisable as is


def test_types_are_plain_python():
    refs, logits = _random_case(5, 7, 40)
    r = compute_metrics(None, refs, list("abcdefg"), logits=logits)  # predictions = argmax(logits)
    assert r["accuracy"] == pytest.approx(skm.accuracy_score(refs, logits.argmax(1)))
    assert type(r["accuracy"]) is float and type(r["top5_accuracy"]) is float
    assert type(r["per_label"]["a"]["support"]) is int
    assert all(type(v) is int for row in r["confusion_matrix"] for v in row)


def test_no_top5_without_logits():
    refs, logits = _random_case(6, 10, 30)
    assert "top5_accuracy" not in compute_metrics(logits.argmax(1), refs, [str(i) for i in range(10)])


def test_torch_inputs():
    torch = pytest.importorskip("torch")
    refs, logits = _random_case(7, 8, 64)
    expected = compute_metrics(None, refs, list("abcdefgh"), logits=logits)
    got = compute_metrics(None, torch.from_numpy(refs), list("abcdefgh"), logits=torch.from_numpy(logits).bfloat16())
    assert got["accuracy"] == pytest.approx(expected["accuracy"], abs=0.05)
    got32 = compute_metrics(
        torch.from_numpy(logits.argmax(1)), torch.from_numpy(refs), list("abcdefgh"), logits=torch.from_numpy(logits)
    )
    assert got32 == expected


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"predictions": [0, 1], "references": [0], "label_names": ["a", "b"]}, "differ in length"),
        ({"predictions": [], "references": [], "label_names": ["a", "b"]}, "0 examples"),
        ({"predictions": [0, 2], "references": [0, 1], "label_names": ["a", "b"]}, "predictions: class ids must be in [0, 2)"),
        ({"predictions": [0, 1], "references": [0, -1], "label_names": ["a", "b"]}, "references: class ids"),
        ({"predictions": [0], "references": [0], "label_names": ["a"]}, "at least 2 labels"),
        ({"predictions": None, "references": [0], "label_names": ["a", "b"]}, "no logits"),
        ({"predictions": [0], "references": [0], "label_names": ["a", "b"], "logits": [[0.1, 0.2, 0.3]]}, "logits: expected shape [N, 2]"),
    ],
)
def test_bad_input_raises_data_error(kwargs, needle):
    with pytest.raises(DataError) as err:
        compute_metrics(**kwargs)
    assert needle in str(err.value)


# --- the evaluate modules themselves ----------------------------------------------------------------


def test_shipped_modules_are_package_files_loaded_by_path():
    for name, path in SHIPPED_METRICS.items():
        assert path.is_file() and path.parent == Path(tm.__file__).parent
        assert metric_path(name) == str(path)
    module = load_metric("accuracy")
    assert module is load_metric("accuracy")  # loaded once per process
    assert module.compute(predictions=[1, 0, 1], references=[1, 1, 1]) == {"accuracy": pytest.approx(2 / 3)}
    assert load_metric("top_k_accuracy").compute(predictions=[[1, 2], [0, 1]], references=[2, 2], k=2) == {
        "top_2_accuracy": 0.5
    }
    assert load_metric("confusion_matrix").compute(predictions=[0, 1, 1], references=[0, 1, 0], num_labels=3) == {
        "confusion_matrix": [[1, 1, 0], [0, 1, 0], [0, 0, 0]]
    }
    with pytest.raises(ConfigError, match="did you mean 'accuracy'"):
        metric_path("acuracy")


def test_accuracy_sample_weight_matches_sklearn():
    rng = np.random.default_rng(8)
    refs, preds, w = rng.integers(0, 3, 50), rng.integers(0, 3, 50), rng.uniform(0.1, 2, 50)
    got = load_metric("accuracy").compute(predictions=preds, references=refs, sample_weight=w)["accuracy"]
    assert got == pytest.approx(skm.accuracy_score(refs, preds, sample_weight=w))


_USER_METRIC = '''
import datasets
import evaluate


class ErrorRate(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="1 - accuracy", citation="", inputs_description="",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        wrong = sum(int(p != r) for p, r in zip(predictions, references))
        return {"error_rate": wrong / len(references), "accuracy": 1 - wrong / len(references)}
'''


def test_user_metric_script_by_path(tmp_path):
    script = tmp_path / "error_rate.py"
    script.write_text(_USER_METRIC)
    refs, logits = _random_case(9, 4, 60)
    preds = logits.argmax(1)
    r = compute_metrics(preds, refs, list("abcd"), extra_metrics=[str(script)])
    assert r["error_rate"] == pytest.approx(1 - skm.accuracy_score(refs, preds))
    # a clashing key keeps the built-in value and gets the metric's name as prefix
    assert r["accuracy"] == pytest.approx(skm.accuracy_score(refs, preds))
    assert r["error_rate_accuracy"] == pytest.approx(r["accuracy"])
    # a folder holding <folder name>.py works too (evaluate's own convention)
    folder = tmp_path / "error_rate_dir"
    folder.mkdir()
    (folder / "error_rate_dir.py").write_text(_USER_METRIC)
    assert "error_rate" in compute_metrics(preds, refs, list("abcd"), extra_metrics=[str(folder)])


def test_unknown_metric_offline_gives_clear_error():
    with pytest.raises(ConfigError) as err:
        load_metric("matthews_corelation_typo")
    msg = str(err.value)
    assert "'matthews_corelation_typo'" in msg and "tl_hub ships accuracy" in msg and "local metric script" in msg
    with pytest.raises(ConfigError, match="expected a metric name"):
        load_metric("")


def test_broken_user_metric_reports_its_name(tmp_path):
    script = tmp_path / "needs_arg.py"
    script.write_text(_USER_METRIC.replace("def _compute(self, predictions, references):",
                                           "def _compute(self, predictions, references, average):"))
    with pytest.raises(ConfigError, match=r"evaluate metric '.*needs_arg.py' failed"):
        compute_metrics([0, 1], [0, 1], ["a", "b"], extra_metrics=[str(script)])


def test_top_k_ids():
    scores = np.array([[0.1, 0.5, 0.4, 0.5], [0.8, 0.15, 0.05, 0.0]])
    ids = top_k_ids(scores, 2)
    assert sorted(ids[0].tolist()) == [1, 3] and ids[1].tolist() == [0, 1]  # ties in any order
    assert top_k_ids(scores, 4)[1].tolist() == [0, 1, 2, 3]
    assert top_k_ids(scores, 9).shape == (2, 4) and top_k_ids(scores, 2).dtype == np.int64
    rng = np.random.default_rng(10)
    big = rng.normal(size=(200, 50))
    assert np.array_equal(top_k_ids(big, 5), np.argsort(-big, axis=1)[:, :5])


@pytest.mark.parametrize(
    "name, greater",
    [("accuracy", True), ("eval_f1_macro", True), ("top5_accuracy", True), ("loss", False), ("eval_loss", False),
     ("eval_loss_weighted", False), ("focal_loss", False), ("matthews_correlation", True)],
)
def test_greater_is_better_is_false_for_every_loss(name, greater):
    assert greater_is_better(name) is greater
    assert metric_key(name) == name.removeprefix("eval_")


def test_the_loop_and_the_recipe_share_the_rule():
    """The training loop picks the best epoch by the same rule (a loss named like eval_loss_weighted included)."""
    from tl_hub.config import RecipeConfig
    from tl_hub.train import TrainArgs

    config = RecipeConfig(dataset="beans", metrics=["x"], metric_for_best_model="eval_loss_weighted")
    assert config.metric_for_best_model == "loss_weighted"
    assert TrainArgs(metric_for_best_model=config.metric_for_best_model).greater_is_better is None  # the rule decides
    assert greater_is_better(config.metric_for_best_model) is False



# --- one arithmetic: compute_metrics calls the shipped modules' own functions, without evaluate -------------


@pytest.mark.parametrize(("seed", "num_labels", "n", "present"), [(20, 10, 300, None), (21, 7, 90, 4), (22, 2, 25, None)])
def test_compute_metrics_equals_the_evaluate_modules(seed, num_labels, n, present):
    """Every number compute_metrics reports is what evaluate.load(<shipped module>).compute gives."""
    refs, logits = _random_case(seed, num_labels, n, present)
    preds = logits.argmax(axis=1)
    got = compute_metrics(preds, refs, [str(i) for i in range(num_labels)], logits=logits)
    prf = load_metric("precision_recall_f1")
    expected = {**load_metric("accuracy").compute(predictions=preds, references=refs),
                **{k: v for k, v in prf.compute(predictions=preds, references=refs).items() if k != "per_label"}}
    per_label = prf.compute(predictions=preds, references=refs, labels=list(range(num_labels)))["per_label"]
    expected["per_label"] = {str(i): v for i, v in per_label.items()}
    expected["confusion_matrix"] = load_metric("confusion_matrix").compute(
        predictions=preds, references=refs, num_labels=num_labels)["confusion_matrix"]
    if num_labels > 5:
        expected["top5_accuracy"] = load_metric("top_k_accuracy").compute(
            predictions=top_k_ids(logits, 5), references=refs, k=5)["top_5_accuracy"]
    assert got == expected  # identical, not approximately equal


def test_reported_metrics_do_not_import_evaluate():
    """evaluate (seconds to import) is loaded only for a metric tl_hub does not ship."""
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "from tl_hub.metrics import compute_metrics\n"
            "r = compute_metrics(np.array([0, 1, 2, 1]), np.array([0, 1, 1, 1]), list('abcdefg'),\n"
            "                    logits=np.eye(7, dtype=np.float32)[[0, 1, 2, 1]])\n"
            "print(round(r['accuracy'], 2), 'evaluate' in sys.modules, 'datasets' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["0.75", "False", "False"]
