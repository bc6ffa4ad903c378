"""Judge profiles: built-in judges (Q-Insight, VisualQuality-R1), profile files beside a checkpoint or given
by path, and how a checkpoint's profile is chosen; a new judge is one entry, or one file, and no code."""

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from samples import grey

from qinsight_sdk import PROFILES, JudgeProfile, QualityJudge, TaskPrompt, cli, register_profile
from qinsight_sdk.errors import UsageError
from qinsight_sdk.judging.parsing import ParsedComparison, ParsedDegradation, ParsedScore, parse_first_number
from qinsight_sdk.judging.profiles import (
    PROFILE_FILE,
    QINSIGHT,
    QINSIGHT_COMPARISON,
    VISUALQUALITY_R1,
    VISUALQUALITY_R1_NON_THINKING,
    VQ_INSIGHT_COMPARISON,
    choose_profile,
    find_profile,
    load_profile_file,
    profile_from_dict,
)
from qinsight_sdk.judging.prompts import IMAGE, PromptOrder
from qinsight_sdk.testing import ScriptedBackend

PLAIN_QUESTION = "Rate this picture from 1 to 5. Reply with the number only."
PLAIN = JudgeProfile(
    "plain-score",
    {"score": TaskPrompt((IMAGE, PLAIN_QUESTION), answer_pattern=r"Score:\s*([0-9.]+)")},
    fast_score_prefix="Score: ",
)
RENDERED = json.loads((Path(__file__).parents[1] / "fixtures" / "rendered_prompts.json").read_text(encoding="utf-8"))

# A profile file as a user would write it by hand for a judge qinsight has never seen: its own question
# with the image last, a 0-10 scale, "Score: N" answers, no reasoning.
HAND_WRITTEN = """{
  "name": "ten-point",
  "description": "a judge answering 'Score: N' on a 0-10 scale",
  "rating_range": [0, 10],
  "reasons": false,
  "tasks": {
    "score": {"content": ["How good is this photo, from 0 to 10?", "<image>"], "answer_pattern": "Score: ([0-9.]+)"}
  }
}
"""


@pytest.fixture
def plain(monkeypatch):
    """The test-only profile, registered the way a new judge would be: one entry in the table."""
    monkeypatch.setitem(PROFILES, PLAIN.name, PLAIN)
    return PLAIN


def recorded(answer):
    """A scripted backend that keeps each conversation it is asked, with its template options and prefix."""
    asked = []

    class Recording(ScriptedBackend):
        def encode(self, conversations, images, answer_prefix="", template_options=None):
            asked.extend((c, dict(template_options or {}), answer_prefix) for c in conversations)
            return super().encode(conversations, images, answer_prefix, template_options)

    return Recording(lambda c, i: answer), asked


# -- asking and reading ------------------------------------------------------------------------------------


def test_a_new_profile_asks_its_own_prompt_and_reads_its_own_format(plain):
    backend, asked = recorded("Score: 3.7")
    judge = QualityJudge(backend, profile="plain-score")
    assert judge.score(grey(100)).score == pytest.approx(3.7)
    assert judge.score(grey(100), mode="fast").score == pytest.approx(3.7)
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PLAIN_QUESTION}]}]
    assert asked == [(conversation, {}, ""), (conversation, {}, "Score: ")]


def test_q_insight_answers_are_unreadable_under_the_new_profile(plain):
    judge = QualityJudge(ScriptedBackend(lambda c, i: '<answer>{"rating": 4}</answer>'), profile=plain)
    assert judge.score(grey(100)).error == r"the answer does not match the judge's pattern 'Score:\\s*([0-9.]+)'"


def test_a_task_the_profile_cannot_do_is_a_usage_error(plain):
    judge = QualityJudge(ScriptedBackend(lambda c, i: "Score: 2"), profile="plain-score")
    with pytest.raises(UsageError, match="judge profile 'plain-score' cannot do degradation"):
        judge.degradation(grey(100))
    without_fast = JudgeProfile("no-fast", PLAIN.tasks)
    with pytest.raises(UsageError, match="'no-fast' has no fast score mode"):
        QualityJudge(ScriptedBackend(lambda c, i: "Score: 2"), profile=without_fast).score(grey(1), mode="fast")


def test_visualquality_r1_scores_only_and_says_so():
    judge = QualityJudge(ScriptedBackend(lambda c, i: "<answer>3</answer>"), profile="visualquality-r1")
    with pytest.raises(UsageError, match=r"judge profile 'visualquality-r1' cannot do degradation \(it does score\)"):
        judge.degradation(grey(1))
    with pytest.raises(UsageError, match=r"'visualquality-r1' cannot do comparison \(it does score\)"):
        judge.compare(grey(1), grey(2))
    with pytest.raises(UsageError, match="cannot do comparison"):
        judge.rank([grey(1), grey(2)], strategy="tournament")


def test_visualquality_r1_asks_its_thinking_prompt_and_its_non_thinking_one_for_fast_scores():
    from qinsight_sdk.judging import prompts

    backend, asked = recorded("<think>sharp</think><answer>4.25</answer>")
    judge = QualityJudge(backend, profile="visualquality-r1")
    assert judge.score(grey(50)).score == pytest.approx(4.25)
    assert judge.score(grey(50), mode="fast").score == pytest.approx(4.2)  # the script's digits, to 0.1
    (thinking, options, prefix), (non_thinking, fast_options, fast_prefix) = asked
    assert thinking == [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompts.VQ_R1_THINKING_QUESTION}]}
    ]
    assert non_thinking[0]["content"][1]["text"] == prompts.VQ_R1_NON_THINKING_QUESTION
    assert options == fast_options == {"add_vision_id": True}
    assert (prefix, fast_prefix) == ("", "<answer>")
    asked.clear()
    QualityJudge(backend, profile="visualquality-r1-non-thinking").score(grey(50))
    assert asked[0][0] == non_thinking and asked[0][1] == {"add_vision_id": True}


@pytest.mark.parametrize(
    "answer, score",
    [
        ("<think>I see 3 birds and noise.</think><answer>2.75</answer>", 2.75),
        ("<answer>The rating is 3.5 out of 5</answer>", 3.5),
        ("<answer>1.5</answer> then <answer>4.10</answer>", 4.1),  # the last block
        ("<answer>4</answer>", 4.0),
        ("3.33", 3.33),  # untagged: the whole answer
        ("<answer>5.2</answer>", 5.2),  # a small overshoot, as its code takes it
        ("<answer>-2</answer>", 2.0),  # its pattern has no sign, as in its code
    ],
)
def test_visualquality_r1_reads_the_first_number_of_its_last_answer_block(answer, score):
    assert parse_first_number(answer).score == pytest.approx(score)


@pytest.mark.parametrize(
    "answer, error",
    [
        ("<answer>excellent</answer>", "no number found in the answer"),
        ("<think>There are 3 people and it is", "no number found in the answer (no <answer> block found)"),
        ("", "no number found in the answer (no <answer> block found)"),
    ],
)
def test_visualquality_r1_without_a_rating_is_an_error_never_a_random_score(answer, error):
    parsed = parse_first_number(answer)
    assert parsed.score is None and parsed.error == error


def test_only_a_judge_that_reasons_reports_reasoning():
    answer = "<think>crisp edges, no noise</think><answer>4.5</answer>"
    thinking = QualityJudge(ScriptedBackend(lambda c, i: answer), profile="visualquality-r1").score(grey(1))
    alone = QualityJudge(ScriptedBackend(lambda c, i: answer), profile="visualquality-r1-non-thinking").score(grey(1))
    assert (thinking.score, thinking.reasoning) == (4.5, "crisp edges, no noise")
    assert (alone.score, alone.reasoning) == (4.5, None)
    ten = load_profile_file_from_text(HAND_WRITTEN)
    chatty = QualityJudge(ScriptedBackend(lambda c, i: "Nice photo. Score: 5"), profile=ten).score(grey(1))
    assert (chatty.score, chatty.reasoning, chatty.error) == (3.0, None, None)


def test_a_profile_follows_the_judges_order_only_when_one_is_given():
    backend, asked = recorded('<answer>{"rating": 2}</answer>')
    QualityJudge(backend, profile=QINSIGHT, prompt_order="text_first").score(grey(1))
    QualityJudge(backend, profile=QINSIGHT).score(grey(1))
    ten = load_profile_file_from_text(HAND_WRITTEN)
    QualityJudge(backend, profile=ten).score(grey(1))
    QualityJudge(backend, profile=ten, prompt_order="image_first").score(grey(1))
    parts = [[c.get("type") for c in conversation[-1]["content"]] for conversation, _, _ in asked]
    assert parts == [["text", "image"], ["image", "text"], ["text", "image"], ["image", "text"]]
    assert QualityJudge(backend, profile=ten).prompt_order is PromptOrder.TEXT_FIRST  # what rows record


def test_a_comparison_is_asked_with_or_without_its_reference_prompt():
    backend, asked = recorded("<answer>Image A</answer>")
    judge = QualityJudge(backend, profile=QINSIGHT_COMPARISON, prompt_order="text_first")
    judge.compare(grey(1), grey(2))
    judge.compare(grey(1), grey(2), reference=grey(3))
    (plain_turn, _, _), (reference_turn, _, _) = asked
    assert [c["type"] for c in plain_turn[1]["content"]] == ["text", "image", "text", "image", "text"]  # the paper's
    assert [c.get("text", "<image>") for c in reference_turn[1]["content"]] == list(
        QINSIGHT.tasks["comparison"].with_reference
    )


# -- rendering, byte for byte ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["q-insight", "visualquality-r1", "visualquality-r1-non-thinking"])
def test_each_profile_renders_exactly_as_its_own_code_does(tiny_judge, name):
    profile = PROFILES[name]
    assert RENDERED[name]["source"]
    rendered = tiny_judge.backend.render(profile.messages("score"), profile.chat_template_options)
    assert rendered == RENDERED[name]["text"]


def test_fast_scores_render_the_non_thinking_prompt_then_the_answer_prefix(tiny_judge):
    text = (
        tiny_judge.backend.render(VISUALQUALITY_R1.messages("score", fast=True), VISUALQUALITY_R1.chat_template_options)
        + VISUALQUALITY_R1.fast_prefix()
    )
    assert text == RENDERED["visualquality-r1-non-thinking"]["text"] + "<answer>"


@pytest.mark.parametrize(
    "name", ["q-insight", "q-insight-comparison", "visualquality-r1", "visualquality-r1-non-thinking", "ten-point"]
)
def test_the_tiny_model_scores_in_both_modes_under_each_profile(tiny_model, tiny_judge, name):
    profile = PROFILES.get(name) or load_profile_file_from_text(HAND_WRITTEN)
    judge = QualityJudge(tiny_judge.backend, profile=profile, decoding=tiny_judge.decoding)
    image = grey(90, (84, 56))
    reasoned = judge.score(image)
    assert reasoned.raw and (reasoned.score is not None or reasoned.error.startswith(("no ", "the answer", "rating ")))
    if profile.fast_score_prefix is None:
        with pytest.raises(UsageError, match="has no fast score mode"):
            judge.score(image, mode="fast")
        return
    fast = judge.score(image, mode="fast")
    assert fast.error is None and 1.0 <= fast.score <= 5.0
    if profile.messages("score", fast=True) != QINSIGHT.messages("score", fast=True):
        assert fast.score != pytest.approx(tiny_judge.score(image, mode="fast").score, abs=1e-6)


# -- profile files -----------------------------------------------------------------------------------------


def load_profile_file_from_text(text):
    return profile_from_dict(json.loads(text), "hand-written")


def test_a_hand_written_profile_reads_its_scale_onto_one_to_five():
    ten = load_profile_file_from_text(HAND_WRITTEN)
    judge = QualityJudge(ScriptedBackend(lambda c, i: "Score: 7.5"), profile=ten)
    assert judge.score(grey(1)).score == pytest.approx(4.0)  # 1 + 4 * 7.5 / 10
    assert QualityJudge(ScriptedBackend(lambda c, i: "Score: 10.5"), profile=ten).score(grey(1)).score == pytest.approx(
        5.2
    )  # a small overshoot: as written
    assert QualityJudge(ScriptedBackend(lambda c, i: "Score: 0"), profile=ten).score(grey(1)).score == 1.0
    far = QualityJudge(ScriptedBackend(lambda c, i: "Score: 36"), profile=ten).score(grey(1))
    assert far.score is None and far.error.startswith("rating 36 is far outside the judge's scale 0-10")
    assert QualityJudge(ScriptedBackend(lambda c, i: "Score: 10.5"), profile=ten).reward([grey(1)]).tolist() == [1.0]
    assert judge.reward([grey(1)]).tolist() == [pytest.approx(0.75)]


@pytest.mark.parametrize(
    "profile", [QINSIGHT, QINSIGHT_COMPARISON, VISUALQUALITY_R1, VISUALQUALITY_R1_NON_THINKING, PLAIN]
)
def test_every_profile_round_trips_through_its_file(tmp_path, profile):
    path = profile.save(tmp_path)
    assert path == tmp_path / PROFILE_FILE
    loaded = load_profile_file(path)
    assert loaded == profile and loaded.to_dict() == profile.to_dict()
    assert loaded.messages("score") == profile.messages("score")


def test_a_file_profile_records_its_fingerprint_so_an_edit_is_never_mixed_in():
    assert QINSIGHT.settings_name() == "q-insight"
    edited = JudgeProfile(
        "q-insight", {**QINSIGHT.tasks, "score": TaskPrompt((IMAGE, "Rate it."))}, system_prompt=QINSIGHT.system_prompt
    )
    assert re.fullmatch(r"q-insight@[0-9a-f]{12}", edited.settings_name())
    ten = load_profile_file_from_text(HAND_WRITTEN)
    other = load_profile_file_from_text(HAND_WRITTEN.replace("0 to 10", "zero to ten"))
    assert ten.settings_name() != other.settings_name()
    assert (
        ten.fingerprint() == load_profile_file_from_text(HAND_WRITTEN.replace("a judge answering", "x")).fingerprint()
    )


@pytest.mark.parametrize(
    "change, message",
    [
        ({"colour": 1}, r"unknown keys \['colour'\]"),
        ({"tasks": {}}, "'tasks' must map at least one of score, degradation, comparison"),
        ({"name": ""}, "'name' must be a non-empty text"),
        ({"rating_range": [5, 1]}, r"rating_range \[5.0, 1.0\] is empty"),
        ({"rating_range": "1-5"}, "rating_range must be two numbers"),
        ({"qinsight_judge_profile": 2}, "profile format 2 is newer than this qinsight reads"),
        ({"fast_score_prefix": "Score: "}, "fast scores of fast_rating 'd.dd' read the digits of a rating from 1 to 5"),
        ({"tasks": {"score": {"content": ["Rate it."], "answer_pattern": "([0-9]+)"}}}, r"exactly 1 '<image>' slot"),
        ({"tasks": {"score": {"content": ["<image>"], "answer_pattern": "[0-9]+"}}}, "needs a group around the rating"),
        ({"tasks": {"score": {"content": ["<image>"], "answer_pattern": "(["}}}, "is not a valid regular expression"),
        ({"tasks": {"score": {"content": ["<image>"], "answer": "guess"}}}, "unknown answer reader 'guess'"),
        ({"tasks": {"blur": {"content": ["<image>"]}}}, "unknown task"),
        ({"tasks": {"comparison": {"content": ["<image>", "A or B?"]}}}, r"exactly 2 '<image>' slot"),
        ({"tasks": {"score": {"content": "<image> Rate it"}}}, "content must be a list of texts"),
        ({"tasks": {"score": {"content": ["<image>"], "prompt": "x"}}}, r"unknown keys \['prompt'\]"),
    ],
)
def test_a_broken_profile_file_says_what_is_wrong_and_where(tmp_path, change, message):
    data = {**json.loads(HAND_WRITTEN), **change}
    path = tmp_path / "judge.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UsageError, match=f"^{re.escape(str(path))}: .*{message}"):
        load_profile_file(path)


def test_a_profile_file_that_is_not_json_or_missing_says_so(tmp_path):
    (tmp_path / "bad.json").write_text("{name: ")
    with pytest.raises(UsageError, match="bad.json is not valid JSON"):
        load_profile_file(tmp_path / "bad.json")
    with pytest.raises(UsageError, match="cannot be read"):
        load_profile_file(tmp_path)


# -- choosing a checkpoint's profile -------------------------------------------------------------------------


def test_a_profile_is_chosen_by_name_file_checkpoint_id_subfolder_then_default(tmp_path):
    file = tmp_path / "mine.json"
    file.write_text(HAND_WRITTEN)
    beside = PLAIN.save(tmp_path)
    assert choose_profile("visualquality-r1", "ByteDance/Q-Insight", None, beside) == (VISUALQUALITY_R1, "asked for")
    assert choose_profile(str(file), None, None, beside)[0].name == "ten-point"
    assert choose_profile(None, "TianheWu/VisualQuality-R1-7B", None, beside) == (
        PLAIN,
        f"from the checkpoint's {PROFILE_FILE}",
    )
    assert choose_profile(None, "tianhewu/visualquality-r1-7b/", None) == (
        VISUALQUALITY_R1,
        "the known profile of tianhewu/visualquality-r1-7b/",
    )
    assert choose_profile(None, "ByteDance/Q-Insight", "comparison") == (
        QINSIGHT_COMPARISON,
        "the released subfolder comparison",
    )
    assert choose_profile(None, "someone/else", None, tmp_path / "absent.json") == (QINSIGHT, "the default")
    released = tmp_path / "Q-Insight" / "vqinsight-comp"  # a local copy of the released repository
    released.mkdir(parents=True)
    assert choose_profile(None, str(released)) == (VQ_INSIGHT_COMPARISON, "the released subfolder vqinsight-comp")
    assert choose_profile(None, str(released), "comparison")[0] is QINSIGHT_COMPARISON  # a given subfolder wins
    assert choose_profile(None, str(tmp_path / "vqinsight-comp-missing"))[0] is QINSIGHT  # only folders there
    downloaded = tmp_path / "quality_models" / "VisualQuality-R1-7B"
    cached = tmp_path / "hub" / "models--TianheWu--VisualQuality-R1-7B" / "snapshots" / "0123abcd"
    for folder in (downloaded, cached):
        folder.mkdir(parents=True)
        assert choose_profile(None, str(folder)) == (
            VISUALQUALITY_R1,
            "its folder is named like TianheWu/VisualQuality-R1-7B",
        )
    assert choose_profile(None, str(tmp_path / "VisualQuality-R1-7B-preview-missing"))[0] is QINSIGHT
    (downloaded / PROFILE_FILE).write_text(HAND_WRITTEN)  # a profile file beats the name
    assert choose_profile(None, str(downloaded), None, downloaded / PROFILE_FILE)[0].name == "ten-point"
    assert find_profile(PLAIN) is PLAIN and find_profile() is QINSIGHT
    with pytest.raises(UsageError, match="unknown judge 'nope': neither a profile file nor one of q-insight, "):
        find_profile("nope")


def test_registering_a_profile_makes_it_findable_by_name(monkeypatch):
    monkeypatch.setitem(PROFILES, "two-tasks", None)  # restored (removed) after the test
    two = register_profile(
        JudgeProfile(
            "two-tasks", {"score": PLAIN.tasks["score"], "degradation": TaskPrompt((IMAGE, "Which distortion?"))}
        )
    )
    assert find_profile("two-tasks") is two and PROFILES["two-tasks"] is two
    with pytest.raises(UsageError, match=r"'two-tasks' cannot do comparison \(it does score, degradation\)"):
        two.prompt("comparison")


def test_q_insight_profiles_ask_the_trained_prompts():
    from qinsight_sdk.judging import prompts

    for profile in (QINSIGHT, QINSIGHT_COMPARISON):
        system = {"role": "system", "content": prompts.SYSTEM_PROMPT}
        assert profile.messages("score") == [
            system,
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompts.SCORE_QUESTION}]},
        ]
        assert profile.messages("degradation", "text_first")[1]["content"] == [
            {"type": "text", "text": prompts.DEGRADATION_QUESTION},
            {"type": "image"},
        ]
        assert profile.fast_prefix() == prompts.FAST_SCORE_ANSWER_PREFIX and profile.model_type == "qwen2_5_vl"
        assert profile.chat_template_options == {} and profile.rating_range == (1.0, 5.0)
    assert (QINSIGHT.subfolder, QINSIGHT_COMPARISON.subfolder) == ("score_degradation", "comparison")


def test_the_judge_loaded_from_the_comparison_subfolder_uses_its_profile(tiny_model, tmp_path):
    shutil.copytree(tiny_model, tmp_path / "comparison")
    judge = QualityJudge.from_pretrained(tmp_path, "comparison", device="cpu")
    assert judge.profile is QINSIGHT_COMPARISON and judge.profile_source == "the released subfolder comparison"


def test_a_checkpoint_brings_its_own_profile_file_and_a_named_judge_overrides_it(tiny_model, tmp_path):
    folder = tmp_path / "ten-point-judge"
    shutil.copytree(tiny_model, folder)
    (folder / PROFILE_FILE).write_text(HAND_WRITTEN)
    judge = QualityJudge.from_pretrained(folder, device="cpu")
    assert judge.profile.name == "ten-point" and judge.profile_source == f"from the checkpoint's {PROFILE_FILE}"
    assert judge.prompt_order is PromptOrder.TEXT_FIRST
    named = QualityJudge.from_pretrained(folder, device="cpu", profile="q-insight")
    assert named.profile is QINSIGHT and named.profile_source == "asked for"


# -- the command line ---------------------------------------------------------------------------------------


def run(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, [json.loads(line) for line in captured.out.splitlines()], captured.err


def test_the_command_line_takes_a_judge_by_name(plain, tiny_model, image_files, capsys):
    paths = [str(p) for p in image_files[:2]]
    code, ours, err = run(
        ["score", *paths, "--model", str(tiny_model), "--mode", "fast", "--judge", "plain-score"], capsys
    )
    assert "judge profile 'plain-score' (asked for)" in err
    _, default, _ = run(["score", *paths, "--model", str(tiny_model), "--mode", "fast"], capsys)
    assert code == 0 and [r["image"] for r in ours] == paths
    assert all(1.0 <= r["score"] <= 5.0 for r in ours) and {r["settings"]["profile"] for r in ours} == {"plain-score"}
    assert [r["score"] for r in ours] != pytest.approx([r["score"] for r in default], abs=1e-6)


def test_the_command_line_uses_a_checkpoints_profile_file_and_a_judge_file(tiny_model, image_files, tmp_path, capsys):
    folder = tmp_path / "judge"
    shutil.copytree(tiny_model, folder)
    (folder / PROFILE_FILE).write_text(HAND_WRITTEN)
    image = str(image_files[0])
    code, rows, err = run(["score", image, "--model", str(folder), "--max-new-tokens", "8"], capsys)
    assert f"judge profile 'ten-point' (from the checkpoint's {PROFILE_FILE})" in err
    assert (
        rows[0]["settings"]["profile"].startswith("ten-point@") and rows[0]["settings"]["prompt_order"] == "text_first"
    )
    assert rows[0]["error"] is None or rows[0]["error"].startswith("the answer does not match")
    given = tmp_path / "vq.json"
    VISUALQUALITY_R1.save(tmp_path).rename(given)
    code, rows, err = run(["score", image, "--model", str(folder), "--judge", str(given), "--mode", "fast"], capsys)
    assert code == 0 and f"judge profile 'visualquality-r1' (from {given})" in err
    assert rows[0]["settings"]["profile"] == "visualquality-r1" and 1 <= rows[0]["score"] <= 5


def test_an_unknown_judge_is_a_usage_error_before_any_model_loads(image_files, capsys):
    code, rows, err = run(["score", str(image_files[0]), "--model", "/nowhere", "--judge", "nope"], capsys)
    assert code == 2 and rows == []
    assert "qinsight score: error: unknown judge 'nope': neither a profile file nor one of " in err


def test_rows_made_with_another_version_of_a_profile_file_are_refused(tiny_model, image_files, tmp_path, capsys):
    folder = tmp_path / "judge"
    shutil.copytree(tiny_model, folder)
    (folder / PROFILE_FILE).write_text(HAND_WRITTEN)
    output = tmp_path / "rows.jsonl"
    argv = ["score", str(image_files[0]), "--model", str(folder), "--max-new-tokens", "4", "-o", str(output)]
    assert run(argv, capsys)[0] in (0, 1)
    (folder / PROFILE_FILE).write_text(HAND_WRITTEN.replace("from 0 to 10", "out of ten"))
    code, _, err = run(argv, capsys)
    assert code == 2 and "settings" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["degradation", "IMG"], "judge profile 'visualquality-r1' cannot do degradation (it does score)"),
        (["compare", "IMG", "IMG"], "judge profile 'visualquality-r1' cannot do comparison (it does score)"),
        (
            ["rank", "IMG", "--strategy", "hybrid"],
            "judge profile 'visualquality-r1' cannot do comparison (it does score)",
        ),
    ],
)
def test_a_task_the_judge_cannot_do_is_refused_before_its_model_loads(image_files, capsys, argv, message):
    argv = [str(image_files[0]) if a == "IMG" else a for a in argv]
    code = cli.main([*argv, "--model", "TianheWu/VisualQuality-R1-7B"])  # not in the cache: loading would fail
    err = capsys.readouterr().err
    assert code == 2 and f"error: {message}" in err and "not in the local Hugging Face cache" not in err


def test_a_fast_score_from_a_judge_without_one_is_refused_before_its_model_loads(image_files, tmp_path, capsys):
    (tmp_path / "ten.json").write_text(HAND_WRITTEN)
    for argv in (["score", "--mode", "fast"], ["rank"]):
        code = cli.main([*argv, str(image_files[0]), "--model", "/nowhere", "--judge", str(tmp_path / "ten.json")])
        assert code == 2 and "judge profile 'ten-point' has no fast score mode" in capsys.readouterr().err


# -- exact answers: what a profile file holds, every refusal's message, and which rule picks a profile --------

SCORE_ONLY = {"score": TaskPrompt((IMAGE, "Rate it."))}


def test_a_minimal_profile_file_takes_the_documented_defaults():
    profile = profile_from_dict({"name": "bare", "tasks": {"score": {"content": ["<image>", "Rate it."]}}})
    assert profile == JudgeProfile("bare", SCORE_ONLY)
    assert (
        profile.description,
        profile.reasons,
        profile.rating_range,
        profile.model_type,
        profile.compares_with_reference,
        profile.system_prompt,
        profile.chat_template_options,
    ) == ("", True, (1.0, 5.0), "qwen2_5_vl", False, None, {})
    assert profile.to_dict() == {
        "qinsight_judge_profile": 1,
        "name": "bare",
        "description": "",
        "system_prompt": None,
        "chat_template_options": {},
        "rating_range": [1.0, 5.0],
        "reasons": True,
        "tasks": {"score": {"content": ["<image>", "Rate it."], "answer": "q-insight"}},
    }


def test_every_optional_field_is_written_and_read_back():
    full = JudgeProfile(
        "full",
        {
            "score": TaskPrompt((IMAGE, "Rate it."), answer="last-answer-first-number"),
            "comparison": TaskPrompt((IMAGE, IMAGE, "A or B?"), with_reference=("Ref:", IMAGE, IMAGE, IMAGE, "Which?")),
        },
        system_prompt="Be strict.",
        chat_template_options={"add_vision_id": True},
        reasons=False,
        fast_score=TaskPrompt((IMAGE, "Score:"), answer_pattern=r"([0-9.]+)"),
        fast_score_prefix="Score: ",
        rating_key="Score:\\s*",
        compares_with_reference=True,
        model_type="qwen2_vl",
        description="every field",
    )
    expected = {
        "qinsight_judge_profile": 1,
        "name": "full",
        "description": "every field",
        "system_prompt": "Be strict.",
        "chat_template_options": {"add_vision_id": True},
        "rating_range": [1.0, 5.0],
        "reasons": False,
        "tasks": {
            "score": {"content": ["<image>", "Rate it."], "answer": "last-answer-first-number"},
            "comparison": {
                "content": ["<image>", "<image>", "A or B?"],
                "answer": "q-insight",
                "with_reference": ["Ref:", "<image>", "<image>", "<image>", "Which?"],
            },
        },
        "fast_score": {"content": ["<image>", "Score:"], "answer_pattern": "([0-9.]+)"},
        "fast_score_prefix": "Score: ",
        "rating_key": "Score:\\s*",
        "compares_with_reference": True,
        "model_type": "qwen2_vl",
    }
    assert full.to_dict() == expected
    loaded = profile_from_dict(json.loads(json.dumps(expected)))
    assert loaded == full and loaded.model_type == "qwen2_vl" and loaded.description == "every field"
    assert "model_type" not in QINSIGHT.to_dict() and "compares_with_reference" not in QINSIGHT.to_dict()


def test_a_saved_profile_file_is_indented_utf8_whatever_the_locale(tmp_path, monkeypatch):
    import io

    # a Windows-like locale: text files opened without an encoding would be cp1252
    real = io.text_encoding
    monkeypatch.setattr(io, "text_encoding", lambda encoding, stacklevel=2: real(encoding or "cp1252"))
    profile = JudgeProfile("café", SCORE_ONLY, description="noté à la main")
    path = profile.save(tmp_path)
    text = path.read_bytes().decode("utf-8")
    assert text == json.dumps(profile.to_dict(), indent=2, ensure_ascii=False) + "\n"
    assert '\n  "name": "café",\n' in text
    loaded = load_profile_file(path)
    assert loaded == profile and loaded.description == "noté à la main"


def test_a_fingerprint_ignores_the_order_of_a_files_keys():
    one = JudgeProfile("ordered", SCORE_ONLY, chat_template_options={"add_vision_id": True, "min_pixels": 4})
    other = JudgeProfile("ordered", SCORE_ONLY, chat_template_options={"min_pixels": 4, "add_vision_id": True})
    assert one == other and one.fingerprint() == other.fingerprint()
    assert one.settings_name() == f"ordered@{one.fingerprint()}"
    assert one.fingerprint() != replace(one, chat_template_options={"add_vision_id": False}).fingerprint()


def _refusal(make):
    with pytest.raises(UsageError) as raised:
        make()
    return str(raised.value)


WHERE = "judge profile 'x', task"


@pytest.mark.parametrize(
    "tasks, message",
    [
        (
            {"blur": TaskPrompt((IMAGE, "Blurred?"))},
            f"{WHERE} blur: unknown task; tasks are score, degradation, comparison",
        ),
        (
            {"score": TaskPrompt(("Rate it.",))},
            f"{WHERE} score: the prompt needs exactly 1 '<image>' slot(s), got ['Rate it.']",
        ),
        (
            {"comparison": TaskPrompt((IMAGE, IMAGE, "A or B?"), with_reference=(IMAGE, IMAGE, "A or B?"))},
            f"{WHERE} comparison: the prompt needs exactly 3 '<image>' slot(s), got ['<image>', '<image>', 'A or B?']",
        ),
        (
            {"score": TaskPrompt((IMAGE, "Rate it."), with_reference=(IMAGE, IMAGE, IMAGE))},
            f"{WHERE} score: only comparison has a with_reference prompt",
        ),
        (
            {"degradation": TaskPrompt((IMAGE, "Which?"), answer_pattern="(blur)")},
            f"{WHERE} degradation: answer_pattern reads ratings; degradation answers use a named reader",
        ),
        (
            {"score": TaskPrompt((IMAGE,), answer_pattern="[0-9]+")},
            f"{WHERE} score: answer_pattern needs a group around the rating, e.g. 'Score: ([0-9.]+)'",
        ),
        (
            {"score": TaskPrompt((IMAGE,), answer="guess")},
            (
                f"{WHERE} score: unknown answer reader 'guess'; score answers are read by q-insight, "
                "last-answer-first-number, vq-insight-number, vq-insight-dimensions or an answer_pattern"
            ),
        ),
        (
            {"degradation": TaskPrompt((IMAGE,), answer="guess")},
            f"{WHERE} degradation: unknown answer reader 'guess'; degradation answers are read by q-insight",
        ),
        (
            {"comparison": TaskPrompt((IMAGE, IMAGE), answer="last-answer-first-number")},
            (
                f"{WHERE} comparison: unknown answer reader 'last-answer-first-number'; comparison answers are read "
                "by q-insight, vq-insight"
            ),
        ),
    ],
)
def test_each_broken_prompt_is_refused_with_its_own_message(tasks, message):
    assert _refusal(lambda: JudgeProfile("x", tasks)) == message


def test_each_broken_profile_setting_is_refused_with_its_own_message():
    assert (
        _refusal(lambda: JudgeProfile("x", SCORE_ONLY, rating_range=(3.0, 3.0)))
        == "judge profile 'x': rating_range [3.0, 3.0] is empty"
    )
    assert (
        _refusal(lambda: JudgeProfile("x", SCORE_ONLY, rating_range=(0.0, 10.0), fast_score_prefix="S: "))
        == "judge profile 'x': fast scores of fast_rating 'd.dd' read the digits of a rating from 1 to 5, so "
        "they need rating_range [1, 5]"
    )
    assert (
        _refusal(
            lambda: JudgeProfile("x", SCORE_ONLY, rating_range=(1.0, 5.0), fast_score_prefix="S: ", fast_rating="dd")
        )
        == "judge profile 'x': fast scores of fast_rating 'dd' read the digits of a rating from 0 to 100, so "
        "they need rating_range [0, 100]"
    )
    assert (
        _refusal(lambda: JudgeProfile("x", SCORE_ONLY, rating_range=(0.0, 10.0), rating_key="S: "))
        == "judge profile 'x': rating_key reads the digits of a rating from 1 to 5, so it needs rating_range [1, 5]"
    )
    assert (
        _refusal(lambda: JudgeProfile("x", SCORE_ONLY, fast_rating="d.d"))
        == "judge profile 'x': fast_rating must be one of d.dd, dd, got 'd.d'"
    )
    assert (
        _refusal(lambda: JudgeProfile("x", SCORE_ONLY, media="audio"))
        == "judge profile 'x': media must be one of image, video, got 'audio'"
    )
    assert (
        _refusal(lambda: JudgeProfile("x", SCORE_ONLY, media="video"))
        == f"{WHERE} score: the prompt needs exactly 1 '<video>' slot(s), got ['<image>', 'Rate it.']"
    )
    assert (
        _refusal(lambda: JudgeProfile("x", {"score": TaskPrompt(("<video>", "<image>", "Rate it."))}, media="video"))
        == f"{WHERE} score: a judge of videos has no '<image>' slots"
    )
    assert (
        _refusal(lambda: JudgeProfile("x", SCORE_ONLY, fast_score=TaskPrompt(("Rate it.",))))
        == f"{WHERE} score: the prompt needs exactly 1 '<image>' slot(s), got ['Rate it.']"
    )
    assert _refusal(lambda: JudgeProfile("x", SCORE_ONLY, rating_key="([")).startswith(
        "judge profile 'x': rating_key is not a valid regular expression: "
    )
    assert _refusal(lambda: JudgeProfile("x", {"score": TaskPrompt((IMAGE,), answer_pattern="(")})).startswith(
        f"{WHERE} score: answer_pattern is not a valid regular expression: "
    )
    assert JudgeProfile("x", SCORE_ONLY, rating_range=(0.0, 0.5)).rating_range == (0.0, 0.5)  # any non-empty scale


PROMPT_KEYS = "answer, answer_pattern, content, with_reference"
PROFILE_KEYS = (
    "chat_template_options, compares_with_reference, description, fast_rating, fast_score, fast_score_prefix, "
    "media, model_type, name, qinsight_judge_profile, rating_key, rating_range, reasons, system_prompt, tasks"
)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"colour": 1}, f"unknown keys ['colour']; known: {PROFILE_KEYS}"),
        ({"tasks": {"score": "<image> Rate it"}}, f"tasks.score must be an object with {PROMPT_KEYS}"),
        (
            {"tasks": {"score": {"content": ["<image>"], "prompt": "x"}}},
            f"tasks.score: unknown keys ['prompt']; known: {PROMPT_KEYS}",
        ),
        ({"tasks": {"score": {"answer_pattern": "Score: ([0-9.]+)"}}}, "tasks.score has no content"),
        (
            {"tasks": {"score": {"content": ["<image>", 5]}}},
            "tasks.score.content must be a list of texts and '<image>' slots",
        ),
        (
            {"tasks": {"comparison": {"content": ["<image>", "<image>"], "with_reference": "<image> <image> <image>"}}},
            "tasks.comparison.with_reference must be a list of texts and '<image>' slots",
        ),
        ({"fast_score": ["<image>"]}, f"fast_score must be an object with {PROMPT_KEYS}"),
        ({"chat_template_options": ["add_vision_id"]}, "chat_template_options must be an object"),
        ({"rating_range": 10}, "rating_range must be two numbers [low, high], got 10"),
        ({"rating_range": []}, "rating_range must be two numbers [low, high], got []"),
        ({"rating_range": [0, 5, 10]}, "rating_range must be two numbers [low, high], got [0, 5, 10]"),
        ({"rating_range": ["0", "10"]}, "rating_range must be two numbers [low, high], got ['0', '10']"),
        ({"rating_range": [False, True]}, "rating_range must be two numbers [low, high], got [False, True]"),
        ({"name": " "}, "'name' must be a non-empty text"),
        (
            {"tasks": {"blur": {"content": ["<image>"]}}},
            "judge profile 'ten-point', task blur: unknown task; tasks are score, degradation, comparison",
        ),
    ],
)
def test_a_broken_profile_file_gets_its_exact_message(change, message):
    data = {**json.loads(HAND_WRITTEN), **change}
    assert _refusal(lambda: profile_from_dict(data, "hand-written")) == f"hand-written: {message}"


def test_a_profile_that_is_not_an_object_or_cannot_be_read_says_exactly_that(tmp_path):
    assert _refusal(lambda: profile_from_dict(["not", "an", "object"])) == "profile: a judge profile is a JSON object"
    missing = tmp_path / "missing.json"
    assert (
        _refusal(lambda: load_profile_file(missing))
        == f"judge profile {missing} cannot be read: No such file or directory"
    )


def test_own_order_is_where_the_score_prompt_puts_its_image_else_the_first_prompt():
    def profile(**tasks):
        return JudgeProfile("order", tasks)

    image_first, text_first = TaskPrompt((IMAGE, "Which?")), TaskPrompt(("Which?", IMAGE))
    assert profile(score=image_first).own_order() is PromptOrder.IMAGE_FIRST
    assert profile(score=text_first).own_order() is PromptOrder.TEXT_FIRST
    assert profile(degradation=image_first, score=text_first).own_order() is PromptOrder.TEXT_FIRST
    assert profile(degradation=text_first, score=image_first).own_order() is PromptOrder.IMAGE_FIRST
    assert profile(degradation=text_first).own_order() is PromptOrder.TEXT_FIRST  # no score task
    assert profile(degradation=image_first).own_order() is PromptOrder.IMAGE_FIRST
    assert QINSIGHT.own_order() is VISUALQUALITY_R1.own_order() is PromptOrder.IMAGE_FIRST


def test_a_comparison_is_asked_without_its_reference_unless_told():
    turn = QINSIGHT_COMPARISON.messages("comparison")[1]["content"]
    assert [part.get("text", "<image>") for part in turn] == list(QINSIGHT.tasks["comparison"].content)


def test_each_task_is_read_by_its_reader_on_the_profiles_scale():
    ten = JudgeProfile(
        "ten",
        {
            "score": TaskPrompt((IMAGE, "Rate it.")),
            "degradation": TaskPrompt((IMAGE, "Which?")),
            "comparison": TaskPrompt((IMAGE, IMAGE, "A or B?")),
        },
        rating_range=(0.0, 10.0),
    )
    answer = '<think>sharp</think><answer>{"rating": 7.5}</answer>'
    assert ten.parser("score")(answer) == ParsedScore(4.0, "sharp", None)
    assert replace(ten, reasons=False).parser("score")(answer) == ParsedScore(4.0, None, None)
    assert ten.parser("degradation")(
        '<think>grain</think><answer>{"distortion_class": "noise", "severity": "slight"}</answer>'
    ) == ParsedDegradation("noise", "slight", "grain", None)
    assert ten.parser("comparison")("<think>A</think><answer>Image A</answer>") == ParsedComparison("A", "A", None)
    pattern = replace(ten, tasks={"score": TaskPrompt((IMAGE,), answer_pattern=r"Score: ([0-9.]+)")})
    assert pattern.parser("score")("<think>fine</think> Score: 2 then Score: 5") == ParsedScore(3.0, "fine", None)
    first_number = replace(ten, tasks={"score": TaskPrompt((IMAGE,), answer="last-answer-first-number")})
    assert first_number.parser("score")("<answer>2.5 of 10</answer>") == ParsedScore(2.0, None, None)
    assert QINSIGHT.parser("score")(answer) == ParsedScore(
        None, "sharp", "rating 7.5 is far outside the judge's scale 1-5 (more than 1 beyond it): the answer is broken"
    )
    assert VISUALQUALITY_R1_NON_THINKING.parser("score")("<think>x</think><answer>3</answer>") == ParsedScore(
        3.0, None, None
    )


def test_the_rules_choosing_a_profile_apply_in_their_order(tmp_path, monkeypatch):
    assert choose_profile(PLAIN, "TianheWu/VisualQuality-R1-7B", "comparison") == (PLAIN, "given")
    beside = QINSIGHT.save(tmp_path)
    assert choose_profile(None, "TianheWu/VisualQuality-R1-7B", "comparison", beside) == (
        QINSIGHT,
        f"from the checkpoint's {PROFILE_FILE}",
    )
    assert choose_profile(None, "TianheWu/VisualQuality-R1-7B", "comparison") == (
        QINSIGHT_COMPARISON,
        "the released subfolder comparison",
    )
    assert choose_profile(None, "TianheWu/VisualQuality-R1-7B", "elsewhere") == (
        VISUALQUALITY_R1,
        "the known profile of TianheWu/VisualQuality-R1-7B",
    )
    assert choose_profile(None, None, None, None) == (QINSIGHT, "the default")
    assert find_profile(subfolder="comparison") is QINSIGHT_COMPARISON
    assert find_profile(model="TianheWu/VisualQuality-R1-7B-preview") is VISUALQUALITY_R1
    # a hub id is matched whole, whatever letters it begins or ends with
    x_judge = JudgeProfile("x-judge", SCORE_ONLY, hub_ids=("Xlab/ModelX",))
    monkeypatch.setitem(PROFILES, "x-judge", x_judge)
    assert choose_profile(None, "Xlab/ModelX/") == (x_judge, "the known profile of Xlab/ModelX/")


def test_a_folder_is_named_like_a_hub_id_only_when_it_exists_and_its_name_matches(tmp_path):
    # another owner's model of the same name on the hub is not VisualQuality-R1
    assert choose_profile(None, "someone/VisualQuality-R1-7B") == (QINSIGHT, "the default")
    assert choose_profile(None, str(tmp_path / "VisualQuality-R1-7B")) == (QINSIGHT, "the default")  # not there
    other = tmp_path / "my-judge"
    other.mkdir()
    assert choose_profile(None, str(other)) == (QINSIGHT, "the default")
