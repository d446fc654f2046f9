"""The README and docs/ stay true to the repository: a short README, links and file names that exist, and commands
that name real Makefile targets and config options."""
import re
import shlex

from conftest import REPO

README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
# Written on other branches of issue 42 (the GPU page; the report `make tables` generates). Empty this once they
# have landed: from then on a link to them that breaks fails like any other.
PENDING: set[str] = set()
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# `beft/selection/__init__.py`, `results/bench/steps.md`: a repository path in backticks (no placeholder, no glob)
PATH = re.compile(r"`((?:beft|conf|docs|results|scripts|tests|hydra_plugins)/[\w./-]*\w)`")
# Hydra's own launchers and those of the installed plugins (hydra-joblib-launcher, hydra-submitit-launcher)
PLUGIN_LAUNCHERS = {"basic", "joblib", "submitit_local", "submitit_slurm"}


def code_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, re.S)


def command_lines(text: str) -> list[list[str]]:
    """Every line of the bash blocks as words, comments dropped."""
    return [shlex.split(line.split(" #")[0]) for block in code_blocks(text) for line in block.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][\w-]*):", (REPO / "Makefile").read_text(), re.M))


def relative(target: str, page) -> str | None:
    """The repository path a link on `page` points at, or None for a web address or an anchor on the page."""
    if re.match(r"^[a-z]+:", target) or target.startswith("#"):
        return None
    path = (page.parent / target.split("#")[0]).resolve()
    return str(path.relative_to(REPO))


def test_the_readme_is_short():
    n = len(README.read_text().splitlines())
    assert n <= 200, f"README.md has {n} lines; move detail to a page in docs/ (at most 200)"


def test_every_relative_link_points_at_a_file_of_the_repository():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            path = relative(target, page)
            if path is not None and path not in PENDING and not (REPO / path).exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert not broken, f"links to files that do not exist: {broken}"
    assert relative("../results/README.md", REPO / "docs" / "x.md") == "results/README.md"
    assert relative("https://arxiv.org/abs/2509.15974", README) is None


def test_every_file_named_in_backticks_exists():
    missing = [f"{page.relative_to(REPO)}: {path}" for page in PAGES for path in PATH.findall(page.read_text())
               if path not in PENDING and not (REPO / path).exists()]
    assert not missing, f"files named in the docs that do not exist: {missing}"


def test_the_readme_commands_name_real_make_targets():
    targets = make_targets()
    assert {"demo", "test", "install", "tables"} <= targets       # the parser reads the Makefile
    text = README.read_text()
    used = {words[i + 1] for words in command_lines(text) for i, w in enumerate(words[:-1]) if w == "make"}
    used |= set(re.findall(r"`make ([a-z][\w-]*)", text))
    assert {"demo", "test"} <= used, "the README must show `make demo` and `make test`"
    assert used <= targets, f"the README names make targets the Makefile lacks: {sorted(used - targets)}"
    rules = (REPO / "Makefile").read_text()
    assert re.search(r"^demo:.*\n\t\$\(PY\) run\.py$", rules, re.M), "make demo must run run.py"
    assert re.search(r"^test:.*\n\t.*\$\(PY\) -m pytest", rules, re.M), "make test must run pytest"


def test_the_run_commands_name_real_config_options():
    """`group=a,b` in a README or docs command names options that exist in conf/<group>/ (hydra/launcher: those
    of conf/hydra/launcher and of the installed launcher plugins)."""
    groups = {p.name for p in (REPO / "conf").iterdir() if p.is_dir() and p.name != "hydra"}
    bad = []
    for page in PAGES:
        for words in command_lines(page.read_text()):
            if "run.py" not in words:
                continue
            for word in words:
                group, _, values = word.partition("=")
                for value in values.split(",") if values else []:
                    if group in groups and not (REPO / "conf" / group / f"{value}.yaml").is_file():
                        bad.append(f"{page.relative_to(REPO)}: {group}={value}")
                    if group == "hydra/launcher" and value not in PLUGIN_LAUNCHERS and not \
                            (REPO / "conf" / "hydra" / "launcher" / f"{value}.yaml").is_file():
                        bad.append(f"{page.relative_to(REPO)}: {word}")
    assert not bad, f"commands name config options that do not exist: {bad}"


def test_the_readme_keeps_the_slurm_commands_tests_test_slurm_runs():
    """tests/test_slurm.py runs the CPU command of the README's SLURM section on a cluster; without one it skips,
    so the section's shape is checked here."""
    text = README.read_text()
    section = text[text.index("### On a SLURM cluster"):]
    (block, *_) = code_blocks(section)
    commands = [shlex.split(line.split("#")[0]) for line in block.splitlines() if "run.py -m" in line]
    assert any("hydra/launcher=slurm_cpu" in c for c in commands)
    assert all(c[1] == "run.py" and c[2] == "-m" for c in commands)
