"""The canonical label order shared by every dataset, model and table in udcbench.

Index  Name       RAF-DB id   FERPlus column   KDEF code
0      neutral    7           neutral          NE
1      happiness  4           happiness        HA
2      surprise   1           surprise         SU
3      sadness    5           sadness          SA
4      anger      6           anger            AN
5      disgust    3           disgust          DI
6      fear       2           fear             AF
7      contempt   -           contempt         -

The order is FERPlus's column order, so the seven basic expressions are indices 0-6 and
8-class data (FERPlus with contempt) only adds index 7. A 7-class model therefore reads
any 7-class dataset without remapping.
"""

from __future__ import annotations

CANONICAL_LABELS: tuple[str, ...] = (
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
)
BASIC7: tuple[str, ...] = CANONICAL_LABELS[:7]
LABEL_INDEX: dict[str, int] = {name: i for i, name in enumerate(CANONICAL_LABELS)}

#: RAF-DB basic: 1 Surprise, 2 Fear, 3 Disgust, 4 Happiness, 5 Sadness, 6 Anger, 7 Neutral.
RAFDB_TO_CANONICAL: dict[int, int] = {1: 2, 2: 6, 3: 5, 4: 1, 5: 3, 6: 4, 7: 0}

#: FERPlus vote columns in fer2013new.csv order; the first eight are canonical 0-7.
FERPLUS_COLUMNS: tuple[str, ...] = CANONICAL_LABELS + ("unknown", "NF")

#: FER2013 (Kaggle) emotion ids: 0 Angry, 1 Disgust, 2 Fear, 3 Happy, 4 Sad, 5 Surprise, 6 Neutral.
FER2013_TO_CANONICAL: dict[int, int] = {0: 4, 1: 5, 2: 6, 3: 1, 4: 3, 5: 2, 6: 0}

#: KDEF expression codes (characters 5-6 of the file name).
KDEF_TO_CANONICAL: dict[str, int] = {"NE": 0, "HA": 1, "SU": 2, "SA": 3, "AN": 4, "DI": 5, "AF": 6}


def label_names(num_classes: int) -> tuple[str, ...]:
    """The canonical names of a ``num_classes``-way problem (7 or 8)."""
    if num_classes not in (7, 8):
        raise ValueError(f"udcbench label sets have 7 or 8 classes, not {num_classes}")
    return CANONICAL_LABELS[:num_classes]
