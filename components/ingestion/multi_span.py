"""The union of several spans' sources, read as one (see spans.py)."""
from __future__ import annotations

import logging
from typing import Dict, Iterator, List, Optional, Tuple

from components.ingestion.base import (BadRowTracker, IngestionError, Row,
                                       Source)


class MultiSpanSource(Source):
  """The union of several spans, each its own (self-contained) source.

  Every rating is joined with the movie and user tables of its own span (a
  span folder is a complete GroupLens data set as of its delivery). The
  catalogue is the union of the spans' catalogues, the newest span's entry
  winning for a movie in several: every rated movie stays in the catalogue
  (the retrieval index needs it) and titles/genres are the latest known.
  Ratings come span by span, oldest first, so a later row is a later
  delivery (duplicates.py keeps it on a timestamp tie).
  """

  def __init__(self, spans: List[Tuple[int, Source]], name: str,
               tracker: BadRowTracker):
    super().__init__(name, tracker)
    self.spans = sorted(spans, key=lambda s: s[0])
    first_span, first = self.spans[0]
    for span, reader in self.spans[1:]:
      if (reader.family, reader.implicit) != (first.family, first.implicit):
        raise IngestionError(
            f"span {span} ({reader.name}) is {reader.family!r} data"
            f"{' (implicit)' if reader.implicit else ''} but span "
            f"{first_span} ({first.name}) is {first.family!r}"
            f"{' (implicit)' if first.implicit else ''}; every span of one "
            f"pattern must have the same format")
    self.family = first.family
    self.implicit = first.implicit
    self.duplicates = first.duplicates
    self._current: Source = first

  def prepare(self) -> None:
    for _, reader in self.spans:
      reader.prepare()

  def where(self) -> str:
    return self._current.where()

  def ratings(self, part: Optional[str] = None) -> Iterator[Row]:
    if part is not None:
      raise IngestionError(f"{self.name} has no part {part!r} (parts such as "
                           f"ml-100k folds need one folder, not spans)")
    for span, reader in self.spans:
      logging.info("Reading span %d: %s", span, reader.name)
      self._current = reader
      yield from reader.ratings()

  def catalogue(self) -> Iterator[Row]:
    movies: Dict[str, Row] = {}
    for _, reader in self.spans:
      for movie in reader.catalogue():
        movies.pop(movie["movie_id"], None)  # newest last, in newest order
        movies[movie["movie_id"]] = movie
    yield from movies.values()

  def close(self) -> None:
    for _, reader in self.spans:
      reader.close()
