"""tests/data is what tests/task_fixtures.py writes, and it has a file for every local task file a task config
names, in that reader's format: the plumbing tests need nothing beside the checkout."""
import gzip

import pytest
from omegaconf import OmegaConf

from beft.data import load_prompted, load_task
from beft.data.tasks import local_files
from beft.decoder.spec import section
from conftest import FIXTURES, REPO
from task_fixtures import ROWS, files

TASKS = sorted(p.stem for p in (REPO / "conf" / "task").glob("*.yaml"))
HUB_ONLY = {"mnli", "mrpc", "qnli", "qqp", "stsb"}   # no training file in ../shared/data either (QNLI: dev only)


def test_the_committed_files_are_what_the_generator_writes():
    wanted = files()
    written = {p.relative_to(FIXTURES).as_posix() for p in FIXTURES.rglob("*") if p.is_file()}
    assert written == set(wanted), "run: python tests/task_fixtures.py"
    for name, content in wanted.items():
        got = (FIXTURES / name).read_bytes()
        if name.endswith(".gz"):   # gzip bytes may differ across zlib builds; the content may not
            got, content = gzip.decompress(got), gzip.decompress(content)
        assert got == content, f"tests/data/{name} differs from what tests/task_fixtures.py writes"


@pytest.mark.parametrize("task", sorted(set(TASKS) - HUB_ONLY))
def test_every_local_task_file_has_a_fixture_that_loads(task):
    cfg = OmegaConf.load(REPO / "conf" / "task" / f"{task}.yaml")
    local = cfg.get("local") or cfg.decoder.get("local")
    for path in local_files(OmegaConf.to_container(local), FIXTURES):
        assert path.is_file(), path
    if cfg.get("kind"):                                  # an encoder task
        data = load_task(cfg, str(FIXTURES), None, 0)
        assert len(data.train) == ROWS[f"{local.dir}/{local.train}"]
    if cfg.get("decoder") is not None:                   # its prompted form, through its template
        from beft.decoder.templates import get_template

        spec = section(cfg)
        data = load_prompted(spec, str(FIXTURES), None, None, 0)
        template = get_template(spec["template"])
        for example in data.train[:5] + data.eval["validation"][:5]:
            prompted = template.render(example)
            assert prompted.prompt and prompted.candidates and prompted.gold
