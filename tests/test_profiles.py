"""Judge profiles: a new judge is one entry, used by the judge and the command line unchanged."""

import json
import re

import pytest
from samples import grey

from qinsight_sdk import PROFILES, JudgeProfile, QualityJudge, TaskPrompt, cli, register_profile
from qinsight_sdk.errors import UsageError
from qinsight_sdk.parsing import ParsedScore, parse_comparison, parse_degradation, parse_score
from qinsight_sdk.profiles import QINSIGHT, QINSIGHT_COMPARISON, find_profile
from qinsight_sdk.prompts import PromptOrder
from qinsight_sdk.testing import ScriptedBackend

PLAIN_QUESTION = "Rate this picture from 1 to 5. Reply with the number only."


def parse_plain(text):
    """A different answer format: "Score: 3.7" and nothing else (no tags, no JSON)."""
    match = re.fullmatch(r"\s*Score:\s*([0-9.]+)\s*", text)
    if match is None:
        return ParsedScore(None, None, "no 'Score: N' answer")
    return ParsedScore(min(5.0, max(1.0, float(match.group(1)))), None, None)


def plain_messages(order, with_reference):
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PLAIN_QUESTION}]}]


PLAIN = JudgeProfile("plain-score", {"score": TaskPrompt(plain_messages, parse_plain)},
                     fast_score_prefix="Score: ")


@pytest.fixture
def plain(monkeypatch):
    """The test-only profile, registered the way a new judge would be: one entry in the table."""
    monkeypatch.setitem(PROFILES, PLAIN.name, PLAIN)
    return PLAIN


def test_a_new_profile_asks_its_own_prompt_and_reads_its_own_format(plain):
    asked = []

    def answer(conversation, images):
        asked.append(conversation)
        return "Score: 3.7"

    judge = QualityJudge(ScriptedBackend(answer), profile="plain-score")
    assert judge.score(grey(100)).score == pytest.approx(3.7)
    assert asked == [plain_messages(PromptOrder.IMAGE_FIRST, False)]
    assert judge.score(grey(100), mode="fast").score == pytest.approx(3.7)


def test_q_insight_answers_are_unreadable_under_the_new_profile(plain):
    judge = QualityJudge(ScriptedBackend(lambda c, i: '<answer>{"rating": 4}</answer>'), profile=plain)
    assert judge.score(grey(100)).error == "no 'Score: N' answer"


def test_a_task_the_profile_cannot_do_is_a_usage_error(plain):
    judge = QualityJudge(ScriptedBackend(lambda c, i: "Score: 2"), profile="plain-score")
    with pytest.raises(UsageError, match="judge profile 'plain-score' cannot do degradation"):
        judge.degradation(grey(100))
    without_fast = JudgeProfile("no-fast", PLAIN.tasks)
    with pytest.raises(UsageError, match="'no-fast' has no fast score mode"):
        QualityJudge(ScriptedBackend(lambda c, i: "Score: 2"), profile=without_fast).score(grey(1), mode="fast")


def test_a_new_profile_runs_on_the_tiny_model(plain, tiny_model, tiny_judge):
    judge = QualityJudge.from_pretrained(tiny_model, device="cpu", profile="plain-score",
                                         decoding=tiny_judge.decoding)
    rendered = judge.backend.render(plain_messages(PromptOrder.IMAGE_FIRST, False))
    assert PLAIN_QUESTION in rendered and "<think>" not in rendered
    image = grey(90, (84, 56))
    ours, qinsight = judge.score(image, mode="fast"), tiny_judge.score(image, mode="fast")
    assert 1.0 <= ours.score <= 5.0 and ours.error is None
    assert ours.score != pytest.approx(qinsight.score, abs=1e-6)  # another prompt, another belief
    reasoned = judge.score(image)
    assert reasoned.raw and (reasoned.score is not None or reasoned.error.startswith("no 'Score: N' answer"))


def test_the_command_line_offers_a_new_profile_unchanged(plain, tiny_model, image_files, capsys):
    paths = [str(p) for p in image_files[:2]]
    code = cli.main(["score", *paths, "--model", str(tiny_model), "--mode", "fast", "--profile", "plain-score"])
    ours = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    cli.main(["score", *paths, "--model", str(tiny_model), "--mode", "fast"])
    default = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and [r["image"] for r in ours] == paths
    assert all(1.0 <= r["score"] <= 5.0 for r in ours)
    assert [r["score"] for r in ours] != pytest.approx([r["score"] for r in default], abs=1e-6)


def test_a_profile_is_asked_with_the_judges_order_and_whether_there_is_a_reference(monkeypatch):
    asked = []

    def recording(order, with_reference):
        asked.append((order, with_reference))
        return [{"role": "user", "content": [{"type": "text", "text": f"{order.value} {with_reference}"}]}]

    profile = JudgeProfile("recording", {"score": TaskPrompt(recording, parse_score),
                                         "degradation": TaskPrompt(recording, parse_degradation),
                                         "comparison": TaskPrompt(recording, parse_comparison)})
    judge = QualityJudge(ScriptedBackend(lambda c, i: "Score: 2"), profile=profile, prompt_order="text_first")
    judge.score(grey(1))
    judge.degradation(grey(1))
    judge.compare(grey(1), grey(2))
    judge.compare(grey(1), grey(2), reference=grey(3))
    text_first = PromptOrder.TEXT_FIRST
    assert asked == [(text_first, False), (text_first, False), (text_first, False), (text_first, True)]


def test_registering_a_profile_makes_it_findable_by_name(monkeypatch):
    monkeypatch.setitem(PROFILES, "two-tasks", None)  # restored (removed) after the test
    two = register_profile(JudgeProfile("two-tasks", {"score": PLAIN.tasks["score"],
                                                      "degradation": PLAIN.tasks["score"]}))
    assert find_profile("two-tasks") is two and PROFILES["two-tasks"] is two
    with pytest.raises(UsageError, match=r"'two-tasks' cannot do comparison \(it does score, degradation\)"):
        two.prompt("comparison")


def test_profiles_are_found_by_name_then_by_released_subfolder():
    assert find_profile() is QINSIGHT
    assert find_profile(subfolder="comparison") is QINSIGHT_COMPARISON
    assert find_profile(subfolder="score_degradation") is QINSIGHT
    assert find_profile(subfolder="elsewhere") is QINSIGHT
    assert find_profile("q-insight-comparison", subfolder="score_degradation") is QINSIGHT_COMPARISON
    assert find_profile(PLAIN) is PLAIN
    with pytest.raises(UsageError, match="unknown judge profile 'nope'; known: q-insight, q-insight-comparison"):
        find_profile("nope")


def test_q_insight_profiles_ask_the_trained_prompts():
    from qinsight_sdk import prompts

    for profile in (QINSIGHT, QINSIGHT_COMPARISON):
        assert profile.prompt("score").messages(PromptOrder.TEXT_FIRST, False) == \
            prompts.score_messages(PromptOrder.TEXT_FIRST)
        assert profile.prompt("degradation").messages(PromptOrder.IMAGE_FIRST, True) == \
            prompts.degradation_messages(PromptOrder.IMAGE_FIRST)
        for reference in (True, False):
            assert profile.prompt("comparison").messages(PromptOrder.TEXT_FIRST, reference) == \
                prompts.comparison_messages(reference)
        assert profile.fast_prefix() == prompts.FAST_SCORE_ANSWER_PREFIX and profile.model_type == "qwen2_5_vl"
    assert (QINSIGHT.subfolder, QINSIGHT_COMPARISON.subfolder) == ("score_degradation", "comparison")


def test_the_judge_loaded_from_the_comparison_subfolder_uses_its_profile(tiny_model, tmp_path):
    import shutil

    shutil.copytree(tiny_model, tmp_path / "comparison")
    judge = QualityJudge.from_pretrained(tmp_path, "comparison", device="cpu")
    assert judge.profile is QINSIGHT_COMPARISON
