"""beft entry point: check the command line, compose the Hydra config, then run one job. See README.md.

Only light modules are imported at the top: a bad command line is reported before torch is imported.
"""
import sys

import hydra

from beft.cli import main as cli_main


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg) -> None:
    from beft.cli import run_job

    run_job(cfg)


if __name__ == "__main__":
    sys.exit(cli_main(main))
