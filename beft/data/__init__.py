"""Task data: `load_task(task_cfg, data_dir, n_train, seed) -> TaskData`, from local GLUE/SuperGLUE files or the hub;
`load_prompted` does the same for a task's prompted (decoder) form."""

from beft.data.tasks import TaskData, load_prompted, load_task

__all__ = ["TaskData", "load_prompted", "load_task"]
