"""The registry and the report through the API."""

from pathlib import Path

from reliable_ad import api
from reliable_ad.params import Params


def test_no_champion_yet_is_none_not_an_error(tracking: Path) -> None:
    assert api.champion_folder(Params(), "rfnet") is None
    assert api.list_models(Params(), "rfnet") == []


def test_the_report_reads_where_the_paths_say(tmp_path: Path) -> None:
    params = Params(paths={"rfnet_metrics": "elsewhere/rfnet.json"})
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "rfnet.json").write_text('{"accuracy": 0.8125}')
    page = api.report(params, tmp_path, tmp_path / "report.html", registry=False).read_text()
    assert "0.8125" in page and "not produced yet: elsewhere/rfnet.json" not in page
    assert "not produced yet: metrics/generation.json" in page
