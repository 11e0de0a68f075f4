"""The HuggingFace Flax GLUE table (examples/flax/text-classification, bert-base-cased, mean of 5 runs on dev):
the last JAX baseline users had, with its settings from run_flax_glue.py and its README:

- learning rate 2e-5, linear decay to 0, no warmup (--num_warmup_steps 0);
- optax.adamw with bias correction, b1 0.9, b2 0.999, eps 1e-6, weight decay 0 (the script's default; the
  README's command does not set it), no gradient clipping;
- batch 32 (4 per device on 8 TPU v3 cores), max length 128, 3 epochs (5 for MRPC and WNLI);
- the model as training ends, evaluated on dev (MNLI: matched); 5 seeds.

What differs here: our seeds are 0..4 (theirs were the run ids), our own initialisation of the head and data
order, and we score the whole dev set (their evaluation dropped the last partial batch).

    python -m bert_jax.paper run experiments/paper/hf_flax_glue.py --root runs/paper/hf_flax \
        --model PATH/bert-base-cased --data PATH/glue_data
"""

TITLE = "HuggingFace Flax GLUE baseline, bert-base-cased (run_flax_glue.py README)"
REFERENCES = "hf_flax_glue"
SIZES = ("base",)
TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")
COMMON = {
  "selection": "paper",
  "optimizer.name": "adamw",
  "optimizer.schedule": "linear",
  "optimizer.learning_rate": 2e-5,
  "optimizer.b1": 0.9,
  "optimizer.b2": 0.999,
  "optimizer.eps": 1e-6,
  "optimizer.weight_decay": 0.0,
  "optimizer.grad_clip": 0.0,
  "warmup_fraction": 0.0,
  "batch_size": 32,
  "data.max_seq_length": 128,
}


def get_sweep():
  return [
    {
      "name": t,
      "config": f"configs/finetune.py:task={t},seeds=5",
      "epochs": 5 if t in ("mrpc", "wnli") else 3,
    }
    for t in TASKS
  ]
