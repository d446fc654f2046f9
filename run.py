"""beft entry point: compose the Hydra config, then run one job. See README.md for examples."""
import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from beft.config import check_overrides
from beft.errors import BeftError


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg) -> None:
    from beft.launch import job_resources
    from beft.pipeline import run
    from beft.record import summary_line
    from beft.train import Diverged

    log = logging.getLogger("beft")
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        with job_resources(cfg):
            print(summary_line(run(cfg)))
    except (BeftError, Diverged) as err:
        log.error("%s", err)
        if not multirun:
            sys.exit(2)  # one line, no traceback
    except Exception as err:
        if not multirun:
            raise
        # The record (status failed, with the traceback) is already written: one line here, then the next job.
        first_line = (str(err).strip().splitlines() or [""])[0]
        log.error("job failed, the sweep goes on: %s: %s", type(err).__name__, first_line)


if __name__ == "__main__":
    try:
        check_overrides([a for a in sys.argv[1:] if not a.startswith("-")])
    except BeftError as err:
        sys.exit(f"error: {err}")
    main()
