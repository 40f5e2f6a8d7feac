"""The README's measured figures agree with the committed result files they come from."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("readme_figures", ROOT / "scripts" / "readme_figures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


tool = _tool()
README = (ROOT / "README.md").read_text()


def test_every_marked_figure_matches_its_result_file():
    assert tool.stale(README, tool.Results()) == []


def test_the_readme_marks_its_figures():
    names = {name for name, _ in tool.MARK.findall(README)}
    for required in ("demo.top1", "attn.hilo_vs_msa", "models.litv2_s.inference.fp32_share"):
        assert required in names


def test_a_changed_figure_is_caught():
    m = tool.MARK.search(README)
    assert m is not None
    edited = README[: m.start(2)] + "0.00x?" + README[m.end(2):]
    problems = tool.stale(edited, tool.Results())
    assert len(problems) == 1 and m.group(1) in problems[0]
    assert tool.render(edited, tool.Results()) == tool.render(README, tool.Results())


def test_unknown_figure_names_are_refused():
    with pytest.raises(KeyError, match="no.such"):
        tool.render("<!--fig:no.such-->1<!--/fig-->", tool.Results())


def test_percentages_in_prose_are_marked():
    """A bare 'NN.NN%' accuracy in the README would be a figure no file backs."""
    unmarked = [s for s in re.findall(r"(?<![\w>])\d+\.\d\d%", tool.MARK.sub("", README))]
    assert unmarked == []
