"""Merge the reviewers' raw labels (labels/raw/photos_H*.tsv) into labels/photos.csv.

    python labels/merge_labels.py

A photo labelled once keeps its label. Sheets 1-7 (the 100 test photos and 12 training photos) were labelled by two
reviewers independently (H1 and H7); where they agree that is the label, and the 7 photos where they disagreed were
looked at a third time, at full size, and decided as in ADJUDICATED (labels/README.md).
"""
from __future__ import annotations

import csv
from pathlib import Path

HERE = Path(__file__).parent
LABELS = ("child", "adult", "none", "unsure")
ADJUDICATED = {  # image -> (label, why), from a third look at full size
    "123997871_6a9ca987b1.jpg": ("unsure", "lacrosse players of high-school age, 14-18"),
    "3356748019_2251399314.jpg": ("unsure", "helmeted BMX riders, one much smaller; tiny spectators"),
    "3396275223_ee080df8b5.jpg": ("unsure", "stage dancers, adult or older teens"),
    "3517023411_a8fbd15230.jpg": ("child", "small child beside a man in the crowd behind the cyclist"),
    "3690425778_3b390b3ea5.jpg": ("unsure", "backlit silhouette jumping off a dock"),
    "404850242_3a55a4c874.jpg": ("child", "small child in a hat behind the woman photographing"),
    "782401952_5bc5d3413a.jpg": ("child", "three young teens with slushies, about 14"),
}


def main() -> None:
    seen: dict[str, list[dict]] = {}
    for path in sorted((HERE / "raw").glob("photos_H*.tsv")):
        with path.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
                if row["label"] not in LABELS:
                    raise SystemExit(f"{path}: {row['image']}: unknown label {row['label']!r}")
                seen.setdefault(row["image"], []).append({**row, "by": path.stem.removeprefix("photos_")})
    rows = []
    for image, labels in sorted(seen.items(), key=lambda item: (item[1][0]["split"] != "test", item[0])):
        reviewers = "+".join(label["by"] for label in labels)
        if len({label["label"] for label in labels}) == 1:
            label, note = labels[0]["label"], labels[0]["note"]
        else:
            label, note = ADJUDICATED[image]
            reviewers += " (disagreed; adjudicated)"
        rows.append({"image": image, "split": labels[0]["split"], "label": label, "note": note,
                     "reviewers": reviewers})
    with (HERE / "photos.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows)} photos -> {HERE / 'photos.csv'}")


if __name__ == "__main__":
    main()
