"""The command line around Hydra (run.py): fast checks first, one line per error, honest exit codes.

Exit codes: 0 every job ok or skipped; 1 a run failed (a sweep: any job failed); 2 bad input; 130 Ctrl-C
(128 + the signal for SIGTERM, SIGUSR1, SIGUSR2: 143, 138, 140).
`precheck` reads the command line with Hydra's own argument parser (so `--cfg job`, `--info defaults`,
`-cn NAME` keep their meaning, and flags may stand between overrides) and checks it before the heavy imports
and before Hydra creates any folder.
"""
from __future__ import annotations

import logging
import sys

from beft import sweep
from beft.checks import CONF_DIR, check_overrides, check_values, check_writable, yaml_error
from beft.errors import BeftError, choices_error
from beft.files import DiskFull
from beft.interrupts import exit_code

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130
log = logging.getLogger("beft")


def precheck(argv: list[str]) -> list[str]:
    """The command line to give Hydra, or a one-line BeftError for one that cannot run. Needs no torch.

    `-m ... --cfg job` (or --info) shows the config of the sweep's jobs: Hydra refuses -m beside --cfg, so -m is
    dropped, and a swept key (seed=0,1) is refused, since one config is shown.
    """
    from hydra._internal.utils import get_args_parser

    args = get_args_parser().parse_intermixed_args(argv)
    argv = _flags_first(argv, args.overrides)
    if args.help or args.hydra_help or args.shell_completion or args.experimental_rerun:
        return argv
    if args.multirun and (args.cfg or args.info):
        swept = [o for o in args.overrides if _is_sweep(o)]
        if swept:
            raise BeftError(f"--cfg / --info show one job's config; {swept[0]} is a sweep: give one value")
        argv = [a for a in argv if a not in ("-m", "--multirun")]
        args.multirun = False
    if args.config_path or args.config_dir:
        return argv   # another config tree: Hydra checks it
    name = args.config_name or "config"
    if not (CONF_DIR / f"{name}.yaml").is_file():
        raise choices_error("config name (-cn)", name, sorted(p.stem for p in CONF_DIR.glob("*.yaml")))
    runs = args.cfg is None and args.info is None   # --cfg / --info only show the config
    check_overrides(args.overrides, multirun=args.multirun if runs else None)
    if not runs:
        return argv
    cfg = compose(name, args.overrides, args.multirun)
    if not args.multirun:   # a sweep's values are checked per job (a failed record each)
        check_values(cfg)
    check_writable(cfg.out_dir)
    return argv


def _flags_first(argv: list[str], overrides: list[str]) -> list[str]:
    """Hydra's parser takes the overrides as one run of words (`a=1 --cfg job b=2` is an error there): flags
    first, then every override, in the order given."""
    pending, flags = list(overrides), []
    for token in argv:
        if pending and token == pending[0]:
            pending.pop(0)
        else:
            flags.append(token)
    return flags + list(overrides)


def _is_sweep(override: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides([override])[0].is_sweep_override()


def compose(name: str, overrides: list[str], multirun: bool):
    """The config Hydra will compose (for a sweep: without the swept keys), or a one-line error."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    import yaml
    from omegaconf.errors import OmegaConfBaseException

    parsed = OverridesParser.create().parse_overrides(overrides)
    if multirun:   # (a swept out_dir is checked by each job)
        overrides = [o.input_line for o in parsed if not o.is_sweep_override()]
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name=name, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        raise BeftError(_composition_error(name, parsed, err)) from None
    except yaml.YAMLError as err:   # a config file of the defaults list (not named on the command line) is broken
        raise yaml_error(err) from None


def _composition_error(name: str, parsed, err) -> str:
    """Hydra's composition errors run to several lines; say the one that matters, with the valid keys."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if "not in struct" in str(err.__cause__ or err):
        # A key of another option (method.terms with method=beft): list the keys of the option chosen.
        key = next((o.key_or_group for o in parsed if f"'{o.key_or_group}'" in lines[0]), None)
        if key and "." in key:
            group = key.split(".")[0]
            chosen = [o.input_line for o in parsed if o.key_or_group == group]
            from hydra import compose as hydra_compose, initialize_config_dir

            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                node = hydra_compose(config_name=name, overrides=chosen).get(group)
            if node is not None:
                option = node.get("name", "?")
                return (f"config key {key!r} does not exist with {group}={option}; valid keys of {group}: "
                        f"{', '.join(sorted(node))}")
    return " ".join(lines[:2])


def run_job(cfg) -> None:
    """One Hydra job: run it, print its one-line summary, note its outcome for the sweep summary."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    from beft.interrupts import Interrupted, interrupt_on_signals
    from beft.launch import job_resources   # the heavy imports (torch, transformers) start here
    from beft.placement import signal_reason
    from beft.pipeline import run
    from beft.record import summary_line
    from beft.train import Diverged

    run_id = HydraConfig.get().job.override_dirname or f"job {HydraConfig.get().job.get('num', 0)}"
    try:
        # SIGTERM / SIGUSR1 / SIGUSR2 (SLURM, `timeout`, `kill`) stop the job as Ctrl-C does, naming the signal.
        with interrupt_on_signals(signal_reason), job_resources(cfg):
            record = run(cfg, record_bad_input=multirun)   # a single run's bad input writes nothing
        sweep.note_outcome("skipped" if record.get("skipped") else "ok", record["run_id"])
        print(summary_line(record), flush=True)   # a skipped job's: the existing record's result
    except KeyboardInterrupt as err:
        run_id = getattr(err, "run_id", run_id)
        sweep.note_outcome("interrupted", run_id)
        how = f" by {err}" if isinstance(err, Interrupted) else ""
        log.error("interrupted%s: %s (its record says so; run the same command again to resume)", how, run_id)
        raise SystemExit(exit_code(err)) from None
    except Exception as err:
        sweep.note_outcome("failed", getattr(err, "run_id", run_id))
        expected = isinstance(err, (BeftError, Diverged, DiskFull))   # DiskFull: a full disk, not a bug
        if not multirun and not expected:
            raise   # a bug: its traceback is what helps
        first_line = (str(err).strip().splitlines() or [""])[0]
        if getattr(err, "record_lost", None):   # a full disk refused the failed record too (beft.record.save_record)
            first_line += f"; no record could be written either: {err.record_lost}"
        log.error("%s%s", "" if expected else f"job failed: {type(err).__name__}: ", first_line)
        if not multirun:
            raise SystemExit(EXIT_BAD_INPUT if isinstance(err, BeftError) else EXIT_FAILED) from None


def main(hydra_main) -> int:
    """run.py's `__main__`: check the command line, run Hydra, and turn the outcome into an exit code."""
    # A log file that cannot be written (Hydra's job log on a full disk) must not print a traceback per log line:
    # the console gets every line anyway, and the run's own error says what the disk refused.
    logging.raiseExceptions = False
    try:
        sys.argv[1:] = precheck(sys.argv[1:])
    except BeftError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    try:
        hydra_main()
    except KeyboardInterrupt as err:   # outside a job (composing, importing, a launcher waiting for its jobs)
        sweep.summarize_interrupted()
        print("interrupted", file=sys.stderr)
        return exit_code(err)
    except SystemExit as stop:   # a job was interrupted (128 + signal): the sweep still says what it did
        if isinstance(stop.code, int) and stop.code > 128:
            sweep.summarize_interrupted()
        raise
    return EXIT_FAILED if sweep.sweep_failed(sweep.last_outcomes) else 0
