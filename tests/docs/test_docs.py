"""The documentation's Python code blocks run as tests, page by page, in the order written.

Every ```python block under docs/ runs. The blocks of one page share one namespace, as a reader
pasting them into one session would; top-level `await` works as in a notebook or `python -m
asyncio`. Tracebacks point at the Markdown file and line. MLflow goes to a throwaway store for
this module (tests/conftest.py's isolation) and the Hugging Face hub is off.

HTML comments (invisible on the rendered page) steer the test:
- `<!-- docs-test: needs news_sentiment -->` anywhere on a page: a model the page uses without
  training it gets a tiny one registered first (news_sentiment, lstm_price_forecast).
- Between the previous block and a block, `<!-- docs-test: skip -->` skips it (it needs a
  running server; the page names the test that covers it), and
  `<!-- docs-test: replace `epochs=100,` with `epochs=2,` -->` runs it with that text replaced
  (the page shows the guide's literal code; the test trains for seconds, not minutes). A
  replacement that no longer matches fails the test.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
from pathlib import Path

import pytest

from tests.conftest import isolated_tracking

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```python(?P<options>[^\n]*)\n(?P<code>.*?)^```\s*$", re.M | re.S)
SKIP = re.compile(r"<!--\s*docs-test:\s*skip\b[^>]*-->")
REPLACE = re.compile(
    r"<!--\s*docs-test:\s*replace\s+`(?P<old>[^`]+)`\s+with\s+`(?P<new>[^`]*)`\s*-->"
)
NEEDS = re.compile(r"<!--\s*docs-test:\s*needs\s+(?P<names>[\w ,]+?)\s*-->")
# A tiny sentiment model trained by the real training code (as tests/sentiment does): seconds.
TINY_SENTIMENT = {"limit": 32, "eval_limit": 16, "max_length": 32, "batch_size": 16, "epochs": 1.0}


def code_blocks(page: Path) -> list[tuple[int, str]]:
    """(first code line, code as the test runs it) of each runnable ```python block of a page."""
    text = page.read_text(encoding="utf-8")
    blocks, previous_end = [], 0
    for match in FENCE.finditer(text):
        before = text[previous_end : match.start()]  # directives for this block
        previous_end = match.end()
        if SKIP.search(before):
            continue
        code = match["code"]
        for old, new in REPLACE.findall(before):
            assert old in code, f"{page.name}: docs-test replace `{old}` matches nothing"
            code = code.replace(old, new)
        line = text.count("\n", 0, match.start("code"))  # 0-based line of the first code line
        blocks.append((line, code))
    return blocks


def needs(page: Path) -> list[str]:
    """Models a page uses without training them itself."""
    found = NEEDS.findall(page.read_text(encoding="utf-8"))
    return [name for names in found for name in re.split(r"[\s,]+", names) if name]


def run_block(code: str, line: int, page: Path, namespace: dict) -> None:
    """Run one block in `namespace`; line numbers in tracebacks are the page's."""
    source = "\n" * line + code
    compiled = compile(source, str(page), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    if compiled.co_flags & inspect.CO_COROUTINE:
        asyncio.run(eval(compiled, namespace))
    else:
        exec(compiled, namespace)


PAGES = sorted(page for page in DOCS.rglob("*.md") if code_blocks(page))


@pytest.fixture(scope="module")
def docs_store(tmp_path_factory):
    """One throwaway MLflow store for every page (pages run in file order), and one torch thread:
    on a busy 2-core machine two threads per process mostly wait on each other."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with isolated_tracking(tmp_path_factory.mktemp("docs_mlflow"), HF_HUB_OFFLINE="1") as uri:
            yield uri
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def news_sentiment(docs_store):
    """A tiny registered `news_sentiment`, for pages that use the default sentiment model."""
    from sentiment.finetune import SentimentTrainSettings, train_sentiment

    return train_sentiment(SentimentTrainSettings(**TINY_SENTIMENT, experiment_name="docs_tests"))


@pytest.fixture(scope="module")
def lstm_price_forecast(docs_store):
    """A tiny registered `lstm_price_forecast`, unless an earlier page registered one."""
    from training.registry import ModelNotFoundError, resolve_version

    try:
        return resolve_version("lstm_price_forecast", "latest")
    except ModelNotFoundError:
        pass
    from training.experiment import train_model
    from training.models.lstm import LSTMModelConfig
    from training.specs import DataSpec, TrainSettings

    return train_model(
        TrainSettings(
            data=DataSpec(days_back=60),
            config=LSTMModelConfig(sequence_length=32, hidden_units=16, epochs=1),
            model_name="lstm_price_forecast",
            experiment_name="docs_tests",
        )
    )


def test_pages_found():
    """The collector sees the guide and the how-tos (a renamed fence would hide them)."""
    names = {page.relative_to(DOCS).as_posix() for page in PAGES}
    assert "guide.md" in names
    assert {"howto/train.md", "howto/backtest.md", "howto/sentiment.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_page_runs(page: Path, docs_store, request, monkeypatch):
    for name in needs(page):
        request.getfixturevalue(name)
    monkeypatch.chdir(ROOT)  # pages use repository-relative paths (data/..., reports/)
    namespace: dict = {"__name__": "__docs__"}
    for line, code in code_blocks(page):
        run_block(code, line, page, namespace)
