"""A run of several jobs in order, each in its own folder under the workdir: e.g. pretrain, then
fine-tune from what the pretraining exported, then predict with the fine-tuned model.

config.job = "stages"; config.stages lists the stage names in order; config.<name> is each stage's own
config (a pretrain, finetune, embed or mlm_eval config). A string field of a stage may name an earlier stage's
folder as "{stage:NAME}" (e.g. finetune's init_from="{stage:pretrain}"). config.predict, when it has
texts, runs the last stage's exported model on them and writes predictions.jsonl.
"""

from __future__ import annotations

import json
import os
import re

from bert_jax import distributed, files

JOBS = ("pretrain", "build_data", "finetune", "embed", "mlm_eval", "stages")


class UnknownJob(ValueError):
  pass


_STAGE_REF = re.compile(r"\{stage:([A-Za-z0-9_]+)\}")


def _resolve(config, folders: dict[str, str], where: str):
  for key in list(config.keys()):
    value = config[key]
    if isinstance(value, str):

      def sub(m, key=key):
        if m.group(1) not in folders:
          raise ValueError(
            f"{where}.{key}={value!r} names stage {m.group(1)!r}, which has not run before it "
            f"(ran: {list(folders)})"
          )
        return folders[m.group(1)]

      config[key] = _STAGE_REF.sub(sub, value)
    elif hasattr(value, "keys"):
      _resolve(value, folders, f"{where}.{key}")


def run_job(config, workdir: str):
  if config.job == "pretrain":
    from bert_jax import train

    return train.train_and_evaluate(config, workdir)
  if config.job == "build_data":
    from bert_jax import pretrain_data

    return pretrain_data.build_data(config, workdir)
  if config.job == "finetune":
    from bert_jax import finetune

    return finetune.finetune_and_evaluate(config, workdir)
  if config.job == "embed":
    from bert_jax import embed

    return embed.run(config, workdir)
  if config.job == "mlm_eval":
    from bert_jax import mlm_eval

    return mlm_eval.run(config, workdir)
  if config.job == "stages":
    return run_stages(config, workdir)
  raise UnknownJob(f"config.job={config.job!r} is unknown; known jobs: {list(JOBS)}")


def run_stages(config, workdir: str) -> dict:
  workdir = os.path.abspath(workdir)
  folders: dict[str, str] = {}
  results = {}
  for name in config.stages:
    if name not in config:
      raise ValueError(f"config.stages names {name!r} but config.{name} is not there")
    stage = config[name]
    with stage.unlocked():
      _resolve(stage, folders, f"config.{name}")
    folder = os.path.join(workdir, name)
    if distributed.is_primary():
      print(f"=== stage {name} ({stage.job}) in {folder}", flush=True)
    results[name] = run_job(stage, folder)
    if isinstance(results[name], dict) and results[name].get("preempted"):
      return results  # a rerun of the same command resumes this stage; finished stages are skipped by
      # their own runners (their checkpoints are complete)
    folders[name] = folder
  if len(config.predict.texts) and distributed.is_primary():
    results["predict"] = predict_texts(
      os.path.join(folders[config.stages[-1]], "export"), list(config.predict.texts), workdir
    )
  return results


def predict_texts(model_dir: str, texts: list[str], workdir: str) -> list[dict]:
  """The exported model's predictions for `texts` (classification, regression or tagging models)."""
  from bert_jax.predict import Predictor

  predictor = Predictor.from_pretrained(model_dir)
  if predictor.kind not in ("classification", "regression", "tagging"):
    raise ValueError(
      f"config.predict.texts: the last stage's model is a {predictor.kind} model, which needs more than "
      "a text (use python -m bert_jax.predict with JSON lines)"
    )
  outputs = predictor.predict(texts)
  lines = [json.dumps({"text": t, **o}, ensure_ascii=False) for t, o in zip(texts, outputs)]
  files.write_text(os.path.join(workdir, "predictions.jsonl"), "\n".join(lines) + "\n")
  print(f"=== predictions of {model_dir}:", flush=True)
  for text, out in zip(texts, outputs):
    if "label" in out:
      shown = f"{out['label']} (p={out['probabilities'][out['label']]:.2f})"
    elif "score" in out:
      shown = f"{out['score']:.3f}"
    else:
      shown = " ".join(f"{e['text']}/{e['type']}" for e in out.get("entities", [])) or "(no entities)"
    print(f"  {shown}  {text}", flush=True)
  return outputs
