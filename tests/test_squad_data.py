"""Tests for bert_jax.data.squad: reading SQuAD JSON and TFDS records, windowed features, post-processing.

Oracles: the JSON written here (what was written is what must be read); Python string slicing of the
context (an answer's characters are context[answer_start:answer_start + len(text)]); the tokenizer's
own encodings of the answer, the context and the question/context pair (a window that holds the
whole example must equal the tokenizer's pair encoding); window counts and max-context owners worked
by hand from the reference's rules (comments show the arithmetic); logits built here with peaks on
spans found from the features' offsets.
"""

from __future__ import annotations

import json
import logging
import math
import re

import numpy as np
import pytest

from bert_jax.data import squad
from bert_jax.data.squad import QAExample, SquadFormatError, make_features, postprocess, read_squad
from bert_jax.tokenization import Tokenizer


@pytest.fixture(scope="module")
def uncased(minilm_dir) -> Tokenizer:
  return Tokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def cased(uncased) -> Tokenizer:
  # The uncased vocab with a few capitalised words: case and accents reach WordPiece unchanged.
  extra = ["Paris", "LONDON", "England", "Café", "The", "Thames"]
  return Tokenizer(list(uncased.vocab) + extra, lowercase=False, source="cased test vocab")


def write(tmp_path, name: str, obj) -> str:
  path = tmp_path / name
  path.write_text(obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False), encoding="utf-8")
  return str(path)


def answer(context: str, text: str) -> dict:
  """An answer dict whose answer_start is found by searching the context (not typed by hand)."""
  return {"text": text, "answer_start": context.index(text)}


PARIS = "Paris is the capital of France. The Seine flows through Paris."
LYON = "Lyon lies where the Rhône meets the Saône."
V1 = {
  "version": "1.1",
  "data": [
    {
      "title": "Paris",
      "paragraphs": [
        {
          "context": PARIS,
          "qas": [
            {
              "id": "q1",
              "question": "What is the capital of France?",
              # Dev style: several annotators, repeated and differing answers.
              "answers": [answer(PARIS, "Paris"), answer(PARIS, "Paris"), answer(PARIS, "Paris is")],
            },
            {"id": "q2", "question": "Which river?", "answers": [answer(PARIS, "The Seine")]},
          ],
        }
      ],
    },
    {
      "title": "Lyon",
      "paragraphs": [
        {"context": LYON, "qas": [{"id": "q3", "question": "Rivers?", "answers": [answer(LYON, "Saône")]}]}
      ],
    },
  ],
}


def squad_v2() -> dict:
  return {
    "version": "v2.0",
    "data": [
      {
        "title": "Lyon",
        "paragraphs": [
          {
            "context": LYON,
            "qas": [
              {
                "id": "a",
                "question": "Which river?",
                "answers": [answer(LYON, "Rhône")],
                "is_impossible": False,
              },
              {
                "id": "b",
                "question": "Which sea?",
                "answers": [],
                "is_impossible": True,
                "plausible_answers": [answer(LYON, "Saône")],
              },
            ],
          }
        ],
      }
    ],
  }


# -------------------------------------------------------------------------------------------------
# Reading.


def test_read_v1(tmp_path):
  examples, report = read_squad(write(tmp_path, "dev.json", V1))
  want = [
    (article["title"], p["context"], qa)
    for article in V1["data"]
    for p in article["paragraphs"]
    for qa in p["qas"]
  ]
  assert len(examples) == len(want) == 3
  for ex, (title, context, qa) in zip(examples, want):
    assert (ex.qid, ex.question, ex.context, ex.title, ex.is_impossible) == (
      qa["id"],
      qa["question"],
      context,
      title,
      False,
    )
    assert ex.answers == [(a["text"], a["answer_start"]) for a in qa["answers"]]
    for text, start in ex.answers:
      assert context[start : start + len(text)] == text
  assert (report.questions, report.answers, report.skipped_answers, report.dropped_questions) == (3, 5, 0, 0)
  assert report.messages == []


def test_read_v2(tmp_path):
  examples, report = read_squad(write(tmp_path, "dev-v2.json", squad_v2()))
  assert [(e.qid, e.is_impossible, e.answers) for e in examples] == [
    ("a", False, [("Rhône", LYON.index("Rhône"))]),
    ("b", True, []),  # plausible_answers are not answers
  ]
  assert (report.questions, report.impossible, report.answers, report.dropped_questions) == (2, 1, 1, 0)


def _delete(doc: dict, path: list) -> dict:
  node = doc
  for key in path[:-1]:
    node = node[key]
  del node[path[-1]]
  return doc


@pytest.mark.parametrize(
  "path, where, field",
  [
    (["data", 1, "paragraphs"], "data[1]", "paragraphs"),
    (["data", 0, "paragraphs", 0, "context"], "data[0].paragraphs[0]", "context"),
    (["data", 0, "paragraphs", 0, "qas"], "data[0].paragraphs[0]", "qas"),
    (["data", 0, "paragraphs", 0, "qas", 1, "question"], "data[0].paragraphs[0].qas[1]", "question"),
    (["data", 0, "paragraphs", 0, "qas", 1, "id"], "data[0].paragraphs[0].qas[1]", "id"),
    (["data", 0, "paragraphs", 0, "qas", 1, "answers"], "data[0].paragraphs[0].qas[1]", "answers"),
    (
      ["data", 0, "paragraphs", 0, "qas", 0, "answers", 2, "answer_start"],
      "data[0].paragraphs[0].qas[0].answers[2]",
      "answer_start",
    ),
    (
      ["data", 1, "paragraphs", 0, "qas", 0, "answers", 0, "text"],
      "data[1].paragraphs[0].qas[0].answers[0]",
      "text",
    ),
  ],
)
def test_missing_field_names_file_and_json_path(tmp_path, path, where, field):
  doc = _delete(json.loads(json.dumps(V1)), path)
  file = write(tmp_path, "dev.json", doc)
  with pytest.raises(SquadFormatError) as info:
    read_squad(file)
  message = str(info.value)
  assert file in message and f'{where}: missing "{field}"' in message


def test_wrong_types_and_contradictions(tmp_path):
  doc = json.loads(json.dumps(V1))
  doc["data"][1]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = "12"
  with pytest.raises(
    SquadFormatError,
    match=r'data\[1\]\.paragraphs\[0\]\.qas\[0\]\.answers\[0\]\.answer_start: expected an integer, got "12"',
  ):
    read_squad(write(tmp_path, "a.json", doc))

  doc = json.loads(json.dumps(V1))
  doc["data"][0]["paragraphs"][0]["qas"][1]["question"] = None
  with pytest.raises(SquadFormatError, match=r"qas\[1\]\.question: expected a string, got null"):
    read_squad(write(tmp_path, "b.json", doc))

  doc = json.loads(json.dumps(V1))
  doc["data"][1]["paragraphs"][0]["qas"][0]["id"] = "q1"
  with pytest.raises(
    SquadFormatError, match=r"data\[1\]\.paragraphs\[0\]\.qas\[0\]: id 'q1' already used at data\[0\]"
  ):
    read_squad(write(tmp_path, "c.json", doc))

  doc = squad_v2()
  doc["data"][0]["paragraphs"][0]["qas"][1]["answers"] = [answer(LYON, "Saône")]
  with pytest.raises(SquadFormatError, match=r"qas\[1\]: is_impossible is true but it lists 1 answers"):
    read_squad(write(tmp_path, "d.json", doc))


def test_answer_offset_mismatch_is_skipped_counted_and_logged(tmp_path, caplog):
  doc = json.loads(json.dumps(V1))
  qas = doc["data"][0]["paragraphs"][0]["qas"]
  qas[0]["answers"][1]["answer_start"] += 1  # "aris " is there, not "Paris": this answer goes
  qas[1]["answers"][0]["answer_start"] = 4  # q2's only answer goes: q2 is dropped
  doc["data"][1]["paragraphs"][0]["qas"][0]["answers"].append({"text": "Saône", "answer_start": 500})
  file = write(tmp_path, "train.json", doc)
  with caplog.at_level(logging.WARNING, logger="bert_jax.data.squad"):
    examples, report = read_squad(file)
  assert [e.qid for e in examples] == ["q1", "q3"]
  assert examples[0].answers == [("Paris", 0), ("Paris is", 0)]
  assert examples[1].answers == [("Saône", LYON.index("Saône"))]
  assert (report.questions, report.answers, report.skipped_answers, report.dropped_questions) == (3, 3, 3, 1)
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  # File, qid, the answer's text and what the context holds at its answer_start.
  assert any(file in w and "'q1'" in w and "'Paris'" in w and repr(PARIS[1:6]) in w for w in warnings)
  assert any("'q2'" in w and "'The Seine'" in w and repr(PARIS[4:13]) in w for w in warnings)
  assert any("'q3'" in w and "answer_start=500" in w and "outside the context" in w for w in warnings)
  assert any("dropped 1 questions" in w for w in warnings)
  assert len(report.messages) == 4 and any("'q2' dropped" in m for m in report.messages)


@pytest.mark.parametrize(
  "content, expected",
  [
    ("", "the file is empty"),
    ("  \n\t\n", "the file is empty"),
    ('{"data": [{"title": "x", ', "not JSON (line 1, column"),
    ("version: 1.1\n", "not JSON"),
    ('[{"context": "a"}]', "expected the SQuAD layout"),
    ('{"version": "1.1"}', "expected the SQuAD layout"),
    ('{"version": "1.1", "data": []}', "holds no questions"),
    ('{"data": [{"paragraphs": [{"context": "abc", "qas": []}]}]}', "holds no questions"),
  ],
)
def test_unreadable_files(tmp_path, content, expected):
  file = write(tmp_path, "bad.json", content)
  with pytest.raises(SquadFormatError, match=re.escape(expected)) as info:
    read_squad(file)
  assert file in str(info.value)


def test_nothing_usable_and_missing_file(tmp_path):
  doc = {
    "data": [
      {
        "paragraphs": [
          {
            "context": "abc",
            "qas": [{"id": "x", "question": "?", "answers": [{"text": "b", "answer_start": 0}]}],
          }
        ]
      }
    ]
  }
  with pytest.raises(SquadFormatError, match="no question has a usable answer"):
    read_squad(write(tmp_path, "bad.json", doc))
  with pytest.raises(FileNotFoundError, match="does not exist"):
    read_squad(tmp_path / "absent.json")


def test_byte_order_mark_is_accepted(tmp_path):
  path = tmp_path / "bom.json"
  path.write_bytes(b"\xef\xbb\xbf" + json.dumps(V1).encode("utf-8"))
  assert len(read_squad(path)[0]) == 3


# -------------------------------------------------------------------------------------------------
# TFDS records.


def tfds_record(qid, context, question, answers, is_impossible=None):
  """A record as `tfds.data_source` returns one of squad: Text as bytes, Sequence as numpy arrays."""
  record = {
    "id": qid.encode(),
    "title": b"T\xc3\xaftle",
    "context": context.encode("utf-8"),
    "question": question.encode("utf-8"),
    "answers": {
      "text": np.array([t.encode("utf-8") for t, _ in answers], dtype=object),
      "answer_start": np.array([s for _, s in answers], dtype=np.int32),
    },
  }
  if is_impossible is not None:
    record["is_impossible"] = np.bool_(is_impossible)
  return record


def test_example_from_record():
  a = answer(LYON, "Rhône")
  ex = squad.example_from_record(tfds_record("x1", LYON, "Quel fleuve ?", [(a["text"], a["answer_start"])]))
  assert ex == QAExample("x1", "Quel fleuve ?", LYON, [("Rhône", a["answer_start"])], False, "Tïtle")
  assert type(ex.answers[0][1]) is int
  ex = squad.example_from_record(tfds_record("x2", LYON, "Mer ?", [], is_impossible=True))
  assert ex.is_impossible is True and ex.answers == []
  # str values (another reader) work the same.
  plain = {"id": "x3", "context": LYON, "question": "q", "answers": {"text": ["Lyon"], "answer_start": [0]}}
  assert squad.example_from_record(plain) == QAExample("x3", "q", LYON, [("Lyon", 0)], False, "")
  with pytest.raises(SquadFormatError, match="missing 'question'"):
    squad.example_from_record({k: v for k, v in plain.items() if k != "question"})
  bad = plain | {"answers": {"text": ["Lyon", "x"], "answer_start": [0]}}
  with pytest.raises(SquadFormatError, match="2 answer texts but 1 answer_start"):
    squad.example_from_record(bad)
  with pytest.raises(SquadFormatError, match="context is not UTF-8"):
    squad.example_from_record(plain | {"context": b"\xff"})


def test_read_squad_tfds_from_array_record(tmp_path, caplog):
  """A tiny dataset with TFDS squad/v2.0's features, written TF-free in array_record, read back."""
  tfds = pytest.importorskip("tensorflow_datasets")
  from bert_jax.data import records

  answers = tfds.features.Sequence({"text": tfds.features.Text(), "answer_start": np.int32})
  features = {
    "id": tfds.features.Text(),
    "title": tfds.features.Text(),
    "context": tfds.features.Text(),
    "question": tfds.features.Text(),
    "is_impossible": np.bool_,
    "answers": answers,
    "plausible_answers": answers,
  }
  rhone, saone = answer(LYON, "Rhône"), answer(LYON, "Saône")
  rows = [
    ("a", "Which river?", [rhone], False),
    ("b", "Which sea?", [], True),
    ("c", "Bad offset", [{"text": "Saône", "answer_start": 3}], False),
    ("d", "Two", [saone, {"text": "Rhône", "answer_start": 0}], False),
  ]

  def split():
    for qid, q, ans, imp in rows:
      texts, starts = [a["text"] for a in ans], [a["answer_start"] for a in ans]
      yield {
        "id": qid,
        "title": "Lyon",
        "context": LYON,
        "question": q,
        "is_impossible": imp,
        "answers": {"text": texts, "answer_start": starts},
        "plausible_answers": {"text": [], "answer_start": []},
      }

  records.write_array_record_dataset(
    tmp_path, "tiny_squad", features, {"validation": split}, version="1.0.0", config="v2.0"
  )
  with caplog.at_level(logging.WARNING, logger="bert_jax.data.squad"):
    examples = squad.read_squad_tfds("tiny_squad/v2.0", "validation", tmp_path)
  assert [(e.qid, e.is_impossible, e.answers, e.title) for e in examples] == [
    ("a", False, [("Rhône", rhone["answer_start"])], "Lyon"),
    ("b", True, [], "Lyon"),
    ("d", False, [("Saône", saone["answer_start"])], "Lyon"),
  ]
  assert any("'c'" in r.getMessage() and "answer_start=3" in r.getMessage() for r in caplog.records)
  with pytest.raises(FileNotFoundError, match="cannot open TFDS dataset"):
    squad.read_squad_tfds("tiny_squad/v2.0", "train", tmp_path)


# -------------------------------------------------------------------------------------------------
# Features.

# Contexts that trip up detokenizing span recovery; every answer is a whole run of words.
HARD = [
  ("Le café «Bonjour» est à Paris.\nIl ouvre à 8h — dit-on.", ["café", "«Bonjour»", "Paris", "8h — dit-on"]),
  (
    "The river  Thames flows through\n\nLONDON, England.",
    ["river  Thames", "LONDON, England", "through\n\nLONDON"],
  ),
  ("北京是中国的首都。東京は日本の首都です。", ["中国的首都", "東京"]),
  ("Ünïcödé ‘quotes’ and “double” … ellipsis, naïve Zoë.", ["‘quotes’", "“double” …", "naïve Zoë"]),
  ("A re\u0301sume\u0301 (decomposed) and a résumé.", ["re\u0301sume\u0301", "résumé"]),
  (
    "Tabs\tand\u00a0non-breaking spaces; İstanbul’s ΣΟΦΙΑ.",
    ["Tabs\tand\u00a0non-breaking", "İstanbul’s ΣΟΦΙΑ"],
  ),
]


def hard_examples() -> list[QAExample]:
  out = []
  for c, (context, texts) in enumerate(HARD):
    for a, text in enumerate(texts):
      out.append(QAExample(f"{c}-{a}", "Where is it?", context, [(text, context.index(text))], False))
  return out


def context_span(features, row) -> tuple[int, int]:
  """The first and last character any context token of the row covers."""
  offs = features.offsets[row][features.offsets[row, :, 0] >= 0]
  return int(offs[:, 0].min()), int(offs[:, 1].max())


@pytest.mark.parametrize("which", ["uncased", "cased"])
def test_training_positions_cover_the_answer_exactly(request, which):
  tok = request.getfixturevalue(which)
  examples = hard_examples()
  # Short windows so most contexts need several and some windows miss the answer.
  feats = make_features(examples, tok, max_seq_length=20, doc_stride=4, max_query_length=64, training=True)
  labelled = set()
  for row in range(len(feats)):
    ex = examples[feats.example_index[row]]
    text, a = ex.answers[0]
    s, e = int(feats.start_positions[row]), int(feats.end_positions[row])
    lo, hi = context_span(feats, row)
    if s == 0:
      assert e == 0
      assert not (lo <= a and a + len(text) <= hi), (
        f"{ex.qid}: window {row} holds the answer but is unlabelled"
      )
      continue
    labelled.add(ex.qid)
    assert 0 < s <= e and feats.token_type_ids[row, s] == 1 and feats.offsets[row, e, 0] >= 0
    start_char, end_char = int(feats.offsets[row, s, 0]), int(feats.offsets[row, e, 1])
    assert start_char <= a and a + len(text) <= end_char
    # Whole-word answers: the exact characters, and the tokens the tokenizer gives the answer alone.
    assert ex.context[start_char:end_char] == text
    alone = tok.encode(text, add_special_tokens=False)["input_ids"]
    assert feats.input_ids[row, s : e + 1].tolist() == alone
  assert labelled == {ex.qid for ex in examples}


def test_partial_word_answer_and_impossible(uncased):
  context = "Those were unbelievable things to see."
  examples = [
    QAExample("part", "q?", context, [("believ", context.index("believ"))], False),
    QAExample("none", "q?", context, [], True),
    QAExample("blank", "q?", "Those  were", [("  ", 5)], False),  # covers no token: no window
  ]
  feats = make_features(examples, uncased, max_seq_length=32, doc_stride=8, training=True)
  assert feats.example_index.tolist() == [0, 1]
  s, e = feats.start_positions[0], feats.end_positions[0]
  a = examples[0].context.index("believ")
  assert feats.offsets[0, s, 0] <= a and a + len("believ") <= feats.offsets[0, e, 1]
  # The span is the word's pieces: exactly "unbelievable".
  assert examples[0].context[feats.offsets[0, s, 0] : feats.offsets[0, e, 1]] == "unbelievable"
  assert (feats.start_positions[1], feats.end_positions[1]) == (0, 0)
  with pytest.raises(ValueError, match="has no answer and is not marked is_impossible"):
    make_features([QAExample("x", "q", "abc", [], False)], uncased, training=True)


def test_single_window_equals_the_tokenizers_pair_encoding(uncased):
  examples = [
    QAExample(str(i), q, c, [], True)
    for i, (c, q) in enumerate([(HARD[0][0], "Où ?"), (HARD[2][0], "首都？")])
  ]
  feats = make_features(examples, uncased, max_seq_length=64, training=False)
  assert feats.start_positions is None and len(feats) == 2
  ref = uncased(
    [e.question for e in examples],
    [e.context for e in examples],
    padding="max_length",
    max_length=64,
    return_offsets=True,
  )
  for key in ("input_ids", "token_type_ids", "attention_mask"):
    np.testing.assert_array_equal(getattr(feats, key), ref[key])
  second = ref["token_type_ids"] == 1
  context_tokens = second & (ref["input_ids"] != uncased.sep_id)
  np.testing.assert_array_equal(feats.offsets[context_tokens], ref["offsets"][context_tokens])
  assert (feats.offsets[~context_tokens] == -1).all()
  # One window: it is every token's max-context window.
  np.testing.assert_array_equal(feats.max_context, context_tokens)
  assert feats.input_ids.dtype == feats.offsets.dtype == np.int32 and feats.max_context.dtype == bool


def test_question_is_cut_to_max_query_length(uncased):
  question = " ".join(["why"] * 30)
  feats = make_features(
    [QAExample("q", question, "it is so", [], True)],
    uncased,
    max_seq_length=32,
    max_query_length=5,
    training=False,
  )
  why = uncased.convert_tokens_to_ids("why")
  ids = feats.input_ids[0].tolist()
  assert ids[:7] == [uncased.cls_id] + [why] * 5 + [uncased.sep_id]
  assert ids[7:11] == uncased.encode("it is so", add_special_tokens=False)["input_ids"] + [uncased.sep_id]
  with pytest.raises(ValueError, match="leaves no room for context"):
    make_features(
      [QAExample("q", question, "x", [], True)], uncased, max_seq_length=8, max_query_length=5, training=False
    )


# Ten one-token words; question "q" (1 token); max_seq_length 10 leaves 10 - 1 - 3 = 6 context tokens
# per window. A token's score in a window is min(tokens left, tokens right) + 0.01 * window length.
# Stride 2: windows [0, 6), [2, 8), [4, 10). Token 3: w0 min(3, 2) = 2, w1 min(1, 4) = 1 -> w0.
#   Token 4: w0 min(4, 1) = 1, w1 min(2, 3) = 2, w2 0 -> w1. Token 5: w0 0, w1 min(3, 2) = 2,
#   w2 min(1, 4) = 1 -> w1. Token 6: w1 min(4, 1) = 1, w2 min(2, 3) = 2 -> w2.
# Stride 3: windows [0, 6), [3, 9), [6, 10) (the last holds 4). Token 4: w0 min(4, 1) + .06 = w1
#   min(1, 4) + .06, a tie: the first window keeps it -> w0. Token 5: w0 0.06, w1 2.06 -> w1.
#   Token 6: w1 min(3, 2) = 2, w2 0 -> w1. Token 7: w1 min(4, 1) + .06 = 1.06 beats w2 min(1, 2) +
#   .04 = 1.04: the longer window wins -> w1. Token 8: w1 0.06, w2 min(2, 1) + .04 = 1.04 -> w2.
@pytest.mark.parametrize(
  "doc_stride, starts, owners",
  [(2, [0, 2, 4], [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]), (3, [0, 3, 6], [0, 0, 0, 0, 0, 1, 1, 1, 2, 2])],
)
def test_max_context_worked_by_hand(uncased, doc_stride, starts, owners):
  context = "a b c d e f g h i j"
  feats = make_features(
    [QAExample("x", "q", context, [], True)],
    uncased,
    max_seq_length=10,
    doc_stride=doc_stride,
    training=False,
  )
  assert len(feats) == len(starts)
  letters = context.split()
  for w, start in enumerate(starts):
    ctx = feats.offsets[w, :, 0] >= 0
    assert [context[i] for i in feats.offsets[w, ctx, 0]] == letters[start : start + 6]
    owned = [context[i] for i in feats.offsets[w, :, 0][ctx & feats.max_context[w]]]
    assert owned == [letters[t] for t in range(10) if owners[t] == w]


@pytest.mark.parametrize("max_seq_length, doc_stride", [(64, 16), (64, 50), (48, 7), (128, 128), (512, 64)])
def test_doc_stride_windows(uncased, max_seq_length, doc_stride):
  context = " ".join(f"Word{i} is number {i}, or ‘{i}’." for i in range(40))
  question = "Which number?"
  n = len(uncased.encode(context, add_special_tokens=False, max_length=10**6)["input_ids"])
  q = len(uncased.encode(question, add_special_tokens=False)["input_ids"])
  m = max_seq_length - q - 3  # context tokens per window
  # Windows start at 0, k * step (step = min(stride, m), since a window never jumps past its own
  # end) until one reaches the end: 1 + ceil((n - m) / step) of them, or 1 when n <= m.
  step = min(doc_stride, m)
  expected = 1 if n <= m else 1 + math.ceil((n - m) / step)
  feats = make_features(
    [QAExample("x", question, context, [], True)],
    uncased,
    max_seq_length=max_seq_length,
    doc_stride=doc_stride,
    training=False,
  )
  assert len(feats) == expected
  full = np.asarray(uncased.encode(context, add_special_tokens=False, max_length=10**6)["offsets"])
  owners = np.zeros(n, int)
  seen = np.zeros(n, bool)
  for w in range(len(feats)):
    ctx = feats.offsets[w, :, 0] >= 0
    start = w * step
    length = min(m, n - start)
    np.testing.assert_array_equal(feats.offsets[w][ctx], full[start : start + length])
    assert ctx.sum() == length and (feats.input_ids[w, q + 2 + length] == uncased.sep_id)
    seen[start : start + length] = True
    owners[start : start + length] += feats.max_context[w][ctx]
  assert seen.all()  # every context token is in some window
  assert (owners == 1).all()  # and has its max context in exactly one


def test_every_eval_example_gets_a_window(uncased):
  examples = [QAExample("empty", "q", "", [], True), QAExample("ws", "q", "  \n ", [], True)]
  feats = make_features(examples, uncased, max_seq_length=16, training=False)
  assert feats.example_index.tolist() == [0, 1]
  assert (feats.offsets == -1).all() and not feats.max_context.any()
  preds = postprocess(examples, feats, np.zeros((2, 16)), np.zeros((2, 16)), version_2=True)
  assert all(p.text == "" and p.start_char == -1 and p.null_score_diff == math.inf for p in preds.values())


# -------------------------------------------------------------------------------------------------
# Post-processing.


def token_span(feats, row: int, start_char: int, end_char: int) -> tuple[int, int]:
  """The row's token indexes whose offsets begin at start_char and end at end_char."""
  (s,) = np.flatnonzero(feats.offsets[row, :, 0] == start_char)
  (e,) = np.flatnonzero(feats.offsets[row, :, 1] == end_char)
  return int(s), int(e)


def noise(feats, seed=0):
  """Small random logits with [CLS] low: no span and no null answer stands out until peaks are set."""
  rng = np.random.default_rng(seed)
  start = rng.normal(0, 0.1, feats.input_ids.shape).astype(np.float32)
  end = rng.normal(0, 0.1, feats.input_ids.shape).astype(np.float32)
  start[:, 0] = end[:, 0] = -5
  return start, end


def owning_row(feats, example: int, start_char: int) -> int:
  """The window of the example where the token starting at start_char has its max context."""
  rows = np.flatnonzero(feats.example_index == example)
  (row,) = [r for r in rows if (feats.max_context[r] & (feats.offsets[r, :, 0] == start_char)).any()]
  return int(row)


def test_postprocess_recovers_the_exact_answer(uncased):
  examples = hard_examples()
  feats = make_features(examples, uncased, max_seq_length=24, doc_stride=6, training=False)
  start, end = noise(feats)
  for i, ex in enumerate(examples):
    text, a = ex.answers[0]
    row = owning_row(feats, i, a)
    s, e = token_span(feats, row, a, a + len(text))
    start[row, s] = end[row, e] = 6.0
  preds = postprocess(examples, feats, start, end)
  assert set(preds) == {ex.qid for ex in examples}
  for i, ex in enumerate(examples):
    text, a = ex.answers[0]
    p = preds[ex.qid]
    assert p.text == ex.context[a : a + len(text)] == text
    assert (p.start_char, p.end_char) == (a, a + len(text))
    assert p.score == 12.0 and p.n_best[0] == {
      "text": text,
      "start_char": a,
      "end_char": a + len(text),
      "score": 12.0,
    }
    assert [c["score"] for c in p.n_best] == sorted((c["score"] for c in p.n_best), reverse=True)
    assert all(c["text"] == ex.context[c["start_char"] : c["end_char"]] for c in p.n_best)


LONG = (
  "Alpha opens the text. "
  + " ".join(f"Filler sentence {i} adds words." for i in range(12))
  + " Omega closes the text."
)


def test_best_span_across_windows_wins(uncased):
  ex = QAExample("x", "Which?", LONG, [], True)
  feats = make_features([ex], uncased, max_seq_length=40, doc_stride=16, training=False)
  assert len(feats) >= 3
  alpha, omega = LONG.index("Alpha"), LONG.index("Omega")
  ra, ro = owning_row(feats, 0, alpha), owning_row(feats, 0, omega)
  assert ra != ro
  sa, ea = token_span(feats, ra, alpha, alpha + len("Alpha opens"))
  so, eo = token_span(feats, ro, omega, omega + len("Omega"))
  for a_peak, o_peak, winner in [(3.0, 4.0, "Omega"), (4.5, 4.0, "Alpha opens")]:
    start, end = noise(feats)
    start[ra, sa] = end[ra, ea] = a_peak
    start[ro, so] = end[ro, eo] = o_peak
    p = postprocess([ex], feats, start, end)["x"]
    assert p.text == winner and LONG[p.start_char : p.end_char] == winner
    texts = [c["text"] for c in p.n_best]
    assert texts[:2] == sorted(["Alpha opens", "Omega"], key=lambda t: t != winner)


def test_start_without_max_context_is_rejected(uncased):
  ex = QAExample("x", "Which?", LONG, [], True)
  feats = make_features([ex], uncased, max_seq_length=40, doc_stride=8, training=False)
  # A word seen by two windows: its span scores higher in the window that is not its max context.
  word = LONG.index("Filler sentence 3")
  owner = owning_row(feats, 0, word)
  other = next(r for r in range(len(feats)) if r != owner and (feats.offsets[r, :, 0] == word).any())
  start, end = noise(feats)
  # Every other start in that window is hopeless, so only the rejected start could pair with the peak end.
  start[other] = -10.0
  s, e = token_span(feats, other, word, word + len("Filler"))
  start[other, s] = end[other, e] = 9.0
  s, e = token_span(feats, owner, word, word + len("Filler"))
  start[owner, s] = end[owner, e] = 2.0
  p = postprocess([ex], feats, start, end)["x"]
  assert (p.text, p.score) == ("Filler", 4.0)


def test_version_2_null_answer(uncased):
  ex = QAExample("x", "Which?", LONG, [], True)
  feats = make_features([ex], uncased, max_seq_length=40, doc_stride=16, training=False)
  start, end = noise(feats)
  omega = LONG.index("Omega")
  row = owning_row(feats, 0, omega)
  s, e = token_span(feats, row, omega, omega + len("Omega"))
  start[row, s] = end[row, e] = 2.5
  start[:, 0] = end[:, 0] = 4.0
  start[1, 0] = end[1, 0] = 3.0  # the null score is the smallest window's: 6
  null = min(float(start[r, 0]) + float(end[r, 0]) for r in range(len(feats)))
  best = float(start[row, s]) + float(end[row, e])
  assert (null, best) == (6.0, 5.0)

  p = postprocess([ex], feats, start, end, version_2=True)["x"]
  assert (p.text, p.start_char, p.end_char, p.score) == ("", -1, -1, null)
  assert p.null_score_diff == null - best
  assert p.n_best[0] == {"text": "", "start_char": -1, "end_char": -1, "score": null}
  assert p.n_best[1]["text"] == "Omega"
  # A threshold above the difference keeps the span; v1.1 never answers "".
  p = postprocess([ex], feats, start, end, version_2=True, null_score_diff_threshold=1.5)["x"]
  assert (p.text, p.start_char) == ("Omega", omega) and p.null_score_diff == 1.0
  p = postprocess([ex], feats, start, end)["x"]
  assert p.text == "Omega" and all(c["text"] for c in p.n_best)
  # With the [CLS] scores below the span, v2.0 answers the span at the default threshold.
  start[:, 0] = end[:, 0] = 1.0
  p = postprocess([ex], feats, start, end, version_2=True)["x"]
  assert p.text == "Omega" and p.null_score_diff == 2.0 - 5.0


def test_invalid_candidates_are_rejected(uncased):
  context = "one two three four five six seven eight"
  ex = QAExample("x", "Which number?", context, [], True)
  feats = make_features([ex], uncased, max_seq_length=32, training=False)
  assert len(feats) == 1
  words = {w: context.index(w) for w in context.split()}

  def tok(word):
    (i,) = np.flatnonzero(feats.offsets[0, :, 0] == words[word])
    return int(i)

  start, end = noise(feats)
  start[0, tok("two")] = end[0, tok("six")] = 9.0  # "two ... six": 5 tokens
  start[0, tok("eight")] = end[0, tok("one")] = 20.0  # end before start
  end[0, tok("eight")] = start[0, tok("one")] = -20.0  # so neither peak pairs with itself
  start[0, 2] = end[0, 3] = 30.0  # question tokens
  p = postprocess([ex], feats, start, end, max_answer_length=5)["x"]
  assert (p.text, p.score) == ("two three four five six", 18.0)
  p = postprocess([ex], feats, start, end, max_answer_length=4)["x"]
  # Now the best is "two" with the best end among the four tokens from it.
  e = max((tok(w) for w in ("two", "three", "four", "five")), key=lambda i: end[0, i])
  assert (p.start_char, p.end_char) == (words["two"], int(feats.offsets[0, e, 1]))
  assert p.score == float(start[0, tok("two")]) + float(end[0, e])
  first_context = int(np.flatnonzero(feats.offsets[0, :, 0] >= 0)[0])
  for c in p.n_best:
    (i,) = np.flatnonzero(feats.offsets[0, :, 0] == c["start_char"])
    (j,) = np.flatnonzero(feats.offsets[0, :, 1] == c["end_char"])
    assert first_context <= i <= j < i + 4


def test_padding_logits_never_crowd_out_candidates(uncased):
  """The n_best are ranked among real tokens: whatever a window's padding scores (its width depends on the
  batch it ran in), the answer and its n-best list are the same."""
  context = "one two three four five six seven eight"
  ex = QAExample("x", "Which number?", context, [], True)
  feats = make_features([ex], uncased, max_seq_length=48, training=False)
  pad = feats.attention_mask[0] == 0
  assert pad.sum() >= 10
  start, end = noise(feats)
  (s,) = np.flatnonzero(feats.offsets[0, :, 0] == context.index("three"))
  start[0, s] = end[0, s + 1] = 5.0
  want = postprocess([ex], feats, start, end, n_best=3)["x"]
  assert want.text == "three four"
  start[0, pad] = end[0, pad] = 50.0  # ranked first, were padding ranked
  got = postprocess([ex], feats, start, end, n_best=3)["x"]
  assert (got.text, got.score, got.n_best) == (want.text, want.score, want.n_best)


def test_postprocess_checks_shapes(uncased):
  ex = QAExample("x", "q", "a b", [], True)
  feats = make_features([ex], uncased, max_seq_length=16, training=False)
  with pytest.raises(ValueError, match="logits have shapes"):
    postprocess([ex], feats, np.zeros((1, 8)), np.zeros((1, 16)))
  with pytest.raises(ValueError, match="refer to example 0 but only 0 examples"):
    postprocess([], feats, np.zeros((1, 16)), np.zeros((1, 16)))
