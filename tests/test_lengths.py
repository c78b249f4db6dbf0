"""The simulator's reply-length model: what the prompt says changes how long the reply is, and
the seed's table comes out of it (tokens exactly as a run counts them, latency expected)."""

from __future__ import annotations

import random

import pytest

from chainray.report.bench import redundancy
from chainray.sim.config import SimConfig
from chainray.sim.lengths import LengthModel, read_signals, reply_share
from chainray.sim.replies import plan_reply
from chainray.spec.chain import load_chain
from tests.offline_sim import offline_run

CONFIG = SimConfig()
PLAIN = "Research the state of tidal power in 2026 focusing on: turbines and grid links."


def words(prompt: str, max_tokens: int = 400, config: SimConfig = CONFIG) -> int:
    return len(plan_reply(config, prompt, 50, max_tokens, random.Random(0)).tokens)


def test_a_plain_reply_ends_before_max_tokens_unless_length_is_asked_for():
    plain = words(PLAIN)
    assert plain < 0.93 * 400
    assert words("Write a detailed, comprehensive report on " + PLAIN) >= 0.9 * 400
    assert words("Write a concise summary of " + PLAIN) < 0.5 * 400


def test_plain_replies_spread_well_under_max_tokens_and_the_question_sets_the_share():
    model = LengthModel()
    questions = [f"Research topic number {i} in 2026 focusing on: aspect {i % 7} and what "
                 "follows from it." for i in range(300)]  # over twelve words
    shares = [reply_share(model, read_signals(q), q, seed=0) for q in questions]
    assert all(0.5 <= share <= 0.66 for share in shares)
    assert 0.56 < sum(shares) / len(shares) < 0.60  # centred 0.58, with a spread
    assert max(shares) - min(shares) > 0.1
    # the same question with other trailing material (what strategies change): same share
    one, other = questions[0] + " Notes: none.", questions[0] + " Notes: see the appendix."
    assert reply_share(model, read_signals(one), one, 0) == reply_share(
        model, read_signals(other), other, 0)
    assert reply_share(model, read_signals(one), one, 1) != reply_share(
        model, read_signals(one), one, 0)  # the seed draws again


def test_an_isolated_sibling_writes_more_and_a_step_told_what_was_covered_less():
    isolated = PLAIN + " Turbines: [turbines: not available, it runs at the same time as this step]"
    covered = PLAIN + ("\n\nPreviously covered by earlier steps:\n- grid: cables and storage\n"
                       "- cost: capital and tariffs\n- policy: permits and subsidies")
    assert read_signals(isolated).withheld == 1 and read_signals(covered).covered == 3
    # compare the length factors, not single draws (each prompt draws its own share)
    zero = SimConfig(lengths=LengthModel(share=(0.5, 0.5)))
    assert words(isolated, config=zero) > words(PLAIN, config=zero) > words(covered, config=zero)


def test_richer_distinct_context_gives_a_longer_final_answer():
    zero = SimConfig(lengths=LengthModel(brief_share=(0.4, 0.4)))
    rng = random.Random(1)
    words_needed = zero.lengths.context_full + 100  # the model's full gain, whatever the knob
    distinct = " ".join(f"w{rng.randrange(10**6)}" for _ in range(words_needed))
    repeated = " ".join(["quantum hardware keeps improving slowly"] * (words_needed // 5))
    head = "Synthesize these reports on the state of tidal power into one executive summary.\n"
    assert words(head + "A: " + distinct, 250, zero) > words(head + "A: " + repeated, 250, zero)


def test_the_text_is_deterministic_per_prompt_and_differs_between_prompts():
    one = plan_reply(CONFIG, PLAIN, 20, 100, random.Random(1))
    two = plan_reply(CONFIG, PLAIN, 20, 100, random.Random(2))
    assert one.text == two.text and one.ttft_s != two.ttft_s
    assert plan_reply(CONFIG, PLAIN + "!", 20, 100, random.Random(1)).text != one.text


@pytest.fixture(scope="module")
def seed_runs():
    chain = load_chain("quantum_research")
    return {s: offline_run(chain, s, latency_draws=60)
            for s in ("sequential", "parallel", "hybrid")}


def test_the_main_job_reproduces_the_seed_table_within_15_percent(seed_runs):
    seq, par, hyb = (seed_runs[s] for s in ("sequential", "parallel", "hybrid"))
    # tokens: the seed has sequential 8,400 < parallel 9,200 (ratio 1.10)
    assert seq["total_tokens"] < hyb["total_tokens"] < par["total_tokens"]
    assert par["total_tokens"] / seq["total_tokens"] == pytest.approx(1.10, rel=0.15)
    # latency: the seed has parallel/sequential 0.29, parallel < hybrid < sequential
    assert par["latency_s"] < hyb["latency_s"] < seq["latency_s"]
    assert par["latency_s"] / seq["latency_s"] == pytest.approx(0.29, rel=0.15)
    # the longest output comes from hybrid
    assert max(seed_runs, key=lambda s: seed_runs[s]["output_length"]) == "hybrid"


def test_parallel_siblings_repeat_each_other_more(seed_runs):
    def sibling_redundancy(strategy: str) -> float:
        return redundancy([s.output for s in seed_runs[strategy]["steps"][:-1]])

    assert sibling_redundancy("parallel") > sibling_redundancy("hybrid") > \
        sibling_redundancy("sequential")
    assert sibling_redundancy("parallel") > 1.5 * sibling_redundancy("sequential")


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_the_seed_story_holds_at_other_simulator_seeds_with_margin(seed):
    chain = load_chain("quantum_research")
    runs = {s: offline_run(chain, s, SimConfig(seed=seed), latency_draws=30)
            for s in ("sequential", "parallel", "hybrid")}
    seq, par, hyb = (runs[s] for s in ("sequential", "parallel", "hybrid"))
    assert hyb["total_tokens"] > 1.03 * seq["total_tokens"]
    assert par["total_tokens"] > 1.03 * hyb["total_tokens"]
    assert par["total_tokens"] / seq["total_tokens"] == pytest.approx(1.10, rel=0.15)
    assert par["latency_s"] / seq["latency_s"] == pytest.approx(0.29, rel=0.15)
    runner_up = max(seq["output_length"], par["output_length"])
    assert hyb["output_length"] > 1.1 * runner_up


def test_a_reply_token_is_about_four_characters_as_a_prompt_counts_them():
    from chainray.tokens import estimate_text_tokens

    reply = plan_reply(CONFIG, "Write a detailed, comprehensive report on " + PLAIN, 50, 1200,
                       random.Random(0))
    assert len(reply.tokens) > 1000
    assert 3.6 < len(reply.text) / len(reply.tokens) < 4.4
    # fed to the next step, it costs about what it cost to write
    assert estimate_text_tokens(reply.text) == pytest.approx(len(reply.tokens), rel=0.1)
