"""Fine-tuning data for tasks other than SQuAD: the one place to import the task readers and features from.

Three task families, as the BERT paper fine-tunes them, each in its own module:
- classification.py: sequence classification and regression (GLUE, sentiment): one text or a pair,
  "[CLS] A [SEP] B [SEP]", pairs cut longest-first; the model reads [CLS];
- tagging.py: token tagging (CoNLL NER, POS): pre-split words, each through WordPiece on its own; a
  word's tag sits on its first sub-token and the loss skips the rest (the paper's NER setup);
- multiple_choice.py: multiple choice (SWAG): one "[CLS] context [SEP] ending [SEP]" row per choice,
  scored jointly.

What they share: task_rows.py reads rows (`read_rows`: CSV, TSV and JSON lines; `tfds_rows`: a
prepared TFDS dataset, array_record, TensorFlow-free) and their fields; task_encoding.py pads encoded
texts. `read_conll` (tagging.py) reads CoNLL column files. A row is `(line, dict)`: `line` is the
1-based line where the row starts (CSV/TSV: the header is line 1) or, for TFDS, the record index + 1.
The `source` string names the file, or "tfds:NAME/SPLIT", in which case messages say "record index N"
instead of "line N".

Every problem in the data raises TaskDataError naming the source, the line, the field, the value
found and what was expected.

Conventions in the features: every array is int32 except regression labels (float32). Unlabelled
examples (label None: TFDS test splits write -1) get label -1 (float NaN for regression);
positions the tagging loss must skip get IGNORE (-100). The feature dicts also carry counts of what
max_seq_length cut, as plain ints the caller pops before batching: `truncated` (examples) for
classification, `truncated_words` for tagging. Multiple choice logs its count instead.

The family modules import only task_rows and task_encoding, never this module, so importing any of
them first cannot meet a half-initialized tasks.
"""

from __future__ import annotations

from bert_jax.data.classification import TextExample, classification_examples, classification_features
from bert_jax.data.multiple_choice import (
  SWAG_ENDINGS,
  ChoiceExample,
  choice_examples,
  choice_features,
  swag_examples,
)
from bert_jax.data.tagging import (
  check_documents,
  IGNORE,
  SCHEMES,
  TaggedExample,
  decode_tags,
  iob1_to_iob2,
  read_conll,
  tag_set,
  tagging_examples,
  tagging_features,
)
from bert_jax.data.task_rows import (
  FORMATS,
  MISSING_LABEL,
  TFDS_PREFIX,
  Row,
  TaskDataError,
  check_tfds_splits,
  class_label_names,
  decode_tfds_record,
  decode_tfds_value,
  infer_labels,
  read_rows,
  tfds_label_names,
  tfds_rows,
)

__all__ = [
  "FORMATS",
  "IGNORE",
  "MISSING_LABEL",
  "SCHEMES",
  "SWAG_ENDINGS",
  "TFDS_PREFIX",
  "ChoiceExample",
  "Row",
  "TaggedExample",
  "TaskDataError",
  "TextExample",
  "check_documents",
  "check_tfds_splits",
  "choice_examples",
  "choice_features",
  "class_label_names",
  "classification_examples",
  "classification_features",
  "decode_tags",
  "decode_tfds_record",
  "decode_tfds_value",
  "infer_labels",
  "iob1_to_iob2",
  "read_conll",
  "read_rows",
  "swag_examples",
  "tag_set",
  "tagging_examples",
  "tagging_features",
  "tfds_label_names",
  "tfds_rows",
]
