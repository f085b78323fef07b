"""The contact sheet of `wsense search --demo --html` (wsense/serving/contact_sheet.py)."""
import pandas as pd

from conftest import TEST_IMAGES
from wsense.cli import main


def test_contact_sheet_never_shows_a_photo_kept_out_of_the_catalog(tiny_data, checkpoint, config_file, tmp_path,
                                                                    monkeypatch):
    # A harmless caption of the photo that another caption describes as showing boys.
    with open(tiny_data / "test_queries.csv", "a", encoding="utf-8") as table:
        table.write(f"4|{TEST_IMAGES[1]}#1|Players on a football field .|{TEST_IMAGES[1]}\n")
    # --demo draws test queries; make the draw land on that caption and on an ordinary one.
    monkeypatch.setattr(pd.DataFrame, "sample", lambda self, n, random_state=None: self.iloc[[4, 3]])
    sheet = tmp_path / "demo.html"
    assert main(["search", "--checkpoint", str(checkpoint), "--config", str(config_file), "--data-dir", str(tiny_data),
                 "--demo", "--html",
                 str(sheet), "--index-dir", str(tmp_path / "index")]) == 0
    html = sheet.read_text(encoding="utf-8")
    assert "Players on a football field" in html
    assert TEST_IMAGES[1] not in html  # neither as a result nor as the expected photo
    assert "expected · " + TEST_IMAGES[2] in html
