import numpy as np
import pytest
import torch

from selectivbench.evaluation.metrics import ElementAccuracy, element_accuracy, window_predictions


def test_window_sum_decides_the_element_exactly():
    # one sequence: element 0 spans steps 0-2, element 1 steps 3-4, then padding
    probs = torch.tensor([[[0.6, 0.4, 0.0], [0.0, 0.5, 0.5], [0.0, 0.5, 0.5],  # sum: .6 1.4 1.0 -> 1
                           [0.9, 0.1, 0.0], [0.0, 0.2, 0.8],  # sum: .9 .3 .8 -> 0
                           [1.0, 0.0, 0.0]]])
    labels = torch.tensor([[1, 1, 1, 2, 2, -100]])
    elem = torch.tensor([[0, 0, 0, 1, 1, 0]])
    step_pred, element_pred = window_predictions(probs, labels, elem, scores_are="probs")
    assert element_pred.tolist() == [[1, 1, 1, 0, 0, -100]]
    assert step_pred.tolist() == [[0, 1, 1, 0, 2, -100]]
    r = element_accuracy(probs, labels, elem, scores_are="probs")
    assert r["element_accuracy"] == 0.5 and r["elements"] == 2
    assert r["step_accuracy"] == pytest.approx(3 / 5) and r["steps"] == 5


def test_numpy_and_torch_streaming_and_one_shot_agree():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 30, 7)).astype(np.float32)
    labels = rng.integers(0, 7, size=(4, 30))
    elem = np.sort(rng.integers(0, 12, size=(4, 30)), axis=1)
    labels[:, 25:] = -100
    one = element_accuracy(logits, labels, elem)
    stream = ElementAccuracy()
    for i in range(4):
        stream.update(torch.from_numpy(logits[i:i + 1]), torch.from_numpy(labels[i:i + 1]),
                      torch.from_numpy(elem[i:i + 1]))
    assert stream.compute() == one
    # by hand: per sequence and element, argmax of summed softmax
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    correct = total = 0
    for b in range(4):
        for e in np.unique(elem[b, :25]):
            w = (elem[b] == e) & (labels[b] != -100)
            correct += int(p[b, w].sum(0).argmax() == labels[b, w][0])
            total += 1
    assert one["elements"] == total and one["element_correct"] == correct
