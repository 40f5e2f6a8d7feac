"""The 1,000 ImageNet-1k classes in label order, shipped with the package (``imagenet_classes.txt``).

One line per class, ``<WordNet id>\\t<WordNet lemmas>`` (``n01440764\\ttench, Tinca tinca``), in the
order of the label indices of every ImageNet-1k classifier (the WordNet ids sorted, as the
ImageNet ``val/<wnid>/`` folders sort).
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Dict, List, Optional, Sequence, Tuple

__all__ = ["imagenet_wnids", "imagenet_class_names", "imagenet_label_indices", "IMAGENET_NUM_CLASSES"]

IMAGENET_NUM_CLASSES = 1000


@functools.lru_cache(maxsize=1)
def _table() -> Tuple[Tuple[str, str], ...]:
    text = resources.files("hilovit.data").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    rows = tuple(tuple(line.split("\t", 1)) for line in text.splitlines() if line.strip())
    if len(rows) != IMAGENET_NUM_CLASSES or any(len(r) != 2 for r in rows):
        raise RuntimeError("hilovit/data/imagenet_classes.txt is damaged: expected 1000 lines 'wnid<TAB>names'")
    return rows


def imagenet_wnids() -> List[str]:
    """The 1,000 WordNet ids in label order: ``['n01440764', 'n01443537', ...]``."""
    return [wnid for wnid, _ in _table()]


def imagenet_class_names(full: bool = False) -> List[str]:
    """The 1,000 class names in label order: the first WordNet lemma (``'tench'``, ``'goldfish'``), or
    with ``full=True`` every lemma (``'tench, Tinca tinca'``). Two short names repeat (``crane``, the
    bird and the machine; ``maillot``): the index tells them apart."""
    return [names if full else names.split(",")[0].strip() for _, names in _table()]


@functools.lru_cache(maxsize=1)
def _lookup() -> Dict[str, Optional[int]]:
    table: Dict[str, Optional[int]] = {}
    for i, (wnid, names) in enumerate(_table()):
        table[wnid] = i
        for key in {names, names.split(",")[0].strip()}:
            table[key] = None if key in table else i  # a name shared by two classes maps to none
    return table


def imagenet_label_indices(folder_names: Sequence[str]) -> Optional[List[int]]:
    """The ImageNet-1k label of each class folder name (a WordNet id such as ``n01440764``, or a
    class name: ``tench`` or ``tench, Tinca tinca``), or None when any name is not an ImageNet-1k
    class (or names two classes, as ``crane`` does)."""
    lookup = _lookup()
    out = [lookup.get(str(n)) for n in folder_names]
    return None if any(i is None for i in out) or not out else out  # type: ignore[return-value]
