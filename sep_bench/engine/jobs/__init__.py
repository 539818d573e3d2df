"""The jobs: what one pipeline stage does, as a function of a resolved run spec, its output paths and a tracker.

The CLI's stage commands (`sep-bench train`, `evaluate`, `selection`), `sep-bench compare` and whatever schedules
the stages call these functions; nothing re-enters the command line. A job:

- `jobs.train.train_job(spec, out, tracking)`: train into `out` (resuming from its last checkpoint when it matches), log
  the run and its summary to MLflow;
- `jobs.evaluate.evaluate_job(target, tracking)`: evaluate a training run's checkpoint or released weights (`EvalTarget`,
  made by `eval_target`) on every test generator, clean and under the profile's perturbations, and write
  metrics and predictions to their `sep_bench.paths`;
- `jobs.train.selection_job(spec, tracking)`: train with ``train.select_on: test`` beside the pipeline's own training and
  write the per-epoch record the report's selection table reads.

MLflow: `Tracking` says where runs go and under which parent run (`parent_run_id`, given by the caller: the CLI
reads it once from ``$SEP_BENCH_PARENT_RUN_ID``, `compare` creates its own); ``tracking=None`` logs nothing.

The training and the evaluation jobs are separate modules, so a stage command imports the engine code of its own
stage only (`sep_bench.cli.imported_modules`); this package imports nothing.
"""