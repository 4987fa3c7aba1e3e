# Placeholder while the model is being written (replaced in the next commit).
class MMoEForSequenceClassification:  # noqa: D101
    pass


class MMoESequenceClassifierOutput:  # noqa: D101
    pass
