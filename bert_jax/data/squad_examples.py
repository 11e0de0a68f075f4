"""The SQuAD example, one question about one context, and the cap on problems quoted one by one: what
reading (squad.py), windowing (squad_features.py) and answering (squad_answers.py) share."""

from __future__ import annotations

import dataclasses

# How many problems a ReadReport quotes and how many skipped answers are logged one by one; the
# counts always cover all of them.
MAX_MESSAGES = 20


@dataclasses.dataclass
class QAExample:
  """One question about one context. answers: (text, character start in context), all checked."""

  qid: str
  question: str
  context: str
  answers: list[tuple[str, int]]
  is_impossible: bool
  title: str = ""
