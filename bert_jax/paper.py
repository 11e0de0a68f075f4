"""Paper tables: one command runs a published table's recipe and writes the table, paper beside measured.

    python -m bert_jax.paper run TABLE --root OUT --model PATH [--data DIR | --tfds DIR] [--seeds N]
                                 [--only task,task] [--any_model] [-- --config.x=y ...]
    python -m bert_jax.paper print TABLE --root OUT --model PATH [...] [--launcher local | tpu NAME ZONE | gpu]
    python -m bert_jax.paper gather TABLE --root OUT [--seeds N] [-- --config.x=y ...]

TABLE is a file in experiments/paper/ (or its name: bert_base_glue, bert_large_glue, squad_v1, squad_v2, swag,
conll2003, hf_flax_glue, mlperf_bert). A table file is a sweep file (bert_jax/sweeps.py) whose entries are the
table's tasks, each with its own base config ("config": "configs/finetune.py:task=mrpc,seeds=5,lr_grid"), plus:

  TITLE       the table's title
  REFERENCES  its key in experiments/paper/references.py (every published number, with its source)
  SIZES       the BERT sizes the references are for ("base", "large"): the model given is checked against them
  DATA_KEY    the config field --data sets (default data.task_dir: the folder of the task's published files)
  SEEDS       False when --seeds does not apply (one evaluation)

`run` runs the table's tasks one after another (bert_jax.sweeps: resumable, ROOT/sweep.json records each task),
then gathers. `print` prints one command per task instead, to run each on its own slice or GPU; `gather` then
reads the task folders and writes ROOT/table.md and ROOT/table.json (paper_table.py). `gather` takes the same
--seeds and --config items as the runs, so that it knows the configuration each row must have been run with.

A model that is not the table's BERT size (layers, hidden size, heads, MLP width from its config file) is
refused; with --any_model it is measured, and the table's title names it as not the paper's.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
from collections.abc import Sequence

from bert_jax import files
from bert_jax.sweep_spec import Sweep, load_sweep, validate_overrides
from bert_jax.sweeps import _split_extra, commands, run_sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLES_DIR = os.path.join(REPO, "experiments", "paper")
# The sizes of the BERT paper's two models: what a table's numbers are for.
ARCHITECTURES = {
  "base": {"num_layers": 12, "hidden_size": 768, "num_heads": 12, "mlp_dim": 3072},
  "large": {"num_layers": 24, "hidden_size": 1024, "num_heads": 16, "mlp_dim": 4096},
}


class PaperError(ValueError):
  pass


@dataclasses.dataclass(frozen=True)
class Table:
  name: str
  sweep: Sweep
  title: str
  sizes: tuple[str, ...]
  references: dict[str, list[dict]]  # size -> rows (experiments/paper/references.py)
  target: str  # a line shown under the table, or ""
  data_key: str
  takes_seeds: bool


def table_path(name: str) -> str:
  """A table file's path: as given, or experiments/paper/NAME.py."""
  if os.path.isfile(name):
    return name
  path = os.path.join(TABLES_DIR, f"{name.removesuffix('.py')}.py")
  if not os.path.isfile(path):
    known = sorted(
      n[:-3]
      for n in os.listdir(TABLES_DIR)
      if n.endswith(".py") and n not in ("references.py", "__init__.py")
    )
    raise PaperError(f"{name}: no such table file; tables in {TABLES_DIR}: {known}")
  return path


def load_table(name: str) -> Table:
  """A table file, checked: its entries as a sweep, its reference rows, its sizes."""
  from bert_jax.sweep_spec import _run_sweep_file

  path = table_path(name)
  sweep = load_sweep(path)
  namespace = _run_sweep_file(path)
  refs_path = os.path.join(os.path.dirname(os.path.abspath(path)), "references.py")
  references = _run_sweep_file(refs_path)
  key = namespace.get("REFERENCES")
  if key not in references.get("REFERENCES", {}):
    raise PaperError(f"{path}: REFERENCES={key!r} is not a table of {refs_path}")
  per_size = references["REFERENCES"][key]
  sizes = tuple(namespace.get("SIZES", ()))
  unknown = [s for s in sizes if s not in ARCHITECTURES or s not in per_size]
  if not sizes or unknown:
    raise PaperError(
      f"{path}: SIZES={sizes!r}; expected sizes among {sorted(ARCHITECTURES)} that {refs_path} has rows for"
    )
  names = {r.name for r in sweep.runs}
  for size in sizes:
    for row in per_size[size]:
      if row["run"] not in names:
        raise PaperError(
          f"{refs_path}: {key}/{size} row {row['name']!r} reads run {row['run']!r}; runs: {names}"
        )
  return Table(
    name=os.path.basename(path).removesuffix(".py"),
    sweep=sweep,
    title=namespace.get("TITLE", os.path.basename(path)),
    sizes=sizes,
    references={s: per_size[s] for s in sizes},
    target=references.get("TARGETS", {}).get(key, ""),
    data_key=namespace.get("DATA_KEY", "data.task_dir"),
    takes_seeds=bool(namespace.get("SEEDS", True)),
  )


# --- the model -----------------------------------------------------------------------------------


def describe(arch: dict) -> str:
  return "L={num_layers}, H={hidden_size}, A={num_heads}, I={mlp_dim}".format(**arch)


def config_item(items: Sequence[str], key: str) -> str:
  """The value the --config.KEY=VALUE items give KEY (the last wins, as bert_jax.main applies them), or ""."""
  value = ""
  for item in items:
    name, sep, given = item.partition("=")
    if sep and name == f"--config.{key}":
      value = given
  return value


def model_architecture(model: str, config_file: str = "") -> dict:
  """The checkpoint's sizes from its config file alone (config.json, bert_config.json or bert_jax_config.json),
  or from config_file when the job names one apart (config.model_config: MLPerf keeps bert_config.json beside
  its tf1_ckpt/ folder, not in it)."""
  from bert_jax.finetune_model import resolve_init_from
  from bert_jax.models import BertConfig
  from bert_jax.pretrained import read_config, read_json

  try:
    if config_file:
      config = BertConfig.from_hf_dict(read_json(config_file), source=config_file)
    else:
      # A Google checkpoint prefix (.../model.ckpt-28252) has its bert_config.json in its folder.
      folder = model if os.path.isdir(model) or "://" in model else os.path.dirname(model)
      config = read_config(resolve_init_from(folder))
  except (OSError, ValueError) as e:
    hint = (
      ""
      if config_file
      else " (a checkpoint whose config file is elsewhere, as MLPerf's tf1_ckpt/: -- "
      "--config.model_config=PATH/bert_config.json)"
    )
    raise PaperError(f"--model {model}: cannot read its configuration{hint}: {e}") from e
  return {k: getattr(config, k) for k in ARCHITECTURES["base"]}


def check_model(table: Table, model: str, any_model: bool, config_file: str = "") -> tuple[str, str]:
  """(size whose paper numbers the table shows, a note naming the model when it is not the paper's). A model of
  another architecture is refused unless any_model. config_file: the model's config file when it is apart."""
  arch = model_architecture(model, config_file)
  for size in table.sizes:
    if arch == ARCHITECTURES[size]:
      return size, ""
  wanted = " or ".join(f"BERT-{s} ({describe(ARCHITECTURES[s])})" for s in table.sizes)
  if not any_model:
    raise PaperError(
      f"--model {model} is {describe(arch)}, not {wanted}, the model this table's published numbers are for; "
      "pass --any_model to measure it anyway (the table then names it as not the paper's model)"
    )
  size = table.sizes[0]
  return size, f"{model} ({describe(arch)}) is not the paper's model; the paper's numbers are BERT-{size}'s"


# --- the jobs' arguments -------------------------------------------------------------------------


def job_args(table: Table, args: argparse.Namespace, extra: Sequence[str]) -> list[str]:
  """The --config items every task's job gets: the model, the data, the seeds, then the user's own."""
  out = []
  if getattr(args, "model", None):
    out.append(f"--config.init_from={args.model}")
  if args.data and args.tfds:
    raise PaperError("give --data (the tasks' files) or --tfds (a TFDS data_dir), not both")
  if args.data:
    out.append(f"--config.{table.data_key}={args.data}")
  if args.tfds:
    out.append(f"--config.data.tfds_data_dir={args.tfds}")
  if args.seeds is not None:
    if not table.takes_seeds:
      raise PaperError(f"{table.name} runs one evaluation: --seeds does not apply")
    if args.seeds < 1:
      raise PaperError(f"--seeds {args.seeds}; expected 1 or more")
    out.append(f"--config.seeds={','.join(str(s) for s in range(args.seeds))}")
  return out + list(extra)


def _check_data_key(table: Table, args: argparse.Namespace, runs) -> None:
  """--data needs the config field it sets: say so plainly rather than as a parse error."""
  if not args.data:
    return
  from bert_jax.sweep_spec import _parse_config

  base = _parse_config(runs[0].config, [], os.getcwd())
  node = base
  for part in table.data_key.split("."):
    if not hasattr(node, "keys") or part not in node:
      raise PaperError(
        f"--data sets config.{table.data_key}, which {runs[0].config} does not have in this checkout; give "
        "the files with -- --config.data.train=... --config.data.validation=... or a TFDS copy with --tfds"
      )
    node = node[part]


def _validate(table: Table, args: argparse.Namespace, only: list[str], extra: list[str]) -> None:
  runs = table.sweep.select(only)
  for run in runs:
    file = run.config.partition(":")[0]
    if not os.path.isfile(file):
      raise PaperError(
        f"{table.sweep.path}: run {run.name!r} needs {file}, which this checkout does not have (run from the "
        "repository root)"
      )
  _check_data_key(table, args, runs)
  validate_overrides(dataclasses.replace(table.sweep, runs=runs), extra=extra)


# --- command line --------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="python -m bert_jax.paper",
    description="\n\n".join(__doc__.split("\n\n")[:2]),
    formatter_class=argparse.RawDescriptionHelpFormatter,
    epilog="Arguments after -- go to every task's bert_jax.main (and to gather's check of the runs' configs).",
  )
  sub = parser.add_subparsers(dest="command", required=True)
  common = argparse.ArgumentParser(add_help=False)
  common.add_argument("table", help="a table file or its name in experiments/paper/")
  common.add_argument("--root", required=True, help="the table's folder: each task runs in ROOT/TASK")
  common.add_argument(
    "--model", help="the checkpoint to fine-tune (a HuggingFace, Google or bert_jax folder)"
  )
  common.add_argument("--data", help="the folder of the tasks' files (sets the table's DATA_KEY)")
  common.add_argument("--tfds", help="a TFDS data_dir holding the tasks (array_record)")
  common.add_argument("--seeds", type=int, help="seeds per learning rate (default: the table's, 5)")
  common.add_argument("--only", help="comma-separated tasks (default: all of the table's)")
  common.add_argument("--any_model", action="store_true", help="measure a model that is not the paper's size")
  run_p = sub.add_parser("run", parents=[common], help="run every task here, one after another, then gather")
  run_p.add_argument("--quiet", action="store_true", help="only the logs get the jobs' output")
  print_p = sub.add_parser("print", parents=[common], help="print one shell command per task")
  print_p.add_argument(
    "--launcher", nargs="+", default=["local"], metavar="KIND", help="local | tpu NAME ZONE | gpu"
  )
  print_p.add_argument("--python", default="python", help="the interpreter of local commands")
  sub.add_parser("gather", parents=[common], help="write ROOT/table.md and table.json from the task folders")
  return parser


def _gather(table: Table, args: argparse.Namespace, only: list[str], extra: list[str]) -> int:
  from bert_jax import paper_table

  gathered = paper_table.gather(
    table, args.root, extra, model=args.model, any_model=args.any_model, only=only
  )
  md, js = paper_table.write(gathered, args.root)
  with open(md, encoding="utf-8") as f:
    print(f.read(), flush=True)
  print(f"table: {md}\n       {js}", flush=True)
  return 0 if all(r["status"] == "ok" for r in gathered["runs"].values()) else 1


def main(argv: Sequence[str] | None = None) -> int:
  parser = _parser()
  argv, extra = _split_extra(list(sys.argv[1:] if argv is None else argv))
  args, unknown = parser.parse_known_args(argv)
  bad = [u for u in unknown if not u.startswith("--config.")]
  if bad:
    parser.error(f"unrecognized arguments: {' '.join(bad)}")
  only = [n for n in (args.only or "").split(",") if n]
  try:
    files.require_local(args.root, "--root")
    table = load_table(args.table)
    table.sweep.select(only)
    if args.command != "gather" and not args.model:
      raise PaperError("--model is required: the checkpoint every task fine-tunes")
    jobs = job_args(table, args, unknown + extra)
    if args.model and args.command != "gather":
      check_model(table, args.model, args.any_model, config_item(jobs, "model_config"))
    if args.command == "gather":
      return _gather(table, args, only, jobs)
    _validate(table, args, only, jobs)
    if args.command == "print":
      for _, command in commands(table.sweep, args.root, args.launcher, jobs, python=args.python, only=only):
        print(shlex.join(command))
      gather = ["python", "-m", "bert_jax.paper", "gather", args.table, "--root", args.root]
      gather += [f"--seeds={args.seeds}"] if args.seeds is not None else []
      gather += (["--any_model"] if args.any_model else []) + (
        ["--", *unknown, *extra] if unknown + extra else []
      )
      print(f"# when they have finished (or to see where they stand): {shlex.join(gather)}", file=sys.stderr)
      return 0
    run_sweep(table.sweep, args.root, only=only, extra=jobs, echo=not args.quiet)
    return _gather(table, args, only, jobs)
  except ValueError as e:  # PaperError, SweepError, a URL as --root
    print(f"bert_jax.paper: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
