"""Every published number the paper tables in this folder compare against, with its source: one place to check.

REFERENCES[table][size] is a list of rows, one per (run, metric) of that table for a model size ("base",
"large"; the MLPerf checkpoint is "large"). A row:

  run      the table entry (task) whose runs it reads
  metric   the key in each run's reported evaluation (result.json "best"; the first evaluation set's metrics
           bare, the others as "<split>/<metric>", e.g. "validation_mismatched/accuracy", "test/f1")
  name     the row's label
  scale    measured value x scale = the paper's units (100: fractions shown as percentages)
  dev      the published number on the dev/validation set, or None where the source gives none
  test     the published number on the test set (GLUE: the evaluation server), or None
  source   where dev / test come from
  checked  how the number was checked here: "search" (read in a copy of the source via the project's search
           tools on 2026-12), or "recalled" (from the paper, not re-read here: check before quoting it)
  apart    reported apart from the main table (WNLI, as the BERT paper did)
  split    the set the metric is measured on ("dev", or "test" for CoNLL-2003's eng.testb): the gap is taken to
           the paper's number on that set

The BERT paper (Devlin et al. 2019, NAACL, arXiv:1810.04805) publishes GLUE in Table 1 as TEST server scores
only; dev numbers exist for a few tasks: Table 5 (BERT-base: MNLI-m, QNLI, MRPC, SST-2) and Table 6 (model size:
MNLI-m, MRPC, SST-2, "average Dev Set accuracy from 5 random restarts of fine-tuning"). A row without a dev
number shows the test number labelled as test, never as dev.
"""

_BERT = "Devlin et al. 2019 (arXiv:1810.04805)"
_T1 = f"{_BERT} Table 1 (GLUE test server)"
_T5 = f"{_BERT} Table 5 (BERT-base dev)"
_T6 = f"{_BERT} Table 6 (dev, mean of 5 restarts)"
_HF = (
  "https://github.com/huggingface/transformers/blob/main/examples/flax/text-classification/README.md "
  "(bert-base-cased, 5 runs on TPU v3-8, mean of 5 on dev)"
)
_MLPERF = "https://github.com/mlcommons/training/blob/master/language_model/tensorflow/bert/README.md"


def _row(
  run, metric, name, dev=None, test=None, source="", checked="recalled", scale=100.0, apart=False, split="dev"
):
  return {
    "run": run,
    "metric": metric,
    "name": name,
    "dev": dev,
    "test": test,
    "source": source,
    "checked": checked,
    "scale": scale,
    "apart": apart,
    "split": split,
  }


def _glue(size: str) -> list[dict]:
  """BERT's GLUE rows for one size: dev where Tables 5/6 give it, Table 1's test numbers beside."""
  base = size == "base"
  # Table 1's BERT-base row was read in a copy of the paper's numbers (the bert-base-uncased model card).
  t1_checked = "search" if base else "recalled"
  test = {
    "base": {
      "mnli_m": 84.6,
      "mnli_mm": 83.4,
      "qqp": 71.2,
      "qnli": 90.5,
      "sst2": 93.5,
      "cola": 52.1,
      "stsb": 85.8,
      "mrpc": 88.9,
      "rte": 66.4,
    },
    "large": {
      "mnli_m": 86.7,
      "mnli_mm": 85.9,
      "qqp": 72.1,
      "qnli": 92.7,
      "sst2": 94.9,
      "cola": 60.5,
      "stsb": 86.5,
      "mrpc": 89.3,
      "rte": 70.1,
    },
  }[size]
  dev6 = {
    "base": {"mnli": 84.4, "mrpc": 86.7, "sst2": 92.9},
    "large": {"mnli": 86.6, "mrpc": 87.8, "sst2": 93.7},
  }[size]
  return [
    _row("mnli", "accuracy", "MNLI-m acc", dev6["mnli"], test["mnli_m"], f"dev: {_T6}; test: {_T1}"),
    _row("mnli", "validation_mismatched/accuracy", "MNLI-mm acc", None, test["mnli_mm"], _T1, t1_checked),
    _row("qqp", "f1", "QQP F1", None, test["qqp"], _T1, t1_checked),
    _row("qqp", "accuracy", "QQP acc", None, None, "not published"),
    _row(
      "qnli",
      "accuracy",
      "QNLI acc",
      88.4 if base else None,
      test["qnli"],
      f"dev: {_T5}; test: {_T1}" if base else _T1,
      t1_checked,
    ),
    _row("sst2", "accuracy", "SST-2 acc", dev6["sst2"], test["sst2"], f"dev: {_T6}; test: {_T1}"),
    _row("cola", "matthews", "CoLA Matthews corr.", None, test["cola"], _T1, t1_checked),
    _row("stsb", "spearman", "STS-B Spearman", None, test["stsb"], _T1, t1_checked),
    _row("stsb", "pearson", "STS-B Pearson", None, None, "not published"),
    _row("mrpc", "accuracy", "MRPC acc", dev6["mrpc"], None, f"dev: {_T6}"),
    _row("mrpc", "f1", "MRPC F1", None, test["mrpc"], _T1, t1_checked),
    _row("rte", "accuracy", "RTE acc", None, test["rte"], _T1, t1_checked),
    # The paper left WNLI out ("we exclude the problematic WNLI set"); its GLUE submission predicted the majority
    # class, which scores 65.1 on the test server.
    _row(
      "wnli", "accuracy", "WNLI acc", None, None, f"{_BERT} footnote to section 4.1: excluded", apart=True
    ),
  ]


def _hf_flax() -> list[dict]:
  rows = [
    ("cola", "matthews", "CoLA Matthews corr.", 59.04),
    ("sst2", "accuracy", "SST-2 acc", 92.23),
    ("mrpc", "f1", "MRPC F1", 88.97),
    ("mrpc", "accuracy", "MRPC acc", 84.36),
    ("stsb", "pearson", "STS-B Pearson", 88.94),
    ("stsb", "spearman", "STS-B Spearman", 88.63),
    ("qqp", "accuracy", "QQP acc", 90.76),
    ("qqp", "f1", "QQP F1", 87.51),
    ("mnli", "accuracy", "MNLI-m acc", 83.80),
    ("qnli", "accuracy", "QNLI acc", 90.82),
    ("rte", "accuracy", "RTE acc", 64.76),
  ]
  out = [_row(run, metric, name, dev, None, _HF, "search") for run, metric, name, dev in rows]
  return out + [_row("wnli", "accuracy", "WNLI acc", 37.01, None, _HF, "search", apart=True)]


REFERENCES = {
  "bert_glue": {"base": _glue("base"), "large": _glue("large")},
  "squad_v1": {
    "base": [
      _row("squad1", "exact", "SQuAD v1.1 EM", 80.8, None, f"{_BERT} Table 2 (single, dev)", scale=1.0),
      _row("squad1", "f1", "SQuAD v1.1 F1", 88.5, None, f"{_BERT} Table 2 (single, dev)", scale=1.0),
    ],
    "large": [
      _row("squad1", "exact", "SQuAD v1.1 EM", 84.1, None, f"{_BERT} Table 2 (single, dev)", scale=1.0),
      _row("squad1", "f1", "SQuAD v1.1 F1", 90.9, None, f"{_BERT} Table 2 (single, dev)", scale=1.0),
    ],
  },
  # v2.0: the paper reports BERT-large only; the no-answer threshold is tuned on dev (eval/best_*).
  "squad_v2": {
    "large": [
      _row("squad2", "best_exact", "SQuAD v2.0 EM", 78.7, 80.0, f"{_BERT} Table 3 (single)", scale=1.0),
      _row("squad2", "best_f1", "SQuAD v2.0 F1", 81.9, 83.1, f"{_BERT} Table 3 (single)", scale=1.0),
    ],
  },
  "swag": {
    "base": [_row("swag", "accuracy", "SWAG acc", 81.6, None, f"{_BERT} Table 4")],
    "large": [_row("swag", "accuracy", "SWAG acc", 86.6, 86.3, f"{_BERT} Table 4")],
  },
  # The paper's fine-tuning approach (Table 7): dev and test F1 of the same runs (the "test" row is our
  # eng.testb evaluation, the paper's test set: no server, so its gap is to the paper's test F1).
  "conll2003": {
    "base": [
      _row("conll2003", "f1", "CoNLL-2003 dev F1", 96.4, None, f"{_BERT} Table 7 (fine-tuning)"),
      _row(
        "conll2003",
        "test/f1",
        "CoNLL-2003 test F1",
        None,
        92.4,
        f"{_BERT} Table 7 (fine-tuning)",
        split="test",
      ),
    ],
    "large": [
      _row("conll2003", "f1", "CoNLL-2003 dev F1", 96.6, None, f"{_BERT} Table 7 (fine-tuning)"),
      _row(
        "conll2003",
        "test/f1",
        "CoNLL-2003 test F1",
        None,
        92.8,
        f"{_BERT} Table 7 (fine-tuning)",
        split="test",
      ),
    ],
  },
  "hf_flax_glue": {"base": _hf_flax()},
  # MLPerf training BERT: the masked-LM accuracy of the initial checkpoint (model.ckpt-28252) on eval_10k, as the
  # brief of issue 22 gives it (not found in the stored copy of the README), and the target a submission must reach.
  "mlperf_bert": {
    "large": [
      _row(
        "mlm_eval",
        "masked_lm_accuracy",
        "masked-LM accuracy, initial checkpoint on eval_10k",
        0.34085,
        None,
        "MLPerf training BERT reference (initial checkpoint); not re-read here",
        "recalled",
        scale=1.0,
      ),
    ],
  },
}

# Shown under a table, beside the rows.
TARGETS = {
  "mlperf_bert": f"An MLPerf submission must reach masked-LM accuracy >= 0.720 on eval_10k ({_MLPERF})."
}
