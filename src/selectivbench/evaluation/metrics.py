"""SPEC §4 metric: element accuracy (softmax summed over each element's scoring window) and
per-step accuracy. Works on torch tensors or numpy arrays, one batch at a time, so evaluation
never needs to hold the logits of a whole split.
"""
from __future__ import annotations

import numpy as np
import torch

from ..models.configuration_selectivbench import IGNORE_INDEX  # one ignore index, the models'


def _tensor(x):
    return torch.as_tensor(x) if isinstance(x, np.ndarray) else x


def window_predictions(scores, labels, element_index, scores_are: str = "logits"):
    """Per step: (argmax of the step's scores, argmax of its element's summed probabilities).

    scores (B, T, C) logits or probabilities; labels (B, T) with -100 at padding;
    element_index (B, T). Both outputs are (B, T) int64, -100 at padding.
    """
    if scores_are not in ("logits", "probs"):
        raise ValueError(f"scores_are={scores_are!r} is invalid: allowed 'logits' or 'probs'")
    scores, labels, element_index = _tensor(scores), _tensor(labels), _tensor(element_index).long()
    probs = scores.float().softmax(-1) if scores_are == "logits" else scores.float()
    valid = labels != IGNORE_INDEX
    B, T, C = probs.shape
    E = int(element_index[valid].max()) + 2 if valid.any() else 1
    slot = torch.where(valid, element_index, E - 1)  # padding goes to a spare slot
    sums = probs.new_zeros(B, E, C).scatter_add_(1, slot[..., None].expand(B, T, C), probs * valid[..., None])
    element_pred = sums.argmax(-1).gather(1, slot)
    step_pred = probs.argmax(-1)
    pad = torch.full_like(step_pred, IGNORE_INDEX)
    return torch.where(valid, step_pred, pad), torch.where(valid, element_pred, pad)


def element_starts(valid, element_index):
    """(B, T) bool: the labelled steps that open an element (each element is counted at its first step)."""
    first = valid.clone()
    first[:, 1:] &= element_index[:, 1:] != element_index[:, :-1]
    return first


def step_cross_entropy(logits, labels):
    """(B, T) cross-entropy of each step (0 where the label is IGNORE_INDEX), in at least float32."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # half precision up, float64 kept
    return torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX,
                                             reduction="none")


def count_correct(step_pred, element_pred, labels, element_index) -> dict:
    """Counts for element and per-step accuracy; each element is counted at its first step."""
    step_pred, element_pred, labels = _tensor(step_pred), _tensor(element_pred), _tensor(labels)
    element_index = _tensor(element_index).long()
    valid = labels != IGNORE_INDEX
    first = element_starts(valid, element_index)
    return {
        "element_correct": int(((element_pred == labels) & first).sum()),
        "elements": int(first.sum()),
        "step_correct": int(((step_pred == labels) & valid).sum()),
        "steps": int(valid.sum()),
    }


def accuracies(counts: dict) -> dict:
    return {"element_accuracy": counts["element_correct"] / max(counts["elements"], 1),
            "step_accuracy": counts["step_correct"] / max(counts["steps"], 1)}


class ElementAccuracy:
    """Streaming accumulator: update() per batch, compute() at the end."""

    def __init__(self):
        self.counts = {"element_correct": 0, "elements": 0, "step_correct": 0, "steps": 0}

    def update(self, scores, labels, element_index, scores_are: str = "logits") -> None:
        step_pred, element_pred = window_predictions(scores, labels, element_index, scores_are)
        for k, v in count_correct(step_pred, element_pred, labels, element_index).items():
            self.counts[k] += v

    def compute(self) -> dict:
        return {**accuracies(self.counts), **self.counts}


def element_accuracy(scores, labels, element_index, scores_are: str = "logits") -> dict:
    m = ElementAccuracy()
    m.update(scores, labels, element_index, scores_are)
    return m.compute()


# --- transformers.Trainer glue: TrainingArguments(label_names=["labels", "element_index"]) ---

def preprocess_logits_for_metrics(logits, labels):
    """Reduce (B, T, classes) logits to (B, T, 3) before Trainer accumulates them: the step's and its
    element's predicted class (exact as float32 below 2^24 classes) and the step's cross-entropy."""
    labels, element_index = labels
    step_pred, element_pred = window_predictions(logits, labels, element_index)
    loss = step_cross_entropy(logits, labels)
    return torch.stack([step_pred.to(loss.dtype), element_pred.to(loss.dtype), loss], -1)


def compute_metrics(eval_pred) -> dict:
    """Element and step accuracy, and `token_loss`: the cross-entropy summed over the labelled steps
    over their number, the `loss` of `selectivbench evaluate`. (Trainer's own eval_loss averages
    the batches' means, so with sequences of different lengths it weighs steps unequally.)"""
    preds = np.asarray(eval_pred.predictions)
    labels, element_index = eval_pred.label_ids
    step_pred, element_pred = (preds[..., i].round().astype(np.int64) for i in (0, 1))
    valid = np.asarray(labels) != IGNORE_INDEX
    token_loss = float(preds[..., 2].astype(np.float64)[valid].sum() / max(int(valid.sum()), 1))
    return {**accuracies(count_correct(step_pred, element_pred, labels, element_index)), "token_loss": token_loss}
