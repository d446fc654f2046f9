"""Task data: `load_task(task_cfg, data_dir, n_train, seed) -> TaskData`, from local GLUE/SuperGLUE files or the hub."""

from beft.data.tasks import TaskData, load_task

__all__ = ["TaskData", "load_task"]
