"""Fine-tuning runs: one table of tasks with the BERT paper's settings.

    python -m bert_jax.main --config=configs/finetune.py:task=sst2 --workdir=runs/sst2 \
        --config.init_from=PATH/bert-base-uncased
    python -m bert_jax.main --config=configs/finetune.py:task=rte,seeds=5,lr_grid --workdir=runs/rte \
        --config.init_from=... --config.data.tfds_data_dir=~/tensorflow_datasets
    python -m bert_jax.main --config=configs/finetune.py:task=classification --workdir=runs/mine \
        --config.init_from=... --config.data.train=train.csv --config.data.validation=dev.csv \
        --config.data.text_field=review --config.data.label_field=stars

Arguments (comma-separated key=value):
  task      a name in TASKS below, or classification | pair | regression | tagging | span | choice for
            local files (fields named with --config.data.*)                      (default sst2)
  seeds     run this many seeds (0, 1, ...) and report mean ± std                (default 1)
  lr_grid   also sweep the paper's learning rates {5e-5, 4e-5, 3e-5, 2e-5}
  runlocal  shrink for a laptop CPU (few examples, one epoch)

The GLUE, SQuAD and CoNLL entries read TFDS datasets the user has prepared (tfds build glue/sst2 ...,
array_record format; see docs/finetuning.md), or the benchmark's own files (--config.data.task_dir=glue_data for
GLUE's TSV folders, SQuAD's JSON, CoNLL-2003's column files, SWAG's CSVs); every task can read local files instead
(--config.data.tfds_name= --config.data.train=... --config.data.validation=...).
"""

import ml_collections

from configs import common

# BERT paper, section 4 and appendix A.3: batch 32, 3 epochs, lr chosen from {5e-5, 4e-5, 3e-5, 2e-5},
# warmup over the first 10% of steps, dropout 0.1. SQuAD v1.1: 3 epochs at 5e-5, batch 32; v2.0: 2 epochs
# at 5e-5, batch 48; SWAG: 3 epochs at 2e-5, batch 16. Metrics are each benchmark's official one.
PAPER_LEARNING_RATES = (5e-5, 4e-5, 3e-5, 2e-5)
# The paper's tasks train with BERT's own optimizer and schedule (optimizer.name=bert_adamw, see bert_jax/optim.py);
# the local-file kinds (optimizer="adamw") keep optax's bias-corrected AdamW with the linear schedule.
_PAPER = dict(optimizer="bert_adamw")
_GLUE = dict(
  _PAPER, kind="classification", metric="accuracy", lr=2e-5, epochs=3, batch_size=32, max_seq_length=128
)
TASKS = {
  "cola": dict(_GLUE, tfds="glue/cola", text="sentence", metric="matthews", best="eval/matthews"),
  "sst2": dict(_GLUE, tfds="glue/sst2", text="sentence"),
  "mrpc": dict(
    _GLUE, tfds="glue/mrpc", text="sentence1", pair="sentence2", metric="accuracy_f1", best="eval/f1"
  ),
  "qqp": dict(
    _GLUE, tfds="glue/qqp", text="question1", pair="question2", metric="accuracy_f1", best="eval/f1"
  ),
  "stsb": dict(
    _GLUE,
    kind="regression",
    tfds="glue/stsb",
    text="sentence1",
    pair="sentence2",
    metric="pearson_spearman",
    best="eval/pearson",
  ),
  "mnli": dict(
    _GLUE,
    tfds="glue/mnli",
    text="premise",
    pair="hypothesis",
    eval_splits=("validation_matched", "validation_mismatched"),
    # The reference's ids (run_classifier.py's MnliProcessor); TFDS's ClassLabel order differs and is matched by name.
    labels=("contradiction", "entailment", "neutral"),
  ),
  "qnli": dict(_GLUE, tfds="glue/qnli", text="question", pair="sentence"),
  "rte": dict(_GLUE, tfds="glue/rte", text="sentence1", pair="sentence2"),
  "wnli": dict(_GLUE, tfds="glue/wnli", text="sentence1", pair="sentence2"),
  "squad1": dict(
    _PAPER,
    kind="span",
    tfds="squad/v1.1",
    metric="squad",
    best="eval/f1",
    lr=5e-5,
    epochs=3,
    batch_size=32,
    max_seq_length=384,
  ),
  "squad2": dict(
    _PAPER,
    kind="span",
    tfds="squad/v2.0",
    metric="squad",
    best="eval/best_f1",
    lr=5e-5,
    epochs=2,
    batch_size=48,
    max_seq_length=384,
    version_2=True,
  ),
  # TFDS's conll2003 tags are already IOB2; the original CoNLL files are IOB1 (--config.data.tag_scheme=iob1).
  "conll2003": dict(
    _PAPER,
    kind="tagging",
    tfds="conll2003",
    # The builder's splits: selection on dev, test reported beside it (the paper's two columns).
    eval_splits=("dev", "test"),
    # The paper's setup (section 5.3): each sentence with as much of its document around it as fits. It needs
    # the -DOCSTART- boundaries of the original CoNLL files (TFDS's copy drops them): see docs/finetuning.md.
    document_context=True,
    tokens="tokens",
    tags="ner",
    tag_scheme="iob2",
    metric="entity_f1",
    best="eval/f1",
    lr=5e-5,
    epochs=3,
    batch_size=32,
    max_seq_length=128,
  ),
  "swag": dict(
    _PAPER,
    kind="choice",
    format="swag",
    metric="accuracy",
    lr=2e-5,
    epochs=3,
    batch_size=16,
    max_seq_length=128,
  ),
  # Local-file tasks: name the files and fields with --config.data.*.
  "classification": dict(_GLUE, optimizer="adamw", text="text"),
  "pair": dict(_GLUE, optimizer="adamw", text="text", pair="pair"),
  "regression": dict(
    _GLUE, optimizer="adamw", kind="regression", text="text", metric="pearson_spearman", best="eval/pearson"
  ),
  "tagging": dict(
    optimizer="adamw",
    kind="tagging",
    metric="entity_f1",
    best="eval/f1",
    lr=5e-5,
    epochs=3,
    batch_size=32,
    max_seq_length=128,
  ),
  "span": dict(
    optimizer="adamw",
    kind="span",
    metric="squad",
    best="eval/f1",
    lr=5e-5,
    epochs=3,
    batch_size=32,
    max_seq_length=384,
  ),
  "choice": dict(
    optimizer="adamw", kind="choice", metric="accuracy", lr=2e-5, epochs=3, batch_size=16, max_seq_length=128
  ),
}


def get_config(arg=None):
  arg = common.parse_arg(arg, task="sst2", seeds=1, lr_grid=False, runlocal=False)
  if arg.task not in TASKS:
    raise ValueError(f"unknown fine-tuning task {arg.task!r}; known: {sorted(TASKS)}")
  task = TASKS[arg.task]
  config = ml_collections.ConfigDict()
  config.job = "finetune"
  config.task = arg.task
  config.kind = task["kind"]
  config.metric = task["metric"]
  config.init_from = ""  # HuggingFace / Google / bert_jax folder, or a bert_jax pretraining workdir
  config.seed = 0
  # Lists are comma-separated strings, so that --config.seeds=0,1,2 works on the command line.
  config.seeds = ",".join(str(s) for s in range(arg.seeds)) if arg.seeds > 1 else ""
  config.learning_rates = ",".join(f"{lr:g}" for lr in PAPER_LEARNING_RATES) if arg.lr_grid else ""

  # Changes to the pretrained model's own config (its sizes come from the checkpoint).
  config.model = ml_collections.ConfigDict(
    dict(
      dropout_rate=0.1,
      attention_dropout_rate=0.1,
      dtype="float32",
      param_dtype="float32",
      scan_layers=False,
      remat="none",
      attention="dense",
    )
  )
  config.mesh = common.mesh_config("dp")

  config.data = ml_collections.ConfigDict()
  config.data.tfds_name = task.get("tfds", "")
  config.data.tfds_data_dir = ""
  # A named task's own files under their published names (tfds_name is then ignored; see docs/finetuning.md,
  # "Data in the forms people have"): GLUE's folders as the GLUE download script writes them (the GLUE root, or
  # the task's folder such as MNLI/, holding train.tsv and dev.tsv / dev_matched.tsv ...), train-v1.1.json /
  # dev-v1.1.json (v2.0) for SQuAD, eng.train / eng.testa / eng.testb (or train.txt / valid.txt / test.txt) for
  # CoNLL-2003 (IOB1, converted to IOB2), train.csv / val.csv for SWAG. train_split and eval_splits keep their TFDS
  # names (validation, validation_matched, dev, test), each read from its file, so metric keys do not change.
  config.data.task_dir = ""
  config.data.train_split = "train"
  config.data.eval_splits = ",".join(task.get("eval_splits", ("validation",)))
  config.data.train = ""  # local training file (used when tfds_name is empty)
  config.data.validation = ""  # local evaluation file(s), comma-separated
  # csv | tsv | jsonl: the file type; conll (tagging columns) or swag (SWAG's CSV) name a layout; empty: the suffix.
  config.data.format = task.get("format", "")
  config.data.text_field = task.get("text", "text")
  config.data.pair_field = task.get("pair", "")
  config.data.label_field = "label"
  # Label names in id order, comma-separated; empty: TFDS's ClassLabel order or the training file's sorted labels.
  config.data.labels = ",".join(task.get("labels", ()))
  config.data.tokens_field = task.get("tokens", "tokens")
  config.data.tags_field = task.get("tags", "tags")
  # iob2: checked; iob1 (the original CoNLL-2003 files): converted to iob2; none: any tags (POS).
  config.data.tag_scheme = task.get("tag_scheme", "none")
  # Tagging: encode each sentence with the words of its document around it (labels on its own words only).
  config.data.document_context = task.get("document_context", False)
  config.data.columns = ""  # comma-separated column names for CSV/TSV files without a header row (CoLA's)
  config.data.choice_endings_field = ""  # multiple choice from a list column (else SWAG's ending0..3)
  config.data.choice_ending_fields = ""  # comma-separated ending columns
  config.data.max_seq_length = task["max_seq_length"]
  config.data.doc_stride = 128
  config.data.max_query_length = 64
  config.data.max_train_examples = 0  # 0: all; else a fixed random subset of this size
  config.data.max_eval_examples = 0
  # Sequence packing (classification, regression, tagging, span): the examples of each batch share rows of
  # max_seq_length, each attending only to itself, so padding costs (almost) nothing; same examples per
  # step, same results up to float rounding (data/packing.py). Eval batches are packed too.
  config.data.packing = False

  config.squad = ml_collections.ConfigDict(
    dict(
      version_2=task.get("version_2", False),
      n_best=20,
      max_answer_length=30,
      null_score_diff_threshold=0.0,  # v2.0: tuned on dev and reported as eval/best_f1_thresh
    )
  )

  config.batch_size = task["batch_size"]
  config.eval_batch_size = 64
  config.epochs = task["epochs"]
  config.warmup_fraction = 0.1
  config.optimizer = common.optimizer_config(task["optimizer"], learning_rate=task["lr"], warmup_steps=0)

  config.log_every = 50
  config.checkpoint_every = 1000  # steps; every epoch end is also saved
  config.keep_checkpoints = 1
  config.best_metric = task.get("best", "eval/accuracy")
  config.best_mode = "max"
  # What a run reports and a grid summarizes: best_epoch (each run's best evaluation, mean ± std over seeds) or
  # paper (each run at the end of training; the best learning rate and restart on dev is the result, as the
  # BERT paper chose; its BERT-large rows took the best of several restarts: seeds).
  config.selection = "best_epoch"

  if arg.runlocal:
    config.data.max_train_examples = 256
    config.data.max_eval_examples = 128
    config.epochs = 1
    config.batch_size = 16
    config.log_every = 4
  config.lock()
  return config
