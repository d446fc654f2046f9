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
    from beft.pipeline import run
    from beft.record import summary_line
    from beft.train import Diverged

    try:
        print(summary_line(run(cfg)))
    except (BeftError, Diverged) as err:
        logging.getLogger("beft").error("%s", err)
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            sys.exit(2)  # one line, no traceback; a multirun goes on to its next job (the record says failed)


if __name__ == "__main__":
    try:
        check_overrides([a for a in sys.argv[1:] if not a.startswith("-")])
    except BeftError as err:
        sys.exit(f"error: {err}")
    main()
