"""Evaluation metrics against loops over samples and small cases worked out by hand."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnn_lessons.activations import ReLU
from cnn_lessons.dense import Dense
from cnn_lessons.evaluation import (Evaluation, accuracy, confusion_matrix, eval_mode, evaluate,
                                    format_report, misclassified, precision_recall)
from cnn_lessons.model import Sequential
from cnn_lessons.regularization import Dropout


# -- a small case by hand -----------------------------------------------------------------------
#   y_true: 0 0 0 1 1 2
#   y_pred: 0 1 0 1 1 1      -> 4 right of 6; class 2 never predicted
Y_TRUE = [0, 0, 0, 1, 1, 2]
Y_PRED = [0, 1, 0, 1, 1, 1]
CM = [[2, 1, 0],
      [0, 2, 0],
      [0, 1, 0]]


def test_hand_case_accuracy_confusion_misclassified():
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(4 / 6)
    cm = confusion_matrix(Y_TRUE, Y_PRED, num_classes=3)
    assert cm.dtype == np.int64 and cm.shape == (3, 3)
    np.testing.assert_array_equal(cm, CM)
    np.testing.assert_array_equal(misclassified(Y_TRUE, Y_PRED), [1, 5])


def test_hand_case_precision_recall_with_undefined_precision():
    precision, recall = precision_recall(np.array(CM))
    # predicted 0: 2 of 2 right; predicted 1: 2 of 4 right; predicted 2: never -> 0
    np.testing.assert_allclose(precision, [1.0, 0.5, 0.0])
    # true 0: 2 of 3 found; true 1: 2 of 2; true 2: 0 of 1
    np.testing.assert_allclose(recall, [2 / 3, 1.0, 0.0])


def test_recall_of_absent_class_is_zero():
    precision, recall = precision_recall([[3, 0], [0, 0]])
    np.testing.assert_allclose(precision, [1.0, 0.0])
    np.testing.assert_allclose(recall, [1.0, 0.0])


def test_default_num_classes_is_ten():
    cm = confusion_matrix([9, 0], [9, 3])
    assert cm.shape == (10, 10)
    assert cm[9, 9] == 1 and cm[0, 3] == 1 and cm.sum() == 2


# -- random cases against loops -------------------------------------------------------------------

@st.composite
def label_pairs(draw):
    k = draw(st.integers(1, 12))
    n = draw(st.integers(1, 60))
    labels = st.lists(st.integers(0, k - 1), min_size=n, max_size=n)
    return k, np.array(draw(labels)), np.array(draw(labels))


@settings(max_examples=60, deadline=None)
@given(label_pairs())
def test_metrics_match_loops_over_samples(case):
    k, y_true, y_pred = case
    expected_cm = np.zeros((k, k), dtype=np.int64)
    right, wrong = 0, []
    for i, (t, p) in enumerate(zip(y_true, y_pred)):
        expected_cm[t, p] += 1
        if t == p:
            right += 1
        else:
            wrong.append(i)
    cm = confusion_matrix(y_true, y_pred, num_classes=k)
    np.testing.assert_array_equal(cm, expected_cm)
    assert accuracy(y_true, y_pred) == pytest.approx(right / len(y_true))
    np.testing.assert_array_equal(misclassified(y_true, y_pred), wrong)

    precision, recall = precision_recall(cm)
    for c in range(k):
        predicted_c = sum(1 for p in y_pred if p == c)
        true_c = sum(1 for t in y_true if t == c)
        hits = sum(1 for t, p in zip(y_true, y_pred) if t == p == c)
        assert precision[c] == pytest.approx(hits / predicted_c if predicted_c else 0.0)
        assert recall[c] == pytest.approx(hits / true_c if true_c else 0.0)


# -- bad input ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [accuracy, confusion_matrix, misclassified])
def test_mismatched_lengths_are_refused(fn):
    with pytest.raises(ValueError, match="same length.*3 and 2"):
        fn([0, 1, 2], [0, 1])


@pytest.mark.parametrize("fn", [accuracy, confusion_matrix, misclassified])
def test_empty_labels_are_refused(fn):
    with pytest.raises(ValueError, match="empty"):
        fn(np.array([], dtype=int), np.array([], dtype=int))


@pytest.mark.parametrize("y_true, y_pred, name", [
    ([0, 10], [0, 1], "y_true"),
    ([0, 1], [-1, 1], "y_pred"),
])
def test_labels_out_of_range_are_refused(y_true, y_pred, name):
    with pytest.raises(ValueError, match=rf"{name} must lie in \[0, 10\)"):
        confusion_matrix(y_true, y_pred, num_classes=10)


def test_non_integer_and_non_1d_labels_are_refused():
    with pytest.raises(ValueError, match="integer class labels"):
        accuracy([0.0, 1.0], [0, 1])
    with pytest.raises(ValueError, match=r"1-D.*\(2, 2\)"):
        accuracy([[0, 1], [1, 0]], [[0, 1], [1, 0]])


def test_precision_recall_refuses_non_square_and_negative():
    with pytest.raises(ValueError, match=r"square.*\(2, 3\)"):
        precision_recall(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="negative"):
        precision_recall([[1, -1], [0, 1]])


# -- evaluate() on a small model ---------------------------------------------------------------

def small_model(seed=0, dropout=False):
    rng = np.random.default_rng(seed)
    layers = [Dense(5, 8, rng=rng, dtype=np.float64), ReLU()]
    if dropout:
        layers.append(Dropout(0.5, rng=rng))
    layers.append(Dense(8, 4, rng=rng, dtype=np.float64))
    return Sequential(layers)


def reference(model, x, y):
    """Predictions and mean cross-entropy, one sample at a time with plain Python math."""
    model.eval()
    preds, losses = [], []
    for xi, yi in zip(x, y):
        z = [float(v) for v in model.forward(xi[None])[0]]
        preds.append(max(range(len(z)), key=lambda j: z[j]))
        log_sum = math.log(sum(math.exp(v) for v in z))
        losses.append(log_sum - z[yi])
    return np.array(preds), sum(losses) / len(losses)


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_evaluate_matches_per_sample_reference(batch_size):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(23, 5))
    y = rng.integers(0, 4, size=23)
    model = small_model()
    ev = evaluate(model, x, y, batch_size=batch_size)
    preds, mean_loss = reference(model, x, y)

    assert isinstance(ev, Evaluation)
    np.testing.assert_array_equal(ev.predictions, preds)
    np.testing.assert_array_equal(ev.labels, y)
    assert ev.loss == pytest.approx(mean_loss, rel=1e-10)
    assert ev.accuracy == pytest.approx(np.mean(preds == y))
    assert ev.confusion_matrix.shape == (4, 4) and ev.confusion_matrix.sum() == 23
    np.testing.assert_array_equal(ev.confusion_matrix, confusion_matrix(y, preds, 4))
    np.testing.assert_array_equal(ev.misclassified, np.flatnonzero(preds != y))
    p, r = precision_recall(ev.confusion_matrix)
    np.testing.assert_allclose(ev.precision, p)
    np.testing.assert_allclose(ev.recall, r)
    assert ev.num_samples == 23 and ev.num_classes == 4


def test_evaluate_without_loss_and_with_custom_loss():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(10, 5)), rng.integers(0, 4, size=10)
    assert evaluate(small_model(), x, y, loss=False).loss is None

    class MaxLogit:          # "mean of the largest logit": a loss object with forward()
        def forward(self, logits, yb):
            return float(logits.max(axis=1).mean())

    model = small_model()
    model.eval()
    expected = model.forward(x).max(axis=1).mean()
    assert evaluate(small_model(), x, y, batch_size=3, loss=MaxLogit()).loss == pytest.approx(expected)


@pytest.mark.parametrize("training", [True, False])
def test_evaluate_runs_in_eval_mode_and_restores_the_flag(training):
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(40, 5)), rng.integers(0, 4, size=40)
    model = small_model(dropout=True).train(training)
    ev1 = evaluate(model, x, y, batch_size=9)
    ev2 = evaluate(model, x, y, batch_size=40)
    # Dropout off during evaluation: the same answer twice, whatever the batches
    np.testing.assert_array_equal(ev1.predictions, ev2.predictions)
    assert ev1.loss == pytest.approx(ev2.loss, rel=1e-12)
    assert model.training is training
    assert all(layer.training is training for layer in model.layers)


def test_eval_mode_restores_mixed_flags_even_after_an_error():
    model = small_model(dropout=True)
    model.layers[0].training = False                  # unusual, but must survive
    with pytest.raises(ZeroDivisionError):
        with eval_mode(model):
            assert not model.training
            1 / 0
    assert [layer.training for layer in model.layers] == [False, True, True, True]


def test_evaluate_bad_input():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(6, 5)), rng.integers(0, 4, size=6)
    model = small_model()
    with pytest.raises(ValueError, match="same length.*6 inputs and 5 labels"):
        evaluate(model, x, y[:5])
    with pytest.raises(ValueError, match=r"y must lie in \[0, 4\)"):
        evaluate(model, x, np.array([0, 1, 2, 3, 4, 0]))
    with pytest.raises(ValueError, match="batch_size"):
        evaluate(model, x, y, batch_size=0)
    with pytest.raises(ValueError, match="empty"):
        evaluate(model, x[:0], y[:0])
    model.train()
    with pytest.raises(ValueError):                   # the layer names the wrong input shape
        evaluate(model, rng.normal(size=(6, 3)), y)
    assert model.training                             # restored even after the error


# -- format_report ---------------------------------------------------------------------------------

def test_format_report_contents_and_alignment():
    cm = np.array([[970, 10], [3, 1017]])
    p, r = precision_recall(cm)
    y_true = np.repeat([0, 0, 1, 1], [970, 10, 3, 1017])
    y_pred = np.repeat([0, 1, 0, 1], [970, 10, 3, 1017])
    ev = Evaluation(accuracy=accuracy(y_true, y_pred), loss=0.04321, confusion_matrix=cm,
                    precision=p, recall=r, labels=y_true, predictions=y_pred,
                    misclassified=misclassified(y_true, y_pred))
    text = format_report(ev, class_names=["cat", "dog"])
    lines = text.splitlines()
    assert lines[0].startswith("test accuracy: 99.35%")          # 1987 / 2000
    assert "1987 of 2000" in lines[0]
    assert lines[1] == "test loss: 0.0432"
    # cat: precision 970 / 973, recall 970 / 980; dog: precision 1017 / 1027, recall 1017 / 1020
    cat = next(line for line in lines if line.startswith("cat ") and "%" in line)
    dog = next(line for line in lines if line.startswith("dog ") and "%" in line)
    assert cat.split()[1:] == ["99.69%", "98.98%", "980"]
    assert dog.split()[1:] == ["99.03%", "99.71%", "1020"]
    # the confusion matrix: header and rows, numbers right-aligned in equal columns
    start = next(i for i, line in enumerate(lines) if line.startswith("true\\pred"))
    header, row0, row1 = lines[start:start + 3]
    assert header.split() == ["true\\pred", "cat", "dog"]
    assert row0.split() == ["cat", "970", "10"] and row1.split() == ["dog", "3", "1017"]
    assert len(header) == len(row0) == len(row1)


def test_format_report_default_names_and_no_loss():
    ev = evaluate(small_model(), np.zeros((4, 5)), np.array([0, 1, 2, 3]), loss=False)
    text = format_report(ev, split="validation")
    assert text.startswith("validation accuracy: ")
    assert "loss" not in text
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("true\\pred"))
    assert lines[start].split() == ["true\\pred", "0", "1", "2", "3"]
    assert [line.split()[0] for line in lines[start + 1:]] == ["0", "1", "2", "3"]
    with pytest.raises(ValueError, match="expected 4 class names, got 3"):
        format_report(ev, class_names=["a", "b", "c"])
