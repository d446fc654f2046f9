"""The command line around Hydra (run.py): fast checks first, one line per error, honest exit codes.

Exit codes: 0 every job ok or skipped; 1 a run failed (a sweep: any job failed); 2 bad input; 130 Ctrl-C
(128 + the signal for SIGTERM, SIGUSR1, SIGUSR2: 143, 138, 140).
`precheck` reads the command line with Hydra's own argument parser (so `--cfg job`, `--info defaults`,
`-cn NAME` keep their meaning, and flags may stand anywhere among the overrides) and checks it before the heavy
imports and before Hydra creates any folder. `-m ... --cfg job` prints every job of the sweep (`show_jobs`).
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


INFO_TOPICS = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")


def read_command_line(argv: list[str]):
    """Hydra's reading of the command line (its own parser), and the command line with its flags first."""
    from hydra._internal.utils import get_args_parser

    argv = _info_topic(argv)
    args = get_args_parser().parse_intermixed_args(argv)
    return args, _flags_first(argv, args.overrides)


def precheck(argv: list[str]) -> list[str]:
    """The command line to give Hydra, or a one-line BeftError for one that cannot run. Needs no torch.

    `-m ... --cfg job` shows each job of the sweep (`show_jobs`, not Hydra). Hydra refuses -m beside --cfg and
    --info, so for `-m ... --info` (and `--cfg hydra|all`) -m is dropped, and a swept key (seed=0,1) is refused,
    since one config is shown.
    """
    args, argv = read_command_line(argv)
    if args.help or args.hydra_help or args.shell_completion or args.experimental_rerun:
        return argv
    if args.multirun and args.cfg == "job":
        if args.config_path or args.config_dir:
            raise BeftError("-m ... --cfg job shows the jobs of conf/'s sweeps; another config tree (--config-path, "
                            "--config-dir): give --cfg job without -m")
        check_overrides(args.overrides, multirun=True)
        compose(args.config_name or "config", args.overrides, multirun=True)   # a composition error: one line
        return argv
    if args.multirun and (args.cfg or args.info):
        swept = [o for o in args.overrides if _is_sweep(o)]
        if swept:
            shown = f"--cfg {args.cfg}" if args.cfg else "--info"
            raise BeftError(f"{shown} shows one config; {swept[0]} is a sweep: give one value (-m ... --cfg job shows "
                            "each job of a sweep)")
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


def _info_topic(argv: list[str]) -> list[str]:
    """A bare `--info` (Hydra: --info all) takes no override as its topic: `-m experiment=x --info`, once its flags
    are put first (`--info experiment=x`), is not a request for the topic `experiment=x`."""
    out = []
    for i, token in enumerate(argv):
        bare = token in ("--info", "-i") and (i + 1 == len(argv) or argv[i + 1] not in INFO_TOPICS)
        out.append("--info=all" if bare else token)
    return out


def _note_sweep(args) -> None:
    """`experiment=table1 --cfg job` shows what Hydra shows, the config without the sweep: say so, on stderr."""
    if not any(o.split("=", 1)[0] == "experiment" for o in args.overrides):
        return
    from beft import jobs

    _, params = jobs.sweep_params(args.overrides, args.config_name or "config")
    if params:
        print(f"note: this is the config without the sweep over {', '.join(params)}; add -m to see each job's",
              file=sys.stderr)


def show_jobs(args) -> int:
    """`-m ... --cfg job`: every job of the sweep, in Hydra's order, as a comment line naming its overrides, then
    its config as `--cfg job` prints one (with -p PACKAGE: that part; with --resolve: resolved)."""
    from omegaconf import Container, OmegaConf

    from beft import jobs

    found = jobs.compose_jobs(args.overrides, args.config_name or "config")
    package = None if args.package == "_global_" else args.package
    for job in found:
        node = job.config if package is None else OmegaConf.select(job.config, package)
        if node is None:
            raise BeftError(f"package {package!r} is not in the config (-p names a node, e.g. -p method)")
        print(f"# job {job.num} ({job.num + 1} of {len(found)}): {' '.join(job.overrides)}")
        if isinstance(node, Container):
            print(("" if package is None else f"# @package {package}\n") + OmegaConf.to_yaml(node, resolve=args.resolve))
        else:
            print(node)
    return 0


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
        argv = precheck(sys.argv[1:])
        args, _ = read_command_line(argv)
        if args.multirun and args.cfg == "job":
            return show_jobs(args)
        if args.cfg and not args.multirun and not (args.config_path or args.config_dir):
            _note_sweep(args)
        sys.argv[1:] = argv
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
