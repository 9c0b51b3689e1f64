"""Tasks: one registered class per kind (trainables/tasks/base.py says what a task owns), and
"best" by a metric's mode. `from trainables.tasks import task_of, GRADING, ...`."""

from trainables.tasks.base import (
    FIT,
    REGISTRY,
    TRAINABLE,
    Task,
    best,
    best_by,
    best_of_rows,
    best_so_far,
    better,
    describe_metrics,
    direction,
    prob_columns,
    register_task,
    sign,
    task_class,
    task_of,
)

# the kinds, registered in the order they are listed in: grading, classes, multilabel
from trainables.tasks.grading import Grading  # isort: skip
from trainables.tasks.classes import Classes  # isort: skip
from trainables.tasks.multilabel import Multilabel  # isort: skip

GRADING = Grading()
MULTILABEL = Multilabel()


def classes_task(metric: str = "") -> Classes:
    """A class-folder task searching on `metric` (default: macro F1)."""
    return Classes(metric)


__all__ = ["FIT", "GRADING", "MULTILABEL", "REGISTRY", "TRAINABLE", "Classes",
           "Grading", "Multilabel", "Task", "best", "best_by", "best_of_rows", "best_so_far",
           "better", "classes_task", "describe_metrics", "direction", "prob_columns",
           "register_task", "sign", "task_class", "task_of"]
