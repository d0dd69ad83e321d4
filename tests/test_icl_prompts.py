"""Prompt templates: golden rendered strings, YAML loading and its errors, the registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from xmeta.errors import InputError
from xmeta.icl.prompts import TEMPLATES, PromptTemplate, clean_text, get_template, load_template
from xmeta.registry import UnknownNameError

LABELS = ("sports", "travel", "science/technology")
DEMOS = [("The team won 3-1.", "sports"), ("Book the hotel\nearly.", "travel")]


def test_builtin_templates_are_registered() -> None:
    assert {"topic", "sentiment"} <= set(TEMPLATES.names())
    for name in TEMPLATES:
        assert TEMPLATES.get(name).name == name


def test_topic_golden_prompt() -> None:
    prompt = get_template("topic").render(LABELS, DEMOS, "Cells divide.")
    assert prompt == (
        "Classify each sentence into one of these topics: sports, travel, science/technology.\n\n"
        "Sentence: The team won 3-1.\nTopic: sports\n\n"
        "Sentence: Book the hotel early.\nTopic: travel\n\n"
        "Sentence: Cells divide.\nTopic:"
    )


def test_topic_golden_zero_shot_prompt_and_answers() -> None:
    t = get_template("topic")
    assert t.render(LABELS, [], "Cells divide.") == (
        "Classify each sentence into one of these topics: sports, travel, science/technology.\n\n"
        "Sentence: Cells divide.\nTopic:"
    )
    # The space belongs to the answer so the label tokenizes as it does mid-text.
    assert [t.render_answer(n) for n in LABELS] == [" sports", " travel", " science/technology"]


def test_sentiment_golden_prompt_with_verbalizers() -> None:
    t = get_template("sentiment").with_verbalizers({"pos": "positive", "neg": "negative"})
    prompt = t.render(("pos", "neg"), [("Loved it!", "pos")], "Awful.") + t.render_answer("neg")
    assert prompt == (
        "Classify the sentiment of each text as one of: positive, negative.\n\n"
        "Text: Loved it!\nSentiment: positive\n\n"
        "Text: Awful.\nSentiment: negative"
    )
    assert get_template("sentiment").verbalize("pos") == "pos"  # the registered one is unchanged


def test_template_without_instruction() -> None:
    t = PromptTemplate(name="bare", instruction="", query="{text} =>", answer=" {label}", separator="\n")
    assert t.render(("a", "b"), [("x", "a")], "y") == "x => a\ny =>"


def test_clean_text_collapses_whitespace() -> None:
    assert clean_text("  a\n\tb   c \n") == "a b c"


def test_unknown_template_name_suggests() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'topic'"):
        get_template("topik")


def test_load_template_from_path(tmp_path: Path) -> None:
    path = tmp_path / "qa.yaml"
    path.write_text('instruction: "Pick: {labels}"\nquery: "Q: {text}\\nA:"\nverbalizers: {yes: Yes}\n')
    t = get_template(str(path))
    assert t.name == "qa"
    assert t.render(("yes", "no"), [("x", "yes")], "y") == "Pick: Yes, no\n\nQ: x\nA: Yes\n\nQ: y\nA:"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("instruction: hi\nquery: '{text}'\ncolour: red\n", "unknown template key"),
        ("instruction: hi\nquery: 'no placeholder'\n", r"query must contain \{text\}"),
        ("instruction: '{label_list}'\nquery: '{text}'\n", "unknown placeholder"),
        ("instruction: hi\nquery: '{text'\n", "literal braces"),
        ("- a\n- b\n", "must be a mapping"),
        ("instruction: [unclosed\n", "invalid YAML"),
    ],
)
def test_bad_template_files_name_the_file(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(InputError, match=message) as err:
        load_template(path)
    assert str(path) in str(err.value)


def test_missing_template_file() -> None:
    with pytest.raises(InputError, match="not found"):
        get_template("/nonexistent/dir/t.yaml")
