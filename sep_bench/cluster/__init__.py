"""Run the DVC pipeline on a SLURM cluster: every out-of-date stage one job, in the DAG's order.

`settings` (params.yaml `cluster:`), `plan` (which stages run, their dependencies and job groups, from DVC's own
CLI), `sbatch` (job scripts), `submit` (the MLflow parent run, then sbatch), `status` (each stage's job state),
`cli` (the `sep-bench cluster` commands). Facts behind the design: docs/cluster.md.
"""
