"""Accuracy, precision, recall, F1, balanced accuracy and macro-F1 in one ``evaluate`` module.

Precision, recall and F1 use binary averaging (positive class 1) for two classes and macro averaging otherwise,
as in the MMoE paper's tables. ``balanced_accuracy`` (mean recall over the classes present in the references)
and ``macro_f1`` (F1 averaged over all ``num_labels`` classes) do not reward a model that always answers the
majority or the positive class. Load it with ``mmoe.metrics.load_classification_metric()`` or
``evaluate.load("<path to this file>")``; it needs no download.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = (
    "Accuracy plus precision, recall and F1 (binary for two classes, macro otherwise), balanced accuracy and "
    "macro-F1."
)
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class indices.
    references (list of int): gold class indices.
    num_labels (int, optional): number of classes; inferred from the data when absent.
    average (str, optional): "binary" or "macro"; defaults to binary for two classes, macro otherwise.
    pos_label (int, optional): the positive class of binary averaging (default 1).
Returns:
    accuracy, precision, recall, f1, balanced_accuracy, macro_f1 (floats in [0, 1]).
    balanced_accuracy: mean recall over the classes present in the references (scikit-learn's
    ``balanced_accuracy_score``). macro_f1: unweighted mean F1 over classes ``0 .. num_labels - 1``, a class never
    predicted nor present counting 0 (``f1_score(average="macro", labels=range(num_labels), zero_division=0)``).
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
        per_class = np.array([_precision_recall_f1(predictions, references, c) for c in range(num_labels)])
        present = [c for c in range(num_labels) if np.any(references == c)]
        balanced_accuracy = float(per_class[present, 1].mean()) if present else 0.0
        macro_f1 = float(per_class[:, 2].mean()) if num_labels else 0.0
        if average == "binary":
            precision, recall, f1 = _precision_recall_f1(predictions, references, pos_label)
        elif average == "macro":
            precision, recall, f1 = (float(v) for v in per_class.mean(axis=0))
        else:
            raise ValueError(f"average must be 'binary' or 'macro', got {average!r}.")
        return {
            "accuracy": accuracy, "precision": precision, "recall": recall, "f1": f1,
            "balanced_accuracy": balanced_accuracy, "macro_f1": macro_f1,
        }
