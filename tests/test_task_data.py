"""Tests for bert_jax.data.tasks: reading task rows and BERT features for classification, tagging
and multiple choice.

References: expected rows are worked by hand from the file text written in each test (CSV quoting
rules, TSV split at tabs); token-level expectations come from the tokenizer's own public calls
(`tokenize`, `encode`, `__call__`) on each word or pair, never from the code under test; IOB
conversions are worked by hand with the reasoning in comments. The vocabularies are the real
uncased all-MiniLM-L6-v2 vocab (conftest's minilm_dir) and a small Chinese vocab written here.
"""

from __future__ import annotations

import numpy as np
import pytest

from bert_jax.data import tasks
from bert_jax.data.tasks import TaskDataError
from bert_jax.tokenization import SPECIAL_TOKENS, Tokenizer


@pytest.fixture(scope="module")
def tok(minilm_dir) -> Tokenizer:
  return Tokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def zh_tok(tmp_path_factory) -> Tokenizer:
  chars = "我爱北京天安门的首都在中国"
  path = tmp_path_factory.mktemp("zh") / "vocab.txt"
  path.write_text("".join(t + "\n" for t in [*SPECIAL_TOKENS, *chars, "."]), encoding="utf-8")
  return Tokenizer.from_vocab(path)


def write(tmp_path, name: str, text: str) -> str:
  path = tmp_path / name
  path.write_bytes(text.encode("utf-8"))
  return str(path)


def raises(match_all: list[str], fn, *args, **kwargs) -> str:
  """Calls fn expecting TaskDataError; checks that the message holds every string in match_all."""
  with pytest.raises(TaskDataError) as info:
    fn(*args, **kwargs)
  message = str(info.value)
  for part in match_all:
    assert part in message, (part, message)
  return message


# -------------------------------------------------------------------------------------------------
# Reading rows.


def test_read_csv_quoting_and_physical_lines(tmp_path):
  # Line 1 header; line 2 a field with a comma and doubled quotes; lines 3-4 one row whose quoted
  # field holds a newline; line 5 blank (skipped); line 6 a plain row.
  path = write(
    tmp_path, "d.csv", 'id,sentence,label\n1,"Hello, ""world""",pos\n2,"two\nlines",neg\n\n3,plain,pos\n'
  )
  assert tasks.read_rows(path) == [
    (2, {"id": "1", "sentence": 'Hello, "world"', "label": "pos"}),
    (3, {"id": "2", "sentence": "two\nlines", "label": "neg"}),
    (6, {"id": "3", "sentence": "plain", "label": "pos"}),
  ]


def test_read_tsv_keeps_quotes_literally(tmp_path):
  lines = ["sentence\tlabel", 'he said "hi\t1', '"quoted" start\t0', "it's \"\"two\"\"\t1"]
  path = write(tmp_path, "d.tsv", "\r\n".join(lines) + "\r\n")  # Windows line ends too
  header = lines[0].split("\t")
  expected = [(n, dict(zip(header, line.split("\t")))) for n, line in enumerate(lines[1:], 2)]
  assert tasks.read_rows(path) == expected
  assert expected[0][1]["sentence"] == 'he said "hi'


def test_read_tsv_without_header_given_columns(tmp_path):
  # GLUE's CoLA train.tsv: source, label, original label (blank), sentence; no header row.
  path = write(
    tmp_path, "cola.tsv", "gj04\t1\t\tOur friends won't buy this.\ngj04\t0\t*\tThey drank the pub.\n"
  )
  rows = tasks.read_rows(path, columns=["source", "label", "original", "sentence"])
  assert [(n, r["label"], r["sentence"]) for n, r in rows] == [
    (1, "1", "Our friends won't buy this."),
    (2, "0", "They drank the pub."),
  ]


def test_read_jsonl_and_json_lines(tmp_path):
  text = '{"text": "a", "label": 1}\n\n{"text": "b", "label": "x", "extra": [1, 2]}\n'
  for name in ("d.jsonl", "d.json"):
    assert tasks.read_rows(write(tmp_path, name, text)) == [
      (1, {"text": "a", "label": 1}),
      (3, {"text": "b", "label": "x", "extra": [1, 2]}),
    ]
  assert tasks.read_rows(write(tmp_path, "d.txt", text), format="jsonl")[0][0] == 1


def test_read_rows_errors(tmp_path):
  empty = write(tmp_path, "empty.csv", "")
  raises([empty, "empty", "header"], tasks.read_rows, empty)
  header_only = write(tmp_path, "h.tsv", "sentence\tlabel\n")
  raises([header_only, "no data rows", "sentence"], tasks.read_rows, header_only)
  ragged = write(tmp_path, "r.tsv", "a\tb\n1\t2\n1\t2\t3\n")
  raises([ragged, "line 3", "3 fields", "2 columns"], tasks.read_rows, ragged)
  twice = write(tmp_path, "t.csv", "text,text\nx,y\n")
  raises([twice, "line 1", "'text' twice"], tasks.read_rows, twice)
  bad_json = write(tmp_path, "b.jsonl", '{"a": 1}\n{"a": 2,}\n')
  raises([bad_json, "line 2", "not valid JSON"], tasks.read_rows, bad_json)
  not_object = write(tmp_path, "n.jsonl", '{"a": 1}\n[1, 2]\n')
  raises([not_object, "line 2", "list", "object"], tasks.read_rows, not_object)
  array = write(tmp_path, "a.json", '[{"a": 1}]')
  raises([array, "JSON array", "one object per line"], tasks.read_rows, array)
  no_rows = write(tmp_path, "blank.jsonl", "\n\n")
  raises([no_rows, "no rows"], tasks.read_rows, no_rows)
  latin1 = tmp_path / "l.csv"
  latin1.write_bytes(b"text,label\ncaf\xe9,1\n")
  raises([str(latin1), "line 2", "0xe9", "UTF-8"], tasks.read_rows, latin1)
  with pytest.raises(ValueError, match="suffix"):
    tasks.read_rows(write(tmp_path, "d.txt", "a\n"))
  with pytest.raises(FileNotFoundError, match="missing.csv"):
    tasks.read_rows(tmp_path / "missing.csv")


# -------------------------------------------------------------------------------------------------
# Classification and regression examples.

MNLI_TSV = (
  "index\tsentence1\tsentence2\tgold_label\n"
  "0\tThe cat sat.\tA cat is sitting.\tentailment\n"
  "1\tThe cat sat.\tNo animal sat.\tcontradiction\n"
  "2\tThe cat sat.\tIt is raining.\tneutral\n"
)
MNLI_LABELS = ["contradiction", "entailment", "neutral"]


def test_classification_label_mapping(tmp_path):
  path = write(tmp_path, "mnli.tsv", MNLI_TSV)
  rows = tasks.read_rows(path)
  assert tasks.infer_labels(rows, "gold_label") == MNLI_LABELS
  examples = tasks.classification_examples(
    rows, path, text_field="sentence1", pair_field="sentence2", label_field="gold_label", labels=MNLI_LABELS
  )
  assert [(e.text, e.pair, e.label, e.line) for e in examples] == [
    ("The cat sat.", "A cat is sitting.", 1, 2),
    ("The cat sat.", "No animal sat.", 0, 3),
    ("The cat sat.", "It is raining.", 2, 4),
  ]
  # A label order from a task config wins over sorting.
  ordered = tasks.classification_examples(
    rows, path, text_field="sentence1", pair_field="sentence2", label_field="gold_label",
    labels=["entailment", "neutral", "contradiction"],
  )  # fmt: skip
  assert [e.label for e in ordered] == [0, 2, 1]


def test_classification_errors(tmp_path):
  path = write(tmp_path, "mnli.tsv", MNLI_TSV.replace("\tneutral\n", "\tneutrl\n"))
  rows = tasks.read_rows(path)
  kwargs = {"text_field": "sentence1", "pair_field": "sentence2", "label_field": "gold_label"}
  raises(
    [path, "line 4", "'gold_label'", "'neutrl'", str(MNLI_LABELS)],
    tasks.classification_examples, rows, path, labels=MNLI_LABELS, **kwargs,
  )  # fmt: skip
  raises([path, "labels=", "infer_labels"], tasks.classification_examples, rows, path, labels=None, **kwargs)
  message = raises(
    [path, "line 2", "'premise'", "no such column"],
    tasks.classification_examples, rows, path, text_field="premise", labels=MNLI_LABELS,
  )  # fmt: skip
  assert "['index', 'sentence1', 'sentence2', 'gold_label']" in message  # the columns the row has
  empty = write(tmp_path, "e.tsv", "sentence\tlabel\nfine\t1\n  \t0\n")
  raises(
    [empty, "line 3", "'sentence'", "empty"],
    tasks.classification_examples, tasks.read_rows(empty), empty, text_field="sentence", labels=["0", "1"],
  )  # fmt: skip
  json_path = write(tmp_path, "j.jsonl", '{"text": "ok", "label": 1}\n{"text": 7, "label": 1}\n')
  raises(
    [json_path, "line 2", "'text'", "int 7", "expected text"],
    tasks.classification_examples, tasks.read_rows(json_path), json_path, text_field="text", labels=["0", "1"],
  )  # fmt: skip


def test_regression_labels(tmp_path):
  path = write(tmp_path, "stsb.tsv", "s1\ts2\tscore\na\tb\t4.25\nc\td\t-1\ne\tf\t0\n")
  examples = tasks.classification_examples(
    tasks.read_rows(path), path, text_field="s1", pair_field="s2", label_field="score", regression=True
  )
  # "-1" written in a file is a score like any other; only TFDS's numeric -1 means "no label".
  assert [e.label for e in examples] == [4.25, -1.0, 0.0]
  assert all(isinstance(e.label, float) for e in examples)
  bad = write(tmp_path, "bad.tsv", "s1\tscore\na\t4.2\nb\thigh\n")
  raises(
    [bad, "line 3", "'score'", "'high'", "float"],
    tasks.classification_examples, tasks.read_rows(bad), bad, text_field="s1", label_field="score", regression=True,
  )  # fmt: skip


def test_tfds_style_labels_index_and_missing():
  # TFDS stores ClassLabel values as ints indexing the names, and -1 in test splits.
  rows = [
    (1, {"sentence": "good", "label": 1}),
    (2, {"sentence": "bad", "label": 0}),
    (3, {"sentence": "?", "label": -1}),
  ]
  examples = tasks.classification_examples(
    rows, "tfds:glue/sst2/test", text_field="sentence", labels=["negative", "positive"]
  )
  assert [e.label for e in examples] == [1, 0, None]
  raises(
    ["tfds:glue/sst2/test", "record index 0", "'label'", "label 5"],
    tasks.classification_examples, [(1, {"sentence": "x", "label": 5})], "tfds:glue/sst2/test",
    text_field="sentence", labels=["negative", "positive"],
  )  # fmt: skip
  # JSON numbers name labels by their decimal spelling, and infer_labels sorts them numerically.
  stars = [(n, {"text": "t", "stars": s}) for n, s in enumerate([10, 2, 1, 2], 1)]
  labels = tasks.infer_labels(stars, "stars")
  assert labels == ["1", "2", "10"]
  assert [
    e.label
    for e in tasks.classification_examples(stars, "s", text_field="text", label_field="stars", labels=labels)
  ] == [2, 1, 0, 1]


# -------------------------------------------------------------------------------------------------
# Classification features.


def test_classification_features_single_texts(tok):
  texts = ["A short one.", "Quite a lot longer sentence that the limit of twelve tokens will cut."]
  examples = [tasks.TextExample(t, None, i, line=i + 2) for i, t in enumerate(texts)]
  features = tasks.classification_features(examples, tok, 12)
  expected = tok(texts, max_length=12, padding="max_length")
  for key in ("input_ids", "attention_mask", "token_type_ids"):
    np.testing.assert_array_equal(features[key], expected[key])
    assert features[key].dtype == np.int32 and features[key].shape == (2, 12)
  np.testing.assert_array_equal(features["labels"], [0, 1])
  assert features["labels"].dtype == np.int32
  assert features["truncated"] == sum(len(tok.encode(t)["input_ids"]) > 12 for t in texts) == 1


def test_classification_features_pairs_longest_first(tok):
  long = "the cat sat on the mat and the dog sat on the rug all day long"  # 15 one-piece words
  pairs = [(long, "a red hat"), ("a red hat", long), (long, long), ("one two", "three four")]
  assert all(len(tok.tokenize(w)) == 1 for w in f"{long} a red hat one two three four".split())
  examples = [tasks.TextExample(a, b, None, line=n) for n, (a, b) in enumerate(pairs, 2)]
  features = tasks.classification_features(examples, tok, 12)
  for row, (a, b) in enumerate(pairs):
    enc = tok.encode(a, b, max_length=12)  # the tokenizer's own pair truncation
    n = len(enc["input_ids"])
    assert features["input_ids"][row, :n].tolist() == enc["input_ids"]
    assert features["token_type_ids"][row, :n].tolist() == enc["token_type_ids"]
    assert features["attention_mask"][row].tolist() == [1] * n + [0] * (12 - n)
    assert (features["input_ids"][row, n:] == tok.pad_id).all()
  # Worked by hand: 12 - 3 specials leave 9 tokens. A short second segment (3) stays whole and the
  # long first gets 6; reversed likewise; two long ones split 5/4 (the first keeps the odd one).
  segment_lengths = [
    (int((t == 0).sum()) - 2, int((t == 1).sum()) - 1)
    for t, m in zip(features["token_type_ids"], features["attention_mask"])
    for t in [t[m == 1]]
  ]
  assert segment_lengths == [(6, 3), (3, 6), (5, 4), (2, 2)]
  assert features["truncated"] == 3
  np.testing.assert_array_equal(features["labels"], [-1, -1, -1, -1])


def test_classification_features_regression_and_mixed_pairs(tok):
  examples = [tasks.TextExample("a", "b", 4.25, 2), tasks.TextExample("c", "d", None, 3)]
  labels = tasks.classification_features(examples, tok, 8)["labels"]
  assert labels.dtype == np.float32 and labels[0] == 4.25 and np.isnan(labels[1])
  mixed = [tasks.TextExample("a", "b", 0, 2, "f.tsv"), tasks.TextExample("c", None, 0, 3, "f.tsv")]
  raises(["f.tsv line 3", "lacks a pair"], tasks.classification_features, mixed, tok, 8)


# -------------------------------------------------------------------------------------------------
# Tagging: reading.


def test_iob1_to_iob2_by_hand():
  # IOB1: chunks start with I-; B-X only where a chunk directly follows another X chunk.
  iob1 = ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-LOC", "I-ORG", "I-PER", "O", "B-MISC"]
  # I-PER at the start opens a chunk -> B-PER; I-LOC after O -> B-LOC; B-LOC stays (it already
  # opens the second LOC chunk) and the I-LOC after it continues that chunk; I-ORG after a LOC and
  # I-PER after an ORG each open a chunk of a new type -> B-.
  assert tasks.iob1_to_iob2(iob1) == [
    "B-PER",
    "I-PER",
    "O",
    "B-LOC",
    "B-LOC",
    "I-LOC",
    "B-ORG",
    "B-PER",
    "O",
    "B-MISC",
  ]
  assert tasks.iob1_to_iob2([]) == []


CONLL_IOB1 = """-DOCSTART- -X- -X- O

EU NNP B-NP I-ORG
rejects VBZ B-VP O
German JJ B-NP I-MISC
call NN I-NP O
. . O O


Peter NNP B-NP I-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O
BRUSSELS NNP B-NP I-LOC
"""


def test_read_conll_iob1(tmp_path):
  path = write(tmp_path, "eng.train", CONLL_IOB1)
  examples = tasks.read_conll(path, scheme="iob1")
  assert [(e.tokens, e.tags, e.line) for e in examples] == [
    (["EU", "rejects", "German", "call", "."], ["B-ORG", "O", "B-MISC", "O", "O"], 3),
    (["Peter", "Blackburn"], ["B-PER", "I-PER"], 10),
    (["BRUSSELS"], ["B-LOC"], 14),
  ]
  pos = tasks.read_conll(path, tag_column=1, scheme="none")
  assert pos[0].tags == ["NNP", "VBZ", "JJ", "NN", "."]
  assert tasks.read_conll(path, tag_column=None)[1].tags is None
  # Read as IOB2, the first I-ORG (line 3) opens a chunk: the file is IOB1 and says so.
  raises([path, "line 3", "'I-ORG'", "IOB1", "scheme='iob1'"], tasks.read_conll, path, scheme="iob2")
  raises([path, "line 3", "'NNP'", "scheme='none'"], tasks.read_conll, path, tag_column=1, scheme="iob2")


def test_read_conll_errors(tmp_path):
  short = write(tmp_path, "short.conll", "EU B-ORG\nrejects\n")
  raises([short, "line 2", "1 column(s)", "tag in column -1"], tasks.read_conll, short)
  tab = write(tmp_path, "tab.conll", "EU\tB-ORG\nrejects\tO\n")
  assert tasks.read_conll(tab)[0].tags == ["B-ORG", "O"]
  empty = write(tmp_path, "empty.conll", "-DOCSTART- O\n\n\n")
  raises([empty, "no sentences"], tasks.read_conll, empty)


def test_tagging_examples_from_jsonl(tmp_path):
  path = write(
    tmp_path,
    "ner.jsonl",
    '{"tokens": ["John", "lives", "here"], "tags": ["B-PER", "O", "O"]}\n'
    '{"tokens": ["Paris"], "tags": ["B-LOC"]}\n',
  )
  examples = tasks.tagging_examples(tasks.read_rows(path), path)
  assert [(e.tokens, e.tags, e.line) for e in examples] == [
    (["John", "lives", "here"], ["B-PER", "O", "O"], 1),
    (["Paris"], ["B-LOC"], 2),
  ]
  assert tasks.tag_set(examples) == ["O", "B-LOC", "B-PER"]
  mismatch = write(
    tmp_path, "m.jsonl", '{"tokens": ["a"], "tags": ["O"]}\n{"tokens": ["a", "b"], "tags": ["O"]}\n'
  )
  raises(
    [mismatch, "line 2", "'tags'", "1 tags for 2 words"],
    tasks.tagging_examples,
    tasks.read_rows(mismatch),
    mismatch,
  )
  # TFDS conll2003 stores tag ids; tag_names turns them into tags.
  rows = [(1, {"tokens": ["EU", "rejects"], "ner_tags": [3, 0]})]
  names = ["O", "B-PER", "I-PER", "B-ORG"]
  got = tasks.tagging_examples(rows, "tfds:conll2003/train", tags_field="ner_tags", tag_names=names)
  assert got[0].tags == ["B-ORG", "O"]
  raises(
    ["tfds:conll2003/train", "record index 0", "'ner_tags'", "tag_names"],
    tasks.tagging_examples, rows, "tfds:conll2003/train", tags_field="ner_tags",
  )  # fmt: skip


# -------------------------------------------------------------------------------------------------
# Tagging: features.


def first_pieces(tok: Tokenizer, words: list[str]) -> tuple[list[int], list[int]]:
  """Positions of each word's first sub-token after [CLS], and all ids, from tokenize() per word."""
  starts, ids, position = [], [tok.cls_id], 1
  for word in words:
    pieces = tok.tokenize(word) or ["[UNK]"]
    starts.append(position)
    ids += tok.convert_tokens_to_ids(pieces)
    position += len(pieces)
  return starts, ids + [tok.sep_id]


def test_tagging_labels_on_first_subtokens(tok):
  words = ["Housing", "is", "unaffordable", "in", "Zürich", "."]
  tags = ["O", "O", "O", "O", "B-LOC", "O"]
  assert tok.tokenize("unaffordable") == ["una", "##ff", "##ord", "##able"]  # several pieces
  label_to_id = {"O": 0, "B-LOC": 1}
  features = tasks.tagging_features([tasks.TaggedExample(words, tags, 1)], tok, 24, label_to_id)
  starts, ids = first_pieces(tok, words)
  n = len(ids)
  assert features["input_ids"][0, :n].tolist() == ids
  assert (features["input_ids"][0, n:] == tok.pad_id).all()
  assert features["attention_mask"][0].tolist() == [1] * n + [0] * (24 - n)
  assert not features["token_type_ids"].any()
  expected_labels = np.full(24, -100)
  expected_labels[starts] = [label_to_id[t] for t in tags]
  np.testing.assert_array_equal(features["labels"][0], expected_labels)
  expected_index = np.full(24, -1)
  expected_index[starts] = np.arange(len(words))
  np.testing.assert_array_equal(features["word_index"][0], expected_index)
  assert features["truncated_words"] == 0
  # "unaffordable" is word 2: its first piece carries the tag, its other three pieces are skipped.
  assert features["labels"][0, starts[2] : starts[2] + 4].tolist() == [0, -100, -100, -100]


def test_tagging_round_trip_and_truncation(tok, tmp_path):
  examples = tasks.read_conll(write(tmp_path, "eng.train", CONLL_IOB1), scheme="iob1")
  examples.append(
    tasks.TaggedExample(["Mr", "\x00", "Unaffordable", "Smith"], ["O", "O", "B-PER", "I-PER"], 99)
  )
  labels = tasks.tag_set(examples)
  label_to_id = {t: i for i, t in enumerate(labels)}
  features = tasks.tagging_features(examples, tok, 16, label_to_id)
  assert features["truncated_words"] == 0
  # "\x00" has no wordpiece: it reads as one [UNK] and keeps its position and tag.
  starts, ids = first_pieces(tok, examples[-1].tokens)
  assert tok.tokenize("\x00") == [] and ids[starts[1]] == tok.unk_id
  assert features["input_ids"][-1, : len(ids)].tolist() == ids
  # Predictions equal to the gold ids at first sub-tokens, noise elsewhere: decoding gives the gold tags.
  rng = np.random.default_rng(0)
  predictions = np.where(
    features["labels"] >= 0, features["labels"], rng.integers(0, len(labels), (len(examples), 16))
  )
  decoded = tasks.decode_tags(predictions, features["word_index"], [len(e.tokens) for e in examples], labels)
  assert decoded == [e.tags for e in examples]

  # With room for 5 tokens, "Unaffordable" (4 pieces) does not fit after "Mr", "\x00": it and "Smith"
  # are left out whole (no stray pieces), counted, and decoded as "O".
  assert len(tok.tokenize("Unaffordable")) == 4
  cut = tasks.tagging_features(examples[-1:], tok, 5, label_to_id)
  assert cut["input_ids"][0].tolist() == [
    tok.cls_id,
    *tok.convert_tokens_to_ids(["mr", "[UNK]"]),
    tok.sep_id,
    tok.pad_id,
  ]
  assert cut["truncated_words"] == 2
  decoded = tasks.decode_tags(cut["labels"].clip(0), cut["word_index"], [4], dict(enumerate(labels)))
  assert decoded == [["O", "O", "O", "O"]]
  # Logits (N, L, C) decode through their argmax.
  logits = np.eye(len(labels))[predictions]
  assert tasks.decode_tags(logits, features["word_index"], [len(e.tokens) for e in examples], labels) == [
    e.tags for e in examples
  ]


def test_tagging_unknown_tag_names_source_and_line(tok):
  example = tasks.TaggedExample(["EU"], ["B-ORG"], 7, "dev.conll")
  raises(["dev.conll line 7", "'B-ORG'", "tag set"], tasks.tagging_features, [example], tok, 8, {"O": 0})


def test_tagging_chinese_characters_one_word_each(zh_tok):
  words = list("我爱北京天安门")
  tags = ["O", "O", "B-LOC", "I-LOC", "B-LOC", "I-LOC", "I-LOC"]
  label_to_id = {"O": 0, "B-LOC": 1, "I-LOC": 2}
  # A two-character word "中国" splits into its ideographs: only the first carries the tag.
  # "猫" is not in the small vocab: [UNK], still one position.
  examples = [
    tasks.TaggedExample(words, tags, 1),
    tasks.TaggedExample(["在", "中国", "猫"], ["O", "B-LOC", "O"], 3),
  ]
  features = tasks.tagging_features(examples, zh_tok, 12, label_to_id)
  vocab = {t: i for i, t in enumerate(zh_tok.vocab)}
  assert features["input_ids"][0, :9].tolist() == [zh_tok.cls_id, *(vocab[c] for c in words), zh_tok.sep_id]
  assert features["word_index"][0].tolist() == [-1, 0, 1, 2, 3, 4, 5, 6, -1, -1, -1, -1]
  assert features["labels"][0, 1:8].tolist() == [label_to_id[t] for t in tags]
  second = [zh_tok.cls_id, vocab["在"], vocab["中"], vocab["国"], zh_tok.unk_id, zh_tok.sep_id]
  assert features["input_ids"][1, :6].tolist() == second
  assert features["word_index"][1, :6].tolist() == [-1, 0, 1, -1, 2, -1]
  assert features["labels"][1, :6].tolist() == [-100, 0, 1, -100, 0, -100]
  decoded = tasks.decode_tags(
    features["labels"].clip(0), features["word_index"], [7, 3], ["O", "B-LOC", "I-LOC"]
  )
  assert decoded == [tags, ["O", "B-LOC", "O"]]


# -------------------------------------------------------------------------------------------------
# Multiple choice.

# SWAG's own header (its first column is unnamed) and two rows in its style.
SWAG_CSV = (
  ",video-id,fold-ind,startphrase,sent1,sent2,gold-source,ending0,ending1,ending2,ending3,label\n"
  '0,anetv_1,5,"x",Members of the procession walk down the street holding small brass instruments.,'
  "A drum line,gold,passes by walking down the street playing their instruments.,"
  "has heard approaching them.,arrives and they're outside dancing and asleep.,turns the lead singer watches the "
  "performance.,0\n"
  "1,lsmdc_2,7,y,The man sits on the roof.,He,gold,starts to take off the old shingles.,"
  "is using wrap to wrap a pair of skis.,is ripping level tiles off.,"
  "is holding a rubik cube.,3\n"
)


def test_swag_features_decode_to_context_and_endings(tok, tmp_path):
  path = write(tmp_path, "train.csv", SWAG_CSV)
  rows = tasks.read_rows(path)
  examples = tasks.swag_examples(rows, path)
  assert [(e.context, e.start, e.label, e.line) for e in examples] == [
    ("Members of the procession walk down the street holding small brass instruments.", "A drum line", 0, 2),
    ("The man sits on the roof.", "He", 3, 3),
  ]
  features = tasks.choice_features(examples, tok, 64)
  for key in ("input_ids", "attention_mask", "token_type_ids"):
    assert features[key].shape == (2, 4, 64) and features[key].dtype == np.int32
  np.testing.assert_array_equal(features["labels"], [0, 3])
  for n, (_, row) in enumerate(rows):
    for c in range(4):
      ids, types = features["input_ids"][n, c], features["token_type_ids"][n, c]
      real = features["attention_mask"][n, c] == 1
      assert tok.decode(ids[real & (types == 0)]) == row["sent1"].lower()
      # The reference's decode glues "they ' re" back into "they're", so lower-case text returns.
      assert tok.decode(ids[real & (types == 1)]) == f"{row['sent2']} {row[f'ending{c}']}".lower()
      assert ids[0] == tok.cls_id and (ids[~real] == tok.pad_id).all()


def test_choice_examples_generic_and_errors(tok, tmp_path):
  path = write(
    tmp_path,
    "mc.jsonl",
    '{"question": "Sky?", "choices": ["blue", "green", "red"], "answer": 0}\n'
    '{"question": "Grass?", "choices": ["blue", "green", "red"], "answer": "1"}\n',
  )
  rows = tasks.read_rows(path)
  examples = tasks.choice_examples(
    rows, path, context_field="question", endings_field="choices", label_field="answer"
  )
  assert [(e.context, e.endings, e.label) for e in examples] == [
    ("Sky?", ["blue", "green", "red"], 0),
    ("Grass?", ["blue", "green", "red"], 1),
  ]
  features = tasks.choice_features(examples, tok, 8)
  assert features["input_ids"].shape == (2, 3, 8)
  enc = tok.encode("Grass?", "red", max_length=8)
  assert features["input_ids"][1, 2, : len(enc["input_ids"])].tolist() == enc["input_ids"]

  bad_label = write(tmp_path, "bl.jsonl", '{"question": "q", "choices": ["a", "b"], "answer": 2}\n')
  raises(
    [bad_label, "line 1", "'answer'", "label 2", "0..1"],
    tasks.choice_examples, tasks.read_rows(bad_label), bad_label, context_field="question",
    endings_field="choices", label_field="answer",
  )  # fmt: skip
  no_ending = SWAG_CSV.replace(",ending3,", ",ending_3,")
  raises(
    ["s.csv", "line 2", "'ending3'", "no such column"],
    tasks.swag_examples,
    tasks.read_rows(write(tmp_path, "s.csv", no_ending)),
    "s.csv",
  )
  uneven = [
    tasks.ChoiceExample("q", ["a", "b"], 0, 1, source="u.jsonl"),
    tasks.ChoiceExample("q", ["a", "b", "c"], 0, 2, source="u.jsonl"),
  ]
  raises(["u.jsonl line 2", "3 endings", "u.jsonl line 1"], tasks.choice_features, uneven, tok, 8)


# -------------------------------------------------------------------------------------------------
# TFDS (a small dataset written here in array_record, read back TensorFlow-free).


def test_decode_tfds_record_shapes():
  record = {
    "sentence": np.bytes_(b"h\xc3\xa9llo"),
    "label": np.int64(1),
    "score": np.float32(0.5),
    "tokens": np.array([b"EU", b"rejects"], dtype=object),
    "ner_tags": np.array([3, 0], dtype=np.int64),
    "answers": {"text": [b"a"], "answer_start": np.array([4], dtype=np.int32)},
  }
  decoded = tasks.decode_tfds_record(record)
  assert decoded == {
    "sentence": "héllo",
    "label": 1,
    "score": 0.5,
    "tokens": ["EU", "rejects"],
    "ner_tags": [3, 0],
    "answers": {"text": ["a"], "answer_start": [4]},
  }
  assert type(decoded["label"]) is int and type(decoded["ner_tags"][0]) is int
  raises(
    ["tfds:x/train", "record index 2", "'sentence'", "UTF-8"],
    tasks.decode_tfds_record,
    {"sentence": b"\xff"},
    "tfds:x/train",
    2,
  )


def test_tfds_rows_and_label_names(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  from bert_jax.data import records

  features = {
    "sentence": tfds.features.Text(),
    "label": tfds.features.ClassLabel(names=["negative", "positive"]),
    "tokens": tfds.features.Sequence(tfds.features.Text()),
    "ner_tags": tfds.features.Sequence(tfds.features.ClassLabel(names=["O", "B-PER", "I-PER"])),
  }

  def examples():
    yield {"sentence": "héllo world", "label": 1, "tokens": ["John", "Smith"], "ner_tags": [1, 2]}
    yield {"sentence": "unknown", "label": -1, "tokens": ["it"], "ner_tags": [0]}

  records.write_array_record_dataset(tmp_path, "tiny_task", features, {"train": examples})
  rows = tasks.tfds_rows("tiny_task", "train", tmp_path)
  assert rows == [
    (1, {"sentence": "héllo world", "label": 1, "tokens": ["John", "Smith"], "ner_tags": [1, 2]}),
    (2, {"sentence": "unknown", "label": -1, "tokens": ["it"], "ner_tags": [0]}),
  ]
  labels = tasks.tfds_label_names("tiny_task", tmp_path, "label")
  assert labels == ["negative", "positive"]
  tag_names = tasks.tfds_label_names("tiny_task", tmp_path, "ner_tags")
  assert tag_names == ["O", "B-PER", "I-PER"]
  assert tasks.tfds_label_names("tiny_task", tmp_path, "sentence") is None
  raises(["'nope'", "sentence"], tasks.tfds_label_names, "tiny_task", tmp_path, "nope")

  source = "tfds:tiny_task/train"
  texts = tasks.classification_examples(rows, source, text_field="sentence", labels=labels)
  assert [(e.text, e.label) for e in texts] == [("héllo world", 1), ("unknown", None)]
  tagged = tasks.tagging_examples(rows, source, tags_field="ner_tags", tag_names=tag_names, scheme="iob2")
  assert [e.tags for e in tagged] == [["B-PER", "I-PER"], ["O"]]
  with pytest.raises(FileNotFoundError, match="array_record"):
    tasks.tfds_rows("tiny_task", "validation", tmp_path)
