"""Experiment loggers: `none`, `csv` (per-epoch rows beside the record) and `wandb` (offline unless told).

wandb online needs its server: where that cannot be reached (no network, a closed port: seen at once; a server
that does not answer: after `logger.init_timeout` seconds), the run logs offline instead and says so, rather than
waiting minutes for wandb's retries or failing a training over its logger. A missing or wrong API key is one line
(beft.checks refuses a missing one before anything is loaded)."""
from __future__ import annotations

import csv
import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

from beft.errors import BeftError, choices_error
from beft.files import atomic_write

log = logging.getLogger("beft")
DEFAULT_INIT_TIMEOUT = 15.0   # seconds wandb may take to reach its server before this run logs offline


class NullLogger:
    def start(self, config: dict, run_dir: Path, run_id: str) -> None: ...
    def log(self, metrics: dict, step: int) -> None: ...
    def log_image(self, name: str, path: Path) -> None: ...
    def finish(self, record: dict) -> None: ...


class CsvLogger(NullLogger):
    def start(self, config, run_dir, run_id):
        self.path = Path(run_dir) / "history.csv"
        self.rows = []

    def log(self, metrics, step):
        self.rows.append({"step": step, **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}})
        fields = sorted({k for row in self.rows for k in row}, key=lambda k: (k != "step", k))
        with atomic_write(self.path, "w", newline="") as f:   # temp file + rename: never through a planted link
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(self.rows)


class WandbLogger(NullLogger):
    """One wandb run per beft run; always finished, even when the run fails, so multirun jobs never share one."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.run = None
        self.run_dir = None

    def start(self, config, run_dir, run_id):
        import wandb

        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if (self.run_dir / "wandb").is_symlink():   # wandb writes its files by name: never let it follow a link
            raise BeftError(f"{self.run_dir / 'wandb'} is a symbolic link: wandb would write its files elsewhere; "
                            "remove it")
        mode, timeout = self.cfg.mode, float(self.cfg.get("init_timeout") or DEFAULT_INIT_TIMEOUT)
        server = (os.environ.get("WANDB_BASE_URL") or wandb.setup().settings.base_url) if mode in ("online", "shared") \
            else None
        if server:
            unreachable = _unreachable(server, timeout)
            if unreachable:
                mode = self._offline(f"cannot reach {server} ({unreachable})")

        def init(mode):
            # reinit="finish_previous": a run left open by anything else is closed, never shared with this job.
            return wandb.init(project=self.cfg.project, entity=self.cfg.get("entity"), mode=mode, name=run_id,
                              config=config, dir=str(self.run_dir), group=self.cfg.get("group"),
                              tags=list(self.cfg.get("tags") or []), job_type=config["method"]["name"],
                              reinit="finish_previous", settings=wandb.Settings(init_timeout=timeout))

        try:
            self.run = init(mode)
        except wandb.errors.CommError as err:   # the server did not answer within init_timeout (a proxy, a firewall)
            self.run = init(self._offline(f"{server} did not answer within {timeout:.0f} s: "
                                          f"{(str(err).strip().splitlines() or [''])[0][:200]}"))
        except (wandb.errors.UsageError, wandb.errors.AuthenticationError) as err:   # no key, a wrong key
            raise BeftError(f"logger=wandb logger.mode={mode}: {(str(err).strip().splitlines() or [''])[0]}; log in "
                            "(wandb login, or WANDB_API_KEY), or log offline with logger.mode=offline") from None

    def _offline(self, why: str) -> str:
        log.warning("wandb %s: logging this run offline instead (upload it later: wandb sync %s)", why,
                    self.run_dir / "wandb")
        return "offline"

    def log(self, metrics, step):
        if self.run is not None:
            self.run.log(metrics, step=step)

    def log_image(self, name, path):
        if self.run is not None and Path(path).exists():
            import wandb

            self.run.log({name: wandb.Image(str(path))})

    def finish(self, record):
        """The final record: key numbers in the summary, result.json itself as a run file; then finish (exit code
        1 for a failed run). Whatever happens here, the run is finished."""
        if self.run is None:
            return
        run, self.run = self.run, None
        try:
            selection = record.get("selection") or {}
            summary = {f"final/{k}": v for k, v in (record.get("metrics") or {}).get("final", {}).items()}
            run.summary.update({"status": record.get("status"), "error": record.get("error"), "key": record.get("key"),
                                "trainable_params": record.get("trainable_params"), **summary,
                                **({"selection/ranking": selection["ranking"]} if selection.get("ranking") else {})})
            result = self.run_dir / "result.json"
            if result.exists():
                run.save(str(result), base_path=str(self.run_dir), policy="now")
        finally:
            run.finish(exit_code=0 if record.get("status") == "ok" else 1)


def _unreachable(url: str, timeout: float) -> str | None:
    """Why the wandb server at `url` cannot be reached directly (no network, no DNS, a closed port), in at most
    `timeout` seconds; None where it answers, or where a proxy stands between (wandb's own timeout decides then).
    wandb itself would retry for minutes before giving up."""
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                                             "all_proxy")):
        return None
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)),
                                      timeout=timeout):
            return None
    except OSError as err:
        return err.strerror or type(err).__name__


def make_logger(cfg) -> NullLogger:
    kinds = {"none": lambda: NullLogger(), "csv": lambda: CsvLogger(), "wandb": lambda: WandbLogger(cfg)}
    if cfg.name not in kinds:
        raise choices_error("logger", cfg.name, kinds)
    return kinds[cfg.name]()
