"""Accuracy, precision, recall and F1 in one ``evaluate`` module.

Binary averaging (positive class 1) for two classes, macro averaging otherwise, as in the MMoE paper's
tables. Load it with ``mmoe.metrics.load_classification_metric()`` or
``evaluate.load("<path to this file>")``; it needs no download.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Accuracy plus precision, recall and F1 (binary for two classes, macro otherwise)."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class indices.
    references (list of int): gold class indices.
    num_labels (int, optional): number of classes; inferred from the data when absent.
    average (str, optional): "binary" or "macro"; defaults to binary for two classes, macro otherwise.
    pos_label (int, optional): the positive class of binary averaging (default 1).
Returns:
    accuracy, precision, recall, f1 (floats in [0, 1]).
"""


def _precision_recall_f1(predictions, references, label):
    true_positive = np.sum((predictions == label) & (references == label))
    predicted = np.sum(predictions == label)
    actual = np.sum(references == label)
    precision = true_positive / predicted if predicted else 0.0
    recall = true_positive / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return float(precision), float(recall), float(f1)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Classification(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, num_labels=None, average=None, pos_label=1):
        # Written out rather than calling scikit-learn: the metric must load in a bare install.
        predictions, references = np.asarray(predictions), np.asarray(references)
        if num_labels is None:
            num_labels = int(max(predictions.max(initial=0), references.max(initial=0))) + 1
        average = average or ("binary" if num_labels <= 2 else "macro")
        accuracy = float(np.mean(predictions == references)) if len(references) else 0.0
        if average == "binary":
            precision, recall, f1 = _precision_recall_f1(predictions, references, pos_label)
        elif average == "macro":
            scores = np.array([_precision_recall_f1(predictions, references, c) for c in range(num_labels)])
            precision, recall, f1 = (float(v) for v in scores.mean(axis=0))
        else:
            raise ValueError(f"average must be 'binary' or 'macro', got {average!r}.")
        return {"accuracy": accuracy, "precision": precision, "recall": recall, "f1": f1}
